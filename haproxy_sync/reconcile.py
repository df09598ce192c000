"""The periodic read-back of what HAProxy runs: drift repaired, deleted files put back.

Someone's `disable server`, a `del map`, a command HAProxy lost, a routes map or admin socket someone
deleted: each is found here and put right with runtime commands or a write, or, when only a reload can
(servers HAProxy lacks, a socket to bind again), handed back to the daemon as a :class:`Finding`. One
blocking function, run in a worker thread; it logs what it found and counts drift.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Mapping

from haproxy_sync import haproxy, logs
from haproxy_sync.apply import Applier
from haproxy_sync.config import Settings
from haproxy_sync.metrics import Metrics
from haproxy_sync.plan import BackendSlots, Drift
from haproxy_sync.render import rebind_spelling
from haproxy_sync.routing import Routing

log = logging.getLogger(__name__)


class Finding(enum.Enum):
    """What the read-back leaves for the daemon to do."""

    NOTHING = "nothing"  # all in step, or put right here
    SOCKET_GONE = "socket_gone"  # the admin socket file is gone: a reload must bind it anew
    SERVERS_MISSING = "servers_missing"  # HAProxy lacks planned servers: a reload


_BACKEND_SLOT = re.compile(r"(?:^|\s)([A-Za-z0-9_.:-]+)/(slot\d+)\b")


def _where(details: Iterable[str]) -> dict[str, str]:
    """The ``backend`` and ``slot`` fields of drift lines (``cabify/slot2 runs ...``), comma-separated."""
    found = [m.groups() for line in details if (m := _BACKEND_SLOT.search(line))]
    backends = ",".join(dict.fromkeys(b for b, _ in found))
    slots = ",".join(f"{b}/{s}" for b, s in found[:20])
    return {k: v for k, v in (("backend", backends), ("slot", slots)) if v}


def reconcile(settings: Settings, applier: Applier, tables: Mapping[str, BackendSlots], routing: Routing,
              metrics: Metrics, socket_known_gone: bool) -> Finding:
    """Read back and repair; ``socket_known_gone``: already said, the reload that binds it is under way."""
    hap = settings.haproxy
    if not hap.stats_socket.exists():
        if not socket_known_gone:
            log.error("reconcile: HAProxy's admin socket %s is gone (deleted?); reloading with it spelled %s, "
                      "which HAProxy binds anew", hap.stats_socket, rebind_spelling(hap.stats_socket),
                      extra=logs.event("reconcile.socket_gone", file=str(hap.stats_socket)))
        return Finding.SOCKET_GONE
    if not hap.routes_map_path.exists():
        try:
            applier.restore_routes(settings, routing)
        except haproxy.HAProxyError as exc:
            log.warning("reconcile: the routes map %s is gone and cannot be written again: %s; trying again "
                        "in %gs", hap.routes_map_path, exc, settings.sync.reconcile_interval)
        else:
            log.warning("reconcile: the routes map %s was gone (deleted?); written again from the routes "
                        "HAProxy runs", hap.routes_map_path)
    old = applier.old_workers(settings)
    if old is not None:  # set at each reload too; this follows the old workers as they finish
        metrics.old_workers.set(old)
    try:
        drift = applier.repair(settings, tables, routing)
    except haproxy.HAProxyError as exc:
        log.warning("reconcile: cannot read HAProxy's servers: %s; trying again in %gs",
                    exc, settings.sync.reconcile_interval)
        return Finding.NOTHING
    if drift.found:
        _count(metrics, drift)
        log.warning("reconcile: drift found on %d servers, repaired with %d runtime commands: %s",
                    len(drift.found), len(drift.commands), "; ".join(drift.found[:5]),
                    extra=logs.event("reconcile.drift", commands=len(drift.commands), **_where(drift.found)))
    if drift.missing:
        log.warning("reconcile: HAProxy lacks servers %s; reloading", ", ".join(drift.missing[:5]),
                    extra=logs.event("reconcile.servers_missing", **_where(drift.missing)))
        return Finding.SERVERS_MISSING
    return Finding.NOTHING


def read_back_after_reload(settings: Settings, applier: Applier, tables: Mapping[str, BackendSlots],
                           routing: Routing, metrics: Metrics) -> None:
    """Right after a reload: put right what the new worker runs off plan (server state it brought back)."""
    try:
        drift = applier.repair(settings, tables, routing)
    except haproxy.HAProxyError as exc:
        log.warning("could not read back servers after the reload: %s; the reconcile tries again", exc)
        return
    if not drift.empty:
        _count(metrics, drift)
        log.warning("after the reload HAProxy ran %d servers off plan, repaired: %s",
                    len(drift.found), "; ".join(drift.found[:5]),
                    extra=logs.event("reload.drift", commands=len(drift.commands), **_where(drift.found)))


def _count(metrics: Metrics, drift: Drift) -> None:
    metrics.drift_found.inc(len(drift.found))
    metrics.drift_repaired.inc(len(drift.commands))
