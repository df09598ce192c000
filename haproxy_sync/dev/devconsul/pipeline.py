"""The request pipeline: faults and ACLs in front of every handler, read options, blocking queries, answers."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import random
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from aiohttp import web

from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError, _bad_request
from haproxy_sync.dev.devconsul.encode import _node_json
from haproxy_sync.dev.devconsul.faults import _ERROR_FAULTS, _NO_FAULT
from haproxy_sync.dev.devconsul.filter import FilterError, compile_filter
from haproxy_sync.dev.devconsul.http import (
    _CONTROL_PREFIX,
    _JITTER_FRACTION,
    DEFAULT_WAIT,
    MAX_WAIT,
    _is_faulted_path,
    _json_bytes,
    _ReadOptions,
    _request_token,
    _reset_transport,
    _text_response,
)
from haproxy_sync.dev.devconsul.records import parse_go_duration


class RequestPipeline(ServerBase):
    """The middleware and what every read shares; handlers answer through `_read` or `_read_response`."""

    _random: random.Random

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[[web.Request], Any]) -> web.StreamResponse:
        """Faults and ACLs in front of every handler; ConsulHTTPError becomes its plain-text answer."""
        try:
            control = request.path.startswith(_CONTROL_PREFIX)
            if not control and self._fault.name in ("reset", "refuse"):
                self._abort(request)
            self._check_acl(request)
            if not control and _is_faulted_path(request.path):
                await self._read_faults(request)
            response: web.StreamResponse = await handler(request)
            return response
        except ConsulHTTPError as exc:
            return _text_response(exc.status, exc.message)

    def _abort(self, request: web.Request) -> NoReturn:
        """Reset the connection without answering; the handler task ends as cancelled."""
        transport = request.transport
        if transport is not None:
            _reset_transport(transport)
        raise asyncio.CancelledError

    def _check_acl(self, request: web.Request) -> None:
        if self._token is None:
            return
        presented = _request_token(request)
        if presented is None:
            raise ConsulHTTPError(403, "Permission denied")
        if not hmac.compare_digest(presented.encode(), self._token.encode()):
            raise ConsulHTTPError(403, "ACL not found")

    async def _read_faults(self, request: web.Request) -> None:
        if self._fault.name == "slow":
            await asyncio.sleep(self._fault.delay)
        self._raise_for_fault(request)

    def _raise_for_fault(self, request: web.Request) -> None:
        """Faults that end a (possibly pending) read now: stop, refuse, reset and the error answers."""
        fault = self._fault
        if self._stopping or fault.name in ("reset", "refuse"):
            self._abort(request)
        if fault.name in _ERROR_FAULTS:
            raise ConsulHTTPError(*_ERROR_FAULTS[fault.name])

    def _read_options(self, request: web.Request, fields: Sequence[str] = ()) -> _ReadOptions:
        """Parse what every read takes: dc, index/wait, stale/consistent, filter, pretty."""
        query = request.query
        datacenter = query.get("dc")
        if datacenter and datacenter != self._node.datacenter:
            raise ConsulHTTPError(500, "No path to datacenter")
        if "stale" in query and "consistent" in query:
            raise _bad_request("Cannot specify ?stale with ?consistent, conflicting semantics.")
        try:
            min_index = int(query.get("index") or 0)
            if min_index < 0:
                raise ValueError(min_index)
        except ValueError:
            raise _bad_request("Invalid index") from None
        try:
            wait = parse_go_duration(query["wait"]) if query.get("wait") else 0.0
        except ValueError:
            raise _bad_request("Invalid wait time") from None
        wait = DEFAULT_WAIT if wait <= 0 else min(wait, MAX_WAIT)
        predicate = None
        if query.get("filter"):
            try:
                predicate = compile_filter(query["filter"], fields)
            except FilterError as exc:
                raise _bad_request(f"Failed to create boolean expression evaluator: {exc}") from None
        consistency = "stale" if "stale" in query else "consistent" if "consistent" in query else "leader"
        return _ReadOptions(min_index, wait, consistency, "pretty" in query, predicate)

    def _node_meta_matches(self, request: web.Request) -> bool:
        meta = _node_json(self._node)["Meta"]
        for pair in request.query.getall("node-meta", []):
            key, _, value = pair.partition(":")
            if meta.get(key) != value:
                return False
        return True

    def _compare_index(self, index: int, faulted: bool) -> int:
        if faulted and self._fault.name == "index_backwards":
            return self._reported_index(index, faulted)
        return index

    def _reported_index(self, index: int, faulted: bool) -> int:
        fault = self._fault if faulted else _NO_FAULT
        if fault.name == "index_zero":
            return 0
        if fault.name == "index_backwards":
            return max(1, index - fault.offset)
        return max(1, index)

    async def _read(
        self,
        request: web.Request,
        options: _ReadOptions,
        index_of: Callable[[], int],
        payload_of: Callable[[], Any],
    ) -> web.Response:
        """Answer a read, first holding it as a blocking query when ?index= is given."""
        faulted = _is_faulted_path(request.path)
        if options.min_index > 0:
            await self._block(request, options, index_of, faulted)
        return self._read_response(options, index_of(), payload_of(), faulted)

    async def _block(
        self, request: web.Request, options: _ReadOptions, index_of: Callable[[], int], faulted: bool
    ) -> None:
        """Wait until the query's index passes ?index=, or wait + up to wait/16 of jitter has gone by."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + options.wait + self._random.uniform(0, options.wait / _JITTER_FRACTION)
        while self._compare_index(index_of(), faulted) <= options.min_index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            wakeup = self._wakeup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await wakeup.wait()
            if faulted:
                self._raise_for_fault(request)
            elif self._stopping:
                self._abort(request)

    def _read_response(self, options: _ReadOptions, index: int, payload: Any, faulted: bool) -> web.Response:
        fault = self._fault if faulted else _NO_FAULT
        reported = self._reported_index(index, faulted)
        self._highest_reported = max(self._highest_reported, reported)
        body = _json_bytes(payload, options.pretty)
        if fault.name == "foreign_service" and isinstance(payload, list):
            payload = [{**entry, "Service": {**entry["Service"], "Service": "intruder"}}
                       if isinstance(entry, dict) and isinstance(entry.get("Service"), dict) else entry
                       for entry in payload]
            body = _json_bytes(payload, options.pretty)
        if fault.name == "malformed_json":
            body = body[: len(body) // 2]
        elif fault.name == "huge":
            body += b" " * int(fault.size_mb * 1024 * 1024)
        elif fault.name == "null_body":
            body = b"null"
        elif fault.name == "wrong_shape":
            other = {"Entries": payload} if isinstance(payload, list) else list(payload.items()) \
                if isinstance(payload, dict) else [payload]
            body = _json_bytes(other, options.pretty)
        headers = {
            "X-Consul-Index": str(reported),
            "X-Consul-KnownLeader": "true",
            "X-Consul-LastContact": "0",
            "X-Consul-Effective-Consistency": options.consistency,
            "X-Consul-Default-ACL-Policy": "deny" if self._token else "allow",
        }
        if fault.name == "not_found":
            return web.Response(status=404, text="", headers={"X-Consul-Index": str(reported)})
        if fault.name == "not_found_bare":
            return web.Response(status=404, text="")
        if fault.name == "html":
            return web.Response(body=b"<html><body><h1>502 Bad Gateway</h1></body></html>\n", headers=headers,
                                content_type="text/html")
        if fault.name == "bad_encoding":
            return web.Response(body=b"this is not gzip", headers={**headers, "Content-Encoding": "gzip"},
                                content_type="application/json")
        return web.Response(body=body, headers=headers, content_type="application/json")
