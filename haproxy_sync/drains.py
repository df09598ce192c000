"""Drains that end when HAProxy says a server carries nothing, not only when ``drain_timeout`` runs out.

A leaving (or critical) instance's slot drains at weight 0 so that in-flight requests and long
streams finish. HAProxy 3.0 defines when a server is done (``wait srv-removable``: no connection
in use, nothing queued, no stream on it), and the counters that rule reads are in ``show stat`` and
``show servers conn``. Where HAProxy answers ``wait -h`` with that condition, the daemon reads them
for its draining slots every :data:`POLL_INTERVAL` and the plan ends a drain as soon as the server
is idle; ``drain_timeout`` stays the upper bound. HAProxy 2.6 has no such rule: there the timer
alone ends a drain, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from haproxy_sync import commands, haproxy, rules
from haproxy_sync.plan import BackendSlots, Slot, draining, next_deadline

log = logging.getLogger(__name__)

#: How often draining slots are read while any drains (two short CLI answers per draining backend).
POLL_INTERVAL = 0.5


class DrainWatch:
    """Asks HAProxy whether draining servers still carry anything, and owns the drains' deadlines;
    one per daemon, ``now`` passed in.

    Whether the running HAProxy defines idleness is asked once and kept until the next reload (a
    reload may start another binary); a socket that does not answer is asked again next time.
    """

    def __init__(self, stats_socket: Path) -> None:
        self.stats_socket = stats_socket
        self._supported: bool | None = None
        self._failing: set[str] = set()  # backends whose last reading failed (warned once per spell)
        self.ends_at: float | None = None  # when the earliest drain runs out of sync.drain_timeout
        self.poll_at: float | None = None  # next reading of what the draining servers still carry
        self._idle: dict[str, frozenset[str]] = {}  # reported idle: the next plan frees them

    # --- the deadlines the loop wakes for ---

    def planned(self, tables: Mapping[str, BackendSlots], drain_timeout: float, now: float, can_poll: bool) -> None:
        """After each plan: when the earliest drain ends, and (``can_poll``) when to read the servers."""
        self.ends_at = next_deadline(tables, drain_timeout)
        self.poll_at = now + POLL_INTERVAL if can_poll and draining(tables) else None

    def stop(self) -> None:
        """No plan stands (it failed): the retry plans the drains again."""
        self.ends_at = self.poll_at = None

    def deadlines(self) -> list[float]:
        return [t for t in (self.ends_at, self.poll_at) if t is not None]

    def due(self, now: float) -> bool:
        """A drain is over: its timer ran out, or HAProxy reported its server idle."""
        return bool(self._idle) or (self.ends_at is not None and self.ends_at <= now)

    def poll_due(self, now: float) -> bool:
        return self.poll_at is not None and now >= self.poll_at

    def take_idle(self) -> dict[str, frozenset[str]]:
        """The slots reported idle since the last plan, for the next plan (which frees them)."""
        idle, self._idle = self._idle, {}
        return idle

    def poll(self, tables: Mapping[str, BackendSlots], now: float) -> None:
        """Read what the draining slots carry (blocking: run in a thread); none idle yet, read again soon."""
        self.poll_at = None
        pending = draining(tables)
        if not pending:
            return
        self._idle = self.idle(pending, now)
        if not self._idle:
            self.poll_at = now + POLL_INTERVAL

    # --- asking HAProxy ---

    def forget_version(self) -> None:
        """After a reload: the next drain asks the (possibly new) HAProxy again."""
        self._supported = None

    def supported(self) -> bool:
        if self._supported is None:
            try:
                self._supported = knows_when_servers_are_idle(self.stats_socket)
            except haproxy.SocketError as exc:
                log.debug("cannot ask HAProxy whether it tells idle servers (%s); drains end by timer", exc)
                return False
            log.info("drains end when HAProxy reports a server idle: %s",
                     "yes (its CLI has wait srv-removable)" if self._supported
                     else "no (this HAProxy has no idle rule), drains end by sync.drain_timeout")
        return self._supported

    def idle(self, draining: Mapping[str, tuple[Slot, ...]], now: float) -> dict[str, frozenset[str]]:
        """Per backend, the draining slots HAProxy reports with nothing on them and weight 0."""
        found: dict[str, frozenset[str]] = {}
        for backend, slots in draining.items():
            try:
                loads = server_loads(self.stats_socket, backend)
            except haproxy.SocketError as exc:
                if backend not in self._failing:
                    log.warning("drain: cannot read the connections of backend %s (%s); its drains end by "
                                "sync.drain_timeout until it answers", backend, exc)
                    self._failing.add(backend)
                continue
            self._failing.discard(backend)
            done = frozenset(slot.name for slot in slots if (load := loads.get(slot.name)) is not None and load.idle)
            for slot in slots:
                if slot.name in done and slot.draining_since is not None:
                    log.info("drain over: backend=%s server=%s has no connection, stream or queued request left "
                             "after %.1fs", backend, slot.name, now - slot.draining_since)
            if done:
                found[backend] = done
        return found


# --- reading what a server carries (allowlisted column by column) ---


@dataclass(frozen=True)
class ServerLoad:
    """What one server still carries. The counters are the ones HAProxy 3.0's own removability rule
    (``wait srv-removable``) reads: connections in use, queued requests and streams on the server."""

    weight: int  # effective weight: 0 means the balancer sends it nothing new
    queued: int
    sessions: int
    connections: int  # ``used_cur``: connections in use, idle pooled ones not counted

    @property
    def idle(self) -> bool:
        """Nothing new can reach it and nothing is on it: its drain is over."""
        return self.weight == 0 and self.queued == 0 and self.sessions == 0 and self.connections == 0


def _header(line: str, prefix: str, separator: str | None, wanted: tuple[str, ...], what: str) -> list[int]:
    """The positions of ``wanted`` in a ``# name name ...`` header line, or :class:`haproxy.SocketError`."""
    if not line.startswith(prefix) or not haproxy.PRINTABLE_LINE.fullmatch(line):
        raise haproxy.SocketError(f"unexpected `{what}` answer: {line[:120]!r}")
    names = [name.strip() for name in line[len(prefix):].split(separator)]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise haproxy.SocketError(f"unexpected `{what}` answer: no column {', '.join(missing)} in {line[:120]!r}")
    return [names.index(name) for name in wanted]


