"""Handlers of /v1/catalog/* and /v1/status/*."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.encode import _CATALOG_SERVICE_FIELDS, _NODE_FIELDS, _catalog_service_json, _node_json
from haproxy_sync.dev.devconsul.http import _has_tags
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline
from haproxy_sync.dev.devconsul.store import _catalog_table


class CatalogHandlers(RequestPipeline):
    """The catalog endpoints (services, service, nodes, datacenters) and status leader/peers."""

    async def _h_catalog_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        node_ok = self._node_meta_matches(request)

        def payload() -> dict[str, list[str]]:
            services = sorted(self._catalog.services.values(), key=lambda s: (s.name, s.service_id))
            kept = options.keep(_catalog_service_json(s, self._node) for s in services) if node_ok else []
            names: dict[str, list[str]] = {}
            for item in kept:
                tags = names.setdefault(item["ServiceName"], [])
                tags.extend(tag for tag in item["ServiceTags"] if tag not in tags)
            return {name: sorted(tags) for name, tags in names.items()}

        return await self._read(request, options, lambda: self._catalog.table_index("services"), payload)

    async def _h_catalog_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CATALOG_SERVICE_FIELDS)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_matches(request)

        def payload() -> list[dict[str, Any]]:
            instances = [s for s in self._catalog.instances(name) if _has_tags(s, tags)] if node_ok else []
            return options.keep(_catalog_service_json(service, self._node) for service in instances)

        return await self._read(request, options, lambda: self._catalog.table_index(_catalog_table(name)), payload)

    async def _h_catalog_nodes(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _NODE_FIELDS)
        node_ok = self._node_meta_matches(request)
        return await self._read(
            request,
            options,
            lambda: self._catalog.table_index("nodes"),
            lambda: options.keep([_node_json(self._node)] if node_ok else []),
        )

    async def _h_catalog_datacenters(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._node.datacenter], faulted=True)

    async def _h_status_leader(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, f"{self._node.address}:8300", faulted=True)

    async def _h_status_peers(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [f"{self._node.address}:8300"], faulted=True)
