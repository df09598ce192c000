"""The server: `DevConsul`, composed of the mixins of each concern, with its lifecycle and routes."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import random
import socket
import ssl
import uuid
import weakref

import aiohttp
from aiohttp import web

from haproxy_sync.dev.devconsul.acl import AclConfig
from haproxy_sync.dev.devconsul.agent import AgentHandlers
from haproxy_sync.dev.devconsul.agentsync import DEFAULT_CHECK_UPDATE_INTERVAL
from haproxy_sync.dev.devconsul.catalog import CatalogHandlers
from haproxy_sync.dev.devconsul.catalog_writes import CatalogWrites
from haproxy_sync.dev.devconsul.checks import _Runner
from haproxy_sync.dev.devconsul.control import ControlHandlers
from haproxy_sync.dev.devconsul.faults import _NO_FAULT, Fault
from haproxy_sync.dev.devconsul.health import HealthHandlers
from haproxy_sync.dev.devconsul.kv import KVHandlers
from haproxy_sync.dev.devconsul.records import (
    CONSUL_VERSION,
    PASSING,
    SERF_CHECK_ID,
    Check,
    CheckDefinition,
    Service,
    _kv,
    _log,
    agent_node,
)
from haproxy_sync.dev.devconsul.store import _Catalog
from haproxy_sync.dev.devconsul.tokens import AclHandlers


def _go_time_now() -> str:
    """Now as Go's time.Time marshals to JSON (RFC 3339 with the local offset, Z for UTC)."""
    text = datetime.datetime.now(datetime.UTC).astimezone().isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z" if text.endswith("+00:00") else text


