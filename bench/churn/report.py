"""From raw observations to numbers: the per-mode metrics, the markdown table, the JSON and the PNG.

Kept apart from the running so that the numbers are a pure function of what was recorded (and so
that their definitions sit in one place). Windows are those of :mod:`blocks`: N churn blocks, each
with its guard ("churn"), the quiet blocks around them minus the guards ("quiet", the baseline), and
the settle at the end (outside both):

* failed requests: the load generator's socket errors (connect, read/EOF, reset, timeout) whose
  time falls in a churn window; non-2xx: answers with another status in the same windows; the same
  two over the quiet windows and the settle are reported too, so nothing leaks unseen;
* p50/p99 latency: of the answers completed in the churn windows (and in the quiet ones, as baseline);
* throughput: per churn block k, answers/s in its window over the mean answers/s of the quiet
  windows before and after it; reported as the mean of the N block ratios with a Student-t 95%
  confidence interval, and the per-block list;
* convergence: per change, from just before the Consul write to the first ``show servers state``
  answer showing the new state (see :mod:`observe`); changes never seen converged are counted as
  ``unconverged``, not folded into the percentiles;
* workers: the master's ``show proc`` count (current + old workers), max over the churn windows and
  the last sample before the load stopped; RSS: master + all workers (psutil), same two points;
  reloads seen in quiet windows (by the 0.2 s samples of the reload counter): spill past the guard;
* CPU: per role, CPU seconds spent in the quiet windows and in the churn windows over their length,
  in % of one core (so up to 100 x CPUs for the whole machine).
"""

from __future__ import annotations

import bisect
import itertools
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import report as common

from .blocks import Window, block_ratios, cpu_percent, mean_ci95, rate_in, verdict
from .changes import Plan
from .observe import Sample
from .runner import ModeRun, Params

MODE_COLORS = {"consul-template": "tab:red", "reload": "tab:orange", "runtime": "tab:green"}
THROUGHPUT_TARGET = 0.95  # issue #4: the Runtime API mode keeps at least 95% of the no-churn throughput
TARGET_MODE = "runtime"
LIMIT_RATIO_TARGET = 2.0  # issue #19: Runtime API convergence p50 within 2x the limit measured in the same run
P99_TARGET_MS = 25.0  # issue #19: and its p99 within 25 ms
#: CPU roles in table order (see observe.ProcessSampler): the processes of the run, then "other" (derived: the
#: machine's busy time not charged to any of them), "machine" (every CPU's busy time) and "steal" (the hypervisor's).
PROCESS_ROLES = ("loadgen", "haproxy", "backends", "devconsul", "syncer", "streamer", "orchestrator")
CPU_ROLES = (*PROCESS_ROLES, "other", "machine", "steal")
CPU_LABELS = {"loadgen": "load generator", "haproxy": "HAProxy under test", "backends": "backend HAProxy",
              "machine": "machine busy", "steal": "steal"}
NOT_CONVERGED_Y = 3e4  # ms: where changes never seen converged are drawn, above any real value


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values; None when there are none."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100 * len(values)))
    return values[min(rank, len(values)) - 1]


def _span(run: ModeRun, name: str) -> Window:
    """First start and last end of a named set of windows."""
    intervals = run.windows[name]
    return intervals[0][0], intervals[-1][1]


def _inside(t: float, windows: list[Window]) -> bool:
    return any(start <= t < end for start, end in windows)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def load_metrics(run: ModeRun, name: str) -> dict[str, Any]:
    """Throughput, latency, failures and non-2xx of the load inside a set of windows."""
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


