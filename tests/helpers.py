"""Test helpers shared by the integration tests: real processes, real sockets, bounded waits."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import jinja2

from haproxy_sync import haproxy, logs, master
from haproxy_sync.catalog import Service
from haproxy_sync.config import Settings
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.process import HAProxyProcess
from haproxy_sync.dev.workdir import Workdir, WorkdirPaths, merged, parse_sections
from haproxy_sync.pipeline import Prepared, observe, prepare
from haproxy_sync.render import load_template

T = TypeVar("T")


def prepared_for(settings: Settings, *services: Service, template: jinja2.Template | None = None,
                 discovered: frozenset[str] = frozenset()) -> Prepared:
    """What a first start of the daemon prepares for ``services`` (no live config), with the features
    of the HAProxy binary the settings name: the product's own pipeline, not a copy of it."""
    observed = observe(settings, {s.name: s for s in services}, discovered)
    template = template if template is not None else load_template(settings.template_path())
    return prepare(settings, template, haproxy.features(settings.haproxy.binary), observed.routing,
                   observed.snapshot)


def haproxy_version() -> tuple[int, int]:
    """(major, minor) of the HAProxy the tests run (``haproxy -v``), for tests of version-specific answers."""
    binary = haproxy.find_binary("haproxy")
    assert binary, "haproxy is not installed"
    first = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    match = re.search(r"version (\d+)\.(\d+)", first)
    assert match, f"cannot read the version from {first[:80]!r}"
    return int(match.group(1)), int(match.group(2))


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.05, what: str = "") -> T:
    """Poll until ``predicate`` returns something truthy; fail the test with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate} (last value {last!r})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def operator_command(socket_path: Path, line: str) -> str:
    """What an operator types on the admin socket (``disable server``...): raw text, not haproxy-sync's."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(socket_path))
        sock.send(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def consul_put(base_url: str, path: str, body: Any = None) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(f"{base_url}{path}", data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200, response.read()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's checks and killed keep-alive clients reset connections; that is normal here


class App:
    """A backend instance in a thread: ``/`` answers its id, ``/health`` answers ``health_status``."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.health_status = 200
        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out as two writes: with Nagle's algorithm on, the body waits for the
            # peer's delayed ACK, and every keep-alive request took 40 ms instead of 0.4.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                status = app.health_status if self.path == "/health" else 200
                body = f"{app.instance_id}\n".encode()
                if self.path.startswith("/stream="):  # a long-lived stream: one line every 0.1 s
                    lines = [b"%s %d\n" % (body.strip(), i) for i in range(int(float(self.path[8:]) * 10))]
                    self.send_response(200)
                    self.send_header("Content-Length", str(sum(map(len, lines))))
                    self.end_headers()
                    for piece in lines:
                        self.wfile.write(piece)
                        self.wfile.flush()
                        time.sleep(0.1)
                    return
                if self.path.startswith("/slow"):  # an in-flight request that outlives a change
                    time.sleep(float(self.path.rpartition("=")[2] or 2))
                if self.path == "/health":  # check output that changes every time, as real apps' do
                    body = f"{app.instance_id} {time.monotonic_ns()}\n".encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def register(consul_url: str, app: App, service: str = "cabify", interval: str = "200ms",
             status: str = "", **extra: Any) -> None:
    """Register ``app`` with an HTTP check; ``status`` sets the check's first status (Consul: critical)."""
    check = {"HTTP": f"http://127.0.0.1:{app.port}/health", "Interval": interval, "Timeout": "1s"}
    if status:
        check["Status"] = status
    consul_put(consul_url, "/v1/agent/service/register", {
        "ID": app.instance_id, "Name": service, "Address": "127.0.0.1", "Port": app.port, "Check": check, **extra,
    })


def health(consul_url: str, service: str = "cabify") -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{consul_url}/v1/health/service/{service}", timeout=5) as response:
        return json.loads(response.read())


def all_passing(consul_url: str, count: int, service: str = "cabify") -> bool:
    entries = health(consul_url, service)
    return len(entries) == count and all(
        all(c["Status"] == "passing" for c in e["Checks"]) for e in entries
    )


@dataclass
class Layout(WorkdirPaths):
    """Paths and ports of one test's HAProxy + daemon, all in its own temp dir."""

    root: Path
    consul_url: str
    http_port: int = field(default_factory=free_port)
    stats_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    services: tuple[str, ...] = ("cabify",)
    template: Path | None = None
    extra: str = ""  # lines added to the [sync] section
    consul_wait: str = "5s"
    quiescence: tuple[str, str] = ("10ms", "200ms")  # sync.wait_min, sync.wait_max
    service_options: str = ""  # lines added to every [[services]] table

    def workdir(self) -> Workdir:
        """This layout as the sandbox's and benches' one config writer sees it."""
        haproxy_keys: dict[str, Any] = {"binary": haproxy.find_binary("haproxy")}
        if self.template:
            haproxy_keys["template"] = str(self.template)
        settings = merged(
            {"consul": {"backoff_max": "2s", "wait": self.consul_wait}, "haproxy": haproxy_keys,
             "metrics": {"stale_after": "2s"},
             "sync": {"wait_min": self.quiescence[0], "wait_max": self.quiescence[1]}},
            parse_sections(self.extra, "sync"),
        )
        options = tomllib.loads(self.service_options)
        return Workdir(self.root, self.consul_url, self.http_port, self.stats_port, self.metrics_port,
                       services=tuple({"name": name, **options} for name in self.services), settings=settings)

    def write(self) -> Path:
        return self.workdir().write()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def servers(self, backend: str = "cabify") -> tuple[haproxy.ServerState, ...]:
        return haproxy.servers_state(self.stats_socket, backend)

    def serving_ports(self, backend: str = "cabify") -> set[int]:
        """Ports of the servers taking new requests (up, weight above 0); empty while the backend
        does not exist yet. Slots are named slot1..N, so tests identify instances by their port."""
        try:
            return {s.port for s in self.servers(backend) if s.up and s.weight > 0}
        except haproxy.SocketError:
            return set()

    def reloads(self) -> int:
        """The master's reload counter; its socket blinks while it re-executes itself, so retry."""

        def read() -> int | None:
            try:
                return master.show_proc(self.master_socket).reloads + 1
            except haproxy.SocketError:
                return None

        return wait_until(read, 5, what="the master socket") - 1


def cli(*args: str, timeout: float = 30.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``haproxy-sync`` console entry in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "haproxy_sync.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    )


class DaemonProcess:
    """``haproxy-sync run`` as a real process, its stderr collected in a file."""

    def __init__(self, config: Path, log_path: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = log_path
        self.log_handle = log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "haproxy_sync.cli", "run", "--config", str(config), *args],
            stdout=self.log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 10.0, count: int = 1) -> str:
        return wait_until(lambda: self.log().count(text) >= count and self.log(), timeout,
                          what=f"{text!r} x{count} in daemon log")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 5.0) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self.log_handle.close()
        return self.process.returncode


def HAProxyProcess_for(layout: Layout) -> HAProxyProcess:
    """Start a master-worker HAProxy from the layout's haproxy.cfg; the caller stops it."""
    binary = haproxy.find_binary("haproxy")
    assert binary, "haproxy is not installed"
    process = HAProxyProcess(binary, layout.haproxy_cfg, layout.master_socket, layout.root / "haproxy.log")
    process.start()
    return process


@contextlib.contextmanager
def running_haproxy(layout: Layout) -> Iterator[HAProxyProcess]:
    process = HAProxyProcess_for(layout)
    try:
        yield process
    finally:
        process.stop()


class Stack:
    """devconsul + N apps registered as cabify + HAProxy + the daemon, for one test."""

    def __init__(self, tmp_path: Path, consul: Any, apps: list[App], stack: contextlib.ExitStack, **layout: Any):
        self.consul = consul
        self.apps = apps
        self.layout = Layout(tmp_path, consul.url, **layout)
        self.layout.write()
        for app in apps:
            register(consul.url, app)
        wait_until(lambda: all_passing(consul.url, len(apps)), 10, what="all checks passing in devconsul")
        once = cli("run", "--once", "--config", str(self.layout.config_toml))
        assert once.returncode == 0, once.stderr
        self.haproxy = stack.enter_context(running_haproxy(self.layout))
        self.daemon = DaemonProcess(self.layout.config_toml, tmp_path / "daemon.log")
        stack.callback(self.daemon.stop)
        self.daemon.wait_for_log("applied ", timeout=30)  # a first apply on a loaded 2-core host

    def scrape(self) -> dict[str, float]:
        """The daemon's /metrics now: each sample (name with its labels) and its value."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.layout.metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def metric(self, name: str) -> float:
        """One sample of :meth:`scrape`; 0 for a labelled counter not counted yet."""
        return self.scrape().get(name, 0.0)

    def serving(self, backend: str = "cabify", apps: list | None = None) -> set[str]:
        """Instance ids HAProxy sends new requests to, read from the runtime socket."""
        by_port = {app.port: app.instance_id for app in (apps or self.apps)}
        return {by_port.get(port, f"?{port}") for port in self.layout.serving_ports(backend)}


_FIELD_NAMES = "|".join(logs.FIELDS)
_TRAILING_FIELDS = re.compile(rf'(?: (?:{_FIELD_NAMES})=(?:"(?:[^"\\]|\\.)*"|\S+))+$')


def sentence(line: str) -> str:
    """A text log line's sentence without the ``key=value`` fields the formatter appends after it."""
    return _TRAILING_FIELDS.sub("", line)


@contextlib.contextmanager
def devconsul() -> Iterator[DevConsulThread]:
    """A devconsul of its own, on a free port, over real HTTP, stopped on the way out.

    With Consul's check_update_interval = 0: every check result reaches the catalog at once, output-only
    ones included, so check output noise moves the index as often as it can (the harshest Consul for a
    client that must not render on it). devconsul's default is Consul's 5m, which defers those.
    """
    server = DevConsulThread(port=0, check_update_interval=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()
