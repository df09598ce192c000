"""Writing what HAProxy already runs to disk, in the background and folded.

After a Runtime API apply HAProxy runs the new servers at once; the file on disk must say the same
(a restart must run what ran), but each write runs ``haproxy -c`` (tens of ms of CPU). Under churn the
texts of changes that come within ``interval`` fold into one write; a stop or a reload asks for the
pending write at once. A newer text replaces one not yet written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable


class BackgroundWriter:
    """One writer per daemon; ``write`` and ``on_failure`` run in a worker thread and on the loop."""

    def __init__(self, write: Callable[[str], None], on_failure: Callable[[Exception], None],
                 failures: tuple[type[Exception], ...], interval: float) -> None:
        self._write = write
        self._on_failure = on_failure
        self._failures = failures
        self._interval = interval
        self._unwritten: str | None = None
        self._in_flight: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()
        self._written_at = float("-inf")
        self.written: str | None = None  # the text last on disk by this daemon's hand

    def submit(self, text: str) -> None:
        """Have ``text`` written soon; replaces a text not yet written. A text already on disk, with no
        other write pending or under way, needs nothing (a pending older text is then dropped)."""
        if text == self.written and self._in_flight is None:
            self._unwritten = None
            return
        self._unwritten = text
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="persist")

    def wrote(self, text: str) -> None:
        """Someone else (the reload path) wrote ``text``: it is what is on disk now."""
        self.written = text

    async def flush(self) -> None:
        """Write what is pending now, and wait for it."""
        if self._task is not None:
            self._now.set()
            await self._task
            self._now.clear()

    async def _drain(self) -> None:
        while self._unwritten is not None:
            pause = self._written_at + self._interval - time.monotonic()
            if pause > 0 and not self._now.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), pause)
            text, self._unwritten = self._unwritten, None
            self._in_flight = text
            try:
                await asyncio.to_thread(self._write, text)
            except self._failures as exc:
                self._on_failure(exc)
            else:
                self._written_at = time.monotonic()
                self.written = text
            finally:
                self._in_flight = None
