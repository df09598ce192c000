"""The burst both tools of a size receive: a pure function of the catalog, no I/O.

The burst: ``changes`` weight changes (``Weights.Passing``) spread over ``writes`` catalog writes.
Change ``c`` goes to instance ``c mod total`` in service-major order, so a write holds whole services
(at 1,000 services x 10, write ``k`` changes every instance of services ``100k`` to ``100k+99``; with
fewer instances than changes, instances change more than once). Instance ``i`` of every service
points at pool port ``i``, which is what lets the benchmark tell, server by server, when HAProxy
serves the burst's last weights. A weight change is not a change of
structure: no backend, frontend or server appears or goes, only a server's weight moves, which
HAProxy's Runtime API can apply without a reload.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from bench.common.catalog import INITIAL_WEIGHT, Catalog, service_name

WEIGHT_SPAN = 100  # burst weights are 2..101: never the initial 1, never 0 (drain), far under HAProxy's 256


@dataclass(frozen=True)
class Burst:
    """The burst as devconsul receives it: one ``{instance id: (passing, warning)}`` per write."""

    writes: tuple[dict[str, tuple[int, int]], ...]
    final: dict[str, int]  # instance id -> its weight after the burst (only instances the burst touched)
    changes: int

    @property
    def services_touched(self) -> int:
        return len({instance_id.rsplit("-", 1)[0] for instance_id in self.final})

    def expected_servers(self, catalog: Catalog) -> dict[tuple[str, int], int]:
        """``(service, port) -> weight`` of every tagged instance once the burst is applied.

        Service and port name an instance in both tools' configs: each names the backend after the
        service, and the instances of a service have distinct pool ports (server names differ: the
        instance ID for consul-template, a slot for haproxy-sync).
        """
        expected = {}
        for flat in range(catalog.total):
            instance_id = catalog.instance_id(flat)
            service, instance = divmod(flat, catalog.instances)
            port = catalog.pool_ports[instance % len(catalog.pool_ports)]
            expected[(service_name(service), port)] = self.final.get(instance_id, INITIAL_WEIGHT)
        return expected


def make_burst(catalog: Catalog, changes: int, writes: int) -> Burst:
    """``changes`` weight changes in ``writes`` nearly equal writes; each change really changes a weight.

    The ``k``-th change of instance ``j`` sets ``2 + (j + k) % WEIGHT_SPAN``: it differs from that
    instance's previous weight (``k - 1``, or the initial 1), so every change moves the catalog.
    """
    if changes < 1 or writes < 1 or writes > changes:
        raise ValueError("need 1 <= writes <= changes")
    total = catalog.total
    per_write = [changes // writes + (1 if k < changes % writes else 0) for k in range(writes)]
    seen: Counter[int] = Counter()
    final: dict[str, int] = {}
    batches: list[dict[str, tuple[int, int]]] = []
    change = 0
    for size in per_write:
        batch: dict[str, tuple[int, int]] = {}
        for _ in range(size):
            flat = change % total
            weight = 2 + (flat + seen[flat]) % WEIGHT_SPAN
            seen[flat] += 1
            instance_id = catalog.instance_id(flat)
            batch[instance_id] = (weight, 1)  # a later change of the same instance in one write wins
            final[instance_id] = weight
            change += 1
        batches.append(batch)
    return Burst(tuple(batches), final, changes)
