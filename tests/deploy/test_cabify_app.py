"""The cabify app: its Dockerfile is hadolint clean and follows the rules the deployment needs,
and the service itself answers / and /health (run here as a plain process)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from .conftest import APP_DIR, run, tail, tool

pytestmark = pytest.mark.deploy


def test_hadolint_is_clean() -> None:
    proc = run([tool("hadolint"), "--failure-threshold", "info", str(APP_DIR / "Dockerfile")], timeout=60)
    assert proc.returncode == 0, tail(proc)


def test_dockerfile_pins_its_base_runs_unprivileged_and_checks_health() -> None:
    text = (APP_DIR / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(bases) == 1
    base = bases[0]
    assert "@sha256:" in base or re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+[\w.-]*", base), f"base not pinned: {base}"
    assert "alpine" in base or "slim" in base or "distroless" in base, "small base image"
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK\s", text, re.M)
    assert "/health" in text
    ignore = (APP_DIR / ".dockerignore").read_text().split()
    assert ignore[0] == "*", "the build context holds only what the image needs"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def app() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "CABIFY_VERSION": "9.9.9", "NOMAD_ALLOC_ID": "alloc-1234",
           "NOMAD_ALLOC_INDEX": "3"}
    proc = subprocess.Popen([sys.executable, str(APP_DIR / "app.py")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("cabify did not start")
                time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)


def test_root_answers_version_and_instance(app: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = app
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        body = json.load(response)
        assert response.headers["X-Cabify-Instance"] == "alloc-1234"
    assert body["service"] == "cabify"
    assert body["version"] == "9.9.9"
    assert body["instance"] == "alloc-1234"
    assert body["alloc_index"] == "3"


def test_health_and_unknown_paths(app: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = app
    with urllib.request.urlopen(url + "/health", timeout=5) as response:
        assert response.status == 200
        assert json.load(response) == {"status": "ok"}
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url + "/nope", timeout=5)
    assert excinfo.value.code == 404
    excinfo.value.close()


def test_sigterm_stops_it_cleanly(app: tuple[str, subprocess.Popen[bytes]]) -> None:
    _, proc = app
    proc.send_signal(signal.SIGTERM)  # what Docker sends when Nomad stops the task
    assert proc.wait(timeout=5) == 0
