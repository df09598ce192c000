"""From raw observations to numbers: the per-mode metrics, the markdown table, the JSON and the PNG.

Kept apart from the running so that the numbers are a pure function of what was recorded (and so
that their definitions sit in one place):

* failed requests: the load generator's socket errors (connect, read/EOF, reset, timeout) whose
  time falls in churn + settle; non-2xx: answers with another status in the same window;
* p50/p99 latency: of the answers completed in that window;
* throughput: answers per second in that window divided by the same in the mode's own baseline;
* convergence: per change, from just before the Consul write to the first ``show servers state``
  answer showing the new state (see :mod:`observe`); changes never seen converged are counted as
  ``unconverged``, not folded into the percentiles;
* workers: the master's ``show proc`` count (current + old workers), max over the churn window and
  the last sample before the load stopped; RSS: master + all workers (psutil), same two points.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import platform
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from haproxy_sync import haproxy

from .changes import Plan
from .runner import ModeRun, Params
from .stack import REPO

MODE_COLORS = {"consul-template": "tab:red", "reload": "tab:orange", "runtime": "tab:green"}
NOT_CONVERGED_Y = 3e4  # ms: where changes never seen converged are drawn, above any real value


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def _span(run: ModeRun, name: str) -> tuple[float, float]:
    """First start and last end of a named window (the churn window is one interval)."""
    intervals = run.windows[name]
    return intervals[0][0], intervals[-1][1]


def load_metrics(run: ModeRun, name: str) -> dict[str, Any]:
    """Throughput, latency, failures and non-2xx of the load inside a window (one or more intervals)."""
    assert run.load is not None
    load = run.load
    latencies: list[float] = []
    statuses: list[int] = []
    failures: list[str] = []
    seconds = 0.0
    for start, end in run.windows[name]:
        lo, hi = bisect.bisect_left(load.t_end, start), bisect.bisect_left(load.t_end, end)
        latencies.extend(load.latency[lo:hi])
        statuses.extend(load.status[lo:hi])
        failures.extend(kind for t, kind in load.failures if start <= t < end)
        seconds += end - start
    latencies.sort()
    non2xx = sum(1 for s in statuses if not 200 <= s < 300)
    seconds = max(1e-9, seconds)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return {
        "seconds": round(seconds, 2),
        "responses": len(statuses),
        "rps": round(len(statuses) / seconds, 1),
        "failed": len(failures),
        "failed_by_kind": dict(Counter(failures)),
        "non2xx": non2xx,
        "latency_p50_ms": None if p50 is None else round(p50 * 1000, 3),
        "latency_p99_ms": None if p99 is None else round(p99 * 1000, 3),
    }


def convergence_metrics(run: ModeRun) -> dict[str, Any]:
    written = [o for o in run.outcomes if not o.write_error]
    measured = [o for o in written if not o.superseded]
    latencies = sorted(o.latency for o in measured if o.latency is not None)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    by_kind: dict[str, list[float]] = {}
    for o in measured:
        if o.latency is not None:
            by_kind.setdefault(o.change.kind, []).append(o.latency)
    return {
        "changes": len(run.outcomes),
        "write_errors": len(run.outcomes) - len(written),
        "superseded": len(written) - len(measured),
        "converged": len(latencies),
        "unconverged": len(measured) - len(latencies),
        "p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "max_ms": round(latencies[-1] * 1000, 1) if latencies else None,
        "p50_ms_by_kind": {k: round(percentile(sorted(v), 50) * 1000, 1) for k, v in sorted(by_kind.items())},
    }


def process_metrics(run: ModeRun) -> dict[str, Any]:
    start, end = _span(run, "churn")
    load_end = _span(run, "baseline")[1]  # the end: the last sample while the load still ran
    inside = [s for s in run.samples if start <= s.t <= end]
    counted = [s for s in inside if s.workers >= 0]
    last = next((s for s in reversed(run.samples) if s.workers >= 0 and s.t <= load_end), None)
    mib = 1024 * 1024
    return {
        "workers_max": max((s.workers for s in counted), default=None),
        "workers_end": last.workers if last else None,
        "processes_max": max((s.processes for s in inside), default=None),
        "rss_max_mib": round(max(s.rss for s in inside) / mib, 1) if inside else None,
        "rss_end_mib": round(last.rss / mib, 1) if last else None,
    }


def stream_metrics(run: ModeRun) -> dict[str, Any]:
    assert run.load is not None
    start, end = _span(run, "churn")
    streams = run.load.streams
    in_churn = [s for s in streams if s.get("end", 0) >= start and s["start"] < end]
    failed = [s for s in in_churn if s.get("ok") is False]
    return {
        "started": len(streams),
        "completed_ok": sum(1 for s in streams if s.get("ok") is True),
        "failed_in_churn": len(failed),
        "failed_total": sum(1 for s in streams if s.get("ok") is False),
        "open_at_end": sum(1 for s in streams if s.get("ok") is None),
        "failure_examples": sorted({s.get("error", "") for s in failed})[:5],
    }


def summarize(run: ModeRun) -> dict[str, Any]:
    """Everything the table and the JSON say about one mode of one scenario."""
    result: dict[str, Any] = {"scenario": run.scenario, "mode": run.mode.key, "label": run.mode.label}
    if run.skipped:
        return {**result, "skipped": run.skipped}
    if run.error:
        result["error"] = run.error
    if run.load is None:
        return {**result, "workdir": run.workdir, "syncer": run.syncer}
    baseline, churn = load_metrics(run, "baseline"), load_metrics(run, "churn")
    ratio = churn["rps"] / baseline["rps"] if baseline["rps"] else None
    result.update({
        "reloads": run.reloads,
        "load": {"baseline": baseline, "churn": churn,
                 "throughput_ratio": None if ratio is None else round(ratio, 3)},
        "convergence": convergence_metrics(run),
        "haproxy": process_metrics(run),
        "observer": {"polls": run.polls, "poll_errors": run.poll_errors},
        "syncer": run.syncer,
        "series": series(run),
    })
    if run.scenario == "streaming":
        result["streams"] = stream_metrics(run)
    return result


def series(run: ModeRun) -> dict[str, Any]:
    """Time series relative to the start of the churn, for the plot and for anyone re-plotting."""
    assert run.load is not None
    start = _span(run, "churn")[0]
    first, last = _span(run, "baseline")
    load = run.load
    events = [(round(t - start, 3), kind) for t, kind in load.failures if first <= t < last]
    lo, hi = bisect.bisect_left(load.t_end, first), bisect.bisect_left(load.t_end, last)
    events += [(round(load.t_end[i] - start, 3), f"status {load.status[i]}")
               for i in range(lo, hi) if not 200 <= load.status[i] < 300]
    per_second: Counter[int] = Counter(int(load.t_end[i] - start) for i in range(lo, hi))
    return {
        "windows": {name: [[round(a - start, 3), round(b - start, 3)] for a, b in intervals]
                    for name, intervals in run.windows.items()},
        "failures": sorted(events),
        "convergence": [
            {
                "index": o.change.index, "offset": o.change.offset, "kind": o.change.kind,
                "instance": o.change.instance, "port": o.change.port, "expect_weight": o.change.expect_weight,
                "ms": None if o.latency is None else round(o.latency * 1000, 2),
                **({"superseded": True} if o.superseded else {}),
                **({"write_error": o.write_error} if o.write_error else {}),
                **({"last_seen": o.last_seen} if o.latency is None else {}),
            }
            for o in run.outcomes
        ],
        "rps_per_second": sorted(per_second.items()),
        "haproxy": [[round(s.t - start, 2), s.workers, round(s.rss / 1048576, 1)] for s in run.samples],
    }


# --- output ---


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: one row per scenario and mode."""
    head = ("| scenario | mode | reloads | failed req | non-2xx | latency p50 / p99 ms | throughput vs baseline "
            "| convergence p50 / p99 / max ms | not converged | workers max / end | RSS max / end MiB | streams cut |")
    rows = [head, "|" + " --- |" * head.count(" | ") + " --- |"]
    for r in results:
        if "skipped" in r:
            rows.append(f"| {r['scenario']} | {r['label']} | skipped: {r['skipped']} |" + " |" * 9)
            continue
        if "load" not in r:
            rows.append(f"| {r['scenario']} | {r['label']} | error: {r.get('error', '?')} |" + " |" * 9)
            continue
        churn, conv, hap = r["load"]["churn"], r["convergence"], r["haproxy"]
        streams = r.get("streams")
        rows.append(
            f"| {r['scenario']} | {r['label']}{' (error)' if r.get('error') else ''} | {_fmt(r['reloads'])} "
            f"| {churn['failed']} | {churn['non2xx']} "
            f"| {_fmt(churn['latency_p50_ms'], 2)} / {_fmt(churn['latency_p99_ms'], 2)} "
            f"| {_fmt(r['load']['throughput_ratio'], 3)} "
            f"| {_fmt(conv['p50_ms'])} / {_fmt(conv['p99_ms'])} / {_fmt(conv['max_ms'])} "
            f"| {_not_converged(conv)} "
            f"| {_fmt(hap['workers_max'])} / {_fmt(hap['workers_end'])} "
            f"| {_fmt(hap['rss_max_mib'])} / {_fmt(hap['rss_end_mib'])} "
            f"| {'-' if streams is None else streams['failed_in_churn']} |"
        )
    return "\n".join(rows)


