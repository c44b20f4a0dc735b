"""A producer's own field names, read as the wire's (`wire.fields`): a gateway's or a logging
library's record (LiteLLM's standard logging payload, a nested `entries` object) decodes
without a transformer in front of the topic.

Each wire field names where the producer keeps it: a key, or a dotted path into nested
objects (a number steps into a list; a key with dots in it is found too). Only the messages
of a mapped topic pay for it: they are parsed once to plain values, moved, and converted to
a Record by msgspec with the same lax rules as the fast path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from consumers.wire import Record

WIRE_FIELDS: tuple[str, ...] = tuple(f.encode_name for f in msgspec.structs.fields(Record))


def path_problem(path: str) -> str | None:
    """Why `path` is no dotted path, or None."""
    if not path or any(not key for key in path.split(".")):
        return "a key or a dotted path of non-empty keys (such as `metadata.team`)"
    return None


class FieldMap:
    """Where a producer keeps each wire field: the wire's name -> its key path."""

    def __init__(self, fields: Mapping[str, str],
                 latency_from: tuple[str, str] | None = None) -> None:
        """`latency_from`: the paths of a start and an end time whose difference is the
        latency of a record that logs none (`wire.latency_from`)."""
        # Each as written (for errors) and as its keys.
        self.latency_paths = (None if latency_from is None
                              else tuple((path, tuple(path.split("."))) for path in latency_from))
        # In the wire's order: a record's first error is the one the wire's names give first
        # (a missing id before a bad label, as on the fast path).
        self.paths = {ours: tuple(fields[ours].split(".")) for ours in WIRE_FIELDS
                      if ours in fields}
        # The wire's path in a decoder's error ("- at `$.request_id`", "missing required field
        # `request_id`"), to say the producer's.
        names = "|".join(map(re.escape, self.paths)) or "(?!)"
        self._at = re.compile(r"`\$\.(" + names + r")(?=[`.\[])")
        self._missing = re.compile(r"field `(" + names + r")`")

    def __bool__(self) -> bool:
        return bool(self.paths) or self.latency_paths is not None

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj` with each mapped field read from its path (absent where the path is), the
        mapped fields first."""
        out: dict[str, Any] = {}
        for ours, path in self.paths.items():
            if (value := at(obj, path)) is not _ABSENT:
                out[ours] = value
        for key, value in obj.items():
            if key not in self.paths:
                out[key] = value
        return out

    def convert(self, obj: Any) -> Record:
        """A parsed message as a Record: raises what msgspec raises, as the fast path does."""
        if type(obj) is not dict:
            return msgspec.convert(obj, Record, strict=False)  # raises: not an object
        return msgspec.convert(self.apply(obj), Record, strict=False)

    def producers_path(self, detail: str) -> str:
        """A rejection's detail with each mapped field's path as the producer wrote it."""
        detail = self._missing.sub(
            lambda m: f"field `{m.group(1)}` (read from `$.{'.'.join(self.paths[m.group(1)])}`)",
            detail)
        return self._at.sub(lambda m: "`$." + ".".join(self.paths[m.group(1)]), detail)


_ABSENT = object()


def at(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in `obj`, or _ABSENT. A key is looked up as written first, then
    joined with those after it: a key with dots in it (`gen_ai.request.model`, as flattened
    logs and OpenTelemetry's attributes write them), the longest there is."""
    value, i, n = obj, 0, len(path)
    while i < n:
        key = path[i]
        if type(value) is dict:
            if key in value:
                value, i = value[key], i + 1
                continue
            for j in range(n, i + 1, -1):
                if (joined := ".".join(path[i:j])) in value:
                    value, i = value[joined], j
                    break
            else:
                return _ABSENT
        elif type(value) is list and key.isdigit() and int(key) < len(value):
            value, i = value[int(key)], i + 1
        else:
            return _ABSENT
    return value


def present(value: Any) -> bool:
    """Whether a value read by `at` is there (absent and null are not)."""
    return value is not _ABSENT and value is not None
