"""The load: wrk for keep-alive short requests, and a few threads holding long streams.

Why wrk: it is the load generator the DESIGN's figures came from (Debian's ``/usr/bin/wrk``), it
keeps 50 keep-alive connections busy at tens of thousands of requests per second on two cores,
and it counts exactly what a reload breaks: a connection closed under a request in flight is a
``read`` socket error. Its summary is parsed, not its per-request data, so the figures here are
per run, not over time.

Why threads for the streams: a handful of blocking connections that each read one line every
0.5 s cost nothing, and a stream's outcome (complete, or cut before ``end``) is all we need.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any


class LoadError(Exception):
    """wrk is missing, failed, or printed something this parser does not understand."""


@dataclass(frozen=True)
class WrkResult:
    """What one wrk run reports; ``failed`` is the sum of its socket errors."""

    requests: int
    seconds: float
    rps: float
    connect: int
    read: int
    write: int
    timeout: int
    non2xx: int
    p50_ms: float | None
    p99_ms: float | None

    @property
    def failed(self) -> int:
        return self.connect + self.read + self.write + self.timeout

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "failed": self.failed}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _latency_ms(text: str, percent: str) -> float | None:
    match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.MULTILINE)
    return float(match.group(1)) * _UNITS_MS[match.group(2)] if match else None


def parse_wrk(text: str) -> WrkResult:
    """Parse wrk's summary. The socket-error and non-2xx lines appear only when non-zero."""
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if total is None or rps is None:
        raise LoadError(f"cannot parse wrk output: {text.strip()[-300:]!r}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    connect, read, write, timeout = (int(g) for g in errors.groups()) if errors else (0, 0, 0, 0)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000.0,
        rps=float(rps.group(1)),
        connect=connect, read=read, write=write, timeout=timeout,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        p50_ms=_latency_ms(text, "50"),
        p99_ms=_latency_ms(text, "99"),
    )


def find_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError("wrk not found; install Debian's `wrk` package (apt-get install wrk)")
    return path


class Wrk:
    """One wrk run in the background (its own session, so only we stop it)."""

    def __init__(self, url: str, seconds: float, threads: int = 2, connections: int = 50) -> None:
        self.seconds = seconds
        self.argv = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url]
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True,
        )

    def wait(self) -> WrkResult:
        assert self.process is not None
        try:
            output, _ = self.process.communicate(timeout=self.seconds + 30.0)
        except subprocess.TimeoutExpired:
            self.stop()
            raise LoadError(f"wrk ran {self.seconds + 30.0:g}s past its -d; stopped it") from None
        if self.process.returncode != 0:
            raise LoadError(f"wrk exited {self.process.returncode}: {output.strip()[-300:]}")
        return parse_wrk(output)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5.0)


@dataclass
class StreamOutcome:
    """One stream: when it started and ended (seconds from the run's start), and whether it got ``end``."""

    start: float
    end: float = 0.0
    ticks: int = 0
    complete: bool = False
    error: str = ""


@dataclass
class StreamClients:
    """``count`` clients, client i opening one stream of ``seconds`` at ``t0 + offsets[i]``.

    Staggered starts spread the streams over the reload window, so that successive workers each
    take some: that is what piles old workers up when every reload leaves one behind.
    """

    port: int
    seconds: float
    offsets: list[float]
    t0: float
    outcomes: list[StreamOutcome] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for offset in self.offsets:
            thread = threading.Thread(target=self._client, args=(offset,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _client(self, offset: float) -> None:
        if self._stop.wait(max(0.0, self.t0 + offset - time.monotonic())):
            return
        outcome = StreamOutcome(start=time.monotonic() - self.t0)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5.0)
        try:
            conn.request("GET", f"/stream?seconds={self.seconds:g}")
            response = conn.getresponse()
            if response.status != 200:
                outcome.error = f"status {response.status}"
            else:
                while not self._stop.is_set():
                    line = response.readline()
                    if line == b"tick\n":
                        outcome.ticks += 1
                    elif line == b"end\n":
                        outcome.complete = True
                        break
                    else:
                        outcome.error = "cut" if not line else f"unexpected {line[:20]!r}"
                        break
        except (OSError, http.client.HTTPException) as exc:
            outcome.error = type(exc).__name__
        finally:
            conn.close()
            outcome.end = time.monotonic() - self.t0
            with self._lock:
                self.outcomes.append(outcome)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