def throughput_metrics(run: ModeRun, baseline: dict[str, Any], churn: dict[str, Any]) -> dict[str, Any]:
    """The paired estimate: per churn block, its rate over the mean rate of the quiet windows around it.

    Also the pooled ratio (all churn windows over all quiet windows, from ``load_metrics``), which is
    what a single baseline measured and what drift biases; kept for comparison, not as the result.
    """
    assert run.load is not None
    churn_rps = [rate_in(run.load.t_end, w) for w in run.windows["churn"]]
    quiet_rps = [rate_in(run.load.t_end, w) for w in run.windows["quiet"]]
    ratios = block_ratios(churn_rps, quiet_rps)
    mean, ci = mean_ci95([r for r in ratios if r is not None])
    return {
        "throughput_ratio": _round(mean, 3),
        "throughput_ci95": None if ci is None else [round(ci[0], 3), round(ci[1], 3)],
        "throughput_blocks": [_round(r, 3) for r in ratios],
        "throughput_target": verdict(mean, ci, THROUGHPUT_TARGET),
        "throughput_ratio_pooled": round(churn["rps"] / baseline["rps"], 3) if baseline["rps"] else None,
        "block_rps": {"churn": [round(c, 1) for c in churn_rps], "quiet": [round(q, 1) for q in quiet_rps]},
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
        **_against_limit(run.limit, p50, p99),
    }


def _against_limit(limit: dict[str, Any] | None, p50: float | None, p99: float | None) -> dict[str, Any]:
    """The limit measured on the mode's stack, and the p50 as a multiple of it (targets: 2x, p99 25 ms)."""
    if not limit:
        return {}
    total = limit.get("total_ms")
    ratio = round(p50 * 1000 / total, 2) if p50 is not None and total else None
    return {"limit": limit, "p50_over_limit": ratio,
            "limit_target": None if ratio is None or p99 is None else
            "met" if ratio <= LIMIT_RATIO_TARGET and p99 * 1000 <= P99_TARGET_MS else "not met"}


def process_metrics(run: ModeRun) -> dict[str, Any]:
    churn = run.windows["churn"]
    load_end = _span(run, "settle")[1]  # the end: the last sample while the load still ran
    inside = [s for s in run.samples if _inside(s.t, churn)]
    counted = [s for s in inside if s.workers >= 0]
    last = next((s for s in reversed(run.samples) if s.workers >= 0 and s.t <= load_end), None)
    mib = 1024 * 1024
    return {
        "workers_max": max((s.workers for s in counted), default=None),
        "workers_end": last.workers if last else None,
        "processes_max": max((s.processes for s in inside), default=None),
        "rss_max_mib": round(max(s.rss for s in inside) / mib, 1) if inside else None,
        "rss_end_mib": round(last.rss / mib, 1) if last else None,
        "reloads_in_quiet": reloads_in(run.samples, run.windows["quiet"]),
    }


def reloads_in(samples: list[Sample], windows: list[Window]) -> int:
    """Reloads first seen by a sample taken inside the windows (0.2 s resolution; a sample during a
    reload cannot read the counter, so a reload can be seen a little late)."""
    read = [s for s in samples if s.reloads >= 0]
    return sum(cur.reloads - prev.reloads for prev, cur in itertools.pairwise(read)
               if cur.reloads > prev.reloads and _inside(cur.t, windows))


def cpu_metrics(run: ModeRun) -> dict[str, dict[str, float | None]]:
    """Per role: CPU % of one core over the quiet windows and over the churn windows.

    "other" is the machine's busy time minus every process role: other processes on the machine
    (a neighbour's job, kernel threads) and interrupts taken while no role ran. Per-process times
    are tick-sampled by the kernel, so it is a few % noisy and can come out slightly negative.
    """
    raw: dict[str, dict[str, float | None]] = {}
    for role in CPU_ROLES:
        points = [(s.t, s.cpu[role]) for s in run.samples if role in s.cpu]
        if len(points) < 2:
            continue
        ts, values = [t for t, _ in points], [v for _, v in points]
        raw[role] = {name: cpu_percent(ts, values, run.windows[name]) for name in ("quiet", "churn")}
    if "machine" in raw:
        raw["other"] = {name: _other(raw, name) for name in ("quiet", "churn")}
    return {role: {name: _round(raw[role][name], 1) for name in ("quiet", "churn")}
            for role in CPU_ROLES if role in raw}


