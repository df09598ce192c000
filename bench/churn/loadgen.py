"""A bounded keep-alive HTTP/1.1 load generator that timestamps every request (stdlib only).

Why not wrk: wrk (installed from Debian) reports totals only, and the churn benchmark has to say
*when* requests failed (to plot failures against the changes that caused them) and has to compare
latency and throughput inside exact time windows (quiet blocks interleaved with churn blocks). So this
generator records, for every response, its completion time on the system-wide monotonic clock (the
orchestrator's change timestamps use the same clock) and its latency; for every failure its time
and kind, with wrk's meaning of a failure: the request was written and no response came (read or
write error, reset, EOF) or the connection could not be made, or no answer within the timeout.

Cheap by construction, because the machine has 2 cores shared by two HAProxy processes, the daemon
under test and devconsul: one process, one asyncio loop, ``asyncio.Protocol`` callbacks (no
streams, no tasks per request), one fixed request, a parser that only finds the header end, the
status and ``Content-Length``. The generator is usually the bottleneck; that is why throughput is
only ever reported as a ratio to a baseline measured by the same generator in the same run.

Long-lived streams (scenario 2) run on the same loop: ``--streams N`` keeps N streaming requests
open at once; each asks the streaming backend for 10-30 s of chunks and counts as failed when the
connection ends before the final chunk.

Bounded: it stops after ``--duration`` seconds (and after ``--max-requests``), closes every
connection, writes its results and exits. Run it as a script::

    python bench/churn/loadgen.py --port 8080 --connections 50 --duration 30 --out /tmp/load
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from array import array
from pathlib import Path
from typing import Any

REQUEST_TIMEOUT = 5.0  # seconds without an answer before a request counts as a timeout failure
RECONNECT_DELAY = 0.01  # pause after a failed connect, so a closed port cannot spin the loop
STREAM_HOST = "stream.local"


class Recorder:
    """Every response (time, latency, status) in compact arrays; every failure as (time, kind)."""

    def __init__(self, max_requests: int) -> None:
        self.max_requests = max_requests
        self.t_end = array("d")
        self.latency = array("f")
        self.status = array("H")
        self.failures: list[tuple[float, str]] = []
        self.streams: list[dict[str, Any]] = []

    def response(self, now: float, latency: float, status: int) -> None:
        self.t_end.append(now)
        self.latency.append(latency)
        self.status.append(status)

    def failure(self, now: float, kind: str) -> None:
        self.failures.append((now, kind))

    @property
    def full(self) -> bool:
        return len(self.t_end) >= self.max_requests


class KeepAlive(asyncio.Protocol):
    """One keep-alive connection sending the next request as soon as the last answer is complete."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.sent_at = 0.0
        self.pending = False  # a request is written and its answer is not complete
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.gen.open.add(self)
        self.send()

    def send(self) -> None:
        if not self.gen.running or self.transport is None:
            self.close()
            return
        self.buffer = b""
        self.sent_at = time.monotonic()
        self.pending = True
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        length = 0
        at = head.find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else None])
        if len(self.buffer) < end + 4 + length:
            return  # body not complete yet
        now = time.monotonic()
        try:
            status = int(self.buffer[9:12])
        except ValueError:
            status = 0
        self.pending = False
        self.gen.recorder.response(now, now - self.sent_at, status)
        if b"\r\nconnection: close" in head:
            self.close()  # the server said so (HAProxy's idle-close-on-response): not a failure
            self.gen.reconnect()
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gen.open.discard(self)
        if self.closed:
            return
        self.closed = True
        if self.pending and self.gen.running:
            self.gen.recorder.failure(time.monotonic(), "reset" if exc else "read")
        self.pending = False
        self.gen.reconnect()

    def timed_out(self, now: float) -> bool:
        return self.pending and now - self.sent_at > REQUEST_TIMEOUT

    def close(self) -> None:
        self.closed = True
        self.pending = False
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self.pending = False
        if self.transport is not None:
            self.transport.abort()


