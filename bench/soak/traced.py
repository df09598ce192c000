"""``haproxy-sync`` under tracemalloc, for a diagnostic soak run (``python -m bench.soak --tracemalloc``).

Why a wrapper and not a flag of the daemon: leak hunting is not a production feature, and the
daemon's code must stay untouched by the benchmark. This module starts tracemalloc before
``haproxy_sync`` is imported, installs a SIGUSR1 handler, then runs the ordinary console entry
point with the remaining arguments, so the process is the real daemon plus tracing.

On each SIGUSR1 it collects garbage, then writes into ``--dump-dir``:

* ``dump-<n>.tracemalloc``: a tracemalloc snapshot (``tracemalloc.Snapshot.load`` reads it);
* ``dump-<n>.json``: live objects counted by type (gc-tracked objects only), traced memory, and
  the garbage collector's statistics (cyclic garbage found so far, per generation);
* ``dump-<n>.done``: written last, so the benchmark knows both files are complete.

With ``--memory-log`` a thread also appends, every second, the traced memory and its peak since the
previous line (cheap; no snapshot), so that RSS steps can be matched with Python allocation peaks.

The handler runs on the main thread between bytecodes (asyncio's wakeup fd wakes the loop), so the
event loop stops for the second or two a snapshot takes; acceptable for a diagnostic run only.
"""

from __future__ import annotations

import argparse
import gc
import json
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType


def _dump(directory: Path, number: int) -> None:
    # Before collecting: what the collector has found so far, per generation. Cyclic garbage is not
    # a leak, but it piles up between full collections and lifts RSS's high-water mark in steps.
    stats_before = gc.get_stats()
    pending = gc.get_count()
    unreachable = gc.collect()
    base = directory / f"dump-{number}"
    tracemalloc.take_snapshot().dump(f"{base}.tracemalloc")
    types = Counter(f"{type(obj).__module__}.{type(obj).__qualname__}" for obj in gc.get_objects())
    current, peak = tracemalloc.get_traced_memory()
    base.with_suffix(".json").write_text(json.dumps({
        "traced_current_bytes": current, "traced_peak_bytes": peak, "gc_objects": sum(types.values()),
        "gc_stats": stats_before, "gc_pending": pending, "gc_unreachable_at_dump": unreachable,
        "types": dict(types.most_common(400)),
    }))
    (directory / f"dump-{number}.done").write_text("ok\n")


def _log_traced_memory(path: Path, every: float, limit: int = 1_000_000) -> None:
    """Every ``every`` seconds: ``<monotonic> <traced now> <traced peak since the last line>``.

    Why: a snapshot is too heavy to take often, and it lifts RSS itself. These two numbers are
    cheap, and they say whether an RSS step of the untraced process comes with a peak of Python
    allocations (then the allocator kept the peak's pages) or with none (then it is below Python).
    CLOCK_MONOTONIC is system-wide, so the benchmark lines these up with its own samples.
    """
    with path.open("a", buffering=1) as log:
        for _ in range(limit):
            current, peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            log.write(f"{time.monotonic():.3f} {current} {peak}\n")
            time.sleep(every)


def main(argv: list[str] | None = None) -> None:
    """Start tracemalloc, install the SIGUSR1 dump, then hand over to haproxy-sync's own entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak.traced",
                                     description="Run haproxy-sync with tracemalloc; SIGUSR1 writes a snapshot.")
    parser.add_argument("--dump-dir", type=Path, required=True, help="where snapshots are written")
    parser.add_argument("--frames", type=int, default=10, help="frames kept per allocation [10]")
    parser.add_argument("--memory-log", type=Path, help="append traced memory (now, peak) to this file")
    parser.add_argument("--memory-every", type=float, default=1.0, help="seconds between --memory-log lines [1]")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="-- then haproxy-sync's own arguments")
    ns = parser.parse_args(argv)
    tracemalloc.start(ns.frames)
    ns.dump_dir.mkdir(parents=True, exist_ok=True)
    dumps = 0

    def on_usr1(signum: int, frame: FrameType | None) -> None:
        nonlocal dumps
        dumps += 1
        _dump(ns.dump_dir, dumps)

    signal.signal(signal.SIGUSR1, on_usr1)
    if ns.memory_log is not None:
        threading.Thread(target=_log_traced_memory, args=(ns.memory_log, ns.memory_every),
                         name="traced-memory-log", daemon=True).start()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    sys.argv = ["haproxy-sync", *args]
    from haproxy_sync.cli import entrypoint  # imported after tracemalloc.start(), so imports are traced too

    entrypoint()


if __name__ == "__main__":
    main()
