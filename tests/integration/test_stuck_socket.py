"""HAProxy's admin socket dripping, hanging or answering garbage (haproxy_sync/dev/hostile_socket.py): every
exchange has a total deadline, changes still reach HAProxy (by a reload through the master), SIGTERM
stops the daemon within 2 s in every state, and a loop stuck in one step stops the watchdog's pings."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.hostile_socket import HostileSocket, template_beside
from tests.helpers import DaemonProcess, Stack, consul_put, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

FAST = 'reload_min_interval = "0s"\ndrain_timeout = "0s"\nreconcile_interval = "0s"\n'


@pytest.fixture
def hostile(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[tuple[Stack, HostileSocket]]:
    with ExitStack() as exits:
        proxy = HostileSocket(tmp_path / "admin.sock")
        exits.callback(proxy.close)
        stack = Stack(tmp_path, consul, make_apps(3), exits, template=template_beside(tmp_path), extra=FAST)
        yield stack, proxy


def served(stack: Stack) -> set[int]:
    """Ports HAProxy sends requests to, read on its real socket (the hostile one is the daemon's)."""
    states = haproxy.servers_state(Path(f"{stack.layout.stats_socket}.real"), "cabify")
    return {s.port for s in states if s.up and s.weight > 0}


def stop_time(stack: Stack) -> float:
    started = time.monotonic()
    stack.daemon.signal(signal.SIGTERM)
    stack.daemon.process.wait(10)
    return time.monotonic() - started


@pytest.mark.parametrize("mode", ["drip", "hang", "garbage"])
def test_a_bad_admin_socket_bounds_every_exchange_and_changes_still_apply(
        hostile: tuple[Stack, HostileSocket], mode: str) -> None:
    stack, proxy = hostile
    proxy.mode = mode
    leaving = stack.apps[0]
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{leaving.instance_id}")
    wait_until(lambda: leaving.port not in served(stack), 30, what="the change applied despite the socket")
    log = stack.daemon.wait_for_log("runtime API path failed", timeout=30)
    if mode in ("drip", "hang"):
        assert "did not finish answering" in log, "the exchange's deadline, not the socket, ended it"
    assert "Traceback" not in log and stack.daemon.alive()
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[1].instance_id}")
    time.sleep(1.0)  # the next apply is now in the middle of an exchange with the bad socket
    assert stop_time(stack) < 2.0, "SIGTERM stops within 2 s, mid-exchange"


def test_a_loop_stuck_in_one_step_stops_the_watchdog_pings(tmp_path: Path, consul: DevConsulThread,
                                                          make_apps) -> None:
    with ExitStack() as exits:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(0.1)
        exits.callback(notify.close)
        proxy = HostileSocket(tmp_path / "admin.sock")
        exits.callback(proxy.close)
        stack = Stack(tmp_path, consul, make_apps(2), exits, template=template_beside(tmp_path), extra=FAST)
        stack.daemon.stop()
        daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "watchdog.log",
                               env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"})
        exits.callback(daemon.stop)
        daemon.wait_for_log("applied ")

        def pings(seconds: float) -> int:
            count, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    count += notify.recv(4096).count(b"WATCHDOG=1")
                except TimeoutError:
                    continue
            return count

        assert pings(2.0) >= 3, "a healthy loop pings every WatchdogSec/4"
        proxy.mode = "hang"  # every runtime exchange now takes its whole 5 s deadline
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[0].instance_id}")
        daemon.wait_for_log("watchdog: the loop has been in one step for over", timeout=10)
        pings(0.3)  # what was sent before the step got long, still queued
        assert pings(1.0) == 0, "no ping while the loop is stuck"
        proxy.mode = "pass"
        wait_until(lambda: pings(1.0) > 0, 15, what="pings again once the step ended")
