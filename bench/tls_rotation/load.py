"""The load: wrk on kept-alive HTTPS connections, started before the rotations and stopped after them.

wrk runs with a ``-d`` long enough for every rotation even when they take their longest (see
:func:`duration_cap`) and is stopped with SIGINT once the rotations and the tail are over: on SIGINT
wrk ends its run and prints its summary for the time it ran, so the figures cover the rotations and
no idle tail. Its output is read without a Lua script: ``N requests in Xs``, ``Socket errors:
connect a, read b, write c, timeout d`` (printed only when one is not 0), ``Non-2xx or 3xx
responses: n`` (likewise), ``Requests/sec`` and the latency line.
"""

from __future__ import annotations

import math
import re
import shutil
import signal
from pathlib import Path
from typing import Any

from bench.common.ports import HOST
from bench.common.process import Proc, StackError, clean_env, log_lines

WRK = "/usr/bin/wrk"
SLACK = 60.0  # seconds of -d beyond the planned run: wrk is stopped before, never reaches it

_REQUESTS = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b")
_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_LATENCY = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", re.M)
_UNIT = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def wrk_binary() -> str:
    found = WRK if Path(WRK).exists() else shutil.which("wrk")
    if not found:
        raise StackError("wrk is not installed (apt-get install wrk)")
    return found


def duration_cap(warmup: float, rotations: int, interval: float, tail: float) -> int:
    """wrk's ``-d``: the planned run plus :data:`SLACK` (a rotation slower than ``interval`` delays the
    next one)."""
    return math.ceil(warmup + rotations * interval + tail + SLACK)


def _seconds(text: str) -> float | None:
    """A wrk duration (``1.96ms``, ``2.00s``, ``1.02m``) in seconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(match.group(1)) * _UNIT[match.group(2)] if match else None


def parse_wrk(text: str) -> dict[str, Any]:
    """wrk's summary as figures; raises :class:`StackError` when it has no ``requests in`` line."""
    requests = _REQUESTS.search(text)
    if requests is None:
        raise StackError(f"wrk printed no summary: {text.strip()[-400:]!r}")
    count, seconds = int(requests.group(1)), float(requests.group(2)) * _UNIT[requests.group(3)]
    errors = _ERRORS.search(text)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    non_2xx = int(m.group(1)) if (m := _NON_2XX.search(text)) else 0
    rate = float(m.group(1)) if (m := _RATE.search(text)) else (count / seconds if seconds else 0.0)
    latency = _LATENCY.search(text)
    socket_errors = connect + read + write + timeout
    return {
        "requests": count, "seconds": round(seconds, 3), "requests_per_second": round(rate, 1),
        "socket_errors": {"connect": connect, "read": read, "write": write, "timeout": timeout},
        "non_2xx": non_2xx, "failed": socket_errors + non_2xx,
        "latency_avg_ms": round((_seconds(latency.group(1)) or 0) * 1000, 3) if latency else None,
        "latency_max_ms": round((_seconds(latency.group(3)) or 0) * 1000, 3) if latency else None,
    }


class Wrk:
    """``wrk -t<threads> -c<connections> --timeout <timeout>s -d<cap>s https://127.0.0.1:<port>/``, its
    output in ``log_path``; :meth:`stop` ends it with SIGINT and reads its summary."""

    def __init__(self, port: int, log_path: Path, *, threads: int, connections: int, timeout: float,
                 duration: int) -> None:
        self.argv = [wrk_binary(), f"-t{threads}", f"-c{connections}", "--timeout", f"{timeout:g}s",
                     f"-d{duration}s", f"https://{HOST}:{port}/"]
        self.log_path = log_path
        self.proc = Proc("wrk", self.argv, log_path, env=clean_env())

    def alive(self) -> bool:
        return self.proc.alive()

    def stop(self) -> dict[str, Any]:
        """SIGINT (wrk prints its summary for the time it ran), then its figures."""
        ended_early = not self.proc.alive()
        code = self.proc.stop(signal.SIGINT, timeout=10.0)
        text = "\n".join(log_lines(self.log_path))
        if code not in (0, -signal.SIGINT):
            raise StackError(f"wrk exited with {code}: {text.strip()[-400:]!r}")
        result = parse_wrk(text)
        result["ended_before_stopped"] = ended_early
        result["output"] = text.strip().splitlines()
        return result
