"""kill -9 at random points of a 50,000-record run, three times, then a run to the end, through
`driftwatch chaos kill9`'s scenario: every request_id scored at least once, dead letters exactly
the invalid messages, no decision lost between the outbox and the webhook receiver, and
duplicate deliveries carry one webhook-id."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaos.scenarios import kill9

pytestmark = [pytest.mark.broker, pytest.mark.timeout(600)]


def test_kill_9_three_times_loses_nothing(tmp_path: Path) -> None:
    report = kill9(tmp_path, records=50_000, kills=3, invalid=500, seed=11)
    assert report.ok, f"{report.checks} {report.figures}"  # a str: shown in full
    f = report.figures
    assert f["messages"] == 50_500 and f["dead letters"] >= 500
    assert f["scorings"] >= 50_000  # at least once; measured: ~16,000 scored twice
    assert f["decisions with a webhook"] >= 10  # measured: 32
    # The flaky receiver forced retries, all under the decisions' own ids.
    assert f["webhook requests"] > f["distinct webhook-ids"] == f["decisions with a webhook"]
