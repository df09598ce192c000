"""An agent restart in the middle of a long blocking wait does not age data that was current a moment
ago (issue #15, point 4): the data age counts from when the data was last known current, which is the
moment the agent holding the blocking query went away, not the last answer minutes before."""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, http_get, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

# The catalog watch (discovery) has no health checks waking it: its blocking query is held the whole wait.
AGE = 'haproxy_sync_consul_data_age_seconds{service="catalog"}'


def test_an_agent_restart_mid_blocking_wait_keeps_the_data_fresh(tmp_path: Path, consul: DevConsulThread,
                                                                 make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, consul_wait="3m")  # metrics.stale_after = 2s
        time.sleep(3)  # quiet: the watch is held in its blocking query, its last answer 3 s old
        assert stack.metric(AGE) == 0
        consul.stop()  # the agent goes away mid-wait (a restart), for less than stale_after
        time.sleep(0.8)
        assert stack.metric(AGE) < 1.5, "the data was current until the agent went away"
        ready = http_get(f"http://127.0.0.1:{stack.layout.metrics_port}/ready")
        assert ready[0] == 200, ready
        consul.start()  # back on the same port with the same catalog...
        consul.set_fault("index_backwards")  # ...answering with an index lower than before, as a restart may
        wait_until(lambda: stack.metric(AGE) == 0, 15, what="the watch current again after the restart")
        consul.clear_fault()
        assert http_get(f"http://127.0.0.1:{stack.layout.metrics_port}/ready")[0] == 200
        assert stack.serving() == {app.instance_id for app in stack.apps}
