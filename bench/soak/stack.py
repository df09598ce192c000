"""The processes of a soak run: devconsul, cheap backends, the HAProxy under test, and the daemon.

Why these choices:

* devconsul runs in this process (``DevConsulThread``): only the daemon is measured, and an
  in-memory Consul costs nothing to start and holds no state between runs.
* The backends are one extra HAProxy answering ``http-request return status 200`` on many ports.
  That is the cheapest thing that answers real HTTP health checks (HAProxy's and devconsul's) on
  dozens of ports: one process, no Python threads competing with the measurement.
* The daemon is a real ``haproxy-sync run`` process started the way an operator starts it, so its
  RSS, descriptors and threads are those of production, not of a test harness.

Every child runs in its own session (Ctrl-C in the terminal reaches only this orchestrator, which
then stops the children in order), every start and stop is bounded in time, and everything listens
on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from haproxy_sync import haproxy

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class StackError(Exception):
    """A part of the stack did not start or answer; the message says which and where its log is."""


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; raise :class:`StackError` after ``timeout``.

    Every wait in the benchmark goes through here so that no loop can spin forever.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise StackError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)




def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``url``; (0, reason) when nothing answers, so callers can poll without try/except."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (OSError, ValueError) as exc:
        return 0, str(exc)


def consul_request(base_url: str, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
    """One Consul HTTP API call; returns the decoded JSON answer (None for an empty body)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base_url}{path}", data=data, method=method)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


def haproxy_binary() -> str:
    """The HAProxy executable, or a clear error saying how to install it."""
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        raise StackError("HAProxy is not installed; run 'sudo apt-get install -y haproxy' (or scripts/sandbox)")
    return binary


# --- the backends: one HAProxy answering 200 on many ports ---


BACKENDS_CFG = """\
# Soak benchmark backends: every port answers every request with 200 and a token.
global
    maxconn 2000

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    timeout http-keep-alive 2s

frontend soak_backends
{binds}
    http-request return status 200 content-type text/plain string "{token}"
"""


class Backends:
    """A HAProxy whose only job is answering HTTP 200 on ``ports``, for health checks of both kinds."""

    def __init__(self, root: Path, ports: list[int], binary: str) -> None:
        self.root = root
        self.ports = ports
        self.token = f"soak-backend-{os.getpid()}"
        self.config = root / "backends.cfg"
        binds = "\n".join(f"    bind {HOST}:{port}" for port in ports)
        self.config.write_text(BACKENDS_CFG.format(binds=binds, token=self.token))
        self.process = haproxy.HAProxyProcess(binary, self.config, root / "backends-master.sock",
                                              root / "backends.log")

    def start(self) -> None:
        """Start, then check every port answers with our token: HAProxy binds with SO_REUSEPORT, so a
        port another process took in the meantime would be shared silently instead of failing."""
        try:
            self.process.start()
        except haproxy.HAProxyError as exc:
            raise StackError(f"backend HAProxy: {exc}") from None
        for port in self.ports:
            wait_for(lambda p=port: http_get(f"http://{HOST}:{p}/health", 1.0) == (200, self.token), 10,
                     f"backend port {port} to answer (log: {self.root / 'backends.log'})")

    def stop(self) -> None:
        """Stop the master and its workers (bounded; SIGKILL if they linger)."""
        self.process.stop()


# --- the HAProxy under test and the daemon ---


@dataclass
class Layout:
    """Paths and ports of the HAProxy under test and the daemon, all inside one work directory.

    The config mirrors ``tests/helpers.py`` ``Layout.write()`` (the benchmark must not import tests):
    short ``wait`` so blocking queries cycle often (more request cycles per hour, so a per-request
    leak shows sooner), ``wait_min``/``wait_max`` as in the tests, everything else the defaults an
    operator gets (drain 10 s, reconcile 30 s, reload budget 1 s, 8 slots per backend).
    """

    root: Path
    consul_url: str
    services: tuple[str, ...]
    http_port: int
    stats_port: int
    metrics_port: int
    binary: str
    sync_extra: tuple[str, ...] = ()  # extra ``key = value`` lines for [sync], from ``--sync``

    @property
    def config_toml(self) -> Path:
        return self.root / "config.toml"

    @property
    def haproxy_cfg(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        return self.root / "master.sock"

    @property
    def stats_socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}"

    def write(self) -> Path:
        services = "".join(f'[[services]]\nname = "{name}"\nhealth_path = "/health"\n' for name in self.services)
        self.config_toml.write_text(
            f'[log]\nlevel = "info"\n'
            f'[consul]\naddress = "{self.consul_url}"\nbackoff_max = "2s"\nwait = "5s"\n'
            f'[haproxy]\nbinary = "{self.binary}"\n'
            f'config_path = "{self.haproxy_cfg}"\nmaster_socket = "{self.master_socket}"\n'
            f'stats_socket = "{self.stats_socket}"\nserver_state_file = "{self.root / "server-state"}"\n'
            f'http_bind = "{HOST}:{self.http_port}"\nstats_bind = "{HOST}:{self.stats_port}"\n'
            f'user = ""\ngroup = ""\nlog_target = "stderr format short local0 notice"\n'
            f'[metrics]\nlisten = "{HOST}:{self.metrics_port}"\nstale_after = "30s"\n'
            f'[sync]\nwait_min = "10ms"\nwait_max = "200ms"\nnetworks = ["127.0.0.0/8"]\n'
            + "".join(f"{line}\n" for line in self.sync_extra)
            + services
        )
        return self.config_toml


