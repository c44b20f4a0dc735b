"""Every PromQL expression in every dashboard and rule, run by a real Prometheus (with
alerts.yml loaded) scraping a real daemon that scores real traffic from a real broker."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dashboards.alert_rules import ALERTS, RECORDS
from dashboards.build import ALERTS_FILE, GRAFANA_DIR
from dashboards.grafana_json import substitute
from monitor.local import traffic
from monitor.local.broker import LocalBroker, free_port
from monitor.local.prometheus import LocalPrometheus
from tests.conftest import SECRET
from tests.support import (
    Daemon,
    QuietHandler,
    produce,
    read_topic,
    serve,
    wait_for,
    write_config,
)

# One worker runs them all: the module's daemon and Prometheus start once, not per worker.
pytestmark = [pytest.mark.broker, pytest.mark.timeout(600),
              pytest.mark.xdist_group("dashboard-queries")]

_LABEL_VALUES = re.compile(r"label_values\((.*),\s*(\w+)\)$")
TOXIC = "You are a stupid idiot and a worthless moron, shut up."
NEW_ERROR = "content_filter_v2"
RECEIVED: list[dict[str, Any]] = []  # webhook bodies the receiver answered 200
LIVE: dict[str, str] = {}  # the daemon's HTTP address
REVIEW_TOPIC, LABELS_TOPIC = "review-dashboards", "labels-dashboards"
REVIEWED: list[dict[str, Any]] = []  # what the review topic carried


def _review_and_label(bootstrap: str, workdir: Path, prometheus: LocalPrometheus) -> None:
    """A reviewer: reads the review topic, labels every record (an insult is toxic, the
    rest not), and waits for driftwatch to have read the labels."""
    written = (workdir / "review.jsonl").read_text().splitlines()
    REVIEWED.extend(json.loads(m.value) for m in
                    read_topic(bootstrap, REVIEW_TOPIC, 1, len(written)))
    labels = [json.dumps({"request_id": r["request_id"], "reviewer": "ana",
                          "label": "toxic" if r["response"] == TOXIC else "ok"}).encode()
              for r in REVIEWED]
    produce(bootstrap, LABELS_TOPIC, [(0, v, None) for v in [*labels, b"{not json"]])

    def stored() -> bool:
        got = prometheus.query('sum(driftwatch_review_labels_total{outcome="stored"})')
        return bool(got) and float(got[0]["value"][1]) == len(labels)
    wait_for(stored, 90, "every label stored", interval_s=1)
    wait_for(lambda: bool(prometheus.query("driftwatch_flag_precision")), 60,
             "the flags' measured precision", interval_s=1)


def _cases() -> list[tuple[str, str]]:
    cases: list[tuple[str, str]] = []
    for path in sorted(GRAFANA_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                cases.append((f"{board['uid']}/{panel['title']}/{t['refId']}", t["expr"]))
        for a in board["annotations"]["list"]:
            # An event, not a level: did it mark anything during the run (1 s steps, as the
            # run's data may span only seconds when queried)?
            cases.append((f"{board['uid']}/annotation/{a['name']}",
                          f"max_over_time(({a['expr']})[10m:1s])"))
        for v in board["templating"]["list"]:
            if m := _LABEL_VALUES.match(v.get("definition", "")):
                # label_values(selector, label) has data when the selector has that label.
                cases.append((f"{board['uid']}/variable/{v['name']}",
                              f"count by ({m.group(2)}) ({m.group(1)})"))
    for group in yaml.safe_load(ALERTS_FILE.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                cases.append((f"record/{rule['record']}", rule["record"]))
                cases.append((f"record-expr/{rule['record']}", rule["expr"]))
    cases += [(f"alert-signal/{a.alert}", a.signal) for a in ALERTS]
    return cases


CASES = _cases()


def _traffic() -> list[bytes]:
    """One model, stable and canary; some toxic answers; a topic shift halfway for drift."""
    mix = traffic.TrafficMix(models=("assistant-small",), canary_share=0.3,
                             hallucination_rate=0.3, error_rate=0.05)
    qa = traffic.load_examples(300, ("qa",))
    dialogue = traffic.load_examples(300, ("dialogue",))
    records = [*traffic.wire_records(260, seed=61, mix=mix, examples=qa),
               *traffic.wire_records(200, seed=62, mix=mix, examples=dialogue)]
    # One record in five, on both partitions: however the two are interleaved, every 100-record
    # window of a segment holds well over the rule's 5% (one in twelve, all on partition 0,
    # once left a window at 5% on a busy machine and the rule never fired).
    for r in records[1::5]:
        if r["status"] == "ok":
            r["response"] = TOXIC
    # A chat template 80 tokens longer, late: token-count mismatches.
    for r in records[-60:]:
        if r.get("prompt_tokens") is not None:
            r["prompt_tokens"] += 80
    # An error type no reference holds, late (every segment is armed by then), ten times.
    for r in records[-50::5]:
        r.update(status="error", error_type=NEW_ERROR, response="")
    # A shadow model answers every stable QA request with the insult: about 180 pairs, so
    # the paired gate shows it worse whatever the batches (60 pairs in one batch did not
    # always: at a margin of 0.02 the always-valid bound is still wide there).
    stable = [r for r in records[:260] if r["deployment"] == "stable"]
    shadows = [{**r, "deployment": "shadow", "model_version": "v3", "response": TOXIC}
               for r in stable]
    return [traffic.encode(r) for r in [*records[:260], *shadows, *records[260:]]]


def _receiver() -> tuple[ThreadingHTTPServer, str]:
    """Stands in for a webhook endpoint and Alertmanager: the first request fails."""
    answered: list[int] = []

    class Handler(QuietHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            self.reply(500 if not answered else 200)
            if answered and self.path == "/hook":
                RECEIVED.append(json.loads(body))
            answered.append(1)

    return serve(Handler)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPrometheus]:
    workdir = tmp_path_factory.mktemp("dashboard-queries")
    server, receiver = _receiver()
    with LocalBroker(log_file=workdir / "tansu.log") as broker:
        topic, dlq = "traffic-dashboards", "dlq-dashboards"
        broker.create_topics([(topic, 2), (dlq, 1), (REVIEW_TOPIC, 1), (LABELS_TOPIC, 1)])
        payloads = _traffic()
        bad = [p for p, _ in traffic.malformed_payloads(10, seed=3)]
        produce(broker.bootstrap, topic, [(i % 2, p, None) for i, p in enumerate(payloads)]
                + [(0, p, None) for p in bad])
        port = free_port()
        config = write_config(
            workdir / "dw.yaml", broker.bootstrap, port,
            kafka={"topic": topic, "group_id": "dashboards", "dead_letter_topic": dlq},
            scorers=["latency", "tokens", "cost", "status", "length", "toxicity",
                     "groundedness", "sanity", "tokenization"],
            scoring={"tokenizer": {"reference_records": 40}},
            drift={"enabled": True, "reference": {"warmup_records": 50,
                                                  "store": str(workdir / "refs")},
                   # Inline: armed before the next batch, so every drift series has data.
                   "embedding": {"ert": 100, "window_size": 20, "n_features": 64,
                                 "n_bootstraps": 500, "calibration": "inline"},
                   "features": {"window_size": 50},
                   "new_error_classes": {"enabled": True}},
            rules=[{"name": "toxic-share", "severity": "warning", "actions": ["hook", "pager"],
                    "when": {"kind": "rate", "signal": "toxic", "above": 0.05,
                             "window_records": 100, "min_records": 20}},
                   {"name": "new-error-class", "actions": ["hook"],
                    "when": {"kind": "drift", "detector": "new_error_class"}},
                   {"name": "toxic-labelled", "actions": ["hook"],
                    "when": {"kind": "labelled", "flag": "toxic", "above": 0.05,
                             "min_labels": 10}}],
            # The receiver fails the first delivery, so failures and retries have data too.
            actions={"hook": {"type": "webhook", "url": f"{receiver}/hook",
                              "secret_env": "DW_DASHBOARD_TEST_SECRET"},
                     "pager": {"type": "alertmanager", "url": receiver}},
            canary={"enabled": True, "min_records": 20},
            shadow={"enabled": True, "min_pairs": 20, "window_seconds": 86_400,
                    "actions": ["hook"]},
            review={"enabled": True, "topic": REVIEW_TOPIC, "labels_topic": LABELS_TOPIC,
                    "file": str(workdir / "review.jsonl"),
                    "store": str(workdir / "review.sqlite3"), "uniform_rate": 0.3,
                    "borderline_rate": 1.0, "max_per_hour": 100_000},
            outbox={"path": str(workdir / "outbox.sqlite3")},
        )
        os.environ["DW_DASHBOARD_TEST_SECRET"] = SECRET
        daemon = Daemon(config, port, workdir / "daemon.log")
        try:
            daemon.wait_ready(timeout_s=120)
            prometheus = LocalPrometheus([f"127.0.0.1:{port}"], workdir, (ALERTS_FILE,))

            def scored_all() -> bool:
                daemon.check_alive()
                got = prometheus.query('sum(driftwatch_records_total{outcome="scored"})')
                return bool(got) and float(got[0]["value"][1]) == len(payloads)
            wait_for(scored_all, 300, "Prometheus to see every record scored", interval_s=1)
            # A series born at its final value (every record scored between two scrapes)
            # has a rate only from its second scrape: wait for each recording rule, and for
            # the scored rate the throughput panels read, not just for the first to appear.
            recorded = [r.record for r in RECORDS]
            recorded.append('driftwatch:records:rate5m{outcome="scored"}')
            wait_for(lambda: all(prometheus.query(q) for q in recorded), 60,
                     "every recording rule to be evaluated with data", interval_s=1)
            wait_for(lambda: bool(prometheus.query("driftwatch_drift_detections_total")), 90,
                     "a drift detection on the topic shift", interval_s=1)
            wait_for(lambda: bool(prometheus.query('ALERTS{alertname=~"Driftwatch.*"}')), 90,
                     "the drift alert", interval_s=1)
            wait_for(lambda: bool(prometheus.query("driftwatch_outbox_delivery_seconds_count")),
                     90, "a delivery after a failed attempt", interval_s=1)
            wait_for(lambda: sum(b["type"] == "drift.new_error_class" for b in RECEIVED)
                     >= 2, 90, "the new error class's webhooks", interval_s=0.5)
            wait_for(lambda: any(b["type"] == "shadow.regressed" for b in RECEIVED), 90,
                     "the shadow's verdict webhook", interval_s=0.5)
            LIVE["metrics"] = f"http://127.0.0.1:{port}"
            _review_and_label(broker.bootstrap, workdir, prometheus)
            # Traffic goes on: the next batches' rules read the label-corrected rate.
            produce(broker.bootstrap, topic, [(0, p, None) for p in payloads[:20]])
            wait_for(lambda: any(b["data"]["rule"] == "toxic-labelled" for b in RECEIVED
                                 if b["type"] == "quality.regressed"), 90,
                     "the labelled rule's webhook", interval_s=0.5)
            yield prometheus
            render_to = os.environ.get("DRIFTWATCH_RENDER_TO")
            if render_to:  # how dashboards/overview.png was made from this run's data
                from dashboards.render import render

                render(prometheus.url, Path(render_to), minutes=5)
            prometheus.stop()
        finally:
            daemon.kill()
            server.shutdown()
            os.environ.pop("DW_DASHBOARD_TEST_SECRET", None)


@pytest.mark.parametrize(("where", "expr"), CASES, ids=[c[0] for c in CASES])
def test_expression_evaluates_and_returns_data(live: LocalPrometheus, where: str,
                                               expr: str) -> None:
    assert live.query(substitute(expr)), f"{where}: no data for {substitute(expr)}"


def test_every_rule_evaluates_without_error(live: LocalPrometheus) -> None:
    rules = live.rules()
    assert len(rules) == sum(len(g["rules"]) for g in
                             yaml.safe_load(ALERTS_FILE.read_text())["groups"])
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []


def test_drift_detections_fire_the_alert(live: LocalPrometheus) -> None:
    firing = live.query('ALERTS{alertname="DriftwatchDriftDetected"}')
    assert firing and all(a["metric"]["severity"] == "warning" for a in firing)


def test_a_new_error_class_is_counted_once_per_segment_and_sent_as_an_event(
        live: LocalPrometheus) -> None:
    # Ten records of the class, spread over both segments: each announces it once (rare
    # error types the 50-record references missed are new too, and counted alike).
    counted = live.query("driftwatch_drift_new_error_classes_total")
    assert {c["metric"]["deployment"] for c in counted} >= {"stable", "canary"}, counted
    sent = [b["data"] for b in RECEIVED if b["type"] == "drift.new_error_class"]
    ours = [d for d in sent if d["details"]["error_class"] == f"error:{NEW_ERROR}"]
    assert sorted(d["segment"]["deployment"] for d in ours) == ["canary", "stable"], sent
    assert all(d["details"]["request_ids"] for d in ours)
    # Each class once per segment: as many events as classes counted, none twice.
    assert len(sent) == sum(float(c["value"][1]) for c in counted), sent
    classes = [(d["segment"]["deployment"], d["details"]["error_class"]) for d in sent]
    assert len(set(classes)) == len(classes), classes


def test_a_worse_shadow_is_regressed_by_its_paired_answers_and_said_on_get_shadow(
        live: LocalPrometheus) -> None:
    verdict = live.query('driftwatch_shadow_verdict{verdict="regressed"}')
    assert [float(v["value"][1]) for v in verdict] == [1.0], verdict
    status = httpx.get(f"{LIVE['metrics']}/shadow", timeout=10).json()
    model = status["models"]["assistant-small"]
    # An insult is toxic and not supported by the context: one hard gate or both.
    assert model["verdict"] == "regressed" and model["failed"]
    assert set(model["failed"]) <= {"toxic", "ungrounded"}, model
    assert model["pairs"] >= 20 and model["unpaired"] == 0
    # The stable answers that were the insult already are the same text; the rest differ.
    assert 0.5 < model["changed_share"] < 1
    sent = [b["data"] for b in RECEIVED if b["type"] == "shadow.regressed"]
    assert len(sent) == 1 and sent[0]["segment"] == {"model": "assistant-small",
                                                     "deployment": "shadow"}
    lowers = {k: v for k, v in sent[0]["evidence"].items() if k.endswith(".lower")}
    assert lowers and all(v > 0 for v in lowers.values()), sent  # the gates shown worse


def test_the_review_queue_sends_records_with_reasons_and_labels_measure_the_flags(
        live: LocalPrometheus) -> None:
    reasons = {reason for r in REVIEWED for reason in r["reasons"]}
    assert REVIEWED and {"uniform", "borderline"} & reasons, reasons
    assert all(r["prompt"] is not None and "toxic" in r["flags"] for r in REVIEWED)
    # The insult is flagged toxic and labelled toxic; benign answers are labelled ok: the
    # measured precision is what the labels say of the flags.
    # Nearly every flagged record is the insult, so the flags' precision is high.
    precision = live.query('driftwatch_flag_precision{flag="toxic"}')
    assert precision and all(0.5 < float(p["value"][1]) <= 1 for p in precision), precision
    labels = live.query('sum(driftwatch_flag_labels{flag="toxic"})')
    assert 0 < float(labels[0]["value"][1]) <= len(REVIEWED)
    invalid = live.query('driftwatch_review_labels_total{outcome="invalid"}')
    assert [float(v["value"][1]) for v in invalid] == [1.0]  # the one that was not JSON
    fired = [b["data"] for b in RECEIVED if b["type"] == "quality.regressed"
             and b["data"]["rule"] == "toxic-labelled"]
    assert fired and fired[0]["evidence"]["corrected_rate"] > 0.05
