"""Pure routing: which services get a backend, and which Host header and path prefix lead to each.

Two kinds of services are routed: the ones named in the config (``[[services]]``), and, with
``[discovery]`` on, every Consul service whose instances carry the discovery tag. A discovered
service describes its own routing in its instances' service meta:

* ``haproxy-sync-host``: the Host header routed to it (``feature-x.example.com``);
* ``haproxy-sync-path``: a path prefix of whole segments (``/api``), on that host or on any host;
* ``haproxy-sync-balance`` and ``haproxy-sync-health-path``: the backend's algorithm and check path.

Meta is a Consul string like any other: it is validated here, and a service whose meta cannot
safely become a route is left unrouted with a reason (logged and counted), never half-routed.

Routes live in an HAProxy map file (``key backend`` per line) that the frontend looks up with exact
matches, most specific last-wins (see the template). Exact lookups make the order of entries
irrelevant, which is what lets the daemon change routes at runtime with ``add map`` / ``set map`` /
``del map``: a new route to an existing backend costs no reload.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from haproxy_sync.catalog import SAFE_NAME, Service
from haproxy_sync.config import (
    BALANCE_ALGORITHMS,
    ServiceSettings,
    Settings,
    parse_health_path,
    parse_host,
    parse_route_path,
)

META_HOST = "haproxy-sync-host"
META_PATH = "haproxy-sync-path"
META_BALANCE = "haproxy-sync-balance"
META_HEALTH_PATH = "haproxy-sync-health-path"
DEFAULT_BALANCE = "roundrobin"
DEFAULT_HEALTH_PATH = "/health"


@dataclass(frozen=True, order=True)
class Route:
    """Requests for ``host`` (any host when empty) under ``path`` (any path when empty) go to ``backend``."""

    host: str
    path: str
    backend: str

    @property
    def key(self) -> str:
        """The map key the frontend builds from a request: ``host``, ``host/seg``, ``*/seg``."""
        return f"{self.host or '*'}{self.path}"

    def describe(self) -> str:
        return f"{self.host or '*'}{self.path or '/'}"


@dataclass(frozen=True)
class Unrouted:
    """A discovered service (or a route) left out, and why."""

    service: str
    reason: str


@dataclass(frozen=True)
class Routing:
    """Every routed backend (configured ones first: the first is the default backend) and its routes."""

    services: tuple[ServiceSettings, ...]
    routes: tuple[Route, ...] = ()
    unrouted: tuple[Unrouted, ...] = ()

    @property
    def map_entries(self) -> dict[str, str]:
        return {route.key: route.backend for route in self.routes}

    @property
    def backends(self) -> tuple[tuple[str, str], ...]:
        """(backend, service) pairs, as the slot planner takes them."""
        return tuple((s.backend, s.name) for s in self.services)


def meta_value(service: Service, key: str) -> str:
    """The value most instances give ``key`` (ties: the smallest), or "" when none gives one.

    Instances of one service can disagree for a while (a rolling deploy changes meta one instance at
    a time); the majority follows the deploy without flapping back and forth on every instance.
    """
    values = collections.Counter(value for inst in service.instances for k, value in inst.meta if k == key)
    if not values:
        return ""
    top = max(values.values())
    return min(value for value, count in values.items() if count == top)


def discovered_settings(service: Service, filter_expression: str = "") -> ServiceSettings:
    """The backend a discovered service asks for in its meta; raises ``ValueError`` saying what is wrong."""
    if not SAFE_NAME.match(service.name):
        raise ValueError(f"service name {service.name[:80]!r} is not a safe backend name")
    fields = {"host": META_HOST, "path": META_PATH, "balance": META_BALANCE, "health_path": META_HEALTH_PATH}
    raw = {field: meta_value(service, key) for field, key in fields.items()}
    try:
        host = parse_host(raw["host"])
    except ValueError as exc:
        raise ValueError(f"meta {META_HOST}: {exc}") from None
    try:
        path = parse_route_path(raw["path"])
    except ValueError as exc:
        raise ValueError(f"meta {META_PATH}: {exc}") from None
    if not host and not path:
        raise ValueError(f"no route: set meta {META_HOST} (and optionally {META_PATH})")
    balance = raw["balance"].lower() or DEFAULT_BALANCE
    if balance not in BALANCE_ALGORITHMS:
        raise ValueError(f"meta {META_BALANCE}: {raw['balance'][:40]!r} is not one of {', '.join(BALANCE_ALGORITHMS)}")
    try:
        health_path = parse_health_path(raw["health_path"] or DEFAULT_HEALTH_PATH)
    except ValueError as exc:
        raise ValueError(f"meta {META_HEALTH_PATH}: {exc}") from None
    return ServiceSettings(
        name=service.name, backend=service.name, balance=balance, health_path=health_path, host=host, path=path,
        filter=filter_expression, discovered=True,
    )


def routing_for(
    settings: Settings,
    services: Mapping[str, Service],
    discovered: Iterable[str] = (),
    previous: Routing | None = None,
) -> Routing:
    """Backends and routes for the configured services plus the discovered ones Consul has answered for.

    A discovered service needs its first health answer (in ``services``) before it is routed: its
    meta says where it goes. Once routed, it keeps the route it had (``previous``) while it has no
    instances at all: whether it goes is for the catalog to say (and its guard), whether its servers
    go for the empty-backend guard, not for an empty answer that happened to come first. Conflicts
    are settled in order: configured services first (in config order), then discovered ones by
    name; a later claim of a backend name or route is left out.
    """
    chosen: list[ServiceSettings] = list(settings.services)
    unrouted: list[Unrouted] = []
    taken_backends = {s.backend for s in chosen}
    configured_names = {s.name for s in chosen}
    routed_before = {s.name: s for s in previous.services if s.discovered} if previous is not None else {}
    for name in sorted(set(discovered) - configured_names):
        service = services.get(name)
        if service is None:
            continue
        try:
            if not service.instances and name in routed_before:
                candidate = routed_before[name]
            else:
                candidate = discovered_settings(service, settings.discovery.filter)
        except ValueError as exc:
            unrouted.append(Unrouted(name, str(exc)))
            continue
        if candidate.backend in taken_backends:
            reason = f"backend name {candidate.backend!r} is already used by a configured service"
            unrouted.append(Unrouted(name, reason))
            continue
        taken_backends.add(candidate.backend)
        chosen.append(candidate)
    routes: list[Route] = []
    owners: dict[str, str] = {}
    kept: list[ServiceSettings] = []
    for svc in chosen:
        route = Route(svc.host, svc.path, svc.backend) if svc.host or svc.path else None
        if route is not None and route.key in owners:
            reason = f"route {route.describe()} is already taken by backend {owners[route.key]}"
            if svc.discovered:
                unrouted.append(Unrouted(svc.name, reason))
                continue
            unrouted.append(Unrouted(svc.name, f"{reason}; this backend keeps no route of its own"))
            svc, route = replace(svc, host="", path=""), None
        if route is not None:
            owners[route.key] = svc.backend
            routes.append(route)
        kept.append(svc)
    return Routing(tuple(kept), tuple(sorted(routes)), tuple(unrouted))


def map_text(entries: Mapping[str, str]) -> str:
    """The map file: sorted, so the same routes always give the same bytes."""
    lines = ["# Generated by haproxy-sync: host[/path] -> backend. Changed at runtime too; edits are overwritten."]
    lines += [f"{key} {backend}" for key, backend in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def parse_map_file(text: str) -> dict[str, str]:
    """The entries of a map file as :func:`map_text` writes it (comments and blank lines skipped)."""
    entries = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not parts[0].startswith("#"):
            entries[parts[0]] = parts[1]
    return entries


def route_drift(running: Mapping[str, str], planned: Mapping[str, str], wanted: str = "planned") -> list[str]:
    """One line per route HAProxy runs otherwise than ``planned`` (for logs and ``status``)."""
    return [f"route {key} runs {running.get(key, 'nothing')}, {wanted} {planned.get(key, 'nothing')}"
            for key in sorted(running.keys() | planned.keys()) if running.get(key) != planned.get(key)]


def map_commands(map_path: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[str]:
    """Runtime API commands taking HAProxy's map from ``old`` to ``new``: adds and sets, then deletes."""
    commands = [f"add map {map_path} {key} {new[key]}" for key in sorted(new.keys() - old.keys())]
    changed = sorted(key for key in new.keys() & old.keys() if old[key] != new[key])
    commands += [f"set map {map_path} {key} {new[key]}" for key in changed]
    commands += [f"del map {map_path} {key}" for key in sorted(old.keys() - new.keys())]
    return commands
