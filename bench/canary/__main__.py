"""``python -m bench.canary``: the command line of the canary-share benchmark (from the repo root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package and
must not add a command to it (as the other benchmarks under bench/).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS
from bench.common.process import StackError, interrupt_on
from bench.common.report import code_identity, shown
from bench.common.under_test import resolve_binaries, run_per_binary, short_version, version_line
from haproxy_sync.values import parse_canary_share

from .report import table, write_outputs
from .scenario import BATCH, CANARIES, STABLE, START_SHARE, THREE_CANARIES_SHARE, Params, run
from .stack import WEIGHTS_ONLY

DEFAULT_SHARES = ("1%", "10%", "50%")
DEFAULT_HAPROXY = "/usr/sbin/haproxy"

DESCRIPTION = f"""\
Canary-share benchmark: the share of requests a service's canaries get through a real HAProxy kept by
the real haproxy-sync daemon (`canary_tag = "canary"`, `canary_share` in its [[services]] table), against
the share its weights promise (haproxy_sync.canary.split), with no reload and no failed request while
the share changes.

Per --haproxy binary, one stack: devconsul (in a thread), {len(STABLE)} stable instances and up to
{len(CANARIES)} canaries (each a one-port HAProxy answering its own id), `haproxy-sync run` and a
master-worker HAProxy. The daemon starts at canary_share {START_SHARE} with 1 canary, then: each share
of --shares (config.toml edited, SIGHUP), {len(CANARIES)} canaries at {THREE_CANARIES_SHARE}, and the canary promoted
(re-registered without the tag: 1/{len(STABLE) + 1} expected). After each change requests go on over the
one keep-alive connection until HAProxy's runtime weights are the new ones, then --requests requests
are counted by who answered; HAProxy's master reload counter is read before and after.

Progress goes to stderr, a markdown table to stdout; <out>.json (every figure, per-instance counts,
HAProxy version lines, date, git commit) and <out>.md (the table and a paragraph) are written. Every
process is stopped and every temp dir removed at the end, on errors and on Ctrl-C; every wait is bounded."""

EPILOG = """\
Default run: shares 1%,10%,50%, 10,000 requests per row, on /usr/sbin/haproxy: about 15 s on 2 cores;
  each further --haproxy adds about as much. The measurement in bench/results/canary.* (27 s):
    python -m bench.canary --haproxy /usr/sbin/haproxy --haproxy /work/main/.cache/haproxy/3.0.11/haproxy
Smoke run: python -m bench.canary --shares 10% --requests 500 --out /tmp/canary   (seconds)"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.canary", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shares", default=",".join(DEFAULT_SHARES),
                        help="comma-separated canary shares for 7 stable + 1 canary, as config.toml takes them "
                             "(`2.5%%`), applied in this order [" + ",".join(DEFAULT_SHARES).replace("%", "%%") + "]")
    parser.add_argument("--requests", type=int, default=10_000, help="requests counted per row [10000]")
    parser.add_argument("--haproxy", action="append", metavar="PATH",
                        help=f"an HAProxy binary to measure; repeatable, run in the order given [{DEFAULT_HAPROXY}]")
    parser.add_argument("--out", type=Path, default=RESULTS / "canary",
                        help="output stem: writes <out>.json and <out>.md [bench/results/canary]")
    parser.add_argument("--change-timeout", type=float, default=30.0,
                        help="longest wait for HAProxy's weights after a change [30]")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="longest wait for devconsul's checks and for haproxy-sync's /ready [60]")
    args = parser.parse_args(argv)
    args.shares = [f"{s}%" if re.fullmatch(r"[0-9.]+", s) else s for s in map(str.strip, args.shares.split(",")) if s]
    try:
        values = [parse_canary_share(share) for share in args.shares]
    except ValueError as exc:
        parser.error(f"--shares: {exc}")
    start = parse_canary_share(START_SHARE)
    if not values or any(a == b for a, b in zip([start, *values], values, strict=False)):
        parser.error("--shares: one share or more, each different from the one before (the first from "
                     f"{START_SHARE}, where the daemon starts), so that each is a change")
    if not 100 <= args.requests <= 1_000_000:
        parser.error("keep it bounded: --requests between 100 and 1000000")
    if not 1 <= args.change_timeout <= 600 or not 1 <= args.start_timeout <= 600:
        parser.error("keep it bounded: --change-timeout and --start-timeout 1-600 s")
    args.haproxy = resolve_binaries(parser, args.haproxy, DEFAULT_HAPROXY)
    args.out = args.out.resolve()
    return args


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
    params = Params(shares=tuple(args.shares), requests=args.requests, change_timeout=args.change_timeout,
                    start_timeout=args.start_timeout)
    say(f"canary shares: {len(STABLE)} stable + 1 canary at {', '.join(args.shares)}, {len(CANARIES)} canaries at "
        f"{THREE_CANARIES_SHARE}, promoted; {args.requests:,} requests a row on "
        + ", ".join(short_version(v) for v in versions.values()))
    workroot = Path(tempfile.mkdtemp(prefix="haproxy-sync-canary-"))
    try:
        runs = run_per_binary(versions, workroot, say, lambda binary, workdir: run(binary, workdir, params, say),
                              {"rows": []})
    except KeyboardInterrupt:
        say("interrupted: every process started was stopped; no results written")
        return 130
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    command = "python -m bench.canary " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = {
        "benchmark": "canary",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command.strip(),
        "parameters": {"shares": args.shares, "requests": args.requests, "haproxy": args.haproxy,
                       "stable": len(STABLE), "canaries": len(CANARIES), "start_share": START_SHARE,
                       "three_canaries_share": THREE_CANARIES_SHARE, "batch": BATCH,
                       "change_timeout": args.change_timeout, "start_timeout": args.start_timeout},
        "weights_only_words": WEIGHTS_ONLY,
        "environment": {"haproxy_versions": versions, "code": code_identity(), "cpus": os.cpu_count(),
                        "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
    }
    paths = write_outputs(args.out, doc)
    print(table(runs))
    say(f"wrote {shown(paths)} in {time.monotonic() - started:.0f} s")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
