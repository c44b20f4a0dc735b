"""Unit tests for the in-memory bookkeeping of the consumer: commit points, micro-batches, joins.
Time is a fake clock (a list whose last element is "now"), so nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from consumers.batcher import Batch, Batcher
from consumers.join import Half, Joined, Joiner, Side
from consumers.offsets import OffsetTracker
from consumers.wire import Origin, Record

T = "traffic"


class FakeClock:
    """A list-backed clock: `now` is the last value; `advance` appends a later one."""

    def __init__(self, start: float = 1_000.0) -> None:
        self.times: list[float] = [start]

    def __call__(self) -> float:
        return self.times[-1]

    def advance(self, seconds: float) -> None:
        self.times.append(self.times[-1] + seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def o(offset: int, partition: int = 0, topic: str = T) -> Origin:
    return Origin(topic, partition, offset)


def rec(request_id: str, **fields: object) -> Record:
    return Record(request_id=request_id, **fields)  # type: ignore[arg-type]


# -- OffsetTracker -----------------------------------------------------------------------------

def _tracker(*origins: Origin) -> OffsetTracker:
    tracker = OffsetTracker()
    for origin in origins:
        tracker.started(origin)
    return tracker


def test_commit_point_starts_at_the_first_offset_read() -> None:
    tracker = _tracker(o(40), o(41))
    assert tracker.position((T, 0)) == 40
    assert tracker.commit_points() == {(T, 0): 40}
    assert tracker.in_flight() == 2
    assert tracker.position((T, 9)) is None


def test_out_of_order_finish_only_advances_over_a_contiguous_done_run() -> None:
    tracker = _tracker(*(o(i) for i in range(10, 15)))
    steps = [(12, 10), (14, 10), (10, 11), (11, 13), (13, 15)]
    for finished, expected_point in steps:
        tracker.finish([o(finished)])
        assert tracker.position((T, 0)) == expected_point, finished
    assert tracker.in_flight() == 0


def test_partitions_advance_independently() -> None:
    tracker = _tracker(o(0, 0), o(1, 0), o(100, 1), o(101, 1))
    tracker.finish([o(1, 0), o(100, 1)])
    assert tracker.commit_points() == {(T, 0): 0, (T, 1): 101}
    tracker.finish([o(0, 0)])
    assert tracker.commit_points() == {(T, 0): 2, (T, 1): 101}


def test_commit_points_returns_only_partitions_changed_since_mark_committed() -> None:
    tracker = _tracker(o(0, 0), o(1, 0), o(0, 1), o(1, 1))
    tracker.finish([o(0, 0), o(0, 1)])
    points = tracker.commit_points()
    assert points == {(T, 0): 1, (T, 1): 1}
    tracker.mark_committed(points)
    assert tracker.commit_points() == {}
    tracker.finish([o(1, 1)])
    assert tracker.commit_points() == {(T, 1): 2}
    tracker.mark_committed({(T, 1): 2})
    tracker.finish([o(1, 0)])
    assert tracker.commit_points() == {(T, 0): 2}


def test_forget_drops_a_partition_and_its_committed_mark() -> None:
    tracker = _tracker(o(5, 0), o(7, 1))
    tracker.mark_committed(tracker.commit_points())
    tracker.forget([(T, 0)])
    assert tracker.position((T, 0)) is None
    assert tracker.position((T, 1)) == 7
    assert tracker.in_flight() == 1
    # Reassigned later: it starts fresh, and its point counts as changed again.
    tracker.started(o(20, 0))
    assert tracker.commit_points() == {(T, 0): 20}


def test_finishing_an_offset_of_a_forgotten_partition_is_ignored() -> None:
    tracker = _tracker(o(0, 0), o(0, 1))
    tracker.forget([(T, 0), (T, 99)])
    tracker.finish([o(0, 0), o(0, 1)])
    assert tracker.commit_points() == {(T, 1): 1}
    assert tracker.position((T, 0)) is None


# -- Batcher -----------------------------------------------------------------------------------

def test_take_returns_none_until_the_batch_is_full(clock: FakeClock) -> None:
    batcher = Batcher(max_records=3, max_wait_seconds=10, clock=clock)
    assert batcher.take() is None
    for i in range(2):
        batcher.add(rec(f"r{i}"), (o(i),))
        assert batcher.take() is None
    batcher.add(rec("r2"), (o(2),))
    batch = batcher.take()
    assert batch is not None
    assert [r.request_id for r in batch.records] == ["r0", "r1", "r2"]
    assert list(batch.positions()) == [o(0), o(1), o(2)]
    assert len(batcher) == 0 and batcher.take() is None


def test_take_returns_the_partial_batch_once_its_oldest_record_is_due(clock: FakeClock) -> None:
    batcher = Batcher(max_records=100, max_wait_seconds=2.0, clock=clock)
    batcher.add(rec("old"), (o(0),))
    clock.advance(1.5)
    batcher.add(rec("young"), (o(1),))
    assert batcher.take() is None
    clock.advance(0.5)
    batch = batcher.take()
    assert batch is not None and [r.request_id for r in batch.records] == ["old", "young"]


def test_time_left_counts_down_from_the_first_record_and_is_inf_when_empty(
    clock: FakeClock,
) -> None:
    batcher = Batcher(max_records=10, max_wait_seconds=2.0, clock=clock)
    assert batcher.time_left() == float("inf")
    batcher.add(rec("a"), (o(0),))
    assert batcher.time_left() == 2.0
    clock.advance(0.75)
    batcher.add(rec("b"), (o(1),))
    assert batcher.time_left() == 1.25
    clock.advance(5)
    assert batcher.time_left() == 0.0
    assert batcher.take() is not None
    assert batcher.time_left() == float("inf")


def test_force_closes_a_partial_batch_but_not_an_empty_one(clock: FakeClock) -> None:
    batcher = Batcher(max_records=10, max_wait_seconds=60, clock=clock)
    assert batcher.take(force=True) is None
    batcher.add(rec("a"), (o(0),))
    assert batcher.take() is None
    batch = batcher.take(force=True)
    assert batch is not None and [r.request_id for r in batch.records] == ["a"]


def test_a_new_batch_opens_its_wait_at_its_own_first_record(clock: FakeClock) -> None:
    batcher = Batcher(max_records=1, max_wait_seconds=3.0, clock=clock)
    batcher.add(rec("a"), (o(0),))
    assert batcher.take() is not None
    clock.advance(100)
    batcher.add(rec("b"), (o(1),))
    assert batcher.time_left() == 3.0


def test_drop_removes_records_with_any_origin_in_the_partitions_and_returns_their_origins(
    clock: FakeClock,
) -> None:
    batcher = Batcher(max_records=10, max_wait_seconds=1, clock=clock)
    joined_origins = (Origin("req", 0, 5), Origin("resp", 3, 9))
    batcher.add(rec("keep"), (Origin("req", 1, 0),))
    batcher.add(rec("joined"), joined_origins)  # one of its two origins is in a dropped partition
    batcher.add(rec("gone"), (Origin("resp", 3, 10),))
    batcher.add(rec("keep2"), (Origin("resp", 1, 4),))

    dropped = batcher.drop([("resp", 3), ("other", 0)])

    assert dropped == [*joined_origins, Origin("resp", 3, 10)]
    batch = batcher.take(force=True)
    assert isinstance(batch, Batch)
    assert [r.request_id for r in batch.records] == ["keep", "keep2"]
    assert batch.origins == [(Origin("req", 1, 0),), (Origin("resp", 1, 4),)]


def test_dropping_every_record_closes_the_open_batch(clock: FakeClock) -> None:
    batcher = Batcher(max_records=10, max_wait_seconds=1, clock=clock)
    batcher.add(rec("a"), (o(0, 2),))
    assert batcher.drop([(T, 2)]) == [o(0, 2)]
    assert len(batcher) == 0
    assert batcher.time_left() == float("inf")
    assert batcher.take(force=True) is None


# -- Joiner ------------------------------------------------------------------------------------

def half(side: Side, request_id: str, offset: int, partition: int = 0, **fields: object) -> Half:
    topic = "requests" if side == "request" else "responses"
    return Half(side, rec(request_id, **fields), Origin(topic, partition, offset), b"raw")


JoinerFactory = Callable[..., Joiner]


@pytest.fixture
def joiner(clock: FakeClock) -> JoinerFactory:
    def make(window_seconds: float = 30.0, max_pending: int = 100) -> Joiner:
        return Joiner(window_seconds, max_pending, clock=clock)
    return make


@pytest.mark.parametrize("request_first", [True, False])
def test_halves_pair_in_either_order_and_merge_fields_with_the_request_winning(
    joiner: JoinerFactory, request_first: bool
) -> None:
    j = joiner()
    request = half("request", "r1", 7, model="m", prompt="hi", timestamp=1_000.0, status="sent")
    response = half("response", "r1", 3, partition=2, response="hello", latency_ms=12.0,
                    timestamp=2_000.0, status="ok", model="other")
    first, second = (request, response) if request_first else (response, request)

    assert j.add(first) is None
    assert len(j) == 1
    joined = j.add(second)

    assert isinstance(joined, Joined)
    assert joined.origins == (Origin("requests", 0, 7), Origin("responses", 2, 3))
    r = joined.record
    assert (r.request_id, r.model, r.prompt, r.response, r.latency_ms) == (
        "r1", "m", "hi", "hello", 12.0)
    assert (r.timestamp, r.status) == (1_000.0, "sent")  # the request wins on conflicts
    assert len(j) == 0


def test_a_second_copy_of_a_waiting_half_is_returned_as_a_duplicate(
    joiner: JoinerFactory,
) -> None:
    j = joiner()
    original = half("request", "r1", 0)
    copy = half("request", "r1", 1)
    assert j.add(original) is None
    assert j.add(copy) is copy
    assert len(j) == 1
    joined = j.add(half("response", "r1", 0))
    assert isinstance(joined, Joined) and joined.origins[0] == Origin("requests", 0, 0)


def test_expired_returns_halves_older_than_the_window_in_arrival_order(
    joiner: JoinerFactory, clock: FakeClock
) -> None:
    j = joiner(window_seconds=10)
    j.add(half("request", "a", 0))
    clock.advance(3)
    j.add(half("response", "b", 0))
    clock.advance(3)
    j.add(half("request", "c", 1))
    clock.advance(3.9)
    assert j.expired() == []
    clock.advance(0.1)  # "a" is exactly window_seconds old
    assert [h.record.request_id for h in j.expired()] == ["a"]
    clock.advance(100)
    assert [h.record.request_id for h in j.expired()] == ["b", "c"]
    assert len(j) == 0 and j.expired() == []


def test_a_joined_pair_never_expires(joiner: JoinerFactory, clock: FakeClock) -> None:
    j = joiner(window_seconds=1)
    j.add(half("request", "a", 0))
    assert isinstance(j.add(half("response", "a", 0)), Joined)
    clock.advance(5)
    assert j.expired() == []


def test_max_pending_evicts_the_oldest_and_the_next_expired_returns_it(
    joiner: JoinerFactory,
) -> None:
    j = joiner(window_seconds=1_000, max_pending=2)
    a, b, c = half("request", "a", 0), half("request", "b", 1), half("response", "c", 0)
    for h in (a, b, c):
        assert j.add(h) is None
    assert len(j) == 2
    assert j.expired() == [a]
    assert j.expired() == []
    # The survivors still join; the evicted half's partner now waits on its own.
    assert isinstance(j.add(half("response", "b", 6)), Joined)
    assert j.add(half("response", "a", 5)) is None
    assert sorted(h.record.request_id for h in j.drop([("responses", 0)])) == ["a", "c"]


def test_max_pending_bytes_evicts_the_oldest_until_the_waiting_messages_fit(
    clock: FakeClock,
) -> None:
    """Long prompts whose responses are late must not outgrow the process: the waiting
    halves' raw bytes are bounded too, and the newest half waits whatever its size."""
    j = Joiner(1_000, 100, clock=clock, max_pending_bytes=10_000)

    def sized(side: Side, rid: str, size: int) -> Half:
        return Half(side, rec(rid), Origin(side, 0, 0), b"x" * size)

    a, b, c = sized("request", "a", 4_000), sized("request", "b", 4_000), sized("request", "c",
                                                                                 3_000)
    for h in (a, b, c):
        assert j.add(h) is None
    assert (len(j), j.pending_bytes) == (2, 7_000) and j.expired() == [a]
    assert isinstance(j.add(sized("response", "b", 500)), Joined)  # b leaves, joined
    assert j.pending_bytes == 3_000
    huge = sized("request", "huge", 50_000)
    assert j.add(huge) is None
    assert (len(j), j.pending_bytes) == (1, 50_000) and j.expired() == [c]
    clock.advance(1_000)
    assert j.expired() == [huge] and j.pending_bytes == 0


