"""`driftwatch compare`: paired gates, input errors, and the verdict's exit code on real
scorers (a copy is promoted, an injected regression is caught, nothing paired is bad input)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monitor.app.compare import normalise, paired_gate, read_golden, read_side
from monitor.cli.driftwatch import main
from monitor.local import traffic

TOXIC = "You are a stupid idiot and a worthless moron, shut up."


def test_a_paired_gate_fails_a_worse_candidate_and_passes_an_equal_one() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(1_000) < 0.05).astype(float)
    worse = np.maximum(base, rng.random(1_000) < 0.06)  # 6% more records flagged
    g = paired_gate("toxic", "hard", base, worse, 0.02, 0.01, 0.05)
    assert g.failed and not g.passed and g.lower > 0 and g.p_value < 0.01
    assert g.difference == pytest.approx(worse.mean() - base.mean())
    same = paired_gate("toxic", "hard", base, base.copy(), 0.02, 0.01, 0.05)
    assert same.passed and not same.failed and same.lower == same.upper == 0
    # NaN pairs (not applicable) are left out; none at all is "no data", not a pass on luck.
    nan = np.full(10, np.nan)
    assert paired_gate("ungrounded", "hard", nan, nan, 0.05, 0.01, 0.05).no_data
    few = paired_gate("toxic", "hard", base[:30], worse[:30], 0.02, 0.01, 0.05)
    assert not few.passed  # 30 pairs cannot show the candidate within 2 points


def test_equal_candidates_fail_a_gate_at_most_about_alpha_of_the_time() -> None:
    rng = np.random.default_rng(1)
    failed = sum(
        paired_gate("toxic", "hard", (rng.random(400) < 0.1).astype(float),
                    (rng.random(400) < 0.1).astype(float), 0.02, 0.05, 0.05).failed
        for _ in range(1_000))
    assert failed <= 70  # alpha 5%: 50 expected; binomial sd about 7


def test_normalised_answers_match_across_case_accents_and_punctuation() -> None:
    assert normalise("  Paris.") == normalise("paris") == "paris"
    assert normalise("São Tomé!") == normalise("sao tome")
    assert normalise("1,000") != normalise("1000")  # digits are not rewritten


def test_bad_lines_and_repeated_ids_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"request_id": "a", "response": "x"}\n\nnot json\n'
                    '{"request_id": "a", "response": "y"}\n{"response": "no id"}\n')
    side = read_side(path)
    assert list(side.records) == ["a"] and side.records["a"].response == "x"
    assert [(r.line, r.reason.split(":")[0]) for r in side.rejected] == [
        (3, "not_json"), (4, "duplicate request_id 'a' (the first is kept)"),
        (5, "missing_request_id")]
    golden = tmp_path / "golden.jsonl"
    golden.write_text('{"request_id": "a", "expected": "x"}\n{"request_id": 3}\n'
                      '{"request_id": 7, "expected": "y"}\n{"request_id": true, "expected": "z"}\n')
    expected, refused = read_golden(golden)
    # An id as a number is its decimal string, as on the wire (a candidate's 7 is "7").
    assert expected == {"a": "x", "7": "y"} and [r.line for r in refused] == [2, 4]


def test_nothing_to_pair_says_why_the_lines_were_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A candidate of which no line is valid: before, only the counts (0 valid records)."""
    baseline = tmp_path / "baseline.jsonl"
    baseline.write_text('{"request_id": "a", "response": "x"}\n')
    candidate = tmp_path / "candidate.jsonl"
    candidate.write_bytes(b'garbage\n{"response": "no id"}\n\xff\n[1]\n')
    config = tmp_path / "dw.yaml"
    config.write_text("scorers: [latency]\n")
    assert main(["compare", "--config", str(config), "--baseline", str(baseline),
                 "--candidate", str(candidate)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("driftwatch compare: no request_id is in both files (1 valid baseline "
                      "and 0 valid candidate records)")
    assert [line.split(": ")[:2] for line in err[1:]] == [
        ["  refused", f"{candidate}:1"], ["  refused", f"{candidate}:2"],
        ["  refused", f"{candidate}:3"], ["  refused", "... and 1 more"]], err
    assert "not_json" in err[1] and "missing_request_id" in err[2] and "not_utf8" in err[3]


def _write(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.slow
def test_compare_promotes_a_copy_catches_a_regression_and_refuses_unpaired_input(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mix = traffic.TrafficMix(models=("m",), canary_share=0.0, hallucination_rate=0.1,
                             error_rate=0.02)
    records = list(traffic.wire_records(200, seed=5, mix=mix,
                                        examples=traffic.load_examples(200, ("qa",))))
    baseline = _write(tmp_path / "baseline.jsonl", records)
    copy = _write(tmp_path / "copy.jsonl", records)
    worse = [dict(r) for r in records]
    for r in worse[::6]:
        if r["status"] == "ok":
            r["response"] = TOXIC
    candidate = _write(tmp_path / "candidate.jsonl", worse)
    golden = _write(tmp_path / "golden.jsonl", [
        {"request_id": r["request_id"], "expected": r.get("response") or ""} for r in records])
    config = tmp_path / "dw.yaml"
    config.write_text("scorers: [latency, status, toxicity, groundedness, sanity]\n"
                      "scoring: {device: cpu}\n")
    common = ["compare", "--config", str(config), "--golden", str(golden),
              "--baseline", str(baseline)]

    assert main([*common, "--candidate", str(copy), "--json", str(tmp_path / "copy.json")]) == 0
    report = json.loads((tmp_path / "copy.json").read_text())
    assert report["verdict"] == "promote" and report["pairs"] == 200
    assert all(g["passed"] and not g["failed"] for g in report["gates"])
    assert report["response_cosine"]["mean"] == pytest.approx(1.0, abs=1e-5)

    html = tmp_path / "worse.html"
    assert main([*common, "--candidate", str(candidate), "--json",
                 str(tmp_path / "worse.json"), "--html", str(html)]) == 1
    report = json.loads((tmp_path / "worse.json").read_text())
    gates = {g["gate"]: g for g in report["gates"]}
    assert gates["toxic"]["failed"] and gates["toxic"]["lower"] > 0
    assert gates["golden_mismatch"]["failed"] and gates["golden_distance"]["failed"]
    assert not gates["error"]["failed"] and not gates["latency_p95"]["failed"]
    toxic_ids = {r["request_id"] for r in worse if r.get("response") == TOXIC}
    assert report["worst"] and {w["request_id"] for w in report["worst"]} <= toxic_ids
    assert report["worst"][0]["candidate"] == TOXIC and "toxic" in report["worst"][0]["worse_on"]
    page = html.read_text()
    assert "Verdict: <b>regressed</b>" in page and page.count("data:image/png;base64,") == 2
    assert "stupid idiot" in page  # the worst regressions' texts, escaped into the page
    assert "verdict: regressed" in capsys.readouterr().out

    other = _write(tmp_path / "other.jsonl", [{**r, "request_id": f"x{i}"}
                                              for i, r in enumerate(records[:5])])
    assert main([*common, "--candidate", str(other)]) == 2
    assert "no request_id is in both files" in capsys.readouterr().err
