"""A picture of the main panels for the README: their PromQL run against a real Prometheus
(query_range) and drawn with matplotlib, since no Grafana server runs here."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from dashboards.boards import DRIFT, OPERATIONS, OVERVIEW, QUALITY
from dashboards.grafana_json import Dashboard, Panel, substitute

# (dashboard, panel title): the panels that tell the story at a glance.
MAIN_PANELS: tuple[tuple[Dashboard, str], ...] = (
    (OVERVIEW, "Throughput by outcome"),
    (OVERVIEW, "Dead letters by reason"),
    (QUALITY, "Toxic share"),
    (QUALITY, "Ungrounded share"),
    (DRIFT, "MMD statistic vs threshold"),
    (OPERATIONS, "Request latency p50 / p95 / p99"),
)
_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@dataclass(frozen=True)
class Series:
    """One series of a query_range answer: its legend name, times and values."""

    name: str
    times: tuple[float, ...]
    values: tuple[float, ...]


def panel(board: Dashboard, title: str) -> Panel:
    for p in board.panels():
        if p.title == title:
            return p
    raise KeyError(f"{board.title} has no panel {title!r}")


class RenderError(RuntimeError):
    """The Prometheus to plot from cannot be asked, or does not answer as Prometheus does."""


def query_range(prometheus: str, p: Panel, start: float, end: float, step_s: float
                ) -> list[Series]:
    out: list[Series] = []
    url = f"{prometheus.rstrip('/')}/api/v1/query_range"
    for q in p.queries:
        try:
            answer = httpx.get(url, timeout=10, params={
                "query": substitute(q.expr), "start": start, "end": end, "step": step_s})
            reply = answer.json()
        except httpx.HTTPError as exc:  # refused, unresolvable, timed out, not http(s)://
            raise RenderError(f"cannot reach Prometheus at {prometheus}: {exc}") from None
        except ValueError:  # a page, not the API's JSON: not Prometheus's base URL
            raise RenderError(f"{url} answered HTTP {answer.status_code} without Prometheus's "
                              "JSON: give --prometheus its base URL, e.g. "
                              "http://prometheus:9090") from None
        if not isinstance(reply, dict) or reply.get("status") != "success":
            error = reply.get("error") if isinstance(reply, dict) else reply
            raise RenderError(f"Prometheus rejected {q.expr!r}: {error}")
        for r in reply["data"]["result"]:
            name = _LABEL.sub(lambda m, r=r: r["metric"].get(m.group(1), ""), q.legend)
            points = [(float(t), float(v)) for t, v in r["values"] if math.isfinite(float(v))]
            out.append(Series(" ".join(name.split()) or str(r["metric"]),
                              tuple(t for t, _ in points), tuple(v for _, v in points)))
    return out


def render(prometheus: str, output: Path, minutes: float = 15.0) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display here or in CI
    import matplotlib.pyplot as plt

    end = time.time()
    start = end - minutes * 60
    step = max(1.0, (end - start) / 300)
    cols = 2
    rows = math.ceil(len(MAIN_PANELS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 3.2 * rows), squeeze=False)
    for ax, (board, title) in zip(axes.flat, MAIN_PANELS, strict=False):
        p = panel(board, title)
        for s in query_range(prometheus, p, start, end, step):
            ax.plot([t - end for t in s.times], s.values, label=s.name[:40], linewidth=1.2)
        ax.set_title(f"{board.title.split(' / ')[-1]}: {title}", fontsize=10, loc="left")
        ax.set_xlabel("seconds before now", fontsize=8)
        ax.set_ylabel(p.unit, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, loc="upper left")
    for ax in axes.flat[len(MAIN_PANELS):]:
        ax.set_visible(False)
    fig.suptitle("driftwatch: main panels, queried from Prometheus", fontsize=12)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    print(f"wrote {output}")
    return 0


def render_demo(output: Path, minutes: float, rate: float) -> int:
    """Regenerate the README picture from scratch: the demo's broker, traffic and daemon, a
    real Prometheus with the shipped rules scraping it for `minutes`, then `render`."""
    import tempfile

    from dashboards.build import ALERTS_FILE
    from monitor.local.demo import demo_stack
    from monitor.local.prometheus import LocalPrometheus

    with demo_stack(rate, 0) as stack, tempfile.TemporaryDirectory() as tmp:
        prometheus = LocalPrometheus([f"127.0.0.1:{stack.port}"], Path(tmp), (ALERTS_FILE,),
                                     interval_s=2.0)
        try:
            print(f"running the demo for {minutes:g} minutes, scraped by {prometheus.url} ...")
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                if not stack.daemon.is_alive():
                    raise RuntimeError("the daemon thread stopped; see the log above")
                time.sleep(1.0)
            return render(prometheus.url, output, minutes)
        finally:
            prometheus.stop()
