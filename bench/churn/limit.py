"""The physical limit of one membership change on this machine, measured in the run it is compared with.

A change cannot converge faster than its two unavoidable steps: Consul telling a parked blocking query
(a write until the query returns) and one command on HAProxy's admin socket. Both are measured here on
the mode's own devconsul and HAProxy, just before its churn, so the convergence figures print beside
the limit of the same run on the same (noisy, shared) machine rather than beside a number from elsewhere.

The Consul probe uses a service of its own (``limit-probe``) that no tool under test watches, with a
TTL check flipped between passing and warning: every write is a real change of that service's health.
The socket probe sets a slot that carries no instance (in maintenance) to the weight it has.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.consul import ConsulClient
from bench.common.ports import HOST
from haproxy_sync import commands, haproxy

PROBE = "limit-probe"
#: How long a parked query is given to be parked before the write that should wake it (devconsul parks
#: it at once; this only keeps the write from overtaking the query's own request on a busy host).
PARK_SECONDS = 0.05


@dataclass(frozen=True)
class Limit:
    """Medians of the two steps (milliseconds), and their sum: the fastest a change can converge here."""

    consul_ms: float
    socket_ms: float
    samples: int

    @property
    def total_ms(self) -> float:
        return self.consul_ms + self.socket_ms

    def as_dict(self) -> dict[str, Any]:
        return {"consul_write_to_blocking_return_ms": round(self.consul_ms, 3),
                "admin_socket_command_ms": round(self.socket_ms, 3), "total_ms": round(self.total_ms, 3),
                "samples": self.samples}


def measure(consul_url: str, stats_socket: Path, backend: str, samples: int = 30) -> Limit:
    """Both probes, ``samples`` times each; raises :class:`haproxy.HAProxyError` or ``OSError`` when the
    stack does not answer (the caller reports the limit as unmeasured)."""
    return Limit(_consul_median(consul_url, samples), _socket_median(stats_socket, backend, samples * 3), samples)


def _consul_median(consul_url: str, samples: int) -> float:
    writer = ConsulClient(consul_url)
    writer.put("/v1/agent/service/register", {
        "ID": PROBE, "Name": PROBE, "Address": HOST, "Port": 1,
        "Checks": [{"CheckID": f"ttl:{PROBE}", "Name": "ttl", "TTL": "1h", "Status": "passing"}],
    })
    try:
        index = _index(consul_url)
        times: list[float] = []
        for i in range(samples):
            returned: list[float] = []
            query = threading.Thread(target=_park, args=(consul_url, index, returned), daemon=True)
            query.start()
            time.sleep(PARK_SECONDS)
            started = time.perf_counter()
            writer.put(f"/v1/agent/check/{'warn' if i % 2 == 0 else 'pass'}/ttl:{PROBE}")
            query.join(10)
            if returned:
                times.append((returned[0] - started) * 1000)
            index = _index(consul_url)
        return statistics.median(times) if times else float("nan")
    finally:
        writer.put(f"/v1/agent/service/deregister/{PROBE}")
        writer.close()


def _index(consul_url: str) -> str:
    """The probe service's X-Consul-Index now: what the next parked query waits past."""
    status, index = _get(consul_url, f"/v1/health/service/{PROBE}", 5)
    return index if status == 200 and index.isdigit() else "0"


def _get(consul_url: str, path: str, timeout: float) -> tuple[int, str]:
    client = ConsulClient(consul_url, timeout=timeout)
    conn = http.client.HTTPConnection(client.host, client.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status, response.headers.get("X-Consul-Index", "")
    finally:
        conn.close()


def _park(consul_url: str, index: str, returned: list[float]) -> None:
    try:
        _get(consul_url, f"/v1/health/service/{PROBE}?index={index}&wait=10s", 15)
        returned.append(time.perf_counter())
    except OSError:
        pass


def _socket_median(stats_socket: Path, backend: str, samples: int) -> float:
    free = [s for s in haproxy.servers_state(stats_socket, backend) if s.in_maintenance]
    if not free:
        return float("nan")
    # Its own weight again: a real `set server`, yet what HAProxy runs stays what the tool planned (any
    # other value would be drift that the tool's read-back repairs, or reloads for).
    command = commands.set_server_weight(backend, free[-1].name, free[-1].weight)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        haproxy.socket_command(stats_socket, command)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)
