"""Synchronous use: a DevConsul on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from haproxy_sync.dev.devconsul.server import DevConsul


class DevConsulThread:
    """Runs a DevConsul on its own event loop in a daemon thread, for synchronous tests and the sandbox.

    A stopped DevConsulThread can be started again: a restart, as of a Consul agent. The new server
    listens on the port the first one got and takes over its catalog (``DevConsul(restored_from=...)``:
    the same services, checks and indexes, the index going on from where it was), so a client sees
    the port refuse connections while it is stopped, then the same data. Why here: the thread's
    event loop ends with its server, so the one object that outlives both is this wrapper.

    Keyword arguments are DevConsul's (``token=``, ``acl=AclConfig(...)``, ``datacenter=``, ...),
    handed over unchanged, and kept for a restart: the same ACL system comes back with the catalog.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._server: DevConsul | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> DevConsulThread:
        """Start serving; returns once listening, raises what start() raised (e.g. port in use).

        After :meth:`stop`: start again on the same port with the same catalog (see the class).
        """
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("DevConsulThread already started")
        if self._server is not None:  # a restart: the stopped server's port and catalog
            self._kwargs = {**self._kwargs, "port": self._server.port, "restored_from": self._server}
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._main, name="devconsul", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("devconsul did not start within 30 s")
        if self._error is not None:
            self._thread.join(timeout=5)
            raise self._error
        return self

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        try:
            server = DevConsul(**self._kwargs)
            await server.start()
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
            self._ready.set()
            return
        self._server = server
        self._ready.set()
        try:
            await self._stop_requested.wait()
        finally:
            await server.stop()

    def stop(self) -> None:
        """Stop the server and join the thread; safe to call twice or before start()."""
        thread, loop, event = self._thread, self._loop, self._stop_requested
        if thread is None or not thread.is_alive():
            return
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop may already be closing
                loop.call_soon_threadsafe(event.set)
        thread.join(timeout=10)

    def __enter__(self) -> DevConsulThread:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a DevConsul method on its loop and hand back its result or exception."""
        loop, thread = self._loop, self._thread
        if loop is None or self._server is None or thread is None or not thread.is_alive():
            raise RuntimeError("DevConsulThread is not running")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    @property
    def server(self) -> DevConsul:
        if self._server is None:
            raise RuntimeError("DevConsulThread is not running")
        return self._server

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def index(self) -> int:
        return int(self._call(lambda: self.server.index))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call a DevConsul method (``deregister_service``, ...) on its loop, from any thread: catalog
        writes that work even while a fault such as ``refuse`` blocks the HTTP API."""
        return self._call(getattr(self.server, method), *args, **kwargs)

    def set_fault(self, name: str, **params: Any) -> None:
        self._call(self.server.set_fault, name, **params)

    def clear_fault(self) -> None:
        self._call(self.server.clear_fault)
