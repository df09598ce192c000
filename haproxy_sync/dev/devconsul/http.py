"""HTTP plumbing: the read options, responses, tokens, the listening socket, query parameters, bodies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from haproxy_sync.dev.devconsul.decode import _bad_request
from haproxy_sync.dev.devconsul.filter import Predicate
from haproxy_sync.dev.devconsul.records import PASSING, Service, _go_quote, _parse_go_bool

DEFAULT_WAIT: Final = 300.0  # Consul holds a blocking query 5 minutes when no wait is given
MAX_WAIT: Final = 600.0  # ... and never longer than 10 minutes
_JITTER_FRACTION: Final = 16  # Consul adds up to wait/16 so that many waiters do not wake together

_FAULTED_PREFIXES: Final = ("/v1/health/", "/v1/catalog/", "/v1/status/")
_CONTROL_PREFIX: Final = "/v1/devconsul/"
# Endpoints Consul answers without resolving the token (ACL required: none), and the ACL endpoints,
# which resolve it themselves (token/self reads the token by its secret).
_NO_ACL_PREFIXES: Final = ("/v1/status/", "/v1/catalog/datacenters", "/v1/acl/")


@dataclass(frozen=True)
class _ReadOptions:
    """The query parameters every read shares (blocking, consistency, filter, pretty)."""

    min_index: int
    wait: float
    consistency: str
    pretty: bool
    predicate: Predicate | None = field(default=None, compare=False)

    def keep(self, items: Iterable[Any]) -> list[Any]:
        predicate = self.predicate
        return [item for item in items if predicate is None or predicate(item)]


def _text_response(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain", charset="utf-8")


def _json_bytes(payload: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(payload, indent=4).encode()
    return json.dumps(payload, separators=(",", ":")).encode()


def _is_faulted_path(path: str) -> bool:
    return path.startswith(_FAULTED_PREFIXES)


def _request_token(request: web.Request) -> str | None:
    """The token as Consul's parseToken looks for it (agent/http.go): ?token= first, then X-Consul-Token,
    then ``Authorization: Bearer <token>`` (scheme in any case; the first word of the value). None: no token.
    """
    query = request.query.get("token")
    if query:
        return query
    header = request.headers.get("X-Consul-Token")
    if header:
        return header
    parts = request.headers.get("Authorization", "").split(" ")
    if len(parts) > 1 and parts[0].lower() == "bearer":
        value = " ".join(parts[1:]).strip()
        return value.split(" ")[0].strip() or None
    return None


def _reset_transport(transport: asyncio.BaseTransport) -> None:
    """Abort a connection with a TCP RST (SO_LINGER 0), the way a crashed or reset peer looks."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def _bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen synchronously, so that connections queue (not refused) from this moment on."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return _listening(sock, address)


def _bind_unix_listener(path: str) -> socket.socket:
    """Bind and listen on a unix socket at ``path``, as a Consul agent with ``addresses.http =
    "unix:///path"`` does; a socket file left by a previous run (a restart) is replaced."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    return _listening(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path)


def _listening(sock: socket.socket, address: object) -> socket.socket:
    """``sock`` bound to ``address``, listening and non-blocking; closed when any step fails."""
    try:
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise _bad_request("Missing value for enable")
    raw = request.query["enable"]
    try:
        return _parse_go_bool(raw)
    except ValueError:
        raise _bad_request(f"Invalid value for enable: {_go_quote(raw)}") from None


def _passing_param(request: web.Request) -> bool:
    if "passing" not in request.query:
        return False
    raw = request.query["passing"]
    if raw == "":
        return True
    try:
        return _parse_go_bool(raw)
    except ValueError:
        raise _bad_request("Invalid value for ?passing") from None


def _has_tags(service: Service, wanted: Sequence[str]) -> bool:
    """Consul's ?tag= filter: every given tag must be present, compared case-insensitively."""
    have = {tag.lower() for tag in service.tags}
    return all(tag.lower() in have for tag in wanted)


def _all_passing(entry: Mapping[str, Any]) -> bool:
    return all(check["Status"] == PASSING for check in entry["Checks"])


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise _bad_request("Request decode failed: EOF")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _bad_request(f"Request decode failed: {exc}") from None
