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
from pathlib import Path

from haproxy_sync import haproxy
from haproxy_sync.plan import Slot

log = logging.getLogger(__name__)

#: How often draining slots are read while any drains (two short CLI answers per draining backend).
POLL_INTERVAL = 0.5


class DrainWatch:
    """Asks HAProxy whether draining servers still carry anything; one per daemon.

    Whether the running HAProxy defines idleness is asked once and kept until the next reload (a
    reload may start another binary); a socket that does not answer is asked again next time.
    """

    def __init__(self, stats_socket: Path) -> None:
        self.stats_socket = stats_socket
        self._supported: bool | None = None
        self._failing: set[str] = set()  # backends whose last reading failed (warned once per spell)

    def forget_version(self) -> None:
        """After a reload: the next drain asks the (possibly new) HAProxy again."""
        self._supported = None

    def supported(self) -> bool:
        if self._supported is None:
            try:
                self._supported = haproxy.knows_when_servers_are_idle(self.stats_socket)
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
                loads = haproxy.server_loads(self.stats_socket, backend)
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
