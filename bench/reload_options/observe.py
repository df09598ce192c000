"""The reload schedule and the ``show proc`` sampler, each a bounded background thread.

Why a fixed schedule: the variants are compared under the same reloads at the same moments, so a
difference in failed requests is the options' doing. Reload i is due at ``t0 + lead + i / rate``;
each one goes through :func:`haproxy_sync.master.reload` — ``reload`` on the master socket, then
``show proc`` until the reload counter moved and a new worker runs — because HAProxy 2.6 gives no
status for ``reload``. A reload that takes longer than its slot makes the next one late, never a
burst; the achieved rate is reported.

Why sample ``show proc`` every 200 ms: old workers are what a reload leaves behind; their count
over time shows how fast each variant drains them (and what ``hard-stop-after`` cuts short).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from haproxy_sync import haproxy, master


@dataclass
class ReloadRecord:
    """One reload: due and done times (seconds from the run's start), and whether it was confirmed."""

    due: float
    sent: float
    done: float
    ok: bool
    error: str = ""


@dataclass
class Reloader:
    """Issues ``count`` reloads at ``rate`` per second from ``t0 + lead``; stops early when told."""

    master_socket: Path
    count: int
    rate: float
    t0: float
    lead: float
    records: list[ReloadRecord] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for i in range(self.count):
            due = self.lead + i / self.rate
            if self._stop.wait(max(0.0, self.t0 + due - time.monotonic())):
                return
            sent = time.monotonic() - self.t0
            try:
                master.reload(self.master_socket, timeout=10.0)
                ok, error = True, ""
            except haproxy.HAProxyError as exc:
                ok, error = False, str(exc)
            self.records.append(ReloadRecord(due, sent, time.monotonic() - self.t0, ok, error))

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self) -> None:
        self._stop.set()


@dataclass
class ProcSample:
    """One ``show proc``: seconds from the run's start, workers alive, of which old (None: no answer)."""

    t: float
    workers: int | None
    old: int | None


@dataclass
class ProcSampler:
    """Samples the master's ``show proc`` every ``interval`` seconds until stopped."""

    master_socket: Path
    t0: float
    interval: float = 0.2
    samples: list[ProcSample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic() - self.t0
            try:
                info = master.show_proc(self.master_socket)
                workers = len(info.workers)
                self.samples.append(ProcSample(now, workers, sum(1 for _, gen in info.workers if gen > 0)))
            except haproxy.HAProxyError:
                self.samples.append(ProcSample(now, None, None))  # the master re-executes during a reload
            tick += self.interval
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