class DevConsul(
    AgentHandlers, HealthHandlers, CatalogHandlers, CatalogWrites, KVHandlers, AclHandlers, ControlHandlers
):
    """A Consul agent's HTTP API on a real port: a dev agent (its own server) with an in-memory catalog.

    Use it from asyncio code (``await DevConsul().start()``); synchronous code uses
    `DevConsulThread`. All methods must be called from the event loop that started it.

    Endpoints: agent service register/deregister/maintenance, agent check register/deregister/
    pass/warn/fail/update, agent node maintenance, agent services/service/checks/self/members,
    health service/checks/state/node, catalog services/service/nodes/node/datacenters and
    register/deregister (external nodes, catalog_writes.py), kv (GET with recurse/keys/separator/raw,
    PUT with flags/cas, DELETE with recurse/cas; kv.py), status leader/peers, acl token/self, the
    fault switch at /v1/devconsul/fault (GET, PUT, DELETE), and bulk writes for benchmarks and tests at
    /v1/devconsul/bulk/register, /v1/devconsul/bulk/deregister, /v1/devconsul/bulk/weights (PUT; one
    index each) and /v1/devconsul/bulk/weights-over-time (PUT; several weight writes on a timer).

    Check results reach the catalog as a Consul agent syncs them (agentsync.py): a status change at
    once, an output-only change after ``check_update_interval`` (5 minutes unless given; 0: at once),
    while /v1/agent/checks shows the agent's own state at once. Indexes move as Consul's state store
    moves them (store.py), including a service without instances answering the last extinction index.

    Faults (see FAULTS) hit /v1/health/*, /v1/catalog/* and /v1/status/*; agent and KV endpoints keep
    working except under "refuse" and "reset", and the fault switch itself is only out of reach
    under "refuse" (use clear_fault()). Error faults also end blocking queries already pending.

    Where it deliberately differs from Consul: the "consul" service is in the catalog (as on a
    server agent) with only serfHealth; HTTP/TCP checks run at once after registration instead of
    after a random stagger; DeregisterCriticalServiceAfter has no 1-minute floor; script, gRPC, H2PING,
    UDP, OSService and alias checks are refused with 400 (scripts with Consul's own 500); ?filter=
    follows go-bexpr v0.1.2 (see filter.KNOWN_DIFFERENCES); there are no sessions (so ``?acquire=`` on a
    key is 500 'invalid session', ``?release=`` false, LockIndex always 0), no KV transactions (/v1/txn),
    no Connect, no hash-based blocking on agent endpoints; KV tombstones are never reaped (Consul reaps
    them after tombstone_ttl, after which a prefix's list index may fall back to the table index); KV
    keys are not checked for the characters newer Consul versions refuse; catalog register and
    deregister may not replace or remove what the agent itself owns (its node, services and checks,
    serfHealth, the "consul" service: 400; Consul would let them and the agent's anti-entropy would
    restore them), and leave the agent node's own fields as they are; a node ID given to catalog
    register is not checked against other nodes' IDs; agent reads also carry X-Consul-Index (the global
    index).

    ACLs (acl.py) are off unless ``acl=AclConfig(...)`` (or the ``token=`` shorthand: that secret a
    management token, default policy deny, the anonymous token nothing) switches on Consul's: reads
    filtered to what the token may see, 403 only for an unknown token or a write without permission
    (and for a read of one KV key, as Consul). Where that differs from Consul: rules are service,
    node, agent, key and operator only (no session, event, query, mesh, acl rules, no roles, service or
    node identities; acl.enable_key_list_policy is off, as by default); tokens are fixed at start (no
    /v1/acl/token writes); devconsul's control endpoints (/v1/devconsul/*) need operator:read (GET) or
    operator:write.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        acl: AclConfig | None = None,
        datacenter: str = "dc1",
        node: str = "devconsul",
        node_address: str = "127.0.0.1",
        ssl_context: ssl.SSLContext | None = None,
        restored_from: DevConsul | None = None,
        check_update_interval: float = DEFAULT_CHECK_UPDATE_INTERVAL,
        unix_socket: str | None = None,
    ) -> None:
        """``unix_socket``: serve HTTP on a unix socket at this path instead of host:port, as an agent with
        ``addresses { http = "unix:///path" }`` does (``url`` is then ``unix:///path``).

        ``restored_from``: a stopped DevConsul whose catalog this one takes over (its node, services,
        checks and indexes; ``node``, ``datacenter`` and ``node_address`` are then ignored).

        Why: a Consul agent that restarts finds its data dir: the same catalog, an index that goes on
        from where it was, never backwards. A client must survive exactly that (the port refusing
        connections for a while, then the same data), which a fresh catalog would turn into another
        event (everything gone, indexes back to the start). The catalog object itself is handed over,
        nothing is copied; check runners and reapers start again from it, as an agent's do.

        ``acl``: the ACL system (None: ACLs disabled). ``token``: a shorthand for
        ``acl=AclConfig.management_only(token)``; giving both is an error.

        ``check_update_interval``: seconds, Consul's check_update_interval (default 5 minutes): a check
        result that changes only the output reaches the catalog after half of it plus up to all of it
        (agentsync.py); 0 writes every result at once, as Consul does with 0.
        """
        if token and acl is not None:
            raise ValueError("devconsul: give either token= (a management token) or acl=, not both")
        if check_update_interval < 0:
            raise ValueError("devconsul: check_update_interval must be >= 0")
        self._check_update_interval = float(check_update_interval)
        self._deferred: dict[str, asyncio.TimerHandle] = {}
        self.host = host
        self.port = port
        self.unix_socket = unix_socket
        self._acl = AclConfig.management_only(token) if token else acl
        self._acl_created = restored_from._acl_created if restored_from is not None else _go_time_now()
        self._ssl_context = ssl_context
        if restored_from is not None:
            if restored_from._runner is not None and not restored_from._stopping:
                raise RuntimeError("devconsul: restored_from must be a stopped DevConsul")
            self._node = restored_from._node
            self._catalog = restored_from._catalog
            self._catalog._on_change = self._after_change  # its writes now wake this server's queries
        else:
            self._node = agent_node(
                node, str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{node}.{datacenter}.devconsul")), node_address, datacenter
            )
            self._catalog = _Catalog(self._node, self._after_change)
        self._fault: Fault = _NO_FAULT
        self._highest_reported = restored_from._highest_reported if restored_from is not None else 0
        self._random = random.Random()
        self._wakeup = asyncio.Event()
        self._runners: dict[str, _Runner] = {}
        self._reapers: dict[str, asyncio.TimerHandle] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._listener: socket.socket | None = None
        self._accepting: dict[asyncio.Task[None], socket.socket] = {}
        self._transports: weakref.WeakSet[asyncio.BaseTransport] = weakref.WeakSet()
        self._session: aiohttp.ClientSession | None = None
        self._stopping = False
        if restored_from is None:
            self._bootstrap()

    # ---- lifecycle -------------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        """Register what a fresh server agent has: its serfHealth check and the "consul" service."""
        self._catalog.write(
            checks=[
                Check(
                    SERF_CHECK_ID,
                    "Serf Health Status",
                    PASSING,
                    output="Agent alive and reachable",
                    definition=CheckDefinition("serf"),
                )
            ]
        )
        self._catalog.write(
            services=[
                Service(
                    "consul",
                    "consul",
                    port=8300,
                    local=False,
                    meta=(
                        ("non_voter", "false"),
                        ("raft_version", "3"),
                        ("read_replica", "false"),
                        ("serf_protocol_current", "2"),
                        ("serf_protocol_max", "5"),
                        ("serf_protocol_min", "1"),
                        ("version", CONSUL_VERSION),
                    ),
                )
            ]
        )

    async def start(self) -> None:
        """Bind and serve. Afterwards `port` is the real port (port=0 picks a free one)."""
        if self._runner is not None:
            raise RuntimeError("devconsul already started")
        self._loop = asyncio.get_running_loop()
        app = web.Application(middlewares=[self._middleware], client_max_size=16 * 1024 * 1024)
        app.add_routes(self._routes())
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=0.25)
        await runner.setup()
        try:
            sock = self._bind()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        if not self.unix_socket:
            self.port = sock.getsockname()[1]
        self._listen(sock)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True, limit=0))
        self._sync_all_deferred()  # a restarted agent's first full sync sends what it kept locally
        self._reconcile()
        _log.info(
            "devconsul: started %s",
            _kv(
                url=self.url,
                datacenter=self._node.datacenter,
                node=self._node.name,
                acl="off" if self._acl is None else f"default-{self._acl.default_policy}",
                acl_tokens=",".join(token.name for token in self._acl.tokens) if self._acl else "",
            ),
        )

    async def stop(self) -> None:
        """Stop at once: abort every connection (pending blocking queries too) and every check."""
        if self._runner is None or self._stopping:
            return
        self._stopping = True
        self._notify()
        self._stop_listening(spare=None)
        if self.unix_socket:  # as Go's UnixListener.Close: a stopped agent's socket path is gone (ENOENT)
            with contextlib.suppress(OSError):
                os.unlink(self.unix_socket)
        await self._close_accepting()
        tasks = [runner.task for runner in self._runners.values() if runner.task is not None]
        for runner in self._runners.values():
            runner.cancel()
        for handle in self._reapers.values():
            handle.cancel()
        self._stop_deferred()
        self._runners.clear()
        self._reapers.clear()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._runner.cleanup()
        # aiohttp's shutdown() clears its list after closing what it held, so a connection whose
        # connection_made ran meanwhile would be left open (and leak) when the loop ends.
        self._reset_connections(spare=None)
        if self._session is not None:
            await self._session.close()
        _log.info("devconsul: stopped %s", _kv(url=self.url))

    async def __aenter__(self) -> DevConsul:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def address(self) -> str:
        """host:port (or unix:///path), as CONSUL_HTTP_ADDR takes it."""
        if self.unix_socket:
            return f"unix://{self.unix_socket}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        if self.unix_socket:
            return self.address
        return f"{'https' if self._ssl_context else 'http'}://{self.address}"

    @property
    def index(self) -> int:
        """The current global (raft-like) index."""
        return self._catalog.index

    # ---- routes ----------------------------------------------------------------------------------

    def _routes(self) -> list[web.RouteDef]:
        return [
            web.put("/v1/agent/service/register", self._h_service_register),
            web.put("/v1/agent/service/deregister/{id:.+}", self._h_service_deregister),
            web.put("/v1/agent/service/maintenance/{id:.+}", self._h_service_maintenance),
            web.get("/v1/agent/service/{id:(?!register$|deregister/|maintenance/).+}", self._h_agent_service),
            web.put("/v1/agent/maintenance", self._h_node_maintenance),
            web.put("/v1/agent/check/register", self._h_check_register),
            web.put("/v1/agent/check/deregister/{id:.+}", self._h_check_deregister),
            web.put("/v1/agent/check/pass/{id:.+}", self._h_check_pass),
            web.put("/v1/agent/check/warn/{id:.+}", self._h_check_warn),
            web.put("/v1/agent/check/fail/{id:.+}", self._h_check_fail),
            web.put("/v1/agent/check/update/{id:.+}", self._h_check_update),
            web.get("/v1/agent/services", self._h_agent_services),
            web.get("/v1/agent/checks", self._h_agent_checks),
            web.get("/v1/agent/self", self._h_agent_self),
            web.get("/v1/agent/members", self._h_agent_members),
            web.get("/v1/health/service/{name:.+}", self._h_health_service),
            web.get("/v1/health/checks/{name:.+}", self._h_health_checks),
            web.get("/v1/health/state/{state}", self._h_health_state),
            web.get("/v1/health/node/{node:.+}", self._h_health_node),
            web.get("/v1/catalog/services", self._h_catalog_services),
            web.get("/v1/catalog/service/{name:.+}", self._h_catalog_service),
            web.get("/v1/catalog/nodes", self._h_catalog_nodes),
            web.get("/v1/catalog/node/{node:.*}", self._h_catalog_node),
            web.put("/v1/catalog/register", self._h_catalog_register),
            web.put("/v1/catalog/deregister", self._h_catalog_deregister),
            web.get("/v1/catalog/datacenters", self._h_catalog_datacenters),
            web.get("/v1/status/leader", self._h_status_leader),
            web.get("/v1/status/peers", self._h_status_peers),
            web.get("/v1/kv/{key:.*}", self._h_kv_get),
            web.put("/v1/kv/{key:.*}", self._h_kv_put),
            web.delete("/v1/kv/{key:.*}", self._h_kv_delete),
            web.get("/v1/acl/token/self", self._h_acl_token_self),
            web.get("/v1/devconsul/fault", self._h_fault_get),
            web.put("/v1/devconsul/fault", self._h_fault_put),
            web.delete("/v1/devconsul/fault", self._h_fault_delete),
            web.put("/v1/devconsul/bulk/register", self._h_bulk_register),
            web.put("/v1/devconsul/bulk/deregister", self._h_bulk_deregister),
            web.put("/v1/devconsul/bulk/weights", self._h_bulk_weights),
            web.put("/v1/devconsul/bulk/weights-over-time", self._h_bulk_weights_over_time),
        ]
