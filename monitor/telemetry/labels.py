"""Bounded, sanitised label values: no request ids or text can blow up Prometheus' series count."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

OTHER = "other"
UNKNOWN = "unknown"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/@+-]")
MAX_LEN = 64  # a label value's characters, after sanitising


def sanitize(value: str) -> str:
    cleaned = _UNSAFE.sub("_", value.strip())[:MAX_LEN]
    return cleaned or UNKNOWN


class CappedLabel:
    """Maps raw values to label values, keeping the first `max_values` distinct ones."""

    def __init__(self, max_values: int) -> None:
        self.max_values = max_values
        self._kept: dict[str, str] = {}
        self._seen: set[str] = set()
        self.overflowed = 0  # raw values folded into "other"

    def __call__(self, raw: str | None) -> str:
        if raw is None:
            return UNKNOWN
        label = self._kept.get(raw)
        if label is not None:
            return label
        label = sanitize(raw)
        if label in self._seen or len(self._seen) < self.max_values:
            self._seen.add(label)
            if len(self._kept) < 8 * self.max_values:  # raw spellings cached, also bounded
                self._kept[raw] = label
            return label
        self.overflowed += 1
        return OTHER


class SegmentLabeler:
    """The segment tuple (model, model_version, deployment, route) of a record's metrics;
    labels left out of the config are empty, which Prometheus drops on ingestion.

    Each label keeps its first `max_values` values, and the segments at most `max_segments`
    combinations of them: 50 models by 50 versions would otherwise be 2,500 segments, each
    with about a hundred series and its own rule state. A new combination past the cap is
    the segment whose every label is "other"."""

    def __init__(self, enabled: Sequence[str], names: Sequence[str], max_values: int,
                 max_segments: int = 500) -> None:
        self.names = tuple(names)
        self._caps = [CappedLabel(max_values) if n in enabled else None for n in self.names]
        # Raw tuple -> key; real traffic has few distinct segments, so this is one lookup a record.
        self._keys: dict[tuple[str | None, ...], tuple[str, ...]] = {}
        self._max_cached = 8 * max_values
        self.max_segments = max_segments
        self._segments: set[tuple[str, ...]] = set()

    def __setstate__(self, state: dict[str, object]) -> None:
        """A labeler checkpointed before the cap on combinations: the segments it knows are
        those its cache holds (max_segments is set from the config after a restore)."""
        self.__dict__.update(state)
        if "_segments" not in state:
            self._segments = set(self._keys.values())
            self.max_segments = max(500, len(self._segments))

    @property
    def other(self) -> tuple[str, ...]:
        """The segment past the cap: `other` in every configured label."""
        return tuple("" if cap is None else OTHER for cap in self._caps)

    @property
    def segments(self) -> int:
        """Distinct segments so far (the `other` of the cap included once it is used)."""
        return len(self._segments)

    def key(self, values: tuple[str | None, ...]) -> tuple[str, ...]:
        key = self._keys.get(values)
        if key is None:
            key = tuple(
                "" if cap is None else cap(v) for cap, v in zip(self._caps, values, strict=True)
            )
            if key not in self._segments:
                if len(self._segments) >= self.max_segments and key != self.other:
                    if self.other not in self._segments:
                        log.warning("metrics.max_segments=%d reached: segments first seen from "
                                    "now on (%s) are reported as %r", self.max_segments,
                                    dict(zip(self.names, key, strict=True)), OTHER)
                    key = self.other
                self._segments.add(key)
            if len(self._keys) < self._max_cached:
                self._keys[values] = key
        return key
