"""The sandbox under observation: a real ``haproxy-sync dev`` process, and calls to its Consul API.

Why the ``dev`` command and not a stack of our own: the picture should show what an operator sees
when they run the sandbox the README describes (devconsul, seven app instances, HAProxy in
master-worker mode, the daemon with its metrics), started the way they start it.

The process runs in its own session, so Ctrl-C in the terminal reaches only the orchestrator, which
then stops it with SIGTERM (the sandbox then stops HAProxy, the app instances and devconsul and
removes its runtime directory) and waits a bounded time; only if it is still there after that is its
process group killed, by its id. Everything listens on and talks to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.ports import free_ports

HOST = "127.0.0.1"


class SandboxError(Exception):
    """The sandbox did not come up or a call to it failed; the message says which and where its log is."""




@dataclass
class Sandbox:
    """One ``haproxy-sync dev`` process; :meth:`start` returns once its summary is printed."""

    log_dir: Path
    instances: int = 7
    http_port: int = 0
    consul_port: int = 0
    stats_port: int = 0
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    summary: str = ""
    consul_url: str = ""
    runtime_dir: Path | None = None
    _stdout_lines: list[str] = field(default_factory=list)

    @property
    def stderr_path(self) -> Path:
        return self.log_dir / "sandbox.stderr.log"

    def start(self, timeout: float = 60.0) -> None:
        if not all((self.http_port, self.consul_port, self.stats_port, self.metrics_port)):
            self.http_port, self.consul_port, self.stats_port, self.metrics_port = free_ports(4)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [
            str(Path(sys.executable).with_name("haproxy-sync")), "dev", "--instances", str(self.instances),
            "--http-port", str(self.http_port), "--consul-port", str(self.consul_port),
            "--stats-port", str(self.stats_port), "--metrics-port", str(self.metrics_port),
        ]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, start_new_session=True,
            )
        reader = threading.Thread(target=self._read_stdout, name="sandbox-stdout", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while "Try:" not in "".join(self._stdout_lines):
            if self.process.poll() is not None:
                raise SandboxError(f"haproxy-sync dev exited with {self.process.returncode}; see {self.stderr_path}")
            if time.monotonic() > deadline:
                raise SandboxError(f"haproxy-sync dev printed no summary in {timeout:g}s; see {self.stderr_path}")
            time.sleep(0.1)
        self.summary = "".join(self._stdout_lines)
        consul = re.search(r"Consul API\s+(http://\S+)", self.summary)
        config = re.search(r"haproxy\.cfg\s+(\S+)", self.summary)
        if consul is None or config is None:
            raise SandboxError(f"cannot read the Consul URL or runtime directory from:\n{self.summary}")
        self.consul_url = consul.group(1)
        self.runtime_dir = Path(config.group(1)).parent

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            self._stdout_lines.append(raw.decode(errors="replace"))

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait up to ``timeout``; kill the process group only if it is still there."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"haproxy-sync dev (pid {process.pid}) did not stop in {timeout:g}s; killing its group",
                  file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait(10)

    # ---- Consul -----------------------------------------------------------------------------------

    def consul(self, method: str, path: str, body: object | None = None, timeout: float = 5.0) -> Any:
        """One call to devconsul's HTTP API; the decoded JSON answer (or ``None`` for an empty one)."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.consul_url}{path}", data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise SandboxError(f"Consul {method} {path} failed: {exc}") from exc
        return json.loads(raw) if raw.strip() else None

    def instance_ports(self, service: str = "cabify") -> dict[str, int]:
        """Service ID -> port of every registered instance (read from ``/v1/health/service``)."""
        entries = self.consul("GET", f"/v1/health/service/{service}")
        return {entry["Service"]["ID"]: int(entry["Service"]["Port"]) for entry in entries}

    def register(self, service_id: str, port: int, *, weight: int = 1, address: str = HOST,
                 service: str = "cabify") -> None:
        """Register an instance with an HTTP check on a running app's port, as the brief's recipe does."""
        self.consul("PUT", "/v1/agent/service/register", {
            "ID": service_id, "Name": service, "Address": address, "Port": port,
            "Weights": {"Passing": weight, "Warning": 1},
            "Check": {"HTTP": f"http://{HOST}:{port}/health", "Interval": "1s", "Status": "passing"},
        })

    def servers(self, backend: str) -> dict[str, int]:
        """haproxy-sync's ``haproxy_sync_servers`` for one backend, now: planned state -> slots."""
        with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        found: dict[str, int] = {}
        for match in re.finditer(r'^haproxy_sync_servers\{([^}]*)\} (\S+)$', text, re.MULTILINE):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
            if labels.get("backend") == backend:
                found[labels["state"]] = int(float(match.group(2)))
        return found

    def deregister(self, service_id: str) -> None:
        self.consul("PUT", f"/v1/agent/service/deregister/{service_id}")

    def node_maintenance(self, enable: bool) -> None:
        reason = "&reason=bench.dashboard" if enable else ""
        self.consul("PUT", f"/v1/agent/maintenance?enable={'true' if enable else 'false'}{reason}")

    def fault(self, name: str | None) -> None:
        """Switch devconsul's documented fault (``/v1/devconsul/fault``) on, or off with ``None``."""
        if name is None:
            self.consul("DELETE", "/v1/devconsul/fault")
        else:
            self.consul("PUT", "/v1/devconsul/fault", {"fault": name})
