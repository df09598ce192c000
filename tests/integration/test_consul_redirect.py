"""The ACL token stays with Consul: a 3xx from consul.address is an error, never followed.

A real HTTP server stands at consul.address and answers every request with a redirect to a second
real server, which records what reaches it; the real `haproxy-sync run --once` runs against them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.helpers import Layout, _QuietServer, cli

TOKEN = "5d2c7b1e-0f6a-4c3e-9b8d-7a1e2f3c4d5e"


class Recorder:
    """A server in a thread that answers ``status`` (with ``location``) and keeps every request's headers."""

    def __init__(self, status: int = 200, location: str = "") -> None:
        self.requests: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                recorder.requests.append(dict(self.headers.items()))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Consul-Index", "1")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.stop()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_an_error_and_the_token_never_leaves(tmp_path: Path, elsewhere: Recorder, status: int) -> None:
    target = f"{elsewhere.url}/v1/catalog/services"
    redirector = Recorder(status, target)
    try:
        layout = Layout(tmp_path, redirector.url)
        layout.write()
        proc = cli("run", "--once", "--config", str(layout.config_toml), env={"CONSUL_HTTP_TOKEN": TOKEN})
    finally:
        redirector.stop()
    assert proc.returncode == 1, proc.stderr
    expected = (f"haproxy-sync: Consul at {redirector.url} (consul.address) answered {status} redirect to {target}; "
                "not followed (the ACL token is only sent to consul.address)")
    assert expected in proc.stderr.splitlines(), proc.stderr
    assert TOKEN not in proc.stderr + proc.stdout
    assert [r.get("X-Consul-Token") for r in redirector.requests] == [TOKEN], "the token went to consul.address"
    assert elsewhere.requests == [], "the redirect was followed"
    assert not layout.haproxy_cfg.exists(), "nothing was written from a refused answer"


def test_a_hostile_location_is_shown_as_one_safe_line(tmp_path: Path) -> None:
    redirector = Recorder(302, "http://evil.example/\x7f" + "a" * 500)
    try:
        layout = Layout(tmp_path, redirector.url)
        layout.write()
        proc = cli("run", "--once", "--config", str(layout.config_toml))
    finally:
        redirector.stop()
    assert proc.returncode == 1
    (line,) = [line for line in proc.stderr.splitlines() if "redirect" in line]
    assert "redirect to http://evil.example/?aaa" in line and "..." in line and len(line) < 400
