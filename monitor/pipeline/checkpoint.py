"""State checkpoints: what the detectors, rules and canary gate have learnt, with the Kafka
positions it covers, so a restart resumes where it left off instead of warming up again.

A checkpoint is written by the worker thread between two batches (so it is consistent), at a
configured interval and at shutdown, atomically: a temporary file in the same directory, fsync,
rename, fsync of the directory. A crash leaves the previous checkpoint or the new one, whole.

Tied to committed offsets: the checkpoint holds, per partition, the next offset whose record is
not yet in the state. Kafka's committed offset can trail it (records applied but not committed
when the process died): those records are read again, scored and counted again (at least once),
but not applied to the state a second time. It can also lead it (committed after the last
checkpoint): that stretch is missing from the state, at most one interval of records; the gap is
logged per partition.

Each part (drift, rules, canary, segment labels) carries a fingerprint of the config that
shaped it; a part whose config changed is dropped with a warning. A corrupt, foreign or
old-format file is a warning and a cold start, never a crash. The payload is a pickle, so the
file must be writable by the daemon's user only, like the outbox and references next to it:
a file that others can write, or that another user owns, is refused before it is unpickled.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import logging
import os
import pickle
import stat
import struct
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from consumers.offsets import Partition
from monitor.config.checkpoint import CheckpointSettings
from monitor.telemetry.metrics import METRICS as m

log = logging.getLogger(__name__)

# 2: multi-scale OnlineMMD (a format-1 drift state would not fit the detector any more).
FORMAT = 2
_MAGIC = b"DWCKPT\n"
_HEADER = struct.Struct(">H32s")  # format version, BLAKE2b-256 of the payload

class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the daemon warns and starts cold."""


class CheckpointInUse(RuntimeError):
    """Another running daemon holds this checkpoint path: each instance needs its own."""


@dataclass(frozen=True)
class Checkpoint:
    """The pipeline's state parts, their config fingerprints and the Kafka positions covered."""

    positions: dict[Partition, int]  # next offset per partition not yet in the state
    parts: dict[str, object]  # part name -> its state
    fingerprints: dict[str, str]  # part name -> fingerprint of the config that shaped it
    written_at: float


def fingerprint(*settings: object) -> str:
    """A stable digest of config values (pydantic models, or anything JSON can write)."""
    plain = [s.model_dump(mode="json") if isinstance(s, BaseModel) else s for s in settings]
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def write(path: Path, checkpoint: Checkpoint) -> int:
    """Write atomically, readable and writable by this user only; return the size in bytes."""
    payload = pickle.dumps(checkpoint, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.blake2b(payload, digest_size=32).digest()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + _HEADER.pack(FORMAT, digest))
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return len(payload) + len(_MAGIC) + _HEADER.size


