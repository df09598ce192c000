"""The daemon end to end: real devconsul over HTTP, real HAProxy master-worker, real `haproxy-sync run`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import (
    DaemonProcess,
    Layout,
    Stack,
    cli,
    consul_put,
    http_get,
    register,
    wait_until,
)

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(7), exits)


def test_seven_registered_instances_are_seven_up_servers(stack: Stack) -> None:
    assert stack.serving() == {f"cabify-{i}" for i in range(1, 8)}
    answers = {http_get(stack.layout.url())[1].strip() for _ in range(21)}
    assert answers == {f"cabify-{i}" for i in range(1, 8)}, "roundrobin should reach every instance"


def test_deregistered_instance_leaves_haproxy_without_a_reload(stack: Stack) -> None:
    reloads = stack.layout.reloads()
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-3")
    wait_until(lambda: len(stack.serving()) == 6, 10, what="6 servers in rotation")
    assert "cabify-3" not in stack.serving()
    stack.daemon.wait_for_log("cabify: 6 servers (+0 -1 ~0); runtime API")
    assert stack.layout.reloads() == reloads, "a membership change goes through the Runtime API"


def test_failing_health_check_takes_server_out(stack: Stack) -> None:
    stack.apps[1].health_status = 500
    wait_until(lambda: "cabify-2" not in stack.serving(), 10, what="cabify-2 out of rotation")
    assert len(stack.serving()) == 6
    answers = {http_get(stack.layout.url())[1].strip() for _ in range(14)}
    assert "cabify-2" not in answers
    stack.apps[1].health_status = 200
    wait_until(lambda: len(stack.serving()) == 7, 10, what="cabify-2 back in rotation")


def test_identical_snapshot_does_not_reload(stack: Stack) -> None:
    """Check output text moving the Consul index must not render, write or reload."""
    reloads = stack.layout.reloads()
    mtime = stack.layout.haproxy_cfg.stat().st_mtime_ns
    consul_put(stack.consul.url, "/v1/agent/service/register", {
        "ID": "cabify-ttl", "Name": "other", "Port": 9, "Check": {"TTL": "30s", "Status": "passing"}})
    index = stack.consul.index
    for note in ("a", "b", "c"):
        consul_put(stack.consul.url, f"/v1/agent/check/pass/service:cabify-ttl?note={note}")
    assert stack.consul.index > index
    time.sleep(1.0)  # several apply cycles' worth of quiet; nothing may happen in it
    assert stack.layout.reloads() == reloads
    assert stack.layout.haproxy_cfg.stat().st_mtime_ns == mtime


def test_output_only_check_change_on_routed_service_is_ignored(stack: Stack) -> None:
    reloads = stack.layout.reloads()
    before = stack.consul.index
    wait_until(lambda: stack.consul.index > before + 3, 5, what="HTTP checks moving the index")
    time.sleep(0.5)
    assert stack.layout.reloads() == reloads


def test_consul_down_keeps_config_and_converges_when_back(tmp_path: Path, make_apps) -> None:
    apps = make_apps(7)
    consul = DevConsulThread(port=0).start()
    port = consul.port
    with ExitStack() as exits:
        exits.callback(consul.stop)
        stack = Stack(tmp_path, consul, apps, exits)
        live = stack.layout.haproxy_cfg.read_text()
        consul.stop()
        stack.daemon.wait_for_log("failing fault=unreachable", timeout=10)
        time.sleep(1.0)
        assert stack.daemon.alive()
        assert stack.layout.haproxy_cfg.read_text() == live
        assert len(stack.serving()) == 7
        # Consul comes back empty-handed (a new agent: lower index, fewer instances) on the same port.
        consul = DevConsulThread(port=port).start()
        exits.callback(consul.stop)
        for app in apps[:5]:
            register(consul.url, app)
        wait_until(lambda: len(stack.serving()) == 5, 10, what="5 servers after Consul returned")
        stack.daemon.wait_for_log("recovered after")
        log = stack.daemon.log()
        assert log.count("service=cabify failing fault=") == 1, "one line when the fault starts, not per retry"


def test_sigterm_stops_within_two_seconds_and_haproxy_keeps_serving(stack: Stack) -> None:
    started = time.monotonic()
    stack.daemon.signal(signal.SIGTERM)
    stack.daemon.process.wait(5)
    assert time.monotonic() - started < 2.0
    assert stack.daemon.process.returncode == 0
    assert http_get(stack.layout.url())[0] == 200


def test_sighup_with_broken_template_keeps_last_good(stack: Stack, tmp_path: Path) -> None:
    template = tmp_path / "broken.j2"
    template.write_text("global\n{{ no_such_variable }}\n")
    stack.layout.template = template
    stack.layout.write()
    stack.daemon.signal(signal.SIGHUP)
    stack.daemon.wait_for_log("SIGHUP: new configuration rejected")
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-7")
    time.sleep(0.5)
    assert stack.daemon.alive()
    wait_until(lambda: len(stack.serving()) == 6, 10, what="changes still applied with the old template")
    assert "no_such_variable" in stack.daemon.log() and f"{template}:2" in stack.daemon.log()


def test_template_error_is_reported_with_file_and_line(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    layout = Layout(tmp_path, consul.url)
    layout.haproxy_cfg.write_text("# last good\n")
    template = tmp_path / "bad.j2"
    template.write_text("global\n    maxconn 10\n{{ backends[0].nope }}\n")
    layout.template = template
    layout.write()
    result = cli("run", "--once", "--config", str(layout.config_toml))
    assert result.returncode == 1
    assert f"{template}:3:" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert layout.haproxy_cfg.read_text() == "# last good\n"


def test_sighup_rereads_config_and_watches_new_services(stack: Stack, make_apps) -> None:
    (api,) = make_apps(1, prefix="api")
    register(stack.consul.url, api, service="api")
    stack.layout.services = ("cabify", "api")
    stack.layout.write()
    stack.daemon.signal(signal.SIGHUP)
    stack.daemon.wait_for_log("SIGHUP: configuration and template re-read")
    wait_until(lambda: stack.serving("api", [api]) == {api.instance_id}, 10, what="the new backend api served")
    assert len(stack.serving()) == 7


def test_sighup_with_broken_config_keeps_the_running_one(stack: Stack) -> None:
    stack.layout.config_toml.write_text(stack.layout.config_toml.read_text() + "\n[haproxy]\nmaxconn = 'lots'\n")
    stack.daemon.signal(signal.SIGHUP)
    log = stack.daemon.wait_for_log("SIGHUP: new configuration rejected")
    assert str(stack.layout.config_toml) in log
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-1")
    wait_until(lambda: len(stack.serving()) == 6, 10, what="the daemon still applying changes")


def test_json_logs_parse_line_by_line(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    import json

    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits)
        stack.daemon.stop()
        daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "json.log", "--log-format", "json")
        exits.callback(daemon.stop)
        daemon.wait_for_log('"applied ')
        daemon.stop()
        records = [json.loads(line) for line in daemon.log().splitlines()]
        assert {"ts", "level", "logger", "msg"} <= records[0].keys()
        assert any(r["msg"].startswith("applied cabify: 2 servers") for r in records)


def test_editing_the_config_file_applies_like_sighup(stack: Stack, make_apps) -> None:
    (api,) = make_apps(1, prefix="api")
    register(stack.consul.url, api, service="api")
    stack.layout.services = ("cabify", "api")
    stack.layout.write()  # no signal: the file watch notices
    stack.daemon.wait_for_log("configuration and template re-read", timeout=10)
    wait_until(lambda: stack.serving("api", [api]) == {api.instance_id}, 10, what="the new backend api served")
    stack.layout.config_toml.write_text(stack.layout.config_toml.read_text() + "\n[bogus]\n")
    stack.daemon.wait_for_log("new configuration rejected, keeping the running one", timeout=10)
    assert "[bogus]: unknown section" in stack.daemon.log()
    assert len(stack.serving()) == 7


def test_an_emptied_config_file_is_rejected_counted_and_shown_on_ready_until_restored(stack: Stack) -> None:
    good = stack.layout.config_toml.read_text()
    ready = f"http://127.0.0.1:{stack.layout.metrics_port}/ready"
    for emptied in ("", "  \n\t\n", "# nothing but a comment\n"):
        stack.layout.config_toml.write_text(emptied)
        stack.daemon.signal(signal.SIGHUP)
        wait_until(lambda: http_get(ready)[0] == 503, 10, what="/ready refusing after the rejected re-read")
        _, body = http_get(ready)
        assert "the last re-read of the configuration was rejected" in body and "holds no settings" in body, body
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/cabify-{len(stack.serving())}")
        wait_until(lambda: len(stack.serving()) < 7, 10, what="the running settings still applying changes")
        stack.layout.config_toml.write_text(good)
        stack.daemon.signal(signal.SIGHUP)
        wait_until(lambda: http_get(ready)[0] == 200, 10, what="/ready again after a good re-read")
        register(stack.consul.url, stack.apps[len(stack.serving())])
        wait_until(lambda: len(stack.serving()) == 7, 10, what="back to seven")
    metrics = http_get(f"http://127.0.0.1:{stack.layout.metrics_port}/metrics")[1].splitlines()
    rejected = [line for line in metrics if line.startswith('haproxy_sync_config_rereads_total{result="rejected"}')]
    # Each emptied file is rejected at least by the SIGHUP, and by the file watch too if it saw the edit.
    assert rejected and float(rejected[0].split()[-1]) >= 3, rejected
    assert "/etc/haproxy" not in stack.daemon.log(), "never the defaults' files"


def test_a_sighup_changes_the_log_level(stack: Stack) -> None:
    stack.layout.config_toml.write_text(stack.layout.config_toml.read_text() + '\n[log]\nlevel = "debug"\n')
    stack.daemon.signal(signal.SIGHUP)
    stack.daemon.wait_for_log("SIGHUP: logging now level=debug format=text")
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-1")
    stack.daemon.wait_for_log("level=debug")


def test_a_second_daemon_on_the_same_files_exits_naming_the_first(stack: Stack, tmp_path: Path) -> None:
    second = DaemonProcess(stack.layout.config_toml, tmp_path / "second.log")
    try:
        assert second.process.wait(10) == 1
    finally:
        second.stop()
    lines = second.log().splitlines()
    assert len(lines) == 1, lines
    holder = f"another haproxy-sync (pid {stack.daemon.process.pid}) already manages {stack.layout.haproxy_cfg}"
    assert holder in lines[0], lines
    assert stack.daemon.alive() and len(stack.serving()) == 7, "the first keeps running"
    stack.daemon.stop()
    third = DaemonProcess(stack.layout.config_toml, tmp_path / "third.log")  # the lock went with the first
    try:
        third.wait_for_log("applied ")
    finally:
        third.stop()


def test_a_sighup_right_after_exec_is_a_reread_never_a_kill(stack: Stack, tmp_path: Path) -> None:
    stack.daemon.stop()
    daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "early.log")
    try:
        def catches_sighup() -> bool:  # SigCgt: the signals with a handler; SIGHUP is bit 0
            status = Path(f"/proc/{daemon.process.pid}/status").read_text()
            return bool(int(status.split("SigCgt:")[1].split()[0], 16) & 1)

        wait_until(catches_sighup, 10, interval=0.001, what="the first handler installed")
        daemon.signal(signal.SIGHUP)  # long before the loop (and its own handler) exists
        daemon.wait_for_log("SIGHUP (before the loop ran): configuration and template re-read", timeout=15)
        daemon.wait_for_log("applied ")
        assert daemon.alive()
    finally:
        daemon.stop()
