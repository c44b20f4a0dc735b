"""What `driftwatch compare` shows: a terminal table, and a self-contained HTML report with
the per-gate differences and their bounds, the worst regressions with their texts, and plots."""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
from rich.console import Console
from rich.table import Table

from monitor.app.compare import Comparison, GateResult, rejected_lines

_STYLE = {"promote": "green", "regressed": "red", "inconclusive": "yellow"}


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.{digits}f}" if digits else f"{value:g}"


def outcome(g: GateResult) -> str:
    if g.no_data:
        return "no data"
    return "FAILED" if g.failed else "passed" if g.passed else "inconclusive"


def print_table(c: Comparison, console: Console) -> None:
    table = Table(title=f"candidate vs baseline: {c.pairs} pairs", title_justify="left")
    for column in ("gate", "kind", "pairs", "baseline", "candidate", "difference",
                   f"lower ({c.alpha:g})", f"upper ({c.promote_alpha:g})", "margin", "p",
                   "outcome"):
        table.add_column(column, justify="left" if column in ("gate", "kind", "outcome")
                         else "right")
    for g in c.gates:
        style = "red" if g.failed else "green" if g.passed and not g.no_data else ""
        table.add_row(g.gate, g.kind, str(g.pairs), _num(g.baseline).lstrip("+"),
                      _num(g.candidate).lstrip("+"), _num(g.difference), _num(g.lower),
                      _num(g.upper), _num(g.margin, 0), _num(g.p_value).lstrip("+"),
                      outcome(g) + (f" ({g.no_data})" if g.no_data else ""), style=style)
    console.print(table)
    cos = np.asarray(c.response_cosine)
    if cos.size:
        console.print(f"answers changed: mean cosine {cos.mean():.3f} between the two answers; "
                      f"{(cos < 0.8).mean():.1%} of pairs below 0.8")
    if c.unpaired_baseline or c.unpaired_candidate:
        console.print(f"unpaired (not compared): {len(c.unpaired_baseline)} baseline, "
                      f"{len(c.unpaired_candidate)} candidate records")
    for line in rejected_lines(c.rejected):
        console.print(f"refused: {line}", markup=False)
    for w in c.worst[:5]:
        base_tox, cand_tox = w["toxicity"]  # type: ignore[misc]
        console.print(f"worse: {w['request_id']} on {', '.join(w['worse_on']) or 'its answer'}"  # type: ignore[arg-type]
                      f" (toxicity {base_tox} -> {cand_tox}, cosine {w['cosine']})",
                      markup=False)
    console.print(f"verdict: [{_STYLE[c.verdict]}]{c.verdict}[/]")


def _png(fig: object) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    return base64.b64encode(buffer.getvalue()).decode()


def _plots(c: Comparison) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or in CI
    import matplotlib.pyplot as plt

    out = []
    shown = [g for g in c.gates if g.margin is not None and not g.no_data]
    if shown:
        fig, ax = plt.subplots(figsize=(7, 0.5 * len(shown) + 1.2))
        for y, g in enumerate(shown):
            lo = g.lower if math.isfinite(g.lower) else g.difference
            hi = g.upper if math.isfinite(g.upper) else g.difference
            color = "tab:red" if g.failed else "tab:green" if g.passed else "tab:orange"
            ax.plot([lo, hi], [y, y], color=color, linewidth=3)
            ax.plot([g.difference], [y], "o", color="black")
            ax.plot([g.margin], [y], "|", color="gray", markersize=14)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(shown)), [g.gate for g in shown])
        ax.set_xlabel("candidate - baseline (bar: lower bound to upper bound; |: margin)")
        out.append(("Per-gate differences", _png(fig)))
        plt.close(fig)
    if c.response_cosine:
        fig, ax = plt.subplots(figsize=(7, 2.6))
        ax.hist(c.response_cosine, bins=40, range=(min(0.0, min(c.response_cosine)), 1.0))
        ax.set_xlabel("cosine between the baseline's and the candidate's answer")
        ax.set_ylabel("pairs")
        out.append(("How much the answers changed", _png(fig)))
        plt.close(fig)
    return out


def render_html(c: Comparison) -> str:
    e = html.escape
    rows = "".join(
        f"<tr class='{'bad' if g.failed else 'good' if g.passed and not g.no_data else ''}'>"
        f"<td>{e(g.gate)}</td><td>{g.kind}</td><td>{g.pairs}</td>"
        f"<td>{_num(g.baseline).lstrip('+')}</td><td>{_num(g.candidate).lstrip('+')}</td>"
        f"<td>{_num(g.difference)}</td><td>{_num(g.lower)}</td><td>{_num(g.upper)}</td>"
        f"<td>{_num(g.margin, 0)}</td><td>{_num(g.p_value).lstrip('+')}</td>"
        f"<td>{e(outcome(g))}{e(f' ({g.no_data})') if g.no_data else ''}</td></tr>"
        for g in c.gates)
    worst = "".join(
        f"<tr><td>{e(str(w['request_id']))}</td><td>{e(', '.join(w['worse_on']))}</td>"  # type: ignore[arg-type]
        f"<td>{e(str(w['toxicity']))}</td><td>{e(str(w['cosine']))}</td>"
        f"<td>{e(str(w['prompt']))}</td><td>{e(str(w['baseline']))}</td>"
        f"<td>{e(str(w['candidate']))}</td></tr>" for w in c.worst)
    plots = "".join(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:image/png;base64,{png}'>"
                    for title, png in _plots(c))
    refused = "".join(f"<li>{e(line)}</li>" for line in rejected_lines(c.rejected, 200))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>driftwatch compare: {c.verdict}</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;max-width:28em}}
tr.bad{{background:#fdd}} tr.good{{background:#dfd}} .verdict{{font-size:1.4em}}</style>
</head><body>
<h1>driftwatch compare</h1>
<p class="verdict">Verdict: <b>{c.verdict}</b> ({c.pairs} pairs; unpaired: \
{len(c.unpaired_baseline)} baseline, {len(c.unpaired_candidate)} candidate; refused lines: \
{len(c.rejected)})</p>
<p>Each gate tests the per-pair difference candidate minus baseline (positive is worse): it
fails when the lower bound at alpha {c.alpha:g} is above 0, and passes when the upper bound
at {c.promote_alpha:g} is within its margin. embedding_drift is an MMD permutation test of
the two sets of answers (its difference is the MMD statistic).</p>
<h2>Gates</h2>
<table><tr><th>gate</th><th>kind</th><th>pairs</th><th>baseline</th><th>candidate</th>
<th>difference</th><th>lower</th><th>upper</th><th>margin</th><th>p</th><th>outcome</th></tr>
{rows}</table>
<h2>Worst regressions</h2>
<table><tr><th>request_id</th><th>worse on</th><th>toxicity (baseline, candidate)</th>
<th>cosine</th><th>prompt</th><th>baseline answer</th><th>candidate answer</th></tr>
{worst or '<tr><td colspan="7">none</td></tr>'}</table>
{plots}
{'<h2>Refused lines</h2><ul>' + refused + '</ul>' if refused else ''}
</body></html>
"""
