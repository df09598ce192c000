"""The empty-backend guard: a sudden loss of most servers is held and read again before it applies."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, consul_put, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(4), exits, extra='guard_delay = "1s"\n')


def test_transient_blip_never_empties_the_backend(stack: Stack) -> None:
    consul_put(stack.consul.url, "/v1/agent/maintenance?enable=true&reason=agent+restart")
    stack.daemon.wait_for_log("guard: cabify 4 -> 0 healthy servers, under min_servers 1")
    assert len(stack.serving()) == 4
    consul_put(stack.consul.url, "/v1/agent/maintenance?enable=false")
    stack.daemon.wait_for_log("the drop was transient", timeout=5)
    time.sleep(0.3)
    assert len(stack.serving()) == 4
    assert "a second read confirms" not in stack.daemon.log()


def test_confirmed_drop_is_applied_with_a_warning(stack: Stack) -> None:
    consul_put(stack.consul.url, "/v1/agent/maintenance?enable=true&reason=real+outage")
    stack.daemon.wait_for_log("holding its last applied servers")
    assert len(stack.serving()) == 4
    stack.daemon.wait_for_log("guard: a second read confirms cabify 4 -> 0 healthy servers", timeout=5)
    wait_until(lambda: not stack.serving(), 5, what="the backend emptied once confirmed")


def test_guard_can_be_turned_off(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, service_options="guard = false\n")
        consul_put(consul.url, "/v1/agent/maintenance?enable=true")
        wait_until(lambda: not stack.serving(), 5, what="the backend emptied at once")
        assert "guard:" not in stack.daemon.log()
