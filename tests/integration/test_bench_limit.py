"""bench/churn's limit probe measures on a live stack without changing what HAProxy runs.

The probe runs on the stack of the mode it is compared with, just before its churn: a probe that
left HAProxy off plan would make the tool under test repair or reload (the first version of it set a
free slot's weight and made haproxy-sync reload), and a probe that left its service in Consul would
be a change the tool sees.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path

import pytest

from bench.churn import limit
from haproxy_sync import haproxy
from tests.helpers import Stack, health

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


def test_the_limit_is_measured_and_leaves_haproxy_and_consul_as_they_were(tmp_path: Path, consul,
                                                                        make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits)
        socket = stack.layout.stats_socket
        before = haproxy.servers_state(socket, "cabify")
        measured = limit.measure(consul.url, socket, "cabify", samples=5)
        assert 0 < measured.consul_ms < 1000 and 0 < measured.socket_ms < 1000, measured
        assert math.isclose(measured.total_ms, measured.consul_ms + measured.socket_ms)
        assert haproxy.servers_state(socket, "cabify") == before, "the probe changed what HAProxy runs"
        assert health(consul.url, limit.PROBE) == [], "the probe's service stayed in Consul"
