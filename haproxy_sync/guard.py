"""The empty-backend guards: a big drop is held until a second read of Consul confirms it.

An agent restart or a partial answer can make a service (or the whole set of tagged services) look
gone for a moment; applying that would empty backends and routes that are fine. Each guard holds
the last applied value, asks for one fresh read after ``delay``, and then applies what Consul says:
the drop if the second read confirms it, the recovery if not. Each guard owns its state and its
deadline; ``now`` is passed in, and what happened is told through ``count(service, outcome)`` (the
``guard_total`` metric) and one log line per decision.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from haproxy_sync import logs
from haproxy_sync.catalog import Snapshot
from haproxy_sync.config import ServiceSettings
from haproxy_sync.plan import big_catalog_drop, big_drop

log = logging.getLogger(__name__)

Count = Callable[[str, str], None]  # (service or "catalog", outcome: held | applied | recovered)


class ServiceGuard:
    """Per service: a drop of healthy servers beyond ``min_servers`` / ``max_drop`` waits for a re-read."""

    def __init__(self, count: Count) -> None:
        self._count = count
        self._due: dict[str, float] = {}  # held services, and when to read them again
        self._reread: set[str] = set()  # re-read done: the next apply takes what Consul says

    @property
    def held(self) -> list[str]:
        return sorted(self._due)

    def deadlines(self) -> list[float]:
        return list(self._due.values())

    def due(self, now: float) -> list[str]:
        """The held services whose re-read is due."""
        return [name for name, at in self._due.items() if at <= now]

    def judge(self, applied: Snapshot | None, snapshot: Snapshot, services: Iterable[ServiceSettings], now: float,
              delay: float) -> Snapshot:
        """``snapshot`` with every service whose drop is not yet confirmed put back to what was applied."""
        if applied is None:
            return snapshot
        kept = []
        for cfg in services:
            old, new = applied.get(cfg.name), snapshot.get(cfg.name)
            reason = big_drop(old, new, cfg.min_servers, cfg.max_drop) if cfg.guard else None
            reread = cfg.name in self._reread
            self._reread.discard(cfg.name)
            if reason is None:
                if reread or self._due.pop(cfg.name, None) is not None:
                    self._count(cfg.name, "recovered")
                    log.info("guard: %s is back to %d healthy servers; the drop was transient", cfg.name,
                             sum(1 for i in new.instances if i.routable),
                             extra=logs.event("guard.recovered", service=cfg.name))
                kept.append(new)
            elif reread:
                self._count(cfg.name, "applied")
                log.warning("guard: a second read confirms %s %s; applying it", cfg.name, reason,
                            extra=logs.event("guard.applied", service=cfg.name, reason=str(reason)))
                kept.append(new)
            else:
                if cfg.name not in self._due:
                    self._due[cfg.name] = now + delay
                    self._count(cfg.name, "held")
                    log.warning("guard: %s %s; holding its last applied servers and reading Consul again in %gs",
                                cfg.name, reason, delay,
                                extra=logs.event("guard.held", service=cfg.name, reason=str(reason), delay_s=delay))
                kept.append(old)
        return Snapshot.of(kept)

    def reread(self, name: str) -> None:
        """A fresh read of ``name`` arrived: the next judgement applies it, drop or not."""
        self._due.pop(name, None)
        self._reread.add(name)

    def retry(self, name: str, now: float, delay: float) -> None:
        """The re-read failed: keep holding, try again after ``delay``."""
        self._due[name] = now + delay

    def forget(self, name: str) -> None:
        """``name`` is no longer watched: nothing to re-read."""
        self._due.pop(name, None)
        self._reread.discard(name)


class CatalogGuard:
    """The same one level up: many tagged services gone at once are kept (with their watches, routes
    and backends) until a second read of the catalog confirms it.

    Every answer while held is judged against the set from before the hold, so services added
    meanwhile do not dilute the drop, and a partial return is told apart from a full one.
    """

    def __init__(self, count: Count) -> None:
        self._count = count
        self.before: frozenset[str] | None = None  # while held: the tagged services before the drop
        self.due_at: float | None = None  # when to read the catalog again
        self._confirmed = False  # the second read confirmed the drop: take the next answer as is

    def reset(self) -> None:
        self.before, self.due_at, self._confirmed = None, None, False

    def judge(self, current: frozenset[str], names: frozenset[str], applied_once: bool, max_drop: float,
              now: float, delay: float) -> frozenset[str]:
        """The tagged services to route: ``names``, or with the held ones kept while a drop is unconfirmed."""
        if self._confirmed:
            self._confirmed = False
            return names
        if not applied_once:
            return names
        before = self.before if self.before is not None else current
        reason = big_catalog_drop(before, names, max_drop)
        if reason is None:
            if self.before is not None:
                self._release(before, names)
            return names
        if self.before is None:
            self.before, self.due_at = before, now + delay
            self._count("catalog", "held")
            log.warning("guard: catalog %s; keeping their routes and reading the catalog again in %gs", reason, delay,
                        extra=logs.event("guard.held", service="catalog", reason=str(reason), delay_s=delay))
        return names | before

    def _release(self, before: frozenset[str], names: frozenset[str]) -> None:
        self.before, self.due_at = None, None
        missing = before - names
        if missing:
            self._count("catalog", "applied")
            log.warning("guard: the catalog drop shrank to %d of %d tagged services (%s); under max_drop, applying it",
                        len(missing), len(before), ",".join(sorted(missing)[:10]))
        else:
            self._count("catalog", "recovered")
            log.info("guard: the catalog lists all %d held services again; the drop was transient", len(before))

    def confirm(self, names: frozenset[str], max_drop: float) -> None:
        """The second read's answer: a drop it still shows is applied with the next answer as it is."""
        assert self.before is not None
        reason = big_catalog_drop(self.before, names, max_drop)
        if reason is not None:
            self.before, self._confirmed = None, True
            self._count("catalog", "applied")
            log.warning("guard: a second read confirms catalog %s; applying it", reason,
                        extra=logs.event("guard.applied", service="catalog", reason=str(reason)))
