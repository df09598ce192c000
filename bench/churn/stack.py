"""The processes of one benchmark run: devconsul, backends, the HAProxy under test, and the syncer.

Why each is a separate process: the orchestrator's own threads time the convergence of every change
(a poll of HAProxy's runtime socket every few milliseconds); anything sharing its interpreter (an
in-process devconsul answering blocking queries and running checks) would add GIL jitter to exactly
the numbers being measured. So devconsul runs as ``python -m haproxy_sync.dev.devconsul`` (the same
code as ``DevConsulThread``), the load generator and the streaming backend as scripts, and HAProxy
through the project's own ``HAProxyProcess``.

Every process is started in its own session (Ctrl-C in the terminal reaches only the orchestrator,
which then stops them in order) and every start and stop is bounded in time. Everything listens on
and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.metrics import scrape, total
from bench.common.ports import free_ports
from haproxy_sync import haproxy

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HOST = "127.0.0.1"
CONSUL_TEMPLATE_MODULE = "github.com/hashicorp/consul-template"
CONSUL_TEMPLATE_VERSION = "v0.41.1"  # the newest tag on the Go module proxy when this was written
CACHE_DIR = HERE / ".cache"  # git-ignored (bench/churn/.gitignore)


class StackError(Exception):
    """A process of the stack did not start or misbehaved; the message says which and where its log is."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise :class:`StackError` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)




def port_answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.5):
        return True
    return False


def clean_env(**extra: str) -> dict[str, str]:
    """The environment minus every ``CONSUL_*`` name, so a developer's own Consul is never reached."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(extra)
    return env


class Proc:
    """A child process in its own session, its output in a log file; ``stop`` is bounded and idempotent."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None, stdout_pipe: bool = False) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log, env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int | None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()
        return self.process.returncode

    def log_tail(self, lines: int = 8) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


# --- devconsul and the Consul writes ---


class Consul:
    """devconsul in a subprocess, and the few agent writes the churn needs, on one keep-alive connection."""

    def __init__(self, workdir: Path) -> None:
        (self.port,) = free_ports(1)
        self.address = f"{HOST}:{self.port}"
        self.url = f"http://{self.address}"
        self.proc = Proc(
            "devconsul", [sys.executable, "-m", "haproxy_sync.dev.devconsul", "--host", HOST, "--port", str(self.port)],
            workdir / "devconsul.log", env=clean_env(),
        )
        self._conn: http.client.HTTPConnection | None = None
        try:
            wait_for(self._leader, 20, "devconsul to answer /v1/status/leader")
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

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        """One HTTP request on the kept connection; one reconnect when the server closed it."""
        data = json.dumps(body).encode() if body is not None else None
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
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

    def put(self, path: str, body: Any = None) -> None:
        status, answer = self.request("PUT", path, body if body is not None else {})
        if status != 200:
            raise StackError(f"devconsul PUT {path} answered {status}: {answer[:200]!r}")

    def health(self, service: str) -> list[dict[str, Any]]:
        status, answer = self.request("GET", f"/v1/health/service/{service}")
        return json.loads(answer) if status == 200 else []

    def register(self, instance_id: str, port: int, weight: int, service: str = "cabify") -> None:
        """Register (or re-register: checks keep their state) an instance with an HTTP and a TTL check.

        Both checks start ``passing``, so an added instance is routable at once and its convergence
        measures the tool, not Consul's first check interval. The TTL check is the flap switch: the
        benchmark fails and passes it, as an app reporting its own health would.
        """
        self.put("/v1/agent/service/register", {
            "ID": instance_id, "Name": service, "Address": HOST, "Port": port,
            "Weights": {"Passing": weight, "Warning": 1},
            "Checks": [
                {"CheckID": f"http:{instance_id}", "Name": "http", "HTTP": f"http://{HOST}:{port}/health",
                 "Interval": "5s", "Timeout": "1s", "Status": "passing"},
                {"CheckID": f"flap:{instance_id}", "Name": "flap", "TTL": "1h", "Status": "passing"},
            ],
        })

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.proc.stop()


# --- backends ---


