"""`haproxy-sync dev` as a user runs it: one command, real processes, everything gone after SIGTERM."""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from haproxy_sync import haproxy
from tests.helpers import consul_put, free_port, http_get, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


def test_sandbox_routes_drops_dead_and_deregistered_instances_and_cleans_up(tmp_path: Path) -> None:
    http_port, consul_port, stats_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    https_port = free_port()
    out = (tmp_path / "out").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "haproxy_sync.cli", "dev", "--instances", "3", "--http-port", str(http_port),
         "--https-port", str(https_port),
         "--consul-port", str(consul_port), "--stats-port", str(stats_port), "--metrics-port", str(metrics_port)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        text = wait_until(lambda: "sandbox is up" in (t := (tmp_path / "out").read_text()) and t, 30,
                          what="the sandbox summary")
        assert f"http://127.0.0.1:{http_port}/" in text
        assert f"http://127.0.0.1:{consul_port}" in text
        assert f"http://127.0.0.1:{stats_port}/stats" in text
        workdir = Path(re.search(r"runtime API\s+(\S+)/admin.sock", text).group(1))
        pids = dict(re.findall(r"(cabify-\d+)=(\d+)", text))
        assert sorted(pids) == ["cabify-1", "cabify-2", "cabify-3"]

        def answers() -> set[str]:
            return {http_get(f"http://127.0.0.1:{http_port}/")[1].strip() for _ in range(9)}

        assert answers() == {"cabify-1", "cabify-2", "cabify-3"}
        branch = http_get(f"http://127.0.0.1:{http_port}/", headers={"Host": "feature-x.localhost"})
        assert branch == (200, "cabify-feature-x-1\n"), "the tagged branch service is routed by its host"
        assert f"https://localhost:{https_port}/" in text
        assert https_get(https_port, "feature-x.localhost") == (200, "cabify-feature-x-1\n", "localhost"), \
            "HTTPS routes the same, with the sandbox's own certificate"
        assert http_get(f"http://127.0.0.1:{stats_port}/metrics")[0] == 200
        assert f"http://127.0.0.1:{metrics_port}/metrics" in text
        wait_until(lambda: http_get(f"http://127.0.0.1:{metrics_port}/ready")[0] == 200, 10, what="ready")

        config = workdir / "config.toml"
        config.write_text(config.read_text() + "# an operator's edit\n")
        wait_until(lambda: "file changed: configuration and template re-read" in (tmp_path / "out").read_text(), 10)
        time.sleep(1.5)
        assert (tmp_path / "out").read_text().count("file changed:") == 1, "an edit is read once, not in a loop"
        assert config.read_text().endswith("# an operator's edit\n"), "the sandbox keeps the operator's edit"

        os.kill(int(pids["cabify-1"]), signal.SIGKILL)
        wait_until(lambda: answers() == {"cabify-2", "cabify-3"}, 15, what="killed instance out of rotation")

        consul_put(f"http://127.0.0.1:{consul_port}", "/v1/agent/service/deregister/cabify-2")
        wait_until(lambda: answers() == {"cabify-3"}, 15, what="deregistered instance out of rotation")

        os.killpg(proc.pid, 0)  # still alive as a group
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert not workdir.exists(), "the temporary runtime directory is removed"
        leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True)
        assert leftovers.stdout == "", "HAProxy processes left behind"
        for pid in pids.values():
            assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        out.close()


def https_get(port: int, host: str) -> tuple[int, str, str]:
    """GET / over HTTPS with SNI and Host ``host``: the status, the body, the certificate's CN."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                          server_hostname=host)
    try:
        connection.request("GET", "/", headers={"Host": host})
        response = connection.getresponse()
        der = connection.sock.getpeercert(binary_form=True)
        common = x509.load_der_x509_certificate(der).subject.rfc4514_string().removeprefix("CN=")
        return response.status, response.read().decode(), common
    finally:
        connection.close()


def test_sandbox_refuses_a_busy_port() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "haproxy_sync.cli", "dev", "--http-port", str(port), "--consul-port", "0",
             "--metrics-port", "0"],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 1
    assert (f"port {port} on 127.0.0.1 is in use; stop what listens there or choose another with --http-port"
            in result.stderr)


def test_sandbox_canary_gets_its_share_and_the_header_reaches_it_alone(tmp_path: Path) -> None:
    http_port, consul_port, stats_port, metrics_port = free_port(), free_port(), free_port(), free_port()
    out = (tmp_path / "out").open("w+")
    proc = subprocess.Popen(
        [sys.executable, "-m", "haproxy_sync.cli", "dev", "--instances", "3", "--canary", "10%",
         "--http-port", str(http_port), "--consul-port", str(consul_port), "--stats-port", str(stats_port),
         "--metrics-port", str(metrics_port)],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        text = wait_until(lambda: "sandbox is up" in (t := (tmp_path / "out").read_text()) and t, 30,
                          what="the sandbox summary")
        assert "cabify-canary-1 gets 10%" in text and "X-Canary: always" in text, text
        url = f"http://127.0.0.1:{http_port}/"
        wait_until(lambda: http_get(url, headers={"X-Canary": "always"})[1] == "cabify-canary-1\n", 15,
                   what="the canary in its backend")
        answers = [http_get(url)[1].strip() for _ in range(400)]
        share = answers.count("cabify-canary-1") / len(answers)
        assert share == pytest.approx(0.10, abs=0.03), "10%, not its count share of 1/4"
        assert {http_get(url, headers={"X-Canary": "always"})[1] for _ in range(20)} == {"cabify-canary-1\n"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        out.close()
