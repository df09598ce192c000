"""What HAProxy runs, observed from outside: convergence of each change, workers alive, memory.

Why from HAProxy's runtime socket and not from the syncer's logs: the question is "when does HAProxy
*run* the new state", whichever way the syncer got it there (a reload, the Runtime API, anything
else), so the benchmark asks HAProxy itself: ``show servers state`` on the admin socket, polled every
few milliseconds. Servers are matched by their address and port, never by name, because
consul-template names servers after Consul IDs while a slot-based Runtime API path names them
``slotN``; each instance of the pool answers on its own port, so the port identifies it.

A change is converged at the first poll that *started* after the Consul write and shows the
instance served with the expected weight (or, for a removal or a failed check, not taking new
traffic: absent, in maintenance or draining). The latency is taken when that answer arrived, so it
is an upper bound within one poll interval. A change superseded by a later change to the same
instance before it converged is counted apart (the sequence avoids that with a cooldown).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from haproxy_sync import haproxy

from .changes import Change

BACKEND = "cabify"


def takes_traffic(server: haproxy.ServerState) -> bool:
    """Running (or slow-starting), not in maintenance, not draining, with a weight."""
    return server.operational in (1, 2) and not server.in_maintenance and not server.draining and server.weight > 0


def served_weights(states: tuple[haproxy.ServerState, ...], address: str, port: int) -> set[int]:
    return {s.weight for s in states if s.port == port and s.address == address and takes_traffic(s)}


def matches(states: tuple[haproxy.ServerState, ...], change: Change, address: str = "127.0.0.1") -> bool:
    weights = served_weights(states, address, change.port)
    if change.expect_weight is None:
        return not weights
    return weights == {change.expect_weight}


def describe(states: tuple[haproxy.ServerState, ...], port: int) -> str:
    """What HAProxy runs for one port, in a few words: ``slot3 op=2 admin=0 weight=10``."""
    found = [f"{s.name} op={s.operational} admin={s.admin} weight={s.weight}" for s in states if s.port == port]
    return "; ".join(found) or "absent"


@dataclass
class Outcome:
    """When the change was written (monotonic) and when HAProxy first ran it (None: never)."""

    change: Change
    written_at: float
    converged_at: float | None = None
    superseded: bool = False
    write_error: str = ""
    last_seen: str = ""  # while pending: what HAProxy last showed for the port (evidence when it never converges)

    @property
    def latency(self) -> float | None:
        return None if self.converged_at is None else self.converged_at - self.written_at


@dataclass
class ConvergenceTracker:
    """A thread polling ``show servers state`` and resolving pending changes; bounded by ``deadline``."""

    stats_socket: Path
    interval: float = 0.005
    outcomes: list[Outcome] = field(default_factory=list)
    polls: int = 0
    poll_errors: int = 0

    def __post_init__(self) -> None:
        self._pending: dict[int, Outcome] = {}  # by port
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="convergence", daemon=True)
        self.deadline = time.monotonic() + 3600.0

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self._thread.start()

    def expect(self, change: Change) -> Outcome:
        """Register a change right before its Consul write; the write time is taken here."""
        outcome = Outcome(change, time.monotonic())
        with self._lock:
            previous = self._pending.pop(change.port, None)
            if previous is not None:
                previous.superseded = True
            self._pending[change.port] = outcome
            self.outcomes.append(outcome)
        return outcome

    def write_failed(self, outcome: Outcome, error: str) -> None:
        with self._lock:
            outcome.write_error = error
            if self._pending.get(outcome.change.port) is outcome:
                del self._pending[outcome.change.port]

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            started = time.monotonic()
            try:
                states = haproxy.servers_state(self.stats_socket, BACKEND)
            except haproxy.HAProxyError:
                self.poll_errors += 1  # the socket changes hands during a reload; try again
                states = None
            answered = time.monotonic()
            self.polls += 1
            if states is not None:
                with self._lock:
                    for port, outcome in list(self._pending.items()):
                        if outcome.written_at >= started:
                            continue
                        if matches(states, outcome.change):
                            outcome.converged_at = answered
                            del self._pending[port]
                        else:
                            outcome.last_seen = describe(states, port)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))


@dataclass
class Sample:
    t: float
    workers: int  # from the master's `show proc` (current + old workers); -1 when it did not answer
    processes: int  # HAProxy processes under the master (psutil), the master included
    rss: int  # bytes, master + every worker


@dataclass
class ProcessSampler:
    """A thread sampling HAProxy's workers and total RSS every ``interval``; bounded by ``deadline``."""

    master_socket: Path
    master_pid: int
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.deadline = time.monotonic() + 3600.0

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def sample(self) -> Sample:
        try:
            workers = len(haproxy.show_proc(self.master_socket).workers)
        except haproxy.HAProxyError:
            workers = -1  # the master re-executes itself during a reload; its socket blinks
        rss, processes = 0, 0
        try:
            master = psutil.Process(self.master_pid)
            for proc in [master, *master.children(recursive=True)]:
                try:
                    rss += proc.memory_info().rss
                    processes += 1
                except psutil.Error:
                    continue
        except psutil.Error:
            pass
        return Sample(time.monotonic(), workers, processes, rss)

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            self.samples.append(self.sample())
            self._stop.wait(self.interval)


def reload_count(master_socket: Path, timeout: float = 5.0) -> int | None:
    """The master's reload counter; retried because its socket blinks while it re-executes itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return haproxy.show_proc(master_socket).reloads
        except haproxy.HAProxyError:
            time.sleep(0.05)
    return None
