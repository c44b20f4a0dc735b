"""`driftwatch compare`: an offline regression gate for a new model version.

Two recorded sets of answers to the same prompts (baseline and candidate, paired by
`request_id`) are scored by the daemon's scorers and judged by the canary's gates, but on
paired differences: each prompt is its own control, which removes the between-prompt
variance two independent arms carry. Per rate gate (toxic, ungrounded, refusal, error,
latency above the baseline's p95; with a golden set also a missed expected answer and the
distance to it) the per-pair difference candidate minus baseline is tested with a one-sided
t-test on the pairs (scipy): the gate fails when the lower bound at `canary.alpha` is above
0 (the candidate is shown worse), and passes when the upper bound at `canary.promote_alpha`
is within the gate's margin (`canary.margins`, as the canary). Embedding drift of the
candidate's responses against the baseline's is the canary's MMD permutation test.

Verdict: promote (every gate passed, or had no data), regressed (a gate failed), or
inconclusive (too few pairs to tell); `driftwatch compare` exits 0, 1 or 2 on them.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec
import numpy as np
from scipy import stats

from consumers.decode import Decoder, Rejection, each
from consumers.wire import Record
from detectors.operational import status_class
from detectors.two_sample import mmd_permutation_test, resamples_for
from monitor.acting.canary import finite_or_none
from monitor.app.wiring import OFFLINE_BATCH, OFFLINE_MAX_LINE, bounded_lines
from monitor.config import RATE_GATES, OfflineConfig
from monitor.pipeline.model_scoring import BatchScores, ModelScorers
from monitor.pipeline.stages import rule_signals

VERDICTS = {"promote": 0, "regressed": 1, "inconclusive": 2}
GOLDEN_GATES = ("golden_mismatch", "golden_distance")
# A missed expected answer is a rate like the others; the distance to it (1 - cosine) is a
# mean, with a margin in its own units.
GOLDEN_MARGINS = {"golden_mismatch": 0.02, "golden_distance": 0.02}
MMD_ROWS = 1_000  # rows per side in the permutation test (its kernel matrix is quadratic)
_TEXT_LIMIT = 500


class InputError(ValueError):
    """A file that cannot be compared: unreadable, or nothing in it pairs."""


@dataclass(frozen=True)
class Rejected:
    """A line that was not compared, and why."""

    file: str
    line: int
    reason: str


@dataclass
class Side:
    """One file's valid records by request id, and what was refused in it."""

    records: dict[str, Record] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)


@dataclass(frozen=True)
class GateResult:
    """One gate's paired figures and outcome."""

    gate: str
    kind: str  # hard | soft | golden | drift
    pairs: int
    baseline: float  # the baseline's rate or mean over the tested pairs
    candidate: float
    difference: float  # candidate - baseline; positive is worse
    lower: float  # one-sided bound at alpha: above 0 is worse
    upper: float  # one-sided bound at promote_alpha: within the margin passes
    margin: float | None
    p_value: float  # of "the candidate is worse"
    failed: bool
    passed: bool
    no_data: str | None = None


@dataclass(frozen=True)
class Comparison:
    """Everything `driftwatch compare` found: verdict, gates, pairing, worst regressions."""

    verdict: str
    pairs: int
    unpaired_baseline: list[str]
    unpaired_candidate: list[str]
    rejected: list[Rejected]
    gates: list[GateResult]
    alpha: float
    promote_alpha: float
    response_cosine: list[float]  # per pair: baseline answer vs candidate answer
    worst: list[dict[str, object]]  # the pairs that changed most for the worse

    def to_json(self) -> dict[str, object]:
        out = asdict(self)
        cos = np.asarray(self.response_cosine)
        out["response_cosine"] = {
            "mean": finite_or_none(float(cos.mean())) if cos.size else None,
            "share_below_0_8": finite_or_none(float((cos < 0.8).mean())) if cos.size else None}
        out["gates"] = [{k: finite_or_none(v) if isinstance(v, float) else v
                         for k, v in asdict(g).items()} for g in self.gates]
        return out