class BackendPool:
    """A second HAProxy answering ``200 ok`` on every pool port: instances that are never the bottleneck."""

    def __init__(self, workdir: Path, size: int) -> None:
        binary = haproxy.find_binary("haproxy")
        if binary is None:
            raise StackError("HAProxy is not installed (apt-get install haproxy)")
        self.ports = free_ports(size)
        workdir.mkdir(parents=True, exist_ok=True)
        config = workdir / "backends.cfg"
        binds = "".join(f"    bind {HOST}:{port}\n" for port in self.ports)
        config.write_text(
            "global\n    nbthread 1\n    maxconn 4000\n"
            "defaults\n    mode http\n    timeout client 30s\n    timeout connect 5s\n"
            "    timeout server 30s\n    timeout http-keep-alive 30s\n"
            f"listen pool\n{binds}"
            "    http-request return status 200 content-type text/plain string ok\n"
        )
        self.haproxy = haproxy.HAProxyProcess(binary, config, workdir / "backends-master.sock",
                                              workdir / "backends.log")
        self.haproxy.start()
        wait_for(lambda: all(port_answers(p) for p in self.ports), 10, "the backend pool ports")

    def stop(self) -> None:
        self.haproxy.stop()


class Streamer:
    """The aiohttp streaming backend of scenario 2 (bench/churn/streamer.py)."""

    def __init__(self, workdir: Path) -> None:
        (self.port,) = free_ports(1)
        self.proc = Proc("streamer", [sys.executable, str(HERE / "streamer.py"), "--port", str(self.port)],
                         workdir / "streamer.log", env=clean_env())
        try:
            wait_for(lambda: port_answers(self.port) or not self.proc.alive(), 20, "the streaming backend")
        except StackError:
            self.proc.stop()
            raise
        if not self.proc.alive():
            raise StackError(f"the streaming backend exited at start: {self.proc.log_tail()}")

    def stop(self) -> None:
        self.proc.stop()


# --- the HAProxy under test and the syncers ---


@dataclass
class Target:
    """Where the HAProxy under test listens and keeps its sockets, in the mode's own directory."""

    workdir: Path
    http_port: int
    stats_port: int

    @property
    def config(self) -> Path:
        return self.workdir / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        return self.workdir / "master.sock"

    @property
    def stats_socket(self) -> Path:
        return self.workdir / "admin.sock"

    def start_haproxy(self) -> haproxy.HAProxyProcess:
        binary = haproxy.find_binary("haproxy")
        assert binary is not None
        process = haproxy.HAProxyProcess(binary, self.config, self.master_socket, self.workdir / "haproxy.log")
        process.start()
        return process


class Syncer:
    """What keeps the target in step with Consul: writes the first config, then runs as a daemon."""

    name = ""
    proc: Proc | None = None

    def initial_render(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self) -> int | None:
        return self.proc.stop() if self.proc is not None else None

    def log_summary(self) -> dict[str, Any]:
        raise NotImplementedError


#: Server slots per backend for haproxy-sync: the default. The first plan gives max(8, 2 x the instances
#: at start) = 20 slots for ``--initial 10``; the pool of 24 (``--pool``) outgrows them, and growth is
#: ``add server`` on the Runtime API path (a reload only where HAProxy refuses dynamic servers).
SLOTS = 8


def use_haproxy(binary: str | None) -> None:
    """Make ``binary`` the ``haproxy`` every part of the stack finds (first on PATH, as a link named
    haproxy in a directory of its own); the report's environment then names its version."""
    if not binary:
        return
    path = Path(binary).expanduser().resolve()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise SystemExit(f"--haproxy {binary}: not an executable file")
    directory = Path(tempfile.mkdtemp(prefix="haproxy-sync-bench-bin-"))
    (directory / "haproxy").symlink_to(path)
    os.environ["PATH"] = f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"


