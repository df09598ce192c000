"""What HAProxy runs, observed from outside: convergence of each change, workers alive, memory; and
the CPU each process of the run spends (to explain where throughput goes).

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

from haproxy_sync import haproxy, master

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
    #: Server lines of the backend at the first answer and at most: growth beyond the first plan's slots.
    servers_first: int | None = None
    servers_max: int = 0

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
                if self.servers_first is None:
                    self.servers_first = len(states)
                self.servers_max = max(self.servers_max, len(states))
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
    reloads: int = -1  # the master's reload counter; -1 when it did not answer
    cpu: dict[str, float] = field(default_factory=dict)  # role -> cumulative CPU seconds (see ProcessSampler)


#: Pseudo-roles read from the whole machine (``/proc/stat``) rather than from a process.
MACHINE, STEAL = "machine", "steal"


def tree_cpu_seconds(root: psutil.Process, children: list[psutil.Process] | None = None) -> float:
    """User + system CPU seconds of a process and its descendants, the ones already reaped included.

    A live process counts its own time plus ``children_user``/``children_system``, the time of the
    descendants it has waited for (the kernel adds a child's time, and the time of the children it
    reaped, to the parent when the parent reaps it). So an HAProxy master counts the old workers it
    reaped, a syncer the ``haproxy -c`` or ``sh -c 'echo reload | socat ...'`` it ran, and nothing is
    counted twice: a process's time is either still its own or already its parent's. What is lost:
    a child nobody waits for (reparented to init) and, until it exits, nothing else; a short-lived
    child's time appears when it is reaped, at most one sample late.
    """
    def seconds(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return times.user + times.system + times.children_user + times.children_system

    total = seconds(root)  # raises psutil.Error when the root is gone: no sample rather than a drop to 0
    for child in root.children(recursive=True) if children is None else children:
        try:
            total += seconds(child)
        except psutil.Error:
            continue  # gone between the listing and the read: its time is now its parent's
    return total


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, summed over all CPUs.

    Busy excludes idle, iowait and steal (guest time is already inside user on Linux); steal is what
    the hypervisor gave to other guests, the usual suspect when a shared VM drifts.
    """
    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - steal - getattr(t, "guest", 0.0) \
        - getattr(t, "guest_nice", 0.0)
    return busy, steal


@dataclass
class ProcessSampler:
    """A thread sampling HAProxy's workers, total RSS and reload counter, and the cumulative CPU
    seconds of every role of the run, every ``interval``; bounded by ``deadline``.

    Roles are added with :meth:`watch` (a process tree, see :func:`tree_cpu_seconds`) and
    :meth:`watch_self` (the orchestrator: its own threads only, since its children are the other
    roles). Sampling CPU here, next to the workers and RSS, keeps one sampling thread in the
    orchestrator; its own cost shows in the orchestrator's role.
    """

    master_socket: Path
    master_pid: int
    interval: float = 0.2
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self.deadline = time.monotonic() + 3600.0
        self._lock = threading.Lock()
        self._roles: dict[str, psutil.Process] = {}
        self._self: tuple[str, psutil.Process] | None = None

    def watch(self, role: str, pid: int) -> None:
        """Sample the CPU of ``pid`` and its descendants as ``role`` from now on (the HAProxy under
        test is the role ``haproxy``, sampled with the same process listing as its RSS)."""
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return
        with self._lock:
            self._roles[role] = proc

    def watch_self(self, role: str = "orchestrator") -> None:
        self._self = (role, psutil.Process())

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def sample(self) -> Sample:
        try:
            info = master.show_proc(self.master_socket)
            workers, reloads = len(info.workers), info.reloads
        except haproxy.HAProxyError:
            workers, reloads = -1, -1  # the master re-executes itself during a reload; its socket blinks
        rss, processes = 0, 0
        cpu: dict[str, float] = {}
        try:
            master_process = psutil.Process(self.master_pid)
            children = master_process.children(recursive=True)
            for proc in [master_process, *children]:
                try:
                    rss += proc.memory_info().rss
                    processes += 1
                except psutil.Error:
                    continue
            cpu["haproxy"] = tree_cpu_seconds(master_process, children)
        except psutil.Error:
            pass
        cpu.update(self._role_cpu())
        return Sample(time.monotonic(), workers, processes, rss, reloads, cpu)

    def _role_cpu(self) -> dict[str, float]:
        cpu: dict[str, float] = {}
        with self._lock:
            roles = list(self._roles.items())
        for role, proc in roles:
            try:
                cpu[role] = tree_cpu_seconds(proc)
            except psutil.Error:
                continue  # exited: the role has no samples from here on
        if self._self is not None:
            role, me = self._self
            times = me.cpu_times()
            cpu[role] = times.user + times.system
        cpu[MACHINE], cpu[STEAL] = machine_cpu_seconds()
        return cpu

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            self.samples.append(self.sample())
            self._stop.wait(self.interval)


def reload_count(master_socket: Path, timeout: float = 5.0) -> int | None:
    """The master's reload counter; retried because its socket blinks while it re-executes itself."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return master.show_proc(master_socket).reloads
        except haproxy.HAProxyError:
            time.sleep(0.05)
    return None
