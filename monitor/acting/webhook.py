"""Webhook deliveries signed per Standard Webhooks v1, and what each answer means for retries.

The body is rendered from the stored decision, so every retry carries the same id and body;
only webhook-timestamp and the signature are made afresh for each attempt.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
from standardwebhooks import Webhook

from monitor.acting import bounded_post
from monitor.config.acting import WebhookAction, shown_url
from monitor.types import Decision, rfc3339

THROTTLED = frozenset({429, 502, 503, 504})


class WebhookSecretError(ValueError):
    """A webhook action's signing secret is missing or malformed (never shows the secret)."""


def load_secret(name: str, action: WebhookAction) -> str:
    """The action's `whsec_<base64>` secret from its secret_file, else its secret_env."""
    if action.secret_file is not None:
        where = f"secret_file {action.secret_file}"
        try:
            secret = action.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise WebhookSecretError(f"action {name!r}: cannot read {where}: "
                                     f"{exc.strerror or exc}") from None
    elif action.secret_env is not None:
        where = f"environment variable {action.secret_env}"
        secret = os.environ.get(action.secret_env, "").strip()
        if not secret:
            raise WebhookSecretError(f"action {name!r}: {where} is not set; set it to the "
                                     "endpoint's signing secret (whsec_<base64>)")
    else:
        raise WebhookSecretError(f"action {name!r}: set secret_env or secret_file")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not secret.startswith("whsec_") or not key:
        raise WebhookSecretError(f"action {name!r}: the secret in {where} is not of the form "
                                 "whsec_<base64 of at least one byte>")
    return secret


def body(created: float, decision: Decision) -> bytes:
    """The Standard Webhooks payload {type, timestamp, data}; same bytes on every attempt."""
    data = {
        "rule": decision.rule, "severity": decision.severity, "status": decision.status,
        "segment": decision.segment, "evidence": decision.evidence,
        "summary": decision.summary, "details": decision.details, "at": rfc3339(decision.at),
    }
    payload = {"type": decision.event_type, "timestamp": rfc3339(created), "data": data}
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


@dataclass(frozen=True)
class Outcome:
    """What one webhook attempt came to: delivered, retry (maybe after a delay) or disabled."""

    kind: Literal["delivered", "retry", "disabled"]
    error: str = ""
    retry_after: float | None = None  # seconds, from a throttling answer's Retry-After


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 10.2.3); None if unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


class WebhookSender:
    """Posts one signed delivery and classifies the answer; one httpx.Client for all."""

    def __init__(self, client: httpx.Client) -> None:
        self._client = client
        self._signers: dict[str, Webhook] = {}

    def close(self) -> None:
        self._client.close()

    def add(self, name: str, action: WebhookAction) -> None:
        self._signers[name] = Webhook(load_secret(name, action))

    def send(self, name: str, action: WebhookAction, event_id: str, payload: bytes) -> Outcome:
        signed_at = time.time()  # the receiver checks it against its own clock
        signature = self._signers[name].sign(event_id, datetime.fromtimestamp(signed_at, UTC),
                                             payload.decode())
        headers = {"content-type": "application/json", "webhook-id": event_id,
                   "webhook-timestamp": str(int(signed_at)), "webhook-signature": signature}
        try:
            response = bounded_post.post(self._client, action.url, payload, headers,
                                         action.timeout_seconds)
        except httpx.TimeoutException as exc:
            return Outcome("retry", f"timeout after {action.timeout_seconds:g}s "
                           f"({type(exc).__name__})")
        except httpx.TransportError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}"[:500])
        status = response.status
        if 200 <= status < 300:
            return Outcome("delivered")
        if status == 410:
            return Outcome("disabled", "HTTP 410 Gone: the endpoint asked to stop deliveries")
        if status in THROTTLED:
            after = retry_after_seconds(response.headers.get("retry-after"), time.time())
            return Outcome("retry", f"HTTP {status}", after)
        if 300 <= status < 400 and (location := response.headers.get("location")):
            # Not followed: the signed event would go to a URL the config does not name
            # (and a 301 or 302 may turn the POST into a GET). Said, so that it is fixed.
            return Outcome("retry", f"HTTP {status}: redirected to {shown_url(location)}; "
                                    "set the action's url to where it points")
        return Outcome("retry", f"HTTP {status}")
