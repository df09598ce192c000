"""HAProxy's Prometheus exporter without the free slots: `?no-maint=` (what the monitoring role scrapes)
leaves out every server in maintenance, on each HAProxy version the suite runs."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        yield Stack(tmp_path, consul, make_apps(3), exits)


def server_series(stack: Stack, query: str = "") -> dict[str, int]:
    url = f"http://127.0.0.1:{stack.layout.stats_port}/metrics{query}"
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    counts: dict[str, int] = {}
    for line in body.splitlines():
        if match := re.search(r'proxy="cabify",server="(slot\d+)"', line):
            counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    return counts


def test_no_maint_leaves_the_free_slots_out_of_the_exporter(stack: Stack) -> None:
    held = {s.name for s in stack.layout.servers() if not s.in_maintenance}
    everything, scraped = server_series(stack), server_series(stack, "?no-maint=")
    assert len(everything) == 8 and len(held) == 3
    assert set(scraped) == held, "only the slots that take traffic"
    # A slot's series count moves by one or two as checks and requests add timings, so compare slot by slot.
    assert all(abs(scraped[slot] - everything[slot]) <= 2 for slot in held)
    free = set(everything) - held
    assert sum(everything[slot] for slot in free) >= 5 * 50, "each free slot costs about 55 series"
    assert sum(scraped.values()) < sum(everything.values()) - 5 * 50
