"""``python -m bench.dashboard``: run the sandbox under churn and load, scrape it, draw the dashboard.

Why argparse and not the project's click CLI: the benchmark is not part of the installed package
and must not add a command to it. Run from the repository root, with the project's venv.

Timeline of a run::

    start sandbox, wait for /ready (~5 s) | scrape every 1 s; load; churn timeline: --duration | stop (~3 s)

Then every panel's query is evaluated over the scrapes and drawn. ``--from-json`` skips the run and
redraws from a saved ``dashboard.json`` (the raw scrapes are in it), so the drawing can be changed
without running the sandbox again. Every process started here (the ``haproxy-sync dev`` process,
which owns HAProxy, the app instances and devconsul) is stopped at the end, on an error, on Ctrl-C
and on SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import haproxy_sync
from bench.common.process import interrupt
from bench.common.report import git, haproxy_version, write_outputs

from .churn import MIN_DURATION, Churn
from .draw import Line, Panel, draw
from .load import Load
from .promql import Evaluator, PromQLError, Store, grafana_variables, legend, metric_names, parse
from .sandbox import Sandbox, SandboxError
from .scrape import Scraper, Target

DASHBOARD = Path("ansible/roles/monitoring/files/dashboards/haproxy-sync.json")
DEFAULT_OUT = Path("bench/results/dashboard")  # relative to the repository root, where -m runs
SYNTHETIC = {"up"}  # series Prometheus makes itself, not any target


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard",
        description=(
            "Draw haproxy-sync's Grafana dashboard from real data: run `haproxy-sync dev` under Consul churn "
            "and HTTP load, scrape haproxy-sync's and HAProxy's /metrics every second, evaluate each panel's "
            "PromQL over the scrapes and draw the panels in the dashboard's grid. Writes OUT.png and OUT.json "
            "(raw scrapes, evaluated series, churn events, load counts, exported series names)."
        ),
    )
    parser.add_argument("--duration", type=float, default=240.0,
                        help=f"seconds of churn, load and scraping (at least {MIN_DURATION:g}) [default: 240]")
    parser.add_argument("--rate", type=float, default=300.0, help="HTTP requests per second through HAProxy "
                        "[default: 300]")
    parser.add_argument("--instances", type=int, default=7, help="sandbox app instances [default: 7]")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help=f"Grafana JSON [default: {DASHBOARD}]")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output path without extension [default: {DEFAULT_OUT}]")
    parser.add_argument("--edit-config-at", type=float, default=None, metavar="SECONDS",
                        help="also append a second [[services]] to the sandbox's config.toml at this offset "
                        "(forces a reload). Off by default: `haproxy-sync dev` rewrites config.toml from its own "
                        "settings on every re-read, which drops the edit and triggers the file watcher again")
    parser.add_argument("--from-json", type=Path, default=None, metavar="FILE",
                        help="do not run anything: redraw from a dashboard.json written by an earlier run")
    args = parser.parse_args(argv)
    if args.from_json is None and args.duration < MIN_DURATION:
        parser.error(f"--duration must be at least {MIN_DURATION:g} seconds")
    return args


def load_panels(path: Path) -> list[dict[str, Any]]:
    """The dashboard's panels, each query parsed up front so an unsupported one fails before any run."""
    panels = json.loads(path.read_text())["panels"]
    for panel in panels:
        for target in panel.get("targets", []):
            try:
                parse(grafana_variables(target["expr"]))
            except PromQLError as exc:
                raise SystemExit(f"{path}: panel {panel['title']!r}: {exc}") from None
    return panels


def wanted_names(panels: list[dict[str, Any]]) -> set[str]:
    exprs = [grafana_variables(t["expr"]) for p in panels for t in p.get("targets", [])]
    return {name for expr in exprs for name in metric_names(parse(expr))}


def check_names(panels: list[dict[str, Any]], exported: dict[str, set[str]],
                declared: dict[str, set[str]]) -> list[dict[str, Any]]:
    """Every query's metric names checked against what the targets really exported during the run.

    ``status`` is ``sampled`` (some target exported samples of it), ``synthetic`` (Prometheus makes
    it), ``declared, no samples`` (a target declared it with ``# TYPE`` but never had a series: a
    labelled counter that never counted), or ``missing`` (no target knows the name: a real mismatch).
    """
    rows = []
    for panel in panels:
        for target in panel.get("targets", []):
            for name in metric_names(parse(grafana_variables(target["expr"]))):
                sampled = sorted(job for job, names in exported.items() if name in names)
                known = sorted(job for job, names in declared.items() if name in names)
                status = ("sampled" if sampled else "synthetic" if name in SYNTHETIC
                          else "declared, no samples" if known else "missing")
                rows.append({"panel": panel["title"], "refId": target["refId"], "series": name,
                             "jobs": sampled or known, "status": status})
    return rows


