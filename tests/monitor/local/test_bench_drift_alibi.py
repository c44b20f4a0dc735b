"""The alibi-detect side of `bench drift` runs as a script in an environment of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig

from monitor.local import bench_drift


def test_the_alibi_worker_script_finds_the_repository_from_where_it_lies() -> None:
    # Run as a file path, as `bench drift --alibi-python` runs it, by a Python that has the
    # libraries but not driftwatch installed (as alibi-detect's environment): -S skips the
    # site-packages' .pth files, where this environment's editable install of driftwatch
    # lives. Here alibi-detect is not installed, so the script gets as far as importing it:
    # past its own imports of driftwatch.
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    done = subprocess.run(
        [sys.executable, "-S", str(bench_drift._WORKER), "no-data.npz", "1000", "100", "2",
         "100"], capture_output=True, text=True, timeout=300, cwd="/", env=env,
    )
    assert done.returncode != 0
    assert "No module named 'alibi_detect'" in done.stderr, done.stderr
    assert "No module named 'monitor'" not in done.stderr
