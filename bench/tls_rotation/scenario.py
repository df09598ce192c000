"""The scenario on one HAProxy binary: per mode, a fresh edge, wrk on it, the rotations, the figures.

For each mode (A, then B, on the same backends): the edge starts with a first certificate, the
master's ``show proc`` is read (reload counter, worker), wrk starts, and after ``--warmup`` seconds the
rotations begin, one every ``--interval`` seconds. After each one a fresh TLS handshake is made every
:data:`PROBE_PAUSE` seconds until it shows the new certificate's fingerprint (at most
``--serve-timeout``): the time from ``default.pem`` holding the new certificate to that handshake is the
rotation latency. A rotation slower than the interval delays the next one (they never overlap). Then
``--tail`` seconds more of load, the master is read again and wrk is stopped.

Workers started: the distinct newest workers ``show proc`` named after each rotation and at the end,
the one at the start not counted.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.process import StackError

from .load import Wrk, duration_cap
from .pem import Bundle, new_bundle, served
from .stack import Backends, Edge, make_edge

PROBE_PAUSE = 0.01  # seconds between two handshakes while a rotation is awaited


@dataclass(frozen=True)
class Params:
    rotations: int
    interval: float
    threads: int
    connections: int
    wrk_timeout: float
    warmup: float
    tail: float
    serve_timeout: float
    start_timeout: float
    modes: tuple[str, ...]
    settings: tuple[tuple[str, str, str], ...] = ()  # --haproxy-sync-set: (section, key, TOML value)


def wait_served(port: int, fingerprint: str, since: float, timeout: float) -> tuple[float | None, int, int]:
    """Handshakes until one shows ``fingerprint``: (seconds since ``since``, or None after ``timeout``;
    handshakes made; handshakes that failed)."""
    probes = failed = 0
    deadline = since + timeout
    while True:
        shown = served(port)
        now = time.monotonic()
        probes += 1
        if shown is None:
            failed += 1
        elif shown == fingerprint:
            return now - since, probes, failed
        if now > deadline:
            return None, probes, failed
        time.sleep(PROBE_PAUSE)


class Accepted:
    """TLS connections the workers accepted over a run, from ``show info`` samples (``CumSslConns`` per
    worker): each worker counts with its last sample, the first worker from its count at the start.

    A reload's old worker is sampled last just before the reload; what it accepts after that (nothing
    from wrk, whose connections stay open, and no handshake of ours) is not seen."""

    def __init__(self, first: tuple[int, int] | None) -> None:
        self.first = first
        self.last: dict[int, int] = {}

    def sample(self, value: tuple[int, int] | None) -> None:
        if value is not None:
            pid, count = value
            self.last[pid] = max(count, self.last.get(pid, 0))

    def total(self) -> int | None:
        if self.first is None:
            return None
        first_pid, first_count = self.first
        return sum(count - (first_count if pid == first_pid else 0) for pid, count in self.last.items())


def _pause_until(moment: float, wrk: Wrk) -> None:
    """Sleep until ``moment`` (bounded by it), stopping early only when wrk is gone."""
    while (left := moment - time.monotonic()) > 0 and wrk.alive():
        time.sleep(min(left, 0.1))


def measure(edge: Edge, params: Params, bundles: Sequence[Bundle], say: Callable[[str], None]) -> dict[str, Any]:
    """wrk on ``edge`` while each of ``bundles`` is rotated in; the mode's figures."""
    before = edge.master()
    workers: list[int] = [before.current_worker] if before.current_worker else []
    changes_before = edge.runtime_changes()
    cpu_before = edge.daemon_cpu_seconds()
    accepted = Accepted(edge.tls_accepted())
    cap = duration_cap(params.warmup, len(bundles), params.interval, params.tail)
    wrk = Wrk(edge.https_port, edge.root / "wrk.log", threads=params.threads, connections=params.connections,
              timeout=params.wrk_timeout, duration=cap)
    started = time.monotonic()
    rotations: list[dict[str, Any]] = []
    try:
        _pause_until(started + params.warmup, wrk)
        if not wrk.alive():
            raise StackError(f"wrk exited during the warm-up: {wrk.proc.log_tail()}")
        next_at = time.monotonic()
        current = before.current_worker
        for index, bundle in enumerate(bundles, 1):
            _pause_until(next_at, wrk)
            accepted.sample(edge.tls_accepted())
            under_load = wrk.alive()
            step = edge.rotate(bundle)
            latency, probes, failed_probes = wait_served(edge.https_port, bundle.fingerprint, step["replaced_at"],
                                                         params.serve_timeout)
            info = edge.master()
            if info.current_worker and info.current_worker not in workers:
                workers.append(info.current_worker)
            # The handshakes the workers' counters see: all of them while the worker stays; after a reload
            # only the one that showed the new certificate (the others reached the old worker after its
            # last sample).
            counted = probes - failed_probes if info.current_worker == current else int(latency is not None)
            current = info.current_worker
            rotation = {
                "index": index, "at": round(step.pop("replaced_at") - started, 3), "serial": bundle.serial,
                "fingerprint": bundle.fingerprint, "latency_seconds": None if latency is None else round(latency, 4),
                "served": latency is not None, "under_load": under_load, "probes": probes,
                "failed_probes": failed_probes, "counted_probes": counted, "worker": info.current_worker,
                "workers_running": len(info.workers),
                **step,
            }
            rotations.append(rotation)
            shown = f"{latency:.3f} s" if latency is not None else f"NOT within {params.serve_timeout:g} s"
            say(f"    rotation {index:2}/{len(bundles)}: served after {shown} ({probes} handshakes, {failed_probes} "
                f"failed), worker {info.current_worker}, {len(info.workers)} running"
                + (f", reload command {step['reload_command_seconds']:.3f} s exit {step['reload_command_exit']}"
                   if "reload_command_seconds" in step else ""))
            if not edge.alive():
                raise StackError(f"{edge.label}: a process of the edge exited during rotation {index}")
            next_at = max(next_at + params.interval, time.monotonic())
        _pause_until(time.monotonic() + params.tail, wrk)
        after = edge.master()
        accepted.sample(edge.tls_accepted())
        cpu_after = edge.daemon_cpu_seconds()
    except BaseException:
        wrk.proc.stop()
        raise
    load = wrk.stop()
    if after.current_worker and after.current_worker not in workers:
        workers.append(after.current_worker)
    latencies = [r["latency_seconds"] for r in rotations if r["latency_seconds"] is not None]
    changes_after = edge.runtime_changes()
    tls_connections = accepted.total()
    probe_handshakes = sum(r["counted_probes"] for r in rotations)
    return {
        "mode": edge.mode, "label": edge.label, "wrk_argv": wrk.argv, "load": load,
        "rotations_asked": len(bundles), "rotations_served": len(latencies),
        "rotations_under_load": sum(1 for r in rotations if r["under_load"]),
        "every_rotation_served": len(latencies) == len(bundles) and all(r["under_load"] for r in rotations),
        "latency_p50_seconds": round(statistics.median(latencies), 4) if latencies else None,
        "latency_max_seconds": round(max(latencies), 4) if latencies else None,
        "reloads": after.reloads - before.reloads, "failed_reloads": after.failed - before.failed,
        "workers_started": max(len(workers) - 1, 0), "worker_pids": workers,
        "workers_running_at_end": len(after.workers),
        "runtime_api_changes": None if changes_before is None or changes_after is None
        else changes_after - changes_before,
        "failed_probes": sum(r["failed_probes"] for r in rotations),
        "tls_connections_accepted": tls_connections, "probe_handshakes_counted": probe_handshakes,
        "wrk_tls_connections": None if tls_connections is None else tls_connections - probe_handshakes,
        "daemon_cpu_seconds": None if cpu_before is None or cpu_after is None else round(cpu_after - cpu_before, 2),
        "rotations": rotations,
    }