def _counts(cols: list[str], positions: list[int], line: str, what: str) -> list[int]:
    """The numeric columns of one answer line; digits only, checked before any is converted."""
    if len(cols) <= max(positions) or not all(haproxy.DIGITS.fullmatch(cols[i]) for i in positions):
        raise haproxy.SocketError(f"unexpected `{what}` answer: cannot read line {line[:120]!r}")
    return [int(cols[i]) for i in positions]


def parse_stat_servers(text: str, backend: str) -> dict[str, tuple[int, int, int]]:
    """``show stat <backend> 4 -1`` (CSV): server name -> (weight, queued, sessions) for ``backend``."""
    lines = haproxy.data_lines(text)
    if not lines:
        raise haproxy.SocketError("unexpected `show stat` answer: empty")
    px, sv, weight, qcur, scur = _header(lines[0], "# ", ",", ("pxname", "svname", "weight", "qcur", "scur"),
                                         "show stat")
    found: dict[str, tuple[int, int, int]] = {}
    for line in lines[1:]:
        cols = line.split(",") if haproxy.PRINTABLE_LINE.fullmatch(line) else []
        if len(cols) <= max(px, sv):
            raise haproxy.SocketError(f"unexpected `show stat` answer: cannot read line {line[:120]!r}")
        if cols[px] != backend or not rules.is_name(cols[sv]):
            continue
        w, q, s = _counts(cols, [weight, qcur, scur], line, "show stat")
        found[cols[sv]] = (w, q, s)
    return found


def parse_servers_conn(text: str, backend: str) -> dict[str, int]:
    """``show servers conn <backend>``: server name -> connections in use (``used_cur``)."""
    lines = haproxy.data_lines(text)
    if not lines:
        raise haproxy.SocketError("unexpected `show servers conn` answer: empty")
    target, used = _header(lines[0], "#", None, ("bkname/svname", "used_cur"), "show servers conn")
    found: dict[str, int] = {}
    for line in lines[1:]:
        cols = line.split() if haproxy.PRINTABLE_LINE.fullmatch(line) else []
        if len(cols) <= target:
            raise haproxy.SocketError(f"unexpected `show servers conn` answer: cannot read line {line[:120]!r}")
        be, _, server = cols[target].partition("/")
        if be != backend or not rules.is_name(server):
            continue
        found[server] = _counts(cols, [used], line, "show servers conn")[0]
    return found


def server_loads(stats_socket: Path, backend: str) -> dict[str, ServerLoad]:
    """What each server of ``backend`` still carries; a server missing from either answer is left out."""
    stats = parse_stat_servers(haproxy.socket_command(stats_socket, commands.show_stat_servers(backend)), backend)
    conns = parse_servers_conn(haproxy.socket_command(stats_socket, commands.show_servers_conn(backend)), backend)
    return {name: ServerLoad(weight, queued, sessions, conns[name])
            for name, (weight, queued, sessions) in stats.items() if name in conns}


def knows_when_servers_are_idle(stats_socket: Path) -> bool:
    """Whether this HAProxy defines when a server has no connections left (``wait srv-removable``,
    3.0), told by its own answer to ``wait -h``: 2.6 answers "Unknown command"."""
    return "srv-removable" in haproxy.socket_command(stats_socket, commands.WAIT_USAGE)
