"""The offline verbs read records as the daemon does, under the config's `validation`: a
producer's times without offset, read as UTC by the daemon, are read so by `score` and
`backtest` too (a backtest must decide what the daemon decides); so are its epoch numbers'
units."""

from __future__ import annotations

import io
import json

from monitor.app.backtest import backtest
from monitor.app.score import score_lines
from monitor.config import OfflineConfig

LINES = [json.dumps({"request_id": f"r{i}", "timestamp": f"2026-01-01T10:00:0{i}",
                     "model": "m", "prompt": "hi", "response": "hello", "latency_ms": 10.0}
                    ).encode() for i in range(3)]


def test_score_follows_validation_naive_timestamps() -> None:
    refused = list(score_lines(LINES, OfflineConfig(scorers=["latency"])))
    assert [row.get("error") for row in refused] == ["invalid_field"] * 3
    utc = OfflineConfig(scorers=["latency"], validation={"naive_timestamps": "utc"})
    assert [row.get("request_id") for row in score_lines(LINES, utc)] == ["r0", "r1", "r2"]


def test_backtest_follows_validation_naive_timestamps() -> None:
    def dead_letters(config: OfflineConfig) -> int:
        events = list(backtest(io.BytesIO(b"\n".join(LINES)), config))
        return sum(1 for e in events if e.get("type") == "dead_letter")
    assert dead_letters(OfflineConfig(scorers=["latency"])) == 3
    assert dead_letters(OfflineConfig(scorers=["latency"],
                                      validation={"naive_timestamps": "utc"})) == 0


def test_score_follows_validation_epoch_unit() -> None:
    seconds = [json.dumps({"request_id": f"s{i}", "timestamp": 1_767_261_600 + i,
                           "response": "hello"}).encode() for i in range(2)]
    read = list(score_lines(seconds, OfflineConfig(scorers=["latency"])))
    assert [row.get("request_id") for row in read] == ["s0", "s1"]
    pinned = OfflineConfig(scorers=["latency"], validation={"epoch_unit": "ms"})
    assert [row.get("error") for row in score_lines(seconds, pinned)] == ["invalid_field"] * 2


def test_score_and_backtest_read_the_producers_field_names() -> None:
    logged = [json.dumps({"id": f"g{i}", "startTime": 1_767_261_600 + i, "response_time": 0.5,
                          "messages": [{"role": "user", "content": "hi"}],
                          "response": "hello"}).encode() for i in range(3)]
    config = OfflineConfig(scorers=["latency"], wire={
        "fields": {"request_id": "id", "timestamp": "startTime", "latency_ms": "response_time"},
        "latency_unit": "s"})
    assert [row.get("request_id") for row in score_lines(logged, config)] == ["g0", "g1", "g2"]
    unmapped = list(score_lines(logged, OfflineConfig(scorers=["latency"])))
    assert [row.get("error") for row in unmapped] == ["missing_request_id"] * 3
    def dead_letters(config: OfflineConfig) -> list[str]:
        events = backtest(io.BytesIO(b"\n".join(logged)), config)
        return [e["reason"] for e in events if e.get("type") == "dead_letter"]
    assert dead_letters(OfflineConfig(scorers=["latency"])) == ["missing_request_id"] * 3
    assert dead_letters(config) == []


def test_score_says_what_it_read_of_each_record_when_asked() -> None:
    """`driftwatch score --read`: what a map read, to check it against a sample."""
    line = json.dumps({
        "id": "g1", "start": "2026-01-01T10:00:00Z", "end": "2026-01-01T10:00:01.5Z",
        "model": "gpt-4o", "meta": {"team": "search"}, "response_cost": "0.002",
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "How tall is it?"}],
        "response": {"choices": [{"message": {"role": "assistant", "content": "330 m."},
                                  "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 3}},
        "docs": ["The tower is 330 m tall.", "x" * 500]}).encode()
    config = OfflineConfig(scorers=["latency"], wire={
        "fields": {"request_id": "id", "timestamp": "start", "route": "meta.team",
                   "cost_usd": "response_cost", "context": "docs"},
        "latency_from": ["start", "end"]})
    (row,) = score_lines([line], config, read=True)
    assert row["read"] == {
        "event_time": "2026-01-01T10:00:00.000Z", "model": "gpt-4o", "model_version": None,
        "deployment": None, "route": "search", "status": "stop", "error_type": None,
        "latency_ms": 1_500.0, "prompt_tokens": 12, "completion_tokens": 3, "cost_usd": 0.002,
        "prompt": "How tall is it?", "response": "330 m.", "context_passages": 2}
    (plain,) = score_lines([line], config)
    assert "read" not in plain and plain["request_id"] == "g1"


def test_a_line_past_the_limit_is_cut_there_and_refused_and_the_next_lines_read() -> None:
    """A file with no newline (a binary given by mistake, /dev/zero) was read whole into
    memory by `for line in file`."""
    from consumers.decode import Decoder, Rejection
    from monitor.app.wiring import bounded_lines

    long = b"x" * 100
    source = io.BytesIO(b"a\n" + long + b"\n" + b"b\n" + long[:20] + b"\n" + long)
    lines = list(bounded_lines(source, limit=16))
    assert lines == [b"a\n", long[:17], b"b\n", long[:17], long[:17]]
    refused = Decoder(16).decode(lines[1])
    assert isinstance(refused, Rejection) and refused.reason == "oversized", refused
    assert list(bounded_lines(io.BytesIO(b"x" * 16 + b"\n"), limit=16)) == [b"x" * 16 + b"\n"]
