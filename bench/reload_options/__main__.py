"""``python -m bench.reload_options``: the command line of the reload-options benchmark.

Why argparse and not the project's click CLI: the benchmark is not part of the installed package
and must not add a command to it.

Why the runs are interleaved (repeat 1 of every variant, then repeat 2, ...): the machine is small
and may be shared; interleaving spreads a slow minute over all variants instead of one.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.common.process import StackError, interrupt_on
from bench.common.report import shown
from bench.common.under_test import use_haproxy
from haproxy_sync import haproxy

from .config import BASELINE, VARIANTS, Variant, long_lived_variants
from .load import LoadError, find_wrk
from .report import environment, idle_table, keepalive_table, long_lived_table, summarize, write_outputs
from .runner import POST_LOAD_OBSERVE, Schedule, run, run_idle
from .stack import Stack

LEAD = 1.0  # seconds of load before the first reload
TAIL = 2.5  # seconds of load after the last reload is due: late failures still count
IDLE_ESTIMATE = 7.0  # mean seconds an idle-scenario run waits for its old worker (0 to 10 by variant)
STARTUP = 1.5  # rough per-run cost of starting and stopping the HAProxy under test, for the estimate

FULL: dict[str, Any] = {
    "repeats": 3, "reloads": "20,100", "rate": "2,5", "stream_seconds": 20.0, "stream_clients": 8,
    "long_hard_stop": "10s", "long_repeats": 1,
}
QUICK: dict[str, Any] = {
    "repeats": 1, "reloads": "10", "rate": "5", "stream_seconds": 6.0, "stream_clients": 4,
    "long_hard_stop": "3s", "long_repeats": 1,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.reload_options",
        description=(
            "Reload-options benchmark: a master-worker HAProxy under wrk keep-alive load (2 threads, 50 "
            "connections) reloaded N times at a fixed rate through its master socket (each reload confirmed "
            "with `show proc`), once per variant: plain, option idle-close-on-response, + close-spread-time 5s, "
            "+ hard-stop-after 30s; plus a no-reload baseline, a long-lived-stream scenario comparing "
            "idle-close with and without hard-stop-after, and one reload with idle keep-alive clients. "
            "Reports failed requests, non-2xx, throughput vs "
            "baseline and old workers over time. Writes bench/results/reload_options.{json,md,png}. Everything "
            "runs on 127.0.0.1 and is stopped at the end (also on Ctrl-C)."
        ),
        epilog=(
            f"Full run defaults: --repeats {FULL['repeats']} --reloads {FULL['reloads']} --rate {FULL['rate']}, "
            f"long-lived: {FULL['stream_clients']} streams of {FULL['stream_seconds']:g}s, hard-stop-after "
            f"{FULL['long_hard_stop']}: about 9 minutes. --quick: --repeats 1 --reloads 10 --rate 5, "
            f"streams of {QUICK['stream_seconds']:g}s: about 1 minute. Explicit flags override both."
        ),
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of every variant in about a minute")
    parser.add_argument("--haproxy", metavar="PATH", help="the HAProxy binary under test (default: the installed one; "
                        "the report names its version)")
    parser.add_argument("--repeats", type=int, help="runs per variant and schedule [3; quick 1]")
    parser.add_argument("--reloads", help="comma-separated reload counts, one schedule each [20,100; quick 10]")
    parser.add_argument("--rate", help="comma-separated reloads per second, paired with --reloads [2,5; quick 5]")
    parser.add_argument("--duration", type=float,
                        help=f"seconds of load per run [default: {LEAD:g} + reload window + {TAIL:g}]")
    parser.add_argument("--variants", help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS))
    parser.add_argument("--no-long-lived", action="store_true", help="skip the long-lived-stream scenario")
    parser.add_argument("--stream-seconds", type=float, help="length of each long-lived stream [20; quick 6]")
    parser.add_argument("--stream-clients", type=int, help="long-lived streams per run [8; quick 4]")
    parser.add_argument("--long-hard-stop", help="hard-stop-after of the long-lived scenario [10s; quick 3s]")
    parser.add_argument("--long-repeats", type=int, help="runs per variant of the long-lived scenario [1]")
    parser.add_argument("--no-idle", action="store_true",
                        help="skip the idle-keep-alive scenario (one reload per variant, idle clients, no load)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS,
                        help="where reload_options.{json,md,png} go [bench/results]")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: re-write the table, .md and .png from the results dir's JSON")
    parser.add_argument("--keep-workdir", action="store_true", help="keep configs and HAProxy logs in /tmp")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def schedules(args: argparse.Namespace) -> list[Schedule]:
    counts = [int(x) for x in str(args.reloads).split(",") if x.strip()]
    rates = [float(x) for x in str(args.rate).split(",") if x.strip()]
    if len(rates) == 1:
        rates *= len(counts)
    if len(counts) != len(rates) or not counts:
        raise SystemExit("--reloads and --rate need the same number of comma-separated values")
    if not all(1 <= c <= 1000 for c in counts) or not all(0.1 <= r <= 20 for r in rates):
        raise SystemExit("--reloads must be 1..1000 and --rate 0.1..20 per second")
    return [Schedule(c, r) for c, r in zip(counts, rates, strict=True)]


def chosen_variants(args: argparse.Namespace) -> list[Variant]:
    if not args.variants:
        return list(VARIANTS)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [known[n] for n in names]


def report_only(results_dir: Path) -> int:
    """Re-derive every figure from the recorded runs: the report is a pure function of the JSON."""
    path = results_dir / "reload_options.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read {path}: {exc}") from None
    rows = summarize(data["runs"])
    print(keepalive_table(rows))
    print(long_lived_table(rows))
    print(idle_table(data["runs"]))
    for written in write_outputs(results_dir, data["meta"], data["runs"], rows):
        print(f"wrote {written}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        return report_only(args.results_dir)
    plan = schedules(args)
    variants = chosen_variants(args)
    if args.repeats < 1 or args.long_repeats < 0 or args.stream_clients < 1:
        raise SystemExit("--repeats and --stream-clients must be >= 1, --long-repeats >= 0")
    if args.duration is not None:
        needed = LEAD + max(s.window for s in plan) + 1.0
        if args.duration < needed:
            raise SystemExit(f"--duration {args.duration:g} is shorter than the longest schedule needs ({needed:g}s)")
    use_haproxy(args.haproxy)
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        raise SystemExit("haproxy not found (Debian: apt-get install haproxy; it lives in /usr/sbin)")
    try:
        find_wrk()
    except LoadError as exc:
        raise SystemExit(str(exc)) from None

    def load_seconds(scenario: str, schedule: Schedule) -> float:
        """The baseline runs as long as the first schedule; a long-lived run also outlasts its streams."""
        if scenario == "long-lived":
            return LEAD + schedule.window + TAIL + args.stream_seconds
        if scenario == "idle":
            return IDLE_ESTIMATE
        return args.duration or LEAD + (schedule if schedule.count else plan[0]).window + TAIL

    long_lived = not args.no_long_lived and args.long_repeats > 0
    long_pair = long_lived_variants(args.long_hard_stop)
    jobs: list[tuple[str, Variant, Schedule, int]] = []
    for repeat in range(1, args.repeats + 1):
        jobs.append(("keep-alive", BASELINE, Schedule(0, 1.0), repeat))
        jobs += [("keep-alive", v, s, repeat) for s in plan for v in variants]
    if long_lived:
        jobs += [("long-lived", v, plan[0], r) for r in range(1, args.long_repeats + 1) for v in long_pair]
    if not args.no_idle:
        jobs += [("idle", v, Schedule(1, 1.0), 1) for v in variants]
    estimate = sum(STARTUP + POST_LOAD_OBSERVE + load_seconds(scenario, s) for scenario, _, s, _ in jobs)
    command = shlex.join(["python", "-m", "bench.reload_options", *(argv if argv is not None else sys.argv[1:])])
    print(f"{len(jobs)} runs, about {estimate / 60:.1f} min; {binary}", file=sys.stderr)

    interrupt_on(signal.SIGTERM, signal.SIGINT)  # SIGINT even when started with it ignored (nohup, &)
    started = time.time()
    clock = time.monotonic()
    runs: list[dict[str, Any]] = []
    stack = Stack(binary, keep_workdir=args.keep_workdir)
    try:
        stack.start_backends()
        if long_lived:
            stack.start_streamer()
        for index, (scenario, variant, schedule, repeat) in enumerate(jobs, 1):
            if scenario == "idle":
                outcome = run_idle(stack, variant)
                runs.append(outcome)
                print(f"[{index}/{len(jobs)}] idle {variant.name}: old worker gone after "
                      f"{outcome['old_worker_life_s']} s", file=sys.stderr, flush=True)
                continue
            long_run = scenario == "long-lived"
            outcome = run(
                stack, variant, schedule, scenario=scenario, repeat=repeat, lead=LEAD, tail=TAIL,
                duration=load_seconds(scenario, schedule),
                stream_seconds=args.stream_seconds if long_run else 0.0,
                stream_clients=args.stream_clients if long_run else 0,
            )
            runs.append(outcome)
            wrk = outcome["wrk"]
            streams = outcome.get("streams")
            print(
                f"[{index}/{len(jobs)}] {scenario} {schedule.name} {variant.name} #{repeat}: "
                f"failed {wrk['failed']} (read {wrk['read']}), non-2xx {wrk['non2xx']}, {wrk['rps']:.0f} req/s, "
                f"reloads {outcome['reloads']['confirmed']}/{schedule.count}, max old workers {outcome['max_old']}"
                + (f", streams cut {streams['cut']}/{streams['started']}" if streams else ""),
                file=sys.stderr, flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted: stopping every process; no results written", file=sys.stderr)
        return 130
    except (StackError, LoadError, haproxy.HAProxyError) as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.close()

    meta = {
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "elapsed_s": round(time.monotonic() - clock, 1),
        "repeats": args.repeats,
        "schedules": [s.name for s in plan],
        "lead_s": LEAD,
        "tail_s": TAIL,
        "load": "wrk -t2 -c50 --latency",
        "long_lived": long_lived,
        "stream_seconds": args.stream_seconds,
        "stream_clients": args.stream_clients,
        "long_hard_stop": args.long_hard_stop,
        "environment": environment(binary),
    }
    rows = summarize(runs)
    print()
    print(keepalive_table(rows))
    if long_lived:
        print(long_lived_table(rows))
    if not args.no_idle:
        print(idle_table(runs))
    print(f"wrote {shown(write_outputs(args.results_dir, meta, runs, rows))}", file=sys.stderr)
    print(f"took {meta['elapsed_s'] / 60:.1f} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
