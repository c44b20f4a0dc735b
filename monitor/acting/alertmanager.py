"""Alerts pushed to Alertmanager's v2 API with Prometheus' semantics.

Firing alerts are re-sent every `resend_seconds` with endsAt 4x that ahead (so a dead daemon's
alerts expire on their own); a resolved alert is re-sent for `resolved_for_seconds`, then dropped.
"""

from __future__ import annotations

import json

import httpx

from monitor.acting import bounded_post
from monitor.acting.outbox import StoredAlert
from monitor.config.acting import AlertmanagerAction
from monitor.types import rfc3339


def payload(alerts: list[StoredAlert], action: AlertmanagerAction, generator_url: str,
            now: float) -> bytes:
    out = []
    for a in alerts:
        ends_at = now + 4 * action.resend_seconds if a.ends_at is None else a.ends_at
        out.append({"labels": a.labels, "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at), "endsAt": rfc3339(ends_at),
                    "generatorURL": action.generator_url or generator_url})
    return json.dumps(out, separators=(",", ":")).encode()


def expired(alert: StoredAlert, action: AlertmanagerAction, now: float) -> bool:
    """A resolved alert that has been re-sent long enough."""
    return alert.ends_at is not None and now >= alert.ends_at + action.resolved_for_seconds


def push(client: httpx.Client, action: AlertmanagerAction, body: bytes) -> str | None:
    """POST the alerts; None on success, else what went wrong (the caller retries)."""
    url = action.url.rstrip("/") + "/api/v2/alerts"
    try:
        response = bounded_post.post(client, url, body, {"content-type": "application/json"},
                                     action.timeout_seconds)
    except httpx.TimeoutException:
        return f"timeout after {action.timeout_seconds:g}s"
    except httpx.TransportError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= response.status < 300:
        return None
    # Quoted (repr): the body is the endpoint's text, logged and shown by driftwatch events,
    # where its line breaks would forge log lines.
    return f"HTTP {response.status}: {response.text[:200]!r}"
