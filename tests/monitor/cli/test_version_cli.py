"""`driftwatch --version`: the installed package's version, as driftwatch_build_info has it."""

from __future__ import annotations

import pytest


def test_version_names_the_installed_package(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    from monitor.cli import main

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"driftwatch {version('driftwatch')} (Python 3.")
