"""The disk under the files haproxy-sync owns goes read-only or full for a while: no crash, no
traceback, one line naming the file and the error, HAProxy keeps serving (runtime changes still
apply), and everything is written once the fault clears. A deleted routes map or admin socket is
noticed by the reconcile and put back: the map by a write, the socket by a reload that binds it anew."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.soak.faults import ReadOnlyDir
from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import DaemonProcess, Stack, consul_put, wait_until

pytestmark = [
    pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed"),
    pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="mounting needs root"),
]

FAST = 'reconcile_interval = "300ms"\nreload_min_interval = "0s"\ndrain_timeout = "0s"\n'


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, timeout=10)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """``directory`` read-only for the ``with`` block (the soak's fault: a read-only bind mount over
    itself): EROFS on every write."""
    fault = ReadOnlyDir(directory, directory / "haproxy.cfg")
    fault.inject()
    try:
        yield
    finally:
        fault.undo()


def test_a_read_only_config_directory_for_a_while_is_ridden_out(tmp_path: Path, consul: DevConsulThread,
                                                               make_apps) -> None:
    with ExitStack() as exits:
        root = tmp_path / "edge"
        root.mkdir()
        stack = Stack(root, consul, make_apps(4), exits, extra=FAST)
        reloads = stack.layout.reloads()
        with read_only(root):
            # Three changes while nothing can be written: each reaches HAProxy by the Runtime API.
            for count, leaving in enumerate(stack.apps[:3], start=1):
                consul_put(stack.consul.url, f"/v1/agent/service/deregister/{leaving.instance_id}")
                wait_until(lambda leaving=leaving: leaving.instance_id not in stack.serving(), 10,
                           what=f"runtime change {count} applied during the fault")
                if count == 1:
                    stack.daemon.wait_for_log("Read-only file system", timeout=15)
            time.sleep(1)  # a few retries' worth
            assert stack.apps[0].instance_id in stack.layout.haproxy_cfg.read_text(), "nothing could be written"
            assert stack.serving() == {stack.apps[3].instance_id}
        wait_until(lambda: stack.apps[2].instance_id not in stack.layout.haproxy_cfg.read_text(), 30,
                   what="the file written once the directory is writable again")
        # The file is renamed into place in a worker thread; the line saying so comes right after.
        log = stack.daemon.wait_for_log("haproxy.cfg written again after", timeout=5)
        assert stack.daemon.alive() and "Traceback" not in log
        assert f"cannot write {stack.layout.haproxy_cfg}: Read-only file system" in log
        assert "Runtime API changes go on, the write is retried in" in log
        assert stack.layout.reloads() == reloads, "a disk fault costs no reload"
        haproxy.validate(haproxy.find_binary("haproxy"), stack.layout.haproxy_cfg)


def test_a_full_disk_for_a_while_is_ridden_out(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        root = tmp_path / "tmpfs"
        root.mkdir()
        _mount("-t", "tmpfs", "-o", "size=4m", "tmpfs", str(root))
        exits.callback(subprocess.run, ["umount", "-l", str(root)], check=False, timeout=10)
        stack = Stack(root, consul, make_apps(3), exits, extra=FAST)
        stack.daemon.stop()  # again, with its log off the disk that fills up
        daemon = DaemonProcess(stack.layout.config_toml, tmp_path / "daemon.log")
        exits.callback(daemon.stop)
        daemon.wait_for_log("applied ", timeout=30)
        filler = root / "filler"
        with filler.open("wb") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 65536)
        leaving = stack.apps[0]
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/{leaving.instance_id}")
        wait_until(lambda: leaving.instance_id not in stack.serving(), 10, what="the runtime change applied")
        daemon.wait_for_log("No space left on device", timeout=15)
        filler.unlink()
        wait_until(lambda: leaving.instance_id not in stack.layout.haproxy_cfg.read_text(), 30,
                   what="the file written once there is room again")
        assert daemon.alive() and "Traceback" not in daemon.log()


def test_a_deleted_routes_map_is_put_back_and_a_deleted_admin_socket_is_bound_again_by_a_reload(
        tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra=FAST)
        routes_map = tmp_path / "routes.map"
        routes_map.unlink()
        stack.daemon.wait_for_log(f"reconcile: the routes map {routes_map} was gone (deleted?); written again")
        assert routes_map.exists()
        reloads = stack.layout.reloads()
        socket_path = stack.layout.stats_socket
        socket_path.unlink()
        stack.daemon.wait_for_log(f"HAProxy's admin socket {socket_path} is back after the reload", timeout=15)
        assert socket_path.is_socket()
        log = stack.daemon.log()
        assert log.count(f"reconcile: HAProxy's admin socket {socket_path} is gone (deleted?)") == 1
        assert f"spelled {socket_path.parent}/./{socket_path.name}" in log
        # Back to the usual spelling by a second reload; then quiet: no reload storm.
        wait_until(lambda: f"stats socket {socket_path} " in stack.layout.haproxy_cfg.read_text(), 10,
                   what="the usual spelling back in haproxy.cfg")
        time.sleep(1.5)  # five reconcile intervals
        assert stack.layout.reloads() - reloads == 2, "one reload binds it, one puts the spelling back"
        assert socket_path.is_socket()
        # The Runtime API works again: a change goes through it, with no reload.
        before = stack.daemon.log().count("event=apply.done applied ")
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[0].instance_id}")
        wait_until(lambda: stack.serving() == {stack.apps[1].instance_id}, 15, what="the change applied")
        # HAProxy runs the change before the daemon logs it: wait for the line, then read it.
        stack.daemon.wait_for_log("event=apply.done applied ", count=before + 1)
        assert stack.layout.reloads() - reloads == 2
        applied = [line for line in stack.daemon.log().splitlines() if "event=apply.done applied " in line]
        assert "runtime API:" in applied[-1], applied[-1]
