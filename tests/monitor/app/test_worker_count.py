"""`--workers auto`: one scoring process per usable core (affinity, a cgroup quota), no more
than a GPU's free memory holds; and the CLI's refusals of what it cannot mean."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from monitor.app.worker_count import (
    PROCESS_ALLOWANCE_BYTES,
    WorkerCount,
    auto_workers,
    cpu_cores,
    gpu_workers,
    model_bytes,
    within_partitions,
)
from monitor.cli.driftwatch import main as driftwatch
from monitor.config import load_config

GIB = 2**30


@pytest.mark.parametrize(("cpu_max", "cap"), [
    (None, None), ("max 100000\n", None), ("150000 100000\n", 2), ("50000 100000\n", 1),
    ("100000 100000\n", 1), ("garbled\n", None)])
def test_cores_are_the_affinity_capped_by_a_cgroup_quota(
        tmp_path: Path, cpu_max: str | None, cap: int | None) -> None:
    affinity = len(os.sched_getaffinity(0))
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert cpu_cores(path, tmp_path / "no-v1") == (affinity if cap is None else min(affinity, cap))


@pytest.mark.parametrize(("quota_us", "cap"), [("-1", None), ("250000", 3), ("20000", 1)])
def test_a_cgroup_v1_quota_caps_them_where_there_is_no_v2_one(
        tmp_path: Path, quota_us: str, cap: int | None) -> None:
    (tmp_path / "cpu.cfs_quota_us").write_text(quota_us + "\n")
    (tmp_path / "cpu.cfs_period_us").write_text("100000\n")
    affinity = len(os.sched_getaffinity(0))
    assert cpu_cores(tmp_path / "no-cpu.max", tmp_path) == (
        affinity if cap is None else min(affinity, cap))


def test_a_quota_larger_than_the_affinity_does_not_raise_it(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("6400000 100000\n")  # 64 cores' worth
    assert cpu_cores(tmp_path / "cpu.max", tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(("cores", "free_gib", "each_gib", "workers"), [
    (16, 139, 1.6, 16),  # a small model on an H200: the cores decide
    (16, 20, 4, 4),  # 18 GiB usable hold 4 processes of 4 GiB
    (8, 3, 4, 1),  # not even one fits: one still runs (and says how little is free)
    (2, 0.5, 1.5, 1)])
def test_a_gpu_takes_no_more_processes_than_its_free_memory_holds(
        cores: int, free_gib: float, each_gib: float, workers: int) -> None:
    count = gpu_workers(cores, int(free_gib * GIB), int(each_gib * GIB))
    assert count.workers == workers
    assert f"{cores} CPU cores" in count.reason and f"{free_gib:.1f} GiB free" in count.reason


def test_model_bytes_counts_weight_files_only(tmp_path: Path) -> None:
    model = tmp_path / "model"
    (model / "onnx").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"x" * 1000)
    (model / "onnx" / "model.onnx").write_bytes(b"x" * 300)
    (model / "vocab.txt").write_bytes(b"x" * 5000)
    (model / "config.json").write_bytes(b"{}")
    assert model_bytes([str(model)]) == 1300
    assert model_bytes([str(model), str(model / "onnx")]) == 1600  # each path's files


def test_auto_on_a_cpu_is_the_core_count(tmp_path: Path) -> None:
    config = tmp_path / "dw.yaml"
    config.write_text("kafka: {bootstrap_servers: ['127.0.0.1:9'], topic: t}\n"
                      "scoring: {device: cpu}\n")
    count = auto_workers(load_config(config))
    assert count.workers == cpu_cores()
    assert count.reason == f"{cpu_cores()} CPU cores, scoring on cpu"
    assert PROCESS_ALLOWANCE_BYTES >= GIB  # a CUDA context alone is half a GiB


def _config(tmp_path: Path) -> str:
    config = tmp_path / "dw.yaml"
    config.write_text("kafka: {bootstrap_servers: ['127.0.0.1:9'], topic: t}\n")
    return str(config)


@pytest.mark.parametrize("value", ["0", "-2", "many", "2.5"])
def test_the_cli_refuses_a_worker_count_that_is_not_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    with pytest.raises(SystemExit) as exit_:
        driftwatch(["run", "--config", _config(tmp_path), "--workers", value])
    assert exit_.value.code == 2
    assert f"'{value}': allowed auto or a whole number, 1 or more" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["auto", "3"])
def test_the_cli_refuses_workers_for_a_stage_that_scores_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str) -> None:
    argv = ["run", "--config", _config(tmp_path), "--workers", value, "--stage", "decide"]
    assert driftwatch(argv) == 2
    assert "--stage decide scores nothing" in capsys.readouterr().err


@pytest.mark.parametrize(("partitions", "workers", "says"), [
    (None, 4, "4 CPU cores; the input's partitions unknown (the broker did not answer in time)"),
    (8, 4, "4 CPU cores; the input has 8 partition(s)"),
    (4, 4, "4 CPU cores; the input has 4 partition(s)"),
    (3, 3, "4 CPU cores; no more than the input's 3 partition(s): a scoring process owns "
           "whole partitions"),
])
def test_auto_starts_no_more_scorers_than_the_input_has_partitions(
        partitions: int | None, workers: int, says: str) -> None:
    count = within_partitions(WorkerCount(4, "4 CPU cores"), partitions)
    assert count == WorkerCount(workers, says)
