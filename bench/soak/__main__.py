"""``python -m bench.soak``: the soak benchmark's command line and its one run (from the repository root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package
and must not add a command to it.

Timeline of a run::

    set-up (~5 s) | warm-up (sampled, not fitted) | measured window (fitted) | settle + tear-down (~5 s)
                  |<------------------ churn and samples: --duration ------->|

With ``--faults`` a fault is injected every ``--fault-every`` seconds from the end of the warm-up (in
rotation: a Consul restart, the admin socket dripping, the config directory read-only; see
:mod:`bench.soak.faults`), each undone in a ``finally``, and the report says what each cost and how soon
the daemon was back in step with Consul.

Every process started here (HAProxy for the backends, the HAProxy under test, the daemon; devconsul
is a thread) is stopped at the end, on an error, on Ctrl-C and on SIGTERM; every fault is undone
(a read-only mount unmounted) before that.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

import haproxy_sync
from bench.common.backends import BackendPool
from bench.common.consul import ConsulClient
from bench.common.ports import free_ports
from bench.common.process import StackError, interrupt_on
from bench.common.report import git, haproxy_version
from bench.common.syncers import HaproxySync
from bench.common.under_test import HAProxyUnderTest, haproxy_binary
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.dev.hostile_socket import HostileSocket, template_beside

from . import daemon as soaked
from . import leaks
from .analysis import analyse, steps
from .driver import Churn
from .faults import ConsulRestart, FaultScheduler, Observer, ReadOnlyDir, SocketDrip
from .report import suspicions, table, write_outputs
from .sampler import Sampler, counter_delta, haproxy_state, scrape

DEFAULT_OUT = Path("bench/results/soak")  # relative to the repository root, where -m runs


def parse_warmup(text: str, duration: float) -> float:
    """``auto`` (the longer of 30 s and 20 % of the run), seconds (``45``, ``45s``) or a share (``10%``).

    Why 20 %: at 2 changes/s the daemon's RSS keeps settling for about ten minutes (the allocator's
    high-water mark, not Python objects: tracemalloc sees them flat), so an hour's fit should start
    after that; a 5-minute run cannot reach it at all and says so (``rss_slowing``).
    """
    text = text.strip().lower()
    if text == "auto":
        return max(30.0, 0.2 * duration)
    if text.endswith("%"):
        share = float(text[:-1]) / 100
        if not 0 <= share < 1:
            raise ValueError("a warm-up share must be between 0% and 100%")
        return share * duration
    return float(text.removesuffix("s"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Flags, checked up front so that a bad combination fails before any process starts."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=(
            "Soak benchmark: devconsul, backends, a master-worker HAProxy and the haproxy-sync daemon (a real "
            "process) under continuous, seeded Consul churn (instances registered and deregistered, TTL checks "
            "flipped between passing, warning and critical, weights changed, check notes refreshed). Samples the "
            "daemon's RSS, USS, open file descriptors, threads and CPU; fits a line after the warm-up and reports "
            "growth per hour with its noise. Target: RSS growth < 1 MB/hour, FDs flat. Writes <out>.json and "
            "<out>.png. Everything runs on 127.0.0.1 and is stopped at the end, also on Ctrl-C and SIGTERM."
        ),
        epilog="Examples: python -m bench.soak (5 minutes); python -m bench.soak --duration 3600 --interval 10 "
               "(an hour); python -m bench.soak --duration 180 --tracemalloc --out bench/results/soak.traced "
               "(where memory goes; tracing inflates memory and CPU, so do not read its growth figures); "
               "python -m bench.soak --duration 1800 --faults --out bench/results/soak.faults-30m (30 minutes "
               "with a fault a minute).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of churn and sampling")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples of the daemon")
    parser.add_argument("--rate", type=float, default=2.0, help="Consul changes per second (Poisson average)")
    parser.add_argument("--warmup", default="auto",
                        help="start of the run left out of the fit: seconds (45), a share (10%%), or auto = the "
                             "longer of 30 s and 20%% of --duration")
    parser.add_argument("--seed", type=int, default=1, help="seed of the change sequence")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output path without suffix: writes <out>.json and <out>.png")
    parser.add_argument("--services", type=int, default=2, help="Consul services (HAProxy backends) churned")
    parser.add_argument("--min-instances", type=int, default=2, help="fewest instances per service")
    parser.add_argument("--max-instances", type=int, default=8, help="most instances per service")
    parser.add_argument("--initial", type=int, default=4, help="instances per service registered before the start")
    parser.add_argument("--sync", action="append", default=[], metavar="KEY=VALUE",
                        help="extra [sync] setting of the daemon, repeatable (e.g. watch_files=false)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="diagnostic: run the daemon under tracemalloc, snapshot it after the warm-up, midway "
                             "and at the end, and report which allocation sites grew")
    parser.add_argument("--faults", action="store_true",
                        help="inject a fault every --fault-every seconds of the measured window (from the end of the "
                             "warm-up), in rotation: a Consul restart (devconsul down 5 s, then back on the same "
                             "port with the same catalog), HAProxy's admin socket dripping one byte every 0.2 s "
                             "for 10 s (the daemon then talks to it through a proxy for the whole run), the "
                             "directory of the haproxy.cfg the daemon writes read-only for 10 s (a bind mount: "
                             "needs root, else skipped with one line); reports each fault, what it cost and how "
                             "soon the daemon agreed with Consul again")
    parser.add_argument("--fault-every", type=float, default=60.0, metavar="SECONDS",
                        help="with --faults: seconds between the starts of two faults (at least 20)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (configs, daemon and HAProxy logs) instead of removing it")
    parser.add_argument("--from-json", type=Path, metavar="FILE",
                        help="run nothing: recompute the fits, table and PNG from the samples of an earlier "
                             "<out>.json (e.g. with another --warmup) and write them to --out")
    args = parser.parse_args(argv)
    if args.from_json is not None:
        try:
            args.previous = json.loads(args.from_json.read_text())
            args.duration = float(args.previous["params"]["duration"])
        except (OSError, ValueError, KeyError) as exc:
            parser.error(f"--from-json {args.from_json}: {exc}")
    try:
        args.warmup_seconds = parse_warmup(args.warmup, args.duration)
    except ValueError as exc:
        parser.error(f"--warmup {args.warmup!r}: {exc}")
    if args.rate <= 0 or args.interval <= 0 or args.duration <= 0:
        parser.error("--rate, --interval and --duration must be positive")
    if args.duration - args.warmup_seconds < 3 * args.interval:
        parser.error(f"--duration {args.duration:g} leaves fewer than 3 samples after a {args.warmup_seconds:g}s "
                     f"warm-up at --interval {args.interval:g}")
    if not 0 < args.min_instances <= args.initial <= args.max_instances:
        parser.error("need 0 < --min-instances <= --initial <= --max-instances")
    try:
        args.sync_lines = tuple(soaked.sync_line(option) for option in args.sync)
    except ValueError as exc:
        parser.error(str(exc))
    if not 1 <= args.services <= 20:
        parser.error("--services must be between 1 and 20")
    if args.fault_every < 20:
        parser.error("--fault-every must be at least 20 s (a fault lasts up to 10 s, then the recovery is watched)")
    return args


def environment() -> dict[str, Any]:
    """What the numbers were measured on, so that two results can be compared fairly."""
    return {
        "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "haproxy_sync": haproxy_sync.__version__,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        # uncommitted changes under haproxy_sync/
        "haproxy_sync_modified": bool(git("status", "--porcelain", "--untracked-files=no", "--", "haproxy_sync")),
        "python": platform.python_version(),
        "haproxy": haproxy_version(haproxy_binary()),
        "psutil": psutil.__version__,
        "platform": platform.platform(),
        "cpus": psutil.cpu_count(),
        "memory_mb": round(psutil.virtual_memory().total / 1024 / 1024),
        # The daemon inherits these; they change how RSS grows, so a result must say which were set.
        "allocator_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC_", "PYTHONMALLOC"))},
    }


def log_summary(path: Path) -> dict[str, int]:
    """Lines of the daemon's log by level, and tracebacks: a soak should produce no errors."""
    counts = {"lines": 0, "warning": 0, "error": 0, "traceback": 0}
    with contextlib.suppress(OSError), path.open(errors="replace") as handle:
        for line in handle:
            counts["lines"] += 1
            counts["warning"] += "level=warning" in line
            counts["error"] += "level=error" in line or "level=critical" in line
            counts["traceback"] += "Traceback" in line
    return counts


