"""Pure routing: which services get a backend, and which Host header and path prefix lead to each.

Two kinds of services are routed: the ones named in the config (``[[services]]``), and, with
``[discovery]`` on, every Consul service whose instances carry the discovery tag. A discovered
service describes its own routing in its instances' service meta:

* ``haproxy-sync-host``: the Host header routed to it (``feature-x.example.com``);
* ``haproxy-sync-path``: a path prefix of whole segments (``/api``), on that host or on any host;
* ``haproxy-sync-balance`` and ``haproxy-sync-health-path``: the backend's algorithm and check path;
* ``haproxy-sync-canary-share`` (and ``haproxy-sync-canary-tag``, default ``canary``): the share of
  requests its canary instances get (:mod:`canary`);
* ``haproxy-sync-https-redirect``: ``true`` or ``false``, whether plain HTTP requests are redirected
  to HTTPS (default: ``tls.https_redirect``).

Meta is a Consul string like any other: it is validated here, and a service whose meta cannot
safely become a route is left unrouted with a reason (logged and counted), never half-routed.

Routes live in an HAProxy map file (``key backend`` per line) that the frontend looks up with exact
matches, most specific last-wins (see the template). Exact lookups make the order of entries
irrelevant, which is what lets the daemon change routes at runtime with ``add map`` / ``set map`` /
``del map``: a new route to an existing backend costs no reload.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from haproxy_sync import commands, rules
from haproxy_sync.canary import CanaryPolicy
from haproxy_sync.catalog import Service
from haproxy_sync.commands import Command
from haproxy_sync.config import ServiceSettings, Settings
from haproxy_sync.values import parse_canary_share, parse_tag

META_HOST = "haproxy-sync-host"
META_PATH = "haproxy-sync-path"
META_BALANCE = "haproxy-sync-balance"
META_HEALTH_PATH = "haproxy-sync-health-path"
META_CANARY_SHARE = "haproxy-sync-canary-share"
META_CANARY_TAG = "haproxy-sync-canary-tag"
META_HTTPS_REDIRECT = "haproxy-sync-https-redirect"
DEFAULT_CANARY_TAG = "canary"
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
class CanaryBackend:
    """The backend of ``parent``'s canaries alone (instances of ``service`` tagged ``tag``): where the
    canary header sends a request for ``parent`` (``haproxy.canary_header``)."""

    parent: str
    service: str
    tag: str

    @property
    def name(self) -> str:
        return f"{self.parent}{rules.CANARY_BACKEND_SUFFIX}"


@dataclass(frozen=True)
class Routing:
    """Every routed backend (configured ones first: the first is the default backend) and its routes."""

    services: tuple[ServiceSettings, ...]
    routes: tuple[Route, ...] = ()
    unrouted: tuple[Unrouted, ...] = ()
    canary_backends: tuple[CanaryBackend, ...] = ()  # with the canary header on, one per canary policy

    @property
    def map_entries(self) -> dict[str, str]:
        return {route.key: route.backend for route in self.routes}

    @property
    def backends(self) -> tuple[tuple[str, str], ...]:
        """(backend, service) pairs, as the slot planner takes them: the services', then the canaries'."""
        return (tuple((s.backend, s.name) for s in self.services)
                + tuple((c.name, c.service) for c in self.canary_backends))

    @property
    def canaries_only(self) -> dict[str, str]:
        """Per canary backend, the tag its instances must carry."""
        return {c.name: c.tag for c in self.canary_backends}

    @property
    def canaries(self) -> dict[str, CanaryPolicy]:
        """Per backend, the canary share in force (backends without a canary tag have none)."""
        return {s.backend: CanaryPolicy(s.canary_tag, s.canary_share) for s in self.services if s.canary_tag}


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
    name = rules.name(service.name)
    checks = {META_HOST: rules.route_host, META_PATH: rules.route_path, META_BALANCE: rules.balance,
              META_HEALTH_PATH: rules.health_path}
    defaults = {META_BALANCE: DEFAULT_BALANCE, META_HEALTH_PATH: DEFAULT_HEALTH_PATH}
    values = {}
    for key, check in checks.items():
        try:
            values[key] = check(meta_value(service, key) or defaults.get(key, ""))
        except rules.Refused as exc:
            raise ValueError(f"meta {key}: {exc}") from None
    if not values[META_HOST] and not values[META_PATH]:
        raise ValueError(f"no route: set meta {META_HOST} (and optionally {META_PATH})")
    canary_tag, canary_share = _discovered_canary(service)
    redirect = meta_value(service, META_HTTPS_REDIRECT)
    if redirect not in ("", "true", "false"):
        raise ValueError(f"meta {META_HTTPS_REDIRECT}: {redirect[:40]!r} is not true or false")
    return ServiceSettings(
        name=name, backend=name, balance=values[META_BALANCE], health_path=values[META_HEALTH_PATH],
        host=values[META_HOST], path=values[META_PATH], filter=filter_expression, discovered=True,
        canary_tag=canary_tag, canary_share=canary_share, https_redirect={"": None, "true": True}.get(redirect, False),
    )


def _discovered_canary(service: Service) -> tuple[str, float]:
    """The canary tag and share a discovered service's meta asks for; ("", 0) when it sets no share."""
    share_text = meta_value(service, META_CANARY_SHARE)
    if not share_text:
        return "", 0.0
    try:
        share = parse_canary_share(share_text)
        tag = parse_tag(meta_value(service, META_CANARY_TAG) or DEFAULT_CANARY_TAG)
    except ValueError as exc:
        raise ValueError(f"meta {META_CANARY_SHARE}/{META_CANARY_TAG}: {exc}") from None
    return tag, share


