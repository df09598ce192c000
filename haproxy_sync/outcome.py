"""What one apply cycle did, and what HAProxy runs after the last good one: the daemon's two records.

Both are immutable and replaced whole: an :class:`Outcome` per cycle (logged as one sentence, counted
in the metrics), a :class:`RunningState` per good apply (the baseline the next cycle plans from).
"""

from __future__ import annotations

from dataclasses import dataclass

from haproxy_sync.apply import ReloadReport
from haproxy_sync.catalog import Snapshot
from haproxy_sync.pipeline import Baseline
from haproxy_sync.plan import BackendSlots
from haproxy_sync.reasons import ApplyPath, FailureStage, ReloadFailure, ReloadKind
from haproxy_sync.routing import Routing


@dataclass(frozen=True)
class Outcome:
    """What one apply cycle did: ``ok`` false means it should be retried after a backoff."""

    ok: bool
    sentence: str
    deferred: bool = False  # nothing failed: the reload budget moved it to a later cycle
    path: ApplyPath = ApplyPath.NONE
    reason: ReloadKind | None = None  # why a reload was planned (also when HAProxy already ran the file)
    stage: FailureStage | None = None  # where it failed
    failure: ReloadFailure | None = None  # how a reload failed (a missing master is logged once per episode)
    commands: int = 0
    reload: ReloadReport | None = None


@dataclass(frozen=True)
class RunningState:
    """What HAProxy runs after the last good apply: the data, its slot tables and routes, and the text."""

    snapshot: Snapshot
    tables: dict[str, BackendSlots]
    routing: Routing
    text: str  # the config HAProxy runs, possibly not yet on disk (persist writes it behind)
    confirmed: bool = True  # False once a failure left it in doubt: the next apply reloads

    @property
    def baseline(self) -> Baseline:
        return Baseline(self.tables, self.routing.map_entries, self.text, self.confirmed)