def _ignore_signals() -> None:
    """While stopping, a second Ctrl-C must not cut the clean-up short and leave processes behind."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Bring the stack up, churn and sample for ``--duration``, settle, and return every number."""
    binary = haproxy_binary()
    services = tuple(f"soak{i + 1}" for i in range(args.services))
    pool = 2 * args.max_instances
    ports = free_ports(3 + pool * len(services))
    backend_ports = {service: ports[3 + i * pool: 3 + (i + 1) * pool] for i, service in enumerate(services)}
    stop = threading.Event()
    with contextlib.ExitStack() as stack:
        try:
            return _run(args, workdir, stack, stop, binary, services, backend_ports, ports)
        finally:
            _ignore_signals()  # before the ExitStack stops anything: a second Ctrl-C must not cut it short


def _run(args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack, stop: threading.Event, binary: str,
         services: tuple[str, ...], backend_ports: dict[str, list[int]], ports: list[int]) -> dict[str, Any]:
    """The body of :func:`soak`; every process it starts is registered on ``stack`` to be stopped."""
    consul = DevConsulThread(port=0)
    consul.start()
    stack.callback(consul.stop)
    backends = BackendPool(workdir, [p for group in backend_ports.values() for p in group], binary=binary,
                           answer=soaked.backend_token(), **soaked.BACKENDS)
    stack.callback(backends.stop)
    # With --faults, the daemon and its HAProxy get a directory of their own (the one made read-only),
    # and the daemon's admin socket is a proxy in front of HAProxy's (``admin.sock.real``).
    edge = workdir / "edge" if args.faults else workdir
    proxy: HostileSocket | None = None
    if args.faults:
        edge.mkdir()
        proxy = HostileSocket(edge / "admin.sock")
        stack.callback(proxy.close)
    layout = soaked.layout(edge, consul.url, services, ports[:3], binary, args.sync_lines,
                           template=template_beside(edge) if args.faults else None)
    client = ConsulClient(consul.url)
    stack.callback(client.close)
    churn = Churn(client, backend_ports, seed=args.seed, rate=args.rate,
                  min_instances=args.min_instances, max_instances=args.max_instances)
    churn.register_initial(args.initial)
    trace_dir = workdir / "tracemalloc" if args.tracemalloc else None
    daemon = soaked.daemon(layout, trace_dir)
    daemon.initial_render()
    hap = HAProxyUnderTest(edge, binary)
    stack.callback(hap.stop)
    hap.start()
    stack.callback(daemon.stop)
    daemon.start()
    daemon.wait_ready(30.0, interval=0.2)
    print(f"soak: stack up in {workdir} (daemon pid {daemon.pid}); churning for {args.duration:g} s at "
          f"{args.rate:g} changes/s, a sample every {args.interval:g} s", flush=True)

    sampler = Sampler(daemon.pid, hap.master_pid)
    metrics_start = scrape(layout.metrics_url)
    haproxy_start = haproxy_state(layout.master_socket, hap.master_pid)
    samples = [sampler.sample()]
    deadline = sampler.started + args.duration
    churner = threading.Thread(target=churn.run, args=(deadline, stop), name="churn", daemon=True)
    churner.start()

    def stop_churn() -> None:
        stop.set()
        churner.join(timeout=15)

    stack.callback(stop_churn)
    scheduler = None
    if proxy is not None:
        observer = Observer(metrics=lambda: scrape(layout.metrics_url),
                            converged=lambda: soaked.disagreement(soaked.status_json(daemon, timeout=15.0)),
                            log_path=daemon.log_path, churn_errors=lambda: sum(churn.stats.errors.values()),
                            pid=daemon.pid)
        scheduler = FaultScheduler([ConsulRestart(consul), SocketDrip(proxy), ReadOnlyDir(edge, layout.haproxy_cfg)],
                                   observer, every=args.fault_every, first_at=args.warmup_seconds,
                                   zero=sampler.started, deadline=deadline, say=lambda line: print(line, flush=True))
        stack.callback(scheduler.close)  # first of all on the way out: undo what is in place (a mount)
        print(f"soak: {scheduler.planned()} faults planned, one every {args.fault_every:g} s from "
              f"{args.warmup_seconds:g} s: {', '.join(fault.kind for fault in scheduler.rotation) or 'none'}",
              flush=True)
        scheduler.start()
    measured = args.duration - args.warmup_seconds
    dump_at = [args.warmup_seconds, args.warmup_seconds + measured / 2] if args.tracemalloc else []
    dumps: list[Path] = []
    dump_t: list[float] = []  # when each snapshot was asked for, seconds since the daemon was ready
    next_report = 60.0
    for k in range(1, int(args.duration / args.interval) + 2):  # bounded: one sample per interval
        due = min(sampler.started + k * args.interval, deadline)
        time.sleep(max(0.0, due - time.monotonic()))
        if not daemon.alive():
            raise soaked.exited(daemon, scheduler.last() if scheduler is not None else "")
        samples.append(sampler.sample())
        elapsed = samples[-1].t
        while dump_at and elapsed >= dump_at[0]:
            dump_at.pop(0)
            dump_t.append(round(time.monotonic() - sampler.started, 1))
            dumps.append(soaked.dump_trace(daemon.pid, trace_dir, len(dumps) + 1))
        if elapsed >= next_report:
            next_report += 60.0
            print(f"soak: {elapsed / 60:.0f} min: RSS {samples[-1].rss_mb:.2f} MB, FDs {samples[-1].fds}, "
                  f"threads {samples[-1].threads}, changes sent {sum(churn.stats.sent.values())}", flush=True)
        if due >= deadline:
            break
    stop_churn()
    if scheduler is not None:
        scheduler.close()
    cpu_mean = sampler.mean_cpu_percent()  # over the churn only, before the settle below
    if args.tracemalloc:
        dump_t.append(round(time.monotonic() - sampler.started, 1))
        dumps.append(soaked.dump_trace(daemon.pid, trace_dir, len(dumps) + 1))

    sample_dicts = [sample.as_dict() for sample in samples]
    if args.tracemalloc:
        leaks.attach_traced(sample_dicts, soaked.memory_log(layout, trace_dir), sampler.started)
    end_state = _settle(daemon)
    metrics_end = scrape(layout.metrics_url)
    haproxy_end = haproxy_state(layout.master_socket, hap.master_pid)
    return {
        "samples": sample_dicts,
        "churn": churn.stats.as_dict() | {"instances_at_end": churn.instance_counts(),
                                           "instances_ever": churn.sequence},
        "haproxy": {"start": haproxy_start, "end": haproxy_end},
        "daemon_metrics": {
            "applies": counter_delta(metrics_start, metrics_end, "haproxy_sync_applies_total"),
            "apply_failures": counter_delta(metrics_start, metrics_end, "haproxy_sync_apply_failures_total"),
            "write_failures": counter_delta(metrics_start, metrics_end, "haproxy_sync_config_write_failures_total"),
            "consul_errors": counter_delta(metrics_start, metrics_end, "haproxy_sync_consul_errors_total"),
            "guard": counter_delta(metrics_start, metrics_end, "haproxy_sync_guard_total"),
            "runtime_commands": metrics_end.get("haproxy_sync_runtime_commands_total", 0.0)
            - metrics_start.get("haproxy_sync_runtime_commands_total", 0.0),
            "renders": metrics_end.get("haproxy_sync_renders_total", 0.0)
            - metrics_start.get("haproxy_sync_renders_total", 0.0),
            "drift_found": metrics_end.get("haproxy_sync_drift_found_total", 0.0)
            - metrics_start.get("haproxy_sync_drift_found_total", 0.0),
            "start": metrics_start,
            "end": metrics_end,
        },
        "end_state": end_state,
        "run": {"churn_seconds": round(churn.stats.finished - churn.stats.started, 1),
                "daemon_cpu_percent_mean": round(cpu_mean, 2), "daemon_pid": daemon.pid},
        "tracemalloc": leaks.compare(dumps) | {"dump_t": dump_t} if args.tracemalloc else None,
        "daemon_log": log_summary(daemon.log_path),
        "faults": scheduler.as_dict() if scheduler is not None else None,
    }


