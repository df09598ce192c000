"""Handlers of the /v1/catalog/* reads and /v1/status/* (the catalog writes are in catalog_writes.py).

Every node is read, the agent's and the external ones. Indexes are Consul's: catalog/services the
services table, catalog/service/<name> its service index (store.service_index, without checks),
catalog/nodes the nodes table, catalog/node/<node> that node's index, or for an unknown node the
last node extinction (agent/consul/state/catalog.go nodeServices).

ACLs filter as Consul's aclFilter: catalog/services keeps the services the token may read
(filterServices), catalog/service/<name> instances whose node and service it may read
(filterServiceNodes), catalog/nodes the nodes it may read (filterNodes), catalog/node/<node> is null
without node:read on it and keeps the services the token may read (filterNodeServices).
catalog/datacenters and status/* need no ACL at all, not even a known token.
"""

from __future__ import annotations

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import Authorizer
from haproxy_sync.dev.devconsul.decode import _bad_request
from haproxy_sync.dev.devconsul.encode import (
    _CATALOG_SERVICE_FIELDS,
    _NODE_FIELDS,
    _catalog_service_json,
    _node_json,
    _service_json,
)
from haproxy_sync.dev.devconsul.filter import AGENT_SERVICE
from haproxy_sync.dev.devconsul.pipeline import Filtered, RequestPipeline, _acl_keep
from haproxy_sync.dev.devconsul.store import NODE_EXTINCTION, _node_table


class CatalogHandlers(RequestPipeline):
    """The catalog reads (services, service, nodes, node, datacenters) and status leader/peers."""

    async def _h_catalog_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        node_ok = self._node_meta_filter(request)

        def payload(authorizer: Authorizer) -> Filtered:
            services = [
                s
                for s in sorted(self._catalog.all_services(), key=lambda s: (s.name, s.service_id))
                if node_ok(self._catalog.node_of(s))
            ]
            visible, removed = _acl_keep(services, lambda s: authorizer.service_read(s.name))
            kept = options.keep(_catalog_service_json(s, self._catalog.node_of(s)) for s in visible)
            names: dict[str, list[str]] = {}
            for item in kept:
                tags = names.setdefault(item["ServiceName"], [])
                tags.extend(tag for tag in item["ServiceTags"] if tag not in tags)
            return Filtered({name: sorted(tags) for name, tags in names.items()}, removed)

        return await self._read(request, options, lambda: self._catalog.table_index("services"), payload)

    async def _h_catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_filter(request)

        def payload(authorizer: Authorizer) -> Filtered:
            visible, removed = self._service_instances(name, tags, node_ok, authorizer)
            entries = (_catalog_service_json(service, self._catalog.node_of(service)) for service in visible)
            return Filtered(options.keep(entries), removed)

        return await self._read(request, options, lambda: self._catalog.service_index(name, checks=False), payload)

    async def _h_catalog_nodes(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _NODE_FIELDS)
        node_ok = self._node_meta_filter(request)

        def payload(authorizer: Authorizer) -> Filtered:
            nodes = [node for node in self._catalog.nodes() if node_ok(node)]
            visible, removed = _acl_keep(nodes, lambda node: authorizer.node_read(node.name))
            return Filtered(options.keep(_node_json(node) for node in visible), removed)

        return await self._read(request, options, lambda: self._catalog.table_index("nodes"), payload)

    async def _h_catalog_node(self, request: web.Request) -> web.Response:
        """catalog/node/<node>: {"Node": ..., "Services": {id: ...}}, or null for a node that does not exist."""
        wanted = request.match_info["node"]
        if not wanted:
            raise _bad_request("Missing node name")
        options = self._read_options(request, AGENT_SERVICE)  # ?filter= applies to the NodeServices

        def index() -> int:
            node = self._catalog.find_node(wanted)
            if node is None:
                return self._catalog.table_index(NODE_EXTINCTION)
            return self._catalog.table_index(_node_table(node.name))

        def payload(authorizer: Authorizer) -> Filtered:
            node = self._catalog.find_node(wanted)
            if node is None:
                return Filtered(None)
            if not authorizer.node_read(node.name):
                return Filtered(None, removed=True)
            services = self._catalog.services_on(node.name)
            visible, removed = _acl_keep(services, lambda s: authorizer.service_read(s.name))
            kept = options.keep(_service_json(service) for service in visible)
            return Filtered({"Node": _node_json(node), "Services": {item["ID"]: item for item in kept}}, removed)

        return await self._read(request, options, index, payload)

    async def _h_catalog_datacenters(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._node.datacenter], faulted=True)

    async def _h_status_leader(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, f"{self._node.address}:8300", faulted=True)

    async def _h_status_peers(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [f"{self._node.address}:8300"], faulted=True)
