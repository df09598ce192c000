"""The process around the daemon's loop: signals, the metrics server, systemd's watchdog, and the
watching of the config file and template. Each is started before the loop and stopped after it, in
reverse order, whatever ends the loop; the daemon itself only hears ``request_stop`` and
``request_reload``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal

from aiohttp import web

from haproxy_sync import filewatch
from haproxy_sync.daemon import Daemon, DaemonError
from haproxy_sync.metrics import start_server

#: CPython's young-generation GC threshold for the daemon (default 700). A cold start with 1,000
#: services allocates about a million containers in two seconds; at 700 that meant four full
#: collections of ~50 ms each (measured, 0.23 s of the cold start); at 10,000, none.
GC_GEN0_THRESHOLD = 10_000


async def serve(daemon: Daemon) -> int:
    """Run ``daemon`` as the process it is: the exit code of its loop; raises :class:`DaemonError`."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            stack.callback(loop.remove_signal_handler, signum)
        server = await _start_metrics(daemon)
        if server is not None:
            stack.push_async_callback(server.cleanup)
        watchdog = asyncio.create_task(_watchdog(daemon))
        stack.push_async_callback(_cancel, watchdog)
        settings = daemon.settings
        if settings.sync.watch_files:  # an edit of the config file or the template counts as SIGHUP
            paths = [p for p in (settings.source, settings.template_path()) if p is not None]
            observer = filewatch.watch(paths, loop, daemon.request_reload)
            if observer is not None:
                stack.push_async_callback(asyncio.to_thread, observer.join, 2)
                stack.callback(observer.stop)  # runs first: the exit stack unwinds in reverse
        return await daemon.run()


async def _start_metrics(daemon: Daemon) -> web.AppRunner | None:
    listen = daemon.settings.metrics.listen
    if not listen:
        return None
    host, _, port = listen.rpartition(":")
    try:
        return await start_server(daemon.metrics, host.strip("[]"), int(port))
    except OSError as exc:
        raise DaemonError(
            f"cannot serve metrics on {listen}: {exc.strerror or exc}; set metrics.listen to a free "
            "address, or to \"\" to turn metrics off"
        ) from None


async def _watchdog(daemon: Daemon) -> None:
    """Ping systemd's watchdog from the loop itself, so a stuck loop stops the pings."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        return
    while True:
        daemon.notifier.notify("WATCHDOG=1")
        await asyncio.sleep(usec / 2_000_000)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
