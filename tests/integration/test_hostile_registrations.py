"""Whoever can register a service in Consul is untrusted: the attacks that worked on c0234b9, replayed.

Real HAProxy, devconsul over real HTTP, the daemon as a process; the Runtime API audit of
tests/integration/conftest.py checks every command the daemon sent during each test.
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Stack, consul_put, http_get, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
TAG = "haproxy-sync"


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(2), exits, consul_wait="2s",
                    extra='reconcile_interval = "300ms"\nreload_min_interval = "200ms"\n')


def metrics(stack: Stack) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.layout.metrics_port}/metrics", timeout=5) as response:
        return response.read().decode()


def register_raw(stack: Stack, instance_id: str, address: str, port: int, service: str = "cabify",
                 **extra: object) -> None:
    consul_put(stack.consul.url, "/v1/agent/service/register",
               {"ID": instance_id, "Name": service, "Address": address, "Port": port, **extra})


ZONE_ATTACKS = {
    "cmd": "::1%x;shutdown frontend http",
    "cfg": "::1%\n    program pwned\n        command /bin/touch /tmp/haproxy-sync-pwned",
    "bracket": "::1%]:80 check backup\n    server evil 127.0.0.1",
}


def test_zone_ids_never_reach_haproxy_and_the_edge_keeps_serving(stack: Stack) -> None:
    before = stack.serving()
    reloads = stack.layout.reloads()
    for name, address in ZONE_ATTACKS.items():
        register_raw(stack, f"evil-{name}", address, stack.apps[0].port)
    log = stack.daemon.wait_for_log("zone id", timeout=10)
    wait_until(lambda: re.search(r'haproxy_sync_instances_skipped\{[^}]*reason="address"[^}]*\} 3\.0', metrics(stack)),
               10, what="the three instances counted as skipped")
    config = stack.layout.haproxy_cfg.read_text()
    assert "program" not in config and "pwned" not in config and "evil" not in config
    assert config.count("%") == 1, "only the template's own use_backend %[...]"
    status, _ = http_get(stack.layout.url("/"))
    assert status == 200, "the frontend was not shut down"
    assert stack.serving() == before and stack.layout.reloads() == reloads
    assert not Path("/tmp/haproxy-sync-pwned").exists()
    assert "\n    program" not in log and log.count("level=") == len(log.splitlines()), \
        "no Consul string starts a log line of its own"


def test_a_newcomer_cannot_take_a_route_another_service_holds(stack: Stack, make_apps) -> None:
    shop, thief = make_apps(2, prefix="shop")
    register(stack.consul.url, shop, service="shop", Tags=[TAG], Meta={"haproxy-sync-host": "shop.test"})
    wait_until(lambda: http_get(stack.layout.url("/"), headers={"Host": "shop.test"})[1].strip() == shop.instance_id,
               10, what="shop routed")
    # The thief's name sorts first and it asks for the same host: it gets nothing.
    register(stack.consul.url, thief, service="aaa-shop", Tags=[TAG], Meta={"haproxy-sync-host": "shop.test"})
    log = stack.daemon.wait_for_log("service aaa-shop is not routed", timeout=10)
    assert "held by backend shop" in log
    assert haproxy.show_map(stack.layout.stats_socket, stack.layout.root / "routes.map")["shop.test"] == "shop"
    for _ in range(20):
        assert http_get(stack.layout.url("/"), headers={"Host": "shop.test"})[1].strip() == shop.instance_id
    assert http_get(stack.layout.url("/"), headers={"Host": "Shop.Test.:80"})[1].strip() == shop.instance_id, \
        "case, port and a trailing dot do not make another host"
    assert "haproxy_sync_services_unrouted 1.0" in metrics(stack)
    # Nor can it take a part of it: a path under the held host.
    register(stack.consul.url, thief, service="aaa-shop-api", Tags=[TAG],
             Meta={"haproxy-sync-host": "shop.test", "haproxy-sync-path": "/login"})
    log = stack.daemon.wait_for_log("service aaa-shop-api is not routed", timeout=10)
    assert "held by backend shop (host shop.test)" in log
    assert http_get(stack.layout.url("/login"), headers={"Host": "shop.test"})[1].strip() == shop.instance_id
    # The holder leaves for a moment (a redeploy): its route stays reserved, and it gets it back.
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{shop.instance_id}")
    stack.daemon.wait_for_log("which left; it stays reserved for it", timeout=10)
    wait_until(lambda: "shop.test" not in haproxy.show_map(stack.layout.stats_socket, stack.layout.root / "routes.map"),
               5, what="the route gone with its holder")
    time.sleep(1)  # applies meanwhile must not hand it to the thief
    assert "shop.test" not in haproxy.show_map(stack.layout.stats_socket, stack.layout.root / "routes.map")
    register(stack.consul.url, shop, service="shop", Tags=[TAG], Meta={"haproxy-sync-host": "shop.test"})
    wait_until(lambda: http_get(stack.layout.url("/"), headers={"Host": "shop.test"})[1].strip() == shop.instance_id,
               10, what="shop routed again after the gap")
    # A restart reads who holds what from the routes HAProxy runs: the holder still keeps it.
    stack.daemon.stop()
    restarted = DaemonProcess(stack.layout.config_toml, stack.layout.root / "daemon2.log")
    try:
        restarted.wait_for_log("service aaa-shop-api is not routed", timeout=10)
        assert haproxy.show_map(stack.layout.stats_socket, stack.layout.root / "routes.map")["shop.test"] == "shop"
    finally:
        restarted.stop()


def test_a_health_answer_naming_another_service_is_a_fault_not_an_empty_backend(stack: Stack) -> None:
    before = stack.serving()
    stack.consul.set_fault("foreign_service")
    log = stack.daemon.wait_for_log("failing fault=bad_answer", timeout=10)
    assert "intruder" in log
    stack.consul.call("deregister_service", "cabify-1")  # a change the broken answers cannot tell
    wait_until(lambda: stack.serving() == before, 3, what="last good servers kept")
    assert stack.serving() == before
    stack.consul.clear_fault()
    wait_until(lambda: stack.serving() == {"cabify-2"}, 10, what="the change applied once the answers are sane")