def run(binary: str, root: Path, params: Params, say: Callable[[str], None]) -> dict[str, Any]:
    """Every mode of ``params.modes`` on ``binary``: {"modes": [...]}; a mode that fails is an entry with
    an ``error`` (and its logs' tails), not the end of the others."""
    result: dict[str, Any] = {"modes": []}
    backends = Backends(root, binary, params.start_timeout)
    try:
        say(f"  backends: {len(backends.pool.ports)} instances of cabify on ports "
            f"{', '.join(map(str, backends.pool.ports))}; devconsul on {backends.consul.url}")
        for mode in params.modes:
            bundles = [new_bundle() for _ in range(params.rotations + 1)]
            factory = make_edge(mode)
            say(f"  mode {mode} ({factory.label}):")
            edge: Edge | None = None
            try:
                edge = factory(root / mode, binary, backends.consul.url, bundles[0], params.start_timeout,
                               params.settings)
                say(f"    edge up: HTTPS on port {edge.https_port}, HAProxy master pid {edge.haproxy.master_pid}")
                entry = measure(edge, params, bundles[1:], say)
            except StackError as exc:
                entry = {"mode": mode, "label": factory.label, "error": str(exc)[:500],
                         "log_tails": edge.log_tails() if edge is not None else {}}
                say(f"    failed: {entry['error']}")
            finally:
                if edge is not None:
                    edge.stop()
            result["modes"].append(entry)
    finally:
        backends.stop()
    return result
