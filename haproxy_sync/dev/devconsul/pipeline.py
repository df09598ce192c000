"""The request pipeline: faults and ACLs in front of every handler, read options, blocking queries, answers.

ACLs here are only the wiring: each request's token is resolved once to an `Authorizer` (acl.py),
an unknown token is Consul's 403 "ACL not found", and a refused permission is Consul's 403 text.
What a read keeps is decided by its handler (`Filtered`); `_read_response` adds the
``X-Consul-Results-Filtered-By-ACLs`` header when that removed anything and a token was presented.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import ALLOW_ALL, Authorizer
from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError, _bad_request
from haproxy_sync.dev.devconsul.faults import _ERROR_FAULTS, _NO_FAULT
from haproxy_sync.dev.devconsul.filter import FilterError, GoType, compile_filter
from haproxy_sync.dev.devconsul.http import (
    _CONTROL_PREFIX,
    _JITTER_FRACTION,
    _NO_ACL_PREFIXES,
    DEFAULT_WAIT,
    MAX_WAIT,
    _has_tags,
    _is_faulted_path,
    _json_bytes,
    _ReadOptions,
    _request_token,
    _reset_transport,
    _text_response,
)
from haproxy_sync.dev.devconsul.records import Check, Node, Service
from haproxy_sync.durations import parse_go_duration

# Where a request's resolved Authorizer is kept: a typed key where aiohttp has them (3.13+; a plain
# string key warns there), a string on the older versions pyproject allows.
_AUTHZ_KEY: Final[Any] = (
    web.RequestKey("devconsul_authorizer", Authorizer) if hasattr(web, "RequestKey") else "devconsul.authorizer"
)


@dataclass(frozen=True)
class Filtered:
    """A read's answer after ACL filtering, and whether the filter removed anything."""

    payload: Any
    removed: bool = False


def _acl_keep(items: Iterable[Any], allowed: Callable[[Any], bool]) -> tuple[list[Any], bool]:
    """The items the token may see, and whether any was removed."""
    everything = list(items)
    kept = [item for item in everything if allowed(item)]
    return kept, len(kept) != len(everything)


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
            if control:
                self._require(request, "operator", "read" if request.method == "GET" else "write")
            elif request.method != "PUT" and not request.path.startswith(_NO_ACL_PREFIXES):
                self._authorizer(request)  # reads resolve the token first; writes where Consul does
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

    def _authorizer(self, request: web.Request) -> Authorizer:
        """The request's Authorizer (resolved once); an unknown token is Consul's 403 "ACL not found"."""
        cached = request.get(_AUTHZ_KEY)
        if isinstance(cached, Authorizer):
            return cached
        authorizer = ALLOW_ALL if self._acl is None else self._acl.resolve(_request_token(request))
        if authorizer is None:
            raise ConsulHTTPError(403, "ACL not found")
        request[_AUTHZ_KEY] = authorizer
        return authorizer

    def _require(self, request: web.Request, kind: str, need: Literal["read", "write"], name: str = "") -> None:
        """Refuse with Consul's 403 text unless the request's token has this permission."""
        authorizer = self._authorizer(request)
        if not authorizer.allowed(kind, need, name):
            raise ConsulHTTPError(403, authorizer.denial(kind, need, name))

    def _check_visible(self, authorizer: Authorizer, check: Check) -> bool:
        """Consul's filterHealthChecks: node:read on the check's node, and service:read on its service if any."""
        if not authorizer.node_read(check.node):
            return False
        return not check.service_name or authorizer.service_read(check.service_name)

    def _default_acl_policy(self) -> str:
        return "allow" if self._acl is None else self._acl.default_policy

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

    def _read_options(self, request: web.Request, fields: Sequence[str] | GoType = ()) -> _ReadOptions:
        """Parse what every read takes: dc, index/wait, stale/consistent, filter, pretty (`fields`: the
        items' JSON keys or Go type; none for an endpoint that takes no filter)."""
        query = request.query
        _refuse_enterprise_meta(request)
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
                raise ConsulHTTPError(500, f"Failed to create boolean expression evaluator: {exc}") from None
        consistency = "stale" if "stale" in query else "consistent" if "consistent" in query else "leader"
        return _ReadOptions(min_index, wait, consistency, "pretty" in query, predicate)

    def _node_meta_filter(self, request: web.Request) -> Callable[[Node], bool]:
        """Consul's ?node-meta=key:value filters (structs.SatisfiesMetaFilters): every one must hold."""
        wanted = [pair.partition(":")[::2] for pair in request.query.getall("node-meta", [])]
        if not wanted:
            return lambda _node: True

        def matches(node: Node) -> bool:
            meta = dict(node.meta or ())
            return all(meta.get(key) == value for key, value in wanted)

        return matches

    def _service_instances(
        self, name: str, tags: Sequence[str], node_ok: Callable[[Node], bool], authorizer: Authorizer
    ) -> tuple[list[Service], bool]:
        """The instances of ``name`` a catalog or health read asked for (every ?tag=, ?node-meta=) and
        may see: service:read on the service and node:read on its node, as Consul's filterACL does for
        service nodes. Also whether the ACLs left any out."""
        instances = [
            s for s in self._catalog.instances(name) if _has_tags(s, tags) and node_ok(self._catalog.node_of(s))
        ]
        return _acl_keep(instances, lambda s: authorizer.node_read(s.node) and authorizer.service_read(s.name))

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
        payload_of: Callable[[Authorizer], Filtered],
    ) -> web.Response:
        """Answer a read, first holding it as a blocking query when ?index= is given.

        The payload is built after the wait, through the request's Authorizer: a blocking query on a
        filtered read still waits on the real index, and answers what the token may see of the result.
        """
        faulted = _is_faulted_path(request.path)
        authorizer = self._authorizer(request)
        if options.min_index > 0:
            await self._block(request, options, index_of, faulted)
        answer = payload_of(authorizer)
        return self._read_response(
            options, index_of(), answer.payload, faulted, acl_filtered=authorizer.filtered_header(answer.removed)
        )

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

    def _read_response(
        self, options: _ReadOptions, index: int, payload: Any, faulted: bool, *, acl_filtered: bool = False
    ) -> web.Response:
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
            "X-Consul-Default-ACL-Policy": self._default_acl_policy(),
        }
        if acl_filtered:
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
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


def _refuse_enterprise_meta(request: web.Request) -> None:
    """Consul CE's answer to a namespace or an admin partition (agent/http_ce.go, parseEntMeta): 400 for
    any non-empty one, ``default`` included; the header is looked at before the query parameter, and the
    body carries the "Bad request: " of Consul's BadRequestError."""
    for header, param, feature in (("X-Consul-Namespace", "ns", "Namespaces"),
                                   ("X-Consul-Partition", "partition", "Partitions")):
        if request.headers.get(header):
            raise _bad_request(f'Bad request: Invalid header: "{header}" - {feature} are a Consul Enterprise feature')
        if request.query.get(param):
            raise _bad_request(f'Bad request: Invalid query parameter: "{param}" - {feature} are a Consul '
                               'Enterprise feature')
