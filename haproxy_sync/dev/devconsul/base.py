"""What every part of the server relies on: the state of one DevConsul, and waking its blocking queries.

`DevConsul` (server.py) is composed of mixins, one per concern: the listener and fault switch
(listening.py), the check runners (checks.py) and their sync to the catalog (agentsync.py), agent
writes (writes.py), the request pipeline (pipeline.py) and the handlers of each endpoint group
(agent.py, health.py, catalog.py, catalog_writes.py, kv.py, tokens.py, control.py).
Each mixin derives from the ones whose methods it calls, and all of them from `ServerBase`, which
declares the state they share; `DevConsul.__init__` sets it.
"""

from __future__ import annotations

import asyncio

from haproxy_sync.dev.devconsul.acl import AclConfig
from haproxy_sync.dev.devconsul.faults import Fault
from haproxy_sync.dev.devconsul.records import Node
from haproxy_sync.dev.devconsul.store import _Catalog


class ServerBase:
    """The state the parts of a DevConsul share (set by `DevConsul.__init__`), and `_notify`."""

    host: str
    port: int
    unix_socket: str | None  # a path: HTTP on a unix socket (CONSUL_HTTP_ADDR=unix://...) instead of host:port
    _acl: AclConfig | None  # None: ACLs disabled (every request may do everything)
    _acl_created: str  # the tokens' CreateTime, in Go's RFC 3339 form
    _node: Node
    _catalog: _Catalog
    _fault: Fault
    _highest_reported: int
    _wakeup: asyncio.Event
    _loop: asyncio.AbstractEventLoop | None
    _stopping: bool

    def _notify(self) -> None:
        """Wake every blocking query; each re-checks its own index (one event per generation)."""
        wakeup, self._wakeup = self._wakeup, asyncio.Event()
        wakeup.set()