def _other(raw: dict[str, dict[str, float | None]], name: str) -> float | None:
    parts = [raw[role][name] for role in PROCESS_ROLES if role in raw]
    machine = raw["machine"][name]
    if machine is None or any(part is None for part in parts):
        return None
    return machine - sum(part for part in parts if part is not None)


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
    baseline, churn = load_metrics(run, "quiet"), load_metrics(run, "churn")
    result.update({
        "reloads": run.reloads,
        "load": {"baseline": baseline, "churn": churn, "settle": load_metrics(run, "settle"),
                 **throughput_metrics(run, baseline, churn)},
        "convergence": convergence_metrics(run),
        "haproxy": process_metrics(run),
        "cpu_percent": cpu_metrics(run),
        "observer": {"polls": run.polls, "poll_errors": run.poll_errors},
        "servers": {"first": run.servers[0], "max": run.servers[1]},
        "syncer": run.syncer,
        "series": series(run),
    })
    if run.scenario == "streaming":
        result["streams"] = stream_metrics(run)
    return result


def series(run: ModeRun) -> dict[str, Any]:
    """Time series relative to the start of the first churn block, for the plot and for re-plotting."""
    assert run.load is not None
    start = _span(run, "churn")[0]
    first, last = _span(run, "quiet")[0], _span(run, "settle")[1]
    load = run.load
    events = [(round(t - start, 3), kind) for t, kind in load.failures if first <= t < last]
    lo, hi = bisect.bisect_left(load.t_end, first), bisect.bisect_left(load.t_end, last)
    events += [(round(load.t_end[i] - start, 3), f"status {load.status[i]}")
               for i in range(lo, hi) if not 200 <= load.status[i] < 300]
    per_second: Counter[int] = Counter(math.floor(load.t_end[i] - start) for i in range(lo, hi))
    return {
        "windows": {name: [[round(a - start, 3), round(b - start, 3)] for a, b in intervals]
                    for name, intervals in run.windows.items()},
        "failures": sorted(events),
        "convergence": [
            {
                "index": o.change.index, "offset": o.change.offset, "written_s": round(o.written_at - start, 3),
                "kind": o.change.kind, "instance": o.change.instance, "port": o.change.port,
                "expect_weight": o.change.expect_weight,
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
        return f"{round(value, digits) + 0.0:.{digits}f}"  # + 0.0: no "-0" for a value rounding to zero
    return str(value)


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table: one row per scenario and mode."""
    head = ("| scenario | mode | reloads | failed req | non-2xx | latency p50 / p99 ms | throughput vs quiet (95% CI) "
            "| convergence p50 / p99 / max ms | not converged | workers max / end | servers first / max "
            "| RSS max / end MiB | streams cut | syncer CPU % quiet / churn |")
    columns = head.count(" | ") + 1
    rows = [head, "|" + " --- |" * columns]
    for r in results:
        if "skipped" in r or "load" not in r:
            why = f"skipped: {r['skipped']}" if "skipped" in r else f"error: {r.get('error', '?')}"
            rows.append(f"| {r['scenario']} | {r['label']} | {why} |" + " |" * (columns - 3))
            continue
        churn, conv, hap = r["load"]["churn"], r["convergence"], r["haproxy"]
        streams = r.get("streams")
        syncer = r.get("cpu_percent", {}).get("syncer", {})
        rows.append(
            f"| {r['scenario']} | {r['label']}{' (error)' if r.get('error') else ''} | {_fmt(r['reloads'])} "
            f"| {churn['failed']} | {churn['non2xx']} "
            f"| {_fmt(churn['latency_p50_ms'], 2)} / {_fmt(churn['latency_p99_ms'], 2)} "
            f"| {_fmt_ratio(r['load'])} "
            f"| {_fmt(conv['p50_ms'])} / {_fmt(conv['p99_ms'])} / {_fmt(conv['max_ms'])} "
            f"| {_not_converged(conv)} "
            f"| {_fmt(hap['workers_max'])} / {_fmt(hap['workers_end'])} "
            f"| {_fmt(r.get('servers', {}).get('first'))} / {_fmt(r.get('servers', {}).get('max'))} "
            f"| {_fmt(hap['rss_max_mib'])} / {_fmt(hap['rss_end_mib'])} "
            f"| {'-' if streams is None else streams['failed_in_churn']} "
            f"| {_fmt(syncer.get('quiet'), 0)} / {_fmt(syncer.get('churn'), 0)} |"
        )
    return "\n".join(rows)


def _fmt_ratio(load: dict[str, Any]) -> str:
    """``0.97 (0.94-1.00)``: the mean of the per-block ratios and its 95% CI (none with one block)."""
    ci = load.get("throughput_ci95")
    mean = _fmt(load["throughput_ratio"], 2)
    if ci is None:
        return mean
    return f"{mean} ({_fmt(ci[0], 2)}{'-' if ci[0] >= 0 else ' to '}{_fmt(ci[1], 2)})"


def cpu_table(results: list[dict[str, Any]]) -> str:
    """CPU % of one core per role, ``quiet / churn``: one row per measured mode, one column per role seen."""
    measured = [r for r in results if r.get("cpu_percent")]
    roles = [role for role in CPU_ROLES if any(role in r["cpu_percent"] for r in measured)]
    if not roles:
        return ""
    head = "| scenario | mode | " + " | ".join(CPU_LABELS.get(role, role) for role in roles) + " |"
    rows = [head, "|" + " --- |" * (len(roles) + 2)]
    for r in measured:
        cells = []
        for role in roles:
            cpu = r["cpu_percent"].get(role)
            cells.append("-" if cpu is None else f"{_fmt(cpu['quiet'], 0)} / {_fmt(cpu['churn'], 0)}")
        rows.append(f"| {r['scenario']} | {r['label']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def target_lines(results: list[dict[str, Any]]) -> list[str]:
    """The throughput target of the Runtime API mode, per scenario: met only when the CI's lower bound is."""
    lines = []
    for r in results:
        if r["mode"] != TARGET_MODE or "load" not in r:
            continue
        load = r["load"]
        ci = load.get("throughput_ci95")
        detail = f"mean {_fmt(load['throughput_ratio'], 3)}" + (f", 95% CI {ci[0]:.3f} to {ci[1]:.3f}" if ci else "")
        lines.append(f"- {r['scenario']} / {r['label']}: throughput >= {THROUGHPUT_TARGET:g} of the quiet rate: "
                     f"**{load['throughput_target']}** ({detail}).")
        conv, limit = r["convergence"], r["convergence"].get("limit")
        if limit and "total_ms" in limit:
            lines.append(
                f"- {r['scenario']} / {r['label']}: convergence p50 {_fmt(conv['p50_ms'])} ms = "
                f"{_fmt(conv['p50_over_limit'])}x the limit measured on its stack ({limit['total_ms']:.2f} ms: "
                f"a Consul write until a parked blocking query returns "
                f"{limit['consul_write_to_blocking_return_ms']:.2f} ms + one admin-socket command "
                f"{limit['admin_socket_command_ms']:.3f} ms, medians of {limit['samples']}); p99 "
                f"{_fmt(conv['p99_ms'])} ms; target p50 <= {LIMIT_RATIO_TARGET:g}x and p99 <= "
                f"{P99_TARGET_MS:g} ms: **{conv['limit_target']}**.")
        elif limit:
            lines.append(f"- {r['scenario']} / {r['label']}: the limit could not be measured: {limit.get('error')}")
    return lines


def _not_converged(conv: dict[str, Any]) -> str:
    """Never seen converged, plus superseded: still not converged when the next change to the same
    instance came (at least the sequence's cooldown, 2.5 s, later)."""
    missing = conv["unconverged"] + conv["superseded"]
    detail = f" ({conv['superseded']} superseded)" if conv["superseded"] else ""
    return f"{missing}{detail} of {conv['changes'] - conv['write_errors']}"


def write_outputs(out_dir: Path, results: list[dict[str, Any]], params: Params, plan: Plan, command: str,
                  consul_template: str, started: float) -> list[Path]:
    """Write churn.json, churn.md and churn.png (bench/common's writer: each via a .tmp file and a rename)."""
    doc = {
        "benchmark": "churn",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command,
        "parameters": {**params.__dict__,
                       "haproxy_sync_set": [f"{a}.{b}={c}" for a, b, c in params.haproxy_sync_set]},
        "consul_template": consul_template,
        "environment": common.environment(),
        "plan": plan.to_json(),
        "results": results,
    }
    return common.write_outputs(out_dir / "churn", doc, markdown(doc), lambda png: plot(results, png))


def markdown(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    kinds = Counter(c["kind"] for c in doc["plan"]["changes"])
    results = doc["results"]
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
        f"Per mode: {p['connections']} keep-alive connections, {p['warmup']:g} s warm-up, then "
        f"{len(doc['plan']['changes'])} changes over {p['duration']:g} s of churn "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}; seed {p['seed']}) played in {p['blocks']} "
        f"blocks of {p['duration'] / p['blocks']:g} s, with a {p['quiet']:g} s quiet block before, between and after "
        f"them, and {p['settle']:g} s to settle at the end; streaming scenario: {p['streams']} concurrent 10-30 s "
        "streams throughout."
        + (f" haproxy-sync settings added: {', '.join(p['haproxy_sync_set'])}." if p["haproxy_sync_set"] else "")
        + (" Pinned (--pin): the load generator alone on CPU 1, everything else on CPU 0." if p.get("pin") else ""),
        "",
        table(results),
        "",
        f"Throughput is measured in paired blocks: each churn block, plus a {p['guard']:g} s guard after it (so a "
        "reload or a convergence spilling past its last change is charged to the churn), is divided by the mean "
        "rate of the quiet windows just before and after it, which cancels the load generator's slow drift block "
        f"by block. The column shows the mean of the {p['blocks']} per-block ratios and {_ci_words(p['blocks'])}; "
        "the per-block ratios and rates, and the pooled ratio "
        "(all churn over all quiet), are in the JSON. Failures, non-2xx, latency, workers and RSS cover the churn "
        "windows (the quiet windows' are in the JSON as `baseline`).",
        "",
        *target_lines(results),
    ]
    cpu = cpu_table(results)
    if cpu:
        lines += [
            "",
            "CPU, % of one core, quiet / churn windows. HAProxy: master and workers, the reaped old ones "
            "included; every other role: its process plus the children it reaped (the syncer's `haproxy -c`, "
            "consul-template's reload commands); orchestrator: the benchmark's own process (polling, sampling, "
            "Consul writes); machine busy: all CPUs, so up to 100 x CPUs; other: machine busy minus every process "
            "above (anything else running, kernel threads); steal: time the hypervisor gave away.",
            "",
            cpu,
        ]
    lines += ["", "![throughput, failures, convergence and workers over time](churn.png)", ""]
    for r in results:
        if r.get("skipped") or r.get("error"):
            lines.append(f"- {r['scenario']} / {r['label']}: {r.get('skipped') or r.get('error')}")
        leaked = r.get("haproxy", {}).get("reloads_in_quiet")
        if leaked:
            lines.append(f"- {r['scenario']} / {r['label']}: {leaked} reload(s) first seen in a quiet window, past "
                         f"the {p['guard']:g} s guard: charged to the quiet blocks, they flatter its throughput ratio.")
    return "\n".join(lines).rstrip("\n") + "\n"


def _ci_words(blocks: int) -> str:
    if blocks < 2:
        return "no confidence interval (one block)"
    return f"its 95% confidence interval (Student t, {blocks - 1} degree{'s' if blocks > 2 else ''} of freedom)"


def plot(results: list[dict[str, Any]], path: Path) -> str:
    """Throughput, failures (cumulative), convergence per change and workers alive over time; one line
    per mode, one column per scenario, each churn window (block + guard) shaded."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    measured = [r for r in results if "series" in r]
    scenarios = sorted({r["scenario"] for r in measured}, key=["short", "streaming"].index)
    if not scenarios:
        return "no mode produced measurements"
    fig, axes = plt.subplots(4, len(scenarios), figsize=(7 * len(scenarios), 12.5), squeeze=False, sharex="col")
    for col, scenario in enumerate(scenarios):
        runs = [r for r in measured if r["scenario"] == scenario]
        column = [axes[row][col] for row in range(4)]
        for r in runs:
            style = {"color": MODE_COLORS.get(r["mode"]), "label": r["label"]}
            _plot_rps(column[0], r["series"], style)
            _plot_failures(column[1], r["series"], style)
            _plot_convergence(column[2], r["series"], style)
            _plot_workers(column[3], r["series"], style)
        _dress(column, scenario, runs[0]["series"]["windows"]["churn"])
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
    return ""


def _plot_rps(ax: Any, series: dict[str, Any], style: dict[str, Any]) -> None:
    """Answers per whole second, in thousands; the first and last seconds are partial and left out."""
    points = series["rps_per_second"][1:-1]
    ax.plot([t + 0.5 for t, _ in points], [n / 1000 for _, n in points], linewidth=0.8, **style)


def _plot_failures(ax: Any, series: dict[str, Any], style: dict[str, Any]) -> None:
    first, last = series["windows"]["quiet"][0][0], series["windows"]["settle"][-1][1]
    events = [t for t, _ in series["failures"] if first <= t <= last]
    ax.step([first, *events, last], [0, *range(1, len(events) + 1), len(events)], where="post", **style)


def _plot_convergence(ax: Any, series: dict[str, Any], style: dict[str, Any]) -> None:
    entries = [c for c in series["convergence"] if not c.get("write_error")]
    conv = [(c["written_s"], c["ms"]) for c in entries if c["ms"] is not None]
    ax.plot([t for t, _ in conv], [ms for _, ms in conv], marker=".", linewidth=0.5, alpha=0.8, **style)
    lost = [c["written_s"] for c in entries if c["ms"] is None]
    if lost:
        ax.plot(lost, [NOT_CONVERGED_Y] * len(lost), "x", color=style["color"], markersize=7)


def _plot_workers(ax: Any, series: dict[str, Any], style: dict[str, Any]) -> None:
    start = series["windows"]["quiet"][0][0]
    samples = [(t, w) for t, w, _ in series["haproxy"] if w >= 0 and t >= start]
    ax.step([t for t, _ in samples], [w for _, w in samples], where="post", **style)


def _dress(column: list[Any], scenario: str, churn_windows: list[list[float]]) -> None:
    """Labels, scales and the shaded churn windows of one scenario's column."""
    from matplotlib.ticker import MaxNLocator

    ax_rps, ax_fail, ax_conv, ax_work = column
    ax_rps.set_title(f"scenario: {scenario} (shaded: churn blocks + guard)")
    ax_rps.set_ylabel("answers / s (thousands)")
    ax_rps.set_ylim(0, ax_rps.get_ylim()[1] * 1.1)  # room above a flat line for the legend-free top
    ax_fail.set_ylabel("failed requests + non-2xx\n(cumulative, symlog)")
    ax_fail.set_yscale("symlog", linthresh=10)  # tens of socket errors and 100k 503s on one axis
    ax_fail.set_ylim(0, max(10, ax_fail.get_ylim()[1]))  # a readable axis when nothing failed
    ax_conv.set_ylabel("convergence (ms, log)\nx at top: not converged")
    ax_conv.set_yscale("log")
    ax_conv.axhline(50, color="grey", linestyle=":", linewidth=0.8)  # issue #4's target for the Runtime API
    ax_work.set_ylabel("HAProxy workers alive")
    ax_work.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax_work.set_ylim(0, max(2.5, ax_work.get_ylim()[1]))
    ax_work.set_xlabel("seconds since the first churn block")
    for ax in column:
        ax.grid(True, alpha=0.3)
        for start, end in churn_windows:
            ax.axvspan(start, end, color="grey", alpha=0.1, linewidth=0)
    ax_rps.legend(loc="lower left", fontsize=8)
