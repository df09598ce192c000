"""``haproxy-sync status``: Consul against HAProxy, per backend, and what the daemon last did.

Gathering (Consul, the runtime socket, the daemon's /status) is kept apart from the pure formatting
so that the table and the JSON are tested without sockets.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from haproxy_sync import haproxy, rules
from haproxy_sync.catalog import Instance, Snapshot, Status
from haproxy_sync.config import Settings
from haproxy_sync.consul import ConsulError
from haproxy_sync.logs import one_line
from haproxy_sync.pipeline import read_observed
from haproxy_sync.plan import BackendSlots, find_drift, slots_from_config
from haproxy_sync.routing import route_drift, routing_for


@dataclass
class BackendStatus:
    backend: str
    service: str
    consul: dict[str, int]  # passing / warning / critical
    haproxy: dict[str, int]  # UP / DOWN / DRAIN / MAINT, over slots holding an instance
    drift: list[str] = field(default_factory=list)


@dataclass
class Report:
    backends: list[BackendStatus]
    consul_error: str = ""
    haproxy_error: str = ""
    daemon: dict[str, Any] | None = None
    daemon_error: str = ""
    routes: int = 0  # host/path routes Consul asks for
    routes_drift: list[str] = field(default_factory=list)  # routes HAProxy runs otherwise
    unrouted: list[str] = field(default_factory=list)  # tagged services left out, with the reason

    @property
    def healthy(self) -> bool:
        return not self.haproxy_error and not self.routes_drift and not any(b.drift for b in self.backends)


def _haproxy_counts(states: list[haproxy.ServerState]) -> dict[str, int]:
    counts = {"UP": 0, "DOWN": 0, "DRAIN": 0, "MAINT": 0}
    for state in states:
        if state.in_maintenance:
            counts["MAINT"] += 1
        elif state.weight == 0 or state.draining:
            counts["DRAIN"] += 1
        elif state.up:
            counts["UP"] += 1
        else:
            counts["DOWN"] += 1
    return counts


def build_report(
    settings: Settings,
    snapshot: Snapshot | None,
    live: str | None,
    states: tuple[haproxy.ServerState, ...] | None,
    backends: tuple[tuple[str, str], ...] | None = None,
) -> list[BackendStatus]:
    """Pure: per backend, Consul's counts, HAProxy's counts over held slots, and the drift between.

    ``backends`` are the routed (backend, service) pairs; by default the configured services.
    """
    pairs = list(backends) if backends is not None else [(s.backend, s.name) for s in settings.services]
    desired: dict[str, BackendSlots] = slots_from_config(live or "", snapshot or Snapshot(), pairs)
    running = {(s.backend, s.name): (s.address, s.port, s.weight, s.in_maintenance) for s in states or ()}
    result = []
    for backend, service in pairs:
        consul_counts = {"passing": 0, "warning": 0, "critical": 0}
        if snapshot is not None:
            for inst in snapshot.get(service).instances:
                consul_counts[inst.status.name.lower()] += 1
        table = desired.get(backend)
        held = {slot.name for slot in table.slots if slot.owner} if table else set()
        mine = [s for s in states or () if s.backend == backend and s.name in held]
        status = BackendStatus(backend, service, consul_counts, _haproxy_counts(mine))
        if states is not None and table is not None:
            drift = find_drift({backend: table}, running)
            status.drift = [*drift.found, *(f"{name} missing in HAProxy" for name in drift.missing)]
        if snapshot is not None and table is not None:
            status.drift += [f"{rules.label(i.id, i.node)} is in Consul but not in haproxy.cfg"
                             for i in _not_in_config(snapshot.get(service).instances, table)]
        result.append(status)
    return result


def _not_in_config(instances: tuple[Instance, ...], table: BackendSlots) -> list[Instance]:
    """The routable instances the live config has no server line for.

    :func:`slots_from_config` matches slots to instances by address and port, so of two instances on
    one endpoint only one is adopted, and the other slot at that endpoint is left to nobody in
    Consul. Per endpoint, an instance not adopted is counted as in the config while the config has
    more server lines at that endpoint than adopted routable instances there: duplicates are not
    reported as missing forever, and an instance beyond the endpoint's lines still is.
    """
    placed = {slot.owner for slot in table.slots if slot.owner}
    lines = Counter((slot.address, slot.port) for slot in table.slots if slot.owner)
    routable = [i for i in instances if i.status is not Status.CRITICAL]
    for inst in routable:
        if inst.key in placed:
            lines[(inst.address, inst.port)] -= 1
    missing = []
    for inst in routable:
        if inst.key in placed:
            continue
        if lines[(inst.address, inst.port)] > 0:
            lines[(inst.address, inst.port)] -= 1
        else:
            missing.append(inst)
    return missing


@dataclass(frozen=True)
class DaemonView:
    """What ``render --plan`` needs of the running daemon's ``/status``: what a file cannot tell."""

    confirmed: bool  # HAProxy is known to run the daemon's last apply
    reload_owed: bool  # settings or the template were re-read: the next apply reloads


