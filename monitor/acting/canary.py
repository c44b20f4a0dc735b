"""The canary gate: canary against stable on live traffic, per model, with always-valid sequential
tests; its verdict (watching, promote, rollback) is a metric, a status for HTTP and a Decision.

Gates and their error budget (each gate's false-rollback chance over an unbounded run <= alpha):
- toxic, ungrounded, refusal, error: a confidence sequence for canary rate minus stable rate
  (detectors.sequential, tau = the gate's margin: tuned to differences of the size the gate
  cares about). The gate fails when its lower bound at `alpha` is above 0; it passes when its
  one-sided upper bound at `promote_alpha` is <= its margin (`canary.margins`): a canary worse
  by more than the margin is promoted with chance at most promote_alpha, and an identical one
  passes within about 1,000 records per arm at usual rates (`driftwatch canary plan`).
- latency_p95: the share of requests slower than stable's p95, which is fixed once from
  stable's first 200 latencies; then both arms' exceedance shares go through the same
  test. A quantile becomes a rate: under "no difference" both arms exceed the fixed threshold
  equally often whatever error the threshold has, so the test keeps its alpha exactly, and a
  slower canary shows as a share above 5%. The canary's latencies from before the threshold
  are tested once it exists; stable's reference latencies are left out (the threshold fits
  them).
- embedding_drift: one fixed-sample test, not a sequential one: stable's first `min_records`
  response embeddings against the canary's first `min_records`, MMD with a permutation p-value
  (detectors.two_sample); the gate fails when p <= alpha. A permutation test is exact at any
  level, where an ERT-calibrated online detector over a horizon of H records, with ERT =
  H / alpha, measured 2.3% false alarms at alpha 1% (300 runs, 200-row references): its
  bootstrap calibration is loose that far in the tail. About 3 s of CPU once per model.
Hard gates fail as soon as their test says worse; soft gates need `min_records` per arm first.
Promotion needs every configured gate to have its minimum and pass, except a gate that has seen
no value at all once both arms have `min_records` records (its signal is not in this traffic,
e.g. `ungrounded` without context): it is left out of promotion, marked "no data" with the
reason in the status and the decision, and logged once. Rollback is sticky; promote
turns into rollback only, so a verdict a rollout tool has acted on does not flicker.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.sequential import MeanDifferenceCS, one_sided_level
from detectors.two_sample import MMDTest, mmd_permutation_test, resamples_for
from monitor.config import RATE_GATES, CanarySettings
from monitor.telemetry.labels import CappedLabel
from monitor.telemetry.metrics import METRICS as m
from monitor.types import Decision

VERDICTS = ("watching", "promote", "rollback")
ARMS = ("stable", "canary")
_BOUNDS = ("estimate", "lower", "upper")
log = logging.getLogger(__name__)
_QUANTILE = 0.95
# Stable latencies that fix the p95 threshold (fewer when min_records is smaller): a noisier
# threshold keeps the test exact (both arms meet the same one) and leaves more records to test.
LATENCY_REFERENCE = 200
_MAX_MODELS = 20  # models tracked (a metrics label); more are folded into "other"
# Why a gate may never see a value: its signal is not in the traffic (or not scored).
NO_DATA = {
    "toxic": "no response was scored for toxicity",
    "ungrounded": "records carry no context",
    "refusal": "no response was model-scored",
    "error": "no records",
    "latency_p95": "records carry no latency_ms",
    "embedding_drift": "no response embeddings (is a model scorer on?)",
}


@dataclass
class _Embedding:
    reference: list[np.ndarray] = field(default_factory=list)
    collected: int = 0  # stable embeddings kept (up to min_records)
    canary: list[np.ndarray] = field(default_factory=list)
    tested: int = 0  # canary embeddings kept (up to min_records), then all counted
    result: MMDTest | None = None
    flagged: bool = False


@dataclass
class _Model:
    tests: dict[str, MeanDifferenceCS]
    verdict: str = "watching"
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ARMS, 0))
    latency_reference: list[np.ndarray] = field(default_factory=list)
    latency_collected: int = 0
    latency_waiting: list[np.ndarray] = field(default_factory=list)  # canary's, before p95
    p95: float | None = None
    embedding: _Embedding = field(default_factory=_Embedding)
    no_data_warned: set[str] = field(default_factory=set)


class CanaryGate:
    """Compares canary against stable per model on live traffic and decides promote or rollback."""

    def __init__(self, settings: CanarySettings, device: str = "cpu") -> None:
        self.settings = settings
        self.device = device
        self.gates: tuple[str, ...] = (*settings.hard_gates, *settings.soft_gates)
        self._models: dict[str, _Model] = {}
        self._label = CappedLabel(_MAX_MODELS)
        self._lock = threading.Lock()  # the pipeline writes, HTTP threads read status()

    def update(self, models: Sequence[str | None], deployments: Sequence[str | None],
               signals: Mapping[str, np.ndarray], embeddings: np.ndarray | None,
               at: float | np.ndarray) -> list[Decision]:
        """Feed one batch (records aligned across arguments; `at`: each record's time, or
        one for all); return the verdict changes, each dated at the last record of its model
        in the batch, the one after which the gate decided."""
        s = self.settings
        times = np.broadcast_to(np.asarray(at, dtype=np.float64), (len(models),))
        deployment = np.asarray(deployments, dtype=object)
        arm_of = {"stable": deployment == s.stable, "canary": deployment == s.canary}
        in_gate = arm_of["stable"] | arm_of["canary"]
        labels = {raw: self._label(raw) for raw in set(models)}
        model = np.array([labels[raw] for raw in models], dtype=object)
        decisions: list[Decision] = []
        with self._lock:
            for name in sorted(set(model[in_gate])):
                idx = {arm: np.flatnonzero(arm_of[arm] & (model == name)) for arm in ARMS}
                state = self._models.get(name) or self._new(name)
                self._feed(state, idx, signals, embeddings)
                last = int(max(i[-1] for i in idx.values() if i.size))
                gates = {g: self._gate(state, g) for g in self.gates}
                decision = self._decide(name, state, gates, float(times[last]), last)
                self._warn_no_data(name, state, gates)
                if decision is not None:
                    decisions.append(decision)
                self._export(name, state)
        return decisions

    def state(self) -> dict[str, object]:
        """Every model's tests, counts and verdict, and the model label caps, for a checkpoint."""
        with self._lock:
            return {"models": dict(self._models), "labels": self._label}

    def restore(self, state: Mapping[str, object]) -> None:
        """Resume from `state()`: verdicts stay sticky across restarts."""
        models, labels = state.get("models"), state.get("labels")
        if not isinstance(models, dict) or not isinstance(labels, CappedLabel):
            return
        with self._lock:
            self._models, self._label = models, labels
            for name, model in models.items():
                self._export(name, model)

    def status(self) -> dict[str, object]:
        """Every model's verdict, records per arm and gate figures; JSON-able (no NaN/inf)."""
        s = self.settings
        with self._lock:
            models = {}
            for name, state in self._models.items():
                gates = {g: self._gate(state, g) for g in self.gates}
                models[name] = {"verdict": state.verdict, "records": dict(state.records),
                                "failed": [g for g, f in gates.items() if f["failed"]],
                                "gates": gates}
        return {"alpha": s.alpha, "promote_alpha": s.promote_alpha,
                "margins": {g: s.margin_of(g) for g in self.gates if g != "embedding_drift"},
                "min_records": s.min_records,
                "stable": s.stable, "canary": s.canary, "models": models}

    # -- feeding ------------------------------------------------------------------------------

    def _new(self, name: str) -> _Model:
        tests = {g: MeanDifferenceCS(alpha=self.settings.alpha, tau=self.settings.margin_of(g))
                 for g in self.gates if g != "embedding_drift"}
        state = self._models[name] = _Model(tests)
        return state

    def _feed(self, state: _Model, idx: dict[str, np.ndarray], signals: Mapping[str, np.ndarray],
              embeddings: np.ndarray | None) -> None:
        a, b = idx["stable"], idx["canary"]
        for arm in ARMS:
            state.records[arm] += len(idx[arm])
        for gate in RATE_GATES:
            if gate in state.tests and gate in signals:
                values = np.asarray(signals[gate], dtype=np.float64)
                state.tests[gate].update(values[a], values[b])
        if "latency_p95" in state.tests and "latency_seconds" in signals:
            latency = np.asarray(signals["latency_seconds"], dtype=np.float64)
            self._latency(state, latency[a], latency[b])
        if "embedding_drift" in self.gates and embeddings is not None:
            rows = np.asarray(embeddings, dtype=np.float32)
            self._embedding(state.embedding, rows[a], rows[b])

    def _latency(self, state: _Model, stable: np.ndarray, canary: np.ndarray) -> None:
        stable, canary = stable[~np.isnan(stable)], canary[~np.isnan(canary)]
        if state.p95 is None:
            size = min(LATENCY_REFERENCE, self.settings.min_records)
            need = size - state.latency_collected
            state.latency_reference.append(stable[:need])
            state.latency_collected += len(stable[:need])
            # The canary's latencies wait for the threshold: it is made of stable's alone, so
            # they are as independent of it as the later ones.
            # (A checkpoint from before this field has none: start an empty list.)
            waiting = state.__dict__.setdefault("latency_waiting", [])
            waiting.append(canary)
            if state.latency_collected < size:
                return
            state.p95 = float(np.quantile(np.concatenate(state.latency_reference), _QUANTILE))
            state.latency_reference = []
            stable, canary = stable[need:], np.concatenate(waiting)
            waiting.clear()
        state.tests["latency_p95"].update(stable > state.p95, canary > state.p95)

    def _embedding(self, e: _Embedding, stable: np.ndarray, canary: np.ndarray) -> None:
        n = self.settings.min_records
        if e.result is not None:
            e.tested += len(canary)  # counted, for a soft gate's minimum
            return
        stable = stable[~np.isnan(stable).any(axis=1)][: n - e.collected]
        canary = canary[~np.isnan(canary).any(axis=1)][: n - e.tested]
        e.reference.append(stable)
        e.canary.append(canary)
        e.collected += len(stable)
        e.tested += len(canary)
        if e.collected >= n and e.tested >= n:
            e.result = mmd_permutation_test(
                np.concatenate(e.reference), np.concatenate(e.canary),
                n_resamples=resamples_for(self.settings.alpha))
            e.flagged = e.result.pvalue <= self.settings.alpha
            e.reference, e.canary = [], []

    # -- deciding -----------------------------------------------------------------------------

    def _gate(self, state: _Model, gate: str) -> dict[str, object]:
        """One gate's figures and outcome: `failed` (canary worse, minimum met where needed)
        and `passed` (minimum met, within margin)."""
        s = self.settings
        hard = gate in s.hard_gates
        if gate == "embedding_drift":
            e = state.embedding
            has_minimum = e.collected >= s.min_records and e.tested >= s.min_records
            figures: dict[str, object] = {
                "n_stable": e.collected, "n_canary": e.tested, "drift_detected": e.flagged,
                "statistic": finite_or_none(e.result.statistic) if e.result else None,
                "p_value": finite_or_none(e.result.pvalue) if e.result else None}
            failed = e.flagged and (hard or has_minimum)
            passed = has_minimum and not e.flagged
        else:
            t = state.tests[gate]
            has_minimum = min(t.n_a, t.n_b) >= s.min_records
            figures = {"n_stable": t.n_a, "n_canary": t.n_b, "estimate": finite_or_none(t.estimate),
                       "lower": finite_or_none(t.lower), "upper": finite_or_none(t.upper)}
            if gate == "latency_p95":
                figures["threshold_seconds"] = state.p95
            failed = bool(t.lower > 0) and (hard or has_minimum)
            margin = s.margin_of(gate)
            promote_upper = t.estimate + t.half_width(one_sided_level(s.promote_alpha))
            figures["margin"] = margin
            figures["promote_upper"] = finite_or_none(promote_upper)
            passed = has_minimum and bool(promote_upper <= margin)
        seen = figures["n_stable"] or figures["n_canary"]
        no_data = not seen and min(state.records.values()) >= s.min_records
        if no_data:
            figures["no_data"] = NO_DATA[gate]
        return {"kind": "hard" if hard else "soft", "has_minimum": has_minimum,
                "failed": failed, "passed": passed or no_data, **figures}

    def _decide(self, name: str, state: _Model, gates: dict[str, dict[str, object]],
                at: float, index: int) -> Decision | None:
        failed = [g for g, f in gates.items() if f["failed"]]
        if failed and state.verdict != "rollback":
            state.verdict = "rollback"
            shown = failed
            summary = f"canary of {name} rolled back: worse than stable on {', '.join(failed)}"
        elif state.verdict == "watching" and all(f["passed"] for f in gates.values()):
            state.verdict = "promote"
            empty = [g for g, f in gates.items() if "no_data" in f]
            shown = [g for g in self.gates if g not in empty]
            summary = f"canary of {name} promoted: " + ", ".join(
                g if g == "embedding_drift" else f"{g} within {gates[g]['margin']:g}"
                for g in shown) + " of stable"
            if empty:
                summary += "; no data for " + ", ".join(
                    f"{g} ({gates[g]['no_data']})" for g in empty)
        else:
            return None
        evidence = {f"records_{arm}": float(n) for arm, n in state.records.items()}
        for g in shown:
            for key, value in gates[g].items():
                if key in (*_BOUNDS, "n_stable", "n_canary", "statistic", "threshold",
                           "promote_upper", "margin"):
                    evidence[f"{g}.{key}"] = float("nan") if value is None else float(value)
        rollback = state.verdict == "rollback"
        return Decision(event_type=f"canary.{state.verdict}", rule="canary-gate",
                        severity="critical" if rollback else "info", status="firing",
                        segment={"model": name}, evidence=evidence, summary=summary,
                        targets=tuple(self.settings.actions), at=at, index=index)

    def _warn_no_data(self, name: str, state: _Model,
                      gates: dict[str, dict[str, object]]) -> None:
        # A checkpoint from before this field has none: start an empty set.
        warned = state.__dict__.setdefault("no_data_warned", set())
        for gate, g in gates.items():
            if gate in warned or "no_data" not in g:
                continue
            warned.add(gate)
            log.warning("canary gate %r of model %s: no data after %d records per arm (%s); "
                        "it is left out of promotion", gate, name,
                        min(state.records.values()), g["no_data"])

    def _export(self, name: str, state: _Model) -> None:
        for verdict in VERDICTS:
            m.CANARY_VERDICT.labels(name, verdict).set(float(verdict == state.verdict))
        for arm in ARMS:
            m.CANARY_RECORDS.labels(name, arm).set(state.records[arm])
        # Embedding drift has no difference of means: its figures are in status() only.
        for gate, t in state.tests.items():
            for bound in _BOUNDS:
                m.CANARY_DIFFERENCE.labels(name, gate, bound).set(getattr(t, bound))


def finite_or_none(value: float) -> float | None:
    """A figure for JSON: the value, or None where it is NaN or infinite."""
    return float(value) if math.isfinite(value) else None
