"""``haproxy-sync dev``: devconsul, app instances, HAProxy and the daemon on 127.0.0.1, in one command.

Each app instance is a separate process (so an operator can ``kill`` one and watch it leave the
rotation), registered in devconsul as ``cabify`` with a real HTTP check. HAProxy runs in master-worker
mode from a runtime directory; the daemon runs in this process's event loop. Every process started
here is stopped on Ctrl-C or SIGTERM, and a temporary runtime directory is removed.

"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from haproxy_sync import haproxy
from haproxy_sync.config import SCHEMA, Settings, load_settings
from haproxy_sync.daemon import Daemon
from haproxy_sync.dev.certificate import self_signed
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.ports import bind_problem
from haproxy_sync.dev.process import HAProxyProcess
from haproxy_sync.dev.workdir import Workdir
from haproxy_sync.pipeline import run_once
from haproxy_sync.wiring import run_process

log = logging.getLogger(__name__)
SERVICE = "cabify"
#: A branch environment, found by its tag and routed by its meta: discovery at work from the first minute.
BRANCH_SERVICE = "cabify-feature-x"
BRANCH_HOST = "feature-x.localhost"  # *.localhost resolves to 127.0.0.1 (RFC 6761), so curl reaches it
CANARY_TAG = "canary"
CANARY_HEADER = "X-Canary"


def free_port(host: str = "127.0.0.1", avoid: frozenset[int] = frozenset()) -> int:
    """A port the kernel has free now, never one of ``avoid`` (ports the sandbox binds later itself)."""
    while True:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


@dataclass
class AppInstance:
    instance_id: str
    port: int
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "haproxy_sync.dev.app", "--port", str(self.port), "--id", self.instance_id],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(3)


def consul_put(base_url: str, path: str, body: object | None = None, timeout: float = 5.0) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    request = urllib.request.Request(f"{base_url}{path}", data=data, method="PUT")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def register_instance(
    base_url: str, instance: AppInstance, service: str = SERVICE, interval: str = "1s", *,
    tags: tuple[str, ...] = (), meta: dict[str, str] | None = None,
) -> None:
    consul_put(base_url, "/v1/agent/service/register", {
        "ID": instance.instance_id,
        "Name": service,
        "Address": "127.0.0.1",
        "Port": instance.port,
        "Tags": ["sandbox", *tags],
        "Meta": meta or {},
        "Check": {"HTTP": f"http://127.0.0.1:{instance.port}/health", "Interval": interval, "Timeout": "1s"},
    })


@dataclass
class Sandbox:
    instances: int = 7
    http_port: int = 8080
    consul_port: int = 8500
    stats_port: int = 8404
    metrics_port: int = 9725
    workdir: Path | None = None
    haproxy_binary: str = "haproxy"
    log_level: str = "info"
    canary_share: str = ""  # with a share: one canary instance of cabify gets it (and the canary header)
    https_port: int = 8443  # 0: no HTTPS
    apps: list[AppInstance] = field(default_factory=list)

    def settings(self, workdir: Path, consul_address: str) -> Settings:
        service: dict[str, str] = {"name": SERVICE}
        settings: dict[str, dict[str, object]] = {"log": {"level": self.log_level}}
        if self.canary_share:
            service |= {"canary_tag": CANARY_TAG, "canary_share": self.canary_share}
            settings["haproxy"] = {"canary_header": CANARY_HEADER}
        if self.https_port:
            certs = workdir / "certs"
            certs.mkdir(exist_ok=True)
            (certs / "default.pem").write_bytes(self_signed())
            settings["tls"] = {"enabled": True, "cert_dir": str(certs), "store_dir": str(workdir / "store"),
                               "bind": f"127.0.0.1:{self.https_port}"}
        config = Workdir(
            workdir, consul_address, self.http_port, self.stats_port, self.metrics_port or None,
            haproxy_binary=self.haproxy_binary, services=(service,), settings=settings,
        ).write()
        return load_settings(config, env={})

    def run(self) -> int:
        # HAProxy binds with SO_REUSEPORT: a second one on a busy port starts fine and silently shares
        # it with whatever is there. Check first, with a plain bind that fails on a busy port.
        for flag, port in (("--http-port", self.http_port), ("--https-port", self.https_port),
                           ("--stats-port", self.stats_port),
                           ("--consul-port", self.consul_port), ("--metrics-port", self.metrics_port)):
            problem = bind_problem("127.0.0.1", port, flag) if port else None
            if problem:
                raise haproxy.HAProxyError(problem)
        with self._workdir() as workdir, _terminate_as_interrupt():
            consul = DevConsulThread(port=self.consul_port)
            hap: HAProxyProcess | None = None
            try:
                consul.start()
                settings = self.settings(workdir, consul.url)
                self._start_apps(consul.url)
                applied, sentence = asyncio.run(run_once(settings))
                if not applied:
                    raise haproxy.HAProxyError(f"first render failed: {sentence}")
                hap = HAProxyProcess(
                    self.haproxy_binary, settings.haproxy.config_path, settings.haproxy.master_socket,
                    log_path=workdir / "haproxy.log",
                )
                hap.start()
                self._print_summary(settings, consul.url, workdir)
                # SIGHUP and edits re-read the file as it is now; writing it again would undo an edit
                # and, with the file watched, trigger the next re-read.
                source = settings.source
                return run_process(Daemon(settings, reload_settings=lambda: load_settings(source, env={})))
            except KeyboardInterrupt:
                return 0
            finally:
                log.info("sandbox: stopping HAProxy, %d app instances and devconsul", len(self.apps))
                if hap is not None:
                    hap.stop()
                for app in self.apps:
                    app.stop()
                consul.stop()

    def _start_apps(self, consul_url: str) -> None:
        # HAProxy binds its ports after the apps start: an app must not take one of them first.
        taken = frozenset({self.http_port, self.https_port, self.stats_port, self.metrics_port, self.consul_port})
        for number in range(1, self.instances + 1):
            app = AppInstance(f"{SERVICE}-{number}", free_port(avoid=taken))
            app.start()
            self.apps.append(app)
        branch = AppInstance(f"{BRANCH_SERVICE}-1", free_port(avoid=taken))
        branch.start()
        self.apps.append(branch)
        canary = AppInstance(f"{SERVICE}-{CANARY_TAG}-1", free_port(avoid=taken)) if self.canary_share else None
        if canary is not None:
            canary.start()
            self.apps.append(canary)
        deadline = time.monotonic() + 10
        for app in self.apps:
            while not _answers(app.port):
                if time.monotonic() > deadline:
                    raise haproxy.HAProxyError(f"app instance {app.instance_id} did not start on port {app.port}")
                time.sleep(0.05)
            if app is branch:
                register_instance(consul_url, app, BRANCH_SERVICE, tags=(str(SCHEMA['discovery']['tag'].default),),
                                  meta={"haproxy-sync-host": BRANCH_HOST})
            elif app is canary:
                register_instance(consul_url, app, tags=(CANARY_TAG,))
            else:
                register_instance(consul_url, app)
        time.sleep(0.3)  # devconsul runs each new HTTP check promptly; let the first round land

    @contextlib.contextmanager
    def _workdir(self) -> Iterator[Path]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            yield self.workdir
            return
        path = Path(tempfile.mkdtemp(prefix="haproxy-sync-dev-"))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def _print_summary(self, settings: Settings, consul_url: str, workdir: Path) -> None:
        hap = settings.haproxy
        pids = ", ".join(f"{a.instance_id}={a.process.pid}" for a in self.apps if a.process)
        lines = [
            "",
            "haproxy-sync sandbox is up (Ctrl-C stops everything):",
            f"  HAProxy        http://127.0.0.1:{self.http_port}/",
            *([f"  HTTPS          https://localhost:{self.https_port}/   (self-signed for localhost and *.localhost: "
               f"{settings.tls.cert_dir}/default.pem)"] if self.https_port else []),
            f"  stats          http://{hap.stats_bind}/stats   (Prometheus: http://{hap.stats_bind}/metrics)",
            f"  Consul API     {consul_url}   (CONSUL_HTTP_ADDR={consul_url})",
            f"  haproxy-sync   http://{settings.metrics.listen}/metrics   (/health, /ready, /status)"
            if settings.metrics.listen else "  haproxy-sync   metrics off",
            f"  runtime API    {hap.stats_socket}",
            f"  master socket  {hap.master_socket}",
            f"  haproxy.cfg    {hap.config_path}",
            f"  HAProxy log    {workdir / 'haproxy.log'}",
            f"  app instances  {pids}",
            "",
            "Try:",
            f"  curl -s http://127.0.0.1:{self.http_port}/",
            f"  kill {self.apps[0].process.pid if self.apps and self.apps[0].process else 'PID'}"
            "                      # an instance dies: its check fails, it leaves the rotation",
            f"  curl -X PUT {consul_url}/v1/agent/service/deregister/{SERVICE}-2",
            f"  curl -s http://{BRANCH_HOST}:{self.http_port}/"
            "        # a branch: found by its tag, routed by its meta host",
            f"  echo 'show servers state' | socat stdio {hap.stats_socket}",
        ]
        if self.https_port:
            lines += [
                f"  curl -sk https://localhost:{self.https_port}/   # HTTPS, the same routes",
                f"  curl -sk https://{BRANCH_HOST}:{self.https_port}/",
            ]
        if self.canary_share:
            lines += [
                f"  for i in $(seq 200); do curl -s http://127.0.0.1:{self.http_port}/; done | sort | uniq -c"
                f"   # {SERVICE}-{CANARY_TAG}-1 gets {self.canary_share}",
                f"  curl -s -H '{CANARY_HEADER}: always' http://127.0.0.1:{self.http_port}/"
                "   # the canary alone",
                f"  curl -s http://{settings.metrics.listen}/status   # canary_shares: the share in force",
            ]
        lines.append("")
        print("\n".join(lines), flush=True)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM during set-up unwinds like Ctrl-C, so no child process is left behind."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
