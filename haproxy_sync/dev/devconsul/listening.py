"""The listener and the fault switch: serving a socket, refusing and resetting connections on demand."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import ssl
from typing import Any

from aiohttp import web

from haproxy_sync.dev.devconsul.base import ServerBase
from haproxy_sync.dev.devconsul.faults import _NO_FAULT, Fault, make_fault
from haproxy_sync.dev.devconsul.http import _bind_listener, _reset_transport
from haproxy_sync.dev.devconsul.records import _kv, _log


class Listening(ServerBase):
    """Listening on the port, and switching faults (refuse and reset act on the listener)."""

    _ssl_context: ssl.SSLContext | None
    _runner: web.AppRunner | None
    _server: asyncio.Server | None
    _listen_task: asyncio.Task[None] | None
    _pending_sock: socket.socket | None

    async def _serve(self, sock: socket.socket) -> None:
        """Serve a socket bound by _bind_pending, unless _stop_listening closed it before we got here.

        create_server(start_serving=False) returns without suspending, so `_server` is set before
        anything else can run, and a later _stop_listening finds it and closes it.
        """
        assert self._loop is not None and self._runner is not None and self._runner.server is not None
        if sock is not self._pending_sock:
            return
        self._pending_sock = None
        try:
            server = await self._loop.create_server(
                self._runner.server, sock=sock, ssl=self._ssl_context, backlog=1024, start_serving=False
            )
        except BaseException:
            sock.close()
            raise
        if self._fault.name == "refuse" or self._stopping:
            server.close()
            return
        self._server = server
        await server.start_serving()

    def _bind_pending(self) -> socket.socket:
        """Bind and listen now, synchronously, so connections queue (not refused) from this moment on."""
        sock = _bind_listener(self.host, self.port)
        self._pending_sock = sock
        return sock

    def _stop_listening(self, spare: asyncio.BaseTransport | None) -> None:
        """Close the listener (or the one about to be served) and reset every connection but `spare`."""
        if self._pending_sock is not None:
            self._pending_sock.close()
            self._pending_sock = None
        if self._server is not None:
            self._server.close()
            self._server = None
        self._reset_connections(spare)

    def _reset_connections(self, spare: asyncio.BaseTransport | None) -> None:
        """Reset every open connection (idle keep-alive ones too) except `spare`."""
        server = self._runner.server if self._runner is not None else None
        for connection in server.connections if server is not None else ():
            transport = connection.transport
            if transport is not None and transport is not spare:
                _reset_transport(transport)

    def _resume_listening(self) -> None:
        """Listen on the same port again: bound at once, served by a task on the next loop turn."""
        assert self._loop is not None
        if self._server is not None or self._pending_sock is not None:
            return
        sock = self._bind_pending()
        self._listen_task = self._loop.create_task(self._serve(sock), name="devconsul-listen")

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
