"""The sandbox under observation: a real ``haproxy-sync dev`` process, and calls to its Consul API.

Why the ``dev`` command and not a stack of our own: the picture should show what an operator sees
when they run the sandbox the README describes (devconsul, seven app instances, HAProxy in
master-worker mode, the daemon with its metrics), started the way they start it.

The process runs in its own session (bench/common's :class:`~bench.common.process.Proc`), so Ctrl-C in
the terminal reaches only the orchestrator, which then stops it with SIGTERM (the sandbox then stops
HAProxy, the app instances and devconsul and removes its runtime directory) and waits a bounded time;
only if it is still there after that is its process group killed, by its id. Everything listens on and
talks to 127.0.0.1.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.consul import ConsulClient
from bench.common.metrics import samples, scrape
from bench.common.ports import HOST, free_ports
from bench.common.process import Proc, StackError, http_get, wait_for


class SandboxError(StackError):
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
    proc: Proc | None = None
    summary: str = ""
    consul_url: str = ""
    runtime_dir: Path | None = None
    _stdout_lines: list[str] = field(default_factory=list)
    _client: ConsulClient | None = None

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
        self.proc = Proc("haproxy-sync dev", command, self.stderr_path, cwd=None, stdout_pipe=True)
        reader = threading.Thread(target=self._read_stdout, name="sandbox-stdout", daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while "Try:" not in "".join(self._stdout_lines):
            if not self.proc.alive():
                raise SandboxError(f"haproxy-sync dev exited with {self.proc.process.returncode}; "
                                   f"see {self.stderr_path}")
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
        assert self.proc is not None and self.proc.process.stdout is not None
        for raw in self.proc.process.stdout:
            self._stdout_lines.append(raw.decode(errors="replace"))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Until haproxy-sync's ``/ready`` answers 200 (its first apply done, HAProxy confirmed)."""
        try:
            wait_for(lambda: http_get(f"http://{HOST}:{self.metrics_port}/ready")[0] == 200, timeout,
                     "haproxy-sync's /ready to answer 200", interval=0.2)
        except StackError as exc:
            raise SandboxError(str(exc)) from None

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then wait up to ``timeout``; its process group is killed only if it is still there."""
        if self._client is not None:
            self._client.close()
        return self.proc.stop(timeout=timeout) if self.proc is not None else None

    # ---- Consul -----------------------------------------------------------------------------------

    def consul(self, method: str, path: str, body: object | None = None) -> Any:
        """One call to devconsul's HTTP API; the decoded JSON answer (or ``None`` for an empty one).

        On one kept connection (bench/common's client): the churn thread is its only caller.
        """
        if self._client is None:
            self._client = ConsulClient(self.consul_url)
        try:
            return self._client.call(method, path, body)
        except (OSError, StackError) as exc:
            raise SandboxError(f"Consul {method} {path} failed: {exc}") from exc

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
        series = scrape(f"http://{HOST}:{self.metrics_port}", ("haproxy_sync_servers",), timeout=5)
        if not series:
            raise SandboxError(f"haproxy-sync's /metrics on port {self.metrics_port} did not answer")
        return {labels["state"]: int(value) for labels, value in samples(series, "haproxy_sync_servers")
                if labels.get("backend") == backend}

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
