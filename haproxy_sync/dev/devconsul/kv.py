"""Handlers of /v1/kv/<key>: GET (one key, ?recurse, ?keys with ?separator, ?raw), PUT and DELETE.

What Consul does (agent/kvs_endpoint.go, agent/consul/kvs_endpoint.go, agent/consul/state/kvs.go):

* GET of one key answers ``[DirEntry]`` with its ModifyIndex as X-Consul-Index, or 404 with an empty
  body and the KV tables' index (at least 1, so a blocking query on a missing key waits for the next
  KV write); ``?raw`` answers the bare value. ``?recurse`` lists every key under the prefix (404 when
  none), its index the highest ModifyIndex there or of a tombstone there. ``?keys`` answers the key
  names, cut after ``?separator`` and de-duplicated (404 when none, except for the empty prefix: []);
  Consul's old spelling ``?seperator`` is read too. All block on ?index= like any read.
* PUT stores the body as the value (an empty body is a nil value: JSON null), ``?flags=`` a uint64,
  and answers ``true``; with ``?cas=`` it answers whether it wrote: 0 only creates, otherwise the key's
  ModifyIndex must match. ``?acquire=`` and ``?release=`` need sessions, which devconsul does not have:
  they answer as Consul does for a session that does not exist.
* DELETE removes the key (``?recurse``: everything under the prefix; ``?cas=``: only at that index,
  and a missing key counts as deleted) and answers ``true`` or the CAS result.

ACLs: a read of one key needs key:read on it (else 403, even when it does not exist); ?recurse and
?keys answer only what the token may read (X-Consul-Results-Filtered-By-ACLs when that removed
something); writes need key:write on the key, a recursive delete key_write_prefix on the prefix.
Values larger than Consul's kv_max_value_size (512 KiB) are 413.
"""

from __future__ import annotations

import urllib.parse
from typing import Final

from aiohttp import web

from haproxy_sync.dev.devconsul.acl import Authorizer
from haproxy_sync.dev.devconsul.decode import ConsulHTTPError, _bad_request
from haproxy_sync.dev.devconsul.encode import _kv_json
from haproxy_sync.dev.devconsul.http import _ReadOptions
from haproxy_sync.dev.devconsul.pipeline import RequestPipeline, _acl_keep
from haproxy_sync.dev.devconsul.records import KVEntry

KV_MAX_VALUE_SIZE: Final = 512 * 1024  # kv_max_value_size's default
_MAX_UINT64: Final = 2**64 - 1
_SIZE_DOC: Final = "https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size"


def _parse_uint(text: str) -> int:
    """Go's strconv.ParseUint(text, 10, 64), with its error text (Consul answers it as a 500)."""
    if not text.isascii() or not text.isdigit():
        raise ConsulHTTPError(500, f'strconv.ParseUint: parsing "{text}": invalid syntax')
    value = int(text)
    if value > _MAX_UINT64:
        raise ConsulHTTPError(500, f'strconv.ParseUint: parsing "{text}": value out of range')
    return value


def _conflicting(request: web.Request, *flags: str) -> None:
    """conflictingFlags: at most one of these parameters, else 400 "Conflicting flags: <query>"."""
    if sum(1 for flag in flags if flag in request.query) > 1:
        encoded = urllib.parse.urlencode(sorted(request.query.items()))
        raise _bad_request(f"Conflicting flags: {encoded}\n")


def _key_names(entries: list[KVEntry], prefix: str, separator: str) -> list[str]:
    """ListKeys: every key, or with a separator each key cut after the first separator past the prefix."""
    if not separator:
        return [entry.key for entry in entries]
    names: list[str] = []
    seen: set[str] = set()
    for entry in entries:
        at = entry.key.find(separator, len(prefix))
        if at < 0:
            names.append(entry.key)
            continue
        name = entry.key[: at + len(separator)]
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


