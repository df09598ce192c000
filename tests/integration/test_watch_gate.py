"""The gate on non-blocking reads: a cold start of many watches never has more than a few in flight."""

from __future__ import annotations

import asyncio

from haproxy_sync import consul as consul_module
from haproxy_sync.config import load_settings
from haproxy_sync.consul import ServiceWatch, WatchUpdate, make_client
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import consul_put

SERVICES = 12
GATE = 3


def _register(consul: DevConsulThread) -> None:
    for i in range(SERVICES):
        consul_put(consul.url, "/v1/agent/service/register",
                   {"ID": f"svc{i}-1", "Name": f"svc{i}", "Address": "127.0.0.1", "Port": 8000 + i})


def test_first_reads_wait_at_the_gate(consul: DevConsulThread) -> None:
    _register(consul)
    consul.set_fault("slow", delay=0.2)  # every read takes a while, so ungated reads would all overlap
    settings = load_settings(overrides={"consul.address": consul.url}, services=["svc0"])
    peak, updates = asyncio.run(_cold_start(settings, GATE))
    assert sorted(u.service.name for u in updates) == sorted(f"svc{i}" for i in range(SERVICES))
    assert peak == GATE, f"{peak} non-blocking reads were in flight at once, the gate allows {GATE}"


def test_a_slow_consul_does_not_queue_reads_behind_the_gate(consul: DevConsulThread, monkeypatch) -> None:
    _register(consul)
    monkeypatch.setattr(consul_module, "GATE_PATIENCE", 0.2)
    consul.set_fault("slow", delay=1.0)  # slower than the patience: waiting at the gate would stack up
    settings = load_settings(overrides={"consul.address": consul.url}, services=["svc0"])
    peak, updates = asyncio.run(_cold_start(settings, 1))
    assert len(updates) == SERVICES
    assert peak > 1, "reads past their patience go ahead instead of queueing one by one"


async def _cold_start(settings, gate_size: int) -> tuple[int, list[WatchUpdate]]:  # type: ignore[no-untyped-def]
    gate = asyncio.Semaphore(gate_size)
    client = make_client(settings.consul)
    counts = {"now": 0, "peak": 0}
    updates: list[WatchUpdate] = []

    class Counted(ServiceWatch):
        """Counts the non-blocking reads that reach devconsul at once (real HTTP underneath)."""

        async def _fetch(self, index: int | None, wait: str) -> tuple[object, object]:
            if index:
                return await super()._fetch(index, wait)
            counts["now"] += 1
            counts["peak"] = max(counts["peak"], counts["now"])
            try:
                return await super()._fetch(index, wait)
            finally:
                counts["now"] -= 1

    watches = [Counted(client, f"svc{i}", updates.append, wait=10.0, backoff_max=1.0, gate=gate)
               for i in range(SERVICES)]
    tasks = [asyncio.create_task(w.run()) for w in watches]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.status.first_read.wait() for w in watches)), timeout=20)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    return counts["peak"], updates
