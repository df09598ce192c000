"""The listener and the fault switch: serving a socket, refusing and resetting connections on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
import weakref
from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.faults import _NO_FAULT, Fault, make_fault
from haproxy_sync.dev.devconsul.http import _bind_listener, _bind_unix_listener, _reset_transport
from haproxy_sync.dev.devconsul.records import _kv, _log

_ACCEPT_BATCH = 128


class Listening(ServerBase):
    """Listening on the port, and switching faults (refuse and reset act on the listener)."""

    _ssl_context: ssl.SSLContext | None
    _runner: web.AppRunner | None
    _listener: socket.socket | None
    _accepting: dict[asyncio.Task[None], socket.socket]
    _transports: weakref.WeakSet[asyncio.BaseTransport]

    def _listen(self, sock: socket.socket) -> None:
        """Serve a bound, listening socket: accept on the loop's reader, each connection handed to aiohttp.

        Not asyncio's create_server: its Server.close() races connections it has just accepted (CPython
        gh-109564: their transport fails to attach to the closed server, and the socket is left to the
        garbage collector). Here the accepted sockets are ours until they have a transport, and stop()
        closes the ones that never got one.
        """
        assert self._loop is not None
        sock.setblocking(False)
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._accept_ready, sock)

    def _accept_ready(self, listener: socket.socket) -> None:
        """Accept what the backlog holds (at most a batch per loop turn) and connect each one."""
        assert self._loop is not None
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection stays queued, tried next turn
                _log.warning("devconsul: accept failed %s", _kv(url=self.url, error=exc))
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._connect(conn), name="devconsul-accept")
            self._accepting[task] = conn
            task.add_done_callback(self._accepted)

    def _accepted(self, task: asyncio.Task[None]) -> None:
        self._accepting.pop(task, None)

    async def _connect(self, conn: socket.socket) -> None:
        """Give an accepted socket its transport and aiohttp handler (the TLS handshake first, if any)."""
        assert self._loop is not None and self._runner is not None and self._runner.server is not None
        try:
            transport, _ = await self._loop.connect_accepted_socket(self._runner.server, conn, ssl=self._ssl_context)
        except BaseException as exc:
            conn.close()
            if not isinstance(exc, OSError):  # OSError: the peer left, or its TLS handshake failed
                raise
            _log.debug("devconsul: connection dropped before its first request %s", _kv(error=exc))
            return
        self._transports.add(transport)

    async def _close_accepting(self) -> None:
        """Close the connections accepted but not yet connected: stop() calls it once listening has ended."""
        pending = dict(self._accepting)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task, conn in pending.items():
            if task.cancelled():  # a task cancelled before it ran never reached its own conn.close()
                conn.close()

    def _stop_listening(self, spare: asyncio.BaseTransport | None) -> None:
        """Close the listener and reset every connection but `spare`."""
        if self._listener is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        self._reset_connections(spare)

    def _reset_connections(self, spare: asyncio.BaseTransport | None) -> None:
        """Reset every open connection (idle keep-alive ones too) except `spare`."""
        for transport in list(self._transports):
            if transport is not spare and not transport.is_closing():
                _reset_transport(transport)

    def _bind(self) -> socket.socket:
        """A listening socket on host:port, or on the unix socket path when there is one."""
        if self.unix_socket:
            return _bind_unix_listener(self.unix_socket)
        return _bind_listener(self.host, self.port)

    def _resume_listening(self) -> None:
        """Listen on the same port again, at once (raises, changing nothing, if the port is taken)."""
        if self._listener is None:
            self._listen(self._bind())

    def set_fault(self, name: str, **params: Any) -> None:
        """Switch a fault on (replacing any other); see FAULTS for names and parameters."""
        self._switch_fault(make_fault(name, params, self._highest_reported), spare=None)

    def clear_fault(self) -> None:
        """Back to normal service (refuse: listening again on the same port)."""
        self._switch_fault(_NO_FAULT, spare=None)

    def _switch_fault(self, fault: Fault, spare: asyncio.BaseTransport | None) -> None:
        started = self._runner is not None and not self._stopping
        if started and self._fault.name == "refuse" and fault.name != "refuse":
            self._resume_listening()  # first: if the port is taken this raises and nothing changed
        previous, self._fault = self._fault, fault
        if started and fault.name == "refuse" and previous.name != "refuse":
            self._stop_listening(spare)
        if started and fault.name == "reset":
            self._reset_connections(spare)
        if fault.name:
            _log.warning("devconsul: fault set %s", _kv(**self._fault_json()))
        elif previous.name:
            _log.warning("devconsul: fault cleared %s", _kv(name=previous.name))
        self._notify()

    def _fault_json(self) -> dict[str, Any]:
        fault = self._fault
        params = {key: value for key, value in dataclasses.asdict(fault).items() if key != "name" and value}
        return {"fault": fault.name or None, **params}
