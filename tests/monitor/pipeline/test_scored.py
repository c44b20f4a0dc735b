"""The scored-record format between the score and decide stages: what goes in comes out,
and a record of another format version is refused by name, never misread."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from consumers.batcher import Batch
from consumers.decode import Rejection
from consumers.wire import Origin, Record
from monitor.pipeline import scored
from monitor.pipeline.model_scoring import BatchScores
from monitor.pipeline.stages import OperationalStage, Work, operational_features
from monitor.types import IntakeCounts


def _records() -> list[Record]:
    return [
        Record(request_id="a", timestamp=1_700_000_000_000.0, model="m1", deployment="stable",
               prompt="p" * 500, response="ok", latency_ms=120.0, prompt_tokens=7,
               status="ok"),
        Record(request_id="b", model="m2", deployment="canary", response=None,
               error_type="timeout"),
        Record(request_id="c", timestamp=1_700_000_001_000.0, model="m1",
               prompt="hello", response="world", cost_usd=0.25),
    ]


def _scores() -> BatchScores:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return BatchScores(
        sampled=np.array([True, False, True]), toxicity=np.array([0.1, np.nan, 0.9]),
        prompt_toxicity=np.array([0.0, np.nan, 0.2]), groundedness=np.array([np.nan] * 3),
        flags={"toxic": np.array([False, False, True]), "refusal": np.array([True, False, False])},
        novel_numbers=[("42",), (), ()], novel_names=[(), (), ("Ada",)],
        prompt_embeddings=vectors, response_embeddings=-vectors)


def test_a_batch_comes_back_as_the_score_stage_had_it() -> None:
    records, scores = _records(), _scores()
    features = operational_features(records)
    wire = [scored.encode(s) for s in scored.encode_batch(records, features, scores)]
    back = [scored.decode(v) for v in wire]
    got_features, got = scored.decode_batch(back)
    for name in ("latency_seconds", "prompt_tokens", "completion_tokens", "cost_usd",
                 "prompt_chars", "response_chars"):
        np.testing.assert_array_equal(getattr(got_features, name), getattr(features, name))
    assert got_features.prompt_chars[0] == 500  # the full length, though the text is cut
    np.testing.assert_array_equal(got.sampled, scores.sampled)
    np.testing.assert_array_equal(got.toxicity, scores.toxicity)  # NaN where not scored
    np.testing.assert_array_equal(got.groundedness, scores.groundedness)
    assert {k: v.tolist() for k, v in got.flags.items()} == \
        {k: v.tolist() for k, v in scores.flags.items()}
    assert got.novel_numbers == [("42",), (), ()] and got.novel_names == [(), (), ("Ada",)]
    # Two rows: one per model-scored record, float16 on the wire (3 significant digits).
    assert got.prompt_embeddings is not None and got.response_embeddings is not None
    assert got.prompt_embeddings.shape == (2, 8) and got.prompt_embeddings.dtype == np.float32
    np.testing.assert_allclose(got.prompt_embeddings, scores.prompt_embeddings, atol=1e-3)
    np.testing.assert_allclose(got.response_embeddings, scores.response_embeddings, atol=1e-3)
    assert [s.event_time for s in back] == [1_700_000_000.0, None, 1_700_000_001.0]
    again = scored.as_record(back[0])
    assert (again.request_id, again.model, again.deployment, again.event_time) == \
        ("a", "m1", "stable", 1_700_000_000.0)
    assert again.prompt_text == "p" * scored.TEXT_LIMIT and again.response == "ok"


def test_records_no_model_scored_travel_without_scores() -> None:
    records = _records()
    back = [scored.decode(scored.encode(s)) for s in
            scored.encode_batch(records, operational_features(records), None)]
    _, got = scored.decode_batch(back)
    assert not got.sampled.any() and np.isnan(got.toxicity).all()
    assert got.prompt_embeddings is None and got.flags == {}


def test_another_format_version_is_refused_by_name() -> None:
    records = _records()
    [first, *_] = scored.encode_batch(records, operational_features(records), None)
    newer = scored.encode(msgspec.structs.replace(first, v=scored.FORMAT + 1))
    with pytest.raises(scored.ScoredFormatError, match=r"format 2; this driftwatch reads "
                                                       r"format 1 only"):
        scored.decode(newer)
    rejection = scored.ScoredDecoder().decode(newer)
    assert isinstance(rejection, Rejection) and rejection.reason == "scored_format"
    for junk in (b"", b'{"request_id": "x"}', b"\x93\x01\x02"):
        assert isinstance(scored.ScoredDecoder().decode(junk), Rejection)
    # A format-1 record that is cut short is refused too, not half read.
    assert isinstance(scored.ScoredDecoder().decode(scored.encode(first)[:20]), Rejection)


@pytest.mark.parametrize(("labels", "canary", "key"), [
    (["model", "deployment"], True, ("model",)),
    (["model_version"], False, ("model_version",)),
    (["model_version", "route"], True, ()),  # the gate spans every segment of a model
    ([], False, ()),
])
def test_the_partition_key_is_no_finer_than_any_state(labels, canary, key) -> None:
    assert scored.partition_key(labels, canary) == key


def test_stable_and_canary_of_one_model_share_a_key() -> None:
    records = _records()
    out = scored.encode_batch(records, operational_features(records), None)
    key = scored.partition_key(["model", "deployment"], canary=True)
    assert scored.key_of(out[0], key) == scored.key_of(out[2], key) == b"m1"
    assert scored.key_of(out[1], key) == b"m2"


def test_a_decide_task_starts_its_work_from_scored_records() -> None:
    records, scores = _records(), _scores()
    values = scored.encode_batch(records, operational_features(records), scores)
    batch = Batch(list(values), [(Origin("scored", 0, i),) for i in range(3)])
    stage = OperationalStage([], ["model", "deployment"], 10, outcome="decided")
    work = scored.beginner(IntakeCounts())(stage, batch, stateful=True)
    assert {k: v.tolist() for k, v in work.batch.segments.items()} == {
        ("m1", "", "stable", ""): [0], ("m2", "", "canary", ""): [1],
        ("m1", "", "unknown", ""): [2]}
    assert work.batch.outcomes == [("ok", ""), ("error", "timeout"), ("ok", "")]
    assert work.scores is not None and work.scores.sampled.tolist() == [True, False, True]
    np.testing.assert_array_equal(work.times, [1_700_000_000.0, np.nan, 1_700_000_001.0])
    assert work.token_counts is None  # no tokenization scorer upstream


def test_counted_tokens_travel_to_the_decide_stage_and_older_records_still_decode() -> None:
    records, scores = _records(), _scores()
    counts = {"prompt": np.array([120.0, np.nan, 2.0]), "completion": np.array([1.0, 0.0, 1.0])}
    values = scored.encode_batch(records, operational_features(records), scores, 0, counts)
    back = [scored.decode(scored.encode(v)) for v in values]
    batch = Batch(back, [(Origin("scored", 0, i),) for i in range(3)])
    stage = OperationalStage([], ["model"], 10, outcome="decided")
    work = scored.beginner(IntakeCounts())(stage, batch, stateful=True)
    assert work.token_counts is not None
    np.testing.assert_array_equal(work.token_counts["prompt"], counts["prompt"])
    np.testing.assert_array_equal(work.token_counts["completion"], counts["completion"])
    # A record written before the field existed is one element shorter: it decodes, without.
    older = msgspec.msgpack.encode(msgspec.structs.astuple(back[0])[:-1])
    assert scored.decode(older).counted_tokens is None


def test_dead_letters_ride_on_the_first_record_and_count_once_in_the_decide_stage() -> None:
    records = _records()
    values = scored.encode_batch(records, operational_features(records), None, dead_letters=4)
    back = [scored.decode(scored.encode(v)) for v in values]
    assert [s.dead_letters_before for s in back] == [4, 0, 0]
    batch = Batch(back, [(Origin("scored", 0, i),) for i in range(3)])
    stage = OperationalStage([], ["model"], 10, outcome="decided")
    intake = IntakeCounts()
    begin = scored.beginner(intake)
    begin(stage, batch, stateful=False)  # a replay: the checkpointed rules hold these already
    assert (intake.messages, intake.dead_letters) == (0, 0)
    begin(stage, batch, stateful=True)
    assert (intake.messages, intake.dead_letters) == (7, 4)  # 3 records + 4 dead letters


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        if self._error is not None:
            raise self._error


class _Producer:
    """kafka-python's producer as the publish step uses it; fails the first `failures` sends."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes) -> _Future:
        if self.failures:
            self.failures -= 1
            from kafka.errors import KafkaTimeoutError

            return _Future(KafkaTimeoutError("no ack"))
        self.sent.append((topic, key, value))
        return _Future(None)