def sync_line(option: str) -> str:
    """``--sync KEY=VALUE`` as a TOML line: booleans and numbers as they are, anything else quoted."""
    key, sep, value = option.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key.replace("_", "").isalnum() or not value:
        raise ValueError(f"--sync {option!r}: expected KEY=VALUE, e.g. watch_files=false or drain_timeout=2s")
    is_number = value.replace(".", "", 1).isdigit()
    return f"{key} = {value if value in ('true', 'false') or is_number else json.dumps(value)}"


def run_once(layout: Layout, timeout: float = 60.0) -> None:
    """``haproxy-sync run --once``: the first haproxy.cfg, written before HAProxy starts from it."""
    result = subprocess.run(
        [sys.executable, "-m", "haproxy_sync.cli", "run", "--once", "--config", str(layout.config_toml)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO, check=False,
    )
    if result.returncode != 0:
        raise StackError(f"haproxy-sync run --once failed ({result.returncode}): {result.stderr.strip()[-500:]}")


def start_haproxy(layout: Layout) -> haproxy.HAProxyProcess:
    """The HAProxy under test, master-worker, from the config ``run --once`` wrote."""
    process = haproxy.HAProxyProcess(layout.binary, layout.haproxy_cfg, layout.master_socket,
                                     layout.root / "haproxy.log")
    try:
        process.start()
    except haproxy.HAProxyError as exc:
        raise StackError(f"HAProxy under test: {exc}") from None
    return process


class Daemon:
    """``haproxy-sync run`` as a real process in its own session, its output in ``daemon.log``.

    With ``trace_dir`` it runs under :mod:`bench.soak.traced` instead, which adds tracemalloc and
    dumps a snapshot on SIGUSR1 (a diagnostic run: tracing inflates memory and CPU).
    """

    def __init__(self, layout: Layout, trace_dir: Path | None = None) -> None:
        self.layout = layout
        self.log_path = layout.root / "daemon.log"
        self.trace_dir = trace_dir
        self.process: subprocess.Popen[bytes] | None = None
        self._dumps = 0

    def start(self, timeout: float = 30.0) -> None:
        """Start the daemon and wait until its /ready answers 200 (first apply done, HAProxy confirmed)."""
        args = ["run", "--config", str(self.layout.config_toml)]
        if self.trace_dir is not None:
            self.trace_dir.mkdir(parents=True, exist_ok=True)
            argv = [sys.executable, "-m", "bench.soak.traced", "--dump-dir", str(self.trace_dir),
                    "--memory-log", str(self.memory_log), "--", *args]
        else:
            argv = [sys.executable, "-m", "haproxy_sync.cli", *args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise StackError(f"haproxy-sync exited with {self.process.returncode}; see {self.log_path}")
            return http_get(f"{self.layout.metrics_url}/ready", 1.0)[0] == 200

        wait_for(ready, timeout, f"haproxy-sync /ready (log: {self.log_path})", interval=0.2)

    @property
    def memory_log(self) -> Path:
        """Where the traced daemon logs its traced memory every second (only with ``trace_dir``)."""
        return (self.trace_dir or self.layout.root) / "memory.log"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise StackError("the daemon is not running")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def dump_trace(self, timeout: float = 60.0) -> Path:
        """Ask the traced daemon for a tracemalloc snapshot and wait until it is written."""
        if self.trace_dir is None:
            raise StackError("dump_trace needs a daemon started with trace_dir")
        self._dumps += 1
        marker = self.trace_dir / f"dump-{self._dumps}.done"
        os.kill(self.pid, signal.SIGUSR1)
        wait_for(marker.exists, timeout, f"tracemalloc dump {self._dumps} from the daemon", interval=0.2)
        return self.trace_dir / f"dump-{self._dumps}"

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (the daemon promises to stop within 2 s), SIGKILL after ``timeout``."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout)
        return process.returncode


def status_json(layout: Layout, timeout: float = 30.0) -> dict[str, Any]:
    """``haproxy-sync status --json``: Consul against HAProxy, and the drift between them."""
    result = subprocess.run(
        [sys.executable, "-m", "haproxy_sync.cli", "status", "--json", "--config", str(layout.config_toml)],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO, check=False,
    )
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return {"healthy": False, "error": (result.stderr or result.stdout).strip()[-500:], "exit": result.returncode}
    report["exit"] = result.returncode
    return report
