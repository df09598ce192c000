"""Counters across the reloads that remain: on HAProxy 3.0 the new worker preloads the old one's
(``stats-file``, filled by ``dump stats-file`` just before the reload and emptied after); on 2.6 they
start from zero, which is what docs/haproxy-versions.md says is lost there."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, haproxy_version, http_get, operator_command, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")
REQUESTS = 25


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(3), exits, extra='reconcile_interval = "300ms"\n')


def sessions_total(stack: Stack, proxy: str, server: str) -> int:
    """``stot`` of one proxy line of ``show stat`` (a server, BACKEND or FRONTEND)."""
    text = operator_command(stack.layout.stats_socket, "show stat")
    header = text.splitlines()[0].lstrip("# ").split(",")
    for line in text.splitlines()[1:]:
        cols = line.split(",")
        if cols[:2] == [proxy, server]:
            return int(cols[header.index("stot")])
    raise AssertionError(f"no {proxy}/{server} in show stat")


def test_counters_survive_a_reload_on_3_0_and_reset_on_2_6(stack: Stack, make_apps) -> None:
    layout = stack.layout
    for _ in range(REQUESTS):
        assert http_get(layout.url("/"))[0] == 200
    before = {name: sessions_total(stack, "cabify", name) for name in ("BACKEND", "slot1", "slot2", "slot3")}
    front = sessions_total(stack, "http", "FRONTEND")
    assert before["BACKEND"] == REQUESTS and front >= REQUESTS

    (api,) = make_apps(1, prefix="api")  # a new backend: a reload
    register(stack.consul.url, api, service="api")
    layout.services = ("cabify", "api")
    layout.write()
    stack.daemon.signal(signal.SIGHUP)
    wait_until(lambda: layout.reloads() == 1, 15, what="the reload for the new backend")
    wait_until(lambda: stack.serving("api", [api]) == {api.instance_id}, 10, what="the new backend served")

    after = {name: sessions_total(stack, "cabify", name) for name in before}
    config = layout.haproxy_cfg.read_text()
    stats_file = layout.root / "stats-file"
    if haproxy_version() >= (3, 0):
        assert f"stats-file {stats_file}" in config and "guid srv:cabify:slot1" in config
        assert after == before, "the new worker did not preload the old one's counters"
        assert sessions_total(stack, "http", "FRONTEND") >= front
        assert stats_file.read_text() == "\n", "the stats-file must be emptied after the reload"
    else:
        assert "stats-file" not in config and "guid" not in config
        assert after["BACKEND"] == 0, "2.6 has no stats-file: counters start again from zero"
