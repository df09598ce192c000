"""``python -m bench.scale``: the command line of the scale benchmark (run from the repository root).

Why argparse and not the project's click CLI: the benchmark is not part of the installed package and
must not add a command to it (as bench/churn and bench/soak).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench.common import RESULTS
from bench.common.process import interrupt_on
from bench.common.report import shown
from bench.common.syncers import add_syncer_arguments, find_consul_template, version_of
from haproxy_sync import haproxy

from .report import document, markdown, table, write_outputs
from .runner import TOOLS, Params, run_one, say

DEFAULT_SIZES = (100, 300, 1000, 3000)
SETUP_SECONDS = {100: 10, 300: 15, 1000: 25, 3000: 60}  # measured per-run cost beside --idle, for the estimate
COLD_SECONDS = {100: 2, 300: 3, 1000: 5, 3000: 15}  # one more cold start with its reset, for the estimate

DESCRIPTION = """\
Scale benchmark (issue #8): devconsul holding N services x 10 instances, all tagged for discovery, for
N in --sizes; for each size, haproxy-sync (discovery by tag, default settings) and the real
consul-template (a template ranging over every tagged service, built with go install as in
bench/churn) each run against a fresh devconsul with the same catalog, one after the other.

Per size and tool it reports:
  cold start       tool started -> HAProxy runs a config with every backend (show proc polled every
                   50 ms; the placeholder config's worker replaced by a reload); haproxy-sync: /ready too.
                   Taken --cold-repeat times, each from the same start (tool stopped, HAProxy restarted
                   on the placeholder, the tool's files removed); the median, with min-max
  render           the config's render with all Consul data in hand: haproxy-sync pipeline.lay_out + Jinja2
                   (in-process, bench/scale/probe.py), consul-template its last template execution
                   (debug log timestamps); "+ haproxy -c": plus validating that config
  one-shot CLI     haproxy-sync render --dry-run --check / consul-template -once, process wall time
  RSS, idle CPU    the tool's VmRSS and utime+stime over --idle seconds without changes (/proc)
  burst            --burst-changes weight changes in --burst-writes catalog writes over --burst-window
                   seconds (no change of structure); the tool's applies, HAProxy's reloads, and when
                   HAProxy served every new weight
Writes bench/results/scale.json, scale.md and scale.png (cost against size, log x, both tools) and
prints progress to stderr. Everything runs on 127.0.0.1; every process is stopped at the end and on
Ctrl-C; every wait is bounded."""

EPILOG = """\
Default run: sizes 100,300,1000,3000, both tools, 60 s idle, 3 cold starts: about 13 minutes on 2 cores.
Smoke run:   python -m bench.scale --sizes 100,300 --idle 10   (about 2 minutes)
Re-draw:     python -m bench.scale --report-only               (table and PNG from scale.json)"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)),
                        help="comma-separated service counts [100,300,1000,3000]")
    parser.add_argument("--instances", type=int, default=10, help="instances per service [10]")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help="comma-separated, run in this order per size: haproxy-sync,consul-template [both]")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle CPU/RSS window [60]")
    parser.add_argument("--burst-changes", type=int, default=10_000,
                        help="instance weight changes in the burst [10000]")
    parser.add_argument("--burst-writes", type=int, default=10,
                        help="catalog writes (Consul indexes) the burst is cut into, evenly spaced [10]")
    parser.add_argument("--burst-window", type=float, default=1.0, help="seconds the burst's writes span [1]")
    parser.add_argument("--quiet", type=float, default=5.0,
                        help="after the burst: seconds without a new apply or reload that end the count [5]")
    parser.add_argument("--settle-max", type=float, default=120.0,
                        help="after the burst: longest wait for HAProxy to serve it [120]")
    parser.add_argument("--render-repeat", type=int, default=4,
                        help="one-shot renders per tool and size, the first counted apart as cold [4]")
    parser.add_argument("--cold-repeat", type=int, default=3,
                        help="cold starts per tool and size, each from the placeholder config; the median "
                             "is reported, with min and max (1: a single start) [3]")
    parser.add_argument("--health-checks", action="store_true",
                        help="HAProxy health checks on every server in both configs (default off: see "
                             "bench/scale/cell.py for why)")
    add_syncer_arguments(parser, "", "consul-template")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (configs, logs) for a look")
    parser.add_argument("--out-dir", type=Path, default=RESULTS,
                        help="where scale.json, scale.md and scale.png go [bench/results]")
    parser.add_argument("--report-only", action="store_true",
                        help="re-make scale.md and scale.png from the scale.json in --out-dir; run nothing")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error("--sizes takes comma-separated integers, e.g. 100,300")
    args.haproxy_sync_set = tuple(args.haproxy_sync_set)
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = [t for t in args.tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; known: {', '.join(TOOLS)}")
    if not args.sizes or any(s < 1 or s > 5000 for s in args.sizes):
        parser.error("keep it bounded: sizes between 1 and 5000 services")
    if not 1 <= args.instances <= 50 or not 0 < args.idle <= 600 or not 1 <= args.burst_changes <= 100_000:
        parser.error("keep it bounded: 1-50 instances, idle 0-600 s, 1-100000 burst changes")
    if not 1 <= args.burst_writes <= min(args.burst_changes, 1000) or not 0 <= args.burst_window <= 60:
        parser.error("--burst-writes must be 1-1000 and at most --burst-changes; --burst-window 0-60 s")
    if not 0 < args.quiet <= 60 or not 1 <= args.settle_max <= 600 or not 1 <= args.render_repeat <= 10:
        parser.error("keep it bounded: --quiet 0-60 s, --settle-max 1-600 s, --render-repeat 1-10")
    if not 1 <= args.cold_repeat <= 10:
        parser.error("keep it bounded: --cold-repeat 1-10")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    if args.report_only:
        return _report_only(args.out_dir)
    if haproxy.find_binary("haproxy") is None:
        say("HAProxy is not installed (apt-get install haproxy); nothing to measure")
        return 1
    # Both as KeyboardInterrupt, so the finally blocks stop every process; SIGINT explicitly too,
    # because a shell starts background jobs with SIGINT ignored.
    interrupt_on(signal.SIGTERM, signal.SIGINT)
    params = Params(instances=args.instances, idle=args.idle, burst_changes=args.burst_changes,
                    burst_writes=args.burst_writes, burst_window=args.burst_window, quiet=args.quiet,
                    settle_max=args.settle_max, render_repeat=args.render_repeat, cold_repeat=args.cold_repeat,
                    health_checks=args.health_checks,
                    haproxy_sync_set=args.haproxy_sync_set)
    consul_template, ct_reason = None, ""
    if "consul-template" in args.tools:
        consul_template, ct_reason = find_consul_template(args.consul_template, install=not args.no_install)
        if consul_template is None:
            say(f"skipping consul-template: {ct_reason}")
    estimate = sum((SETUP_SECONDS.get(size, 60) + COLD_SECONDS.get(size, 15) * (args.cold_repeat - 1) + args.idle)
                   * len(args.tools) for size in args.sizes)
    say(f"scale benchmark: sizes {','.join(map(str, args.sizes))} x {args.instances} instances, tools "
        f"{','.join(args.tools)}; about {estimate / 60:.0f} min")
    workroot = Path(tempfile.mkdtemp(prefix="haproxy-sync-scale-"))
    results = []
    try:
        for size in args.sizes:
            for tool in args.tools:
                if tool == "consul-template" and consul_template is None:
                    results.append({"tool": tool, "services": size, "instances": size * args.instances,
                                    "skipped": ct_reason})
                    continue
                results.append(run_one(tool, size, params, workroot / f"{size}-{tool}", consul_template, started))
    except KeyboardInterrupt:
        say("interrupted: every process started was stopped; no results written")
        return 130
    finally:
        if args.keep:
            say(f"work directories kept in {workroot}")
        else:
            shutil.rmtree(workroot, ignore_errors=True)
    command = "python -m bench.scale " + shlex.join(argv if argv is not None else sys.argv[1:])
    ct_label = f"{version_of(consul_template)} ({consul_template})" if consul_template else f"skipped: {ct_reason}"
    doc = document(results, {**params.as_dict(), "sizes": args.sizes, "tools": args.tools}, command.strip(),
                   ct_label, started)
    paths = write_outputs(args.out_dir, doc)
    print(markdown(doc))
    say(f"wrote {shown(paths)} in {(time.monotonic() - started) / 60:.1f} min")
    return 1 if any(r.get("error") for r in results) else 0


def _report_only(out_dir: Path) -> int:
    path = out_dir / "scale.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        say(f"cannot read {path}: {exc}")
        return 1
    write_outputs(out_dir, doc)
    print(table(doc["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
