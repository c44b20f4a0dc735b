"""The canary gate: a worse canary is rolled back within a stated number of records, an equal one
is promoted and never rolled back, hard gates fail fast, soft gates wait; metrics, decisions and
the HTTP gate endpoints say the same verdict."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY

from monitor.acting.canary import CanaryGate
from monitor.config.acting import CanarySettings
from monitor.telemetry.endpoints import Endpoints, Health
from monitor.types import Decision

# Loads a model, calibrates a detector or simulates at length: not in make test-fast.
pytestmark = pytest.mark.slow

DIM = 8
STABLE = {"toxic": 0.01, "ungrounded": 0.10, "refusal": 0.03, "error": 0.01, "slowdown": 1.0,
          "shift": 0.0}


def _settings(**overrides: object) -> CanarySettings:
    fields: dict[str, object] = {"enabled": True, "min_records": 200, "alpha": 0.01,
                                 "actions": ["rollouts"]}
    return CanarySettings(**{**fields, **overrides})


def _batch(rng: np.random.Generator, model: str, n: int, canary: dict[str, float]
           ) -> tuple[list[str], list[str], dict[str, np.ndarray], np.ndarray]:
    """Half stable, half canary; `canary` overrides the stable rates for the canary arm."""
    deployment = np.where(rng.random(n) < 0.5, "canary", "stable")
    is_canary = deployment == "canary"
    rates = {**STABLE, **canary}

    def rate(name: str) -> np.ndarray:
        p = np.where(is_canary, rates[name], STABLE[name])
        return (rng.random(n) < p).astype(float)

    ungrounded = rate("ungrounded")
    ungrounded[rng.random(n) < 0.3] = np.nan  # no retrieved context: not applicable
    latency = np.exp(rng.normal(0.0, 0.3, n)) * np.where(is_canary, rates["slowdown"], 1.0)
    embeddings = rng.normal(size=(n, DIM)).astype(np.float32)
    embeddings[is_canary, :2] += rates["shift"]
    embeddings[rng.random(n) < 0.2] = np.nan  # not model-scored
    signals = {"toxic": rate("toxic"), "ungrounded": ungrounded, "refusal": rate("refusal"),
               "error": rate("error"), "latency_seconds": latency}
    return [model] * n, list(deployment), signals, embeddings


def _run(gate: CanaryGate, model: str, seed: int, batches: int, canary: dict[str, float],
         stop_at_rollback: bool = True) -> list[Decision]:
    rng = np.random.default_rng(seed)
    decisions: list[Decision] = []
    for i in range(batches):
        decisions += gate.update(*_batch(rng, model, 100, canary), at=1_000.0 + i)
        if stop_at_rollback and _model(gate, model)["verdict"] == "rollback":
            break
    return decisions


def _model(gate: CanaryGate, model: str) -> dict:
    return gate.status()["models"][model]  # type: ignore[index]


def _name() -> str:  # metrics live in the global registry: one model name per test
    return f"m-{uuid.uuid4().hex[:8]}"


def test_a_more_toxic_less_grounded_slower_canary_is_rolled_back_within_1000_records() -> None:
    gate, name = CanaryGate(_settings()), _name()
    worse = {"toxic": 0.05, "ungrounded": 0.25, "slowdown": 1.5}
    decisions = _run(gate, name, seed=0, batches=100, canary=worse)
    status = _model(gate, name)
    assert status["verdict"] == "rollback"
    # Measured: rollback after 700 records in all, on toxic (seeds 1-3: 900 each, on
    # ungrounded and latency_p95 or latency_p95 alone).
    assert sum(status["records"].values()) <= 1_000
    assert [d.event_type for d in decisions] == ["canary.rollback"]
    d = decisions[0]
    assert (d.rule, d.severity, d.status, d.segment) == (
        "canary-gate", "critical", "firing", {"model": name})
    batches = sum(status["records"].values()) // 100
    assert d.targets == ("rollouts",) and d.at == 1_000.0 + batches - 1  # the deciding batch
    for gate_name in status["failed"]:
        assert gate_name in d.summary
        assert d.evidence[f"{gate_name}.lower"] > 0
        assert d.evidence[f"{gate_name}.n_canary"] >= 1


def test_equal_streams_are_never_rolled_back_and_end_promoted() -> None:
    gate, name = CanaryGate(_settings()), _name()
    # 1,000 batches of 100: 50k records per arm, looked at after every batch.
    decisions = _run(gate, name, seed=1, batches=1_000, canary={}, stop_at_rollback=False)
    status = _model(gate, name)
    assert status["verdict"] == "promote" and status["failed"] == []
    assert 49_000 < status["records"]["canary"] < 51_000
    assert [d.event_type for d in decisions] == ["canary.promote"]
    promote = decisions[0]
    assert promote.severity == "info" and "embedding_drift" in promote.summary
    for figures in status["gates"].values():
        assert figures["passed"] and not figures["failed"]
    assert status["gates"]["toxic"]["upper"] <= 0.02
    assert status["gates"]["latency_p95"]["threshold_seconds"] == pytest.approx(
        np.exp(0.3 * 1.645), rel=0.1)


def test_a_hard_gate_rolls_back_before_min_records() -> None:
    gate, name = CanaryGate(_settings(min_records=500)), _name()
    decisions = _run(gate, name, seed=0, batches=100, canary={"toxic": 0.10})
    status = _model(gate, name)
    assert status["verdict"] == "rollback" and status["failed"] == ["toxic"]
    # Measured: 251 canary records against a minimum of 500 (seeds 1-3: 242, 418, 312).
    assert status["gates"]["toxic"]["n_canary"] <= 300
    assert decisions[0].evidence["toxic.lower"] > 0


def test_a_soft_gate_waits_for_min_records_per_arm() -> None:
    gate, name = CanaryGate(_settings(min_records=300)), _name()
    rng = np.random.default_rng(3)
    worse_before_minimum = False
    for i in range(100):
        decisions = gate.update(*_batch(rng, name, 50, {"refusal": 0.30}), at=float(i))
        refusal = _model(gate, name)["gates"]["refusal"]
        if decisions:
            break
        worse_before_minimum |= refusal["lower"] is not None and refusal["lower"] > 0
    assert worse_before_minimum  # the test said worse early; the gate did not act on it
    assert [d.event_type for d in decisions] == ["canary.rollback"]
    assert min(refusal["n_stable"], refusal["n_canary"]) >= 300
    assert refusal["n_canary"] < 400  # and it acted as soon as the minimum was met


def test_embedding_drift_alone_rolls_back_on_the_embedding_gate() -> None:
    gate, name = CanaryGate(_settings()), _name()
    _run(gate, name, seed=4, batches=100, canary={"shift": 1.0})
    status = _model(gate, name)
    assert status["verdict"] == "rollback" and status["failed"] == ["embedding_drift"]
    assert status["gates"]["embedding_drift"]["drift_detected"]
    # Measured: 1,000 records in all (seeds 1-2: 1,100, 1,200); the soft gate waits for 200
    # canary embeddings, after stable's 200 reference embeddings.
    assert sum(status["records"].values()) <= 1_300


def test_one_decision_per_verdict_change_and_metrics_follow() -> None:
    gate, name = CanaryGate(_settings()), _name()
    promoted = _run(gate, name, seed=5, batches=300, canary={}, stop_at_rollback=False)
    assert [d.event_type for d in promoted] == ["canary.promote"]
    # Later evidence turns promote into rollback, once; rollback is sticky.
    worse = _run(gate, name, seed=6, batches=150, canary={"toxic": 0.2},
                 stop_at_rollback=False)
    assert [d.event_type for d in worse] == ["canary.rollback"]
    assert _run(gate, name, seed=7, batches=20, canary={}) == []
    value = REGISTRY.get_sample_value
    assert value("driftwatch_canary_verdict", {"model": name, "verdict": "rollback"}) == 1.0
    assert value("driftwatch_canary_verdict", {"model": name, "verdict": "promote"}) == 0.0
    toxic = _model(gate, name)["gates"]["toxic"]
    for bound in ("estimate", "lower", "upper"):
        assert value("driftwatch_canary_difference",
                     {"model": name, "gate": "toxic", "bound": bound}) == toxic[bound]
    records = _model(gate, name)["records"]
    for arm in ("stable", "canary"):
        assert value("driftwatch_canary_records", {"model": name, "arm": arm}) == records[arm]


def test_other_deployments_are_ignored_and_models_are_separate() -> None:
    gate = CanaryGate(_settings())
    signals = {k: np.zeros(4) for k in ("toxic", "ungrounded", "refusal", "error")}
    signals["latency_seconds"] = np.ones(4)
    gate.update(["a", "a", None, "b"], ["shadow", "canary", "stable", None], signals, None, 0.0)
    models = gate.status()["models"]
    assert set(models) == {"a", "unknown"}
    assert models["a"]["records"] == {"stable": 0, "canary": 1}
    assert models["unknown"]["records"] == {"stable": 1, "canary": 0}


@pytest.fixture
def served() -> Iterator[tuple[CanaryGate, str, str]]:
    gate, name = CanaryGate(_settings()), _name()
    endpoints = Endpoints("127.0.0.1", 0, Health(), canary=gate).start()
    yield gate, name, f"http://127.0.0.1:{endpoints.port}"
    endpoints.stop()


def test_http_gate_endpoints_follow_the_verdict(served: tuple[CanaryGate, str, str]) -> None:
    gate, name, url = served
    with httpx.Client(base_url=url, timeout=5) as http:
        r = http.get("/canary/promote")
        assert (r.status_code, r.json()) == (409, {"model": None, "verdict": "watching"})
        _run(gate, name, seed=1, batches=300, canary={})
        status = http.get("/canary")
        assert status.status_code == 200
        assert status.json()["models"][name]["verdict"] == "promote"
        assert http.get("/canary/promote").status_code == 200
        assert http.post(f"/canary/promote?model={name}", json={"phase": "Progressing"}
                         ).status_code == 200
        r = http.post("/canary/rollback", json={"name": "podinfo"})
        assert (r.status_code, r.json()) == (409, {"model": name, "verdict": "promote"})
        _run(gate, name, seed=6, batches=150, canary={"toxic": 0.2})
        assert http.get(f"/canary/rollback?model={name}").status_code == 200
        assert http.get("/canary/promote").json() == {"model": name, "verdict": "rollback"}
        _run(gate, "other", seed=8, batches=1, canary={})
        assert http.get("/canary/rollback").status_code == 400
        assert http.get("/metrics").status_code == 200
        assert http.get("/healthz").status_code == 200


def test_http_gate_is_404_when_the_canary_gate_is_off() -> None:
    endpoints = Endpoints("127.0.0.1", 0, Health()).start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{endpoints.port}", timeout=5) as http:
            for path in ("/canary", "/canary/promote", "/canary/rollback"):
                assert http.get(path).status_code == 404
            assert http.post("/canary/rollback").status_code == 404
            assert http.get("/readyz").status_code == 503
    finally:
        endpoints.stop()


def test_a_verdict_is_dated_at_the_last_record_of_its_model_not_of_the_batch() -> None:
    gate, name, other = CanaryGate(_settings()), _name(), _name()
    rng = np.random.default_rng(3)
    worse = {"toxic": 0.3}
    for i in range(100):
        models, deployments, signals, embeddings = _batch(rng, name, 60, worse)
        o_models, o_deployments, o_signals, o_embeddings = _batch(rng, other, 40, {})
        times = 1_000.0 + i * 100 + np.arange(100)  # each record its own time
        decisions = gate.update(
            models + o_models, deployments + o_deployments,
            {k: np.concatenate([signals[k], o_signals[k]]) for k in signals},
            np.concatenate([embeddings, o_embeddings]), times)
        if decisions:
            break
    [decision] = decisions
    assert decision.event_type == "canary.rollback" and decision.segment == {"model": name}
    assert decision.index == 59  # its model's last record in the batch, not the batch's 99
    assert decision.at == times[59]


def test_a_gate_without_data_is_named_and_left_out_of_promotion(
        caplog: pytest.LogCaptureFixture) -> None:
    gate, name = CanaryGate(_settings()), _name()
    rng = np.random.default_rng(12)
    decisions: list[Decision] = []
    for i in range(300):
        models, deployments, signals, embeddings = _batch(rng, name, 100, {})
        signals["ungrounded"][:] = np.nan  # no record carries context
        decisions += gate.update(models, deployments, signals, embeddings, 1_000.0 + i)
        if decisions:
            break
    [decision] = decisions
    assert decision.event_type == "canary.promote"
    assert "no data for ungrounded (records carry no context)" in decision.summary
    status = _model(gate, name)
    assert status["verdict"] == "promote"
    assert status["gates"]["ungrounded"]["no_data"] == "records carry no context"
    assert "no_data" not in status["gates"]["toxic"]
    assert sum("canary gate 'ungrounded'" in r.getMessage() for r in caplog.records) == 1


def test_arms_named_as_the_stack_names_them_reach_the_gate_from_the_wire() -> None:
    """canary.stable and canary.canary name the arms; the wire took only stable, canary and
    shadow, so a stack that says blue and green had every record dead-lettered instead."""
    from consumers.batcher import Batch
    from consumers.decode import Decoder
    from consumers.wire import Origin, Record
    from monitor.app.wiring import assemble

    decoder = Decoder(1 << 20)
    name = _name()
    records = [decoder.decode(json.dumps({
        "request_id": f"r{i}", "model": name, "deployment": ("blue", "green", "grey")[i % 3],
        "status": "ok", "latency_ms": 100}).encode()) for i in range(30)]
    assert all(isinstance(r, Record) for r in records)
    gate = CanaryGate(_settings(stable="blue", canary="green"))
    decided: list[Decision] = []
    pipeline = assemble(["latency", "status"], ["model", "deployment"], 5, canary=gate,
                        on_decisions=decided.extend)
    pipeline.process(Batch(records, [(Origin("t", 0, i),) for i in range(30)]))
    assert _model(gate, name)["records"] == {"stable": 10, "canary": 10}  # grey is neither
