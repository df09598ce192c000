"""Membership, health and weight changes through the Runtime API: no reload, no failed request."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy, master
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import (
    HAProxyProcess_for,
    Stack,
    consul_put,
    http_get,
    operator_command,
    register,
    running_haproxy,
    wait_until,
)

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
FAST = 'drain_timeout = "1s"\nreconcile_interval = "300ms"\n'


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(7), exits, extra=FAST)


class KeepAliveLoad:
    """A bounded keep-alive request loop through HAProxy, counting every failed request."""

    def __init__(self, port: int, connections: int = 4, max_requests: int = 20_000, max_seconds: float = 60) -> None:
        self.port, self.max_requests, self.deadline = port, max_requests, time.monotonic() + max_seconds
        self.ok = self.failed = 0
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(connections)]

    def __enter__(self) -> KeepAliveLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        while not self.stop.is_set() and time.monotonic() < self.deadline and self.ok + self.failed < self.max_requests:
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                good = response.status == 200
                detail = f"status {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                good, detail = False, repr(exc)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors.append(detail)
        conn.close()


def test_thirty_membership_changes_under_keepalive_load_fail_no_request(stack: Stack) -> None:
    reloads = stack.layout.reloads()
    with KeepAliveLoad(stack.layout.http_port) as load:
        for round_ in range(15):
            app = stack.apps[round_ % 7]
            consul_put(stack.consul.url, f"/v1/agent/service/deregister/{app.instance_id}")
            wait_until(lambda app=app: app.instance_id not in stack.serving(), 5, interval=0.01, what="removed")
            register(stack.consul.url, app)
            wait_until(lambda app=app: app.instance_id in stack.serving(), 5, interval=0.01, what="back")
        time.sleep(0.2)
    assert load.ok > 100, "the load loop really ran"
    assert load.failed == 0, load.errors[:5]
    assert stack.layout.reloads() == reloads, "30 membership changes, not one reload"
    assert stack.daemon.log().count("runtime API:") >= 30


def test_slow_request_to_a_deregistered_instance_completes(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(1), exits, extra=FAST)
        result: dict[str, object] = {}

        def slow() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", stack.layout.http_port, timeout=10)
            conn.request("GET", "/slow?s=2")
            response = conn.getresponse()
            result["status"], result["body"] = response.status, response.read().decode()
            conn.close()

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.3)
        consul_put(consul.url, f"/v1/agent/service/deregister/{stack.apps[0].instance_id}")
        wait_until(lambda: not stack.serving(), 5, what="the instance out of rotation")
        thread.join(10)
        assert result == {"status": 200, "body": f"{stack.apps[0].instance_id}\n"}


def test_slot_growth_adds_servers_at_runtime_without_a_reload(tmp_path: Path, consul: DevConsulThread,
                                                              make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(7), exits, extra=FAST)
        reloads = stack.layout.reloads()
        workers = master.show_proc(stack.layout.master_socket).workers
        assert len(stack.layout.servers()) == 14, "7 instances at start, room for twice as many"
        for app in make_apps(8):  # 15 instances do not fit in 14 slots
            register(consul.url, app)
            stack.apps.append(app)
        wait_until(lambda: len(stack.serving()) == 15, 10, what="15 servers serving")
        assert len(stack.layout.servers()) == 28
        wait_until(lambda: stack.layout.haproxy_cfg.read_text().count("    server slot") == 28, 5,
                   what="the grown backend on disk")
        time.sleep(1.5)  # past the reload budget: a reload would have shown by now
        assert stack.layout.reloads() == reloads, "growth is add server, not a reload"
        assert master.show_proc(stack.layout.master_socket).workers == workers, "the same worker throughout"
        for _ in range(30):  # every new server takes traffic with its checks on
            assert http_get(stack.layout.url("/"))[0] == 200
        up = [s for s in stack.layout.servers() if s.up and s.weight > 0]
        assert len(up) == 15
    # What the file says is what ran: a fresh HAProxy from it runs the same 28 slots and 15 servers.
    with ExitStack() as exits:
        fresh = exits.enter_context(running_haproxy(stack.layout))
        assert fresh and len(stack.layout.servers()) == 28


def test_a_backend_whose_balance_takes_no_dynamic_servers_grows_by_one_reload(
    tmp_path: Path, consul: DevConsulThread, make_apps
) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(4), exits, extra=FAST, service_options='balance = "static-rr"\n')
        reloads = stack.layout.reloads()
        for app in make_apps(5):
            register(consul.url, app)
            stack.apps.append(app)
        log = stack.daemon.wait_for_log("slots 8 -> 16 (balance static-rr takes no dynamic servers)", timeout=10)
        wait_until(lambda: len(stack.serving()) == 9, 10, what="9 servers serving")
        assert "runtime API path failed" not in log, "the planner knows what static-rr refuses; it does not try"
        assert stack.layout.reloads() > reloads


def test_weight_change_shows_without_reload(stack: Stack) -> None:
    reloads = stack.layout.reloads()
    app = stack.apps[2]
    register(stack.consul.url, app, Weights={"Passing": 7, "Warning": 1})
    wait_until(lambda: any(s.port == app.port and s.weight == 7 for s in stack.layout.servers()), 5,
               what="weight 7 in show servers state")
    assert stack.layout.reloads() == reloads
    wait_until(lambda: "weight 7" in stack.layout.haproxy_cfg.read_text(), 5, what="weight 7 on disk too")


def test_drift_made_by_hand_is_repaired(stack: Stack) -> None:
    app = stack.apps[0]
    (slot,) = [s.name for s in stack.layout.servers() if s.port == app.port]
    operator_command(stack.layout.stats_socket, f"disable server cabify/{slot}")
    stack.daemon.wait_for_log("reconcile: drift found", timeout=5)
    wait_until(lambda: app.instance_id in stack.serving(), 5, what="the server back in rotation")
    assert f"cabify/{slot} runs 127.0.0.1:{app.port} weight 1 maint" in stack.daemon.log()


def test_disk_equals_runtime_after_runtime_changes(stack: Stack) -> None:
    """What HAProxy runs after runtime changes is what a fresh HAProxy starts with from the file."""
    reloads = stack.layout.reloads()
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-1")
    register(stack.consul.url, stack.apps[3], Weights={"Passing": 3, "Warning": 1})
    stack.apps[4].health_status = 500
    wait_until(lambda: stack.serving() == {"cabify-2", "cabify-3", "cabify-4", "cabify-6", "cabify-7"}, 10)
    time.sleep(1.5)  # drains end: slots go to maintenance, freed slots back to the pool
    stack.daemon.wait_for_log("cabify: 6 servers (+0 -0 ~0); runtime API", timeout=5)
    assert stack.layout.reloads() == reloads

    def shape() -> list[tuple]:
        return sorted((s.name, s.address, s.port, s.weight, s.in_maintenance) for s in stack.layout.servers())

    wait_until(lambda: stack.layout.haproxy_cfg.stat().st_mtime < time.time() - 0.3, 5)
    runtime = shape()
    stack.daemon.stop()
    stack.haproxy.stop()
    stack.layout.root.joinpath("server-state").unlink(missing_ok=True)  # nothing but the file speaks
    fresh = HAProxyProcess_for(stack.layout)
    try:
        assert shape() == runtime
    finally:
        fresh.stop()


def test_reload_gives_a_new_instance_its_slot_not_the_saved_state_of_the_old(
    tmp_path: Path, consul: DevConsulThread, make_apps
) -> None:
    """The state saved before a reload must not put a slot's new instance in its old maintenance."""
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(3), exits, extra='runtime_api = false\nreload_min_interval = "0s"\n')
        (newcomer,) = make_apps(1)
        stack.apps.append(newcomer)
        register(consul.url, newcomer, status="passing")
        stack.daemon.wait_for_log("cabify: 4 servers (+1 -0 ~0); written")
        # Right after the reload, not after HAProxy's own checks (rise 2 x inter 2s) had time to fix it.
        (server,) = [s for s in stack.layout.servers() if s.port == newcomer.port]
        assert server.up, f"{server.name} came back DOWN from the saved state of its free slot"
        assert "runtime API:" not in stack.daemon.log()
