"""The scored-record format between the score and decide stages: what goes in comes out,
and a record of another format version is refused by name, never misread."""

from __future__ import annotations

import time

import msgspec
import numpy as np
import pytest

from consumers.batcher import Batch
from consumers.decode import Rejection
from consumers.wire import Origin, Record
from monitor.pipeline import scored
from monitor.pipeline.model_scoring import BatchScores
from monitor.pipeline.stages import OperationalStage, Work, operational_features
from monitor.types import EXAMPLE_TEXT_CHARS, IntakeCounts


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
    back = scored.decode(scored.encode(scored.encode_batch(records, features, scores)))
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
    assert again.prompt_text == "p" * EXAMPLE_TEXT_CHARS and again.response == "ok"


def test_records_no_model_scored_travel_without_scores() -> None:
    records = _records()
    back = scored.decode(scored.encode(
        scored.encode_batch(records, operational_features(records), None)))
    _, got = scored.decode_batch(back)
    assert not got.sampled.any() and np.isnan(got.toxicity).all()
    assert got.prompt_embeddings is None and got.flags == {}


def test_another_format_version_is_refused_by_name() -> None:
    records = _records()
    batch = scored.encode_batch(records, operational_features(records), None)
    [first, *_] = batch
    newer = msgspec.msgpack.encode([scored.FORMAT + 1, [first]])
    with pytest.raises(scored.ScoredFormatError, match=r"format 3; this driftwatch reads "
                                                       r"format 2 only"):
        scored.decode(newer)
    rejection = scored.ScoredDecoder().decode(newer)
    assert isinstance(rejection, Rejection) and rejection.reason == "scored_format"
    # Format 1, one record a message with its version first, is refused by name too.
    older = msgspec.msgpack.encode([1, *msgspec.structs.astuple(first)])
    with pytest.raises(scored.ScoredFormatError, match=r"format 1; this driftwatch reads"):
        scored.decode(older)
    for junk in (b"", b'{"request_id": "x"}', b"\x93\x01\x02", b"\x92\x02\x90"):
        assert isinstance(scored.ScoredDecoder().decode(junk), Rejection)  # last: no records
    # A message that is cut short is refused too, not half read.
    assert isinstance(scored.ScoredDecoder().decode(scored.encode(batch)[:60]), Rejection)


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
    back = scored.decode(scored.encode(values))
    batch = Batch(back, [(Origin("scored", 0, i),) for i in range(3)])
    stage = OperationalStage([], ["model"], 10, outcome="decided")
    work = scored.beginner(IntakeCounts())(stage, batch, stateful=True)
    assert work.token_counts is not None
    np.testing.assert_array_equal(work.token_counts["prompt"], counts["prompt"])
    np.testing.assert_array_equal(work.token_counts["completion"], counts["completion"])
    # A record written before the field existed (and `vectors` after it) is two elements
    # shorter: it decodes, without.
    older = msgspec.msgpack.encode([scored.FORMAT, [msgspec.structs.astuple(back[0])[:-2]]])
    assert scored.decode(older)[0].counted_tokens is None
    before_vectors = msgspec.msgpack.encode([scored.FORMAT,
                                             [msgspec.structs.astuple(back[0])[:-1]]])
    assert scored.decode(before_vectors)[0].counted_tokens == (120.0, 1.0)


def test_vectors_of_another_embedding_are_refused_by_name_never_compared() -> None:
    """A rolling change of scoring.embedding puts vectors of two models on the scored topic;
    of one dimension (MiniLM and e5-small: 384 both), nothing else tells them apart."""
    records, scores = _records(), _scores()
    out = scored.encode_batch(records, operational_features(records), scores,
                              vectors="a+static:1")
    assert [s.vectors for s in out] == ["a+static:1", None, "a+static:1"]  # with vectors only
    value = scored.encode(out)
    assert [s.request_id for s in scored.ScoredDecoder("a+static:1").decode(value)] == \
        ["a", "b", "c"]  # type: ignore[union-attr]
    refused = scored.ScoredDecoder("b").decode(value)
    assert isinstance(refused, Rejection) and refused.reason == "scored_format"
    assert "'a+static:1'" in refused.detail and "'b'" in refused.detail
    # Written before the field (or without vectors): read as it is, by any decide stage.
    older = scored.encode(scored.encode_batch(records, operational_features(records), scores))
    assert len(scored.ScoredDecoder("b").decode(older)) == 3  # type: ignore[arg-type]
    assert len(scored.ScoredDecoder().decode(value)) == 3  # type: ignore[arg-type]


