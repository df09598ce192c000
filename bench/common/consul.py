"""devconsul as a process, and the one client of its (Consul's) HTTP API.

Why devconsul runs as a separate process: the orchestrator's own threads time what is measured (a
poll of HAProxy's runtime socket every few milliseconds, a burst of writes); an in-process devconsul
answering thousands of blocking queries and running checks would add GIL jitter to exactly those
numbers. So it runs as ``python -m haproxy_sync.dev.devconsul`` (the same code as
``DevConsulThread``, which a benchmark that measures only the daemon may use instead: the client
below talks to either).
"""

from __future__ import annotations

import http.client
import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from .ports import HOST, free_ports
from .process import Proc, StackError, clean_env, wait_for


class ConsulError(StackError):
    """Consul answered a call with another status than 200."""


class ConsulClient:
    """Calls to a Consul HTTP API on one kept-alive connection (one reconnect when the server closed it).

    One client per thread: the connection is not shared safely between threads.
    """

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a Consul URL with host and port, e.g. http://127.0.0.1:8500; got {url!r}")
        self.host, self.port = parts.hostname, parts.port
        self.address = f"{self.host}:{self.port}"
        self.url = f"http://{self.address}"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """One HTTP request on the kept connection: (status, answer)."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=data)
                response = self._conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self._conn.close()
                self._conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """The decoded JSON answer (None for an empty one); :class:`ConsulError` unless Consul says 200."""
        status, answer = self.request(method, path, body)
        if status != 200:
            raise ConsulError(f"Consul {method} {path} answered {status}: {answer[:200]!r}")
        return json.loads(answer) if answer.strip() else None

    def put(self, path: str, body: Any = None) -> None:
        self.call("PUT", path, body)

    def health(self, service: str) -> list[dict[str, Any]]:
        """``/v1/health/service/<service>``; empty when Consul does not answer 200."""
        status, answer = self.request("GET", f"/v1/health/service/{service}")
        return json.loads(answer) if status == 200 else []

    def bulk(self, path: str, body: Any, timeout: float = 60.0) -> dict[str, Any]:
        """One of devconsul's bulk calls (``/v1/devconsul/bulk/*``) on a fresh connection with a long timeout
        (big bodies, a busy server)."""
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request("PUT", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise ConsulError(f"devconsul PUT {path} answered {response.status}: {answer[:300]!r}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class DevConsul(ConsulClient):
    """devconsul in a subprocess (its log ``devconsul.log`` in ``workdir``), and a client of it."""

    def __init__(self, workdir: Path, timeout: float = 20.0) -> None:
        (port,) = free_ports(1)
        super().__init__(f"http://{HOST}:{port}")
        self.proc = Proc(
            "devconsul", [sys.executable, "-m", "haproxy_sync.dev.devconsul", "--host", HOST, "--port", str(port)],
            workdir / "devconsul.log", env=clean_env(),
        )
        try:
            wait_for(self._leader, timeout, "devconsul to answer /v1/status/leader")
        except StackError:
            self.stop()
            raise

    def _leader(self) -> bool:
        if not self.proc.alive():
            raise StackError(f"devconsul exited at start: {self.proc.log_tail()}")
        try:
            return self.request("GET", "/v1/status/leader")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.close()
        self.proc.stop()
