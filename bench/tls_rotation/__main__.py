"""``python -m bench.tls_rotation``: the command line of the TLS-rotation benchmark (from the repo root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package and
must not add a command to it (as the other benchmarks under bench/).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS
from bench.common.process import StackError, interrupt_on
from bench.common.report import code_identity, first_line, shown
from bench.common.syncers import parse_setting
from bench.common.under_test import resolve_binaries, run_per_binary, short_version, version_line

from .load import wrk_binary
from .pem import DAYS, NAMES
from .report import table, write_outputs
from .scenario import PROBE_PAUSE, Params, run
from .stack import INSTANCES, MODES, SERVICE

DEFAULT_HAPROXY = "/usr/sbin/haproxy"

DESCRIPTION = """\
TLS-rotation benchmark: the default certificate rotated --rotations times under wrk's HTTPS keep-alive
load, two ways side by side on the same HAProxy binary:

  A  haproxy-sync's way: the real `haproxy-sync run` with [tls] enabled = true, cert_dir, store_dir and
     bind; a rotation is a new default.pem written aside (.default.pem.new) and renamed in; the daemon's
     directory watch applies it on HAProxy's Runtime API (set ssl cert + commit ssl cert), no reload.
  B  rotation by reload, what consul-template does: the same config (rendered by haproxy-sync run --once)
     with `crt <dir>/default.pem` on the HTTPS bind, run by HAProxy alone; a rotation is the same atomic
     replace, then `reload` on the master socket (bench/common's reload_command, run with sh -c).
  C  (only with --modes ...,C) B on a config without `option idle-close-on-response`, as a typical
     consul-template template has it: what that option is worth to a reload.

Per --haproxy binary: devconsul (in a thread) and 3 instances of `cabify` (bench/common's BackendPool),
then each mode on a fresh edge. wrk starts, after --warmup s the rotations begin, one every --interval
s; after each, fresh TLS handshakes (SNI localhost, no verification) until one shows the new
certificate's SHA-1 fingerprint (at most --serve-timeout s): the rotation latency. Reported per mode:
requests, requests/s, failed requests (wrk's socket errors + non-2xx), reloads (the master's `show proc`
counter before and after), HAProxy workers started, rotation latency p50/max, every rotation served.

Progress goes to stderr, a markdown table to stdout; <out>.json (every figure, per-rotation latencies,
wrk's output, HAProxy version lines, date, git commit) and <out>.md (the table and a paragraph) are
written. Every process is stopped and every temp dir removed at the end, on errors and on Ctrl-C;
every wait is bounded."""

EPILOG = """\
Default run: 20 rotations 1 s apart per mode, modes A and B, on /usr/sbin/haproxy: about 50 s on 2 cores;
  each further --haproxy adds about as much, mode C about 25 s a binary. The measurements in bench/results:
    python -m bench.tls_rotation --haproxy /usr/sbin/haproxy --haproxy /work/main/.cache/haproxy/3.0.11/haproxy
    python -m bench.tls_rotation --haproxy /usr/sbin/haproxy --haproxy /work/main/.cache/haproxy/3.0.11/haproxy \\
        --modes A,B,C --haproxy-sync-set 'sync.ready_without_consul="0s"' --out bench/results/tls_rotation.workaround
Smoke run: python -m bench.tls_rotation --rotations 2 --interval 0.5 --out /tmp/tls_rotation   (seconds)"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def setting(item: str) -> tuple[str, str, str]:
    try:
        return parse_setting(item)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--haproxy-sync-set {item!r}: ")) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.tls_rotation", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rotations", type=int, default=20, help="rotations per mode [20]")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds from one rotation to the next (a slower rotation delays the next) [1.0]")
    parser.add_argument("--haproxy", action="append", metavar="PATH",
                        help=f"an HAProxy binary to measure; repeatable, run in the order given [{DEFAULT_HAPROXY}]")
    parser.add_argument("--modes", default="A,B",
                        help="which modes, in this order, of A, B and C (B without idle-close-on-response) [A,B]")
    parser.add_argument("--out", type=Path, default=RESULTS / "tls_rotation",
                        help="output stem: writes <out>.json and <out>.md [bench/results/tls_rotation]")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t [2]")
    parser.add_argument("--connections", type=int, default=16, help="wrk -c: kept-alive connections [16]")
    parser.add_argument("--wrk-timeout", type=float, default=2.0, help="wrk --timeout, seconds [2]")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the first rotation [2]")
    parser.add_argument("--tail", type=float, default=2.0, help="seconds of load after the last rotation [2]")
    parser.add_argument("--serve-timeout", type=float, default=10.0,
                        help="longest wait for a rotation's certificate to be served [10]")
    parser.add_argument("--start-timeout", type=float, default=60.0,
                        help="longest wait for devconsul, HAProxy, haproxy-sync's /ready and the first HTTPS 200 [60]")
    parser.add_argument("--haproxy-sync-set", action="append", default=[], type=setting, metavar="SECTION.KEY=TOML",
                        help="add a setting to haproxy-sync's config.toml (mode A's daemon; mode B and C render their "
                             "config from it too), e.g. 'sync.ready_without_consul=\"0s\"' (repeatable; recorded in "
                             "the JSON)")
    args = parser.parse_args(argv)
    args.modes = [m.strip().upper() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes) or len(set(args.modes)) != len(args.modes):
        parser.error("--modes: some of A, B and C, comma-separated, each once")
    if not 1 <= args.rotations <= 500 or not 0.05 <= args.interval <= 60:
        parser.error("keep it bounded: --rotations 1-500, --interval 0.05-60 s")
    if not 1 <= args.threads <= 64 or not args.threads <= args.connections <= 10_000:
        parser.error("keep it bounded: --threads 1-64, --connections from --threads to 10000")
    if not 0.1 <= args.wrk_timeout <= 60 or not 0 <= args.warmup <= 60 or not 0 <= args.tail <= 60:
        parser.error("keep it bounded: --wrk-timeout 0.1-60 s, --warmup and --tail 0-60 s")
    if not 0.5 <= args.serve_timeout <= 120 or not 1 <= args.start_timeout <= 600:
        parser.error("keep it bounded: --serve-timeout 0.5-120 s, --start-timeout 1-600 s")
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
        wrk = wrk_binary()
    except StackError as exc:
        say(str(exc))
        return 1
    try:
        versions = {binary: version_line(binary) for binary in args.haproxy}
    except StackError as exc:
        say(str(exc))
        return 1
    params = Params(rotations=args.rotations, interval=args.interval, threads=args.threads,
                    connections=args.connections, wrk_timeout=args.wrk_timeout, warmup=args.warmup, tail=args.tail,
                    serve_timeout=args.serve_timeout, start_timeout=args.start_timeout, modes=tuple(args.modes),
                    settings=tuple(args.haproxy_sync_set))
    say(f"tls rotation: modes {','.join(args.modes)}, {args.rotations} rotations {args.interval:g} s apart under "
        f"wrk -t{args.threads} -c{args.connections}, on " + ", ".join(short_version(v) for v in versions.values()))
    workroot = Path(tempfile.mkdtemp(prefix="haproxy-sync-tls-rotation-"))
    try:
        runs = run_per_binary(versions, workroot, say, lambda binary, workdir: run(binary, workdir, params, say),
                              {"modes": []})
    except KeyboardInterrupt:
        say("interrupted: every process started was stopped; no results written")
        return 130
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
    command = "python -m bench.tls_rotation " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = {
        "benchmark": "tls_rotation",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command.strip(),
        "parameters": {"rotations": args.rotations, "interval": args.interval, "modes": args.modes,
                       "haproxy": args.haproxy, "threads": args.threads, "connections": args.connections,
                       "wrk_timeout": args.wrk_timeout, "warmup": args.warmup, "tail": args.tail,
                       "serve_timeout": args.serve_timeout, "start_timeout": args.start_timeout,
                       "probe_pause": PROBE_PAUSE, "service": SERVICE, "instances": INSTANCES,
                       "certificate_names": list(NAMES), "certificate_days": DAYS,
                       "haproxy_sync_set": [f"{sec}.{key}={value}" for sec, key, value in args.haproxy_sync_set]},
        "environment": {"haproxy_versions": versions, "wrk": first_line([wrk, "--version"]), "code": code_identity(),
                        "cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "runs": runs,
    }
    paths = write_outputs(args.out, doc)
    print(table(runs))
    say(f"wrote {shown(paths)} in {time.monotonic() - started:.0f} s")
    failed = any("error" in r for r in runs) or any("error" in m for r in runs for m in r["modes"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
