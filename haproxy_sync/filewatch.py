"""An edit of the config file or the template is treated like SIGHUP (``sync.watch_files``)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import watchdog.events
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

#: The events that are edits. Reads raise events too (opened, closed without writing): counting them
#: would make the daemon's own re-read of the template trigger the next one, forever.
EDIT_EVENTS = frozenset({
    watchdog.events.EVENT_TYPE_CREATED, watchdog.events.EVENT_TYPE_MODIFIED, watchdog.events.EVENT_TYPE_MOVED,
    watchdog.events.EVENT_TYPE_DELETED, watchdog.events.EVENT_TYPE_CLOSED,
})
#: Editors write in several steps (truncate, write, rename): act once the burst is over.
SETTLE_SECONDS = 0.3


def watch(
    paths: Iterable[Path], loop: asyncio.AbstractEventLoop, on_edit: Callable[[str], None]
) -> BaseObserver | None:
    """Call ``on_edit("file changed")`` on ``loop`` once a burst of edits of any of ``paths`` is over.

    Returns the started observer (the caller stops it), or None when there is nothing to watch.
    """
    resolved = {p.resolve() for p in paths}
    if not resolved:
        return None
    # Compared as strings: the directory also sees every write of haproxy.cfg, and a Path per event
    # would intern its parts (measured in bench/soak: it grows CPython's interned-string table).
    watched = {str(p) for p in resolved}
    pending: list[asyncio.TimerHandle] = []

    def later() -> None:
        for handle in pending:
            handle.cancel()
        pending[:] = [loop.call_later(SETTLE_SECONDS, on_edit, "file changed")]

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type not in EDIT_EVENTS:
                return
            ends = (event.src_path, getattr(event, "dest_path", ""))
            touched = {os.path.realpath(os.fsdecode(p)) for p in ends if p}
            if touched & watched:
                loop.call_soon_threadsafe(later)

    return _observe({p.parent for p in resolved}, Handler())


def watch_directory(
    directory: Path, loop: asyncio.AbstractEventLoop, on_edit: Callable[[str], None]
) -> BaseObserver | None:
    """Call ``on_edit("directory changed")`` on ``loop`` once a burst of edits in ``directory`` is over
    (a certificate renewed, added or removed); None when the directory does not exist."""
    if not directory.is_dir():
        return None
    pending: list[asyncio.TimerHandle] = []

    def later() -> None:
        for handle in pending:
            handle.cancel()
        pending[:] = [loop.call_later(SETTLE_SECONDS, on_edit, "directory changed")]

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in EDIT_EVENTS:
                loop.call_soon_threadsafe(later)

    return _observe({directory.resolve()}, Handler())


def _observe(directories: set[Path], handler: FileSystemEventHandler) -> BaseObserver:
    observer = Observer()
    for directory in directories:
        observer.schedule(handler, str(directory), recursive=False)
    observer.daemon = True
    observer.start()
    return observer