def _not_converged(conv: dict[str, Any]) -> str:
    """Never seen converged, plus superseded: still not converged when the next change to the same
    instance came (at least the sequence's cooldown, 2.5 s, later)."""
    missing = conv["unconverged"] + conv["superseded"]
    detail = f" ({conv['superseded']} superseded)" if conv["superseded"] else ""
    return f"{missing}{detail} of {conv['changes'] - conv['write_errors']}"


def environment() -> dict[str, Any]:
    try:
        hap = subprocess.run([haproxy.find_binary("haproxy") or "haproxy", "-v"], capture_output=True,
                             text=True, timeout=10, check=False).stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        hap = "unknown"
    return {
        "cpus": os.cpu_count(), "python": platform.python_version(), "haproxy": hap,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "haproxy_sync_code": code_identity(),
    }


def code_identity() -> dict[str, str]:
    """Which haproxy-sync was measured: the commit, whether the package differed from it, a content hash.

    Results only mean something next to the code they measured, and that code may be uncommitted.
    """
    package = REPO / "haproxy_sync"
    digest = hashlib.sha256()
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes_in_haproxy_sync": "yes" if git("status", "--porcelain", "--", "haproxy_sync") else "no",
        "sha256_of_haproxy_sync": digest.hexdigest()[:16],
    }


