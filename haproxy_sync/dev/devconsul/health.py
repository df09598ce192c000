"""Handlers of /v1/health/*: service entries with their checks, checks by service, state and node."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.decode import _bad_request
from haproxy_sync.dev.devconsul.encode import _CHECK_FIELDS, _HEALTH_FIELDS, _check_json, _node_json, _service_json
from haproxy_sync.dev.devconsul.http import _all_passing, _has_tags, _passing_param
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline
from haproxy_sync.dev.devconsul.records import _STATUSES, Service


class HealthHandlers(RequestPipeline):
    """The health endpoints, blocking on the index of what each answer depends on."""

    def _health_entry(self, service: Service) -> dict[str, Any]:
        checks = self._catalog.checks_of("") + self._catalog.checks_of(service.service_id)
        return {
            "Node": _node_json(self._node),
            "Service": _service_json(service),
            "Checks": [_check_json(check, self._node) for check in checks],
        }

    async def _h_health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _HEALTH_FIELDS)
        passing = _passing_param(request)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_matches(request)

        def payload() -> list[dict[str, Any]]:
            instances = [s for s in self._catalog.instances(name) if _has_tags(s, tags)] if node_ok else []
            entries = [self._health_entry(service) for service in instances]
            return options.keep(entry for entry in entries if not passing or _all_passing(entry))

        return await self._read(request, options, lambda: self._catalog.health_index(name), payload)

    async def _h_health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            checks = [
                check
                for service in self._catalog.instances(name)
                for check in self._catalog.checks_of(service.service_id)
            ]
            return options.keep(_check_json(check, self._node) for check in checks)

        return await self._read(request, options, lambda: self._catalog.health_index(name), payload)

    async def _h_health_state(self, request: web.Request) -> web.Response:
        state = request.match_info["state"]
        if state not in (*_STATUSES, "any"):
            raise _bad_request("Bad check state")
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            checks = sorted(self._catalog.checks.values(), key=lambda c: (c.service_id, c.check_id))
            return options.keep(_check_json(c, self._node) for c in checks if state in ("any", c.status))

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)

    async def _h_health_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload() -> list[dict[str, Any]]:
            if node not in (self._node.name, self._node.node_id):
                return []
            checks = sorted(self._catalog.checks.values(), key=lambda c: (c.service_id, c.check_id))
            return options.keep(_check_json(check, self._node) for check in checks)

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)
