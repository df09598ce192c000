"""The background writer: texts within the interval fold into one write, a flush writes at once, the
text on disk is always the last one submitted, and a failed write is reported, not raised."""

from __future__ import annotations

import asyncio
import threading

from haproxy_sync.persist import BackgroundWriter


class Disk:
    def __init__(self, fail: bool = False, slow: threading.Event | None = None) -> None:
        self.writes: list[str] = []
        self.fail = fail
        self.slow = slow

    def write(self, text: str) -> None:
        if self.slow is not None:
            self.slow.wait(5)
        if self.fail:
            raise OSError("disk full")
        self.writes.append(text)


def test_texts_within_the_interval_fold_into_one_write_and_flush_writes_at_once() -> None:
    async def scenario() -> tuple[list[str], str | None]:
        disk = Disk()
        writer = BackgroundWriter(disk.write, lambda exc: None, (OSError,), interval=60)
        writer.submit("a")
        await asyncio.sleep(0.05)  # the first write goes at once
        for text in ("b", "c", "d"):
            writer.submit(text)
        await writer.flush()
        return disk.writes, writer.written

    writes, written = asyncio.run(scenario())
    assert writes == ["a", "d"] and written == "d"


def test_the_text_already_on_disk_wins_over_an_older_one_still_pending() -> None:
    async def scenario() -> list[str]:
        disk = Disk()
        writer = BackgroundWriter(disk.write, lambda exc: None, (OSError,), interval=60)
        writer.submit("a")
        await asyncio.sleep(0.05)
        writer.submit("b")  # pending, folded behind the interval
        writer.submit("a")  # HAProxy runs "a" again: "b" must not reach the disk
        await writer.flush()
        return disk.writes

    assert asyncio.run(scenario()) == ["a"]


def test_a_text_submitted_during_a_write_is_written_after_it() -> None:
    async def scenario() -> list[str]:
        release = threading.Event()
        disk = Disk(slow=release)
        writer = BackgroundWriter(disk.write, lambda exc: None, (OSError,), interval=0)
        writer.submit("b")
        await asyncio.sleep(0.05)  # "b" is being written
        writer.wrote("a")  # meanwhile the reload path wrote "a"... and HAProxy runs "a"
        writer.submit("a")
        release.set()
        await writer.flush()
        return disk.writes

    assert asyncio.run(scenario()) == ["b", "a"], "the disk must end on what HAProxy runs"


def test_a_failed_write_is_reported_and_the_writer_goes_on() -> None:
    async def scenario() -> tuple[list[Exception], str | None]:
        failures: list[Exception] = []
        writer = BackgroundWriter(Disk(fail=True).write, failures.append, (OSError,), interval=0)
        writer.submit("a")
        await writer.flush()
        return failures, writer.written

    failures, written = asyncio.run(scenario())
    assert [str(f) for f in failures] == ["disk full"] and written is None