def test_drop_forgets_waiting_and_evicted_halves_of_revoked_partitions(
    joiner: JoinerFactory,
) -> None:
    j = joiner(max_pending=3)
    evicted = half("request", "e", 0, partition=1)
    keep = half("request", "k", 1, partition=0)
    gone = half("response", "g", 2, partition=2)
    keep2 = half("response", "k2", 3, partition=1)  # partition 1, but of the other topic
    j.add(evicted)
    for h in (keep, gone, keep2):
        j.add(h)  # the fourth add pushes out `evicted`

    dropped = j.drop([("requests", 1), ("responses", 2)])

    assert sorted(h.record.request_id for h in dropped) == ["e", "g"]
    assert len(j) == 2
    assert j.expired() == []
    assert isinstance(j.add(half("response", "k", 9)), Joined)
    assert isinstance(j.add(half("request", "k2", 9)), Joined)


def test_drop_of_unrelated_partitions_keeps_everything(joiner: JoinerFactory) -> None:
    j = joiner()
    j.add(half("request", "a", 0))
    assert j.drop([("requests", 5)]) == []
    assert len(j) == 1


def test_the_source_bounds_its_joiner_as_configured() -> None:
    from consumers.settings import JoinSettings, KafkaSettings
    from consumers.source import KafkaSource

    kafka = KafkaSettings(bootstrap_servers=["127.0.0.1:1"], request_topic="q",
                          response_topic="r")
    assert JoinSettings().max_pending_bytes == 256 * 1024 * 1024
    source = KafkaSource(kafka, JoinSettings(max_pending=7, max_pending_bytes=2_000_000))
    assert (source._joiner.max_pending, source._joiner.max_pending_bytes) == (7, 2_000_000)
