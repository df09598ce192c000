"""The immutable model of what Consul says: instances, services, snapshots.

Everything that comes from Consul passes through :func:`parse_health_entries` before any other part
of haproxy-sync sees it. That function is the trust boundary: it turns Consul's JSON into typed,
validated values and skips (with a reason) any instance whose strings could not safely reach a
config file. Render and plan only ever see values that were checked here, so a name with a newline
or an address with a ``#`` can never add a line or a directive to ``haproxy.cfg``.

The types are frozen and ordered so that two snapshots of the same catalog compare equal whatever
order Consul listed them in; the daemon compares snapshots, not Consul indexes, because the index can
move without the data changing.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from haproxy_sync import rules
from haproxy_sync.reasons import SkipKind


class Status(enum.IntEnum):
    """Consul check status, ordered so that ``max()`` gives the worst one."""

    PASSING = 0
    WARNING = 1
    CRITICAL = 2

    @classmethod
    def parse(cls, text: object) -> Status:
        """Unknown or missing statuses count as critical: never route to what we cannot read.

        Exact words only: ``str.upper`` folds non-ASCII letters (a dotless i would read as I).
        """
        return _STATUS_WORDS.get(text, cls.CRITICAL) if isinstance(text, str) else cls.CRITICAL


_STATUS_WORDS = {"passing": Status.PASSING, "warning": Status.WARNING, "critical": Status.CRITICAL}


class InvalidInstance(ValueError):
    """An entry from Consul that cannot safely become a server line; the message is the reason."""

    def __init__(self, reason: str, instance_id: str = "?", kind: SkipKind = SkipKind.ENTRY) -> None:
        super().__init__(reason)
        self.reason = reason
        self.instance_id = instance_id
        self.kind = kind


class ForeignEntry(ValueError):
    """A health answer holding an entry of another service: the answer is wrong, not the instance."""


def _create_index(service: Mapping[str, Any]) -> int:
    value = service.get("CreateIndex", 0)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True, order=True)
class Instance:
    """One service instance, as far as it can reach HAProxy's config.

    Only what the config uses is kept (no check output, no indexes), so that two reads of an unchanged
    catalog give equal instances even when Consul's index or a check's output text moved.
    """

    node: str
    id: str
    address: str
    port: int
    status: Status
    weight_passing: int = 1
    weight_warning: int = 1
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    #: Consul's CreateIndex of the registration: who registered first, when two services claim a route.
    registered: int = field(default=0, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        """Consul service IDs are unique per agent, not per cluster: the node is part of the key."""
        return (self.node, self.id)

    @property
    def weight(self) -> int:
        """The weight HAProxy should give the instance in its current status (0 means drain)."""
        if self.status is Status.PASSING:
            return self.weight_passing
        if self.status is Status.WARNING:
            return self.weight_warning
        return 0

    @property
    def routable(self) -> bool:
        return self.status is not Status.CRITICAL

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any], policy: rules.AddressPolicy = rules.STRICT) -> Instance:
        """Build an instance from one ``/v1/health/service`` entry, or raise :class:`InvalidInstance`.

        ``policy`` says which addresses the edge may send traffic to (``sync.networks``, ``sync.host_names``).
        """
        if not isinstance(entry, Mapping):
            raise InvalidInstance("entry is not a JSON object")
        node = entry.get("Node") or {}
        service = entry.get("Service") or {}
        checks = entry.get("Checks") or []
        if not isinstance(node, Mapping) or not isinstance(service, Mapping) or not isinstance(checks, list):
            raise InvalidInstance("entry lacks Node, Service or Checks objects")
        instance_id = service.get("ID")
        if not isinstance(instance_id, str) or not instance_id or len(instance_id) > rules.MAX_ID_LENGTH:
            raise InvalidInstance("Service.ID is missing, not a string, or longer than 256 characters",
                                  kind=SkipKind.ID)
        node_name = node.get("Node")
        if not isinstance(node_name, str) or not node_name or len(node_name) > rules.MAX_ID_LENGTH:
            raise InvalidInstance("Node.Node is missing or not a string", instance_id, SkipKind.NODE)
        kind = SkipKind.PORT
        try:
            port = rules.port(service.get("Port"))
            kind = SkipKind.ADDRESS
            # Consul's rule: an empty Service.Address means "the node's address".
            address = policy.check_endpoint(rules.address(service.get("Address") or node.get("Address")), port)
            kind = SkipKind.WEIGHT
            weights = service.get("Weights") or {}
            if not isinstance(weights, Mapping):
                raise ValueError("Weights is not an object")
            weight_passing = rules.weight(weights.get("Passing", 1), "Weights.Passing")
            weight_warning = rules.weight(weights.get("Warning", 1), "Weights.Warning")
        except ValueError as exc:
            raise InvalidInstance(str(exc), instance_id, kind) from None
        statuses = [Status.parse(c.get("Status")) for c in checks if isinstance(c, Mapping)]
        tags = service.get("Tags") or []
        meta = service.get("Meta") or {}
        return cls(
            node=node_name,
            id=instance_id,
            address=address,
            port=port,
            status=max(statuses, default=Status.PASSING),
            weight_passing=weight_passing,
            weight_warning=weight_warning,
            tags=tuple(sorted(str(t) for t in tags)) if isinstance(tags, list) else (),
            meta=tuple(sorted((str(k), str(v)) for k, v in meta.items())) if isinstance(meta, Mapping) else (),
            registered=_create_index(service),
        )


@dataclass(frozen=True, slots=True)
class Skipped:
    """An instance left out of the config, and why: logged and counted, never silently dropped."""

    service: str
    instance_id: str
    reason: str
    kind: SkipKind = SkipKind.ENTRY


def skipped_summary(what: str, skipped: Sequence[Skipped], examples: int = 3) -> str:
    """One log line for everything one answer left out, however much: counts by kind, a few examples.

    An answer of 200,000 invalid instances must not become 200,000 lines (a flood that hides the
    rest of the journal and costs more than the answer); the counts and ``instances_skipped``
    say how many, the examples say what they look like.
    """
    kinds = Counter(item.kind.label for item in skipped)
    counts = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
    def example(item: Skipped) -> str:
        named = f"service={item.service!r}" if item.instance_id == "*" else f"id={item.instance_id!r}"
        return f"{named} reason={item.reason!r}"

    shown = "; ".join(example(item) for item in skipped[:examples])
    more = f"; and {len(skipped) - examples} more" if len(skipped) > examples else ""
    return f"skipped {len(skipped)} of {what} ({counts}): {shown}{more}; left out of haproxy.cfg"


@dataclass(frozen=True, slots=True)
class Server:
    """An instance with the HAProxy server name it is given in its backend."""

    name: str
    instance: Instance


@dataclass(frozen=True, slots=True)
class Service:
    """All instances of one Consul service, sorted, with unique HAProxy server names."""

    name: str
    instances: tuple[Instance, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "instances", tuple(sorted(self.instances)))

    @property
    def servers(self) -> tuple[Server, ...]:
        """Server names are the Consul IDs; IDs repeated across nodes get the node in their name."""
        counts: dict[str, int] = {}
        for inst in self.instances:
            counts[inst.id] = counts.get(inst.id, 0) + 1
        names = [
            rules.label(inst.id if counts[inst.id] == 1 else f"{inst.node}-{inst.id}", inst.node)
            for inst in self.instances
        ]
        # Two different instances can still clean up to the same name; a hash of the key separates them.
        names = [
            name if names.count(name) == 1 else rules.label(f"{name}\0", f"{inst.node}\0{inst.id}")
            for name, inst in zip(names, self.instances, strict=True)
        ]
        return tuple(Server(name, inst) for name, inst in zip(names, self.instances, strict=True))

    def count(self, status: Status) -> int:
        return sum(1 for inst in self.instances if inst.status is status)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What Consul said about every routed service at one moment; decisions are taken against one."""

    services: tuple[Service, ...] = field(default=())
    _by_name: dict[str, Service] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "services", tuple(sorted(self.services, key=lambda s: s.name)))
        # Lookups by name happen once per backend per apply: with thousands of services, a scan would
        # make every apply quadratic.
        object.__setattr__(self, "_by_name", {service.name: service for service in self.services})

    def get(self, name: str) -> Service:
        return self._by_name.get(name) or Service(name)

    @classmethod
    def of(cls, services: Iterable[Service]) -> Snapshot:
        return cls(tuple(services))