class KVHandlers(RequestPipeline):
    """The KV endpoints; the state is the catalog's (store.py, kvstate.py), so a restart keeps it."""

    def _kv_answer(self, options: _ReadOptions, index: int, payload: object, *, found: bool,
                   filtered: bool = False) -> web.Response:
        response = self._read_response(options, index, payload, faulted=False, acl_filtered=filtered)
        if not found:
            response.set_status(404)
            response.body = b""
        return response

    async def _h_kv_get(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        options = self._read_options(request)
        authorizer = self._authorizer(request)
        if "keys" in request.query:
            return await self._kv_keys(request, options, authorizer, key)
        if "recurse" in request.query:
            return await self._kv_list(request, options, authorizer, key)
        if not key:
            raise _bad_request("Missing key name")
        if not authorizer.key_read(key):
            raise ConsulHTTPError(403, authorizer.denial("key", "read", key))
        kv = self._catalog.kv

        def index() -> int:
            table, entry = kv.get(key)
            return entry.modify_index if entry is not None else table

        if options.min_index > 0:
            await self._block(request, options, index, faulted=False)
        _, entry = kv.get(key)
        if entry is None:
            return self._kv_answer(options, index(), None, found=False)
        if "raw" in request.query:
            response = self._kv_answer(options, index(), None, found=True)
            response.body = entry.value or b""
            response.headers.update(
                {"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
            )
            response.content_type = "text/plain"
            return response
        return self._kv_answer(options, index(), [_kv_json(entry)], found=True)

    async def _kv_list(
        self, request: web.Request, options: _ReadOptions, authorizer: Authorizer, prefix: str
    ) -> web.Response:
        kv = self._catalog.kv
        if options.min_index > 0:
            await self._block(request, options, lambda: kv.list(prefix)[0], faulted=False)
        index, entries = kv.list(prefix)
        visible, removed = _acl_keep(entries, lambda entry: authorizer.key_read(entry.key))
        filtered = authorizer.filtered_header(removed)
        if not visible:
            return self._kv_answer(options, index, None, found=False, filtered=filtered)
        return self._kv_answer(options, index, [_kv_json(entry) for entry in visible], found=True, filtered=filtered)

    async def _kv_keys(
        self, request: web.Request, options: _ReadOptions, authorizer: Authorizer, prefix: str
    ) -> web.Response:
        query = request.query
        separator = query.get("separator", query.get("seperator", ""))
        kv = self._catalog.kv
        if options.min_index > 0:
            await self._block(request, options, lambda: kv.list(prefix)[0], faulted=False)
        index, entries = kv.list(prefix)
        visible, removed = _acl_keep(entries, lambda entry: authorizer.key_read(entry.key))
        names = _key_names(visible, prefix, separator)
        filtered = authorizer.filtered_header(removed)
        return self._kv_answer(options, index, names, found=bool(names) or not prefix, filtered=filtered)

    async def _h_kv_put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self._read_options(request)  # ?dc= and the consistency flags are checked for writes too
        if not key:
            raise _bad_request("Missing key name")
        _conflicting(request, "cas", "acquire", "release")
        query = request.query
        flags = _parse_uint(query["flags"]) if "flags" in query else 0
        cas = _parse_uint(query["cas"]) if "cas" in query else None
        length = request.content_length or 0
        if length > KV_MAX_VALUE_SIZE:
            raise ConsulHTTPError(
                413,
                f"Request body({length} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. See {_SIZE_DOC}.",
            )
        value = await request.read() or None
        authorizer = self._authorizer(request)
        if not authorizer.key_write(key):
            raise ConsulHTTPError(403, authorizer.denial("key", "write", key))
        kv = self._catalog.kv
        if "acquire" in query or "release" in query:
            session = query.get("acquire", query.get("release", ""))
            if not session:
                raise ConsulHTTPError(500, "missing session")
            if "acquire" in query:
                raise ConsulHTTPError(500, f'invalid session "{session}"')
            return web.json_response(False)  # no session holds any key here, so none can release one
        if cas is not None:
            wrote = self._catalog.kv_write(lambda index: kv.set_cas(key, value, flags, cas, index))
            return web.json_response(wrote)
        self._catalog.kv_write(lambda index: (True, kv.set(key, value, flags, index)))
        return web.json_response(True)

    async def _h_kv_delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        self._read_options(request)
        _conflicting(request, "recurse", "cas")
        authorizer = self._authorizer(request)
        kv = self._catalog.kv
        if "recurse" in request.query:
            if not authorizer.key_write_prefix(key):
                raise ConsulHTTPError(403, authorizer.denial("key", "write", key))
            self._catalog.kv_write(lambda index: (True, kv.delete_tree(key, index)))
            return web.json_response(True)
        if not key:
            raise _bad_request("Missing key name")
        cas = _parse_uint(request.query["cas"]) if "cas" in request.query else None
        if not authorizer.key_write(key):
            raise ConsulHTTPError(403, authorizer.denial("key", "write", key))
        if cas is not None:
            return web.json_response(self._catalog.kv_write(lambda index: kv.delete_cas(key, cas, index)))
        self._catalog.kv_write(lambda index: (True, kv.delete(key, index)))
        return web.json_response(True)
