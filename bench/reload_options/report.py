"""From recorded runs to numbers: per-variant summaries, the markdown tables, the JSON and the PNG.

Kept apart from the running so that every figure is a pure function of the runs in the JSON (one
can re-derive the tables from ``bench/results/reload_options.json`` alone). Definitions:

* failed requests: wrk's socket errors (connect + read + write + timeout) over the whole run;
  a request cut by a worker closing its connection is a ``read`` error;
* non-2xx: wrk's "Non-2xx or 3xx responses";
* throughput ratio: the run's requests/s over the mean requests/s of the no-reload baseline runs
  of the same invocation (same load, same duration class);
* old workers: from ``show proc`` every 200 ms, workers whose reload generation is > 0; "max" over
  the run, "drain" the seconds from the last confirmed reload until they are gone for good;
* streams cut: long-lived streams that ended without their ``end`` line.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.common import report as common

SERIES_STEP = 2.0  # seconds between the points of the "old workers over time" column

Runs = list[dict[str, Any]]


def _spread(values: list[float | int | None], digits: int = 1) -> dict[str, Any]:
    real = [v for v in values if v is not None]
    if not real:
        return {"mean": None, "min": None, "max": None, "missing": len(values)}
    return {
        "mean": round(statistics.fmean(real), digits + 2),
        "min": round(min(real), digits + 2),
        "max": round(max(real), digits + 2),
        "missing": len(values) - len(real),
    }


def baseline_rps(runs: Runs) -> float | None:
    rps = [r["wrk"]["rps"] for r in runs if r["variant"] == "baseline"]
    return statistics.fmean(rps) if rps else None


def old_series(run: dict[str, Any], step: float = SERIES_STEP) -> list[int | None]:
    """Old workers every ``step`` seconds from the first reload (the last answered sample at each point)."""
    start = run["reloads"]["first_s"] or 0.0
    samples = [(t, old) for t, _, old in run["samples"] if old is not None]
    if not samples:
        return []
    points: list[int | None] = []
    t = start
    while t <= samples[-1][0] + 1e-9:
        before = [old for st, old in samples if st <= t]
        points.append(before[-1] if before else None)
        t += step
    return points


def summarize(runs: Runs) -> list[dict[str, Any]]:
    """One row per (scenario, schedule, variant), in the order the runs first appear."""
    base = baseline_rps(runs)
    groups: dict[tuple[str, str, str], Runs] = defaultdict(list)
    for run in runs:
        if run["scenario"] in ("keep-alive", "long-lived"):
            groups[(run["scenario"], run["schedule"], run["variant"])].append(run)
    rows = []
    for (scenario, schedule, variant), members in groups.items():
        drains = [r["drain_s"] for r in members]
        row: dict[str, Any] = {
            "scenario": scenario,
            "schedule": schedule,
            "variant": variant,
            "label": members[0]["label"],
            "options": members[0]["options"],
            "repeats": len(members),
            "failed": _spread([r["wrk"]["failed"] for r in members]),
            "read_errors": _spread([r["wrk"]["read"] for r in members]),
            "non2xx": _spread([r["wrk"]["non2xx"] for r in members]),
            "rps": _spread([r["wrk"]["rps"] for r in members], 0),
            "throughput_ratio": _spread([r["wrk"]["rps"] / base if base else None for r in members], 3),
            "p99_ms": _spread([r["wrk"]["p99_ms"] for r in members], 2),
            "max_old": _spread([r["max_old"] for r in members]),
            "old_at_end": _spread([r["old_at_end"] for r in members]),
            "drain_s": _spread(drains),
            "drain_never": sum(d is None for d in drains) if members[0]["reloads"]["planned"] else 0,
            "reloads_confirmed": sum(r["reloads"]["confirmed"] for r in members),
            "reloads_planned": sum(r["reloads"]["planned"] for r in members),
            "achieved_rate": _spread([r["reloads"]["achieved_rate"] for r in members], 2),
            "old_series_first_repeat": old_series(members[0]) if members[0]["reloads"]["planned"] else [],
        }
        if "streams" in members[0]:
            row["streams_started"] = sum(r["streams"]["started"] for r in members)
            row["streams_cut"] = _spread([r["streams"]["cut"] for r in members])
            row["stream_seconds"] = members[0]["streams"]["seconds"]
        rows.append(row)
    return rows


def _fmt(spread: dict[str, Any], digits: int = 1, pct: bool = False) -> str:
    """``mean (min-max)``, or just the mean when min and max agree to ``digits`` places."""
    if spread["mean"] is None:
        return "n/a"
    places = 2 if pct else digits

    whole = not pct and all(float(spread[k]).is_integer() for k in ("mean", "min", "max"))
    whole_bounds = not pct and float(spread["min"]).is_integer() and float(spread["max"]).is_integer()

    def one(value: float, bound: bool = False) -> str:
        return f"{value:g}" if whole or (bound and whole_bounds) else f"{value:.{places}f}"

    if round(spread["min"], places) == round(spread["max"], places):
        return one(spread["min"], bound=True)
    return f"{one(spread['mean'])} ({one(spread['min'], True)}-{one(spread['max'], True)})"


def _drain(row: dict[str, Any]) -> str:
    if row["drain_s"]["mean"] is None:
        return "not in run"
    text = f"{row['drain_s']['max']:.1f}"
    return text + (f" ({row['drain_never']} runs: not in run)" if row["drain_never"] else "")


def keepalive_table(rows: list[dict[str, Any]]) -> str:
    header = (
        "| schedule | variant | failed requests | of which read | non-2xx | throughput / baseline "
        "| max old workers | old workers gone, s after last reload (max) | p99 ms "
        "| reloads confirmed, rate achieved |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for row in rows:
        if row["scenario"] != "keep-alive":
            continue
        if row["variant"] == "baseline":
            lines.append(
                f"| none | {row['label']} | {_fmt(row['failed'])} | {_fmt(row['read_errors'])} | {_fmt(row['non2xx'])} "
                f"| 1.00 ({_fmt(row['rps'], 0)} req/s) | n/a | n/a | {_fmt(row['p99_ms'], 2)} | n/a |"
            )
            continue
        lines.append(
            f"| {row['schedule']} | {row['label']} | {_fmt(row['failed'])} | {_fmt(row['read_errors'])} "
            f"| {_fmt(row['non2xx'])} | {_fmt(row['throughput_ratio'], pct=True)} | {_fmt(row['max_old'])} "
            f"| {_drain(row)} | {_fmt(row['p99_ms'], 2)} "
            f"| {row['reloads_confirmed']}/{row['reloads_planned']} at {_fmt(row['achieved_rate'], 2)}/s |"
        )
    return header + "\n".join(lines) + "\n"


def long_lived_table(rows: list[dict[str, Any]]) -> str:
    selected = [row for row in rows if row["scenario"] == "long-lived"]
    if not selected:
        return ""
    header = (
        "| schedule | variant | streams cut / run | failed requests | non-2xx | throughput / baseline "
        "| max old workers | old workers at end | old workers gone, s after last reload (max) "
        f"| old workers every {SERIES_STEP:g} s from the first reload (repeat 1) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {row['schedule']} | {row['label']} "
        f"| {_fmt(row['streams_cut'])} of {row['streams_started'] // row['repeats']} "
        f"| {_fmt(row['failed'])} | {_fmt(row['non2xx'])} | {_fmt(row['throughput_ratio'], pct=True)} "
        f"| {_fmt(row['max_old'])} | {_fmt(row['old_at_end'])} | {_drain(row)} "
        f"| {' '.join('?' if v is None else str(v) for v in row['old_series_first_repeat'])} |"
        for row in selected
    ]
    return header + "\n".join(lines) + "\n"


def series_table(rows: list[dict[str, Any]]) -> str:
    """Old workers over time in the keep-alive scenario, first repeat: what each variant leaves behind."""
    selected = [row for row in rows if row["scenario"] == "keep-alive" and row["old_series_first_repeat"]]
    if not selected:
        return ""
    header = (
        f"| schedule | variant | old workers every {SERIES_STEP:g} s from the first reload (repeat 1) |\n"
        "| --- | --- | --- |\n"
    )
    lines = [
        f"| {row['schedule']} | {row['label']} | "
        f"{' '.join('?' if v is None else str(v) for v in row['old_series_first_repeat'])} |"
        for row in selected
    ]
    return header + "\n".join(lines) + "\n"


def idle_table(runs: Runs) -> str:
    """One reload with idle keep-alive clients: how long the old worker stays, per variant."""
    selected = [run for run in runs if run["scenario"] == "idle"]
    if not selected:
        return ""
    header = (
        "| variant | idle keep-alive connections | old worker gone, s after the reload "
        "| connections closed by HAProxy |\n| --- | --- | --- | --- |\n"
    )
    lines = []
    for run in selected:
        life = run["old_worker_life_s"]
        gone = f"not within {run['observed_s']:g}" if life is None else f"{life:.1f}"
        lines.append(f"| {run['label']} | {run['connections']} | {gone} | {run['closed_by_haproxy']} |")
    return header + "\n".join(lines) + "\n"


def environment(binary: str) -> dict[str, Any]:
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {
        "haproxy": common.haproxy_version(binary),
        "wrk": common.first_line(["wrk", "--version"]),
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg_at_start": load,
    }


def markdown(meta: dict[str, Any], rows: list[dict[str, Any]], runs: Runs) -> str:
    parts = [
        "# Reload options under keep-alive load\n",
        f"Command: `{meta['command']}`  \n"
        f"{meta['environment']['haproxy']}; {meta['environment']['wrk']}; {meta['environment']['cpus']} CPUs; "
        f"load average at start {' '.join(meta['environment']['loadavg_at_start'])}; "
        f"run took {meta['elapsed_s'] / 60:.1f} min; {meta['repeats']} repeats per row; "
        "values are mean (min-max) over repeats.\n",
        "\n## Keep-alive load (wrk -t2 -c50, short requests)\n\n",
        keepalive_table(rows),
        "\n### Old workers over time\n\n",
        series_table(rows),
    ]
    long_lived = long_lived_table(rows)
    if long_lived:
        parts += [
            f"\n## Long-lived connections ({meta['stream_clients']} streams of {meta['stream_seconds']:g} s, "
            "started across the reload window, plus the same wrk load)\n\n",
            long_lived,
        ]
    idle = idle_table(runs)
    if idle:
        parts += [
            "\n## Idle keep-alive clients (one request each, then quiet; one reload; no load; "
            "timeout http-keep-alive 10s)\n\n",
            idle,
        ]
    return "".join(parts)


def write_outputs(results_dir: Path, meta: dict[str, Any], runs: Runs, rows: list[dict[str, Any]]) -> list[Path]:
    """reload_options.{json,md,png} (bench/common's writer: each via a .tmp file and a rename)."""
    return common.write_outputs(results_dir / "reload_options", {"meta": meta, "summary": rows, "runs": runs},
                                markdown(meta, rows, runs), lambda png: plot(png, runs))


def plot(path: Path, runs: Runs) -> str:
    """Old workers over time (repeat 1) for the longest keep-alive schedule and the long-lived scenario."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    reloading = [r for r in runs if r["scenario"] != "idle" and r["reloads"]["planned"] and r["repeat"] == 1]
    if not reloading:
        return "no run reloaded"
    keepalive = [r for r in reloading if r["scenario"] == "keep-alive"]
    longest = max((r["reloads"]["planned"] for r in keepalive), default=0)
    keepalive = [r for r in keepalive if r["reloads"]["planned"] == longest]
    long_lived = [r for r in reloading if r["scenario"] == "long-lived"]
    panels = [
        (f"keep-alive, {keepalive[0]['schedule'] if keepalive else ''}", keepalive),
        (f"long-lived streams, {long_lived[0]['schedule'] if long_lived else ''}", long_lived),
    ]
    panels = [(title, members) for title, members in panels if members]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 3.2 * len(panels)), squeeze=False)
    for ax, (title, members) in zip(axes[:, 0], panels, strict=True):
        for run in members:
            points = [(t, old) for t, _, old in run["samples"] if old is not None]
            ax.step([t for t, _ in points], [old for _, old in points], where="post",
                    label=f"{run['label']} ({run['wrk']['failed']} failed)")
            cuts = [s["end"] for s in run.get("streams", {}).get("each", []) if not s["complete"]]
            if cuts:
                ax.plot(cuts, [0] * len(cuts), "x", color=ax.lines[-1].get_color())
        first = min(r["reloads"]["first_s"] for r in members)
        last = max(r["reloads"]["last_s"] for r in members)
        ax.axvspan(first, last, color="0.9", zorder=0)
        ax.set_title(f"Old HAProxy workers ({title}, repeat 1); grey: reloads; x: stream cut")
        ax.set_xlabel("seconds from run start")
        ax.set_ylabel("old workers")
        ax.set_ylim(bottom=0)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return ""
