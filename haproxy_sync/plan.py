"""Pure planning: which server slot each instance holds, and how HAProxy gets there.

Every backend has pre-made server lines, ``slot1`` .. ``slotN``. An instance takes a free slot when it
appears and keeps it, keyed by its Consul node and service ID, for its whole life; a slot goes back to
the pool only after its instance left and its connections had ``drain_timeout`` to finish. Because the
server lines exist before the instances do, a change of membership, health or weight is a handful of
Runtime API commands (``set server ... addr/weight/state``), not a reload. A reload is planned only for
what the Runtime API cannot express: a new backend, a template or settings change, more slots.

Lifecycle of a slot, driven by Consul's status (passing < warning < critical):

    free (maint) --instance appears--> ready, weight Passing (or Warning; 0 drains)
    ready --critical or gone--> draining (weight 0: in-flight requests finish) --idle or drain_timeout--> maint
    maint --instance gone--> free            maint/draining --passing again--> ready

A drain ends at ``drain_timeout``, or earlier when HAProxy says the server carries nothing any more
(``idle``: read by the daemon where HAProxy defines it, 3.0; see :func:`drains.server_loads`).

Drain is expressed as weight 0, not the runtime ``drain`` state, because weight 0 can be written in
haproxy.cfg: the file on disk always describes what runs, so a restart gives the same state.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from haproxy_sync import commands, dynamic, rules
from haproxy_sync.canary import CanaryPolicy, only_canaries, weighted
from haproxy_sync.catalog import Instance, Service, Snapshot, Status
from haproxy_sync.commands import Command
from haproxy_sync.reasons import ReloadKind, ReloadReason

FREE_ADDRESS = "127.0.0.1"
FREE_PORT = 1  # a free slot is in maintenance; the placeholder only has to be a valid address


@dataclass(frozen=True, slots=True)
class Slot:
    """One server line of a backend and, when held, the instance behind it."""

    index: int
    owner: tuple[str, str] | None = None  # (node, service ID)
    address: str = FREE_ADDRESS
    port: int = FREE_PORT
    weight: int = 0
    maint: bool = True
    draining_since: float | None = None

    @property
    def name(self) -> str:
        return f"slot{self.index}"

    @property
    def runtime(self) -> tuple[str, int, int, bool]:
        """What HAProxy must run for this slot: address, port, weight, in maintenance."""
        return (self.address, self.port, self.weight, self.maint)

    @property
    def state(self) -> str:
        """``enabled``, ``drain`` (weight 0, no new requests) or ``disabled`` (maintenance)."""
        if self.maint:
            return "disabled"
        return "drain" if self.weight == 0 else "enabled"


@dataclass(frozen=True, slots=True)
class BackendSlots:
    backend: str
    slots: tuple[Slot, ...]

    def holder(self, key: tuple[str, str]) -> Slot | None:
        return next((slot for slot in self.slots if slot.owner == key), None)


def _free(index: int) -> Slot:
    return Slot(index)


def _slot_for(instance: Instance, slot: Slot, now: float, drain_timeout: float, idle: frozenset[str]) -> Slot:
    """The slot an existing holder should be in, given the instance's status now.

    Built directly rather than with ``dataclasses.replace``, and the same object returned when
    nothing moved: a plan touches every slot of every backend (10,000 at 1,000 services).
    """
    if instance.status is Status.CRITICAL:
        return _drain(replace(slot, owner=instance.key, address=instance.address, port=instance.port), now,
                      drain_timeout, idle)
    weight = instance.weight_passing if instance.status is Status.PASSING else instance.weight_warning
    if (slot.owner == instance.key and slot.address == instance.address and slot.port == instance.port
            and slot.weight == weight and not slot.maint and slot.draining_since is None):
        return slot
    return Slot(slot.index, instance.key, instance.address, instance.port, weight, False, None)


def _drain(slot: Slot, now: float, drain_timeout: float, idle: frozenset[str]) -> Slot:
    """Weight 0 until the drain is over. ``idle`` counts only for a slot already draining: HAProxy's
    reading then was of the server at weight 0, with nothing new able to reach it."""
    if slot.maint:
        return replace(slot, weight=0, draining_since=None)
    since = slot.draining_since if slot.draining_since is not None else now
    if now - since >= drain_timeout or (slot.draining_since is not None and slot.name in idle):
        return replace(slot, weight=0, maint=True, draining_since=None)
    return replace(slot, weight=0, draining_since=since)


def assign(
    previous: BackendSlots | None, backend: str, service: Service, *, base: int, now: float, drain_timeout: float,
    idle: frozenset[str] = frozenset(),
) -> BackendSlots:
    """The new slot table of one backend; pure, so that the same inputs always plan the same."""
    instances = {inst.key: inst for inst in service.instances}
    slots: list[Slot] = []
    for slot in previous.slots if previous else ():
        if slot.owner is None:
            slots.append(slot)
        elif slot.owner in instances:
            slots.append(_slot_for(instances[slot.owner], slot, now, drain_timeout, idle))
        else:
            gone = _drain(slot, now, drain_timeout, idle)
            slots.append(_free(slot.index) if gone.maint else gone)
    held = {slot.owner for slot in slots if slot.owner is not None}
    newcomers = [inst for inst in service.instances if inst.key not in held]
    # A first plan leaves room for the backend to double before a reload is needed to add slots.
    size = max(len(slots), base) if previous else max(base, 2 * len(newcomers))
    free = sum(1 for slot in slots if slot.owner is None) + size - len(slots)
    while free < len(newcomers):
        free += size
        size *= 2
    slots.extend(_free(index) for index in range(len(slots) + 1, size + 1))
    free_indexes = iter([i for i, slot in enumerate(slots) if slot.owner is None])
    for inst in newcomers:
        position = next(free_indexes)
        if inst.status is Status.CRITICAL:  # never had traffic: straight to maintenance
            slots[position] = Slot(slots[position].index, inst.key, inst.address, inst.port, 0, True, None)
        else:
            slots[position] = _slot_for(inst, slots[position], now, drain_timeout, idle)
    return BackendSlots(backend, tuple(slots))


def servers_by_state(tables: Mapping[str, BackendSlots]) -> dict[tuple[str, str], int]:
    """Slots per (backend, state): ``up``, ``drain``, ``maint`` or ``free`` (``haproxy_sync_servers``)."""
    counts: Counter[tuple[str, str]] = Counter()
    for backend, table in tables.items():
        for slot in table.slots:
            state = "free" if slot.owner is None else {"enabled": "up", "drain": "drain"}.get(slot.state, "maint")
            counts[(backend, state)] += 1
    return dict(counts)


def evict(
    tables: Mapping[str, BackendSlots], owners: Mapping[str, frozenset[tuple[str, str]]]
) -> dict[str, BackendSlots]:
    """``tables`` with the slots of ``owners`` (per backend) freed at once, without a drain: an instance
    left out because HAProxy refuses its server line must not keep that line while it drains."""
    evicted = dict(tables)
    for backend, keys in owners.items():
        table = tables.get(backend)
        if table is not None and keys and any(slot.owner in keys for slot in table.slots):
            evicted[backend] = BackendSlots(backend, tuple(
                _free(slot.index) if slot.owner in keys else slot for slot in table.slots))
    return evicted


def assign_all(
    previous: Mapping[str, BackendSlots],
    snapshot: Snapshot,
    backends: Iterable[tuple[str, str]],
    *,
    base: int,
    now: float,
    drain_timeout: float,
    idle: Mapping[str, frozenset[str]] | None = None,
    canaries: Mapping[str, CanaryPolicy] | None = None,
    canaries_only: Mapping[str, str] | None = None,
) -> dict[str, BackendSlots]:
    """Slot tables for every (backend, service) pair; ``idle``: per backend, the draining slots HAProxy
    reported as carrying nothing; ``canaries``: per backend, the share its canaries get (their weights);
    ``canaries_only``: per canary backend, the tag of the only instances it serves."""
    idle = idle or {}
    canaries = canaries or {}
    canaries_only = canaries_only or {}

    def served(backend: str, service: str) -> Service:
        if backend in canaries_only:
            return only_canaries(snapshot.get(service), canaries_only[backend])
        return weighted(snapshot.get(service), canaries.get(backend))

    return {
        backend: assign(previous.get(backend), backend, served(backend, service),
                        base=base, now=now, drain_timeout=drain_timeout, idle=idle.get(backend, frozenset()))
        for backend, service in backends
    }


def next_deadline(tables: Mapping[str, BackendSlots], drain_timeout: float) -> float | None:
    """When the earliest drain ends, so the daemon can wake up and move that slot on."""
    ends = [s.draining_since + drain_timeout for t in tables.values() for s in t.slots if s.draining_since is not None]
    return min(ends, default=None)


def draining(tables: Mapping[str, BackendSlots]) -> dict[str, tuple[Slot, ...]]:
    """Per backend, the slots in a drain (weight 0, waiting for their connections to finish)."""
    found = {name: tuple(s for s in table.slots if s.draining_since is not None) for name, table in tables.items()}
    return {name: slots for name, slots in found.items() if slots}


# --- from the live config back to slot tables (after a restart) ---

_BACKEND = re.compile(r"^\s*backend\s+(\S+)")
_SECTION = re.compile(r"^\s*(global|defaults|frontend|listen|backend|peers|resolvers|userlist|program|cache)\b")
_SERVER = re.compile(r"^\s*server\s+slot(\d+)\s+(\[[0-9A-Fa-f:.]+\]|[^\s:]+):(\d+)\b(.*)$")
_WEIGHT = re.compile(r"\bweight\s+(\d+)")


_ANY_SERVER = re.compile(r"^\s*server\s+(\S+)")


def adoption_problem(
    text: str, backends: Iterable[tuple[str, str]], running: Mapping[tuple[str, str], Running] | None = None
) -> str | None:
    """Why the live config's slots cannot be taken over as they are, or None when they can.

    A config haproxy-sync rendered has, in each of its backends, the server lines ``slot1..N``, each
    once, each a valid endpoint; HAProxy runs exactly those. A hand edit, a truncated file or a line
    HAProxy dropped breaks that, and patching such tables would write a slot twice. Then the whole
    config is laid out anew (the first apply reloads anyway). ``running``: HAProxy's servers by
    (backend, name), from ``show servers state``, when it answered.
    """
    wanted = {backend for backend, _ in backends}
    seen: dict[str, list[tuple[int, str, int]]] = {}
    current: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        if match := _BACKEND.match(line):
            current = match.group(1)
            if current in seen:
                return f"backend {current} appears twice (line {number})"
            if current in wanted:
                seen[current] = []
            continue
        if _SECTION.match(line):
            current = None
            continue
        if current not in wanted or not _ANY_SERVER.match(line):
            continue
        match = _SERVER.match(line)
        if match is None:
            return f"backend {current}: line {number} is a server haproxy-sync did not write"
        index, host, port, rest = match.groups()
        weight = _WEIGHT.search(rest)
        if not 0 < int(port) < 65536 or (weight is not None and int(weight.group(1)) > rules.MAX_WEIGHT):
            return f"backend {current}: line {number} has a port or weight out of range"
        seen[current].append((int(index), host.strip("[]"), int(port)))
    for backend, slots in seen.items():
        indexes = sorted(index for index, _, _ in slots)
        if indexes != list(range(1, len(indexes) + 1)):
            return f"backend {backend}: its slots are not slot1..slot{len(indexes)}, each once (a gap or a duplicate)"
        if running is not None:
            runs = {name: (address, port) for (be, name), (address, port, _, _) in running.items() if be == backend}
            if runs and set(runs) != {f"slot{index}" for index in indexes}:
                return f"backend {backend}: HAProxy runs other servers than the file holds"
            for index, address, port in slots:
                actual = runs.get(f"slot{index}")
                if actual is not None and (actual[1] != port or not _same_endpoint(actual[0], address)):
                    return f"backend {backend}: HAProxy runs slot{index} at another address than the file says"
    return None


def slots_from_config(text: str, snapshot: Snapshot, backends: Iterable[tuple[str, str]]) -> dict[str, BackendSlots]:
    """Rebuild slot tables from a config we rendered, matching instances by address and port.

    Lets a restarted daemon keep every instance in the slot HAProxy already gives it, so its first
    apply is a no-op instead of a reshuffle.
    """
    service_of = dict(backends)
    found: dict[str, list[Slot]] = {}
    current: str | None = None
    for line in text.splitlines():
        if match := _BACKEND.match(line):
            current = match.group(1)
            continue
        if _SECTION.match(line):
            current = None
            continue
        if current in service_of and (match := _SERVER.match(line)):
            index, host, port, rest = match.groups()
            weight = _WEIGHT.search(rest)
            found.setdefault(current, []).append(Slot(
                index=int(index), address=host.strip("[]"), port=int(port),
                weight=int(weight.group(1)) if weight else 1, maint=" disabled" in f" {rest.split('#')[0]}",
            ))
    tables: dict[str, BackendSlots] = {}
    for backend, slots in found.items():
        by_endpoint = {(i.address, i.port): i for i in snapshot.get(service_of[backend]).instances}
        adopted = []
        for slot in sorted(slots, key=lambda s: s.index):
            inst = by_endpoint.pop((slot.address, slot.port), None)
            if inst is not None:
                adopted.append(replace(slot, owner=inst.key))
            elif slot.maint:
                adopted.append(_free(slot.index))
            else:  # its instance left while we were not watching: drain it like any leaver
                adopted.append(replace(slot, owner=("", f"gone:{slot.address}:{slot.port}")))
        tables[backend] = BackendSlots(backend, tuple(adopted))
    return tables


# --- what HAProxy must be told ---


@dataclass(frozen=True)
class Plan:
    """Runtime API commands to send, or the reason a reload is needed instead."""

    commands: tuple[Command, ...] = ()
    reload_reason: ReloadReason | None = None

    @property
    def needs_reload(self) -> bool:
        return self.reload_reason is not None


def slot_commands(backend: str, old: Slot, new: Slot) -> list[Command]:
    """Commands taking one slot from ``old`` to ``new``; maintenance first, ready last, so no request
    ever reaches a half-changed server."""
    sequence: list[Command] = []
    if new.maint and not old.maint:
        sequence.append(commands.set_server_state(backend, new.name, commands.ServerState.MAINT))
    if (new.address, new.port) != (old.address, old.port):
        sequence.append(commands.set_server_addr(backend, new.name, new.address, new.port))
    if new.weight != old.weight:
        sequence.append(commands.set_server_weight(backend, new.name, new.weight))
    if old.maint and not new.maint:
        sequence.append(commands.set_server_state(backend, new.name, commands.ServerState.READY))
    return sequence


def structure(text: str, without: set[tuple[str, str]] | frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """The config with what the Runtime API can change taken out: server lines keep only their name,
    comments go, and the servers in ``without`` (backend, name) go (they are added at runtime). Two
    configs with the same structure differ only in what runtime commands can apply."""
    shape = []
    backend = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not line[:1].isspace():
            words = stripped.split()
            backend = words[1] if words[0] == "backend" and len(words) > 1 else ""
        if stripped.startswith("server "):
            stripped = " ".join(stripped.split()[:2])
            if (backend, stripped[7:]) in without:
                continue
        shape.append(stripped)
    return shape


def _static_balance(backend: str, text: str) -> bool:
    shape = dynamic.shapes(text).get(backend)
    return shape is not None and shape.balance in dynamic.STATIC_BALANCE


def plan_runtime(
    old: Mapping[str, BackendSlots], new: Mapping[str, BackendSlots], old_text: str | None, new_text: str
) -> Plan:
    """Runtime commands for ``old`` -> ``new``, or the first reason they cannot do it alone."""
    if old_text is None:
        return Plan(reload_reason=ReloadReason(ReloadKind.FIRST, "no live config yet"))
    if old.keys() != new.keys():
        added = sorted(new.keys() - old.keys())
        removed = sorted(old.keys() - new.keys())
        return Plan(reload_reason=ReloadReason(
            ReloadKind.BACKENDS, f"backends changed (+{','.join(added) or '-'} -{','.join(removed) or '-'})"))
    sequence: list[Command] = []
    added: set[tuple[str, str]] = set()
    for backend, table in new.items():
        before = old[backend]
        running = len(before.slots)
        if running != len(table.slots):
            grown = (dynamic.grow(backend, table.slots, running, new_text) if running < len(table.slots)
                     else ReloadReason(ReloadKind.SLOTS, "shrink"))
            if isinstance(grown, ReloadReason):
                return Plan(reload_reason=ReloadReason(
                    grown.kind, f"backend {backend} slots {running} -> {len(table.slots)} ({grown.text})"))
            sequence.extend(grown)
            added.update((backend, slot.name) for slot in table.slots[running:])
        for previous, slot in zip(before.slots, table.slots[:running], strict=True):
            if previous.runtime == slot.runtime:
                continue
            if not rules.is_ip(slot.address):
                return Plan(reload_reason=ReloadReason(
                    ReloadKind.HOSTNAME, f"{backend}/{slot.name} address {slot.address} is a host name"))
            if slot.weight not in (0, previous.weight) and _static_balance(backend, new_text):
                return Plan(reload_reason=ReloadReason(
                    ReloadKind.STATIC_WEIGHTS,
                    f"backend {backend} uses a static balance algorithm: weights other than 0 change only by a reload"))
            sequence.extend(slot_commands(backend, previous, slot))
    old_shape, new_shape = structure(old_text), structure(new_text, without=added)
    if old_shape != new_shape:
        line = next((n for o, n in zip(old_shape, new_shape, strict=False) if o != n), "(length)")
        return Plan(reload_reason=ReloadReason(ReloadKind.STRUCTURE, f"config structure changed at {line[:80]!r}"))
    return Plan(commands=tuple(sequence))


# --- one sentence per apply ---


@dataclass(frozen=True)
class ServiceDiff:
    """Instances added, removed, and changed (address, port, status, weights, tags or meta)."""

    name: str
    total: int
    added: int
    removed: int
    changed: int
    instances: tuple[str, ...] = ()  # the IDs of the instances added, removed or changed, sorted

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def sentence(self) -> str:
        return f"{self.name}: {self.total} servers (+{self.added} -{self.removed} ~{self.changed})"


def diff_service(old: Service, new: Service) -> ServiceDiff:
    before = {inst.key: inst for inst in old.instances}
    after = {inst.key: inst for inst in new.instances}
    added = after.keys() - before.keys()
    removed = before.keys() - after.keys()
    changed = {key for key in after.keys() & before.keys() if after[key] != before[key]}
    ids = sorted({(after.get(key) or before[key]).id for key in added | removed | changed})
    return ServiceDiff(new.name, len(new.instances), len(added), len(removed), len(changed), tuple(ids))


def diff_snapshots(old: Snapshot | None, new: Snapshot) -> tuple[ServiceDiff, ...]:
    """One diff per service of ``new``; with no previous snapshot every instance counts as added."""
    previous = old or Snapshot()
    return tuple(diff_service(previous.get(svc.name), svc) for svc in new.services)


#: Beyond this many services, an apply's sentence gives totals and the first names, not every service.
DESCRIBE_LIMIT = 5


#: At most this many instance IDs go into an apply's log fields.
INSTANCE_FIELD_LIMIT = 20


def change_fields(diffs: tuple[ServiceDiff, ...]) -> dict[str, str]:
    """The services and instances a change touched, for the apply line's ``service`` and ``instance``
    fields (comma-separated; the first few when hundreds changed)."""
    changed = [d for d in diffs if not d.empty]
    instances = [i for d in changed for i in d.instances]
    fields = {"service": ",".join(d.name for d in changed[:DESCRIBE_LIMIT])
              + (f",+{len(changed) - DESCRIBE_LIMIT} more" if len(changed) > DESCRIBE_LIMIT else "")}
    if instances:
        fields["instance"] = ",".join(instances[:INSTANCE_FIELD_LIMIT]) + (
            f",+{len(instances) - INSTANCE_FIELD_LIMIT} more" if len(instances) > INSTANCE_FIELD_LIMIT else "")
    return {k: v for k, v in fields.items() if v}


def describe(diffs: tuple[ServiceDiff, ...]) -> str:
    """The changed services first; unchanged ones only when nothing changed at all.

    With hundreds of services (discovery), one line per apply must stay a line: totals, then the
    first few names.
    """
    changed = [d for d in diffs if not d.empty] or list(diffs)
    if len(changed) <= DESCRIBE_LIMIT:
        return "; ".join(d.sentence() for d in changed) or "no services"
    added, removed, touched = (sum(getattr(d, k) for d in changed) for k in ("added", "removed", "changed"))
    names = ", ".join(d.name for d in changed[:DESCRIBE_LIMIT])
    return (f"{len(changed)} services, {sum(d.total for d in changed)} servers (+{added} -{removed} ~{touched}): "
            f"{names} and {len(changed) - DESCRIBE_LIMIT} more")


# --- drift: what HAProxy runs against what it should ---

Running = tuple[str, int, int, bool]  # address, port, weight, in maintenance


def _same_endpoint(running: str, planned: str) -> bool:
    """HAProxy shows the address it runs; a planned host name shows as whatever it resolved to, so
    only a planned IP address can be compared."""
    if running == planned:  # the common case, without parsing (a reconcile compares every slot)
        return True
    if not rules.is_ip(planned):
        return True
    try:  # what HAProxy answers is untrusted text: its allowlist first, then the canonical form
        return rules.address(running) == rules.address(planned)
    except rules.Refused:
        return False


def _fmt(run: Running) -> str:
    address, port, weight, maint = run
    return f"{address}:{port} weight {weight}{' maint' if maint else ''}"


@dataclass(frozen=True)
class Drift:
    """Servers that run something other than planned, and the commands that put them right.

    ``missing`` names slots only a reload can put right: HAProxy does not have them at all, or they
    hold a host name whose endpoint drifted (the Runtime API takes IP addresses only).
    """

    commands: tuple[Command, ...] = ()
    found: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.found or self.missing)


def find_drift(desired: Mapping[str, BackendSlots], running: Mapping[tuple[str, str], Running]) -> Drift:
    fixes: list[Command] = []
    found: list[str] = []
    missing: list[str] = []
    for backend, table in desired.items():
        for slot in table.slots:
            actual = running.get((backend, slot.name))
            if actual is None:
                missing.append(f"{backend}/{slot.name}")
                continue
            address, port, weight, maint = actual
            if _same_endpoint(address, slot.address) and (port, weight, maint) == (slot.port, slot.weight, slot.maint):
                continue
            found.append(f"{backend}/{slot.name} runs {_fmt(actual)}, planned {_fmt(slot.runtime)}")
            if not rules.is_ip(slot.address):  # the Runtime API takes IP addresses only: a reload resolves it
                missing.append(f"{backend}/{slot.name}")
                continue
            as_running = replace(slot, address=address, port=port, weight=weight, maint=maint)
            fixes.extend(slot_commands(backend, as_running, slot))
    return Drift(tuple(fixes), tuple(found), tuple(missing))


def summarize(old: Mapping[str, BackendSlots], new: Mapping[str, BackendSlots], snapshot: Snapshot) -> list[str]:
    """One line per backend that changes, as ``render --plan`` prints it: ``cabify: +2 -1 ~1 weight``."""
    present = {inst.key for service in snapshot.services for inst in service.instances}
    lines = []
    for backend, table in new.items():
        before = {s.index: s for s in old[backend].slots} if backend in old else {}
        added = removed = weight = health = 0
        for slot in table.slots:
            prior = before.get(slot.index)
            if prior is None or (prior.runtime == slot.runtime and prior.owner == slot.owner):
                continue
            if slot.owner != prior.owner or (prior.owner is not None and prior.owner not in present):
                added += slot.owner is not None and slot.owner != prior.owner
                removed += prior.owner is not None
            elif (slot.maint, slot.weight == 0) != (prior.maint, prior.weight == 0):
                health += 1
            elif slot.weight != prior.weight:
                weight += 1
        if backend in old and len(old[backend].slots) != len(table.slots):
            lines.append(f"{backend}: slots {len(old[backend].slots)} -> {len(table.slots)}")
        extra = [f"~{n} {what}" for n, what in ((weight, "weight"), (health, "health")) if n]
        parts = [f"+{added}", f"-{removed}", *extra]
        if added or removed or weight or health:
            lines.append(f"{backend}: {' '.join(parts)}")
    return lines


# --- the empty-backend guard ---


def big_drop(old: Service, new: Service, min_servers: int, max_drop: float) -> str | None:
    """Why taking ``old`` to ``new`` at once looks like a Consul blip rather than a real change, or None.

    An agent restart or a partition can make Consul briefly report most instances gone or critical;
    applying that would empty the backend. The daemon holds such a change and reads Consul again first.
    """
    before = sum(1 for inst in old.instances if inst.routable)
    after = sum(1 for inst in new.instances if inst.routable)
    if before == 0 or after >= before:
        return None
    if after < min_servers:
        return f"{before} -> {after} healthy servers, under min_servers {min_servers}"
    if (before - after) / before > max_drop:
        return f"{before} -> {after} healthy servers, a drop of more than max_drop {max_drop:.0%}"
    return None


def big_catalog_drop(before: frozenset[str], after: frozenset[str], max_drop: float) -> str | None:
    """Why losing tagged services from the catalog at once looks like a Consul blip, or None.

    A node or agent that drops out can take many services with it for a moment; routing on that
    would remove their backends and routes. One service leaving is never held: tearing down a
    branch environment is the normal case.
    """
    gone = len(before - after)
    if gone < 2 or gone / len(before) <= max_drop:
        return None
    return f"{len(before)} -> {len(before) - gone} tagged services, a drop of more than max_drop {max_drop:.0%}"