#: The most instances one service is served with; the rest are skipped (reason "limit"), so that no
#: answer can grow a slot table (and HAProxy's servers of a backend) without bound.
MAX_INSTANCES = 8192


def parse_health_entries(
    service_name: str, entries: object, policy: rules.AddressPolicy = rules.STRICT
) -> tuple[Service, tuple[Skipped, ...]]:
    """Turn a ``/v1/health/service/<name>`` answer into a :class:`Service` plus what was skipped.

    A malformed answer as a whole (not a list) raises ``ValueError``: the caller keeps the last good
    snapshot. So does an entry that names another service (:class:`ForeignEntry`): an answer that
    mixes services is not one to route on. A malformed entry only skips that entry.
    """
    if not isinstance(entries, list):
        raise ValueError(f"health answer for {service_name!r} is not a JSON list")
    instances: dict[tuple[str, str], Instance] = {}
    skipped: list[Skipped] = []
    for entry in entries:
        named = _service_name(entry)
        if named is not None and not _same_service(named, service_name):
            raise ForeignEntry(f"health answer for {service_name!r} holds an entry of service {named[:80]!r}; "
                               "an answer of another service is not data for this one")
        try:
            inst = Instance.from_entry(entry, policy)
        except InvalidInstance as exc:
            skipped.append(Skipped(service_name, exc.instance_id[:80], exc.reason, exc.kind))
            continue
        instances[inst.key] = inst
    if len(instances) > MAX_INSTANCES:
        # Served: the first MAX_INSTANCES in (node, ID) order, the same ones answer after answer.
        kept = sorted(instances)[:MAX_INSTANCES]
        over = sorted(instances.keys() - set(kept))
        skipped.extend(Skipped(service_name, key[1][:80], f"over the bound of {MAX_INSTANCES} instances a service",
                               SkipKind.LIMIT) for key in over)
        instances = {key: instances[key] for key in kept}
    return Service(service_name, tuple(instances.values())), tuple(skipped)


def _service_name(entry: object) -> str | None:
    """``Service.Service`` of an entry, when the entry has one to compare."""
    service = entry.get("Service") if isinstance(entry, Mapping) else None
    named = service.get("Service") if isinstance(service, Mapping) else None
    return named if isinstance(named, str) else None


def _same_service(named: str, watched: str) -> bool:
    """Consul looks service names up without ASCII case; other case folding (K and the Kelvin sign)
    must not make another service's entries pass for this one's."""
    return named == watched or (named.isascii() and named.lower() == watched.lower())
