"""Handlers of /v1/agent/*: service and check writes, TTL updates, and the agent's own reads."""

from __future__ import annotations

from typing import Any

from aiohttp import web

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
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline
from haproxy_sync.dev.devconsul.records import (
    _STATUSES,
    CONSUL_VERSION,
    CRITICAL,
    PASSING,
    SERF_CHECK_ID,
    WARNING,
    Service,
)
from haproxy_sync.dev.devconsul.writes import AgentWrites


class AgentHandlers(AgentWrites, CheckRunners, RequestPipeline):
    """The agent endpoints: writes go through `AgentWrites` and the TTL clocks, reads through the pipeline."""

    async def _h_service_register(self, request: web.Request) -> web.Response:
        registration = decode_service_registration(await _json_body(request))
        replace_existing = request.query.get("replace-existing-checks", None) in ("", "true")
        self.register_service(registration, replace_existing_checks=replace_existing)
        return web.Response()

    async def _h_service_deregister(self, request: web.Request) -> web.Response:
        self.deregister_service(request.match_info["id"])
        return web.Response()

    async def _h_service_maintenance(self, request: web.Request) -> web.Response:
        enable = _enable_param(request)
        self.set_service_maintenance(request.match_info["id"], enable, request.query.get("reason", ""))
        return web.Response()

    async def _h_node_maintenance(self, request: web.Request) -> web.Response:
        self.set_node_maintenance(_enable_param(request), request.query.get("reason", ""))
        return web.Response()

    async def _h_check_register(self, request: web.Request) -> web.Response:
        raw = await _json_body(request)
        if not _str(_normalized(raw, "structs.CheckDefinition"), "name", "CheckDefinition.Name"):
            raise _bad_request("Missing check name")
        registration = decode_check(raw, for_service=False)
        assert registration is not None  # it has a name, so it is not empty
        self.register_check(registration)
        return web.Response()

    async def _h_check_deregister(self, request: web.Request) -> web.Response:
        self.deregister_check(request.match_info["id"])
        return web.Response()

    async def _h_check_pass(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], PASSING, request.query.get("note", ""))
        return web.Response()

    async def _h_check_warn(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], WARNING, request.query.get("note", ""))
        return web.Response()

    async def _h_check_fail(self, request: web.Request) -> web.Response:
        self._update_ttl(request.match_info["id"], CRITICAL, request.query.get("note", ""))
        return web.Response()

    async def _h_check_update(self, request: web.Request) -> web.Response:
        data = _normalized(await _json_body(request), "agent.checkUpdate")
        status = _str(data, "status", "checkUpdate.Status")
        if status not in _STATUSES:
            raise _bad_request(f"Invalid check status: '{status}'")
        self._update_ttl(request.match_info["id"], status, _str(data, "output", "checkUpdate.Output"))
        return web.Response()

    def _local_services(self) -> list[Service]:
        return sorted((s for s in self._catalog.services.values() if s.local), key=lambda s: s.service_id)

    async def _h_agent_services(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _AGENT_SERVICE_FIELDS)
        dc = self._node.datacenter

        def payload() -> dict[str, Any]:
            items = [_agent_service_json(service, dc) for service in self._local_services()]
            return {item["ID"]: item for item in options.keep(items)}

        return self._read_response(options, self._catalog.index, payload(), faulted=False)

    async def _h_agent_service(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        service = self._catalog.services.get(request.match_info["id"])
        if service is None or not service.local:
            raise ConsulHTTPError(404, f"unknown service ID: {request.match_info['id']}")
        return self._read_response(
            options, self._catalog.index, _agent_service_json(service, self._node.datacenter), faulted=False
        )

    async def _h_agent_checks(self, request: web.Request) -> web.Response:
        options = self._read_options(request, _CHECK_FIELDS)
        local = [
            check
            for check in self._catalog.checks.values()
            if check.check_id != SERF_CHECK_ID and check.service_id != "consul"
        ]
        local.sort(key=lambda check: check.check_id)
        items = options.keep(_check_json(check, self._node) for check in local)
        payload = {item["CheckID"]: item for item in items}
        return self._read_response(options, self._catalog.index, payload, faulted=False)

    def _member_json(self) -> dict[str, Any]:
        node = self._node
        return {
            "Name": node.name,
            "Addr": node.address,
            "Port": 8301,
            "Tags": {
                "acls": "1" if self._token else "0",
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
            "Coord": None,
            "Member": self._member_json(),
            "Stats": {
                "consul": {"leader": "true", "server": "true", "known_datacenters": "1"},
                "agent": {
                    "services": str(len(self._local_services())),
                    "checks": str(len(self._catalog.checks) - 1),
                },
            },
            "Meta": {"consul-network-segment": ""},
        }
        return self._read_response(options, self._catalog.index, payload, faulted=False)

    async def _h_agent_members(self, request: web.Request) -> web.Response:
        options = self._read_options(request)
        return self._read_response(options, self._catalog.index, [self._member_json()], faulted=False)