class LoadGen:
    """``connections`` keep-alive connections plus ``streams`` streaming requests, until a deadline."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.host: str = args.host
        self.port: int = args.port
        self.connections: int = args.connections
        self.duration: float = args.duration
        self.streams: int = args.streams
        self.stream_min: float = args.stream_min
        self.stream_max: float = args.stream_max
        self.seed: int = args.seed
        self.request = f"GET / HTTP/1.1\r\nHost: {args.host_header}\r\nUser-Agent: churn-bench\r\n\r\n".encode()
        self.recorder = Recorder(args.max_requests)
        self.open: set[KeepAlive] = set()
        self.running = True
        self.reconnects: set[asyncio.Task[None]] = set()
        self.deadline = 0.0
        self.done = asyncio.Event()

    def reconnect(self) -> None:
        if not self.running:
            return
        task = asyncio.get_running_loop().create_task(self._connect())
        self.reconnects.add(task)
        task.add_done_callback(self.reconnects.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while self.running and time.monotonic() < self.deadline:
            try:
                await loop.create_connection(lambda: KeepAlive(self), self.host, self.port)
                return
            except OSError:
                self.recorder.failure(time.monotonic(), "connect")
                await asyncio.sleep(RECONNECT_DELAY)

    async def _sweep(self) -> None:
        """Time out requests that got no answer; bounded by the deadline."""
        while self.running:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for conn in [c for c in self.open if c.timed_out(now)]:
                self.recorder.failure(now, "timeout")
                conn.abort()
                self.reconnect()
            if self.recorder.full:
                self.done.set()

    async def _stream(self, index: int) -> None:
        """One stream slot: open a stream, read it to its end, record it, open the next one."""
        rng = random.Random(self.seed * 1000 + index)  # per slot, so every mode sees the same streams
        await asyncio.sleep(rng.uniform(0, self.stream_min) * index / max(1, self.streams))
        while self.running and time.monotonic() < self.deadline - 1:
            seconds = round(rng.uniform(self.stream_min, self.stream_max), 1)
            record: dict[str, Any] = {"slot": index, "seconds": seconds, "start": time.monotonic()}
            self.recorder.streams.append(record)
            try:
                record["ok"], record["error"] = await self._read_stream(seconds)
            except asyncio.CancelledError:
                record["ok"], record["error"] = None, "open at end"
                record["end"] = time.monotonic()
                raise
            record["end"] = time.monotonic()
            if record["ok"] is False:
                await asyncio.sleep(0.1)

    async def _read_stream(self, seconds: float) -> tuple[bool, str]:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            return False, f"connect: {exc.strerror or exc}"
        try:
            writer.write(
                f"GET /stream?seconds={seconds} HTTP/1.1\r\nHost: {STREAM_HOST}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            body = b""
            deadline = time.monotonic() + seconds + 15
            while time.monotonic() < deadline:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=10)
                if not chunk:
                    break
                body += chunk
                if body.endswith(b"0\r\n\r\n"):
                    break
            if not body.startswith(b"HTTP/1.1 200"):
                return False, f"status: {body[:40]!r}"
            if b"end\n" in body and body.endswith(b"0\r\n\r\n"):
                return True, ""
            return False, f"cut after {body.count(b'tick')} chunks"
        except (OSError, TimeoutError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.deadline = time.monotonic() + self.duration + 30  # connect phase bound
        await asyncio.gather(*(
            loop.create_connection(lambda: KeepAlive(self), self.host, self.port) for _ in range(self.connections)
        ))
        started = time.monotonic()
        self.deadline = started + self.duration
        print(f"READY {started:.6f}", flush=True)
        sweeper = loop.create_task(self._sweep())
        streams = [loop.create_task(self._stream(i)) for i in range(self.streams)]
        with contextlib.suppress(TimeoutError):  # the sweeper sets `done` early when --max-requests is hit
            await asyncio.wait_for(self.done.wait(), timeout=max(0.0, self.deadline - time.monotonic()))
        self.running = False
        stopped = time.monotonic()
        tasks = [sweeper, *streams, *self.reconnects]
        for task in tasks:
            task.cancel()
        _, stuck = await asyncio.wait(tasks, timeout=5)  # bounded: a stuck close must not hold the run
        if stuck:
            print(f"{len(stuck)} tasks did not finish within 5 s of the end", file=sys.stderr, flush=True)
        for conn in list(self.open):
            conn.close()
        return {"started": started, "stopped": stopped}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host-header", default="cabify.local")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, required=True, help="seconds of load after all connect")
    parser.add_argument("--max-requests", type=int, default=50_000_000)
    parser.add_argument("--streams", type=int, default=0, help="streaming requests kept open at once")
    parser.add_argument("--stream-min", type=float, default=10.0)
    parser.add_argument("--stream-max", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="prefix of the result files")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("this benchmark only ever sends load to the loopback address")
    gen = LoadGen(args)
    times = asyncio.run(gen.run())
    rec = gen.recorder
    with open(f"{args.out}.t", "wb") as handle:
        rec.t_end.tofile(handle)
    with open(f"{args.out}.lat", "wb") as handle:
        rec.latency.tofile(handle)
    with open(f"{args.out}.status", "wb") as handle:
        rec.status.tofile(handle)
    summary = {**times, "responses": len(rec.t_end), "failures": rec.failures, "streams": rec.streams}
    Path(f"{args.out}.json").write_text(json.dumps(summary))
    print(f"DONE {len(rec.t_end)} responses, {len(rec.failures)} failures", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
