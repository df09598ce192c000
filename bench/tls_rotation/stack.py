"""The stacks measured: the backends both modes share, and one edge per mode.

Everything is bench/common's or the product's. :class:`Backends`: devconsul in a thread
(``DevConsulThread``: what is timed is HAProxy's, not Consul's) spoken to by
:class:`~bench.common.consul.ConsulClient`, and a :class:`~bench.common.backends.BackendPool` (a small
HAProxy answering 200 on a few ports) registered as the instances of service ``cabify``.

:class:`RuntimeEdge` (mode A, haproxy-sync's way): ``haproxy-sync run`` (:class:`~bench.common.syncers.
HaproxySync`) on a ``Workdir`` config.toml with ``[tls] enabled = true``, ``cert_dir``, ``store_dir``
and ``bind``, and the master-worker HAProxy it keeps (:class:`~bench.common.under_test.HAProxyUnderTest`).
A rotation is a file renamed into ``cert_dir``; the daemon's watch does the rest.

:class:`ReloadEdge` (mode B, rotation by reload): the same config, rendered by the product's own
``haproxy-sync run --once`` with the same settings, and one change: the HTTPS bind's ``crt-list
<store>/crt-list.txt`` becomes ``crt <cert_dir>/default.pem``, a plain file. No daemon runs: HAProxy
runs that static config. A rotation is the file replaced atomically, then consul-template's reload
command (bench/common's :func:`~bench.common.syncers.reload_command`: ``reload`` on the master socket)
run with ``sh -c`` as consul-template runs it. :class:`PlainReloadEdge` (mode C, only on request) is
mode B without the rendered config's ``option idle-close-on-response``.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common.backends import BackendPool
from bench.common.consul import ConsulClient
from bench.common.ports import HOST, free_ports
from bench.common.process import StackError, clean_env, log_lines, wait_for
from bench.common.syncers import HaproxySync, overrides, reload_command
from bench.common.under_test import HAProxyUnderTest
from haproxy_sync import haproxy, master
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.workdir import Workdir, merged

from .pem import CONTEXT, Bundle, put, served

SERVICE = "cabify"
INSTANCES = 3
#: The daemon's log line for a look at the directory that changed certificates on the Runtime API.
RUNTIME_WORDS = "on the Runtime API, no reload"
#: The longest the reload command may run: its own retry budget is 10 s (200 tries 0.05 s apart), each
#: try a short Python process where socat is missing.
RELOAD_COMMAND_TIMEOUT = 30.0
_CRT_LIST = re.compile(r"\bssl crt-list \S+")
IDLE_CLOSE = "option idle-close-on-response"
_IDLE_CLOSE = re.compile(rf"^[ \t]*{IDLE_CLOSE}[ \t]*\n", re.M)
_INFO_FIELD = re.compile(r"^(Pid|CumSslConns): (\d+)$", re.M)


class Backends:
    """devconsul and the instances of ``cabify`` (a BackendPool of :data:`INSTANCES` ports), registered
    without Consul checks (passing by definition); HAProxy checks them itself. Stopped by :meth:`stop`."""

    def __init__(self, root: Path, binary: str, timeout: float) -> None:
        self._exits = contextlib.ExitStack()
        try:
            self.consul = DevConsulThread(port=0)
            self.consul.start()
            self._exits.callback(self.consul.stop)
            self.api = ConsulClient(self.consul.url)
            self._exits.callback(self.api.close)
            self.pool = BackendPool(root / "pool", INSTANCES, binary=binary)
            self._exits.callback(self.pool.stop)
            for index, port in enumerate(self.pool.ports):
                self.api.put("/v1/agent/service/register",
                             {"ID": f"{SERVICE}-{index}", "Name": SERVICE, "Address": HOST, "Port": port})
            wait_for(lambda: len(self.api.health(SERVICE)) == INSTANCES, timeout,
                     f"devconsul to list the {INSTANCES} instances of {SERVICE}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        self._exits.close()


def https_status(port: int, timeout: float = 2.0) -> int:
    """The status of ``GET /`` over HTTPS on ``port`` (0 when it fails)."""
    connection = http.client.HTTPSConnection(HOST, port, timeout=timeout, context=CONTEXT)
    try:
        connection.request("GET", "/", headers={"Host": "localhost"})
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


class Edge:
    """One mode's HAProxy (and daemon): started when made, :meth:`stop` stops what it started, last first
    (also when starting failed). ``first``: the certificate it starts with; ``extra``: (section, key, TOML
    value) settings added to haproxy-sync's config.toml (``--haproxy-sync-set``; mode B's rendered config too)."""

    mode = ""
    label = ""

    def __init__(self, root: Path, binary: str, consul_url: str, first: Bundle, timeout: float,
                 extra: Sequence[tuple[str, str, str]] = ()) -> None:
        self.root = root
        self.binary = binary
        self.cert_dir = root / "certs"
        self.cert_dir.mkdir(parents=True)
        put(self.cert_dir, first.pem)
        http_port, stats_port, metrics_port, self.https_port = free_ports(4)
        tls = {"enabled": True, "cert_dir": str(self.cert_dir), "store_dir": str(root / "store"),
               "bind": f"{HOST}:{self.https_port}"}
        self.workdir = Workdir(root, consul_url, http_port, stats_port, metrics_port=metrics_port,
                               haproxy_binary=binary, services=({"name": SERVICE},),
                               settings=merged({"tls": tls}, *overrides(extra)))
        self.haproxy = HAProxyUnderTest(root, binary)
        self._exits = contextlib.ExitStack()
        try:
            self._start(timeout)
            wait_for(lambda: served(self.https_port) == first.fingerprint, timeout,
                     f"the first certificate on {HOST}:{self.https_port} (log: {self.haproxy.log_path})")
            wait_for(lambda: https_status(self.https_port) == 200, timeout,
                     f"HTTPS GET / to answer 200 on {HOST}:{self.https_port} (log: {self.haproxy.log_path})")
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def rotate(self, bundle: Bundle) -> dict[str, Any]:
        """Put ``bundle`` in place the mode's way; ``replaced_at`` (time.monotonic()) is when
        ``default.pem`` held it, the rotation latency's start."""
        raise NotImplementedError

    def alive(self) -> bool:
        return self.haproxy.exit_code() is None

    def master(self, timeout: float = 10.0) -> master.ProcInfo:
        """The master's ``show proc``; its socket blinks while it re-executes (a reload), so retried
        within ``timeout``."""

        def read() -> master.ProcInfo | None:
            try:
                return master.show_proc(self.workdir.master_socket, timeout=2.0)
            except haproxy.SocketError:
                return None

        return wait_for(read, timeout, f"HAProxy's master socket ({self.label}) to answer show proc")

    def tls_accepted(self) -> tuple[int, int] | None:
        """(worker pid, TLS connections it accepted so far: ``CumSslConns``) from ``show info`` on the admin
        socket (the current worker answers it); None when it does not answer. Read with a socket of its
        own: the product's sender only sends the commands haproxy-sync needs, and this is not one."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(str(self.workdir.stats_socket))
                sock.sendall(b"show info\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError:
            return None
        fields = dict(_INFO_FIELD.findall(b"".join(chunks).decode(errors="replace")))
        return (int(fields["Pid"]), int(fields["CumSslConns"])) if len(fields) == 2 else None

    def daemon_cpu_seconds(self) -> float | None:
        """CPU seconds (user + system) haproxy-sync used so far (mode A); None without a daemon."""
        return None

    def runtime_changes(self) -> int | None:
        """Looks at the directory the daemon applied on the Runtime API (mode A); None without a daemon."""
        return None

    def log_tails(self, lines: int = 8) -> dict[str, list[str]]:
        return {"haproxy": log_lines(self.haproxy.log_path)[-lines:]}

    def stop(self) -> None:
        self._exits.close()


class RuntimeEdge(Edge):
    """Mode A: the daemon watches ``cert_dir`` and rotates on the Runtime API."""

    mode = "A"
    label = "haproxy-sync, Runtime API"

    def _start(self, timeout: float) -> None:
        self.daemon = HaproxySync(self.workdir, env=clean_env(PYTHONUNBUFFERED="1"))
        self.daemon.initial_render()
        self._exits.callback(self.haproxy.stop)
        self.haproxy.start()
        self._exits.callback(self.daemon.stop)
        self.daemon.start()
        self.daemon.wait_ready(timeout)

    def rotate(self, bundle: Bundle) -> dict[str, Any]:
        put(self.cert_dir, bundle.pem)
        return {"replaced_at": time.monotonic()}

    def alive(self) -> bool:
        return super().alive() and self.daemon.alive()

    def daemon_cpu_seconds(self) -> float | None:
        try:
            times = psutil.Process(self.daemon.pid).cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def runtime_changes(self) -> int:
        return sum(1 for line in self.daemon.log_lines() if RUNTIME_WORDS in line)

    def log_tails(self, lines: int = 8) -> dict[str, list[str]]:
        return {**super().log_tails(lines), "haproxy_sync": self.daemon.log_lines()[-lines:]}


class ReloadEdge(Edge):
    """Mode B: ``crt <cert_dir>/default.pem`` on the bind, replaced and reloaded; no daemon."""

    mode = "B"
    label = "reload (consul-template's way)"
    idle_close = True  # the rendered config's `option idle-close-on-response` kept

    def _start(self, timeout: float) -> None:
        HaproxySync(self.workdir, env=clean_env()).initial_render()  # the same config shape, rendered once
        text = self.haproxy.config.read_text()
        crt = self.cert_dir / "default.pem"
        text, count = _CRT_LIST.subn(f"ssl crt {crt}", text)
        if count != 1:
            raise StackError(f"expected one `ssl crt-list` bind in the rendered {self.haproxy.config}, found {count}")
        if not self.idle_close:
            text, count = _IDLE_CLOSE.subn("", text)
            if count != 1:
                raise StackError(f"expected one `{IDLE_CLOSE}` line in the rendered {self.haproxy.config}, found "
                                 f"{count}")
        self.haproxy.config.write_text(text)
        self.command = reload_command(self.workdir.master_socket)
        self._exits.callback(self.haproxy.stop)
        self.haproxy.start(validate=True)

    def rotate(self, bundle: Bundle) -> dict[str, Any]:
        put(self.cert_dir, bundle.pem)
        replaced_at = time.monotonic()
        try:
            result = subprocess.run(["sh", "-c", self.command], capture_output=True, text=True,
                                    timeout=RELOAD_COMMAND_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
            code: int | None = result.returncode
        except subprocess.TimeoutExpired:
            code = None
        return {"replaced_at": replaced_at, "reload_command_seconds": round(time.monotonic() - replaced_at, 4),
                "reload_command_exit": code}


class PlainReloadEdge(ReloadEdge):
    """Mode C (not run by default): mode B on a config without ``option idle-close-on-response``, as a
    typical consul-template template has it (bench/churn's): what that option is worth to a reload."""

    mode = "C"
    label = f"reload, without {IDLE_CLOSE}"
    idle_close = False


MODES: dict[str, type[Edge]] = {"A": RuntimeEdge, "B": ReloadEdge, "C": PlainReloadEdge}


def make_edge(mode: str) -> type[Edge]:
    return MODES[mode]
