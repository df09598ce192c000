"""The catalog both tools face and the burst both receive: pure functions of the size, no I/O.

Why deterministic and without randomness: the two tools of a size each get a fresh devconsul filled
with exactly the same registrations, and the same burst, so a difference in the figures is the
tools', not the data's.

The catalog: ``services`` services named ``svc-0000`` ... each with ``instances`` instances
(``svc-0000-0`` ...), tagged with the discovery tag, routed by the instance meta
``haproxy-sync-host = svc-0000.scale.test``; plus one untagged ``default`` service (the backend
haproxy-sync requires one ``[[services]]`` entry for, and that both configs send unmatched hosts to).
Instances carry no Consul checks: they are passing by definition, and 30,000 TTL or HTTP checks would
make devconsul's check runners, not the tools, the thing measured. Instance ``i`` of every service
points at pool port ``i`` (one cheap local HTTP server per port), so within a backend every server
has its own address:port.

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
from typing import Any

TAG = "haproxy-sync"
HOST_META = "haproxy-sync-host"
HOST_DOMAIN = "scale.test"
DEFAULT_SERVICE = "default"
INITIAL_WEIGHT = 1
WEIGHT_SPAN = 100  # burst weights are 2..101: never the initial 1, never 0 (drain), far under HAProxy's 256


def service_name(index: int) -> str:
    return f"svc-{index:04d}"


def host_of(index: int) -> str:
    return f"{service_name(index)}.{HOST_DOMAIN}"


@dataclass(frozen=True)
class Catalog:
    """``services`` tagged services of ``instances`` instances each, plus the ``default`` service."""

    services: int
    instances: int
    pool_ports: tuple[int, ...]
    address: str = "127.0.0.1"

    @property
    def total(self) -> int:
        """Tagged instances (the ``default`` service's one instance not counted)."""
        return self.services * self.instances

    def instance_id(self, flat: int) -> str:
        """The ID of instance number ``flat`` in service-major order."""
        service, instance = divmod(flat, self.instances)
        return f"{service_name(service)}-{instance}"

    def registrations(self) -> list[dict[str, Any]]:
        """``/v1/agent/service/register`` bodies for every instance, the ``default`` one first."""
        ports = self.pool_ports
        bodies: list[dict[str, Any]] = [{
            "ID": f"{DEFAULT_SERVICE}-0", "Name": DEFAULT_SERVICE, "Address": self.address, "Port": ports[0],
            "Weights": {"Passing": INITIAL_WEIGHT, "Warning": 1},
        }]
        for service in range(self.services):
            name, meta = service_name(service), {HOST_META: host_of(service)}
            for instance in range(self.instances):
                bodies.append({
                    "ID": f"{name}-{instance}", "Name": name, "Tags": [TAG], "Meta": meta,
                    "Address": self.address, "Port": ports[instance % len(ports)],
                    "Weights": {"Passing": INITIAL_WEIGHT, "Warning": 1},
                })
        return bodies


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
