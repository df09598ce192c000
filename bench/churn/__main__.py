"""``python -m bench.churn``: the command line of the churn benchmark (run from the repository root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package
and must not add a command to it; argparse keeps it dependency-free beyond the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from pathlib import Path

from bench.common import RESULTS
from bench.common.process import StackError, interrupt_on
from bench.common.report import shown
from bench.common.syncers import add_syncer_arguments, find_consul_template, version_of
from bench.common.under_test import use_haproxy
from haproxy_sync import haproxy

from .changes import make_plan
from .report import summarize, table, write_outputs
from .runner import HARNESS_CPU, MODES, SCENARIOS, ModeRun, Params, pin_check, run_mode, shared_stack

# Warm-up: the load's rate still climbs for 6-7 s after its connections are up (the first 1-2 s after the old 5 s
# warm-up were 20-30% low in 4 of the 6 modes of the last full run), and the first quiet block must not catch that.
FULL = {"duration": 60.0, "changes": 200, "blocks": 6, "quiet": 5.0, "guard": 1.0, "warmup": 8.0, "settle": 5.0}
QUICK = {"duration": 8.0, "changes": 30, "blocks": 2, "quiet": 2.0, "guard": 0.5, "warmup": 4.0, "settle": 2.0}
STARTUP_SECONDS = 6.0  # rough cost of bringing one mode's stack up and down, for the time estimate


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.churn",
        description=(
            "Churn benchmark: HAProxy + devconsul + never-bottleneck backends under a keep-alive load; the same "
            "seeded Consul changes (add, remove, flap health, weight) for each mode; reports failed requests, "
            "non-2xx, latency, throughput vs no-churn quiet blocks interleaved with the churn (paired, with a 95% "
            "CI), convergence latency, HAProxy workers and RSS, and the CPU of every process. "
            "Writes bench/results/churn.{json,md,png}. Everything runs on 127.0.0.1 and is stopped at the end "
            "(also on Ctrl-C)."
        ),
        epilog=(
            f"Full run defaults: --duration {FULL['duration']:g} --changes {FULL['changes']} --blocks "
            f"{FULL['blocks']} --quiet-block {FULL['quiet']:g} --guard {FULL['guard']:g} --warmup "
            f"{FULL['warmup']:g}, both scenarios, all modes: about 11.5 minutes. --quick: --duration "
            f"{QUICK['duration']:g} --changes {QUICK['changes']} --blocks {QUICK['blocks']} --quiet-block "
            f"{QUICK['quiet']:g} --guard {QUICK['guard']:g} --warmup {QUICK['warmup']:g}, scenario "
            "short: about 1 minute. Explicit flags override both. Timeline per mode: warm-up, then quiet, churn "
            "1/N, quiet, ..., churn N/N, quiet, then the settle."
        ),
    )
    parser.add_argument("--haproxy", metavar="PATH", help="the HAProxy binary under test (default: the installed one; "
                        "the report names its version)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run of all modes in about a minute: short windows, few changes, scenario short")
    parser.add_argument("--duration", type=float, help="seconds of churn per mode, all blocks together [60; quick 8]")
    parser.add_argument("--changes", type=int, help="Consul changes spread over --duration [200; quick 30]")
    parser.add_argument("--blocks", type=int,
                        help="churn blocks the --duration is cut into, each between two quiet blocks [6; quick 2]")
    parser.add_argument("--quiet-block", type=float, dest="quiet", metavar="SECONDS",
                        help="seconds of each no-churn quiet block (one before, between and after the churn "
                             "blocks) [5; quick 2]")
    parser.add_argument("--guard", type=float, metavar="SECONDS",
                        help="seconds after each churn block still charged to it, taken from the next quiet block "
                             "[1; quick 0.5]")
    parser.add_argument("--warmup", type=float, metavar="SECONDS",
                        help="seconds of load before the first quiet block, in no window [8; quick 4]")
    parser.add_argument("--baseline", type=float, help=argparse.SUPPRESS)  # only to say what replaced it
    parser.add_argument("--pin", action="store_true",
                        help="pin the load generator to CPU 1 and everything else (the benchmark included) to CPU 0, "
                             "to see whether throughput is lost to CPU contention with the harness (needs 2 CPUs)")
    parser.add_argument("--settle", type=float,
                        help="seconds of load after the last quiet block, in no throughput window: the last changes' "
                             "effects play out before the final workers and RSS are read [5; quick 2]")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, in this order in the table: {', '.join(MODES)} [all]")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "both"],
                        help="short: keep-alive load only; streaming: plus long streams; both [both; quick short]")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections [50]")
    parser.add_argument("--streams", type=int, default=20,
                        help="concurrent 10-30 s streams in the streaming scenario [20]")
    parser.add_argument("--pool", type=int, default=24, help="backend instances available to the churn [24]")
    parser.add_argument("--initial", type=int, default=10, help="instances registered before the churn [10]")
    parser.add_argument("--seed", type=int, default=42, help="seed of the change sequence and streams [42]")
    parser.add_argument("--poll-ms", type=float, default=1.0,
                        help="how often `show servers state` is read to time convergence: the resolution of every "
                        "convergence figure, kept well under the limit it is compared with [1]")
    add_syncer_arguments(parser, " in both of its modes", "the mode")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (logs, configs) for a look")
    parser.add_argument("--out-dir", type=Path, default=RESULTS,
                        help="where churn.json, churn.md and churn.png go [bench/results]")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        parser.error("--baseline is gone: the no-churn reference is now quiet blocks interleaved with the churn; "
                     "see --blocks and --quiet-block")
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.scenario = args.scenario or ("short" if args.quick else "both")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        parser.error(f"unknown mode(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MODES)}")
    args.modes = [m for m in MODES if m in modes]
    args.haproxy_sync_set = tuple(args.haproxy_sync_set)
    if args.duration <= 0 or args.changes <= 0 or args.blocks < 1 or args.quiet <= 0:
        parser.error("--duration, --changes, --blocks and --quiet-block must be positive")
    if args.settle < 0 or args.warmup < 0:
        parser.error("--settle and --warmup must not be negative")
    if not 0 <= args.guard < args.quiet:
        parser.error(f"--guard must be at least 0 and shorter than --quiet-block ({args.quiet:g} s)")
    if args.blocks > 100 or args.duration / args.blocks < 1:
        parser.error("keep blocks of at least 1 s of churn, and at most 100 of them")
    if args.pin and (why := pin_check()):
        parser.error(why)
    if args.changes > 2000 or args.duration > 3600 or args.connections > 1000 or args.streams > 500:
        parser.error("keep it bounded: at most 2000 changes, 3600 s, 1000 connections, 500 streams")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    use_haproxy(args.haproxy)
    if haproxy.find_binary("haproxy") is None:
        print("HAProxy is not installed (apt-get install haproxy); nothing to measure", file=sys.stderr)
        return 1
    interrupt_on(signal.SIGTERM)
    if args.pin:  # before any process or thread starts: they all inherit it; the load generator is moved
        os.sched_setaffinity(0, {HARNESS_CPU})
    params = Params(
        duration=args.duration, changes=args.changes, blocks=args.blocks, quiet=args.quiet, guard=args.guard,
        warmup=args.warmup, settle=args.settle, connections=args.connections, streams=args.streams, pool=args.pool,
        initial=args.initial, seed=args.seed, poll_ms=args.poll_ms, quick=args.quick,
        haproxy_sync_set=args.haproxy_sync_set, pin=args.pin,
    )
    scenarios = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
    consul_template, ct_reason = (None, "not among --modes")
    if "consul-template" in args.modes:
        consul_template, ct_reason = find_consul_template(args.consul_template, install=not args.no_install)
        if consul_template is None:
            print(f"skipping mode consul-template: {ct_reason}")
    per_mode = STARTUP_SECONDS + params.load_seconds
    print(f"churn benchmark: {len(scenarios)} scenario(s) x {len(args.modes)} mode(s), "
          f"about {per_mode * len(scenarios) * len(args.modes) / 60:.1f} min", flush=True)
    results = []
    try:
        with shared_stack(params, args.keep) as shared:
            plan = make_plan(shared.pool_ports, count=args.changes, duration=args.duration, seed=args.seed,
                             initial=args.initial)
            for scenario in scenarios:
                for key in args.modes:
                    mode = MODES[key]
                    if key == "consul-template" and consul_template is None:
                        results.append(summarize(ModeRun(scenario, mode, skipped=ct_reason)))
                        continue
                    print(f"[{time.monotonic() - started:5.0f}s] {scenario} / {mode.label} ...", flush=True)
                    run = run_mode(shared, scenario, mode, plan, params, consul_template)
                    result = summarize(run)
                    results.append(result)
                    print(_one_line(result), flush=True)
    except KeyboardInterrupt:
        print("interrupted: every process started was stopped; no results written", file=sys.stderr)
        return 130
    except (StackError, ValueError) as exc:
        print(f"churn benchmark failed: {exc}", file=sys.stderr)
        return 1
    command = "python -m bench.churn " + shlex.join(argv if argv is not None else sys.argv[1:])
    ct_label = f"{version_of(consul_template)} ({consul_template})" if consul_template else f"skipped: {ct_reason}"
    paths = write_outputs(args.out_dir, results, params, plan, command.strip(), str(ct_label), started)
    print()
    print(table(results))
    print()
    print(f"wrote {shown(paths)} in {time.monotonic() - started:.0f} s")
    return 1 if any(r.get("error") for r in results) else 0


def _one_line(result: dict[str, object]) -> str:
    if "load" not in result:
        return f"    {result.get('skipped') or result.get('error')}"
    load, conv = result["load"], result["convergence"]
    assert isinstance(load, dict) and isinstance(conv, dict)
    error = f"; ERROR {result['error']}" if result.get("error") else ""
    ci = load["throughput_ci95"]
    return (f"    failed {load['churn']['failed']}, non-2xx {load['churn']['non2xx']}, throughput "
            f"{load['throughput_ratio']}{f' ({ci[0]}-{ci[1]})' if ci else ''} over blocks "
            f"{load['throughput_blocks']}, reloads {result['reloads']}, convergence p99 {conv['p99_ms']} ms, "
            f"not converged {conv['unconverged'] + conv['superseded']}{error}")


if __name__ == "__main__":
    sys.exit(main())