def fetch_daemon_status(settings: Settings, timeout: float = 2.0) -> tuple[dict[str, Any] | None, str]:
    """The daemon's ``/status`` JSON, or None and why not (metrics off, not reachable, not JSON)."""
    if not settings.metrics.listen:
        return None, "metrics.listen is off, so no daemon can be asked"
    url = f"http://{settings.metrics.listen}/status"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read(1 << 20))
    except (OSError, ValueError) as exc:
        return None, f"daemon not reachable at {url}: {exc}"
    if not isinstance(body, dict):
        return None, f"daemon at {url} answered something other than a JSON object"
    return body, ""


def daemon_view(settings: Settings) -> tuple[DaemonView | None, str]:
    """The running daemon's confirmation and owed reload; anything but true booleans counts as false."""
    body, error = fetch_daemon_status(settings)
    if body is None:
        return None, error
    return DaemonView(body.get("confirmed") is True, body.get("reload_owed") is True), ""


def gather(settings: Settings) -> Report:
    """Read Consul once, HAProxy's servers, the live config and the daemon's /status; never raises."""
    report = Report([])
    snapshot = None
    routing = routing_for(settings, {})
    try:
        observed = asyncio.run(read_observed(settings, deadline=5))
        routing, snapshot = observed.routing, observed.snapshot
        report.unrouted = [f"{item.service}: {item.reason}" for item in routing.unrouted]
    except ConsulError as exc:
        report.consul_error = str(exc)
    states = None
    try:
        states = haproxy.servers_state(settings.haproxy.stats_socket)
        running_routes = haproxy.show_map(settings.haproxy.stats_socket, settings.haproxy.routes_map_path)
    except haproxy.HAProxyError as exc:
        report.haproxy_error = str(exc)
    else:
        planned = routing.map_entries
        report.routes = len(planned)
        if snapshot is not None:
            report.routes_drift = route_drift(running_routes, planned, wanted="Consul asks for")
    live = haproxy.read_text(settings.haproxy.config_path)
    report.backends = build_report(settings, snapshot, live, states, routing.backends)
    if settings.metrics.listen:
        report.daemon, report.daemon_error = fetch_daemon_status(settings)
    return report


def to_json(report: Report) -> str:
    return json.dumps({**asdict(report), "healthy": report.healthy}, indent=2, sort_keys=True)


def to_table(report: Report) -> str:
    """The text table; every line is passed through :func:`one_line`, so no text from Consul, a socket
    answer or the daemon's /status (IDs, addresses, error messages) can break a line or forge a row."""
    rows = [("BACKEND", "CONSUL pass/warn/crit", "HAPROXY up/down/drain/maint", "DRIFT")]
    for b in report.backends:
        c, h = b.consul, b.haproxy
        rows.append((
            one_line(b.backend),
            f"{c['passing']}/{c['warning']}/{c['critical']}",
            f"{h['UP']}/{h['DOWN']}/{h['DRAIN']}/{h['MAINT']}",
            f"{len(b.drift)}" if b.drift else "none",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    for b in report.backends:
        lines += [f"  drift {b.backend}: {item}" for item in b.drift]
    off = f", {len(report.routes_drift)} off" if report.routes_drift else ", in step"
    lines.append(f"routes: {report.routes}{off}")
    lines += [f"  drift {item}" for item in report.routes_drift]
    lines += [f"  not routed: {item}" for item in report.unrouted]
    if report.consul_error:
        lines.append(f"consul: {report.consul_error}")
    if report.haproxy_error:
        lines.append(f"haproxy: {report.haproxy_error}")
    if report.daemon is not None:
        d = report.daemon
        age = d.get("last_apply_age_seconds")
        lines.append(f"daemon: {'ready' if d.get('ready') else 'NOT READY: ' + '; '.join(d.get('reasons', []))}")
        if d.get("last_apply"):
            lines.append(f"last apply: {d['last_apply']} (path {d.get('last_apply_path')}, {age:.0f}s ago)")
        for w in d.get("watches", []):
            fresh = "fresh" if w.get("age") == 0 else f"{w.get('age') or 0:.0f}s old"
            lines.append(f"consul watch {w['service']}: {'ok' if w['healthy'] else 'failing ' + w['fault']}, "
                         f"index {w['last_index']}, data {fresh}")
    elif report.daemon_error:
        lines.append(report.daemon_error)
    return "\n".join(one_line(line) for line in lines)