def test_dead_letters_ride_on_the_first_record_and_count_once_in_the_decide_stage() -> None:
    records = _records()
    values = scored.encode_batch(records, operational_features(records), None, dead_letters=4)
    back = scored.decode(scored.encode(values))
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
    """kafka-python's producer as the publish step uses it; fails the first `failures` sends
    (unacknowledged), after refusing the first `refusals` at once (raised by `send`)."""

    def __init__(self, failures: int = 0, refusals: int = 0, refusal: Exception | None = None
                 ) -> None:
        from kafka.errors import KafkaTimeoutError

        self.failures = failures
        self.refusals = refusals
        self.refusal = refusal or KafkaTimeoutError("Failed to update metadata after 1.0 secs.")
        self.tried = 0
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, value: bytes, key: bytes) -> _Future:
        self.tried += 1
        if self.refusals:
            self.refusals -= 1
            raise self.refusal
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
    # The two unacknowledged messages went again (after 0.5 s): one message per model, its
    # records in batch order, each record on the topic once.
    got = {k: [s.request_id for s in scored.decode(v)] for t, k, v in producer.sent}
    assert sorted(got.items()) == [(b"m1", ["a", "c"]), (b"m2", ["b"])]
    assert len(producer.sent) == 2 and {t for t, _, _ in producer.sent} == {"scored"}
    assert metrics.SCORED_PUBLISHED._value.get() == 3
    first = [s for _, _, v in producer.sent for s in scored.decode(v) if s.request_id == "a"]
    assert first[0].dead_letters_before == 5
    producer.sent.clear()
    work = _work(_records()[:1])
    stage.process(work)  # no new dead letters since
    assert work.settle is not None
    work.settle()
    assert scored.decode(producer.sent[0][2])[0].dead_letters_before == 0


def test_a_send_refused_at_once_is_sent_again_by_the_settle_not_by_a_batch_retry() -> None:
    """kafka-python's send raises when it cannot queue a message (no metadata within
    max_block_ms, a full buffer). Raised out of the step, the batch would be retried whole
    and its messages sent before the refused one would go to the topic twice."""
    from kafka.errors import MessageSizeTooLargeError

    from monitor.pipeline.publish import PublishStage

    producer = _Producer(refusals=1, refusal=MessageSizeTooLargeError("too large"))
    stage = PublishStage(producer, "scored", ("request_id",))
    work = _work(_records())
    stage.process(work)  # a, b, c: three messages, the first refused
    assert [k for _, k, _ in producer.sent] == [b"b", b"c"]
    assert work.settle is not None
    work.settle()
    assert sorted(k for _, k, _ in producer.sent) == [b"a", b"b", b"c"]  # each once


def test_a_send_that_waited_in_vain_leaves_the_batch_s_other_messages_to_the_settle() -> None:
    """No metadata or buffer room within max_block_ms: each of the next sends would wait as
    long, in the worker, where a stop is not seen (the settle checks for one between tries)."""
    from monitor.pipeline.publish import PublishStage

    producer = _Producer(refusals=1)  # KafkaTimeoutError
    stage = PublishStage(producer, "scored", ("request_id",))
    work = _work(_records())
    stage.process(work)
    assert (producer.tried, producer.sent) == (1, [])  # b and c not tried after a's wait
    assert work.settle is not None
    work.settle()
    assert sorted(k for _, k, _ in producer.sent) == [b"a", b"b", b"c"]  # each once
    assert producer.tried == 4


def test_a_scored_record_stays_small_whatever_its_input_held() -> None:
    """Ids and labels at the wire format's limit in four-byte characters, long texts, a
    large embedding and a response of a hundred thousand invented numbers and names: the
    record keeps the first few of those, cut, and fits the message budget."""
    from consumers.wire import MAX_FIELD_CHARS

    long = "\U0001F600" * MAX_FIELD_CHARS
    record = Record(request_id=long, model=long, model_version=long, route=long,
                    status=long, error_type=long, prompt="p" * 1_000_000,
                    response="r" * 1_000_000)
    numbers = tuple(str(10**6 + i) for i in range(100_000))
    names = (long, *(f"Name{i} Other{i}" for i in range(100_000)))
    vector = np.ones((1, 4_096), dtype=np.float32)
    scores = BatchScores(np.array([True]), np.array([0.5]), np.array([0.5]), np.array([0.2]),
                         {"novel_number": np.array([True]), "novel_name": np.array([True])},
                         [numbers], [names], vector, vector)
    out = scored.encode_batch([record], operational_features([record]), scores)
    assert out[0].novel_numbers == numbers[:scored.NOVEL_KEPT]
    assert out[0].novel_names[0] == long[:EXAMPLE_TEXT_CHARS]
    assert out[0].novel_names[1:] == names[1:scored.NOVEL_KEPT]
    [message] = scored.messages(out, ("model",))
    # Under the packing budget (so no message exceeds it), itself a quarter of the
    # producer's max_request_size.
    assert len(message.key) + len(message.value) < scored.MESSAGE_BYTES
    assert scored.decode(message.value)[0].request_id == long  # ids are kept whole


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


