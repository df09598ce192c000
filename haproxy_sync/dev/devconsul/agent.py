"""Handlers of /v1/agent/*: service and check writes, TTL updates, and the agent's own reads.

ACLs as Consul's agent endpoints (agent/agent_endpoint.go, agent/acl.go): a write resolves the token
where Consul does (after decoding the body) and is vetted like vetServiceRegister, vetServiceUpdate,
vetCheckRegister and vetCheckUpdate: service:write on the service (and on the one it replaces), or
node:write on this agent's node for a node check. A check update or deregistration of a check the
agent does not have (serfHealth and catalog-registered checks included) is Consul's 404 "Unknown check
ID ..." once the token resolved, before any permission, ACLs or not (vetCheckUpdateWithAuthorizer).
Reads filter (services: service:read; checks: service:read, or node:read for node checks; members:
node:read); agent/self needs agent:read and agent/service/<id> service:read, else a 403.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import Authorizer, acl_summary
from haproxy_sync.dev.devconsul.checks import CheckRunners
from haproxy_sync.dev.devconsul.decode import (
    ConsulHTTPError,
    _bad_request,
    _normalized,
    _str,
    decode_check,
    decode_service_registration,
)
from haproxy_sync.dev.devconsul.encode import _AGENT_SERVICE_FIELDS, _CHECK_FIELDS, _agent_service_json, _check_json
from haproxy_sync.dev.devconsul.http import _enable_param, _json_body
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline, _acl_keep
from haproxy_sync.dev.devconsul.records import (
    _STATUSES,
    CONSUL_VERSION,
    CRITICAL,
    PASSING,
    WARNING,
    Check,
    Service,
)
from haproxy_sync.dev.devconsul.writes import AgentWrites, unknown_check


class AgentHandlers(AgentWrites, CheckRunners, RequestPipeline):
    """The agent endpoints: writes go through `AgentWrites` and the TTL clocks, reads through the pipeline."""

    # ---- vetting writes (agent/acl.go) -----------------------------------------------------------

    def _vet_service_update(self, request: web.Request, service_id: str) -> None:
        """vetServiceUpdate: the token resolved (403 if unknown), then service:write on the existing service;
        an unknown service stays the write's 404."""
        self._authorizer(request)
        existing = self._catalog.services.get(service_id)
        if existing is not None and existing.local:
            self._require(request, "service", "write", existing.name)

    def _vet_check_update(self, request: web.Request, check_id: str) -> None:
        """vetCheckUpdateWithAuthorizer: the token resolved (403 if unknown), then 404 for a check the agent
        does not have, else service:write on a service check's service or node:write on this node."""
        self._authorizer(request)
        check = self._agent_check(check_id)
        if check is None:
            raise unknown_check(check_id)
        self._vet_existing_check(request, check)

    def _vet_existing_check(self, request: web.Request, check: Check | None) -> None:
        """vetCheckRegister's second half: write permission on a check the registration would replace."""
        self._authorizer(request)
        if check is None:
            return
        if check.service_name:
            self._require(request, "service", "write", check.service_name)
        else:
            self._require(request, "node", "write", self._node.name)

    # ---- writes ----------------------------------------------------------------------------------

    async def _h_service_register(self, request: web.Request) -> web.Response:
        registration = decode_service_registration(await _json_body(request))
        service = registration.service
        self._require(request, "service", "write", service.name)
        self._vet_service_update(request, service.service_id)  # the service it would replace
        replace_existing = request.query.get("replace-existing-checks", None) in ("", "true")
        self.register_service(registration, replace_existing_checks=replace_existing)
        return web.Response()

    async def _h_service_deregister(self, request: web.Request) -> web.Response:
        self._vet_service_update(request, request.match_info["id"])
        self.deregister_service(request.match_info["id"])
        return web.Response()

    async def _h_service_maintenance(self, request: web.Request) -> web.Response:
        enable = _enable_param(request)
        self._vet_service_update(request, request.match_info["id"])
        self.set_service_maintenance(request.match_info["id"], enable, request.query.get("reason", ""))
        return web.Response()

    async def _h_node_maintenance(self, request: web.Request) -> web.Response:
        enable = _enable_param(request)
        self._require(request, "node", "write", self._node.name)
        self.set_node_maintenance(enable, request.query.get("reason", ""))
        return web.Response()

    async def _h_check_register(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        if not _str(_normalized(raw, "structs.CheckDefinition"), "name", "CheckDefinition.Name"):
            raise _bad_request("Missing check name")
        registration = decode_check(raw, for_service=False)
        assert registration is not None  # it has a name, so it is not empty
        self._authorizer(request)
        service = self._service_of_check(registration)
        if service is not None:
            self._require(request, "service", "write", service.name)
        else:
            self._require(request, "node", "write", self._node.name)
        self._vet_existing_check(request, self._agent_check(registration.check_id or registration.name))
        self.register_check(registration)
        return web.Response()

    async def _h_check_deregister(self, request: web.Request) -> web.Response:
        self._vet_check_update(request, request.match_info["id"])
        self.deregister_check(request.match_info["id"])
        return web.Response()

    async def _h_check_pass(self, request: web.Request) -> web.Response:
        return self._ttl_update(request, PASSING, request.query.get("note", ""))

    async def _h_check_warn(self, request: web.Request) -> web.Response:
        return self._ttl_update(request, WARNING, request.query.get("note", ""))

    async def _h_check_fail(self, request: web.Request) -> web.Response:
        return self._ttl_update(request, CRITICAL, request.query.get("note", ""))

    async def _h_check_update(self, request: web.Request) -> web.Response:
        data = _normalized(await _json_body(request), "agent.checkUpdate")
        status = _str(data, "status", "checkUpdate.Status")
        if status not in _STATUSES:
            raise _bad_request(f"Invalid check status: '{status}'")
        return self._ttl_update(request, status, _str(data, "output", "checkUpdate.Output"))

    def _ttl_update(self, request: web.Request, status: str, output: str) -> web.Response:
        """agentCheckUpdate: vet the existing check (vetCheckUpdate; 404 for an unknown one), then update it."""
        self._vet_check_update(request, request.match_info["id"])
        self._update_ttl(request.match_info["id"], status, output)
        return web.Response()

    def _local_services(self) -> list[Service]:
        return sorted((s for s in self._catalog.services.values() if s.local), key=lambda s: s.service_id)

    def _local_checks(self) -> list[Check]:
        """The agent's own checks (its local state), by ID."""
        checks = (self._agent_check(check_id) for check_id in sorted(self._catalog.checks))
        return [check for check in checks if check is not None]

    async def _h_agent_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _AGENT_SERVICE_FIELDS)
        dc = self._node.datacenter

        authorizer = self._authorizer(request)
        visible, removed = _acl_keep(self._local_services(), lambda service: authorizer.service_read(service.name))
        items = options.keep(_agent_service_json(service, dc) for service in visible)
        payload = {item["ID"]: item for item in items}
        return self._read_response(
            options, self._catalog.index, payload, faulted=False, acl_filtered=authorizer.filtered_header(removed)
        )

    async def _h_agent_service(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        service = self._catalog.services.get(request.match_info["id"])
        if service is None or not service.local:
            raise ConsulHTTPError(404, f"unknown service ID: {request.match_info['id']}")
        self._require(request, "service", "read", service.name)
        return self._read_response(
            options, self._catalog.index, _agent_service_json(service, self._node.datacenter), faulted=False
        )

    async def _h_agent_checks(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CHECK_FIELDS)
        authorizer = self._authorizer(request)
        visible, removed = _acl_keep(self._local_checks(), lambda check: self._agent_check_visible(authorizer, check))
        items = options.keep(_check_json(replace(check, output=self._agent_output(check))) for check in visible)
        payload = {item["CheckID"]: item for item in items}
        return self._read_response(
            options, self._catalog.index, payload, faulted=False, acl_filtered=authorizer.filtered_header(removed)
        )

    def _agent_check_visible(self, authorizer: Authorizer, check: Check) -> bool:
        """filterChecksWithAuthorizer: service:read for a service check, node:read for a node check."""
        if check.service_name:
            return authorizer.service_read(check.service_name)
        return authorizer.node_read(self._node.name)

    def _member_json(self) -> dict[str, Any]:
        node = self._node
        return {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {
                "acls": "0" if self._acl is None else "1",
                "build": f"{CONSUL_VERSION}:devconsul",
                "dc": node.datacenter,
                "id": node.node_id,
                "port": "8300",
                "raft_vsn": "3",
                "role": "consul",
                "segment": "",
                "vsn": "2",
                "vsn_max": "3",
                "vsn_min": "2",
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        }

    async def _h_agent_self(self, request: web.Request) -> web.Response:
        self._require(request, "agent", "read", self._node.name)
        options = self._read_options(request)
        node = self._node
        payload = {
            "Config": {
                "Datacenter": node.datacenter,
                "PrimaryDatacenter": node.datacenter,
                "NodeName": node.name,
                "NodeID": node.node_id,
                "Server": True,
                "Revision": "devconsul",
                "Version": CONSUL_VERSION,
                "BuildDate": "",
                "NodeAddress": node.address,
            },
            "DebugConfig": dict(acl_summary(self._acl)),
            "Coord": None,
            "Member": self._member_json(),
            "Stats": {
                "consul": {
                    "acl": "disabled" if self._acl is None else "enabled",
                    "leader": "true",
                    "server": "true",
                    "known_datacenters": "1",
                },
                "agent": {
                    "services": str(len(self._local_services())),
                    "checks": str(len(self._local_checks())),
                },
            },
            "Meta": {"consul-network-segment": ""},
        }
        return self._read_response(options, self._catalog.index, payload, faulted=False)

    async def _h_agent_members(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        authorizer = self._authorizer(request)
        members, removed = _acl_keep([self._node], lambda node: authorizer.node_read(node.name))
        return self._read_response(
            options,
            self._catalog.index,
            [self._member_json() for _ in members],
            faulted=False,
            acl_filtered=authorizer.filtered_header(removed),
        )
