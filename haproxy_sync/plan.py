"""Pure planning: what changed between the snapshot HAProxy runs and the new one.

Today every change that reaches the config goes through a validated reload; this module says what
changed, so that each apply can log one sentence (``cabify: 7 servers (+1 -0 ~0)``) and so that the
runtime-API fast path has one place to grow into.
"""

from __future__ import annotations

from dataclasses import dataclass

from haproxy_sync.catalog import Service, Snapshot


@dataclass(frozen=True)
class ServiceDiff:
    """Instances added, removed, and changed (address, port, status, weights, tags or meta)."""

    name: str
    total: int
    added: int
    removed: int
    changed: int

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
    changed = sum(1 for key in after.keys() & before.keys() if after[key] != before[key])
    return ServiceDiff(new.name, len(new.instances), len(added), len(removed), changed)


def diff_snapshots(old: Snapshot | None, new: Snapshot) -> tuple[ServiceDiff, ...]:
    """One diff per service of ``new``; with no previous snapshot every instance counts as added."""
    previous = old or Snapshot()
    return tuple(diff_service(previous.get(svc.name), svc) for svc in new.services)


def describe(diffs: tuple[ServiceDiff, ...]) -> str:
    """The changed services first; unchanged ones only when nothing changed at all."""
    changed = [d.sentence() for d in diffs if not d.empty]
    return "; ".join(changed or [d.sentence() for d in diffs]) or "no services"