def test_a_key_s_records_are_packed_in_order_within_the_message_budget() -> None:
    records = _records() * 4  # m1, m2, m1 four times over: 8 of m1, 4 of m2
    out = scored.encode_batch(records, operational_features(records), _scores_of(records))
    budget = 2 * max(len(msgspec.msgpack.encode(r)) for r in out)  # two records at least
    messages = scored.messages(out, ("model",), max_bytes=budget)
    by_key: dict[bytes, list[list[str]]] = {}
    for m in messages:
        back = scored.decode(m.value)
        assert m.records == len(back) >= 2
        assert sum(len(msgspec.msgpack.encode(r)) for r in back) <= budget
        by_key.setdefault(m.key, []).append([s.request_id for s in back])
    assert len(by_key[b"m1"]) > 1  # the budget parted m1's eight records
    assert [i for chunk in by_key[b"m1"] for i in chunk] == ["a", "c"] * 4
    assert [i for chunk in by_key[b"m2"] for i in chunk] == ["b"] * 4
    # A record larger than the budget travels alone rather than not at all.
    alone = scored.messages(out[:2], ("model",), max_bytes=1)
    assert [m.records for m in alone] == [1, 1]


def _scores_of(records: list[Record]) -> BatchScores:
    one = _scores()
    n = len(records) // 3

    def tile(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a] * n)

    return BatchScores(tile(one.sampled), tile(one.toxicity), tile(one.prompt_toxicity),
                       tile(one.groundedness), {k: tile(v) for k, v in one.flags.items()},
                       one.novel_numbers * n, one.novel_names * n,
                       tile(one.prompt_embeddings), tile(one.response_embeddings))


def test_the_records_of_one_message_are_never_parted_between_two_batches() -> None:
    """A message's offset is done when its batch is: all its records ride in that batch,
    even past the batch's record limit."""
    from types import SimpleNamespace

    from kafka import TopicPartition

    from consumers.settings import BatchSettings, KafkaSettings
    from consumers.source import KafkaSource

    records = _records()
    out = scored.encode_batch(records, operational_features(records), None)
    values = [scored.encode(out), scored.encode(out[:1])]  # 3 records, then 1

    class Consumer:
        def poll(self, timeout_ms: int) -> dict[TopicPartition, list[SimpleNamespace]]:
            return {TopicPartition("scored", 0): [
                SimpleNamespace(offset=i, value=v, key=b"m") for i, v in enumerate(values)]}

    source = KafkaSource(KafkaSettings(bootstrap_servers=["127.0.0.1:1"], topic="scored"),
                         batch=BatchSettings(max_records=2), decoder=scored.ScoredDecoder())
    source._consumer = Consumer()  # type: ignore[assignment]
    assert source.poll(0) == 2
    batches = source.take_ready(force=True)
    assert [[(s.request_id, o[0].offset) for s, o in zip(b.records, b.origins, strict=True)]
            for b in batches] == [[("a", 0), ("b", 0), ("c", 0)], [("a", 1)]]


def test_acknowledgements_are_awaited_for_ack_timeout_in_all_not_each() -> None:
    """A broker that answers nothing: the settle gives all of a batch's messages one
    `ack_timeout_s` together before it sends them again, not one each."""
    import threading

    from kafka.errors import KafkaTimeoutError

    from consumers.processor import Cancelled
    from monitor.pipeline.publish import PublishStage

    waits: list[float] = []
    cancel = threading.Event()

    class Silent:
        def get(self, timeout: float | None = None) -> None:
            assert timeout is not None
            waits.append(timeout)
            time.sleep(timeout)
            cancel.set()  # stop after this round: no second round of waits
            raise KafkaTimeoutError("no ack")

    class Producer:
        def send(self, topic: str, value: bytes, key: bytes) -> Silent:
            return Silent()

    records = _records() * 2  # keyed by request id: three messages (a, b, c)
    stage = PublishStage(Producer(), "scored", ("request_id",), cancel, ack_timeout_s=0.3)
    work = _work(records)
    stage.process(work)
    assert work.settle is not None
    with pytest.raises(Cancelled):
        work.settle()
    assert len(waits) == 3
    assert sum(waits) <= 0.3 + 1e-6
