"""Canary shares against real HAProxy, devconsul and the daemon: the canaries get the configured share
of requests however many there are, promotion gives them their count's share, and every change of
share or count is a runtime weight change (no reload)."""

from __future__ import annotations

import collections
import http.client
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import App, Stack, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
REQUESTS = 10_000


def answered(stack: Stack, count: int = REQUESTS, headers: dict[str, str] | None = None) -> collections.Counter[str]:
    """Which instance answered each of ``count`` requests over one keep-alive connection."""
    seen: collections.Counter[str] = collections.Counter()
    connection = http.client.HTTPConnection("127.0.0.1", stack.layout.http_port, timeout=5)
    try:
        for _ in range(count):
            connection.request("GET", "/", headers=headers or {})
            response = connection.getresponse()
            body = response.read().decode().strip()
            seen[body if response.status == 200 else f"HTTP {response.status}"] += 1
    finally:
        connection.close()
    return seen


def canary_share(seen: collections.Counter[str], canaries: list[App]) -> float:
    return sum(seen[app.instance_id] for app in canaries) / sum(seen.values())


def _weights(stack: Stack) -> dict[int, int]:
    return {s.port: s.weight for s in stack.layout.servers() if s.up and s.weight > 0}


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(7), exits,
                    service_options='canary_tag = "canary"\ncanary_share = "10%"')


def _canary(stack: Stack, app: App, tagged: bool = True) -> None:
    register(stack.consul.url, app, Tags=["canary"] if tagged else [])


def test_a_canary_gets_its_share_then_its_count_share_once_promoted(stack: Stack, make_apps) -> None:
    reloads = stack.layout.reloads()
    canary = make_apps(1, prefix="canary")
    _canary(stack, canary[0])
    wait_until(lambda: len(_weights(stack)) == 8, 10, what="the canary in rotation")
    seen = answered(stack)
    assert set(seen) <= {app.instance_id for app in stack.apps + canary}, seen
    assert canary_share(seen, canary) == pytest.approx(0.10, abs=0.02), seen
    assert stack.layout.reloads() == reloads, "a canary joining is a runtime change"
    assert stack.metric('haproxy_sync_canary_share{backend="cabify"}') == pytest.approx(0.10)

    _canary(stack, canary[0], tagged=False)  # what Nomad's promotion does: canary_tags give way to tags
    wait_until(lambda: set(_weights(stack).values()) == {1}, 10, what="Consul's weights back once promoted")
    assert canary_share(answered(stack, 8_000), canary) == pytest.approx(1 / 8, abs=0.02)
    assert stack.scrape()['haproxy_sync_canary_share{backend="cabify"}'] == 0, "no canary left"
    assert stack.layout.reloads() == reloads, "a promotion is a runtime change"


def test_more_canaries_share_the_same_total(stack: Stack, make_apps) -> None:
    reloads = stack.layout.reloads()
    canaries = make_apps(3, prefix="canary")
    for app in canaries:
        _canary(stack, app)
    wait_until(lambda: len(_weights(stack)) == 10, 10, what="three canaries in rotation")
    seen = answered(stack)
    assert canary_share(seen, canaries) == pytest.approx(0.10, abs=0.02), seen
    assert stack.layout.reloads() == reloads


def test_a_new_share_in_the_config_is_a_runtime_weight_change(stack: Stack, make_apps) -> None:
    canary = make_apps(1, prefix="canary")
    _canary(stack, canary[0])
    wait_until(lambda: len(_weights(stack)) == 8, 10, what="the canary in rotation")
    reloads, before = stack.layout.reloads(), _weights(stack)
    stack.layout.service_options = 'canary_tag = "canary"\ncanary_share = "50%"'
    stack.layout.write()
    stack.daemon.signal(signal.SIGHUP)
    stack.daemon.wait_for_log("SIGHUP: configuration and template re-read")
    wait_until(lambda: _weights(stack) != before, 10, what="the weights of the new share")
    assert canary_share(answered(stack, 4_000), canary) == pytest.approx(0.50, abs=0.02)
    assert stack.layout.reloads() == reloads, "a share is weights: no reload"


