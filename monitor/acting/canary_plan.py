"""`driftwatch canary plan`: how many records per arm the canary gate needs to promote an
identical canary, and how often it rolls one back, measured by running the gate itself on
simulated identical arms at assumed stable rates. `check-config` prints the bounds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from detectors.sequential import MeanDifferenceCS, one_sided_level
from monitor.acting.canary import LATENCY_REFERENCE, CanaryGate
from monitor.config.acting import CanarySettings

# Stable rates assumed unless given (--rate gate=value): usual for LLM serving. latency_p95
# is the share above stable's own p95: 5% by construction.
ASSUMED_RATES: dict[str, float] = {"toxic": 0.02, "ungrounded": 0.10, "refusal": 0.03,
                                   "error": 0.01, "latency_p95": 0.05}
LOOK = 50  # records per arm between looks, as a busy daemon's batch gives
_MODEL = "canary-plan"


@dataclass(frozen=True)
class GatePlan:
    """One gate's plan: records per arm to pass (bound and simulated) and its false rollbacks."""

    gate: str
    kind: str  # hard | soft
    rate: float  # stable rate assumed (NaN: embedding_drift)
    margin: float  # NaN: embedding_drift
    bound: int  # records per arm at which the interval fits the margin, estimate at 0
    median: float  # simulated records per arm before the gate first passed
    p90: float
    false_rollbacks: int  # runs in which this gate failed an identical canary


@dataclass(frozen=True)
class Plan:
    """The canary plan: each gate's figures and the records per arm until promotion."""

    gates: tuple[GatePlan, ...]
    promote_median: float  # records per arm to promotion (every gate at once)
    promote_p90: float
    unpromoted: int  # runs not promoted within max_records
    runs: int
    max_records: int


def records_to_pass(settings: CanarySettings, gate: str, rate: float,
                    limit: int = 1_000_000) -> int:
    """Fewest records per arm at which the gate's interval at promote_alpha fits its margin
    when both arms show exactly `rate` (the gate's own test, fed exact counts), and at least
    `min_records` (latency_p95: after them)."""
    def fits(n: int) -> bool:
        cs = MeanDifferenceCS(alpha=settings.alpha, tau=settings.margin_of(gate))
        hits = round(n * rate)
        arm = np.r_[np.ones(hits), np.zeros(n - hits)]
        cs.update(arm, arm)
        return cs.half_width(one_sided_level(settings.promote_alpha)) <= settings.margin_of(gate)

    low, high = 1, 2
    while not fits(high):
        if high >= limit:
            return limit
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if fits(mid) else (mid, high)
    if gate == "latency_p95":  # stable's first records fix the threshold and are not tested
        high = _latency_records(high, min(LATENCY_REFERENCE, settings.min_records))
    return max(high, settings.min_records)


def _latency_records(tested: int, reference: int) -> int:
    """Records per arm n at which stable's n - reference and the canary's n tested carry the
    information of `tested` records on each arm."""
    n = tested
    while 1 / (n - reference) + 1 / n > 2 / tested:
        n += 1
    return n


def _batch(rng: np.random.Generator, rates: Mapping[str, float]
           ) -> tuple[list[str], list[str], dict[str, np.ndarray]]:
    n = 2 * LOOK
    signals = {g: (rng.random(n) < rates[g]).astype(np.float64)
               for g in ("toxic", "ungrounded", "refusal", "error")}
    signals["latency_seconds"] = np.exp(rng.normal(0.0, 0.5, n))
    return [_MODEL] * n, ["stable", "canary"] * LOOK, signals


def _p90(records: np.ndarray) -> float:
    """The 90th percentile of records to a verdict, a run that never got there infinite: an
    observed value (interpolating towards infinity is inf - inf, NaN and a warning)."""
    return float(np.quantile(records, 0.9, method="inverted_cdf"))


