"""Every Consul fault devconsul can play: the daemon keeps serving the last good config, says so once,
counts it, and converges within the backoff cap when the fault clears."""

from __future__ import annotations

import itertools
import re
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Layout, Stack, cli, consul_put, http_get, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(3), exits, consul_wait="2s")


ERROR_FAULTS = [
    ("refuse", {}, "unreachable"),
    ("reset", {}, "connection_reset"),
    ("no_leader", {}, "no_leader"),
    ("forbidden", {}, "acl"),
    ("rate_limited", {}, "rate_limited"),
    ("slow", {"delay": 6}, "timeout"),
    ("malformed_json", {}, "bad_answer"),
    # Answers that are not the documented shape: never "no instances", never "no tagged services".
    ("null_body", {}, "bad_answer"),
    ("wrong_shape", {}, "bad_answer"),
    ("not_found", {}, "bad_answer"),
    ("not_found_bare", {}, "bad_answer"),
    ("html", {}, "bad_answer"),
    ("bad_encoding", {}, "bad_answer"),
]


@pytest.mark.parametrize(("fault", "params", "kind"), ERROR_FAULTS, ids=[f[0] for f in ERROR_FAULTS])
def test_error_fault_keeps_last_good_and_converges_after(stack: Stack, fault: str, params: dict, kind: str) -> None:
    live = stack.layout.haproxy_cfg.read_text()
    stack.consul.set_fault(fault, **params)
    stack.daemon.wait_for_log(f"failing fault={kind}", timeout=12)
    stack.consul.call("deregister_service", "cabify-1")  # a change Consul cannot tell us about yet
    time.sleep(1.5)
    assert stack.daemon.alive()
    assert stack.layout.haproxy_cfg.read_text() == live, "the live config stays the last good one"
    assert len(stack.serving()) == 3, "HAProxy keeps serving every instance it had"
    assert stack.metric(f'haproxy_sync_consul_errors_total{{kind="{kind}",service="cabify"}}') >= 1
    stack.consul.clear_fault()
    # Bounded by the backoff cap (2s) plus a hung read's deadline (3.1s) plus slack; the time it takes
    # is measured in bench/, not asserted here.
    wait_until(lambda: stack.serving() == {"cabify-2", "cabify-3"}, 10, what="the change applied after the fault")
    log = stack.daemon.log()
    for watch in ("cabify", "catalog"):  # the service's watch and discovery's watch of tagged services
        # One line when the fault starts or changes kind, never one per retry: a blocking query in flight when
        # the fault begins can end with another kind (the reset of its connection) than the retries that follow.
        kinds = re.findall(rf"service={watch} failing fault=(\w+)", log)
        assert len(kinds) <= 2 and all(a != b for a, b in itertools.pairwise(kinds)), f"{watch}: {kinds}"
    assert 1 <= log.count("service=cabify failing fault=") <= 2, "the fault's line, and at most the in-flight one's"
    assert log.count("service=cabify recovered after") == 1
    assert "Traceback" not in log
    if kind == "acl":
        assert "service:read and node:read" in log


@pytest.mark.parametrize(("fault", "params", "says"), [
    ("index_backwards", {}, "index went backwards"),
    ("index_zero", {}, "is not blocking"),
    ("huge", {"size_mb": 4}, ""),
], ids=["index_backwards", "index_zero", "huge"])
def test_odd_answers_still_deliver_changes(stack: Stack, fault: str, params: dict, says: str) -> None:
    stack.consul.set_fault(fault, **params)
    stack.consul.call("deregister_service", "cabify-1")
    wait_until(lambda: stack.serving() == {"cabify-2", "cabify-3"}, 10, what="the change applied under the fault")
    if says:
        stack.daemon.wait_for_log(says, timeout=5)
    stack.consul.clear_fault()
    log = stack.daemon.log()
    assert "failing fault=" not in log and "Traceback" not in log
    time.sleep(1.5)
    assert stack.daemon.alive()
    if fault == "index_zero":
        assert log.count("service=cabify is not blocking") == 1, "said once, not once per read"


def test_unreachable_at_start_renders_nothing_and_is_not_ready(tmp_path: Path, make_apps) -> None:
    consul = DevConsulThread(port=0).start()
    port = consul.port
    consul.stop()
    layout = Layout(tmp_path, f"http://127.0.0.1:{port}")
    layout.write()
    daemon = DaemonProcess(layout.config_toml, tmp_path / "daemon.log")
    try:
        daemon.wait_for_log("failing fault=unreachable", timeout=10)
        ready = f"http://127.0.0.1:{layout.metrics_port}/ready"
        status, body = wait_until(lambda: http_get(ready), 5, what="/ready answering")
        assert status == 503 and "no config applied yet" in body
        time.sleep(1)
        assert not layout.haproxy_cfg.exists(), "nothing is rendered before the first good read"
        consul = DevConsulThread(port=port).start()
        try:
            for app in make_apps(2):
                register(consul.url, app)
            wait_until(layout.haproxy_cfg.exists, 10, what="the first config after Consul came up")
            assert layout.haproxy_cfg.read_text().count("  # cabify-") == 2
        finally:
            consul.stop()
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def test_acl_token_problem_is_one_clear_line_for_commands(tmp_path: Path) -> None:
    with DevConsulThread(port=0, token="the-right-token") as consul:
        result = cli("render", "--dry-run", "--consul", consul.url, env={"CONSUL_HTTP_TOKEN": "a-wrong-token"})
    assert result.returncode == 1
    assert "403 permission denied" in result.stderr and "service:read and node:read" in result.stderr
    assert "a-wrong-token" not in result.stderr and "Traceback" not in result.stderr


def test_a_flood_of_invalid_instances_is_one_line_and_the_valid_ones_still_serve(stack: Stack) -> None:
    flood = 20_000  # the class: one answer, many skips; 200,000 are summarized the same (tests/unit/test_catalog.py)
    consul_put(stack.consul.url, "/v1/devconsul/bulk/register", [
        {"ID": f"flood-{i}", "Name": "cabify", "Address": f"192.0.2.{i % 250 + 1}", "Port": 1 + i % 60000}
        for i in range(flood)  # outside sync.networks (127.0.0.0/8): each is skipped for its address
    ])
    stack.daemon.wait_for_log(f"skipped {flood} of the answer's instances (address {flood})", timeout=30)
    time.sleep(1)
    log = stack.daemon.log()
    assert sum("flood-" in line for line in log.splitlines()) == 1, "one summary line, not one per instance"
    assert len(stack.serving()) == 3 and stack.daemon.alive()


def test_sigterm_stops_within_two_seconds_while_consul_hangs_mid_guard_reread(tmp_path: Path, consul: DevConsulThread,
                                                                              make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(4), exits, consul_wait="2s", extra='guard_delay = "1s"\n')
        # 4 -> 1 healthy in one catalog write (three writes let the first, a 25 % drop, through): the
        # guard holds it and reads Consul again
        consul_put(stack.consul.url, "/v1/devconsul/bulk/deregister", [app.instance_id for app in stack.apps[:3]])
        stack.daemon.wait_for_log("guard:", timeout=10)
        stack.consul.set_fault("slow", delay=30)  # the guard's re-read, and every watch, now hang
        time.sleep(1.5)
        started = time.monotonic()
        stack.daemon.signal(signal.SIGTERM)
        stack.daemon.process.wait(10)
        assert time.monotonic() - started < 2.0
        assert len(stack.serving()) == 4, "the held drop never applied"
        stack.consul.clear_fault()
