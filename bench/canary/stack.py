"""The edge measured: devconsul, one responder per instance, the HAProxy under test and haproxy-sync.

Everything is bench/common's or the product's: devconsul in a thread (``DevConsulThread``; what is
measured is who answers, not a time, so its threads cannot bias a figure) spoken to by
:class:`~bench.common.consul.ConsulClient`; one :class:`~bench.common.backends.BackendPool` per instance
(a one-port HAProxy whose answer is the instance id: it answers ``/`` and the checks' ``/health`` with
it, at no cost to the measurement); the daemon as ``haproxy-sync run`` (:class:`~bench.common.syncers.
HaproxySync`) on a ``Workdir``'s config.toml; the HAProxy under test as a master-worker process
(:class:`~bench.common.under_test.HAProxyUnderTest`). HAProxy is read through the product's own
runtime-API readers (``haproxy.servers_state``, ``master.show_proc``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bench.common.backends import BackendPool
from bench.common.consul import ConsulClient
from bench.common.ports import HOST, free_ports
from bench.common.process import clean_env, http_get, wait_for
from bench.common.syncers import HaproxySync
from bench.common.under_test import HAProxyUnderTest
from haproxy_sync import haproxy, master
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.workdir import Workdir

SERVICE = "cabify"
TAG = "canary"
#: The file watch off, so that the SIGHUP re-reads the edited config.toml (with the watch on, the edit
#: alone would, and the SIGHUP after it would re-read a file already applied).
SETTINGS = {"sync": {"watch_files": False}}
CHECK = {"Interval": "1s", "Timeout": "1s"}
REREAD = "SIGHUP: configuration and template re-read"
WEIGHTS_ONLY = "only canary shares changed: weights, no reload"


class Edge:
    """The stack for ``stable`` stable ids and ``canaries`` canary ids (responders for all started; only
    the stable ones and the first canary registered), haproxy-sync at canary share ``share`` (config text).

    Started when made; :meth:`stop` stops everything it started, last first (also when starting failed).
    """

    def __init__(self, root: Path, binary: str, stable: list[str], canaries: list[str], share: str,
                 say: Callable[[str], None], timeout: float = 60.0) -> None:
        self.root = root
        self.stable, self.canaries = list(stable), list(canaries)
        self._exits = contextlib.ExitStack()
        try:
            self._start(binary, share, say, timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, binary: str, share: str, say: Callable[[str], None], timeout: float) -> None:
        self.consul = DevConsulThread(port=0)
        self.consul.start()
        self._exits.callback(self.consul.stop)
        self.api = ConsulClient(self.consul.url)
        self._exits.callback(self.api.close)
        self.ports: dict[str, int] = {}
        for instance in self.stable + self.canaries:
            pool = BackendPool(self.root / "instances" / instance, 1, answer=instance, binary=binary)
            self._exits.callback(pool.stop)
            self.ports[instance] = pool.ports[0]
        self.by_port = {port: instance for instance, port in self.ports.items()}
        say(f"  {len(self.ports)} responders answering their id on ports {min(self.by_port)}..{max(self.by_port)}")
        for instance in self.stable:
            self.register(instance, canary=False)
        self.register(self.canaries[0], canary=True)
        wait_for(lambda: self.passing() == len(self.stable) + 1, timeout, "devconsul's checks of the instances to pass")
        http_port, stats_port, metrics_port = free_ports(3)
        self.workdir = Workdir(self.root / "edge", self.consul.url, http_port, stats_port, metrics_port=metrics_port,
                               haproxy_binary=binary, services=(service_table(share),), settings=SETTINGS)
        self.daemon = HaproxySync(self.workdir, env=clean_env(PYTHONUNBUFFERED="1"))
        self.daemon.initial_render()
        self.haproxy = HAProxyUnderTest(self.workdir.root, binary)
        self._exits.callback(self.haproxy.stop)
        self.haproxy.start()
        self._exits.callback(self.daemon.stop)
        self.daemon.start()
        self.daemon.wait_ready(timeout)
        say(f"  haproxy-sync ready (pid {self.daemon.pid}), HAProxy master pid {self.haproxy.master_pid}, "
            f"edge on {HOST}:{http_port}")

    @property
    def http_port(self) -> int:
        return self.workdir.http_port

    # --- Consul ---

    def register(self, instance: str, canary: bool) -> None:
        """Register (or re-register: a promotion) ``instance`` with an HTTP check, tagged ``canary`` or not."""
        port = self.ports[instance]
        self.api.put("/v1/agent/service/register", {
            "ID": instance, "Name": SERVICE, "Address": HOST, "Port": port, "Tags": [TAG] if canary else [],
            "Check": {"HTTP": f"http://{HOST}:{port}/health", **CHECK},
        })

    def deregister(self, instance: str) -> None:
        self.api.put(f"/v1/agent/service/deregister/{instance}")

    def passing(self) -> int:
        """Instances of the service whose every check passes in devconsul."""
        return sum(1 for entry in self.api.health(SERVICE)
                   if all(check.get("Status") == "passing" for check in entry.get("Checks", [])))

    # --- haproxy-sync ---

    def set_share(self, share: str) -> None:
        """Edit config.toml to ``share`` and send the daemon SIGHUP, as an operator would."""
        self.workdir = dataclasses.replace(self.workdir, services=(service_table(share),))
        self.workdir.write()
        os.kill(self.daemon.pid, signal.SIGHUP)

    def rereads(self) -> list[str]:
        """The daemon's log lines saying a SIGHUP re-read the config, oldest first."""
        return [line for line in self.daemon.log_lines() if REREAD in line]

    def daemon_share(self) -> float | None:
        """The share the daemon says its weights give (``/status``'s ``canary_shares``), None if it says none."""
        status, body = http_get(f"{self.workdir.metrics_url}/status", 5.0)
        if status != 200:
            return None
        try:
            shares: Mapping[str, Any] = json.loads(body).get("canary_shares", {})
        except (ValueError, AttributeError):
            return None
        value = shares.get(SERVICE)
        return float(value) if value is not None else None

    def alive(self) -> bool:
        return self.daemon.alive()

    # --- HAProxy ---

    def serving(self) -> dict[str, int]:
        """Instance id -> HAProxy's weight, for the servers taking new requests (up, weight above 0)."""
        try:
            states = haproxy.servers_state(self.workdir.stats_socket, SERVICE)
        except haproxy.SocketError:
            return {}
        return {self.by_port.get(s.port, f"port {s.port}"): s.weight for s in states if s.up and s.weight > 0}

    def master(self, timeout: float = 10.0) -> master.ProcInfo:
        """The master's ``show proc`` (its reload counter, its worker); its socket blinks during a
        re-exec, so retried within ``timeout``."""

        def read() -> master.ProcInfo | None:
            try:
                return master.show_proc(self.workdir.master_socket)
            except haproxy.SocketError:
                return None

        return wait_for(read, timeout, "HAProxy's master socket to answer show proc")

    def stop(self) -> None:
        self._exits.close()


def service_table(share: str) -> dict[str, str]:
    """The ``[[services]]`` table of the measured service at canary share ``share`` (config text, ``10%``)."""
    return {"name": SERVICE, "canary_tag": TAG, "canary_share": share}