def _settle(daemon: HaproxySync, timeout: float = 30.0) -> dict[str, Any]:
    """After the churn: wait (bounded) until ``haproxy-sync status`` finds no drift, and return it."""
    deadline = time.monotonic() + timeout
    report = soaked.status_json(daemon)
    while not report.get("healthy") and time.monotonic() < deadline:
        time.sleep(2.0)
        report = soaked.status_json(daemon)
    report["settle_seconds"] = round(timeout - max(0.0, deadline - time.monotonic()), 1)
    return report


def finish(result: dict[str, Any], warmup_seconds: float, out: Path) -> None:
    """Fits, verdicts and suspicions for ``result``; writes ``<out>.json`` and ``<out>.png``; prints the table."""
    result["analysis"] = analyse(result["samples"], warmup_seconds)
    if traced := result.get("tracemalloc"):
        traced["steps"] = leaks.explain_steps(result["samples"], steps(result["samples"]), traced.get("dump_t", []))
    result["suspicious"] = suspicions(result)
    paths = write_outputs(result, out)
    print()
    print(table(result))
    print(f"\nwrote {' and '.join(map(str, paths))}")


def main(argv: list[str] | None = None) -> int:
    """Run (or re-analyse), write the outputs, print the table; 0 ok, 1 failed, 130 interrupted."""
    args = parse_args(argv)
    if args.from_json is not None:
        result = args.previous
        result["params"]["warmup"] = args.warmup
        finish(result, args.warmup_seconds, args.out)
        return 0
    interrupt_on(signal.SIGTERM)
    workdir = Path(tempfile.mkdtemp(prefix="haproxy-sync-soak-"))
    keep = args.keep
    started = time.monotonic()
    try:
        env = environment()
        raw = soak(args, workdir)
    except KeyboardInterrupt:
        print("soak: interrupted; every process it started is stopped; no results written", file=sys.stderr)
        return 130
    except (StackError, OSError, subprocess.SubprocessError, psutil.Error) as exc:
        keep = True
        print(f"soak: failed: {exc}\nsoak: logs kept in {workdir}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    params = {key: getattr(args, key) for key in ("duration", "interval", "rate", "warmup", "seed", "min_instances",
                                                  "max_instances", "initial", "sync", "tracemalloc", "faults",
                                                  "fault_every")}
    params["services"] = [f"soak{i + 1}" for i in range(args.services)]
    result: dict[str, Any] = {"benchmark": "haproxy-sync soak", "params": params, "environment": env, **raw}
    result["run"]["wall_seconds"] = round(time.monotonic() - started, 1)
    result["run"]["workdir"] = str(workdir) if keep else None
    finish(result, args.warmup_seconds, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
