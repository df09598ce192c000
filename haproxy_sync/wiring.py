"""The process around the daemon's loop: the one-daemon lock, signals, the metrics server, systemd's
watchdog, and the watching of the config file and template. Each is started before the loop and stopped after it, in
reverse order, whatever ends the loop; the daemon itself only hears ``request_stop`` and
``request_reload``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import signal
import threading
import time

from aiohttp import web

from haproxy_sync import early_signals, filewatch, limits, lock
from haproxy_sync.daemon import Daemon, DaemonError
from haproxy_sync.metrics import start_server

#: CPython's young-generation GC threshold for the daemon (default 700). A cold start with 1,000
#: services allocates about a million containers in two seconds; at 700 that meant four full
#: collections of ~50 ms each (measured, 0.23 s of the cold start); at 10,000, none.
GC_GEN0_THRESHOLD = 10_000
#: After a stop is asked for, the longest the loop's current step may go on before it is cancelled.
STOP_GRACE = 0.8
#: The share of ``WatchdogSec`` one step of the loop may take before the pings stop.
WATCHDOG_SHARE = 0.75

log = logging.getLogger(__name__)


async def serve(daemon: Daemon) -> int:
    """Run ``daemon`` as the process it is: the exit code of its loop; raises :class:`DaemonError`."""
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    loop = asyncio.get_running_loop()
    async with contextlib.AsyncExitStack() as stack:
        try:
            stack.enter_context(lock.held(daemon.settings.haproxy.config_path))
            daemon.settings = limits.fit(daemon.settings)
        except (lock.LockHeld, limits.LimitError) as exc:
            raise DaemonError(str(exc)) from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
        if early_signals.take():  # one came between exec and now: the settings may be newer than those read
            daemon.request_reload("SIGHUP (before the loop ran)")
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
        if settings.tls.enabled:  # a renewed certificate is applied at once, not at the next tls.check_interval
            cert_observer = filewatch.watch_directory(settings.tls.cert_dir, loop, daemon.request_cert_look)
            if cert_observer is not None:
                stack.push_async_callback(asyncio.to_thread, cert_observer.join, 2)
                stack.callback(cert_observer.stop)
        return await _run_until_stopped(daemon)


async def _run_until_stopped(daemon: Daemon) -> int:
    """``daemon.run()``, and once a stop is asked for, at most :data:`STOP_GRACE` more: a step that
    blocks (a socket that drips, a reload being confirmed, a Consul read that hangs) is cancelled, so
    SIGTERM ends the process in well under 2 s in every state."""
    task = asyncio.create_task(daemon.run(), name="daemon")
    stopping = asyncio.create_task(daemon.stopping.wait(), name="stopping")
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            try:
                return await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
            except TimeoutError:
                log.warning("stopping: the loop is inside a step that blocks; cancelled it to stop within %gs",
                            STOP_GRACE)
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return 0
        return task.result()
    finally:
        stopping.cancel()
        await asyncio.gather(stopping, return_exceptions=True)


def run_process(daemon: Daemon) -> int:
    """Like ``asyncio.run(serve(daemon))``, without waiting for worker threads a cancelled step left
    behind (``asyncio.run`` joins them: a stuck one would hold the process for its whole deadline)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="haproxy-sync")
    loop.set_default_executor(executor)
    try:
        return loop.run_until_complete(serve(daemon))
    finally:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        executor.shutdown(wait=False, cancel_futures=True)
        asyncio.set_event_loop(None)
        loop.close()


def stuck_threads() -> list[threading.Thread]:
    """Worker threads still inside a step after the loop ended; the process exits without them."""
    return [t for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive() and not t.daemon]


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
    """Ping systemd's watchdog while the loop makes progress: a loop blocked, or stuck in one step
    for most of ``WatchdogSec``, stops the pings, and systemd restarts the daemon."""
    usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
    if usec <= 0:
        return
    period = usec / 1_000_000
    warned = False
    while True:
        if daemon.responsive(time.monotonic(), period * WATCHDOG_SHARE):
            daemon.notifier.notify("WATCHDOG=1")
            warned = False
        elif not warned:
            log.error("watchdog: the loop has been in one step for over %.0fs; no longer pinging systemd, "
                      "which restarts haproxy-sync after WatchdogSec (%.0fs)", period * WATCHDOG_SHARE, period)
            warned = True
        await asyncio.sleep(period / 4)


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
