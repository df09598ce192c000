"""Handlers of /v1/health/*: service entries with their checks, checks by service, state and node.

Entries are of every node, the agent's and the external ones registered through /v1/catalog/register,
each with its own node and that node's checks (an external node has no serfHealth). Indexes are
Consul's: a service's entries its service index (with the extinction rule of store.service_index),
the check lists (health/checks, health/state, health/node) the checks table.

ACLs filter each answer as Consul's aclFilter does (agent/consul/acl.go): a service entry needs
node:read on its node and service:read on its service (filterCheckServiceNodes), a check node:read
and, for a service check, service:read (filterHealthChecks). The ACL filter runs before ?filter=, as
in Consul since the bexpr filter may only see what the token may read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import Authorizer
from haproxy_sync.dev.devconsul.decode import _bad_request
from haproxy_sync.dev.devconsul.encode import _CHECK_FIELDS, _HEALTH_FIELDS, _check_json, _node_json, _service_json
from haproxy_sync.dev.devconsul.http import _all_passing, _passing_param
from haproxy_sync.dev.devconsul.pipeline import Filtered, RequestPipeline, _acl_keep
from haproxy_sync.dev.devconsul.records import _STATUSES, Check, Service


class HealthHandlers(RequestPipeline):
    """The health endpoints, blocking on the index of what each answer depends on."""

    def _health_entry(self, service: Service) -> dict[str, Any]:
        checks = self._catalog.checks_of("", service.node) + self._catalog.checks_of(service.service_id, service.node)
        return {
            "Node": _node_json(self._catalog.node_of(service)),
            "Service": _service_json(service),
            "Checks": [_check_json(check) for check in checks],
        }

    def _checks_answer(
        self, authorizer: Authorizer, keep: Callable[[Iterable[Any]], list[Any]], checks: list[Check]
    ) -> Filtered:
        """Checks as JSON: first what the token may read, then what ?filter= keeps."""
        visible, removed = _acl_keep(checks, lambda check: self._check_visible(authorizer, check))
        return Filtered(keep(_check_json(check) for check in visible), removed)

    async def _h_health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _HEALTH_FIELDS)
        passing = _passing_param(request)
        tags = request.query.getall("tag", [])
        node_ok = self._node_meta_filter(request)

        def payload(authorizer: Authorizer) -> Filtered:
            visible, removed = self._service_instances(name, tags, node_ok, authorizer)
            entries = options.keep(self._health_entry(service) for service in visible)
            return Filtered([entry for entry in entries if not passing or _all_passing(entry)], removed)

        return await self._read(request, options, lambda: self._catalog.service_index(name, checks=True), payload)

    async def _h_health_checks(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload(authorizer: Authorizer) -> Filtered:
            checks = [
                check
                for service in self._catalog.instances(name)
                for check in self._catalog.checks_of(service.service_id, service.node)
            ]
            return self._checks_answer(authorizer, options.keep, checks)

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)

    async def _h_health_state(self, request: web.Request) -> web.Response:
        state = request.match_info["state"]
        if state not in (*_STATUSES, "any"):
            raise _bad_request("Bad check state")
        options = self._read_options(request, _CHECK_FIELDS)

        def payload(authorizer: Authorizer) -> Filtered:
            checks = self._catalog.all_checks()
            return self._checks_answer(authorizer, options.keep, [c for c in checks if state in ("any", c.status)])

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)

    async def _h_health_node(self, request: web.Request) -> web.Response:
        node = request.match_info["node"]
        options = self._read_options(request, _CHECK_FIELDS)

        def payload(authorizer: Authorizer) -> Filtered:
            return self._checks_answer(authorizer, options.keep, self._catalog.checks_on(node))

        return await self._read(request, options, lambda: self._catalog.table_index("checks"), payload)
