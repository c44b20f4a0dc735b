"""The committed dashboards: fresh against their Python definitions, every panel on the
datasource variable, and every metric they query exported by monitor/telemetry/metrics.py
or recorded."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client import REGISTRY

import monitor.telemetry.metrics  # noqa: F401  (declares every exported metric in REGISTRY)
from dashboards.build import ALERTS_FILE, GRAFANA_DIR, build, stale
from dashboards.grafana_json import SEGMENT_VARIABLES, substitute

# Every driftwatch metric and recording rule starts with driftwatch; label values (quoted) are
# removed first, so job="driftwatch" is not taken for a name.
_NAME = re.compile(r"(?<![\w:])(driftwatch[\w:]*|ALERTS)(?![\w:])")


def _exported() -> set[str]:
    # Family names drop the suffixes (_total, _bucket...) that samples and queries carry.
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in
                     ("", "_total", "_bucket", "_count", "_sum", "_created", "_info"))
    return names


def _boards() -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(GRAFANA_DIR.glob("*.json"))]


def _exprs(board: dict) -> list[str]:
    out = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    return out + [a["expr"] for a in board["annotations"]["list"]]


def metric_names(expr: str) -> set[str]:
    return set(_NAME.findall(re.sub(r'"[^"]*"', '""', substitute(expr))))


def test_committed_files_are_fresh() -> None:
    assert stale() == [], "run `driftwatch dashboards build` and commit the result"
    assert build(check=True) == 0


def test_five_dashboards_with_segment_and_datasource_variables() -> None:
    boards = _boards()
    assert {b["title"].split(" / ")[1] for b in boards} == {
        "Overview", "Drift", "Quality", "Canary", "Operations"}
    for board in boards:
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in SEGMENT_VARIABLES:
            v = variables[name]
            assert v["multi"] and v["includeAll"] and v["allValue"] == ".*", (board["uid"], name)
            assert v["definition"].startswith("label_values(") and name in v["definition"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    for board in _boards():
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (
                board["uid"], panel["title"])
            assert panel["targets"], (board["uid"], panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
        for annotation in board["annotations"]["list"]:
            assert annotation["datasource"]["uid"] == "${datasource}"


def test_every_metric_queried_is_exported_or_recorded() -> None:
    rules = yaml.safe_load(ALERTS_FILE.read_text())["groups"]
    recorded = {r["record"] for g in rules for r in g["rules"] if "record" in r}
    known = _exported() | recorded | {"ALERTS", "up"}
    exprs = [e for b in _boards() for e in _exprs(b)]
    exprs += [r["expr"] for g in rules for r in g["rules"]]
    used = set().union(*(metric_names(e) for e in exprs))
    assert "driftwatch_records_total" in used and "driftwatch:toxic_rate:5m" in used
    assert used - known == set()
    assert "driftwatch_recods_total" not in known  # a misspelt name would be caught


def test_metric_names_are_found_in_an_expression() -> None:
    expr = ('histogram_quantile(0.5, sum by (le, model) (rate(driftwatch_toxicity_score_bucket'
            '{field="response", model=~"$model"}[$__rate_interval]))) / ignoring (flag) '
            "group_left sum(driftwatch:toxic_rate:5m) or vector(0)")
    assert metric_names(expr) == {"driftwatch_toxicity_score_bucket", "driftwatch:toxic_rate:5m"}
    assert metric_names('driftwatch_recods_total{job="driftwatch"} > 0') == {
        "driftwatch_recods_total"}
