"""One POST whose answer is bounded in time and size: its status, headers and at most the
first `BODY_KEPT` bytes of its body, read within the request's timeout.

httpx's timeout bounds each read, not the exchange: an endpoint that answers and then streams
a body without end (an event stream, a download behind a mistyped URL) kept `client.post`
reading forever, its delivery thread held and the body piling up in memory.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx

BODY_KEPT = 4_096  # enough for an error message; the status alone says what happened


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back: the status, the headers and the start of the body."""

    status: int
    headers: httpx.Headers
    body: bytes  # the body's first bytes, as sent (identity encoding asked for)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def post(client: httpx.Client, url: str, content: bytes, headers: Mapping[str, str],
         timeout_s: float) -> Answer:
    """POST `content`; raises httpx's TimeoutException or TransportError as `client.post`
    does. Once the status is in, the body is read only while it is short and the timeout
    lasts: an answer cut there closes its connection, so its rest is never read."""
    deadline = time.monotonic() + timeout_s
    # Uncompressed, so the bytes kept are the text, and a small compressed chunk cannot
    # inflate to megabytes.
    sent = {**headers, "accept-encoding": "identity"}
    with client.stream("POST", url, content=content, headers=sent, timeout=timeout_s) as response:
        body = bytearray()
        for chunk in response.iter_raw():
            body += chunk
            if len(body) >= BODY_KEPT or time.monotonic() >= deadline:
                break
    return Answer(response.status_code, response.headers, bytes(body[:BODY_KEPT]))
