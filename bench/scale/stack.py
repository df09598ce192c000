"""The processes of one (size, tool) run: devconsul, a backend pool, the HAProxy under test, the tool.

Why each part is what it is:

* devconsul runs as its own process (``python -m haproxy_sync.dev.devconsul``, bench/churn's
  :class:`~bench.churn.stack.Consul`): it serves thousands of blocking queries, and sharing the
  orchestrator's interpreter would put its work into the timings. It is filled and changed through
  its bulk endpoints (``/v1/devconsul/bulk/*``): one catalog write per call, so 30,000 registrations
  take about a second and a burst is not slowed by devconsul reconciling its catalog per instance.
* The backends are bench/churn's :class:`~bench.churn.stack.BackendPool` (a second HAProxy answering
  200 on a few ports); they are not what is measured.
* The HAProxy under test starts from a small placeholder config (a frontend that answers 503), the
  way a host's HAProxy runs before the tool's first render. Both tools then apply their first full
  config by a reload of that running master, so "cold start" ends at the same event for both.
* HAProxy's own health checks are off in both configs by default (``--health-checks`` turns them on
  in both): 30,000-60,000 servers checked every 2 s would have HAProxy flood the pool with about
  15,000-30,000 checks a second on this 2-core machine, and the CPU that takes from the tools would
  be charged to them.

Every child runs in its own session and every start, stop and wait is bounded (bench/churn's
:class:`~bench.churn.stack.Proc` and :func:`~bench.churn.stack.wait_for`). Everything listens on and
talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.churn.stack import (
    HOST,
    BackendPool,
    Consul,
    Proc,
    StackError,
    clean_env,
    free_ports,
    wait_for,
)
from haproxy_sync import haproxy

from .catalog import DEFAULT_SERVICE, HOST_META, TAG, Catalog

HERE = Path(__file__).resolve().parent
BULK_REGISTER = 5000  # registrations per bulk call: ~0.3 s each, well inside the client's timeout


class ScaleConsul(Consul):
    """devconsul in a subprocess, filled and changed with its bulk endpoints."""

    def bulk(self, path: str, body: Any, timeout: float = 60.0) -> dict[str, Any]:
        """One bulk call on a fresh connection with a long timeout (big bodies, busy server)."""
        import http.client

        conn = http.client.HTTPConnection(HOST, self.port, timeout=timeout)
        try:
            conn.request("PUT", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        if response.status != 200:
            raise StackError(f"devconsul PUT {path} answered {response.status}: {answer[:300]!r}")
        result: dict[str, Any] = json.loads(answer)
        return result

    def populate(self, catalog: Catalog) -> float:
        """Register the whole catalog; returns the seconds it took."""
        started = time.monotonic()
        bodies = catalog.registrations()
        for start in range(0, len(bodies), BULK_REGISTER):
            self.bulk("/v1/devconsul/bulk/register", bodies[start:start + BULK_REGISTER])
        return time.monotonic() - started

    def weights_over_time(self, writes: tuple[dict[str, tuple[int, int]], ...], interval: float) -> list[float]:
        """The burst: devconsul makes these writes ``interval`` apart on its own loop; returns their Unix times.

        Timed inside devconsul rather than by separate calls from here, because between two writes
        devconsul is busy answering the blocking queries the first one woke, and a call queued behind
        those answers would land late: the burst would be spread by devconsul's speed, not by design.
        """
        body = {"interval": interval, "writes": [
            {instance_id: {"Passing": passing, "Warning": warning} for instance_id, (passing, warning)
             in weights.items()} for weights in writes]}
        answer = self.bulk("/v1/devconsul/bulk/weights-over-time", body, timeout=120.0)
        return [float(item["time"]) for item in answer["writes"]]


# --- the HAProxy under test ---


PLACEHOLDER = """\
# The HAProxy under test before the tool's first render: a master-worker with nothing routed.
global
    master-worker
    log stderr format short local0 notice
    maxconn 2000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend http
    bind {bind}
    http-request return status 503 content-type text/plain string "placeholder"