def plan(settings: CanarySettings, rates: Mapping[str, float] | None = None, runs: int = 200,
         max_records: int = 10_000, seed: int = 0) -> Plan:
    """Run the gate on `runs` identical pairs of arms; each run stops at its verdict."""
    rates = {**ASSUMED_RATES, **(rates or {})}
    simulated = settings.model_copy(update={
        "actions": [], "soft_gates": [g for g in settings.soft_gates if g != "embedding_drift"],
        "hard_gates": [g for g in settings.hard_gates if g != "embedding_drift"]})
    gates = (*simulated.hard_gates, *simulated.soft_gates)
    passed_at: dict[str, list[float]] = {g: [] for g in gates}
    failed = dict.fromkeys(gates, 0)
    promoted: list[float] = []
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        gate = CanaryGate(simulated)
        first: dict[str, float] = {}
        for looks in range(1, max_records // LOOK + 1):
            models, deployments, signals = _batch(rng, rates)
            gate.update(models, deployments, signals, None, at=float(looks))
            status = gate.status()["models"][_MODEL]  # type: ignore[index]
            for g, figures in status["gates"].items():
                if figures["passed"]:
                    first.setdefault(g, looks * LOOK)
            if status["verdict"] != "watching":
                break
        for g in status["failed"]:
            failed[g] += 1
        for g in gates:
            passed_at[g].append(first.get(g, np.inf))
        if status["verdict"] == "promote":
            promoted.append(looks * LOOK)
    rows = []
    for g in (*settings.hard_gates, *settings.soft_gates):
        kind = "hard" if g in settings.hard_gates else "soft"
        if g == "embedding_drift":  # one permutation test at min_records per arm
            rows.append(GatePlan(g, kind, np.nan, np.nan, settings.min_records,
                                 settings.min_records, settings.min_records, 0))
            continue
        at = np.asarray(passed_at[g])
        rows.append(GatePlan(g, kind, rates[g], settings.margin_of(g),
                             records_to_pass(settings, g, rates[g]),
                             float(np.median(at)), _p90(at), failed[g]))
    done = np.asarray(promoted + [np.inf] * (runs - len(promoted)))
    return Plan(tuple(rows), float(np.median(done)), _p90(done),
                runs - len(promoted), runs, max_records)


def bounds_lines(settings: CanarySettings) -> list[str]:
    """One line per gate for check-config: records per arm to promote an identical canary."""
    lines = []
    for g in (*settings.hard_gates, *settings.soft_gates):
        if g == "embedding_drift":
            lines.append(f"  embedding_drift: {settings.min_records} (one two-sample test)")
            continue
        rate = ASSUMED_RATES[g]
        lines.append(f"  {g}: {records_to_pass(settings, g, rate):,} at a stable rate of "
                     f"{rate:g}, margin {settings.margin_of(g):g}")
    return lines


def _records(value: float) -> str:
    return "never" if not np.isfinite(value) else f"{value:,.0f}"


def render(p: Plan, settings: CanarySettings) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"identical canary, {p.runs} runs, looked at every {LOOK} records "
                        f"per arm, up to {p.max_records:,}")
    for column in ("gate", "kind", "stable rate", "margin", "bound", "median", "p90",
                   "false rollbacks"):
        table.add_column(column, justify="left" if column in ("gate", "kind") else "right")
    for g in p.gates:
        table.add_row(g.gate, g.kind, "-" if np.isnan(g.rate) else f"{g.rate:g}",
                      "-" if np.isnan(g.margin) else f"{g.margin:g}", f"{g.bound:,}",
                      _records(g.median), _records(g.p90), f"{g.false_rollbacks}")
    console = Console(width=110, record=True)
    with console.capture() as captured:
        console.print(table)
    return (captured.get()
            + f"records per arm to promote (every gate at once): median "
              f"{_records(p.promote_median)}, p90 {_records(p.promote_p90)}; not promoted "
              f"within {p.max_records:,}: {p.unpromoted} of {p.runs}\n"
            + f"bound: records per arm at which a gate's interval (promote_alpha "
              f"{settings.promote_alpha:g}) fits its margin with both arms at the stated "
              f"rate.\nfalse rollbacks: identical canaries rolled back; each gate's chance "
              f"is at most alpha {settings.alpha:g} over an unbounded run.\n")
