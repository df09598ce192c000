"""Handlers of /v1/devconsul/*: the fault switch (GET, PUT, DELETE) and bulk writes for benchmarks."""

from __future__ import annotations

from aiohttp import web

from haproxy_sync.dev.devconsul.decode import _bad_request, _decode_weights, decode_service_registration
from haproxy_sync.dev.devconsul.faults import _NO_FAULT, make_fault
from haproxy_sync.dev.devconsul.http import _json_body
from haproxy_sync.dev.devconsul.listening import Listening
from haproxy_sync.dev.devconsul.writes import AgentWrites


class ControlHandlers(AgentWrites, Listening):
    """devconsul's own control endpoints, outside Consul's API: no fault but "refuse" keeps them from answering."""

    async def _h_fault_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._fault_json())

    async def _h_fault_put(self, request: web.Request) -> web.Response:
        data = await _json_body(request)
        if not isinstance(data, dict) or not isinstance(data.get("fault"), str):
            raise _bad_request('devconsul: body must be {"fault": "<name>", ...params}')
        params = {key: value for key, value in data.items() if key != "fault"}
        try:
            fault = make_fault(data["fault"], params, self._highest_reported)
        except ValueError as exc:
            raise _bad_request(f"devconsul: {exc}") from None
        response = web.json_response({"fault": fault.name, **params})
        if fault.name in ("refuse", "reset"):
            response.force_close()  # this connection closes after the answer instead of being reset
        self._switch_fault(fault, spare=request.transport)
        return response

    async def _h_fault_delete(self, request: web.Request) -> web.Response:
        self._switch_fault(_NO_FAULT, spare=request.transport)
        return web.json_response(self._fault_json())

    # ---- bulk control (benchmarks) ---------------------------------------------------------------

    async def _h_bulk_register(self, request: web.Request) -> web.Response:
        """PUT a JSON array of /v1/agent/service/register bodies: one catalog write for all of them."""
        data = await _json_body(request)
        if not isinstance(data, list):
            raise _bad_request("devconsul: body must be a JSON array of service registrations")
        count = self.register_services([decode_service_registration(item) for item in data])
        return web.json_response({"registered": count, "index": self._catalog.index})

    async def _h_bulk_deregister(self, request: web.Request) -> web.Response:
        """PUT a JSON array of service IDs: one catalog write removes them all."""
        data = await _json_body(request)
        if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
            raise _bad_request("devconsul: body must be a JSON array of service IDs")
        count = self.deregister_services(data)
        return web.json_response({"deregistered": count, "index": self._catalog.index})

    async def _h_bulk_weights(self, request: web.Request) -> web.Response:
        """PUT ``{"<service id>": {"Passing": n, "Warning": m}, ...}``: one catalog write for all of them."""
        data = await _json_body(request)
        if not isinstance(data, dict):
            raise _bad_request('devconsul: body must be {"<service id>": {"Passing": n, "Warning": m}, ...}')
        weights = {str(service_id): _decode_weights(value) for service_id, value in data.items()}
        changed = self.set_weights(weights)
        return web.json_response({"changed": changed, "index": self._catalog.index})

    async def _h_bulk_weights_over_time(self, request: web.Request) -> web.Response:
        """PUT ``{"interval": seconds, "writes": [{"<id>": {"Passing": n, "Warning": m}, ...}, ...]}``.

        Answers once the last write landed, with the Unix time and index of each.
        """
        data = await _json_body(request)
        usage = 'devconsul: body must be {"interval": seconds, "writes": [{"<id>": {"Passing": n, ...}}, ...]}'
        if not isinstance(data, dict) or not isinstance(data.get("writes"), list):
            raise _bad_request(usage)
        interval = data.get("interval", 0)
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 <= interval <= 60:
            raise _bad_request("devconsul: interval must be a number of seconds between 0 and 60")
        writes = []
        for item in data["writes"]:
            if not isinstance(item, dict):
                raise _bad_request(usage)
            writes.append({str(service_id): _decode_weights(value) for service_id, value in item.items()})
        landed = await self.set_weights_over_time(writes, float(interval))
        return web.json_response({"writes": [{"time": when, "index": index} for when, index in landed]})
