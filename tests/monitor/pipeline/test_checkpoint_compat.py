"""A checkpoint written before monitor/ was split into rooms still loads: its pickled classes
name the old modules (monitor.labels, monitor.drift, monitor.rules, monitor.canary)."""

from __future__ import annotations

import io
import pickle

import pytest

from monitor.pipeline.checkpoint import _Unpickler
from monitor.telemetry.labels import SegmentLabeler
from monitor.types import SEGMENT_LABELS


def _as_written_before(obj: object, old: str, new: str) -> bytes:
    # Protocol 2 names a class as text ("c<module>\n<name>\n"), so the module can be renamed.
    payload = pickle.dumps(obj, protocol=2, fix_imports=False)
    assert new.encode() in payload
    return payload.replace(new.encode() + b"\n", old.encode() + b"\n")


def test_a_class_pickled_under_its_old_module_loads_from_its_new_one() -> None:
    labeler = SegmentLabeler(["model"], SEGMENT_LABELS, 5)
    labeler.key(("m1", None, None, None))
    payload = _as_written_before(labeler, "monitor.labels", "monitor.telemetry.labels")
    loaded = _Unpickler(io.BytesIO(payload)).load()
    assert isinstance(loaded, SegmentLabeler)
    assert loaded.key(("m1", None, None, None)) == labeler.key(("m1", None, None, None))


def test_a_module_that_never_existed_is_still_refused() -> None:
    payload = _as_written_before(SegmentLabeler(["model"], SEGMENT_LABELS, 5), "os",
                                 "monitor.telemetry.labels")
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        _Unpickler(io.BytesIO(payload)).load()