def evaluate(panels: list[dict[str, Any]], store: Store) -> tuple[list[Panel], dict[str, Any]]:
    """Each panel's queries over the store: drawable panels and the evaluated series for the JSON."""
    evaluator = Evaluator(store)
    drawn: list[Panel] = []
    results: dict[str, Any] = {}
    for panel in panels:
        lines: list[Line] = []
        for target in panel.get("targets", []):
            series = evaluator.range_query(grafana_variables(target["expr"]))
            for labels, values in sorted(series.items(), key=lambda item: sorted(item[0])):
                text = legend(target.get("legendFormat", ""), labels)
                lines.append(Line(text, values))
                results.setdefault(panel["title"], []).append({
                    "refId": target["refId"], "expr": target["expr"], "legend": text, "labels": dict(labels),
                    "values": [None if v is None else round(v, 6) for v in values],
                })
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        drawn.append(Panel(panel["title"], unit, panel["gridPos"], lines))
    return drawn, results


def has_data(lines: list[Line]) -> bool:
    return any(v is not None and v == v for line in lines for v in line.values)


def store_json(store: Store) -> dict[str, Any]:
    return {"times": store.times,
            "series": [{"labels": dict(labels), "values": values} for labels, values in store.series.items()]}


def store_from_json(data: dict[str, Any]) -> Store:
    return Store(list(data["times"]),
                 {frozenset(item["labels"].items()): list(item["values"]) for item in data["series"]})


def git_revision() -> str:
    """The commit the sandbox ran, and whether haproxy_sync/ had uncommitted changes (others edit it)."""
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--", "haproxy_sync")
    return f"{head}{' + uncommitted changes in haproxy_sync/' if dirty else ''}" if head else "unknown"


def short_haproxy_version() -> str:
    match = re.search(r"version (\S+)", haproxy_version())
    return match.group(1) if match else "unknown"


def log_findings(path: Path) -> dict[str, Any]:
    """What the sandbox's log says about the daemon: line counts by level, and every warning and error."""
    levels: dict[str, int] = {}
    notable: list[str] = []
    reloads: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        match = re.search(r"level=(\w+)", line)
        if match:
            levels[match.group(1)] = levels.get(match.group(1), 0) + 1
            if match.group(1) in ("warning", "error", "critical"):
                notable.append(line)
        if "reload" in line and "no reload" not in line:
            reloads.append(line)
    return {"levels": levels, "warnings_and_errors": notable, "reload_lines": reloads}


def caption(meta: dict[str, Any], events: list[dict[str, Any]], load: dict[str, int], started: float) -> str:
    """The picture's caption: exactly how it was made, and what happened when."""
    acts = [e for e in events if not re.match(r"cabify-\d+ weight|(de)?register cabify-\d+", e["what"])]
    background = len(events) - len(acts)
    when = "; ".join(
        f"{datetime.datetime.fromtimestamp(started + e['at'], datetime.UTC):%H:%M:%S} {e['what']}"
        + (f" (FAILED: {e['error']})" if e["error"] else "") for e in acts
    )
    answers = ", ".join(f"{k} {v}" for k, v in sorted(load.items()))
    return (
        f"Drawn by `python -m bench.dashboard` on {meta['date']} from a real run, not a Grafana screenshot: "
        f"`haproxy-sync dev` (haproxy-sync {meta['haproxy_sync']} at {meta.get('revision', 'unknown')}, "
        f"HAProxy {meta['haproxy']}, devconsul, "
        f"{meta['instances']} app instances) for {meta['duration']:.0f} s with ~{meta['rate']:.0f} req/s of GET / "
        f"through HAProxy (client saw: {answers}) and churn through the Consul API: {background} background "
        f"changes (a Weights.Passing change or a deregister, re-registered 15 s later, every 6 s) and, at (UTC) "
        f"{when}.\n"
        f"haproxy-sync's /metrics and HAProxy's exporter were scraped every 1 s (job labels as in the Ansible "
        f"Prometheus config, instance host:port: one sandbox, where the role names both by the edge's address; "
        f"`up` as Prometheus makes it). Each panel's PromQL, verbatim from "
        f"{DASHBOARD.as_posix()} with every instance and backend selected and $__rate_interval at 1m, was "
        f"evaluated at every scrape by a small evaluator that implements only what these queries use: selectors "
        f"with staleness, rate() and increase() with Prometheus's extrapolation and counter resets, sum/max/min "
        f"[by], vector arithmetic, histogram_quantile over le buckets, and the `== 1` filter. The sandbox started "
        f"at the left edge with every counter at 0, so a [1m] rate in the first minute is what happened since the "
        f"start divided by a minute, as Prometheus computes it. "
        f"Grafana and Prometheus did not run; "
        f"matplotlib drew the panels on the dashboard's grid with its titles, units and legends. Raw scrapes and "
        f"evaluated series: {meta['json']}."
    )


