"""What the HAProxy under test sends its requests to: the backend pool and the streaming backend.

The pool is a second HAProxy answering ``200`` itself on every pool port: the cheapest thing that
answers real HTTP (the load, HAProxy's and devconsul's health checks) on dozens of ports, one process
and no Python threads competing with the measurement, so the instances are never the bottleneck.
How it is tuned (threads, maxconn, timeouts, the answer) is each benchmark's, given as parameters;
the defaults are bench/churn's.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from haproxy_sync import haproxy
from haproxy_sync.dev.process import HAProxyProcess

from .ports import HOST, free_ports
from .process import Proc, StackError, clean_env, http_get, port_answers, wait_for
from .under_test import haproxy_binary

#: ``timeout`` lines of the pool's ``defaults``, in this order.
POOL_TIMEOUTS: tuple[tuple[str, str], ...] = (
    ("client", "30s"), ("connect", "5s"), ("server", "30s"), ("http-keep-alive", "30s"),
)
STREAMER = Path(__file__).resolve().parent / "streamer.py"


def pool_config(ports: Sequence[int], answer: str = "ok", maxconn: int = 4000, nbthread: int | None = 1,
                timeouts: Sequence[tuple[str, str]] = POOL_TIMEOUTS) -> str:
    """The pool's haproxy.cfg: one proxy bound to every port, answering ``200 <answer>`` itself.

    ``nbthread``: None leaves HAProxy its default (a thread per CPU it may use).
    """
    binds = "".join(f"    bind {HOST}:{port}\n" for port in ports)
    return (
        "global\n"
        + (f"    nbthread {nbthread}\n" if nbthread is not None else "")
        + f"    maxconn {maxconn}\n"
        "defaults\n    mode http\n"
        + "".join(f"    timeout {name} {value}\n" for name, value in timeouts)
        + f"listen pool\n{binds}"
        f'    http-request return status 200 content-type text/plain string "{answer}"\n'
    )


class BackendPool:
    """A second HAProxy answering ``200 <answer>`` on every pool port (``ports``: how many, or which).

    Started once every port answers with ``answer``: HAProxy binds with SO_REUSEPORT, so a port another
    process took meanwhile would be shared silently instead of failing; a distinct ``answer`` tells.
    """

    def __init__(self, workdir: Path, ports: int | Sequence[int], *, answer: str = "ok", maxconn: int = 4000,
                 nbthread: int | None = 1, timeouts: Sequence[tuple[str, str]] = POOL_TIMEOUTS,
                 binary: str | None = None, timeout: float = 10.0) -> None:
        self.ports = free_ports(ports) if isinstance(ports, int) else list(ports)
        self.answer = answer
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "backends.cfg"
        self.config.write_text(pool_config(self.ports, answer, maxconn, nbthread, timeouts))
        self.log_path = workdir / "backends.log"
        self.haproxy = HAProxyProcess(binary or haproxy_binary(), self.config,
                                              workdir / "backends-master.sock", self.log_path)
        try:
            self.haproxy.start()
        except haproxy.HAProxyError as exc:
            raise StackError(f"backend HAProxy: {exc}") from None
        try:
            wait_for(self._answering, timeout, f"the backend pool's ports to answer (log: {self.log_path})")
        except StackError:
            self.stop()
            raise

    def _answering(self) -> bool:
        return all(http_get(f"http://{HOST}:{port}/health", 1.0) == (200, self.answer) for port in self.ports)

    @property
    def pid(self) -> int:
        assert self.haproxy.process is not None
        return self.haproxy.process.pid

    def stop(self) -> None:
        self.haproxy.stop()


class Streamer:
    """The aiohttp streaming backend (bench/common/streamer.py) on ``port`` (a free one by default)."""

    def __init__(self, workdir: Path, port: int | None = None, timeout: float = 20.0) -> None:
        self.port = port if port is not None else free_ports(1)[0]
        workdir.mkdir(parents=True, exist_ok=True)
        self.proc = Proc("streamer", [sys.executable, str(STREAMER), "--port", str(self.port)],
                         workdir / "streamer.log", env=clean_env())
        try:
            wait_for(lambda: port_answers(self.port) or not self.proc.alive(), timeout, "the streaming backend")
        except StackError:
            self.proc.stop()
            raise
        if not self.proc.alive():
            raise StackError(f"the streaming backend exited at start: {self.proc.log_tail()}")

    def stop(self) -> None:
        self.proc.stop()
