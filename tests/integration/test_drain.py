"""Drains that know when they are done: a long stream through a leaving server finishes, then the
server leaves; on HAProxy 3.0 at once (it reports the server idle), on 2.6 when drain_timeout ends."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import drains, haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, consul_put, haproxy_version, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
STREAM_SECONDS = 4.0
#: Long on 3.0, where HAProxy ends the drain; short enough on 2.6 to watch the timer end it.
DRAIN_TIMEOUT = 30.0 if haproxy_version() >= (3, 0) else 7.0


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(2), exits,
                    extra=f'drain_timeout = "{DRAIN_TIMEOUT:g}s"\nreconcile_interval = "300ms"\n')


class Stream:
    """One GET of ``/stream=<seconds>`` through HAProxy in a thread: its body, and when it ended."""

    def __init__(self, port: int, seconds: float) -> None:
        self.port, self.seconds = port, seconds
        self.body = ""
        self.status = 0
        self.ended_at: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.seconds + 10)
        try:
            conn.request("GET", f"/stream={self.seconds:g}")
            response = conn.getresponse()
            self.status, self.body = response.status, response.read().decode()
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
        finally:
            self.ended_at = time.monotonic()
            conn.close()


def slot_carrying_the_stream(stack: Stack) -> str:
    loads = drains.server_loads(stack.layout.stats_socket, "cabify")
    busy = [name for name, load in loads.items() if load.sessions or load.connections]
    return busy[0] if len(busy) == 1 else ""


def test_a_draining_server_leaves_after_its_last_stream(stack: Stack) -> None:
    layout = stack.layout
    stream = Stream(layout.http_port, STREAM_SECONDS)
    slot = wait_until(lambda: slot_carrying_the_stream(stack), 3, what="the server the stream went to")
    port = next(s.port for s in layout.servers() if s.name == slot)
    app = next(a for a in stack.apps if a.port == port)
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{app.instance_id}")
    left_at = time.monotonic()

    def state() -> haproxy.ServerState:
        return next(s for s in layout.servers() if s.name == slot)

    wait_until(lambda: state().weight == 0, 3, what=f"{slot} drains (weight 0)")
    time.sleep(1.0)
    assert stream.ended_at is None, "the stream ended early"
    assert not state().in_maintenance, "the server left while its stream was still running"
    stream.thread.join(STREAM_SECONDS + 10)
    assert stream.error is None and stream.status == 200, (stream.status, stream.error)
    assert stream.body.count(app.instance_id) == int(STREAM_SECONDS * 10), "the stream was cut short"
    assert stream.ended_at is not None
    if haproxy_version() >= (3, 0):
        wait_until(lambda: state().in_maintenance, 3, what=f"{slot} leaves once its stream ended")
        gone = time.monotonic()
        assert gone - left_at < DRAIN_TIMEOUT / 2, "the drain waited for the timer, not for the stream"
        assert "drain over: backend=cabify server=" + slot in stack.daemon.log()
    else:
        time.sleep(1.0)
        assert state().weight == 0 and not state().in_maintenance, "2.6 has no idle rule: the timer ends the drain"
        wait_until(lambda: state().in_maintenance, DRAIN_TIMEOUT + 3, what=f"{slot} leaves at drain_timeout")
        assert time.monotonic() - left_at >= DRAIN_TIMEOUT - 0.5
        assert "drain over" not in stack.daemon.log()
        assert "no (this HAProxy has no idle rule)" in stack.daemon.log()
    assert layout.reloads() == 0


def test_the_old_workers_gauge_follows_them_until_they_finish(tmp_path: Path, consul: DevConsulThread,
                                                            make_apps) -> None:
    """An old worker kept alive by a stream counts until the stream ends, read back at each reconcile
    (the alert on old workers piling up needs a gauge that comes down)."""
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra='reconcile_interval = "300ms"\n')
        assert stack.metric("haproxy_sync_haproxy_old_workers") == 0
        stream = Stream(stack.layout.http_port, STREAM_SECONDS)
        wait_until(lambda: slot_carrying_the_stream(stack), 3, what="the stream under way")
        reloads = stack.layout.reloads()
        (other,) = make_apps(1, prefix="other")
        register(consul.url, other, service="other", Tags=["haproxy-sync"],
             Meta={"haproxy-sync-host": "other.test"})  # a new backend: a reload
        wait_until(lambda: stack.layout.reloads() > reloads, 15, what="the reload for the new backend")
        wait_until(lambda: stack.metric("haproxy_sync_haproxy_old_workers") == 1, 5, what="the old worker counted")
        stream.thread.join(STREAM_SECONDS + 10)
        assert stream.status == 200, (stream.status, stream.error)
        wait_until(lambda: stack.metric("haproxy_sync_haproxy_old_workers") == 0, 10,
                   what="the gauge down once the old worker finished")
