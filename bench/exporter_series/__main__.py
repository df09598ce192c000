"""``python -m bench.exporter_series``: the command line of the exporter-series benchmark (from the repo root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package and
must not add a command to it (as the other benchmarks under bench/).
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.common.backends import BackendPool
from bench.common.process import StackError, interrupt_on
from bench.common.report import code_identity, shown
from bench.common.under_test import resolve_binaries, short_version, version_line

from .edge import QUERIES, Params, measure
from .report import table, write_outputs

DEFAULT_SIZES = (100, 1000)
DEFAULT_HAPROXY = "/usr/sbin/haproxy"
RESPONDER = ("Every instance points at one of 10 local ports of a second HAProxy answering 200 to everything "
             "(bench/common's BackendPool), so HAProxy's checks pass.")

DESCRIPTION = """\
Exporter-series benchmark: how many Prometheus series HAProxy's built-in exporter (/metrics on the
rendered config's `frontend stats`) serves per edge at N services x 10 instances, with and without
the no-maint query parameter, where haproxy-sync's pre-created free slots are servers in maintenance.

For each --haproxy binary and each size in --sizes: the config is rendered in-process exactly as the
product renders it (parse_health_entries, pipeline.observe and pipeline.prepare on the built-in template,
write_live with `haproxy -c`; no Consul), run by a fresh master-worker HAProxy, and once its stats
port answers and --settle seconds passed, /metrics, /metrics?no-maint and /metrics?no-maint= are each
scraped --scrapes times. Reported per run: series (non-empty, non-comment lines), server series and
servers exported, bytes, scrape time (median), servers in the config and in maintenance (config and
runtime API). The instances point at a local HAProxy answering 200, so checks pass.

Progress goes to stderr, a markdown table to stdout; <out>.json (every figure, HAProxy version
lines, sizes, date, git commit) and <out>.md (the table and a paragraph) are written. Every process
is stopped and every temp dir removed at the end, on errors and on Ctrl-C; every wait is bounded."""

EPILOG = """\
Default run: sizes 100,1000 on /usr/sbin/haproxy: about 25 s on 2 cores; each further --haproxy adds
  about as much. The measurement in bench/results/exporter_series.* (47 s):
    python -m bench.exporter_series --sizes 100,1000 \\
        --haproxy /usr/sbin/haproxy --haproxy /work/main/.cache/haproxy/3.0.11/haproxy
Smoke run: python -m bench.exporter_series --sizes 5,20 --out /tmp/exporter_series   (seconds)"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.exporter_series", description=DESCRIPTION,
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated service counts [100,1000]")
    parser.add_argument("--haproxy", action="append", metavar="PATH",
                        help=f"an HAProxy binary to measure; repeatable, run in the order given [{DEFAULT_HAPROXY}]")
    parser.add_argument("--out", type=Path, default=RESULTS / "exporter_series",
                        help="output stem: writes <out>.json and <out>.md [bench/results/exporter_series]")
    parser.add_argument("--instances", type=int, default=10, help="instances per service [10]")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the stats port answering and the first scrape, for checks [3]")
    parser.add_argument("--scrapes", type=int, default=3, help="rounds of scrapes of each URL [3]")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="longest wait for HAProxy's worker and for its stats port [60]")
    parser.add_argument("--scrape-timeout", type=float, default=120.0, help="socket timeout of one scrape [120]")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes comma-separated integers, e.g. 100,1000")
    if not args.sizes or any(s < 1 or s > 5000 for s in args.sizes):
        parser.error("keep it bounded: sizes between 1 and 5000 services")
    if not 1 <= args.instances <= 50 or not 0 <= args.settle <= 120 or not 1 <= args.scrapes <= 20:
        parser.error("keep it bounded: 1-50 instances, --settle 0-120 s, --scrapes 1-20")
    if not 1 <= args.start_timeout <= 600 or not 1 <= args.scrape_timeout <= 600:
        parser.error("keep it bounded: --start-timeout and --scrape-timeout 1-600 s")
    args.haproxy = resolve_binaries(parser, args.haproxy, DEFAULT_HAPROXY)
    args.out = args.out.resolve()
    return args


def log_tail(path: Path, lines: int = 6) -> list[str]:
    """The end of HAProxy's log, kept in the row: the work directory is removed at the end of the run."""
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    # Both as KeyboardInterrupt, so the finally blocks stop every process; SIGINT explicitly too,
    # because a shell starts background jobs with SIGINT ignored.
    interrupt_on(signal.SIGTERM, signal.SIGINT)
    try:
        versions = {binary: version_line(binary) for binary in args.haproxy}
    except StackError as exc:
        say(str(exc))
        return 1
    params = Params(instances=args.instances, settle=args.settle, scrapes=args.scrapes,
                    start_timeout=args.start_timeout, scrape_timeout=args.scrape_timeout)
    say(f"exporter series: sizes {','.join(map(str, args.sizes))} x {args.instances} instances on "
        + ", ".join(short_version(v) for v in versions.values()))
    workroot = Path(tempfile.mkdtemp(prefix="haproxy-sync-exporter-"))
    results: list[dict[str, Any]] = []
    pool: BackendPool | None = None
    try:
        pool = BackendPool(workroot / "pool", 10)
        say(f"backend pool answering 200 on ports {pool.ports[0]}..{pool.ports[-1]} ({len(pool.ports)} ports)")
        for binary, line in versions.items():
            for size in args.sizes:
                version = short_version(line)
                say(f"HAProxy {version}, {size} services:")
                row: dict[str, Any] = {"haproxy": binary, "version": version, "services": size}
                try:
                    row.update(measure(binary, size, params, tuple(pool.ports), workroot / f"{version}-{size}", say))
                except Exception as exc:  # one failed run is a row, not the end of the others
                    row["error"] = f"{type(exc).__name__}: {exc}"[:400]
                    row["haproxy_log_tail"] = log_tail(workroot / f"{version}-{size}" / "haproxy.log")
                    say(f"  failed: {row['error']}")
                    for line in row["haproxy_log_tail"]:
                        say(f"    {line}")
                results.append(row)
    except KeyboardInterrupt:
        say("interrupted: every process started was stopped; no results written")
        return 130
    except StackError as exc:
        say(f"cannot run: {exc}")
        return 1
    finally:
        if pool is not None:
            pool.stop()
        shutil.rmtree(workroot, ignore_errors=True)
    command = "python -m bench.exporter_series " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = {
        "benchmark": "exporter_series",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command.strip(),
        "parameters": {"sizes": args.sizes, "haproxy": args.haproxy, "queries": list(QUERIES),
                       "instances": args.instances, "settle": args.settle, "scrapes": args.scrapes,
                       "start_timeout": args.start_timeout, "scrape_timeout": args.scrape_timeout},
        "responder": RESPONDER,
        "environment": {"haproxy_versions": versions, "code": code_identity(), "cpus": os.cpu_count(),
                        "fd_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
    }
    paths = write_outputs(args.out, doc)
    print(table(results))
    say(f"wrote {shown(paths)} in {time.monotonic() - started:.0f} s")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
