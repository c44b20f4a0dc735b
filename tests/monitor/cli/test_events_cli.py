"""`driftwatch events`: recent outbox events and their deliveries, as a table or JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.acting.outbox import Outbox
from monitor.cli import main
from tests.monitor.acting.test_outbox import ACTIONS, NOW, decision


def filled(path: Path) -> list[str]:
    box = Outbox(path)
    ids = box.put([decision(targets=("hook", "am")), decision(model="n", targets=("hook",))],
                  ACTIONS, now=NOW)
    box.retry(ids[0], "hook", NOW + 5, "HTTP 503")
    box.delivered(ids[1], "hook", NOW + 1)
    box.close()
    return ids


@pytest.mark.slow  # starts a process or runs many examples
def test_events_as_json_lines(tmp_path: Path) -> None:
    ids = filled(tmp_path / "outbox.sqlite3")
    done = subprocess.run([sys.executable, "-m", "monitor.cli", "events", "--outbox",
                           str(tmp_path / "outbox.sqlite3"), "--json", "--limit", "5"],
                          capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert {e["id"] for e in lines} == set(ids)
    first = next(e for e in lines if e["id"] == ids[0])
    assert (first["type"], first["rule"], first["status"], first["segment"]["model"]) == (
        "quality.regressed", "toxic-rate", "firing", "m")
    assert first["evidence"] == {"rate": 0.12, "threshold": 0.05}
    assert first["deliveries"] == [{"action": "hook", "state": "pending", "attempts": 1,
                                    "last_error": "HTTP 503", "delivered": None}]


def test_events_table_reads_the_outbox_path_from_the_config(tmp_path: Path, capsys) -> None:
    filled(tmp_path / "outbox.sqlite3")
    config = tmp_path / "driftwatch.yaml"
    config.write_text(f"kafka: {{bootstrap_servers: ['127.0.0.1:9092'], topic: t}}\n"
                      f"outbox: {{path: {tmp_path / 'outbox.sqlite3'}}}\n")
    assert main(["events", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert out.count("toxic-rate") == 2 and "quality.regressed" in out
    assert "hook: pending, 1 tries" in out and "HTTP 503" in out
    assert "hook: delivered, 1 tries" in out and "rate=0.12" in out and "model=n" in out


def test_events_on_a_missing_outbox_says_so(tmp_path: Path, capsys) -> None:
    assert main(["events", "--outbox", str(tmp_path / "nope.sqlite3")]) == 2
    assert "no outbox at" in capsys.readouterr().err
    assert not (tmp_path / "nope.sqlite3").exists()


def test_labels_and_errors_with_brackets_are_printed_as_they_are(tmp_path: Path,
                                                                 capsys) -> None:
    """Read as rich markup, `llama[bold]` lost its tag, and `[/]` stopped the command."""
    box = Outbox(tmp_path / "outbox.sqlite3")
    [first, _] = box.put([decision(model="llama[bold]"), decision(model="x[/]")], ACTIONS,
                              now=NOW)
    box.retry(first, "hook", NOW + 5, "HTTP 500: [error] queue full [/]")
    box.close()
    assert main(["events", "--outbox", str(tmp_path / "outbox.sqlite3")]) == 0
    out = capsys.readouterr().out
    assert "model=llama[bold]" in out and "model=x[/]" in out
    assert "HTTP 500: [error] queue full [/]" in out



@pytest.mark.parametrize(("column", "value", "why"), [
    ("segment", "not json", "JSONDecodeError: Expecting value"),
    ("targets", "7", "TypeError: 'int' object is not iterable"),
])
def test_an_event_row_edited_by_hand_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, value: str,
        why: str) -> None:
    import sqlite3

    path = tmp_path / "outbox.sqlite3"
    ids = filled(path)
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE events SET {column} = ? WHERE id = ?", (value, ids[0]))
    db.close()
    assert main(["events", "--outbox", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"driftwatch: {path}: event {ids[0]} is not as driftwatch writes it "
                          f"({why}"), err
    assert len(err.splitlines()) == 1


def test_an_empty_file_is_no_outbox_and_is_left_empty(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reader gave an empty file the outbox's schema (53 kB) before saying nothing."""
    empty = tmp_path / "empty.sqlite3"
    empty.write_bytes(b"")
    assert main(["events", "--outbox", str(empty)]) == 2
    assert capsys.readouterr().err == (f"driftwatch: {empty} is empty: no outbox was written "
                                       "there; check outbox.path in the config\n")
    assert empty.read_bytes() == b"" and sorted(tmp_path.iterdir()) == [empty]
