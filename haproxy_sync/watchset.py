"""The watches the daemon runs against Consul: one blocking health watch per routed service, and the
catalog watch that finds tagged services. The set is made to match what is wanted (``sync``), and
the daemon hears of answers through the callbacks it gave; it never touches a watch's task.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import consul.aio

from haproxy_sync import rules
from haproxy_sync.config import ConsulSettings, DiscoverySettings
from haproxy_sync.consul import CatalogWatch, ServiceWatch, WatchUpdate

log = logging.getLogger(__name__)

#: How much each watch started in a batch adds to the spread of first reads (see ``consul.start_spread``).
START_SPREAD_EACH = 0.00025


@dataclass(frozen=True)
class Stopped:
    """Watches ``sync`` stopped: ``gone`` are no longer wanted at all, the rest restart with a new query."""

    names: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()


class WatchSet:
    """Every running watch and its task."""

    def __init__(
        self, client: Callable[[], consul.aio.Consul], on_update: Callable[[WatchUpdate], None],
        on_catalog: Callable[[frozenset[str], float], None], on_error: Callable[[str, str], None],
        first_reads: asyncio.Semaphore,
    ) -> None:
        self._client = client  # asked when a watch starts: the client lives on the running loop
        self._on_update, self._on_catalog, self._on_error = on_update, on_catalog, on_error
        self._first_reads = first_reads
        self._services: dict[str, tuple[ServiceWatch, asyncio.Task[None]]] = {}
        self._catalog: tuple[CatalogWatch, asyncio.Task[None]] | None = None

    # --- what runs ---

    @property
    def catalog(self) -> CatalogWatch | None:
        """The watch of tagged services, while discovery is on."""
        return self._catalog[0] if self._catalog is not None else None

    def services(self) -> Iterator[tuple[str, ServiceWatch]]:
        """The service watches, by name."""
        return ((name, watch) for name, (watch, _) in sorted(self._services.items()))

    def get(self, name: str) -> ServiceWatch | None:
        entry = self._services.get(name)
        return entry[0] if entry is not None else None

    def __contains__(self, name: str) -> bool:
        return name in self._services

    def names(self) -> frozenset[str]:
        return frozenset(self._services)

    # --- making it match what is wanted ---

    def start_catalog(self, discovery: DiscoverySettings, settings: ConsulSettings) -> None:
        """(Re)start the watch of tagged services, or stop it when discovery is off."""
        self.stop_catalog()
        if not discovery.enabled:
            return
        watch = CatalogWatch(self._client(), discovery.tag, self._on_catalog, wait=settings.wait,
                             backoff_max=settings.backoff_max, on_error=self._on_error)
        self._catalog = (watch, asyncio.create_task(watch.run(), name="watch:catalog"))

    def stop_catalog(self) -> None:
        if self._catalog is not None:
            self._catalog[1].cancel()
            self._catalog = None

    def sync(self, wanted: Mapping[str, Mapping[str, str]], policy: rules.AddressPolicy,
             settings: ConsulSettings) -> Stopped:
        """One health watch per wanted service (name -> query); a watch whose query or address policy
        changed restarts.

        Watches started together (a cold start with hundreds of tagged services, a burst of new
        branches) spread their first reads over up to ``consul.start_spread`` (0.25 ms each), so Consul
        does not get them all in the same instant.
        """
        stopped, gone = [], []
        for name in list(self._services):
            watch = self._services[name][0]
            if name not in wanted or watch.query != wanted[name] or watch.policy != policy:
                self._services.pop(name)[1].cancel()
                stopped.append(name)
                if name not in wanted:
                    gone.append(name)
        new = sorted(wanted.keys() - self._services.keys())
        spread = min(settings.start_spread, START_SPREAD_EACH * len(new)) if len(new) > 1 else 0.0
        if len(wanted) > settings.max_connections:
            log.warning("watching %d services over at most %d connections (consul.max_connections): the "
                        "rest queue, and their changes can wait up to consul.wait", len(wanted),
                        settings.max_connections)
        for name in new:
            query = wanted[name]
            watch = ServiceWatch(
                self._client(), name, self._on_update,
                tag=query.get("tag", ""), filter_expression=query.get("filter_expr", ""), policy=policy,
                wait=settings.wait, backoff_max=settings.backoff_max, on_error=self._on_error,
                start_delay=random.uniform(0, spread), gate=self._first_reads,
            )
            self._services[name] = (watch, asyncio.create_task(watch.run(), name=f"watch:{name}"))
        return Stopped(tuple(stopped), tuple(gone))

    async def close(self) -> None:
        """Cancel every watch and wait for them to end."""
        tasks = [task for _, task in self._services.values()]
        if self._catalog is not None:
            tasks.append(self._catalog[1])
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._services.clear()
        self._catalog = None