def write_outputs(out_dir: Path, results: list[dict[str, Any]], params: Params, plan: Plan, command: str,
                  consul_template: str, started: float) -> dict[str, Path]:
    """Write churn.json, churn.md and churn.png (each via a .tmp file and a rename)."""
    doc = {
        "benchmark": "churn",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command,
        "parameters": {**params.__dict__,
                       "haproxy_sync_set": [f"{a}.{b}={c}" for a, b, c in params.haproxy_sync_set]},
        "consul_template": consul_template,
        "environment": environment(),
        "plan": plan.to_json(),
        "results": results,
    }
    return write_files(out_dir, "churn", doc, markdown(doc), lambda png: plot(results, png))


def write_files(
    out_dir: Path, stem: str, doc: dict[str, Any], text: str, draw: Callable[[Path], str]
) -> dict[str, Path]:
    """``<stem>.json``, ``<stem>.md`` and ``<stem>.png``, each via a .tmp file and a rename.

    ``draw`` writes the PNG and returns "" or why it could not; then a PNG of an earlier run is
    removed, since it would not match the table.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in ("json", "md", "png")}
    _atomic_text(paths["json"], json.dumps(doc, indent=1) + "\n")
    _atomic_text(paths["md"], text)
    reason = draw(paths["png"])
    if reason:
        print(f"no PNG: {reason}")
        paths.pop("png").unlink(missing_ok=True)
    return paths


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def markdown(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    kinds = Counter(c["kind"] for c in doc["plan"]["changes"])
    lines = [
        "# Churn benchmark results",
        "",
        f"Generated {doc['generated']} by `{doc['command']}` in {doc['wall_seconds']:.0f} s"
        f"{' (--quick smoke run: short windows, few changes)' if p['quick'] else ''}.",
        f"{doc['environment']['cpus']} CPUs, {doc['environment']['haproxy']}, Python {doc['environment']['python']}; "
        f"consul-template: {doc['consul_template']}.",
        "haproxy-sync measured: commit {commit}{dirty}, package content sha256 {sha256_of_haproxy_sync}.".format(
            dirty=" plus uncommitted changes"
            if doc["environment"]["haproxy_sync_code"]["uncommitted_changes_in_haproxy_sync"] == "yes" else "",
            **doc["environment"]["haproxy_sync_code"],
        ),
        "",
        f"Per mode: {p['connections']} keep-alive connections, {p['warmup']:g} s warm-up, {p['baseline']:g} s "
        f"no-churn baseline, then {len(doc['plan']['changes'])} changes over {p['duration']:g} s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; seed {p['seed']}) and {p['settle']:g} s to "
        f"settle; streaming scenario: {p['streams']} concurrent 10-30 s streams throughout."
        + (f" haproxy-sync settings added: {', '.join(p['haproxy_sync_set'])}." if p["haproxy_sync_set"] else ""),
        "",
        table(doc["results"]),
        "",
        "![failures, convergence and workers over time](churn.png)",
        "",
    ]
    notes = [r for r in doc["results"] if r.get("skipped") or r.get("error")]
    for r in notes:
        lines.append(f"- {r['scenario']} / {r['label']}: {r.get('skipped') or r.get('error')}")
    return "\n".join(lines) + ("\n" if notes else "")


def plot(results: list[dict[str, Any]], path: Path) -> str:
    """Failures (cumulative), convergence per change and workers alive over time; one line per mode."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    measured = [r for r in results if "series" in r]
    scenarios = sorted({r["scenario"] for r in measured}, key=["short", "streaming"].index)
    if not scenarios:
        return "no mode produced measurements"
    fig, axes = plt.subplots(3, len(scenarios), figsize=(7 * len(scenarios), 10), squeeze=False, sharex="col")
    for col, scenario in enumerate(scenarios):
        ax_fail, ax_conv, ax_work = axes[0][col], axes[1][col], axes[2][col]
        most_workers = 2
        for r in (r for r in measured if r["scenario"] == scenario):
            color, label = MODE_COLORS.get(r["mode"]), r["label"]
            churn_end = r["series"]["windows"]["churn"][0][1]
            events = [t for t, _ in r["series"]["failures"] if 0 <= t <= churn_end]
            xs = [0.0, *events, churn_end]
            ax_fail.step(xs, [0, *range(1, len(events) + 1), len(events)], where="post", color=color, label=label)
            entries = [c for c in r["series"]["convergence"] if not c.get("write_error")]
            conv = [(c["offset"], c["ms"]) for c in entries if c["ms"] is not None]
            ax_conv.plot([o for o, _ in conv], [ms for _, ms in conv], marker=".", linewidth=0.5, alpha=0.8,
                         color=color, label=label)
            lost = [c["offset"] for c in entries if c["ms"] is None]
            if lost:
                ax_conv.plot(lost, [NOT_CONVERGED_Y] * len(lost), "x", color=color, markersize=7)
            samples = [(t, w) for t, w, _ in r["series"]["haproxy"] if w >= 0 and t >= -2]
            ax_work.step([t for t, _ in samples], [w for _, w in samples], where="post", color=color, label=label)
            most_workers = max([most_workers, *(w for _, w in samples)])
        ax_fail.set_title(f"scenario: {scenario}")
        ax_fail.set_ylabel("failed requests + non-2xx\n(cumulative, symlog)")
        ax_fail.set_yscale("symlog", linthresh=10)  # tens of socket errors and 100k 503s on one axis
        ax_fail.set_ylim(bottom=0)
        ax_conv.set_ylabel("convergence (ms, log)\nx at top: not converged")
        ax_conv.set_yscale("log")
        ax_conv.axhline(50, color="grey", linestyle=":", linewidth=0.8)  # issue #4's target for the Runtime API
        ax_work.set_ylabel("HAProxy workers alive")
        ax_work.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax_work.set_ylim(0, most_workers + 0.5)
        ax_work.set_xlabel("seconds since the first change")
        churn_spans = [r["series"]["windows"]["churn"][0] for r in measured if r["scenario"] == scenario]
        for ax in (ax_fail, ax_conv, ax_work):
            ax.grid(True, alpha=0.3)
            if churn_spans:
                ax.axvspan(*churn_spans[0], color="grey", alpha=0.07)
        ax_fail.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    tmp.replace(path)
    return ""