class HaproxySync(Syncer):
    """``haproxy-sync run`` with the default template; ``runtime_api`` picks the mode.

    The quiescence timers stay at their defaults (10 ms / 1 s): the benchmark measures what users get.
    Slots are the default (``SLOTS``): the pool outgrows the first plan, so the run shows what growth
    costs (``add server``, no reload).
    """

    def __init__(self, target: Target, consul: Consul, runtime_api: bool,
                 extra: tuple[tuple[str, str, str], ...] = ()) -> None:
        self.name = "haproxy-sync"
        self.target = target
        self.runtime_api = runtime_api
        (self.metrics_port,) = free_ports(1)
        self.metrics_url = f"http://{HOST}:{self.metrics_port}"
        self.config_toml = target.workdir / "config.toml"
        sections: dict[str, list[str]] = {
            "log": ['level = "info"'],
            "consul": [f'address = "{consul.url}"', 'backoff_max = "2s"'],
            "haproxy": [
                f'binary = "{haproxy.find_binary("haproxy")}"', f'config_path = "{target.config}"',
                f'master_socket = "{target.master_socket}"', f'stats_socket = "{target.stats_socket}"',
                f'server_state_file = "{target.workdir / "server-state"}"',
                f'http_bind = "{HOST}:{target.http_port}"', f'stats_bind = "{HOST}:{target.stats_port}"',
                'user = ""', 'group = ""', 'log_target = "stderr format short local0 notice"',
            ],
            "sync": [f"runtime_api = {'true' if runtime_api else 'false'}", f"slots = {SLOTS}",
                     'networks = ["127.0.0.0/8"]'],
            "metrics": [f'listen = "{HOST}:{self.metrics_port}"'],
        }
        for section, key, value in extra:  # --haproxy-sync-set: experiments only, recorded in the JSON
            lines = sections.setdefault(section, [])
            lines[:] = [line for line in lines if line.split(" = ")[0] != key] + [f"{key} = {value}"]
        self.config_toml.write_text(
            "".join(f"[{name}]\n" + "".join(f"{line}\n" for line in lines) for name, lines in sections.items())
            + '[[services]]\nname = "cabify"\n[[services]]\nname = "stream"\nhost = "stream.local"\n'
        )
        self.log_path = target.workdir / "haproxy-sync.log"

    def _argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "haproxy_sync.cli", "run", "--config", str(self.config_toml), *args]

    def initial_render(self) -> None:
        """``run --once`` before HAProxy runs: it writes the validated file HAProxy then starts from."""
        result = subprocess.run(self._argv("--once"), capture_output=True, text=True, timeout=60,
                                env=clean_env(), stdin=subprocess.DEVNULL, check=False)
        if result.returncode != 0:
            raise StackError(f"haproxy-sync run --once failed: {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        self.proc = Proc("haproxy-sync", self._argv(), self.log_path, env=clean_env())

    def log_summary(self) -> dict[str, Any]:
        """Counters from the daemon's /metrics (read while it still runs); log lines only as excerpts."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        series = scrape(self.metrics_url, ("haproxy_sync_applies_total",))
        applies = "haproxy_sync_applies_total"
        return {
            "log": str(self.log_path),
            "applied": total(series, applies),
            "reloaded": total(series, applies, path="reload"),
            "runtime": total(series, applies, path="runtime"),
            "metrics_answered": bool(series),
            "reload_lines": [line[:300] for line in lines if "reloaded in" in line][:30],
            "errors": [line[:300] for line in lines if "level=error" in line or "level=warning" in line][:20],
        }


class ConsulTemplate(Syncer):
    """The real consul-template, run the way its users run it: one -template with a reload command."""

    def __init__(self, binary: Path, target: Target, consul: Consul) -> None:
        self.name = "consul-template"
        self.binary = binary
        self.target = target
        self.consul = consul
        self.source = target.workdir / "haproxy.ctmpl"
        self.source.write_text(
            (HERE / "haproxy.ctmpl").read_text()
            .replace("@STATS_SOCKET@", str(target.stats_socket))
            .replace("@HTTP_BIND@", f"{HOST}:{target.http_port}")
        )
        self.reload_command = reload_command(target.master_socket)
        self.log_path = target.workdir / "consul-template.log"
        self.env = clean_env(CONSUL_HTTP_ADDR=consul.address)

    def initial_render(self) -> None:
        """``-once`` without the command: the file HAProxy starts from (its later renders equal it)."""
        result = subprocess.run(
            [str(self.binary), "-once", "-log-level", "warn", "-template", f"{self.source}:{self.target.config}"],
            capture_output=True, text=True, timeout=60, env=self.env, stdin=subprocess.DEVNULL, check=False,
        )
        if result.returncode != 0 or not self.target.config.exists():
            raise StackError(f"consul-template -once failed ({result.returncode}): {result.stderr.strip()[-500:]}")

    def start(self) -> None:
        self.proc = Proc("consul-template", [
            str(self.binary), "-log-level", "info",
            "-template", f"{self.source}:{self.target.config}:{self.reload_command}",
        ], self.log_path, env=self.env)

    def stop(self) -> int | None:
        return self.proc.stop(signal.SIGINT) if self.proc is not None else None

    def log_summary(self) -> dict[str, Any]:
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        return {
            "log": str(self.log_path),
            "reload_command": self.reload_command,
            "rendered": sum("rendered" in line and "[INFO]" in line for line in lines),
            "commands": sum("executing command" in line for line in lines),
            "errors": [line for line in lines if "[ERR]" in line or "[WARN]" in line][:20],
        }


def reload_command(master_socket: Path) -> str:
    """The reload line users put after consul-template's template: ``reload`` on the master socket.

    consul-template runs it with ``sh -c``. socat is what HAProxy's docs and most scripts use; where
    it is missing, the same conversation in a Python one-liner. The bounded retry is not optional:
    HAProxy's master re-executes itself on every reload and refuses connections on its socket for a
    few milliseconds meanwhile, so a second change right after a first makes a plain
    ``echo reload | socat`` fail, and consul-template exits when its command fails (measured: it
    died on the 2nd and 3rd changes, 28 ms apart, of the first quick run). Retrying for up to 1 s is
    what a user who met that would write.
    """
    if shutil.which("socat"):
        once = f"echo reload | socat stdio unix-connect:{master_socket}"
    else:
        once = (
            f"{sys.executable} -c \"import socket; s = socket.socket(socket.AF_UNIX); "
            f"s.connect('{master_socket}'); s.sendall(b'reload\\n'); s.recv(64)\""
        )
    return (f"for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do {once} && exit 0; sleep 0.05; done; "
            "exit 1")


def find_consul_template(explicit: Path | None, install: bool) -> tuple[Path | None, str]:
    """The pinned consul-template binary, installed with ``go install`` into the cache when missing.

    Returns (path, "") or (None, the reason the mode is skipped).
    """
    if explicit is not None:
        return (explicit, "") if explicit.exists() else (None, f"--consul-template {explicit} does not exist")
    candidates = [CACHE_DIR / "bin" / "consul-template", Path.home() / "go" / "bin" / "consul-template"]
    for candidate in candidates:
        if candidate.exists() and version_of(candidate) == CONSUL_TEMPLATE_VERSION:
            return candidate, ""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        return None, "Go is not installed, so consul-template cannot be built (install Go, or pass --consul-template)"
    if not install:
        return None, "consul-template is not installed and --no-install was given"
    print(f"installing consul-template {CONSUL_TEMPLATE_VERSION} with go install into {CACHE_DIR / 'bin'} "
          "(about a minute, once) ...", flush=True)
    try:
        result = subprocess.run(
            [go, "install", f"{CONSUL_TEMPLATE_MODULE}@{CONSUL_TEMPLATE_VERSION}"],
            capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
            env={**os.environ, "GOBIN": str(CACHE_DIR / "bin")},
        )
    except subprocess.TimeoutExpired:
        return None, "go install of consul-template took longer than 15 minutes"
    if result.returncode != 0:
        return None, f"go install of consul-template failed: {result.stderr.strip()[-300:]}"
    return CACHE_DIR / "bin" / "consul-template", ""


def version_of(binary: Path) -> str:
    try:
        result = subprocess.run([str(binary), "-version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = (result.stdout + result.stderr).split()
    return words[1] if len(words) > 1 else ""
