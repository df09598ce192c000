"""The churn: a seeded random sequence of Consul changes, sent at a steady average rate.

Why these changes: they are what a scheduler and flaky apps do to Consul all day, and each reaches a
different path of the daemon:

* ``register`` / ``deregister``: an instance appears (takes a slot: Runtime API) or leaves (drains for
  ``sync.drain_timeout``, then its slot is freed). IDs are never reused (``<service>-<n>``, as Nomad
  allocations are), so any per-instance state the daemon forgot to drop would pile up;
* ``status``: a TTL check flips between passing, warning and critical (weights and drains);
* ``weight``: the instance is re-registered with other ``Weights`` (checks keep their state);
* ``noise``: a TTL check is refreshed with the same status and a new note, as apps do: Consul's
  index moves, nothing that reaches the config changes (the path consul-template reloads on).

The number of instances per service stays between ``min_instances`` and ``max_instances``, so the
daemon's slot tables grow to a bounded size early (a reload per doubling) and then stay: growth
after that would be a leak, not a bigger catalog. Arrivals are a Poisson process with the given
rate (bursts and pauses, as in real life), drawn from ``random.Random(seed)``: the same seed gives the
same sequence of changes.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bench.common.consul import ConsulClient, ConsulError
from bench.common.ports import HOST
from bench.common.process import wait_for

KINDS = ("register", "deregister", "status", "weight", "noise")
KIND_WEIGHTS = (0.2, 0.2, 0.3, 0.15, 0.15)
STATUS_VERB = {"passing": "pass", "warning": "warn", "critical": "fail"}
TTL = "24h"  # longer than any run: TTL checks change only when the churn says so


@dataclass
class Instance:
    """One registered instance as the churn last set it."""

    service: str
    instance_id: str
    port: int
    ttl_status: str = "passing"
    weight_passing: int = 1
    weight_warning: int = 1

    @property
    def ttl_check(self) -> str:
        return f"{self.instance_id}:ttl"

    def registration(self) -> dict[str, Any]:
        """The /v1/agent/service/register body: an HTTP check on the backend and a TTL check we flip."""
        return {
            "ID": self.instance_id, "Name": self.service, "Address": HOST, "Port": self.port,
            "Tags": ["soak"], "Meta": {"bench": "soak"},
            "Weights": {"Passing": self.weight_passing, "Warning": self.weight_warning},
            "Checks": [
                {"CheckID": f"{self.instance_id}:http", "Name": "http", "Interval": "5s", "Timeout": "1s",
                 "HTTP": f"http://{HOST}:{self.port}/health"},
                {"CheckID": self.ttl_check, "Name": "ttl", "TTL": TTL, "Status": self.ttl_status},
            ],
        }


@dataclass
class ChurnStats:
    """What the churn did: changes sent by kind, and the ones Consul refused or that timed out."""

    sent: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str = ""
    started: float = 0.0
    finished: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        seconds = max(self.finished - self.started, 1e-9)
        total = sum(self.sent.values())
        return {"sent": dict(sorted(self.sent.items())), "total": total, "errors": dict(self.errors),
                "last_error": self.last_error, "seconds": round(seconds, 1),
                "rate_per_second": round(total / seconds, 3)}


class Churn:
    """Drives the seeded change sequence against a Consul HTTP API until a deadline or a stop."""

    def __init__(self, consul: ConsulClient, ports: dict[str, list[int]], *, seed: int, rate: float,
                 min_instances: int, max_instances: int) -> None:
        if not 0 < min_instances <= max_instances:
            raise ValueError("need 0 < min_instances <= max_instances")
        self.consul = consul  # used by one thread at a time: the caller's for the set-up, then the churn's
        self.ports = ports  # per service; twice max_instances, so a free one always exists
        self.rng = random.Random(seed)
        self.rate = rate
        self.min_instances = min_instances
        self.max_instances = max_instances
        self.live: dict[str, dict[str, Instance]] = {service: {} for service in ports}
        self.sequence = 0
        self.stats = ChurnStats()

    # --- set-up ---

    def register_initial(self, per_service: int, timeout: float = 20.0) -> None:
        """Register the first instances and wait until devconsul has run their HTTP checks once."""
        for service in self.live:
            for _ in range(per_service):
                self._register(service)
        for service, instances in self.live.items():
            count = len(instances)
            wait_for(lambda s=service, n=count: self._all_passing(s, n), timeout,
                     f"{count} passing instances of {service} in devconsul", interval=0.1)

    def _all_passing(self, service: str, count: int) -> bool:
        entries = self.consul.call("GET", f"/v1/health/service/{service}")
        return len(entries) == count and all(c["Status"] == "passing" for e in entries for c in e["Checks"])

    # --- the loop ---

    def run(self, deadline: float, stop: threading.Event) -> None:
        """Send changes at ``rate`` per second on average until ``deadline`` (monotonic) or ``stop``.

        Bounded twice: by time, and by a count of three times what the rate asks for.
        """
        self.stats.started = time.monotonic()
        limit = int(self.rate * max(0.0, deadline - self.stats.started) * 3) + 10
        next_at = self.stats.started
        for _ in range(limit):
            next_at += self.rng.expovariate(self.rate)
            if next_at >= deadline or stop.wait(max(0.0, next_at - time.monotonic())):
                break
            self.step()
        self.stats.finished = time.monotonic()

    def step(self) -> str:
        """One change, chosen and applied; returns its kind. Errors are counted, not raised: a soak
        must outlive a slow answer."""
        kind = self.rng.choices(KINDS, KIND_WEIGHTS)[0]
        service = self.rng.choice(sorted(self.live))
        count = len(self.live[service])
        if kind == "register" and count >= self.max_instances:
            kind = "deregister"
        elif kind == "deregister" and count <= self.min_instances:
            kind = "register"
        try:
            if kind == "register":
                self._register(service)
            elif kind == "deregister":
                self._deregister(service)
            elif kind == "status":
                self._flip(service)
            elif kind == "weight":
                self._reweigh(service)
            else:
                self._noise(service)
        except (OSError, ValueError, ConsulError) as exc:
            self.stats.errors[kind] += 1
            self.stats.last_error = f"{kind}: {exc}"
        else:
            self.stats.sent[kind] += 1
        return kind

    # --- the changes ---

    def _pick(self, service: str) -> Instance:
        return self.live[service][self.rng.choice(sorted(self.live[service]))]

    def _register(self, service: str) -> None:
        used = {instance.port for instance in self.live[service].values()}
        port = self.rng.choice([p for p in self.ports[service] if p not in used])
        self.sequence += 1
        instance = Instance(service, f"{service}-{self.sequence}", port,
                            weight_passing=self.rng.randint(1, 10), weight_warning=self.rng.randint(0, 3))
        self.consul.put("/v1/agent/service/register", instance.registration())
        self.live[service][instance.instance_id] = instance

    def _deregister(self, service: str) -> None:
        instance = self._pick(service)
        self.consul.put(f"/v1/agent/service/deregister/{instance.instance_id}")
        del self.live[service][instance.instance_id]

    def _flip(self, service: str) -> None:
        instance = self._pick(service)
        if instance.ttl_status == "passing":
            status = self.rng.choice(("warning", "critical"))
        else:
            other = "warning" if instance.ttl_status == "critical" else "critical"
            status = "passing" if self.rng.random() < 0.7 else other
        self._ttl(instance, status, f"soak: {status}")
        instance.ttl_status = status

    def _reweigh(self, service: str) -> None:
        instance = self._pick(service)
        instance.weight_passing = self.rng.choice([w for w in range(1, 11) if w != instance.weight_passing])
        instance.weight_warning = self.rng.randint(0, 3)
        self.consul.put("/v1/agent/service/register", instance.registration())

    def _noise(self, service: str) -> None:
        instance = self._pick(service)
        self._ttl(instance, instance.ttl_status, f"soak: {instance.ttl_status} at {time.time():.3f}")

    def _ttl(self, instance: Instance, status: str, note: str) -> None:
        check = urllib.parse.quote(instance.ttl_check, safe=":")
        query = urllib.parse.urlencode({"note": note})
        self.consul.put(f"/v1/agent/check/{STATUS_VERB[status]}/{check}?{query}")

    def instance_counts(self) -> dict[str, int]:
        return {service: len(instances) for service, instances in self.live.items()}
