"""The paths a daemon writes are checked before it starts: each that can never be written is
named with its setting (a traceback from a store before, or a failure at the first decision
or checkpoint); nothing is created by the check."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitor.app.state_paths import StatePathError, check_state_paths, unusable
from monitor.cli import main
from monitor.config import load_config


def test_what_can_be_written_passes_and_nothing_is_created(tmp_path: Path) -> None:
    existing = tmp_path / "outbox.sqlite3"
    existing.touch()
    assert unusable(existing, directory=False) is None
    assert unusable(tmp_path / "a" / "b" / "c.bin", directory=False) is None
    assert unusable(tmp_path / "refs", directory=True) is None
    assert unusable(tmp_path, directory=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox.sqlite3"]


def test_what_can_never_be_written_says_why(tmp_path: Path) -> None:
    a_file = tmp_path / "hostname"
    a_file.touch()
    assert unusable(a_file / "x" / "c.bin", directory=False) == \
        f"{str(a_file)!r} is a file, not a directory"
    assert unusable(tmp_path, directory=False) == "is a directory (the setting names a file)"
    assert unusable(a_file, directory=True) == "exists and is not a directory"


def _config(tmp_path: Path, **sections: object) -> Path:
    path = tmp_path / "dw.yaml"
    path.write_text(yaml.safe_dump({"kafka": {"topic": "t", "bootstrap_servers": ["x:1"]},
                                    **sections}))
    return path


def test_the_stage_decides_which_paths_count(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.touch()
    config = load_config(_config(
        tmp_path, audit_log=str(blocker / "audit.jsonl"),
        checkpoint={"path": str(blocker / "c.bin")},
        outbox={"path": str(tmp_path)},
        rules=[{"name": "e", "when": {"kind": "rate", "signal": "error", "above": 0.5}}]))
    with pytest.raises(StatePathError) as everything:
        check_state_paths(config)
    assert str(everything.value).splitlines() == [
        "cannot write where the config says:",
        f"  audit_log = '{blocker}/audit.jsonl': '{blocker}' is a file, not a directory",
        f"  outbox.path = '{tmp_path}': is a directory (the setting names a file)",
        f"  checkpoint.path = '{blocker}/c.bin': '{blocker}' is a file, not a directory"]
    with pytest.raises(StatePathError) as score:
        check_state_paths(config, "score")  # writes the audit log, no state
    assert len(str(score.value).splitlines()) == 2
    with pytest.raises(StatePathError) as decide:
        check_state_paths(config, "decide")  # the state, no audit log
    assert "audit_log" not in str(decide.value) and "outbox.path" in str(decide.value)


def test_run_exits_2_naming_the_setting_before_it_starts_anything(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.touch()
    path = _config(tmp_path, review={"enabled": True, "file": str(tmp_path / "r.jsonl"),
                                     "store": str(blocker / "review.sqlite3")},
                   checkpoint={"enabled": False}, metrics={"port": 0})
    assert main(["run", "--config", str(path)]) == 2
    assert capsys.readouterr().err == (
        "driftwatch: cannot write where the config says:\n"
        f"  review.store = '{blocker}/review.sqlite3': '{blocker}' is a file, not a directory\n")