"""


class Target:
    """Where the HAProxy under test listens and keeps its files, in the run's own directory."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port, self.stats_port = free_ports(2)
        self.config = workdir / "haproxy.cfg"
        self.master_socket = workdir / "master.sock"
        self.stats_socket = workdir / "admin.sock"
        self.process: haproxy.HAProxyProcess | None = None
        self.first_worker: int | None = None

    def start(self) -> None:
        """Start HAProxy on the placeholder config; remembers the worker the tool's reload must replace."""
        binary = haproxy.find_binary("haproxy")
        if binary is None:
            raise StackError("HAProxy is not installed (apt-get install haproxy)")
        self.config.write_text(PLACEHOLDER.format(bind=f"{HOST}:{self.http_port}"))
        self.process = haproxy.HAProxyProcess(binary, self.config, self.master_socket, self.workdir / "haproxy.log")
        try:
            info = self.process.start()
        except haproxy.HAProxyError as exc:
            raise StackError(f"HAProxy under test: {exc}") from None
        self.first_worker = info.current_worker

    @property
    def master_pid(self) -> int:
        assert self.process is not None and self.process.process is not None
        return self.process.process.pid

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def restart(self) -> None:
        """Back to how :meth:`start` left it: a new master and worker on the same placeholder config.

        For the cold start's repeats (runner.cold_starts). A restart rather than a reload to the
        placeholder: a reload would leave the master's reload counter moved and the worker that ran
        the full config (tens of thousands of servers) exiting during the next measurement; a new
        master starts exactly as the first did. The sockets go with the process (a stale file would
        refuse connections where the first start found none).
        """
        self.stop()
        for path in (self.master_socket, self.stats_socket):
            path.unlink(missing_ok=True)
        self.start()


def count_backends(config_text: str) -> int:
    return sum(1 for line in config_text.splitlines() if line.startswith("backend "))


def count_servers(config_text: str) -> tuple[int, int]:
    """(server lines, server lines not ``disabled``) of a config."""
    servers = [line for line in config_text.splitlines() if line.lstrip().startswith("server ")]
    return len(servers), sum(1 for line in servers if not re.search(r"\sdisabled(\s|$)", line.split("#")[0]))


# --- the tools ---


class Tool:
    """What keeps the target in step with Consul, started as its users start it."""

    key = ""
    label = ""
    proc: Proc | None = None
    started_at = 0.0  # time.monotonic() when start() was called

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()

    def logs(self) -> list[Path]:
        """Files the tool appends to over its run (set aside between cold-start repeats)."""
        return []


def template_without_checks(source: Path) -> str:
    """haproxy-sync's default template with ``check`` taken off its ``server`` lines.

    Derived at run time rather than copied, so the benchmark keeps measuring the template users get,
    whatever it becomes; only HAProxy's own health checks go (see the module docstring).
    """
    text = source.read_text()
    stripped, count = re.subn(r"^(\s*server\b[^\n]*?)\s+check\b", r"\1", text, flags=re.MULTILINE)
    if count == 0:
        raise StackError(f"found no `server ... check` line to take checks off in {source}; "
                         "run with --health-checks, or update bench/scale/stack.py")
    return stripped


class HaproxySync(Tool):
    """``haproxy-sync run`` with discovery by tag, the default template and default sync settings."""

    key = "haproxy-sync"
    label = "haproxy-sync"

    def __init__(self, target: Target, consul: Consul, health_checks: bool,
                 extra: tuple[tuple[str, str, str], ...] = ()) -> None:
        from haproxy_sync.config import default_template_path

        self.target = target
        (self.metrics_port,) = free_ports(1)
        workdir = target.workdir
        hap: list[str] = [
            f'binary = "{haproxy.find_binary("haproxy")}"', f'config_path = "{target.config}"',
            f'master_socket = "{target.master_socket}"', f'stats_socket = "{target.stats_socket}"',
            f'server_state_file = "{workdir / "server-state"}"',
            f'http_bind = "{HOST}:{target.http_port}"', f'stats_bind = "{HOST}:{target.stats_port}"',
            'user = ""', 'group = ""', 'log_target = "stderr format short local0 notice"',
        ]
        if not health_checks:
            template = workdir / "haproxy.cfg.j2"
            template.write_text(template_without_checks(default_template_path()))
            hap.append(f'template = "{template}"')
        sections: dict[str, list[str]] = {
            "log": ['level = "info"'],
            "consul": [f'address = "{consul.url}"', 'backoff_max = "2s"'],
            "discovery": ["enabled = true", f'tag = "{TAG}"'],
            "haproxy": hap,
            "metrics": [f'listen = "{HOST}:{self.metrics_port}"'],
            "sync": ['networks = ["127.0.0.0/8"]'],  # the bench's backends run on this machine
        }
        for section, key, value in extra:  # --haproxy-sync-set: experiments only, recorded in the JSON
            lines = sections.setdefault(section, [])
            lines[:] = [line for line in lines if line.split(" = ")[0] != key] + [f"{key} = {value}"]
        self.config_toml = workdir / "config.toml"
        self.config_toml.write_text(
            "".join(f"[{name}]\n" + "".join(f"{line}\n" for line in lines) for name, lines in sections.items())
            + f'[[services]]\nname = "{DEFAULT_SERVICE}"\n'
        )
        self.log_path = workdir / "haproxy-sync.log"
        self.metrics_url = f"http://{HOST}:{self.metrics_port}"

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "haproxy_sync.cli", *args, "--config", str(self.config_toml)]

    def start(self) -> None:
        self.proc = Proc(self.key, self.argv("run"), self.log_path, env=clean_env())

    def logs(self) -> list[Path]:
        return [self.log_path]

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []


CONSUL_TEMPLATE_SOURCE = HERE / "scale.ctmpl"


class ConsulTemplate(Tool):
    """The real consul-template with one template over every tagged service and a reload command."""

    key = "consul-template"
    label = "consul-template"

    def __init__(self, binary: Path, target: Target, consul: Consul, health_checks: bool) -> None:
        self.binary = binary
        self.target = target
        workdir = target.workdir
        self.source = workdir / "haproxy.ctmpl"
        self.source.write_text(
            CONSUL_TEMPLATE_SOURCE.read_text()
            .replace("@STATS_SOCKET@", str(target.stats_socket))
            .replace("@HTTP_BIND@", f"{HOST}:{target.http_port}")
            .replace("@TAG@", TAG)
            .replace("@HOST_META@", HOST_META)
            .replace("@DEFAULT_SERVICE@", DEFAULT_SERVICE)
            .replace("@CHECK@", " check" if health_checks else "")
        )
        self.reloads_log = workdir / "reloads.log"
        self.reload_command = reload_command(target.master_socket, self.reloads_log)
        self.log_path = workdir / "consul-template.log"
        self.env = clean_env(CONSUL_HTTP_ADDR=consul.address)

    def start(self) -> None:
        self.proc = Proc(self.key, [
            str(self.binary), "-log-level", "info",
            "-template", f"{self.source}:{self.target.config}:{self.reload_command}",
        ], self.log_path, env=self.env)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGINT)

    def logs(self) -> list[Path]:
        return [self.log_path, self.reloads_log]

    def reloads_run(self) -> int:
        """Reload commands that reached HAProxy's master (each appends one line when it did)."""
        try:
            return len(self.reloads_log.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []


def reload_command(master_socket: Path, reloads_log: Path) -> str:
    """``reload`` on the master socket, retried for up to 10 s, then one line appended to a log.

    consul-template runs it with ``sh -c`` and exits when it fails. HAProxy's master re-executes
    itself on each reload and does not answer on its socket meanwhile; with tens of thousands of
    servers that takes a good part of a second, so bench/churn's 1 s of retries is too short here
    (a user with a big config would have learned the same). The log line counts the reloads sent.
    """
    once = f"echo reload | socat stdio unix-connect:{shlex.quote(str(master_socket))}"
    if subprocess.run(["sh", "-c", "command -v socat"], capture_output=True, check=False).returncode != 0:
        once = (f"{sys.executable} -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                f"s.connect('{master_socket}'); s.sendall(b'reload\\n'); s.recv(64)\"")
    return (f"for i in $(seq 200); do if {once} >/dev/null 2>&1; then "
            f"date +%s.%N >> {shlex.quote(str(reloads_log))}; exit 0; fi; sleep 0.05; done; exit 1")


def stop_all(parts: list[Any]) -> None:
    """Stop what was started, last first; one failing stop does not keep the others running."""
    for part in reversed(parts):
        with contextlib.suppress(Exception):
            part.stop()


__all__ = [
    "BackendPool",
    "ConsulTemplate",
    "HaproxySync",
    "ScaleConsul",
    "StackError",
    "Target",
    "Tool",
    "count_backends",
    "count_servers",
    "stop_all",
    "wait_for",
]
