"""Reloads that fail: HAProxy down, a new worker that cannot start. The last good config stays live,
the daemon retries with backoff, and /ready says not ready until HAProxy runs the current config."""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import HAProxyProcess_for, Stack, consul_put, haproxy_version, http_get, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(3), exits)


def ready(stack: Stack) -> int:
    return http_get(f"http://127.0.0.1:{stack.layout.metrics_port}/ready")[0]


def test_haproxy_down_keeps_last_good_and_recovers_when_it_is_back(stack: Stack) -> None:
    last_good = stack.layout.haproxy_cfg.read_text()
    stack.haproxy.stop()
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-1")
    stack.daemon.wait_for_log("apply failed:", timeout=10)
    log = stack.daemon.log()
    assert "(is HAProxy running?)" in log and "retrying in" in log
    assert stack.layout.haproxy_cfg.read_text() == last_good, "the file HAProxy last confirmed stays live"
    wait_until(lambda: ready(stack) == 503, 5, what="/ready false while HAProxy is not confirmed")
    haproxy.validate(haproxy.find_binary("haproxy"), stack.layout.haproxy_cfg)
    revived = HAProxyProcess_for(stack.layout)
    try:
        wait_until(lambda: stack.serving() == {"cabify-2", "cabify-3"}, 15, what="converged after HAProxy returned")
        wait_until(lambda: ready(stack) == 200, 5, what="/ready true again")
    finally:
        revived.stop()
    assert stack.daemon.alive() and "Traceback" not in stack.daemon.log()


def test_new_worker_that_cannot_start_rolls_back(stack: Stack) -> None:
    last_good = stack.layout.haproxy_cfg.read_text()
    reloads = stack.layout.reloads()
    with socket.socket() as squatter:  # a port HAProxy cannot bind: haproxy -c passes, the worker fails
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        busy = squatter.getsockname()[1]
        config = stack.layout.config_toml.read_text().replace(
            f'http_bind = "127.0.0.1:{stack.layout.http_port}"', f'http_bind = "127.0.0.1:{busy}"')
        stack.layout.config_toml.write_text(config)
        stack.daemon.signal(signal.SIGHUP)
        stack.daemon.wait_for_log("HAProxy rejected the reload", timeout=15)
        assert stack.layout.haproxy_cfg.read_text() == last_good
        assert stack.layout.reloads() > reloads
        assert http_get(stack.layout.url())[0] == 200, "the old worker keeps serving"
        wait_until(lambda: ready(stack) == 503, 5, what="/ready false after a rejected reload")
        log = stack.daemon.log()
        assert "restored haproxy.cfg.last-good" in log
        if haproxy_version() >= (2, 7):  # the master CLI answers reload with HAProxy's own startup log
            assert "cannot bind socket (Address already in use)" in log and f"127.0.0.1:{busy}" in log
        else:
            assert "gives no reason before HAProxy 2.7" in log
    stack.daemon.wait_for_log("applied ", count=2, timeout=20)  # the port is free now: a retry succeeds
    assert f"bind 127.0.0.1:{busy}" in stack.layout.haproxy_cfg.read_text()
    wait_until(lambda: ready(stack) == 200, 5, what="/ready true after the retry")
