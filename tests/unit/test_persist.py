"""The background writer: texts within the interval fold into one write, a flush writes at once, the
text on disk is always the last one submitted, and a failed write is reported, not raised: retried
with backoff on a disk fault, with one attempt per flush."""

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
        writer = BackgroundWriter(disk.write, lambda exc, failed: None, (OSError,), interval=60)
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
        writer = BackgroundWriter(disk.write, lambda exc, failed: None, (OSError,), interval=60)
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
        writer = BackgroundWriter(disk.write, lambda exc, failed: None, (OSError,), interval=0)
        writer.submit("b")
        await asyncio.sleep(0.05)  # "b" is being written
        writer.wrote("a")  # meanwhile the reload path wrote "a"... and HAProxy runs "a"
        writer.submit("a")
        release.set()
        await writer.flush()
        return disk.writes

    assert asyncio.run(scenario()) == ["b", "a"], "the disk must end on what HAProxy runs"


def test_a_refused_text_is_reported_and_not_retried() -> None:
    async def scenario() -> tuple[list[tuple[str, int]], str | None, bool]:
        failures: list[tuple[str, int]] = []
        writer = BackgroundWriter(Disk(fail=True).write, lambda exc, n: failures.append((str(exc), n)), (OSError,),
                                  interval=0)
        writer.submit("a")
        await writer.flush()
        return failures, writer.written, writer.owed

    failures, written, owed = asyncio.run(scenario())
    assert failures == [("disk full", 1)] and written is None and not owed


def test_a_disk_fault_keeps_the_text_owed_and_retried_until_it_clears() -> None:
    async def scenario() -> tuple[list[int], list[str], bool, float]:
        disk, attempts = Disk(fail=True), []

        def retry(exc: Exception, failed: int) -> float:
            attempts.append(failed)
            if failed == 3:
                disk.fail = False  # the disk is writable again before the fourth try
            return 0.01

        writer = BackgroundWriter(disk.write, retry, (OSError,), interval=0)
        writer.submit("a")
        started = asyncio.get_running_loop().time()
        await writer.flush()  # one attempt only: a reload must not wait for the disk
        flushed_in = asyncio.get_running_loop().time() - started
        assert writer.owed and attempts == [1]
        writer.submit("b")  # a newer text replaces the owed one
        for _ in range(100):
            if not writer.owed:
                break
            await asyncio.sleep(0.01)
        return attempts, disk.writes, writer.owed, flushed_in

    attempts, writes, owed, flushed_in = asyncio.run(scenario())
    assert attempts == [1, 2, 3] and writes == ["b"] and not owed and flushed_in < 1


def test_what_the_reload_path_wrote_ends_an_owed_retry() -> None:
    async def scenario() -> tuple[list[str], bool]:
        disk = Disk(fail=True)
        writer = BackgroundWriter(disk.write, lambda exc, n: 0.05, (OSError,), interval=0)
        writer.submit("a")
        await writer.flush()
        writer.wrote("b")  # the reload path wrote a newer text (the disk came back for it)
        disk.fail = False
        await asyncio.sleep(0.15)
        return disk.writes, writer.owed

    assert asyncio.run(scenario()) == ([], False), "the older owed text must never overwrite the newer one"


def test_a_text_made_moot_during_the_pause_is_not_written() -> None:
    async def scenario() -> tuple[list[str], bool]:
        disk = Disk()
        writer = BackgroundWriter(disk.write, lambda exc, n: None, (OSError,), interval=0.2)
        writer.submit("a")
        await asyncio.sleep(0.05)  # "a" written; the next write waits out the interval
        writer.submit("b")
        await asyncio.sleep(0.05)
        writer.wrote("c")  # meanwhile the reload path wrote "c": nothing is owed any more
        await asyncio.sleep(0.3)
        return disk.writes, writer.owed

    assert asyncio.run(scenario()) == (["a"], False)
