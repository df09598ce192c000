"""Tracing a config HAProxy refuses to the instances that cause it, so that the rest still applies.

Every value from Consul is checked before it reaches a template, but a check is not HAProxy: a value
can pass every rule and still make ``haproxy -c`` (or an operator's template) fail. Without this, one
such instance would stop every apply of every service for good. Here the refused candidate is
bisected: with the instances that changed since the last good apply left out, the config must pass
(else the fault is not an instance's: a template or settings change, kept as a plain failure);
then the changed instances are added back in halves, each half kept when the config with it still
passes and split when it does not, down to the single instances HAProxy refuses. Greedy, so that what
is kept was checked as a whole (two instances that only clash together are caught: the second is
refused), and about ``2 * log2(n)`` checks for one bad instance among ``n``.

The search itself (:func:`find_rejected`) is pure: it is handed the check. :class:`Rejections` is
the daemon's record of what it left out, an immutable value replaced whole, applied to each snapshot
before routing (a refused instance claims no route either).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from haproxy_sync import rules
from haproxy_sync.catalog import Instance, Service, Snapshot

#: The most configs one isolation checks; what it found by then is left out, the rest waits for the
#: next failed apply (so an answer full of bad instances costs bounded work per cycle).
MAX_CHECKS = 64

#: (service name, instance): one suspect.
Suspect = tuple[str, Instance]
#: A check of a candidate config holding the suspects at these positions: None when HAProxy (and the
#: template) accept it, else why not, in one line.
Check = Callable[[frozenset[int]], str | None]


@dataclass(frozen=True)
class Isolation:
    """What a search found: the suspects refused (with HAProxy's reason), and how much it cost."""

    rejected: tuple[tuple[Suspect, str], ...] = ()
    checks: int = 0
    base_refused: str | None = None  # the config without any suspect fails too: not an instance's fault
    complete: bool = True  # False when MAX_CHECKS ran out first

    @property
    def found(self) -> tuple[Rejected, ...]:
        return tuple(Rejected(name, inst, why) for (name, inst), why in self.rejected)


def sentences(found: Isolation, shown: int = 5) -> list[str]:
    """The log lines of a search: one per refused instance (the first ``shown``), then the summary.

    Names are the instances' safe labels (``rules.label``), never Consul's raw strings.
    """
    if not found.rejected:
        return [] if found.base_refused is not None else [
            f"isolation: the refused config passes now ({found.checks} checks); retrying as usual"]
    lines = [
        f"isolation: HAProxy refuses the config with service {item.service} instance "
        f"{rules.label(item.instance.id, item.instance.node)} (node {rules.label(item.instance.node)}, "
        f"{item.instance.address}:{item.instance.port}): {item.why}; left out of haproxy.cfg until its "
        "registration changes"
        for item in found.found[:shown]
    ]
    more = f", {len(found.rejected) - shown} more not shown" if len(found.rejected) > shown else ""
    unfinished = "; the check budget ran out, the next failure searches on" if not found.complete else ""
    lines.append(f"isolation: {len(found.rejected)} instances left out after {found.checks} checks{more}"
                 f"{unfinished}; applying the rest now")
    return lines


def changed(applied: Snapshot | None, candidate: Snapshot) -> tuple[Suspect, ...]:
    """The candidate's instances that are new or differ from what the last good apply held."""
    before = {} if applied is None else {(s.name, i.key): i for s in applied.services for i in s.instances}
    return tuple((s.name, i) for s in candidate.services for i in s.instances if before.get((s.name, i.key)) != i)


def everyone(candidate: Snapshot) -> tuple[Suspect, ...]:
    """Every instance of the candidate: the suspects when the changed ones do not explain the failure."""
    return tuple((s.name, i) for s in candidate.services for i in s.instances)


def leave_out(candidate: Snapshot, suspects: Sequence[Suspect], kept: frozenset[int]) -> Snapshot:
    """The candidate without the suspects not at a position in ``kept``."""
    dropped = {(name, inst.key) for position, (name, inst) in enumerate(suspects) if position not in kept}
    if not dropped:
        return candidate
    return Snapshot.of(
        Service(s.name, tuple(i for i in s.instances if (s.name, i.key) not in dropped)) for s in candidate.services
    )


def left_out(suspects: Sequence[Suspect], kept: frozenset[int]) -> list[tuple[str, tuple[str, str]]]:
    """(service, instance key) of the suspects not kept."""
    return [(name, inst.key) for position, (name, inst) in enumerate(suspects) if position not in kept]


def by_backend(
    pairs: Iterable[tuple[str, str]], dropped: Iterable[tuple[str, tuple[str, str]]],
    also: Mapping[str, frozenset[tuple[str, str]]] | None = None,
) -> dict[str, frozenset[tuple[str, str]]]:
    """Instances per backend (``pairs``: (backend, service)), as ``plan.evict`` takes them; plus ``also``."""
    backends: dict[str, list[str]] = {}
    for backend, service in pairs:
        backends.setdefault(service, []).append(backend)
    owners: dict[str, set[tuple[str, str]]] = {backend: set(keys) for backend, keys in (also or {}).items()}
    for service, key in dropped:
        for backend in backends.get(service, ()):
            owners.setdefault(backend, set()).add(key)
    return {backend: frozenset(keys) for backend, keys in owners.items() if keys}


def find_rejected(suspects: Sequence[Suspect], check: Check, max_checks: int = MAX_CHECKS) -> Isolation:
    """Bisect the suspects with ``check``; the whole set is known refused (that is why this runs)."""
    checks = 1
    base = check(frozenset())
    if base is not None:
        return Isolation(checks=checks, base_refused=base)
    kept: frozenset[int] = frozenset()
    rejected: list[tuple[Suspect, str]] = []
    whole = list(range(len(suspects)))
    # Start from the two halves: the whole was refused already (a lone suspect is checked once, for
    # HAProxy's reason; when the failure does not come back, no one is blamed).
    pending = [whole[len(whole) // 2:], whole[:len(whole) // 2]]
    while pending:
        group = pending.pop()
        if not group:
            continue
        if checks >= max_checks:
            return Isolation(tuple(rejected), checks, complete=False)
        why = check(kept | frozenset(group))
        checks += 1
        if why is None:
            kept |= frozenset(group)
        elif len(group) == 1:
            rejected.append((suspects[group[0]], why))
        else:
            pending.extend((group[len(group) // 2:], group[:len(group) // 2]))
    return Isolation(tuple(rejected), checks)


@dataclass(frozen=True)
class Rejected:
    """One instance left out because HAProxy refused the config holding it, exactly as it was then."""

    service: str
    instance: Instance
    why: str


@dataclass(frozen=True)
class Rejections:
    """The instances left out, until they change (a re-registration is checked again) or go away.

    Keyed by (service, node, ID); only an instance equal to the one refused is left out, so fixing the
    registration is all it takes. A template or settings change clears the record (:meth:`cleared`).
    """

    entries: Mapping[tuple[str, tuple[str, str]], Rejected] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.entries)

    def with_found(self, found: Iterable[Rejected]) -> Rejections:
        return Rejections({**self.entries, **{(r.service, r.instance.key): r for r in found}})

    def cleared(self) -> Rejections:
        return Rejections()

    def narrow(self, latest: Mapping[str, Service]) -> tuple[dict[str, Service], Rejections]:
        """``latest`` without the refused instances, and the record without those that changed or left."""
        if not self.entries:
            return dict(latest), self
        still: dict[tuple[str, tuple[str, str]], Rejected] = {}
        narrowed: dict[str, Service] = {}
        for name, service in latest.items():
            kept = []
            for instance in service.instances:
                entry = self.entries.get((name, instance.key))
                if entry is not None and entry.instance == instance:
                    still[(name, instance.key)] = entry
                else:
                    kept.append(instance)
            narrowed[name] = service if len(kept) == len(service.instances) else Service(name, tuple(kept))
        return narrowed, (self if len(still) == len(self.entries) else Rejections(still))

    def evicted(self, pairs: Iterable[tuple[str, str]]) -> dict[str, frozenset[tuple[str, str]]]:
        """The slots to free at once, per backend: a refused instance must not drain in its slot."""
        return by_backend(pairs, self.entries)

    def counts(self) -> Counter[str]:
        """Instances left out per service (``instances_skipped{reason="rejected"}``)."""
        return Counter(service for service, _ in self.entries)