def test_a_discovered_service_moves_its_share_by_meta_with_no_reload(stack: Stack, make_apps) -> None:
    stable, canary = make_apps(3, prefix="shop"), make_apps(1, prefix="shop-canary")

    def publish(share: str) -> None:
        meta = {"haproxy-sync-host": "shop.test", "haproxy-sync-canary-share": share}
        for app in stable:
            register(stack.consul.url, app, service="shop", Tags=["haproxy-sync"], Meta=meta)
        for app in canary:
            register(stack.consul.url, app, service="shop", Tags=["haproxy-sync", "canary"], Meta=meta)

    publish("20%")
    wait_until(lambda: len(stack.layout.serving_ports("shop")) == 4, 20, what="shop routed with its canary")
    seen = answered(stack, 4_000, headers={"Host": "shop.test"})
    assert canary_share(seen, canary) == pytest.approx(0.20, abs=0.02), seen
    reloads = stack.layout.reloads()
    publish("50%")
    wait_until(lambda: stack.metric('haproxy_sync_canary_share{backend="shop"}') == pytest.approx(0.5), 10,
               what="the new share in force")
    assert canary_share(answered(stack, 4_000, headers={"Host": "shop.test"}), canary) == pytest.approx(0.5, abs=0.02)
    assert stack.layout.reloads() == reloads, "a share from meta is weights: no reload"


@pytest.fixture
def header_stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(7), exits, extra='[haproxy]\ncanary_header = "X-Canary"',
                    service_options='canary_tag = "canary"\ncanary_share = "0%"')


def test_the_canary_header_sends_requests_to_the_canaries_alone(header_stack: Stack, make_apps) -> None:
    stack = header_stack
    canary = make_apps(1, prefix="canary")
    _canary(stack, canary[0])
    wait_until(lambda: stack.layout.serving_ports("cabify:canary") == {canary[0].port}, 20,
               what="the canary backend serving the canary")
    asked = answered(stack, 500, headers={"X-Canary": "always"})
    assert set(asked) == {canary[0].instance_id}, asked
    plain = answered(stack, 1_000)
    assert canary[0].instance_id not in plain, "a share of 0%: only requests that ask reach the canary"
    other = answered(stack, 200, headers={"X-Canary": "sometimes"})
    assert canary[0].instance_id not in other, "only the configured value asks for the canaries"

    # A routed discovered service's own canaries, through the route rather than the default backend.
    shop, shop_canary = make_apps(2, prefix="shop"), make_apps(1, prefix="shop-canary")
    meta = {"haproxy-sync-host": "shop.test", "haproxy-sync-canary-share": "0%"}
    for app in shop:
        register(stack.consul.url, app, service="shop", Tags=["haproxy-sync"], Meta=meta)
    register(stack.consul.url, shop_canary[0], service="shop", Tags=["haproxy-sync", "canary"], Meta=meta)
    wait_until(lambda: stack.layout.serving_ports("shop:canary") == {shop_canary[0].port}, 20,
               what="shop's canary backend")
    assert set(answered(stack, 200, headers={"Host": "shop.test", "X-Canary": "always"})) == {
        shop_canary[0].instance_id}
    assert set(answered(stack, 200, headers={"Host": "shop.test"})) == {app.instance_id for app in shop}

    reloads = stack.layout.reloads()
    _canary(stack, canary[0], tagged=False)  # promoted: the canary backend is left with nobody
    wait_until(lambda: not stack.layout.serving_ports("cabify:canary"), 10, what="the promoted canary gone from it")
    assert set(answered(stack, 50, headers={"X-Canary": "always"})) == {"HTTP 503"}, "no canary: nothing to serve"
    assert stack.layout.reloads() == reloads, "canaries come and go in their backend at runtime"
