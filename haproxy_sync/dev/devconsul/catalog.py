"""Handlers of /v1/catalog/* and /v1/status/*.

ACLs filter as Consul's aclFilter: catalog/services keeps the services the token may read
(filterServices), catalog/service/<name> instances whose node and service it may read
(filterServiceNodes), catalog/nodes the nodes it may read (filterNodes). catalog/datacenters and
status/* need no ACL at all, not even a known token.
"""

from __future__ import annotations

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import Authorizer
from haproxy_sync.dev.devconsul.encode import _CATALOG_SERVICE_FIELDS, _NODE_FIELDS, _catalog_service_json, _node_json
from haproxy_sync.dev.devconsul.http import _has_tags
from haproxy_sync.dev.devconsul.pipeline import Filtered, RequestPipeline, _acl_keep
from haproxy_sync.dev.devconsul.store import _catalog_table


class CatalogHandlers(RequestPipeline):
    """The catalog endpoints (services, service, nodes, datacenters) and status leader/peers."""

    async def _h_catalog_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        node_ok = self._node_meta_matches(request)

        def payload(authorizer: Authorizer) -> Filtered:
            services = sorted(self._catalog.services.values(), key=lambda s: (s.name, s.service_id))
            visible, removed = _acl_keep(services if node_ok else [], lambda s: authorizer.service_read(s.name))
            kept = options.keep(_catalog_service_json(s, self._node) for s in visible)
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
        node_ok = self._node_meta_matches(request)

        def payload(authorizer: Authorizer) -> Filtered:
            instances = [s for s in self._catalog.instances(name) if _has_tags(s, tags)] if node_ok else []
            visible, removed = _acl_keep(
                instances, lambda s: authorizer.node_read(self._node.name) and authorizer.service_read(s.name)
            )
            return Filtered(options.keep(_catalog_service_json(service, self._node) for service in visible), removed)

        return await self._read(request, options, lambda: self._catalog.table_index(_catalog_table(name)), payload)

    async def _h_catalog_nodes(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _NODE_FIELDS)
        node_ok = self._node_meta_matches(request)

        def payload(authorizer: Authorizer) -> Filtered:
            nodes, removed = _acl_keep([self._node] if node_ok else [], lambda node: authorizer.node_read(node.name))
            return Filtered(options.keep(_node_json(node) for node in nodes), removed)

        return await self._read(request, options, lambda: self._catalog.table_index("nodes"), payload)

    async def _h_catalog_datacenters(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._node.datacenter], faulted=True)

    async def _h_status_leader(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, f"{self._node.address}:8300", faulted=True)

    async def _h_status_peers(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [f"{self._node.address}:8300"], faulted=True)