def _work(records: list[Record]) -> Work:
    stage = OperationalStage([], ["model"], 10)
    return Work(stage.scored(records), [(Origin("in", 0, i),) for i in range(len(records))],
                np.full(len(records), np.nan))


def test_the_publish_step_sends_every_record_keyed_and_again_until_acknowledged() -> None:
    from prometheus_client import CollectorRegistry

    from monitor.pipeline.publish import PublishStage
    from monitor.telemetry.metrics import Metrics

    producer, intake = _Producer(failures=2), IntakeCounts()
    metrics = Metrics(CollectorRegistry())
    stage = PublishStage(producer, "scored", ("model",), metrics=metrics, intake=intake)
    intake.dead_letters = 5  # read before the first batch
    work = _work(_records())
    stage.process(work)
    assert metrics.SCORED_PUBLISHED._value.get() == 0  # sent, not yet acknowledged
    assert work.settle is not None
    work.settle()
    # The two unacknowledged sends went again (after 0.5 s): each record is on the topic
    # once, keyed by its model.
    assert sorted((t, k) for t, k, _ in producer.sent) == [
        ("scored", b"m1"), ("scored", b"m1"), ("scored", b"m2")]
    ids = sorted(scored.decode(v).request_id for _, _, v in producer.sent)
    assert ids == ["a", "b", "c"]
    assert metrics.SCORED_PUBLISHED._value.get() == 3
    first = [scored.decode(v) for _, _, v in producer.sent if scored.decode(v).request_id == "a"]
    assert first[0].dead_letters_before == 5
    producer.sent.clear()
    stage.process(_work(_records()[:1]))  # no new dead letters since
    assert scored.decode(producer.sent[0][2]).dead_letters_before == 0


def test_a_stop_while_the_broker_does_not_acknowledge_leaves_the_batch_unfinished() -> None:
    import threading

    from consumers.processor import Cancelled
    from monitor.pipeline.publish import PublishStage

    cancel = threading.Event()
    cancel.set()  # the daemon is stopping
    stage = PublishStage(_Producer(failures=1_000), "scored", ("model",), cancel)
    work = _work(_records())
    stage.process(work)
    assert work.settle is not None
    with pytest.raises(Cancelled):
        work.settle()  # its offsets stay uncommitted, to be read again