def read_side(path: Path, decoder: Decoder | None = None) -> Side:
    """Valid wire records of a JSONL file by request id; bad lines and repeated ids refused
    with their line number and reason (never dropped silently)."""
    decoder = decoder or Decoder(OFFLINE_MAX_LINE)
    side = Side()
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    with handle:
        for number, line in enumerate(bounded_lines(handle), start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            for item in each(decoder.decode(line)):
                if isinstance(item, Rejection):
                    side.rejected.append(Rejected(str(path), number, f"{item.reason}: "
                                                  f"{item.detail}"[:300]))
                elif item.request_id in side.records:
                    side.rejected.append(Rejected(str(path), number, "duplicate request_id "
                                                  f"{item.request_id!r} (the first is kept)"))
                else:
                    side.records[item.request_id] = item
    return side


def read_golden(path: Path) -> tuple[dict[str, str], list[Rejected]]:
    """Expected answers by request id: JSON lines {request_id, expected} (or `response`)."""
    expected: dict[str, str] = {}
    rejected: list[Rejected] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            rejected.append(Rejected(str(path), number, f"not JSON: {exc}"))
            continue
        answer = row.get("expected", row.get("response")) if isinstance(row, dict) else None
        rid = row.get("request_id") if isinstance(row, dict) else None
        if type(rid) is int:  # as the wire reads an id given as a number: its decimal string
            rid = str(rid)
        if not isinstance(rid, str) or not rid or not isinstance(answer, str):
            rejected.append(Rejected(str(path), number, "needs a request_id (a string or a "
                                     "whole number) and a string expected (or response)"))
        elif rid in expected:
            rejected.append(Rejected(str(path), number, f"duplicate request_id {rid!r}"))
        else:
            expected[rid] = answer
    return expected, rejected


def normalise(text: str) -> str:
    """Casefolded, accents and punctuation dropped, whitespace collapsed: what counts as the
    same short answer ("Paris." and "paris")."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def paired_gate(gate: str, kind: str, base: np.ndarray, cand: np.ndarray, margin: float | None,
                alpha: float, promote_alpha: float) -> GateResult:
    """A one-sided paired t-test of candidate minus baseline (NaN pairs left out)."""
    keep = ~(np.isnan(base) | np.isnan(cand))
    base, cand = base[keep], cand[keep]
    n = int(base.size)
    if n == 0:
        return GateResult(gate, kind, 0, math.nan, math.nan, math.nan, math.nan, math.nan,
                          margin, math.nan, False, True, "no pair has a value for it")
    d = cand - base
    mean = float(d.mean())
    sd = float(d.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and sd == 0:  # every pair moved by the same amount (a copy: by nothing)
        lower = upper = mean
        p = 0.0 if mean > 0 else 1.0
    elif n > 1:
        se = sd / math.sqrt(n)
        lower = mean - float(stats.t.ppf(1 - alpha, n - 1)) * se
        upper = mean + float(stats.t.ppf(1 - promote_alpha, n - 1)) * se
        p = float(stats.t.sf(mean / se, n - 1))
    else:
        lower, upper, p = -math.inf, math.inf, math.nan
    failed = lower > 0
    passed = not failed and margin is not None and upper <= margin
    return GateResult(gate, kind, n, float(base.mean()), float(cand.mean()), mean, lower, upper,
                      margin, p, failed, passed)


def drift_gate(base: np.ndarray, cand: np.ndarray, alpha: float, kind: str) -> GateResult:
    """The canary's embedding gate: MMD between the two sets of answers, permutation p-value
    (at most MMD_ROWS rows a side, sampled with a fixed seed)."""
    rng = np.random.default_rng(0)
    keep = ~(np.isnan(base).any(axis=1) | np.isnan(cand).any(axis=1))
    base, cand = base[keep], cand[keep]
    if len(base) < 2:
        return GateResult("embedding_drift", kind, len(base), math.nan, math.nan, math.nan,
                          math.nan, math.nan, None, math.nan, False, True,
                          "fewer than 2 pairs with response embeddings")
    if len(base) > MMD_ROWS:
        pick = rng.choice(len(base), MMD_ROWS, replace=False)
        base, cand = base[pick], cand[pick]
    result = mmd_permutation_test(base, cand, n_resamples=resamples_for(alpha))
    failed = bool(result.pvalue <= alpha)
    return GateResult("embedding_drift", kind, len(base), 0.0, float(result.statistic),
                      float(result.statistic), math.nan, math.nan, None, float(result.pvalue),
                      failed, not failed)


def _score(records: Sequence[Record], models: ModelScorers) -> list[BatchScores]:
    return [models.score(records[i:i + OFFLINE_BATCH])
            for i in range(0, len(records), OFFLINE_BATCH)]


def _signals(records: Sequence[Record], parts: Sequence[BatchScores]
             ) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """Per-record signals (as the canary reads them), response embeddings, toxicity."""
    signals: dict[str, list[np.ndarray]] = {}
    vectors: list[np.ndarray] = []
    toxicity: list[np.ndarray] = []
    for start, scores in zip(range(0, len(records), OFFLINE_BATCH), parts, strict=True):
        chunk = records[start:start + OFFLINE_BATCH]
        outcomes = [(status_class(r.status, r.error_type), r.error_type or "") for r in chunk]
        for name, values in rule_signals(outcomes, scores).items():
            signals.setdefault(name, []).append(values)
        if scores.response_embeddings is not None:
            rows = np.full((len(chunk), scores.response_embeddings.shape[1]), np.nan,
                           dtype=np.float32)
            rows[scores.sampled] = scores.response_embeddings
            vectors.append(rows)
        toxicity.append(scores.toxicity)
    return ({k: np.concatenate(v) for k, v in signals.items()},
            np.concatenate(vectors) if vectors else None,
            np.concatenate(toxicity) if toxicity else np.empty(0))


def _latency(records: Sequence[Record]) -> np.ndarray:
    return np.array([math.nan if r.latency_ms is None else r.latency_ms / 1000.0
                     for r in records], dtype=np.float64)


def compare(baseline: Side, candidate: Side, config: OfflineConfig,
            golden: dict[str, str] | None = None, models: ModelScorers | None = None,
            worst: int = 10) -> Comparison:
    """Score both sides, pair them, and judge every gate on the paired differences."""
    ids = [rid for rid in baseline.records if rid in candidate.records]
    if not ids:
        refused = rejected_lines(baseline.rejected + candidate.rejected, 3)
        raise InputError(f"no request_id is in both files ({len(baseline.records)} valid "
                         f"baseline and {len(candidate.records)} valid candidate records)"
                         + "".join(f"\n  refused: {line}" for line in refused))
    canary = config.canary
    gates = [*canary.hard_gates, *canary.soft_gates]
    models = models or ModelScorers(config.scorers, config.scoring, embeddings=True)
    base_records = [baseline.records[rid] for rid in ids]
    cand_records = [candidate.records[rid] for rid in ids]
    base_sig, base_vec, base_tox = _signals(base_records, _score(base_records, models))
    cand_sig, cand_vec, cand_tox = _signals(cand_records, _score(cand_records, models))
    alpha, promote_alpha = canary.alpha, canary.promote_alpha
    results: list[GateResult] = []
    for gate in gates:
        kind = "hard" if gate in canary.hard_gates else "soft"
        if gate in RATE_GATES:
            nan = np.full(len(ids), np.nan)
            results.append(paired_gate(gate, kind, base_sig.get(gate, nan),
                                       cand_sig.get(gate, nan), canary.margin_of(gate), alpha,
                                       promote_alpha))
        elif gate == "latency_p95":
            base_lat, cand_lat = _latency(base_records), _latency(cand_records)
            known = base_lat[~np.isnan(base_lat)]
            threshold = float(np.quantile(known, 0.95)) if known.size else math.inf
            over = [np.where(np.isnan(x), np.nan, x > threshold) for x in (base_lat, cand_lat)]
            results.append(paired_gate(gate, kind, *over, canary.margin_of(gate), alpha,
                                       promote_alpha))
        elif gate == "embedding_drift":
            if base_vec is None or cand_vec is None:
                results.append(GateResult(gate, kind, 0, math.nan, math.nan, math.nan,
                                          math.nan, math.nan, None, math.nan, False, True,
                                          "no response embeddings (is a model scorer on?)"))
            else:
                results.append(drift_gate(base_vec, cand_vec, alpha, kind))
    cosine = (np.nansum(base_vec * cand_vec, axis=1) if base_vec is not None
              and cand_vec is not None else np.full(len(ids), np.nan))
    if golden is not None:
        results += _golden(ids, base_records, cand_records, golden, models, alpha,
                           promote_alpha)
    verdict = ("regressed" if any(g.failed for g in results)
               else "promote" if all(g.passed for g in results) else "inconclusive")
    changed = _worst(ids, base_records, cand_records, base_sig, cand_sig, base_tox, cand_tox,
                     cosine, worst)
    return Comparison(verdict, len(ids),
                      [rid for rid in baseline.records if rid not in candidate.records],
                      [rid for rid in candidate.records if rid not in baseline.records],
                      baseline.rejected + candidate.rejected, results, alpha, promote_alpha,
                      [float(c) for c in cosine if not math.isnan(c)], changed)


def _golden(ids: Sequence[str], base: Sequence[Record], cand: Sequence[Record],
            golden: dict[str, str], models: ModelScorers, alpha: float, promote_alpha: float
            ) -> list[GateResult]:
    have = [i for i, rid in enumerate(ids) if rid in golden]
    if not have:
        return [GateResult(g, "golden", 0, math.nan, math.nan, math.nan, math.nan, math.nan,
                           GOLDEN_MARGINS[g], math.nan, False, True,
                           "no compared request_id has an expected answer")
                for g in GOLDEN_GATES]
    expected = [golden[ids[i]] for i in have]
    answers = {side: [(records[i].response or "") for i in have]
               for side, records in (("baseline", base), ("candidate", cand))}
    miss = {side: np.array([normalise(a) != normalise(e) for a, e in
                            zip(texts, expected, strict=True)], dtype=np.float64)
            for side, texts in answers.items()}
    results = [paired_gate("golden_mismatch", "golden", miss["baseline"], miss["candidate"],
                           GOLDEN_MARGINS["golden_mismatch"], alpha, promote_alpha)]
    embedder = models.embedder or models.transformer
    if embedder is None:
        results.append(GateResult("golden_distance", "golden", 0, math.nan, math.nan,
                                  math.nan, math.nan, math.nan,
                                  GOLDEN_MARGINS["golden_distance"], math.nan, False, True,
                                  "no embedding model (enable a model scorer)"))
        return results
    target = embedder.encode(expected)
    distance = {side: 1.0 - np.sum(embedder.encode(texts) * target, axis=1).astype(np.float64)
                for side, texts in answers.items()}
    results.append(paired_gate("golden_distance", "golden", distance["baseline"],
                               distance["candidate"], GOLDEN_MARGINS["golden_distance"],
                               alpha, promote_alpha))
    return results


def _worst(ids: Sequence[str], base: Sequence[Record], cand: Sequence[Record],
           base_sig: dict[str, np.ndarray], cand_sig: dict[str, np.ndarray],
           base_tox: np.ndarray, cand_tox: np.ndarray, cosine: np.ndarray, k: int
           ) -> list[dict[str, object]]:
    """The pairs that got worse the most: flags newly raised, then the rise in toxicity, then
    how far the answer moved (1 - cosine); pairs that barely changed are left out."""
    raised = {name: np.nan_to_num(cand_sig[name]) - np.nan_to_num(base_sig.get(name, 0.0))
              for name in RATE_GATES if name in cand_sig}
    newly = np.sum([np.maximum(v, 0) for v in raised.values()], axis=0) if raised else \
        np.zeros(len(ids))
    tox_rise = np.maximum(np.nan_to_num(cand_tox - base_tox), 0)
    moved = np.nan_to_num(1.0 - cosine)
    order = np.lexsort((-moved, -tox_rise, -newly))
    out = []
    for i in order.tolist():
        if len(out) == k:
            break
        if newly[i] <= 0 and tox_rise[i] <= 0.05 and moved[i] < 0.2:
            continue  # unchanged enough: not a regression to show
        out.append({
            "request_id": ids[i],
            "worse_on": sorted(n for n, v in raised.items() if v[i] > 0),
            "toxicity": [_rounded(base_tox[i]), _rounded(cand_tox[i])],
            "cosine": _rounded(cosine[i]),
            "prompt": (base[i].user_prompt or "")[:_TEXT_LIMIT],
            "baseline": (base[i].response or "")[:_TEXT_LIMIT],
            "candidate": (cand[i].response or "")[:_TEXT_LIMIT]})
    return out


def rejected_lines(items: Iterable[Rejected], limit: int = 20) -> list[str]:
    items = list(items)
    lines = [f"{r.file}:{r.line}: {r.reason}" for r in items[:limit]]
    if len(items) > limit:
        lines.append(f"... and {len(items) - limit} more")
    return lines


def _rounded(value: float) -> float | None:
    return round(float(value), 4) if math.isfinite(value) else None
