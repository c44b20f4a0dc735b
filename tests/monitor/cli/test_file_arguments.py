"""File arguments are checked when the command line is parsed (a missing input, an output in
a directory that does not exist: one line naming the argument, exit 2, before any model
loads), "-" is stdin or stdout, and a reader closing stdout early (`driftwatch score | head`)
ends the command quietly, as SIGPIPE ends a Unix tool."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from monitor.app.arguments import or_std, readable_file, writable_file
from monitor.cli import main
from monitor.cli.common import stdout_reader_gone
from monitor.local import traffic


def test_readable_and_writable_files_say_what_is_wrong(tmp_path: Path) -> None:
    there = tmp_path / "in.jsonl"
    there.write_text("{}\n")
    assert readable_file(str(there)) == there
    assert writable_file(str(there)) == there  # replaced
    assert writable_file(str(tmp_path / "new.jsonl")) == tmp_path / "new.jsonl"
    assert or_std(readable_file)("-") is None
    assert or_std(writable_file)(str(there)) == there
    cases = [
        (readable_file, tmp_path / "gone.jsonl", "no such file"),
        (readable_file, tmp_path, "is a directory, not a file"),
        (writable_file, tmp_path, "is a directory, not a file"),
        (writable_file, tmp_path / "no" / "out.jsonl", f"{str(tmp_path / 'no')!r} does not exist"),
        (writable_file, there / "out.jsonl", f"{str(there)!r} is not a directory"),
    ]
    for check, path, says in cases:
        with pytest.raises(argparse.ArgumentTypeError) as error:
            check(str(path))
        assert str(error.value) == f"{str(path)!r}" + (" " if says.startswith("is") else ": ") \
            + says


@pytest.mark.parametrize(("argv", "says"), [
    (["score", "--input", "{gone}"], "argument --input: '{gone}': no such file"),
    (["score", "--output", "{nodir}/out.jsonl"],
     "argument --output: '{nodir}/out.jsonl': '{nodir}' does not exist"),
    (["backtest", "--input", "{tmp}"], "argument --input: '{tmp}' is a directory, not a file"),
    (["reference", "build", "--input", "{gone}"], "argument --input: '{gone}': no such file"),
    (["compare", "--baseline", "{there}", "--candidate", "{there}", "--html",
      "{nodir}/r.html"], "argument --html: '{nodir}/r.html': '{nodir}' does not exist"),
    (["dashboards", "render", "--prometheus", "http://127.0.0.1:1", "--output",
      "{nodir}/p.png"], "argument --output: '{nodir}/p.png': '{nodir}' does not exist"),
])
def test_a_bad_file_argument_is_one_line_and_exit_2_before_any_work(
        argv: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "there.jsonl").write_text("{}\n")
    names = {"gone": tmp_path / "gone.jsonl", "nodir": tmp_path / "nodir", "tmp": tmp_path,
             "there": tmp_path / "there.jsonl"}
    with pytest.raises(SystemExit) as stopped:
        main([part.format(**names) for part in argv])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].endswith(f"error: {says.format(**names)}")
    assert "Traceback" not in err
    assert not (tmp_path / "nodir").exists()


def test_stdout_reader_gone_is_a_pipe_whose_reader_closed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    read_end, write_end = os.pipe()
    with open(write_end, "w") as writer:
        monkeypatch.setattr(sys, "stdout", writer)
        assert not stdout_reader_gone()
        os.close(read_end)
        assert stdout_reader_gone()


def test_a_broken_pipe_elsewhere_is_not_taken_for_stdout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only stdout's reader leaving is quiet: a BrokenPipeError from anything else (a socket)
    is a failure and keeps its traceback."""
    from monitor.cli import score

    def broken(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(score, "run", broken)
    with pytest.raises(BrokenPipeError):
        main(["score"])


def test_ctrl_c_before_a_verbs_own_handling_is_one_line_and_130(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`driftwatch run` interrupted while it imports torch printed a KeyboardInterrupt
    traceback through torch's import machinery."""
    from monitor.cli import run

    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run", interrupted)
    assert main(["run"]) == 130
    assert capsys.readouterr().err == "driftwatch: interrupted\n"


def test_score_into_a_closed_pipe_ends_quietly_with_141(tmp_path: Path) -> None:
    records, config = _records(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "monitor.cli", "score", "--input", str(records), "--config",
         str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first line: every write fails
    err = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "Broken pipe" not in err


def _records(tmp_path: Path) -> tuple[Path, Path]:
    records = tmp_path / "in.jsonl"
    records.write_bytes(b"".join(traffic.encode(r) + b"\n" for r in traffic.wire_records(
        20, seed=3, start_ms=traffic.FIXED_START_MS)))
    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\n")
    return records, config


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="a full device: Linux's /dev/full")
def test_an_output_the_system_will_not_take_is_one_line_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk, where a traceback (OSError: No space left on device) was."""
    records, config = _records(tmp_path)
    score = ["score", "--config", str(config), "--input", str(records)]
    assert main([*score, "--output", "/dev/full"]) == 2
    assert capsys.readouterr().err == (
        "driftwatch: cannot write --output '/dev/full': No space left on device\n")
    with open("/dev/full", "wb", buffering=0) as full:  # each write meets the full device
        monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=full))
        assert main(score) == 2
    assert capsys.readouterr().err == (
        "driftwatch: cannot write standard output: No space left on device\n")


def test_a_standard_stream_the_caller_closed(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`>&-`, `<&-`, `2>&-`: Python has no stream there (None), where `.buffer` was an
    AttributeError; with stderr closed the work is done and said nowhere."""
    records, config = _records(tmp_path)
    score = ["score", "--config", str(config)]
    monkeypatch.setattr(sys, "stdout", None)
    assert main([*score, "--input", str(records)]) == 2
    assert capsys.readouterr().err == (
        "driftwatch: standard output is closed: name a file with --output\n")
    monkeypatch.undo()
    monkeypatch.setattr(sys, "stdin", None)
    assert main(score) == 2
    assert capsys.readouterr().err == (
        "driftwatch: standard input is closed: name a file with --input\n")
    monkeypatch.undo()
    out = tmp_path / "out.jsonl"
    monkeypatch.setattr(sys, "stderr", None)
    assert main([*score, "--input", str(records), "--output", str(out)]) == 0
    assert sys.stderr is not None and sys.stderr.name == os.devnull
    assert len(out.read_text().splitlines()) == 20


@pytest.mark.parametrize(("argv", "says"), [
    (["canary", "plan", "--runs", "0"], "argument --runs: 0: give 1 or more"),
    (["canary", "plan", "--max-records", "-5"], "argument --max-records: -5: give 50 or more"),
    (["canary", "plan", "--max-records", "49"], "argument --max-records: 49: give 50 or more"),
    (["canary", "plan", "--seed", "-1"], "argument --seed: -1: give 0 or more"),
    (["events", "--limit", "ten"], "argument --limit: 'ten' is not a whole number"),
    (["demo", "--rate", "0"], "argument --rate: 0: give a number above 0"),
    (["demo", "--duration", "nan"], "argument --duration: nan: give a number above 0"),
    (["demo", "--port", "70000"], "argument --port: 70000: give 0 to 65535"),
    (["reference", "build", "--limit", "-3"], "argument --limit: -3: give 1 or more"),
    (["reference", "build", "--from-offset", "-1"], "argument --from-offset: -1: give 0 or more"),
    (["compare", "--baseline", __file__, "--candidate", __file__, "--worst", "-1"],
     "argument --worst: -1: give 0 or more"),
    (["bench", "throughput", "--workers", "2", "0"], "argument --workers: 0: give 1 or more"),
    (["chaos", "soak", "--seconds", "-2"], "argument --seconds: -2: give a number above 0"),
])
def test_a_number_out_of_range_is_refused_when_parsed(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Before: `canary plan --runs 0` was an IndexError, `--max-records -5` an
    UnboundLocalError, `reference build --limit -3` read nothing and said so as an error."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {says}")


def _reference(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["reference", *argv])
    return code, capsys.readouterr().err


def test_reference_build_errors_are_one_line_each(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each was a traceback: a bad name (found at the save, after embedding every record), a
    store under a file (likewise), no input, and input with no valid record."""
    lines = tmp_path / "in.jsonl"
    lines.write_text('[1, 2]\nnot json\n\n')
    store = tmp_path / "refs"
    assert _reference(["build", "--name", "../etc", "--input", str(lines)], capsys) == (
        2, "driftwatch reference: --name: reference name '../etc': use letters, digits, '_', "
        "'.', '-' (at most 64, not starting with a dot)\n")
    assert _reference(["list", "--name", ".hidden", "--store", str(store)], capsys)[0] == 2
    assert _reference(["build", "--input", str(lines), "--store", str(lines / "refs")],
                      capsys) == (2, f"driftwatch reference: --store '{lines / 'refs'}': "
                                     f"'{lines}' is a file, not a directory\n")
    assert _reference(["build", "--store", str(store)], capsys) == (
        2, "driftwatch reference: reference build needs --input FILE.jsonl or --topic NAME\n")
    code, err = _reference(["build", "--input", str(lines), "--store", str(store)], capsys)
    assert code == 2
    assert err.startswith(f"driftwatch reference: no valid records in file:{lines} (2 refused, "
                          "the first as not_object: ")
    assert err.endswith("): nothing to build a reference from\n")
    assert not store.exists()


def test_a_topic_on_no_broker_is_a_reference_input_error() -> None:
    from monitor.app.reference_build import ReferenceInputError, topic_values

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        bootstrap = f"127.0.0.1:{closed.getsockname()[1]}"
        with pytest.raises(ReferenceInputError, match=rf"cannot reach the brokers {bootstrap}"):
            next(topic_values(bootstrap, "t", client_options={"bootstrap_timeout_ms": 1_000}))


def test_score_reading_a_terminal_says_so(tmp_path: Path) -> None:
    """With no --input and stdin a terminal, `driftwatch score` looked hung."""
    import pty

    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\n")
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "monitor.cli", "score", "--config", str(config)],
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.write(controller, b"\x04")  # Ctrl-D at the start of a line: end of input
        out, err = process.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, err
    assert err.decode().startswith(
        "driftwatch score: reading wire records (JSON lines) from the terminal; Ctrl-D ends "
        "them, --input FILE reads a file\n")
    assert out == b""


@pytest.mark.parametrize(("scoring", "says"), [
    ({"embedding": {"model": "/nowhere/model"}},
     "driftwatch: scoring.embedding.model='/nowhere/model' is not on disk: driftwatch never "
     "downloads models."),
    ({"device": "cuda"},
     "driftwatch: scoring.device='cuda' but torch sees no CUDA device; use auto or cpu"),
])
def test_a_model_or_device_not_there_is_one_line_in_every_verb(
        scoring: dict[str, object], says: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`run` said so; `score`, `backtest`, `compare` and `reference build` raised tracebacks."""
    import torch
    import yaml

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU machine
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"scoring": scoring}))
    lines = tmp_path / "in.jsonl"
    lines.write_bytes(traffic.encode(next(traffic.wire_records(
        1, seed=3, start_ms=traffic.FIXED_START_MS))) + b"\n")
    for argv in (["score", "--input", str(lines)], ["backtest", "--input", str(lines)]):
        assert main([*argv, "--config", str(config)]) == 2
        assert capsys.readouterr().err.startswith(says)


