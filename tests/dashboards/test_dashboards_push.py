"""`driftwatch dashboards push` against a local stand-in for the Grafana HTTP API: the bodies
Grafana documents, the bearer token, idempotent re-pushes, and clear auth errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dashboards.build import GRAFANA_DIR
from dashboards.push import PushError, push
from monitor.cli import main

TOKEN = "glsa_secret-token-value"


class FakeGrafana(ThreadingHTTPServer):
    """GET/POST /api/folders and POST /api/dashboards/db, as Grafana 10/11 answer them."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = TOKEN
        self.folders: dict[str, dict] = {}
        self.dashboards: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeGrafana

    def log_message(self, *args: object) -> None:
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((method, self.path, body, auth))
        if auth != f"Bearer {self.server.token}":
            return self._reply(401, {"message": "Unauthorized"})
        if method == "GET" and self.path.startswith("/api/folders/"):
            uid = self.path.rsplit("/", 1)[1]
            if uid in self.server.folders:
                return self._reply(200, self.server.folders[uid])
            return self._reply(404, {"message": "folder not found"})
        if method == "POST" and self.path == "/api/folders":
            assert body is not None
            if body["uid"] in self.server.folders:
                return self._reply(409, {"message": "a folder with that uid already exists"})
            self.server.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"]}
            return self._reply(200, self.server.folders[body["uid"]])
        if method == "POST" and self.path == "/api/dashboards/db":
            assert body is not None
            uid = body["dashboard"]["uid"]
            if uid in self.server.dashboards and not body.get("overwrite"):
                return self._reply(412, {"status": "name-exists", "message": "exists"})
            if body.get("folderUid") not in self.server.folders:
                return self._reply(400, {"message": "folder not found"})
            version = self.server.dashboards.get(uid, {}).get("version", 0) + 1
            self.server.dashboards[uid] = {**body, "version": version}
            return self._reply(200, {"uid": uid, "status": "success", "version": version})
        return self._reply(404, {"message": "not found"})

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    server = FakeGrafana()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _push(grafana: FakeGrafana, *extra: str) -> int:
    return main(["dashboards", "push", "--url", grafana.url, "--token-env", "GRAFANA_TOKEN",
                 *extra])


def test_push_creates_the_folder_and_writes_every_dashboard_by_uid(
        grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert _push(grafana, "--folder", "LLM Monitoring") == 0
    assert grafana.folders == {"llm-monitoring": {"uid": "llm-monitoring",
                                                  "title": "LLM Monitoring"}}
    uids = {json.loads(p.read_text())["uid"] for p in GRAFANA_DIR.glob("*.json")}
    assert set(grafana.dashboards) == uids and len(uids) == 5
    for sent in grafana.dashboards.values():
        assert sent["folderUid"] == "llm-monitoring" and sent["overwrite"] is True
        assert "id" not in sent["dashboard"]  # ids are per Grafana instance
        committed = json.loads((GRAFANA_DIR / f"{sent['dashboard']['uid']}.json").read_text())
        assert sent["dashboard"] == {k: v for k, v in committed.items() if k != "id"}
    assert all(auth == f"Bearer {TOKEN}" for *_, auth in grafana.requests)
    out = capsys.readouterr()
    assert "pushed 5 dashboards" in out.out and TOKEN not in out.out + out.err


def test_a_second_push_overwrites_instead_of_duplicating(
        grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    assert _push(grafana) == 0
    assert _push(grafana) == 0
    assert list(grafana.folders) == ["driftwatch"]  # found by uid, not created twice
    assert len(grafana.dashboards) == 5
    assert all(d["version"] == 2 for d in grafana.dashboards.values())
    creates = [r for r in grafana.requests if r[:2] == ("POST", "/api/folders")]
    assert len(creates) == 1


def test_a_rejected_token_is_a_clear_error_naming_the_variable(
        grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("GRAFANA_TOKEN", "glsa_wrong")
    assert _push(grafana) == 1
    err = capsys.readouterr().err
    assert "GRAFANA_TOKEN" in err and "401" in err and "glsa_wrong" not in err
    assert grafana.dashboards == {}


def test_a_missing_token_variable_is_a_clear_error(
        grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("GRAFANA_TOKEN", raising=False)
    assert _push(grafana) == 1
    assert "GRAFANA_TOKEN is not set" in capsys.readouterr().err
    assert grafana.requests == []


def test_a_grafana_out_of_reach_or_a_url_without_scheme_is_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Both were tracebacks from grafana-client's transport."""
    import socket

    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        assert main(["dashboards", "push", "--url", url, "--token-env", "GRAFANA_TOKEN"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"driftwatch: cannot reach Grafana at {url}: ConnectionError: ")
    assert len(err.splitlines()) == 1 and TOKEN not in err
    with pytest.raises(SystemExit) as stopped:  # refused when parsed, before any request
        main(["dashboards", "push", "--url", "grafana:3000", "--token-env", "GRAFANA_TOKEN"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "error: argument --url: 'grafana:3000': give http://HOST[:PORT] or https://...")
    with pytest.raises(PushError, match=r"--url 'grafana:3000': give Grafana's base URL, "
                                        r"http:// or https:// and its host"):
        push("grafana:3000", "GRAFANA_TOKEN")  # called as a library: its own check


class _AnyJson(BaseHTTPRequestHandler):
    """A server that is no Grafana: every request answered 200 with a JSON list."""

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "9")
        self.end_headers()
        self.wfile.write(b"[1, 2, 3]")

    do_GET = do_POST = _reply

    def log_message(self, *args: object) -> None:
        pass


def test_a_server_that_is_no_grafana_is_not_reported_as_pushed_to(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """It answered every save with 200, and `pushed 5 dashboards` was printed."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _AnyJson)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("GRAFANA_TOKEN", TOKEN)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert main(["dashboards", "push", "--url", url, "--token-env", "GRAFANA_TOKEN"]) == 1
    finally:
        server.shutdown()
        server.server_close()
    out, err = capsys.readouterr()
    assert "pushed" not in out
    assert err.startswith(f"driftwatch: {url} answered the save of dashboard ")
    assert err.endswith("with [1, 2, 3], not Grafana's answer (the dashboard's uid): give --url "
                        "Grafana's base URL, e.g. http://grafana:3000\n")
