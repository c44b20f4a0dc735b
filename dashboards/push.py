"""Upload the generated dashboards to a Grafana server with grafana-client, idempotently:
the folder is found or created by uid, each dashboard is written by uid with overwrite."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from grafana_client import GrafanaApi
from grafana_client.client import GrafanaClientError, GrafanaException

from dashboards.build import GRAFANA_DIR


class PushError(RuntimeError):
    """A push that cannot go on; the message says what to fix (never the token)."""


def folder_uid(name: str) -> str:
    # Grafana uids: at most 40 characters of [a-zA-Z0-9_-]; derived from the name so that a
    # second push finds the folder the first one made.
    return re.sub(r"[^a-zA-Z0-9_-]+", "-", name.lower()).strip("-")[:40] or "driftwatch"


def push(url: str, token_env: str, folder: str = "driftwatch",
         source: Path = GRAFANA_DIR, timeout_s: float = 10.0) -> list[str]:
    """Push every dashboard under `source`; return their uids."""
    if not re.match(r"^https?://[^/?#\s]+", url):
        raise PushError(f"--url {url!r}: give Grafana's base URL, http:// or https:// and its "
                        "host, e.g. http://grafana:3000")
    token = os.environ.get(token_env)
    if not token:
        raise PushError(f"environment variable {token_env} is not set: put a Grafana service "
                        "account token in it (Administration > Service accounts)")
    boards = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(source.glob("*.json"))]
    if not boards:
        raise PushError(f"no dashboards in {source}: run `driftwatch dashboards build` first")
    api = GrafanaApi.from_url(url, credential=token, timeout=timeout_s)
    try:
        uid = _ensure_folder(api, folder)
        for board in boards:
            # Grafana assigns ids per instance; sending one would clash with another server's.
            board = {k: v for k, v in board.items() if k != "id"}
            saved = api.dashboard.update_dashboard(
                {"dashboard": board, "folderUid": uid, "overwrite": True,
                 "message": "driftwatch dashboards push"})
            if not isinstance(saved, dict) or saved.get("uid") != board["uid"]:
                raise PushError(f"{url} answered the save of dashboard {board['uid']!r} with "
                                f"{str(saved)[:200]}, not Grafana's answer (the dashboard's "
                                "uid): give --url Grafana's base URL, e.g. http://grafana:3000")
    except GrafanaException as exc:
        if exc.status_code in (401, 403):
            raise PushError(f"Grafana at {url} refused the token in {token_env} "
                            f"(HTTP {exc.status_code}): check that it is valid and may edit "
                            "dashboards and folders") from None
        raise PushError(f"Grafana at {url} answered: {exc.message}") from None
    except OSError as exc:  # the transport's errors (niquests'): refused, unresolvable, TLS
        raise PushError(f"cannot reach Grafana at {url}: {type(exc).__name__}: "
                        f"{str(exc)[:300]}") from None
    return [b["uid"] for b in boards]


def _ensure_folder(api: GrafanaApi, name: str) -> str:
    uid = folder_uid(name)
    try:
        api.folder.get_folder(uid)
    except GrafanaClientError as exc:
        if exc.status_code != 404:
            raise
        api.folder.create_folder(name, uid=uid)
    return uid