def run(args: argparse.Namespace, panels: list[dict[str, Any]]) -> dict[str, Any]:
    """The sandbox run: returns everything the JSON keeps."""
    log_dir = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))  # kept after the run: the sandbox's log
    sandbox = Sandbox(log_dir=log_dir, instances=args.instances)
    scraper: Scraper | None = None
    load: Load | None = None
    churn: Churn | None = None
    began = time.monotonic()
    revision = git_revision()  # before the start: the sandbox imports the code as it is now
    try:
        sandbox.start()
        print(sandbox.summary, end="", flush=True)
        sandbox.wait_ready()
        scraper = Scraper(
            [Target("haproxy-sync", f"127.0.0.1:{sandbox.metrics_port}"),
             Target("haproxy", f"127.0.0.1:{sandbox.stats_port}")],
            keep=wanted_names(panels),
        )
        scraper.start()
        load = Load("127.0.0.1", sandbox.http_port, rate=args.rate, workers=max(4, int(args.rate // 30)))
        load.start()
        churn = Churn(sandbox, args.duration, edit_config_at=args.edit_config_at)
        churn.start()
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))
            print(f"  {args.duration - max(0.0, end - time.monotonic()):5.0f}/{args.duration:.0f} s, "
                  f"{len(scraper.times)} scrapes, {len(churn.events)} changes", flush=True)
    finally:
        for part in (churn, load, scraper):
            if part is not None:
                part.stop()
        code = sandbox.stop()
        print(f"sandbox stopped (exit {code})", flush=True)
    assert scraper is not None and load is not None and churn is not None
    findings = log_findings(sandbox.stderr_path)
    return {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
            "haproxy_sync": haproxy_sync.__version__, "revision": revision, "haproxy": short_haproxy_version(),
            "python": platform.python_version(), "instances": args.instances, "duration": args.duration,
            "rate": args.rate, "run_seconds": round(time.monotonic() - began, 1), "sandbox_exit": code,
            "started": churn.started, "json": args.out.with_suffix(".json").as_posix(),
            "sandbox_log": sandbox.stderr_path.as_posix(),
        },
        "events": [e.__dict__ for e in churn.events],
        "load": dict(load.totals()),
        "load_per_second": {str(k): dict(v) for k, v in sorted(load.per_second.items())},
        "scrape_failures": scraper.failures,
        "exported": {job: sorted(names) for job, names in scraper.exported.items()},
        "declared_only": {job: sorted(names - scraper.exported.get(job, set()))
                          for job, names in scraper.declared_only.items()},
        "log": findings,
        "store": store_json(scraper.store()),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    panels = load_panels(args.dashboard)
    if args.from_json is not None:
        data = json.loads(args.from_json.read_text())
    else:
        previous = signal.signal(signal.SIGTERM, interrupt)  # so that every ``finally`` runs
        try:
            data = run(args, panels)
        except KeyboardInterrupt:
            print("interrupted; everything started was stopped, nothing written", file=sys.stderr)
            return 130
        except SandboxError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
    store = store_from_json(data["store"])
    drawn, results = evaluate(panels, store)
    data["names"] = check_names(panels, {job: set(names) for job, names in data["exported"].items()},
                                {job: set(names) for job, names in data.get("declared_only", {}).items()})
    data["panels"] = results
    data["panels_with_data"] = {p.title: has_data(p.lines) for p in drawn}
    meta = data["meta"]
    text = caption(meta, data["events"], data["load"], meta["started"])
    paths = write_outputs(args.out, data, compact=True, draw=lambda png: draw(
        drawn, store.times, "haproxy-sync", f"sandbox run, {meta['date']}, times UTC", text, png))
    print(f"wrote {' and '.join(map(str, paths))} ({len(store.times)} scrapes, run {meta['run_seconds']} s)")
    for title, ok in data["panels_with_data"].items():
        print(f"  {'data   ' if ok else 'NO DATA'}  {title}")
    for row in data["names"]:
        if row["status"] == "missing":
            print(f"  MISMATCH: panel {row['panel']!r} {row['refId']} names {row['series']}, which no target "
                  "exported or declared during the run")
        elif row["status"] != "sampled":
            print(f"  note: panel {row['panel']!r} {row['refId']}: {row['series']} {row['status']}")
    levels = data["log"]["levels"]
    print(f"  sandbox log ({meta['sandbox_log']}): {levels}; client answers: {data['load']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
