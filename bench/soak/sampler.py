"""What is measured: the daemon's process (psutil), HAProxy's processes, and the daemon's /metrics.

Why psutil on the process and not the daemon's own numbers: a leak is whatever the kernel says the
process holds. RSS is the target of the benchmark; USS (pages only this process maps) is recorded
beside it because RSS also moves when shared library pages are touched or dropped, which is not a
leak. Open descriptors and threads are counted by the kernel too (``/proc/<pid>/fd``, ``.../task``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import metrics as common_metrics
from bench.common.under_test import footprint
from haproxy_sync import haproxy, master

MB = 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One observation of the daemon (and HAProxy) ``t`` seconds after the daemon became ready."""

    t: float
    rss_mb: float
    uss_mb: float
    fds: int
    threads: int
    cpu_percent: float
    haproxy_processes: int
    haproxy_rss_mb: float
    heap_mb: float = 0.0  # RSS of [heap]: the main thread's malloc (brk) heap
    anon_mb: float = 0.0  # RSS of anonymous maps: pymalloc arenas, other threads' malloc arenas, stacks
    file_mb: float = 0.0  # RSS of file-backed maps: the interpreter, shared libraries, C extensions

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}


class Sampler:
    """Samples one daemon process and one HAProxy master with its workers."""

    def __init__(self, daemon_pid: int, haproxy_pid: int) -> None:
        self.daemon = psutil.Process(daemon_pid)
        self.haproxy_pid = haproxy_pid
        self.started = time.monotonic()
        self.cpu_started = self._cpu_seconds()
        self._last_cpu = (self.started, self.cpu_started)

    def _cpu_seconds(self) -> float:
        times = self.daemon.cpu_times()
        return float(times.user + times.system)

    def sample(self) -> Sample:
        """One sample; raises ``psutil.NoSuchProcess`` if the daemon died (the run is then void)."""
        with self.daemon.oneshot():
            memory = self.daemon.memory_full_info()
            fds = self.daemon.num_fds()
            threads = self.daemon.num_threads()
            cpu_seconds = self._cpu_seconds()
        now = time.monotonic()
        # CPU since the previous sample, in % of one core; 0 for the first (no interval yet).
        last_at, last_cpu = self._last_cpu
        cpu = 100.0 * (cpu_seconds - last_cpu) / (now - last_at) if now - last_at > 0.5 else 0.0
        self._last_cpu = (now, cpu_seconds)
        heap, anon, files = rss_by_kind(self.daemon)
        count, rss = footprint(self.haproxy_pid)
        return Sample(round(now - self.started, 3), memory.rss / MB, memory.uss / MB, fds, threads, cpu, count, rss,
                      heap, anon, files)

    def mean_cpu_percent(self) -> float:
        """CPU used since the sampler started, as a percentage of one core."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return 100.0 * (self._cpu_seconds() - self.cpu_started) / elapsed


def rss_by_kind(process: psutil.Process) -> tuple[float, float, float]:
    """RSS split into the malloc heap, anonymous maps and file maps, in MB.

    Why: when RSS grows but tracemalloc sees no Python objects pile up, this says whether the growth
    is in malloc's heaps (C allocations, fragmentation) or in mapped files (code paged in).
    """
    heap = anon = files = 0
    for mapping in process.memory_maps(grouped=True):
        if mapping.path == "[heap]":
            heap += mapping.rss
        elif mapping.path.startswith("[") or not mapping.path:
            anon += mapping.rss
        else:
            files += mapping.rss
    return heap / MB, anon / MB, files / MB


def haproxy_state(master_socket: Path, master_pid: int) -> dict[str, Any]:
    """Workers (current and older generations), reloads and RSS of the HAProxy under test."""
    state: dict[str, Any] = {}
    count, rss = footprint(master_pid)
    state["processes"] = count
    state["rss_mb"] = round(rss, 2)
    try:
        info = master.show_proc(master_socket)
    except haproxy.HAProxyError as exc:
        state["error"] = str(exc)
        return state
    state.update(workers=len(info.workers), old_workers=sum(1 for _, generation in info.workers if generation > 0),
                 reloads=info.reloads, failed_reloads=info.failed)
    return state


# --- the daemon's /metrics ---


WANTED = ("haproxy_sync_applies_total", "haproxy_sync_apply_failures_total", "haproxy_sync_runtime_commands_total",
          "haproxy_sync_renders_total", "haproxy_sync_consul_errors_total", "haproxy_sync_drift_found_total",
          "haproxy_sync_guard_total", "haproxy_sync_config_write_failures_total", "haproxy_sync_reload_failures_total",
          "haproxy_sync_reload_duration_seconds_count", "haproxy_sync_reload_duration_seconds_sum",
          "haproxy_sync_convergence_seconds_count", "haproxy_sync_convergence_seconds_sum",
          "haproxy_sync_servers", "haproxy_sync_haproxy_old_workers", "haproxy_sync_ready")


def parse_metrics(text: str) -> dict[str, float]:
    """The series the report needs (:data:`WANTED`), read by bench/common's one parser."""
    return common_metrics.parse_metrics(text, WANTED)


def scrape(metrics_url: str) -> dict[str, float]:
    """The daemon's /metrics, parsed; empty when it does not answer."""
    return common_metrics.scrape(metrics_url, WANTED, timeout=5.0)


def counter_delta(start: dict[str, float], end: dict[str, float], prefix: str) -> dict[str, float]:
    """How much each series starting with ``prefix`` grew between two scrapes (labels kept)."""
    return {key: end[key] - start.get(key, 0.0) for key in sorted(end)
            if key.startswith(prefix) and end[key] - start.get(key, 0.0) != 0}
