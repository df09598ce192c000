"""The tagged catalog of a size: N services x M instances, a pure function of the size, no I/O.

Why deterministic and without randomness: bench/scale gives each of its two tools a fresh devconsul
filled with exactly the same registrations, so a difference in the figures is the tools', not the
data's; bench/exporter_series renders the same catalog in-process, so its edge is bench/scale's.

The catalog: ``services`` services named ``svc-0000`` ... each with ``instances`` instances
(``svc-0000-0`` ...), tagged with the discovery tag, routed by the instance meta
``haproxy-sync-host = svc-0000.scale.test``; plus one untagged ``default`` service (the backend
haproxy-sync requires one ``[[services]]`` entry for, and that both configs send unmatched hosts to).
Instances carry no Consul checks: they are passing by definition, and 30,000 TTL or HTTP checks would
make devconsul's check runners, not the tools, the thing measured. Instance ``i`` of every service
points at pool port ``i`` (one cheap local HTTP server per port), so within a backend every server
has its own address:port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TAG = "haproxy-sync"
HOST_META = "haproxy-sync-host"
HOST_DOMAIN = "scale.test"
DEFAULT_SERVICE = "default"
INITIAL_WEIGHT = 1


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
