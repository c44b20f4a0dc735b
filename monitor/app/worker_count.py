"""`driftwatch run --workers auto`: how many scoring processes this machine takes.

On a CPU, one per core this process may use: its CPU affinity, capped by a cgroup CPU quota
(a container's CPU limit, which `os.cpu_count()` does not see). A scoring process keeps
about one core busy (Python work under one GIL), so more would only take turns.

On a GPU, also no more than its free memory holds: each process loads its own copy of the
models and keeps its own CUDA context and allocator cache. A process's need is estimated as
the model files' size on disk (an upper bound of their weights in GPU memory: fp16 halves
fp32 files) plus a fixed allowance for the context and a batch's activations at the token
budget; the count keeps a tenth of the free memory spare. `--workers N` overrides the estimate.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from consumers.settings import KafkaSettings
from monitor.config import Config

# A CUDA context (~0.5 GiB with PyTorch's kernels loaded) plus the caching allocator's blocks
# for one batch's activations at the GPU token budget (16,384 padded tokens).
PROCESS_ALLOWANCE_BYTES = 1536 * 2**20
FREE_SHARE = 0.9  # of the GPU's free memory, the rest left to other tenants and fragmentation
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


@dataclass(frozen=True)
class WorkerCount:
    """How many scoring processes, and why (logged at start)."""

    workers: int
    reason: str


def cpu_cores(cpu_max: Path = _CGROUP_CPU_MAX, cfs: Path = _CGROUP_V1_CPU) -> int:
    """Cores this process may run on: its affinity, capped by a cgroup CPU quota (v2's
    `cpu.max`, else v1's `cpu.cfs_quota_us`), rounded up: a quota of 1.5 cores still runs two
    processes side by side half the time."""
    cores = len(os.sched_getaffinity(0))
    quota = _quota(cpu_max, cfs)
    return cores if quota is None else max(1, min(cores, math.ceil(quota)))


def _quota(cpu_max: Path, cfs: Path) -> float | None:
    """The cgroup's CPU quota in cores; None when there is none (or none readable)."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cfs / "cpu.cfs_quota_us").read_text())
        period_us = int((cfs / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us


def model_bytes(paths: list[str]) -> int:
    """The weight files' size under each model directory (the model's GPU footprint bound)."""
    total = 0
    for path in paths:
        for file in Path(path).rglob("*"):
            if file.suffix in _WEIGHT_SUFFIXES and file.is_file():
                total += file.stat().st_size
    return total


def gpu_workers(cores: int, free_bytes: int, per_process_bytes: int) -> WorkerCount:
    """At most one process per core, and no more than the GPU's free memory holds."""
    fits = int(free_bytes * FREE_SHARE) // per_process_bytes
    workers = max(1, min(cores, fits))
    gib = 2**30
    return WorkerCount(workers, f"{cores} CPU cores; the GPU's {free_bytes / gib:.1f} GiB free "
                                f"hold {fits} processes of about "
                                f"{per_process_bytes / gib:.1f} GiB each")


def auto_workers(config: Config) -> WorkerCount:
    """The number of scoring processes `--workers auto` starts on this machine."""
    from detectors.embedder import pick_device

    cores = cpu_cores()
    device = pick_device(config.scoring.device)
    if not device.startswith("cuda"):
        return WorkerCount(cores, f"{cores} CPU cores, scoring on {device}")
    import torch

    from detectors.embedder import SETTING, resolve_model_path

    free, _total = torch.cuda.mem_get_info(device)
    models = [resolve_model_path(config.scoring.embedding.model, SETTING)]
    # The NLI model and a transformer toxicity classifier are local directories when set.
    for other in (config.scoring.groundedness.nli_model, config.scoring.toxicity.model):
        if other and Path(other).expanduser().is_dir():
            models.append(str(Path(other).expanduser()))
    return gpu_workers(cores, free, model_bytes(models) + PROCESS_ALLOWANCE_BYTES)


def input_partitions(kafka: KafkaSettings, timeout_s: float = 5.0) -> int | None:
    """The most partitions an input topic has, read from the broker within about
    `timeout_s`; None when it does not answer or a topic has none yet (the daemon itself
    waits for the broker, `--workers auto` does not)."""
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    timeout_ms = int(timeout_s * 1000)
    try:
        consumer = KafkaConsumer(enable_auto_commit=False, bootstrap_timeout_ms=timeout_ms,
                                 request_timeout_ms=timeout_ms, **kafka.client_options())
    except KafkaError:
        return None
    try:
        counts = [len(consumer.partitions_for_topic(topic) or ()) for topic in kafka.topics]
    except KafkaError:
        return None
    finally:
        consumer.close(autocommit=False)
    return max(counts) if counts and min(counts) > 0 else None


def within_partitions(count: WorkerCount, partitions: int | None) -> WorkerCount:
    """No more scoring processes than the input has partitions: each owns whole partitions,
    so the rest would stand by, each with its own copy of the models."""
    if partitions is None:
        return WorkerCount(count.workers, f"{count.reason}; the input's partitions unknown "
                                          "(the broker did not answer in time)")
    if partitions >= count.workers:
        return WorkerCount(count.workers, f"{count.reason}; the input has {partitions} "
                                          "partition(s)")
    return WorkerCount(partitions, f"{count.reason}; no more than the input's {partitions} "
                                   "partition(s): a scoring process owns whole partitions")
