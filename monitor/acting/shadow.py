"""The shadow gate: a shadow model's answers against the stable answers to the same requests.

Serving stacks mirror live requests to a shadow model whose answers are never shown. Each
shadow record is paired with the stable record of the same `request_id` (whichever comes
first waits, bounded in event time and in count); a shadow record whose stable one never
comes is counted as unpaired, never compared. Per pair: the toxic, ungrounded and refusal
flags, the error flag, whether latency is above stable's p95 (fixed once from the first
stable latencies, as the canary does), the response length and the cosine between the two
answers' embeddings (how often the shadow says something else).

The gates are the canary's, on paired differences (detectors.sequential.PairedDifferenceCS,
always valid: reading after every batch keeps the error rate): a gate fails when the shadow
is shown worse at `alpha` (hard gates at once, soft gates from `min_pairs`), and the shadow
is ready when every gate has `min_pairs` and is within its margin at `promote_alpha`. A gate
that never sees a value (no context for `ungrounded`) is left out of readiness once there
are `min_pairs`. The verdict (watching, ready, regressed) is sticky; a shadow is never rolled
back: its decisions, `shadow.regressed` and `shadow.ready`, only inform.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from detectors.sequential import PairedDifferenceCS, one_sided_level
from monitor.acting.canary import LATENCY_REFERENCE, finite_or_none
from monitor.config.acting import ShadowSettings
from monitor.telemetry.labels import CappedLabel
from monitor.telemetry.metrics import METRICS as m
from monitor.types import Decision

VERDICTS = ("watching", "ready", "regressed")
SIGNALS = ("toxic", "ungrounded", "refusal", "error")
_MAX_MODELS = 20
_BOUNDS = ("estimate", "lower", "upper")


@dataclass
class _Side:
    """What one record contributes to its pair."""

    model: str
    at: float
    signals: tuple[float, ...]  # as SIGNALS, NaN: not applicable
    latency: float
    length: float
    vector: np.ndarray | None


@dataclass
class _Model:
    tests: dict[str, PairedDifferenceCS]
    verdict: str = "watching"
    pairs: int = 0
    unpaired: int = 0
    latency_reference: list[float] = field(default_factory=list)
    p95: float | None = None
    cosine_sum: float = 0.0
    cosine_n: int = 0
    changed: int = 0  # pairs whose answers' cosine is below 0.8
    length_ratio_sum: float = 0.0  # sum of log(shadow length / stable length)
    length_n: int = 0


class ShadowGate:
    """Pairs shadow and stable records by request id and judges the shadow per model."""

    def __init__(self, settings: ShadowSettings) -> None:
        self.settings = settings
        self.gates: tuple[str, ...] = (*settings.hard_gates, *settings.soft_gates)
        self._pending: OrderedDict[tuple[str, str], _Side] = OrderedDict()
        self._models: dict[str, _Model] = {}
        self._label = CappedLabel(_MAX_MODELS)
        self._clock = -math.inf  # the newest event time seen: the window's end
        self._lock = threading.Lock()  # the pipeline writes, HTTP threads read status()

    def update(self, request_ids: Sequence[str], models: Sequence[str | None],
               deployments: Sequence[str | None], signals: Mapping[str, np.ndarray],
               latency: np.ndarray, length: np.ndarray, embeddings: np.ndarray | None,
               at: np.ndarray) -> list[Decision]:
        """Feed one batch (records aligned); return the verdict changes it caused."""
        s = self.settings
        columns = [np.asarray(signals.get(name, np.full(len(request_ids), np.nan)),
                              dtype=np.float64) for name in SIGNALS]
        pairs: dict[str, list[tuple[_Side, _Side, int]]] = {}
        with self._lock:
            if len(at):
                self._clock = max(self._clock, float(np.max(at)))  # every record's time
            for i, (rid, deployment) in enumerate(zip(request_ids, deployments, strict=True)):
                if deployment not in (s.stable, s.shadow):
                    continue
                side = _Side(self._label(models[i]), float(at[i]),
                             tuple(float(c[i]) for c in columns), float(latency[i]),
                             float(length[i]),
                             None if embeddings is None
                             else embeddings[i].astype(np.float16))  # not a view: it waits
                other = (s.shadow if deployment == s.stable else s.stable)
                waiting = self._pending.pop((rid, other), None)
                if waiting is None:
                    self._pending[(rid, deployment)] = side
                    continue
                stable, shadow = (side, waiting) if deployment == s.stable else (waiting, side)
                pairs.setdefault(shadow.model, []).append((stable, shadow, i))
            self._expire()
            decisions = []
            for name, found in pairs.items():
                state = self._models.get(name) or self._new(name)
                self._feed(state, found)
                decision = self._decide(name, state, max(st.at for st, _, _ in found),
                                        max(i for _, _, i in found))
                if decision is not None:
                    decisions.append(decision)
                self._export(name, state)
        return decisions

    def status(self) -> dict[str, object]:
        """Every model's verdict, pair counts and gate figures; JSON-able (no NaN/inf)."""
        s = self.settings
        with self._lock:
            models = {}
            for name, state in self._models.items():
                gates = {g: self._gate(state, g) for g in self.gates}
                models[name] = {
                    "verdict": state.verdict, "pairs": state.pairs, "unpaired": state.unpaired,
                    "failed": [g for g, f in gates.items() if f["failed"]], "gates": gates,
                    "mean_cosine": finite_or_none(state.cosine_sum / state.cosine_n)
                    if state.cosine_n else None,
                    "changed_share": finite_or_none(state.changed / state.cosine_n)
                    if state.cosine_n else None,
                    "length_ratio": finite_or_none(
                        math.exp(state.length_ratio_sum / state.length_n))
                    if state.length_n else None}
            pending = len(self._pending)
        return {"alpha": s.alpha, "promote_alpha": s.promote_alpha, "min_pairs": s.min_pairs,
                "margins": {g: s.margin_of(g) for g in self.gates}, "stable": s.stable,
                "shadow": s.shadow, "pending": pending, "models": models}

    def state(self) -> dict[str, object]:
        with self._lock:
            return {"models": dict(self._models), "pending": OrderedDict(self._pending),
                    "labels": self._label, "clock": self._clock}

    def restore(self, state: Mapping[str, object]) -> None:
        models, pending, labels = state.get("models"), state.get("pending"), state.get("labels")
        if not (isinstance(models, dict) and isinstance(pending, OrderedDict)
                and isinstance(labels, CappedLabel)):
            return
        with self._lock:
            self._models, self._pending, self._label = models, pending, labels
            self._clock = float(state.get("clock", -math.inf))  # type: ignore[arg-type]
            for name, model in models.items():
                self._export(name, model)

    # -- pairing ------------------------------------------------------------------------------

    def _expire(self) -> None:
        """Drop what waited past the window or beyond max_pending; a shadow record dropped
        unpaired is counted (a stable one unpaired is the usual case: not every request is
        mirrored)."""
        s = self.settings
        horizon = self._clock - s.window_seconds
        while self._pending:
            (rid, deployment), side = next(iter(self._pending.items()))
            if len(self._pending) <= s.max_pending and side.at >= horizon:
                break
            del self._pending[(rid, deployment)]
            if deployment == s.shadow:
                state = self._models.get(side.model) or self._new(side.model)
                state.unpaired += 1
                m.SHADOW_RECORDS.labels(side.model, "unpaired").inc()

    def _new(self, name: str) -> _Model:
        s = self.settings
        state = self._models[name] = _Model(
            {g: PairedDifferenceCS(alpha=s.alpha, tau=s.margin_of(g)) for g in self.gates})
        return state

    def _feed(self, state: _Model, found: list[tuple[_Side, _Side, int]]) -> None:
        state.pairs += len(found)
        m.SHADOW_RECORDS.labels(found[0][1].model, "paired").inc(len(found))
        stable = np.array([st.signals for st, _, _ in found]).reshape(len(found), len(SIGNALS))
        shadow = np.array([sh.signals for _, sh, _ in found]).reshape(len(found), len(SIGNALS))
        for j, name in enumerate(SIGNALS):
            if name in state.tests:
                state.tests[name].update(stable[:, j], shadow[:, j])
        if "latency_p95" in state.tests:
            self._latency(state, np.array([st.latency for st, _, _ in found]),
                          np.array([sh.latency for _, sh, _ in found]))
        for st, sh, _ in found:
            if st.vector is not None and sh.vector is not None \
                    and not (np.isnan(st.vector).any() or np.isnan(sh.vector).any()):
                cosine = float(np.dot(st.vector.astype(np.float32),
                                      sh.vector.astype(np.float32)))
                state.cosine_sum += cosine
                state.cosine_n += 1
                state.changed += cosine < 0.8
                m.SHADOW_COSINE.labels(sh.model).observe(cosine)
            if st.length > 0 and sh.length > 0:
                state.length_ratio_sum += math.log(sh.length / st.length)
                state.length_n += 1

    def _latency(self, state: _Model, stable: np.ndarray, shadow: np.ndarray) -> None:
        keep = ~(np.isnan(stable) | np.isnan(shadow))
        stable, shadow = stable[keep], shadow[keep]
        if state.p95 is None:
            need = min(LATENCY_REFERENCE, self.settings.min_pairs) - len(state.latency_reference)
            state.latency_reference += stable[:need].tolist()
            if len(state.latency_reference) < min(LATENCY_REFERENCE, self.settings.min_pairs):
                return
            state.p95 = float(np.quantile(state.latency_reference, 0.95))
            stable, shadow = stable[need:], shadow[need:]  # the threshold's own pairs: out
        state.tests["latency_p95"].update(stable > state.p95, shadow > state.p95)

    # -- deciding -----------------------------------------------------------------------------

    def _gate(self, state: _Model, gate: str) -> dict[str, object]:
        s = self.settings
        t = state.tests[gate]
        hard = gate in s.hard_gates
        has_minimum = t.n_b >= s.min_pairs
        failed = bool(t.lower > 0) and (hard or has_minimum)
        upper = t.estimate + t.half_width(one_sided_level(s.promote_alpha))
        passed = has_minimum and bool(upper <= s.margin_of(gate))
        no_data = not t.n_b and state.pairs >= s.min_pairs
        figures: dict[str, object] = {
            "kind": "hard" if hard else "soft", "pairs": t.n_b, "has_minimum": has_minimum,
            "failed": failed, "passed": passed or no_data, "estimate": finite_or_none(t.estimate),
            "lower": finite_or_none(t.lower), "upper": finite_or_none(t.upper),
            "promote_upper": finite_or_none(upper), "margin": s.margin_of(gate)}
        if gate == "latency_p95":
            figures["threshold_seconds"] = state.p95
        if no_data:
            figures["no_data"] = "no pair had a value for it"
        return figures

    def _decide(self, name: str, state: _Model, at: float, index: int) -> Decision | None:
        gates = {g: self._gate(state, g) for g in self.gates}
        failed = [g for g, f in gates.items() if f["failed"]]
        if failed and state.verdict != "regressed":
            state.verdict = "regressed"
            shown = failed
            summary = (f"shadow of {name} regressed: worse than stable on "
                       f"{', '.join(failed)} over {state.pairs} paired requests")
        elif state.verdict == "watching" and all(f["passed"] for f in gates.values()):
            state.verdict = "ready"
            shown = [g for g, f in gates.items() if "no_data" not in f]
            summary = (f"shadow of {name} ready: " + ", ".join(
                f"{g} within {gates[g]['margin']:g}" for g in shown)
                + f" of stable over {state.pairs} paired requests")
        else:
            return None
        evidence: dict[str, float] = {"pairs": float(state.pairs),
                                      "unpaired": float(state.unpaired)}
        if state.cosine_n:
            evidence["mean_cosine"] = state.cosine_sum / state.cosine_n
        for g in shown:
            for key in (*_BOUNDS, "promote_upper", "margin"):
                value = gates[g][key]
                evidence[f"{g}.{key}"] = float("nan") if value is None else float(value)  # type: ignore[arg-type]
        regressed = state.verdict == "regressed"
        return Decision(event_type=f"shadow.{state.verdict}", rule="shadow-gate",
                        severity="warning" if regressed else "info", status="firing",
                        segment={"model": name, "deployment": self.settings.shadow},
                        evidence=evidence, summary=summary,
                        targets=tuple(self.settings.actions), at=at, index=index)

    def _export(self, name: str, state: _Model) -> None:
        for verdict in VERDICTS:
            m.SHADOW_VERDICT.labels(name, verdict).set(float(verdict == state.verdict))
        for gate, t in state.tests.items():
            for bound in _BOUNDS:
                m.SHADOW_DIFFERENCE.labels(name, gate, bound).set(getattr(t, bound))