def test_score_read_adds_what_was_read_to_each_row(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import json

    records = tmp_path / "in.jsonl"
    records.write_text(json.dumps({"id": "a1", "startTime": 1_767_261_600, "response": "hi",
                                   "team": "ads"}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\nwire:\n  fields: {request_id: id, timestamp: "
                      "startTime, route: team}\n")
    assert main(["score", "--input", str(records), "--config", str(config), "--read"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["request_id"] == "a1"
    assert (row["read"]["event_time"], row["read"]["route"], row["read"]["response"]) == (
        "2026-01-01T10:00:00.000Z", "ads", "hi")


def test_score_topic_reads_a_sample_under_that_topics_own_settings(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    records = tmp_path / "responses.jsonl"
    records.write_text(json.dumps({"id": "a1", "timestamp": 1_767_261_600, "output": "hi",
                                   "took": 0.25}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\nwire:\n  topics:\n    responses:\n      fields: "
                      "{request_id: id, response: output, latency_ms: took}\n"
                      "      latency_unit: s\n")
    argv = ["score", "--input", str(records), "--config", str(config), "--read"]
    assert main([*argv, "--topic", "responses"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["request_id"], row["read"]["response"], row["read"]["latency_ms"]) == (
        "a1", "hi", 250.0)
    # Without --topic, the section's own settings: the wire's names, so no request_id.
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (row["error"], row["line"]) == ("missing_request_id", 1)
    # A topic with no settings of its own is refused, naming those there are.
    assert main([*argv, "--topic", "requests"]) == 2
    assert capsys.readouterr().err.startswith(
        "driftwatch score: --topic 'requests' has no settings under wire.topics "
        "(it lists: responses)")


def test_score_reads_each_model_call_of_an_otlp_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from tests.consumers.test_otlp import OPENINFERENCE, SEMCONV, traces

    records = tmp_path / "spans.jsonl"
    records.write_bytes(traces(SEMCONV, OPENINFERENCE) + b"\n" + b'{"resourceSpans": []}\n'
                        + traces(OPENINFERENCE) + b"\n")
    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\nvalidation: {max_future_seconds: 315360000}\n"
                      "wire: {format: otlp_json}\n")
    assert main(["score", "--input", str(records), "--config", str(config), "--read"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    # A row a call; the line of no call gives none.
    assert [(r["request_id"], r["read"]["response"]) for r in rows] == [
        ("00f067aa0ba902b7", "Sunny tomorrow."), ("0102030405060708", "7"),
        ("0102030405060708", "7")]


def test_offline_verbs_refuse_to_read_otlp_proto_as_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "spans.bin"
    records.write_bytes(b"\x0a\x00\n")
    config = tmp_path / "c.yaml"
    config.write_text("scorers: [latency]\nwire: {format: otlp_proto}\n")
    for argv in (["score", "--input", str(records)], ["backtest", "--input", str(records)]):
        assert main([*argv, "--config", str(config)]) == 2
        assert capsys.readouterr().err.startswith(
            "driftwatch: wire.format = 'otlp_proto': its messages are binary, not lines")


def test_a_backtest_whose_reference_snapshot_is_missing_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`drift.reference.source: snapshot` naming one that is not there: a traceback before."""
    records, _ = _records(tmp_path)
    config = tmp_path / "snap.yaml"
    config.write_text(f"scorers: [sanity]\ndrift: {{enabled: true, reference: {{source: "
                      f"snapshot, store: {tmp_path / 'refs'}, name: nope}}}}\n")
    assert main(["backtest", "--config", str(config), "--input", str(records)]) == 2
    assert capsys.readouterr().err == (
        f"driftwatch: no reference snapshot named 'nope' under {tmp_path / 'refs'}; build one "
        "with `driftwatch reference build --name nope --input traffic.jsonl`\n")


def test_models_distill_refuses_a_tables_folder_it_cannot_make_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file in the way was a FileExistsError after 20 s of distilling."""
    taken = tmp_path / "taken"
    taken.write_text("")
    for folder in (taken, taken / "tables"):
        assert main(["models", "distill", "--dir", str(folder)]) == 2
        assert capsys.readouterr().err == (f"driftwatch: --dir {str(folder)!r}: cannot keep "
                                           "tables there (a file is in the way)\n")


@pytest.mark.parametrize(("argv", "says"), [
    (["reference", "rollover", "--url", "http://[::1"],
     "argument --url: 'http://[::1' is not a URL (Invalid IPv6 URL)"),
    (["reference", "rollover", "--url", "http://host:abc/"],
     "argument --url: 'http://host:abc/' is not a URL (Port could not be cast to integer value "
     "as 'abc')"),
    (["reference", "rollover", "--url", "http://h:99999"],
     "argument --url: 'http://h:99999' is not a URL (Port out of range 0-65535)"),
    (["reference", "rollover", "--url", "http://x\n/"],
     "argument --url: 'http://x\\n/': a URL has no spaces or control characters"),
    (["dashboards", "render", "--prometheus", "127.0.0.1:9090"],
     "argument --prometheus: '127.0.0.1:9090': give http://HOST[:PORT] or https://..."),
    (["dashboards", "push", "--url", "http://[::1", "--token-env", "T"],
     "argument --url: 'http://[::1' is not a URL (Invalid IPv6 URL)"),
])
def test_a_url_that_does_not_parse_is_refused_when_parsed(
        argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Each was httpx's InvalidURL or urllib's ValueError as a traceback."""
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {says}")


@pytest.mark.parametrize(("argv", "says"), [
    (["--topic", "t", "--input", "{there}"], "give --input FILE or --topic NAME, not both"),
    (["--input", "{there}", "--from-offset", "5"],
     "--from-offset, --to-offset and --bootstrap say how to read a topic: give --topic NAME "
     "too"),
    (["--topic", "bad topic!"],
     "--topic 'bad topic!': a topic's name is 1 to 249 letters, digits, '.', '_' or '-'"),
    (["--topic", "t", "--from-offset", "10", "--to-offset", "5"],
     "--to-offset 5 is not past --from-offset 10: the records read are those from the first "
     "up to the second"),
    (["--topic", "t", "--bootstrap", "not a host"],
     "--bootstrap: 'not a host' is not a broker's address: HOST:PORT (a port from 1 to "
     "65535), e.g. kafka-1:9092"),
])
def test_reference_build_says_what_is_wrong_with_its_source_before_any_wait(
        argv: list[str], says: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each was read past, or met after a 30 s wait for brokers."""
    there = tmp_path / "there.jsonl"
    there.write_text("{}\n")
    argv = [a.format(there=there) for a in argv]
    assert _reference(["build", "--store", str(tmp_path / "refs"), *argv], capsys) == (
        2, f"driftwatch reference: {says}\n")
    assert _reference(["list", "--store", str(there)], capsys) == (
        2, f"driftwatch reference: --store {str(there)!r} is a file, not a store directory\n")