def routing_for(
    settings: Settings,
    services: Mapping[str, Service],
    discovered: Iterable[str] = (),
    previous: Routing | None = None,
    holders: Mapping[str, str] | None = None,
    reserved: Mapping[str, str] | None = None,
) -> Routing:
    """Backends and routes for the configured services plus the discovered ones Consul has answered for.

    A discovered service needs its first health answer (in ``services``) before it is routed: its
    meta says where it goes. Once routed, it keeps the route it had (``previous``) while it has no
    instances at all: whether it goes is for the catalog to say (and its guard), whether its servers
    go for the empty-backend guard, not for an empty answer that happened to come first.

    A route belongs to whoever holds it: configured services first (in config order), then the
    discovered service that held the route before (``previous``, or at start ``holders``, the routes
    HAProxy runs); ``reserved`` names routes whose holder left, kept for it and for nobody else. A
    discovered service that newly claims a held route (or a part of it) is left out; so is every newcomer
    of a contested free route but the one registered first in Consul (lowest CreateIndex). Names never
    decide: a registrant cannot win a route by choosing a name that sorts first.
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
        if name.endswith(rules.CANARY_BACKEND_SUFFIX):
            unrouted.append(Unrouted(name, f"a name ending in {rules.CANARY_BACKEND_SUFFIX!r} is kept for canary "
                                           "backends"))
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
    for svc in (s for s in chosen if not s.discovered):  # the operator's: settled in config order
        route = Route(svc.host, svc.path, svc.backend) if svc.host or svc.path else None
        if route is not None and route.key in owners:
            reason = f"route {route.describe()} is already taken by backend {owners[route.key]}"
            unrouted.append(Unrouted(svc.name, f"{reason}; this backend keeps no route of its own"))
            svc, route = replace(svc, host="", path=""), None
        if route is not None:
            owners[route.key] = svc.backend
            routes.append(route)
        kept.append(svc)
    held = previous.map_entries if previous is not None else dict(holders or {})
    granted = [_Grant(_territory(r), r.backend, "configured") for r in routes]
    routed = []
    claims = [s for s in chosen if s.discovered]
    for svc, reason in _settle(claims, services, held, reserved or {}, granted, settings.discovery.hosts):
        if reason is not None:
            unrouted.append(Unrouted(svc.name, reason))
            continue
        routes.append(Route(svc.host, svc.path, svc.backend))
        routed.append(svc)
    # Discovered backends by name: the config's order must not move when claims are settled differently.
    kept += sorted(routed, key=lambda s: s.name)
    # A host routed only on some paths gets its other paths sent to the default backend by a host entry
    # of its own: without it the frontend would fall through to the routes on a path of any host (`*/x`),
    # and a registrant could take paths on a host someone else holds.
    bare = {route.host for route in routes if route.host and not route.path}
    routes += [Route(host, "", kept[0].backend) for host in sorted({r.host for r in routes if r.host} - bare)]
    # A backend name near the length limit has no room for the suffix: such a backend gets no canary
    # backend (its canaries still get their share), never a name every command to it would refuse.
    canary_backends = tuple(c for c in (CanaryBackend(s.backend, s.name, s.canary_tag) for s in kept
                                        if s.canary_tag and settings.haproxy.canary_header)
                            if rules.is_name(c.name))
    return Routing(tuple(kept), tuple(sorted(routes)), tuple(sorted(unrouted, key=lambda u: u.service)),
                   canary_backends)


@dataclass(frozen=True)
class _Grant:
    """A territory given to a backend, and on what ground: configured, held before, registered first."""

    territory: tuple[str, str]
    backend: str
    ground: str


def _territory(route: Route) -> tuple[str, str]:
    """What a route takes from the others: a whole host (every path on it), or a path and all below it
    on the hosts nobody routes (a path on any host)."""
    return (route.host, "") if route.host else ("*", route.path)


def _key_territory(key: str) -> tuple[str, str]:
    host, slash, path = key.partition("/")
    return (host, "") if host != "*" else ("*", slash + path)


def _overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] != "*":
        return True
    return f"{a[1]}/".startswith(f"{b[1]}/") or f"{b[1]}/".startswith(f"{a[1]}/")


def _registered(service: Service | None) -> int | None:
    """When the service was first registered (its lowest CreateIndex), or None when Consul did not say."""
    indexes = [inst.registered for inst in service.instances if inst.registered] if service else []
    return min(indexes, default=None)


def _settle(
    claimants: list[ServiceSettings], services: Mapping[str, Service], held: Mapping[str, str],
    reserved_for: Mapping[str, str], granted: list[_Grant], allowed_hosts: tuple[str, ...],
) -> list[tuple[ServiceSettings, str | None]]:
    """Which discovered claims are routed (None) and why each other one is not.

    A route belongs to whoever holds it, and so does everything it covers: a host with all its paths,
    a path on any host with the paths below it. Configured routes come first; then a discovered service
    that held (part of) the territory before; then, for free territory, the claimant registered first
    in Consul (lowest CreateIndex), and nobody when Consul's indexes cannot tell claimants apart. A
    territory whose holder left (``held`` names a backend no longer claiming) stays reserved for it.
    Names never decide.
    """
    claiming = {svc.backend for svc in claimants} | {grant.backend for grant in granted}
    # Only a holder that stopped claiming altogether reserves its routes; a move is no reservation.
    reserved = [(_key_territory(key), backend) for key, backend in [*held.items(), *reserved_for.items()]
                if backend not in claiming]

    def rank(svc: ServiceSettings) -> tuple[int, float]:
        mine = _territory(Route(svc.host, svc.path, svc.backend))
        holder = any(b == svc.backend and _overlap(_key_territory(k), mine)
                     for k, b in [*held.items(), *reserved_for.items()])
        registered = _registered(services.get(svc.name))
        return (0 if holder else 1, float(registered) if registered is not None else float("inf"))

    ranks = {svc.name: rank(svc) for svc in claimants}
    settled: list[tuple[ServiceSettings, str | None]] = []
    for svc in sorted(claimants, key=lambda s: (ranks[s.name], s.name)):
        route = Route(svc.host, svc.path, svc.backend)
        mine = _territory(route)
        owner = next((g for g in granted if _overlap(g.territory, mine)), None)
        gone = next((backend for t, backend in reserved if _overlap(t, mine)), None)
        ties = sorted(o.name for o in claimants if o is not svc and ranks[o.name] == ranks[svc.name]
                      and _overlap(_territory(Route(o.host, o.path, o.backend)), mine))
        reason: str | None
        if not rules.host_allowed(svc.host, allowed_hosts):
            where = f"host {svc.host}" if svc.host else "a path on any host"
            reason = f"route {route.describe()} claims {where}, which discovery.hosts does not allow"
        elif owner is not None:
            reason = _taken(route, owner)
        elif gone is not None:
            reason = (f"route {route.describe()} is held by backend {gone}, which left; it stays reserved for it "
                      "for discovery.route_grace")
        elif ties:  # Consul cannot tell who came first: nobody gets it, nor anything it covers
            granted.append(_Grant(mine, ", ".join([svc.name, *ties]), "contested"))
            reason = _taken(route, granted[-1])
        else:
            reason = None
            granted.append(_Grant(mine, svc.backend, "held" if ranks[svc.name][0] == 0 else "first"))
        settled.append((svc, reason))
    return settled


def _taken(route: Route, owner: _Grant) -> str:
    covers = f"host {owner.territory[0]}" if owner.territory[0] != "*" else f"path {owner.territory[1]} on any host"
    if owner.ground == "configured":
        return f"route {route.describe()} is already taken by backend {owner.backend} (it routes {covers})"
    if owner.ground == "contested":
        return (f"route {route.describe()} is claimed by several services registered at once ({owner.backend}) and "
                "held by none; it is routed to none of them until one claim goes")
    if owner.ground == "held":
        return f"route {route.describe()} is held by backend {owner.backend} ({covers}); a newcomer cannot take it"
    return f"route {route.describe()} is claimed by {owner.backend} too ({covers}), registered in Consul before it"


def map_text(entries: Mapping[str, str]) -> str:
    """The map file: sorted, so the same routes always give the same bytes."""
    lines = ["# Generated by haproxy-sync: host[/path] -> backend. Changed at runtime too; edits are overwritten."]
    lines += [f"{rules.map_key(key)} {rules.name(backend)}" for key, backend in sorted(entries.items())]
    return "\n".join(lines) + "\n"


def parse_map_file(text: str) -> dict[str, str]:
    """The entries of a map file as :func:`map_text` writes it (comments and blank lines skipped)."""
    entries = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and not parts[0].startswith("#"):
            with contextlib.suppress(rules.Refused):  # a hand edit or a damaged file: never a command
                entries[rules.map_key(parts[0])] = rules.name(parts[1])
    return entries


def route_drift(running: Mapping[str, str], planned: Mapping[str, str], wanted: str = "planned") -> list[str]:
    """One line per route HAProxy runs otherwise than ``planned`` (for logs and ``status``)."""
    return [f"route {key} runs {running.get(key, 'nothing')}, {wanted} {planned.get(key, 'nothing')}"
            for key in sorted(running.keys() | planned.keys()) if running.get(key) != planned.get(key)]


def map_commands(map_path: str, old: Mapping[str, str], new: Mapping[str, str]) -> list[Command]:
    """Runtime API commands taking HAProxy's map from ``old`` to ``new``: adds and sets, then deletes."""
    sequence = [commands.add_map(map_path, key, new[key]) for key in sorted(new.keys() - old.keys())]
    changed = sorted(key for key in new.keys() & old.keys() if old[key] != new[key])
    sequence += [commands.set_map(map_path, key, new[key]) for key in changed]
    sequence += [commands.del_map(map_path, key) for key in sorted(old.keys() - new.keys())]
    return sequence
