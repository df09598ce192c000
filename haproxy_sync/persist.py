"""Writing what HAProxy already runs to disk, in the background and folded.

After a Runtime API apply HAProxy runs the new servers at once; the file on disk must say the same
(a restart must run what ran), but each write runs ``haproxy -c`` (tens of ms of CPU). Under churn the
texts of changes that come within ``interval`` fold into one write; a stop or a reload asks for the
pending write at once. A newer text replaces one not yet written.

A write that fails is handed to ``on_failure``, which says whether to try again and when: a disk
fault (read-only, full) keeps the text owed and retried with backoff while Runtime API changes go
on; a text HAProxy refuses is not retried (the daemon then reloads, which finds the instance to blame).
A flush makes one attempt: the reload path that asked for it must not wait for a disk to come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

P = TypeVar("P")


@dataclass(frozen=True)
class Files:
    """What one apply leaves on disk: the config and the routes map HAProxy runs with it (None: no map).

    Written as a pair by one writer, so the map on disk never goes back to an older apply's routes.
    """

    config: str
    routes: str | None = None

#: (the error, how many writes failed in a row) -> seconds until the next try, or None for no retry.
OnFailure = Callable[[Exception, int], float | None]


class BackgroundWriter(Generic[P]):
    """One writer per daemon; ``write`` and ``on_failure`` run in a worker thread and on the loop. What it
    writes (``P``) is compared for equality only: the daemon's :class:`Files`, a test's strings."""

    def __init__(self, write: Callable[[P], None], on_failure: OnFailure,
                 failures: tuple[type[Exception], ...], interval: float) -> None:
        self._write = write
        self._on_failure = on_failure
        self._failures = failures
        self._interval = interval
        self._unwritten: P | None = None
        self._in_flight: P | None = None
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()
        self._written_at = float("-inf")
        self._retry_at = float("-inf")
        self.failed = 0  # writes failed in a row
        self.written: P | None = None  # what is on disk by this daemon's hand

    @property
    def owed(self) -> bool:
        """A text HAProxy runs is not on disk yet (pending, under way, or waiting to be retried)."""
        return self._unwritten is not None or self._in_flight is not None

    def submit(self, text: P) -> None:
        """Have ``text`` written soon; replaces a text not yet written. A text already on disk, with no
        other write pending or under way, needs nothing (a pending older text is then dropped)."""
        if text == self.written and self._in_flight is None:
            self._unwritten = None
            return
        self._unwritten = text
        self._start()

    def wrote(self, text: P) -> None:
        """Someone else (the reload path) wrote ``text``: it is what is on disk now."""
        self.written = text
        self._unwritten = None  # anything owed is older than what the reload path wrote
        self.failed, self._retry_at = 0, float("-inf")

    async def flush(self) -> None:
        """Write what is pending now (one attempt), and wait for it."""
        if self._task is not None:
            self._now.set()
            await self._task
            self._now.clear()
            if self._unwritten is not None:
                self._start()  # still owed after a failed attempt: retried after its backoff

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="persist")

    async def _drain(self) -> None:
        while self._unwritten is not None:
            pause = max(self._written_at + self._interval, self._retry_at) - time.monotonic()
            if pause > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), pause)
            text, self._unwritten = self._unwritten, None
            if text is None:
                continue  # during the pause the reload path wrote a newer text, or the one on disk came back
            self._in_flight = text
            try:
                await asyncio.to_thread(self._write, text)
            except self._failures as exc:
                self.failed += 1
                delay = self._on_failure(exc, self.failed)
                if delay is None:
                    continue
                if self._unwritten is None:
                    self._unwritten = text  # still owed, unless a newer text came meanwhile
                self._retry_at = time.monotonic() + delay
                if self._now.is_set():
                    return  # a flush gets one attempt
            else:
                if self.failed:
                    log.info("haproxy.cfg written again after %d failed attempts; disk and HAProxy agree",
                             self.failed)
                self._written_at = time.monotonic()
                self._retry_at = float("-inf")
                self.failed = 0
                self.written = text
            finally:
                self._in_flight = None