def read(path: Path) -> Checkpoint:
    """The checkpoint at `path`; CheckpointError says why it cannot be used."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror}") from exc
    if info.st_uid != os.getuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise CheckpointError(
            f"{path} is writable by other users or owned by another one (mode "
            f"{stat.filemode(info.st_mode)}, uid {info.st_uid}); it is not loaded")
    head = len(_MAGIC) + _HEADER.size
    if len(data) < head or not data.startswith(_MAGIC):
        raise CheckpointError(f"{path} is not a driftwatch checkpoint")
    version, digest = _HEADER.unpack(data[len(_MAGIC):head])
    if version != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {version}; this driftwatch "
                              f"reads format {FORMAT}")
    payload = data[head:]
    if hashlib.blake2b(payload, digest_size=32).digest() != digest:
        raise CheckpointError(f"{path} is corrupt (checksum mismatch)")
    try:
        checkpoint = _Unpickler(io.BytesIO(payload)).load()
    except Exception as exc:  # a class renamed or removed since it was written
        raise CheckpointError(f"{path} cannot be loaded by this driftwatch: {exc!r}") from exc
    if not isinstance(checkpoint, Checkpoint):
        raise CheckpointError(f"{path} holds {type(checkpoint).__name__}, not a checkpoint")
    return checkpoint


def _bound_method(obj: object, name: str) -> object:
    """`getattr` as checkpoints use it (river pickles a detector's bound method this way):
    only a method of an instance of an allowed class, and never a dunder name, so the
    path to a function's globals, a class or a module stays closed."""
    refused = pickle.UnpicklingError(f"getattr({type(obj).__name__}, {name!r}) is not allowed "
                                     "in a checkpoint")
    home = type(obj).__module__.split(".")[0]
    # Built-in types (modules, functions, dicts) are never the object: only library classes.
    if (name.startswith("__") or home == "builtins" or home not in _Unpickler._ALLOWED
            or isinstance(obj, type)):
        raise refused
    found = getattr(obj, name)
    if getattr(found, "__self__", None) is not obj:
        raise refused
    return found


# Modules whose classes checkpoints hold, by their name before monitor/ was split into rooms:
# a checkpoint written by an earlier driftwatch still resumes.
_MOVED = {
    "monitor.labels": "monitor.telemetry.labels",
    "monitor.drift": "monitor.pipeline.drift",
    "monitor.rules": "monitor.acting.rules",
    "monitor.canary": "monitor.acting.canary",
}


class _Unpickler(pickle.Unpickler):
    """Loads only what a checkpoint holds: classes and functions defined by driftwatch and
    the libraries its state is made of. No dotted names (a path through a module's
    attributes) and only a narrow `getattr`, so nothing outside them can be reached."""

    _ALLOWED = frozenset({"builtins", "collections", "copyreg", "numpy", "torch", "river",
                          "detectors", "monitor", "consumers", "scipy", "_codecs"})
    _BUILTINS = frozenset({"set", "frozenset", "dict", "list", "tuple", "float", "int",
                           "complex", "bytearray", "slice", "range", "object"})

    def find_class(self, module: str, name: str) -> object:
        module = _MOVED.get(module, module)
        refused = pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")
        if module == "builtins" and name == "getattr":
            return _bound_method
        if (module.split(".")[0] not in self._ALLOWED or "." in name
                or (module == "builtins" and name not in self._BUILTINS)):
            raise refused
        found = super().find_class(module, name)
        # A name re-exported from elsewhere (an os function held by a library) is refused.
        home = getattr(found, "__module__", None) or ""
        if not callable(found) or home.split(".")[0] not in self._ALLOWED:
            raise refused
        return found


class Checkpointer:
    """When to checkpoint, where, and what to load at start."""

    def __init__(self, settings: CheckpointSettings, fingerprints: Mapping[str, str]) -> None:
        self.settings = settings
        self.fingerprints = dict(fingerprints)
        self._last = time.monotonic()
        # Two instances on one path would overwrite each other's state and resume from it.
        path = settings.path
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise CheckpointInUse(
                f"checkpoint.path {str(path)!r} is in use by another running driftwatch; give "
                f"each instance its own (e.g. DRIFTWATCH_CHECKPOINT__PATH)") from None

    def close(self) -> None:
        self._lock.close()  # releases the lock

    def due(self) -> bool:
        return time.monotonic() - self._last >= self.settings.interval_seconds

    def save(self, positions: Mapping[Partition, int], parts: Mapping[str, object]) -> None:
        started = time.perf_counter()
        self._last = time.monotonic()
        checkpoint = Checkpoint(dict(positions), dict(parts), self.fingerprints, time.time())
        try:
            size = write(self.settings.path, checkpoint)
        except Exception as exc:  # a checkpoint that fails must not fail the batch with it
            m.CHECKPOINTS.labels("failed").inc()
            log.error("checkpoint to %s failed: %r; the previous one stays", self.settings.path,
                      exc)
            return
        seconds = time.perf_counter() - started
        m.CHECKPOINTS.labels("written").inc()
        m.CHECKPOINT_BYTES.set(size)
        m.CHECKPOINT_SECONDS.observe(seconds)
        m.CHECKPOINT_TIME.set(checkpoint.written_at)
        log.debug("checkpoint: %d bytes in %.3fs, %d partitions", size, seconds, len(positions))

    def load(self) -> Checkpoint | None:
        """The usable parts of the checkpoint on disk; None (a cold start) when there is none
        or it cannot be used, with a warning that says why."""
        path = self.settings.path
        if not path.exists():
            log.info("no checkpoint at %s: cold start", path)
            return None
        try:
            checkpoint = read(path)
        except CheckpointError as exc:
            m.CHECKPOINTS.labels("rejected").inc()
            log.warning("%s: cold start", exc)
            return None
        parts = {}
        for name, state in checkpoint.parts.items():
            if checkpoint.fingerprints.get(name) != self.fingerprints.get(name):
                log.warning("checkpoint part %r dropped: its config changed since the "
                            "checkpoint was written; it starts cold", name)
                continue
            parts[name] = state
        m.CHECKPOINTS.labels("loaded").inc()
        log.info("resuming from the checkpoint of %s (%d partitions, parts: %s)",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(checkpoint.written_at)),
                 len(checkpoint.positions), ", ".join(sorted(parts)) or "none")
        return Checkpoint(checkpoint.positions, parts, checkpoint.fingerprints,
                          checkpoint.written_at)
