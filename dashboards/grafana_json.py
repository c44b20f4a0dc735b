"""A small typed model of the Grafana dashboard JSON we generate, and its rendering.
Also the one place where template variables are substituted to get runnable PromQL."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
SEGMENT_VARIABLES: tuple[str, ...] = ("model", "model_version", "deployment")
# Every segmented query filters by the template variables the same way.
SEG = ", ".join(f'{v}=~"${v}"' for v in SEGMENT_VARIABLES)
RATE = "$__rate_interval"
# What the variables mean when "All" is selected, and Grafana's interval macros for queries
# run outside Grafana (tests, `driftwatch dashboards render`).
ALL = ".*"
MACROS = {"$__rate_interval": "5m", "$__interval": "15s", "$__range": "1h"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")

PanelKind = Literal["timeseries", "stat", "table", "heatmap", "state-timeline"]


@dataclass(frozen=True)
class Query:
    """One PromQL query of a panel, with its legend and how it is shown."""

    expr: str
    legend: str = ""
    instant: bool = False  # tables and stats show the latest value, not a range
    heatmap: bool = False  # cumulative buckets, shown as a heatmap


@dataclass(frozen=True)
class Panel:
    """A Grafana panel: its title, queries, kind, unit and size on the grid."""

    title: str
    queries: tuple[Query, ...]
    kind: PanelKind = "timeseries"
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    stacked: bool = False


@dataclass(frozen=True)
class Row:
    """A row header on the dashboard; the panels after it start on a new line."""

    title: str


@dataclass(frozen=True)
class Annotation:
    """A Grafana annotation drawn from a PromQL query."""

    name: str
    expr: str
    title: str
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dashboard:
    """A Grafana dashboard: panels and rows in order, and its annotations."""

    uid: str
    title: str
    description: str
    items: tuple[Panel | Row, ...]
    annotations: tuple[Annotation, ...] = ()

    def panels(self) -> Iterator[Panel]:
        return (p for p in self.items if isinstance(p, Panel))


def substitute(expr: str, values: Mapping[str, str] | None = None) -> str:
    """PromQL a Prometheus can run: `$model` -> `.*` (All), `$__rate_interval` -> 5m."""
    for macro, value in MACROS.items():
        expr = expr.replace(macro, value)
    chosen = values or {}
    return _VARIABLE.sub(lambda m: chosen.get(m.group(1) or m.group(2), ALL), expr)


def variable_queries(metric: str) -> dict[str, str]:
    """label_values() queries for the segment variables, each narrowed by the ones before it."""
    out: dict[str, str] = {}
    for i, name in enumerate(SEGMENT_VARIABLES):
        before = ", ".join(f'{v}=~"${v}"' for v in SEGMENT_VARIABLES[:i])
        out[name] = f"label_values({metric}{{{before}}}, {name})" if before else (
            f"label_values({metric}, {name})")
    return out


def to_json(board: Dashboard, variable_metric: str) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schemaVersion 39), ready for provisioning."""
    return {
        "uid": board.uid,
        "title": board.title,
        "description": board.description,
        "tags": ["driftwatch"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": [_annotation(a) for a in board.annotations]},
        "templating": {"list": _variables(variable_metric)},
        "panels": list(_layout(board.items)),
        "links": [{"type": "dashboards", "tags": ["driftwatch"], "asDropdown": True,
                   "title": "driftwatch", "includeVars": True, "keepTime": True}],
    }


def _variables(metric: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{
        "name": "datasource", "label": "Data source", "type": "datasource",
        "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
        "includeAll": False, "multi": False,
    }]
    for name, query in variable_queries(metric).items():
        out.append({
            "name": name, "label": name.replace("_", " "), "type": "query",
            "datasource": DATASOURCE, "definition": query,
            "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
            "multi": True, "includeAll": True, "allValue": ALL,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "refresh": 2, "sort": 1, "hide": 0, "regex": "",
        })
    return out


def _annotation(a: Annotation) -> dict[str, Any]:
    return {
        "name": a.name, "datasource": DATASOURCE, "enable": True, "expr": a.expr,
        "iconColor": "orange", "step": "1m", "titleFormat": a.title,
        "tagKeys": ",".join(a.tags), "useValueForTime": False,
    }


def _layout(items: tuple[Panel | Row, ...]) -> Iterator[dict[str, Any]]:
    # Left to right on Grafana's 24-column grid; a row starts on a fresh line.
    x = y = line = 0
    for pid, item in enumerate(items, start=1):
        if isinstance(item, Row):
            y += line
            x, line = 0, 0
            yield {"id": pid, "type": "row", "title": item.title, "collapsed": False,
                   "gridPos": {"x": 0, "y": y, "w": 24, "h": 1}, "panels": []}
            y += 1
            continue
        if x + item.width > 24:
            x, y, line = 0, y + line, 0
        yield _panel(item, pid, {"x": x, "y": y, "w": item.width, "h": item.height})
        x += item.width
        line = max(line, item.height)


def _panel(p: Panel, pid: int, grid: dict[str, int]) -> dict[str, Any]:
    targets = [{
        "refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr,
        "legendFormat": q.legend or "__auto", "range": not q.instant, "instant": q.instant,
        **({"format": "heatmap"} if q.heatmap else {}),
        **({"format": "table"} if p.kind == "table" else {}),
    } for i, q in enumerate(p.queries)]
    custom: dict[str, Any] = {}
    if p.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if p.stacked else "none", "group": "A"}}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom",
                                          "showLegend": True},
                               "tooltip": {"mode": "multi", "sort": "desc"}}
    if p.kind == "heatmap":
        options = {"calculate": False, "yAxis": {"unit": p.unit},
                   "cellGap": 1, "color": {"scheme": "Oranges", "mode": "scheme"}}
    return {
        "id": pid, "type": p.kind, "title": p.title, "description": p.description,
        "datasource": DATASOURCE, "gridPos": grid, "targets": targets,
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom}, "overrides": []},
        "options": options,
    }
