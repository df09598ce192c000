"""The guards' second look at Consul: one fresh, non-blocking read of what a guard holds.

The guards (``guard``) decide, with ``now`` passed in; this is their I/O: the re-read of a held
service or of the catalog of tagged services, bounded (15 s), and a failed read keeps the hold and
tries again after ``delay``. The daemon takes what comes back as it takes a watch's answer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import consul.aio

from haproxy_sync.catalog import Service, parse_health_entries
from haproxy_sync.consul import ConsulError, address_of, classify, documented, read_tagged_services
from haproxy_sync.guard import CatalogGuard, ServiceGuard
from haproxy_sync.rules import AddressPolicy

log = logging.getLogger(__name__)

#: The longest one re-read may take.
REREAD_DEADLINE = 15.0


async def reread_held(client: consul.aio.Consul, names: Iterable[str], queries: Mapping[str, Mapping[str, Any]],
                      policy: AddressPolicy, guard: ServiceGuard, delay: float) -> dict[str, Service]:
    """Read each held service again (with its watch's query); the services read, by name."""
    fresh: dict[str, Service] = {}
    for name in names:
        try:
            _, entries = await asyncio.wait_for(client.health.service(name, **queries.get(name, {})),
                                                REREAD_DEADLINE)
            service, _ = parse_health_entries(name, documented(entries, name), policy)
        except Exception as exc:  # a failed re-read keeps the hold and tries again
            log.warning("guard: re-reading %s failed (%s); still holding, next try in %gs", name,
                        classify(exc, name, address_of(client)), delay)
            guard.retry(name, time.monotonic(), delay)
            continue
        guard.reread(name)
        fresh[name] = service
    return fresh


async def reread_catalog(client: consul.aio.Consul, guard: CatalogGuard, tag: str, max_drop: float, delay: float,
                         count_error: Callable[[str], None]) -> frozenset[str] | None:
    """Read the tagged services again; the names once the guard confirmed them, None while it holds."""
    guard.due_at = None
    if guard.before is None:
        return None  # the hold ended meanwhile
    try:
        names, _ = await read_tagged_services(client, tag, REREAD_DEADLINE)
    except ConsulError as error:  # a failed re-read keeps the hold and tries again
        count_error(error.kind)
        log.warning("guard: re-reading the catalog failed (%s); still holding, next try in %gs", error, delay)
        guard.due_at = time.monotonic() + delay
        return None
    if guard.before is None:
        return None  # the watch's own answer ended the hold while this read was in flight: it is newer
    guard.confirm(names, max_drop)
    return names
