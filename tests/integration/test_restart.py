"""A restart of haproxy-sync does not reload HAProxy when HAProxy already runs the live config, even
after runtime changes rewrote that file, and without reading ``/proc`` (the unit hides it). A claim
that cannot be trusted costs one reload, never a skipped one."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy, master, running_claim
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Stack, consul_put, http_get, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


def _worker(stack: Stack) -> int | None:
    return master.show_proc(stack.layout.master_socket).current_worker


def _change_at_runtime_and_persist(stack: Stack) -> None:
    """Deregister an instance (a runtime change) and wait until the file on disk says so too."""
    before = stack.layout.haproxy_cfg.read_text()
    reloads, serving = stack.layout.reloads(), len(stack.serving())
    consul_put(stack.consul.url, "/v1/agent/service/deregister/cabify-1")
    wait_until(lambda: len(stack.serving()) == serving - 1, 10, what="one server fewer in rotation")
    wait_until(lambda: stack.layout.haproxy_cfg.read_text() != before, 10, what="the runtime change on disk")
    assert stack.layout.reloads() == reloads, "the change went through the Runtime API"


def _restart(stack: Stack, exits: ExitStack, log: Path,
             while_stopped: Callable[[], object] = lambda: None) -> DaemonProcess:
    """Stop the daemon, run ``while_stopped`` (nothing can overwrite what it writes then), start it again."""
    stack.daemon.stop()
    while_stopped()
    daemon = DaemonProcess(stack.layout.config_toml, log)
    exits.callback(daemon.stop)
    daemon.wait_for_log("applied ", timeout=30)
    return daemon


def test_a_restart_after_runtime_changes_does_not_reload(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(3), exits)
        _change_at_runtime_and_persist(stack)
        worker, reloads = _worker(stack), stack.layout.reloads()
        # The file is now younger than the worker: its start time alone would call for a reload.
        (tmp_path / "before.cfg").write_text(stack.layout.haproxy_cfg.read_text())
        restarted = _restart(stack, exits, tmp_path / "restart.log")
        assert "HAProxy already runs the live config" in restarted.log(), restarted.log()[-2000:]
        assert (_worker(stack), stack.layout.reloads()) == (worker, reloads), "same worker, no reload"
        assert len(stack.serving()) == 2


@pytest.mark.parametrize("claim", [
    "not json",
    json.dumps({"master_pid": 1, "worker_pid": 1, "config_sha256": "0" * 64}),  # someone else's processes
    json.dumps({"master_pid": True, "worker_pid": 2, "config_sha256": "0" * 64}),
    json.dumps({"master_pid": 1, "worker_pid": 2, "config_sha256": "0" * 64, "extra": "x\nline"}),
])
def test_a_claim_that_cannot_be_trusted_costs_one_reload(tmp_path: Path, consul: DevConsulThread, make_apps,
                                                         claim: str) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits)
        _change_at_runtime_and_persist(stack)
        worker, reloads = _worker(stack), stack.layout.reloads()
        # Written while the daemon is stopped: the running one follows its own claim after a persist.
        restarted = _restart(stack, exits, tmp_path / "restart.log",
                             lambda: running_claim.claim_path(stack.layout.server_state_file).write_text(claim))
        assert stack.layout.reloads() == reloads + 1, restarted.log()[-2000:]
        assert _worker(stack) != worker
        written = running_claim.read_claim(stack.layout.server_state_file)
        assert written is not None and written.worker_pid == _worker(stack), "the reload wrote a claim of its own"



def _notifications(notify: socket.socket, until: bytes, seconds: float) -> bytes:
    """What the daemon told systemd (sd_notify datagrams) until ``until`` arrived or ``seconds`` passed."""
    received, end = b"", time.monotonic() + seconds
    while until not in received and time.monotonic() < end:
        try:
            received += notify.recv(4096) + b"\n"
        except TimeoutError:
            continue
    return received


@pytest.mark.parametrize("live", ["as_haproxy_runs_it", "edited_since"])
def test_a_start_without_consul_is_ready_only_when_haproxy_serves_the_live_config(
        tmp_path: Path, consul: DevConsulThread, make_apps, live: str) -> None:
    with ExitStack() as exits:
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(0.1)
        exits.callback(notify.close)
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra='ready_without_consul = "1s"')
        stack.daemon.stop()
        worker, reloads = _worker(stack), stack.layout.reloads()
        if live == "edited_since":  # HAProxy's worker predates this file: it may not run it
            with stack.layout.haproxy_cfg.open("a") as handle:
                handle.write("# a hand edit\n")
        consul.stop()
        daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "boot.log",
                               env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock")})
        exits.callback(daemon.stop)
        told = _notifications(notify, b"STATUS=", 8)
        ready_url = f"http://127.0.0.1:{stack.layout.metrics_port}/ready"
        if live == "edited_since":
            daemon.wait_for_log("not ready until the first apply", timeout=5)
            assert b"READY=1" not in told
        else:
            assert b"READY=1" in told and b"STATUS=waiting for Consul" in told, told
            assert "ready (to systemd) with HAProxy serving the last good config" in daemon.log()
            assert http_get(ready_url)[0] == 503, "no Consul data: not ready for a load balancer's check"
            assert len(stack.serving()) == 2, "HAProxy serves the last good config meanwhile"
        consul.start()
        daemon.wait_for_log("applied ", timeout=30)
        wait_until(lambda: http_get(ready_url)[0] == 200, 10, what="/ready once Consul answered")
        if live == "as_haproxy_runs_it":
            assert (_worker(stack), stack.layout.reloads()) == (worker, reloads), "and no reload when it answers"
        assert "Traceback" not in daemon.log()
