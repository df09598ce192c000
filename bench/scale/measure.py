"""What is read off the running processes: CPU time and RSS from /proc, HAProxy's state, the daemon's metrics.

Why /proc and not the tools' own numbers: the same reading for a Python daemon and a Go binary.
CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (all threads of the process; ``cutime + cstime``
added where the children count, e.g. consul-template's reload commands), RSS is ``VmRSS`` of
``/proc/<pid>/status``. HAProxy's RSS is its master plus every worker (bench/common's
:func:`~bench.common.under_test.footprint`).
"""

from __future__ import annotations

import contextlib
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common.metrics import samples
from bench.common.metrics import scrape as scrape_metrics
from bench.common.process import http_get
from bench.common.under_test import footprint
from haproxy_sync import commands, haproxy, master

TICKS = os.sysconf("SC_CLK_TCK")
MB = 1024 * 1024


def cpu_seconds(pid: int, children: bool = False) -> float | None:
    """CPU seconds ``pid`` used so far (user + system; with ``children``, of its reaped children too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # After the ")" closing the command name: state is field 3, so utime (14) is index 11.
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICKS


def rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else None


def haproxy_rss_mb(master_pid: int) -> float:
    return round(footprint(master_pid)[1], 2)


def show_proc(master_socket: Path) -> master.ProcInfo | None:
    """The master's ``show proc``; None while its socket blinks (it re-executes itself on a reload)."""
    try:
        return master.show_proc(master_socket)
    except haproxy.HAProxyError:
        return None


def reload_count(master_socket: Path, timeout: float = 10.0) -> int | None:
    """The master's reload counter, retried for up to ``timeout`` across a reload."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = show_proc(master_socket)
        if info is not None:
            return info.reloads
        time.sleep(0.05)
    return None


def served_servers(stats_socket: Path, skip_backends: frozenset[str]) -> dict[tuple[str, int], int] | None:
    """``(backend, port) -> weight`` of every server HAProxy has in rotation (not in maintenance).

    Servers are named by backend and port, not by server name, because the two tools name servers
    differently (consul-template: the instance ID; haproxy-sync: a slot); free slots are in
    maintenance and left out.
    """
    try:
        text = haproxy.socket_command(stats_socket, commands.show_servers_state(), timeout=15)
        states = haproxy.parse_servers_state(text)
    except haproxy.HAProxyError:
        return None
    return {(s.backend, s.port): s.weight for s in states if s.backend not in skip_backends and not s.in_maintenance}


def http_status(url: str, host: str = "", timeout: float = 5.0) -> int:
    """GET ``url`` (with a Host header); the status, or 0 when nothing answered."""
    return http_get(url, timeout, host_header=host)[0]


def scrape(metrics_url: str) -> dict[str, float]:
    """The daemon's /metrics, parsed by bench/common's reader; empty when it does not answer."""
    return scrape_metrics(metrics_url)


def applies(series: dict[str, float]) -> dict[str, float]:
    """``haproxy_sync_applies_total`` summed by path (runtime, reload, none)."""
    by_path: dict[str, float] = {}
    for labels, value in samples(series, "haproxy_sync_applies_total"):
        path = labels.get("path", "?")
        by_path[path] = by_path.get(path, 0.0) + value
    return by_path


def time_haproxy_check(config: Path, repeat: int = 3) -> dict[str, float | None]:
    """``haproxy -c -f config`` wall time: the median of ``repeat`` runs (and whether it passed)."""
    binary = haproxy.find_binary("haproxy") or "haproxy"
    times = []
    ok = True
    for _ in range(repeat):
        started = time.perf_counter()
        with contextlib.suppress(subprocess.TimeoutExpired):
            result = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, timeout=120, check=False)
            ok = ok and result.returncode == 0
        times.append(time.perf_counter() - started)
    return {"median": round(statistics.median(times), 4), "valid": 1.0 if ok else 0.0}


def spread(samples: list[float | None], digits: int = 3) -> dict[str, Any]:
    """Median, min and max of repeated measurements (None samples, e.g. a timed-out wait, left out).

    The median rather than the mean: on a shared 2-core machine one sample now and then lands on a
    busy moment, and one such outlier must not move the figure reported.
    """
    values = [v for v in samples if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits)}


class Window:
    """CPU and RSS of a few processes over a time window, sampled by the caller."""

    def __init__(self, pids: dict[str, int], children: frozenset[str] = frozenset()) -> None:
        self.pids = pids
        self.children = children
        self.started = time.monotonic()
        self.cpu_start = {name: cpu_seconds(pid, name in children) for name, pid in pids.items()}
        self.rss: dict[str, list[float]] = {name: [] for name in pids}

    def sample(self) -> None:
        for name, pid in self.pids.items():
            value = rss_mb(pid)
            if value is not None:
                self.rss[name].append(value)

    def cpu_percent(self) -> dict[str, float | None]:
        """CPU used since the window opened, in % of one core, per process."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        result: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            end, start = cpu_seconds(pid, name in self.children), self.cpu_start[name]
            result[name] = None if end is None or start is None else round(100.0 * (end - start) / elapsed, 3)
        return result

    def cpu_used(self) -> dict[str, float | None]:
        """CPU seconds used since the window opened, per process."""
        result: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            end, start = cpu_seconds(pid, name in self.children), self.cpu_start[name]
            result[name] = None if end is None or start is None else round(end - start, 3)
        return result
