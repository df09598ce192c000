"""Flap damping (``sync.hold_down``): an instance whose health flips keeps its applied status until
the new one has been seen for ``hold_down``, so a check that flaps every few seconds does not make
HAProxy flap with it. Membership (instances coming or going) is never held.

``damp`` is the pure rule; :class:`HoldDown` is the daemon's one object for it, owning the memory of
what was seen since when and the deadline the loop wakes for. ``now`` is always passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from haproxy_sync.catalog import Service, Snapshot, Status


@dataclass(frozen=True)
class Seen:
    """A status seen for an instance, and since when: the memory of flap damping."""

    status: Status
    since: float


def damp(
    applied: Snapshot | None, observed: Snapshot, history: Mapping[tuple[str, str], Seen], now: float, hold_down: float
) -> tuple[Snapshot, dict[tuple[str, str], Seen], float | None]:
    """Hold each instance at its applied status until a new status was seen for ``hold_down``.

    Returns the snapshot to apply, the updated history, and when the earliest held change matures.
    New instances and removals are not held: damping is about health flapping, not membership.
    """
    if hold_down <= 0 or applied is None:
        return observed, {}, None
    new_history: dict[tuple[str, str], Seen] = {}
    services = []
    deadline: float | None = None
    for service in observed.services:
        before = {inst.key: inst for inst in applied.get(service.name).instances}
        instances = []
        for inst in service.instances:
            old = before.get(inst.key)
            if old is None or old.status is inst.status:
                instances.append(inst)
                continue
            seen = history.get(inst.key)
            since = seen.since if seen is not None and seen.status is inst.status else now
            new_history[inst.key] = Seen(inst.status, since)
            if now - since >= hold_down:
                instances.append(inst)
            else:
                instances.append(replace(inst, status=old.status))
                deadline = min(deadline or since + hold_down, since + hold_down)
        services.append(Service(service.name, tuple(instances)))
    return Snapshot.of(services), new_history, deadline


class HoldDown:
    """The held status changes of one daemon, and when the earliest of them matures."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Seen] = {}
        self.due_at: float | None = None

    @property
    def held(self) -> int:
        """How many status changes are being held back now."""
        return len(self._seen) if self.due_at is not None else 0

    def judge(self, applied: Snapshot | None, observed: Snapshot, now: float, hold_down: float) -> Snapshot:
        """The snapshot to apply: ``observed`` with every immature status change held at its applied one."""
        snapshot, self._seen, self.due_at = damp(applied, observed, self._seen, now, hold_down)
        return snapshot
