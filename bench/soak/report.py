"""The outputs: a table on stdout, ``<out>.json`` with every sample, and ``<out>.png``.

Why the table shows three points (start, after the warm-up, end) next to the fitted slope: a reader
should see at a glance how much the process grew while warming up (imports, the thread pool, slot
tables reaching their size), which is not a leak and is left out of the fit, and how little it moved
after that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import report as common

from .analysis import window

ROWS = (("rss_mb", "RSS (MB)", "rss", 2), ("uss_mb", "USS (MB)", "uss", 2), ("heap_mb", " [heap]", "", 2),
        ("anon_mb", " anon maps", "", 2), ("file_mb", " file maps", "", 2), ("fds", "open FDs", "fds", 0),
        ("threads", "threads", "threads", 0))


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _applies(delta: dict[str, float]) -> str:
    """``runtime 410, reload 3 (slots 2, first 1), none 80`` from the applies_total counter deltas."""
    paths: dict[str, dict[str, float]] = {}
    for key, value in delta.items():
        labels = _labels(key)
        paths.setdefault(labels.get("path", "?"), {})[labels.get("reason", "?")] = value
    parts = []
    for path in ("runtime", "reload", "none", *sorted(set(paths) - {"runtime", "reload", "none"})):
        if path not in paths:
            continue
        reasons = paths[path]
        total = sum(reasons.values())
        detail = ", ".join(f"{reason} {count:.0f}" for reason, count in sorted(reasons.items()) if reason != path)
        parts.append(f"{path} {total:.0f}" + (f" ({detail})" if detail else ""))
    return ", ".join(parts) or "none"


def table(result: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    params, analysis = result["params"], result["analysis"]
    samples = result["samples"]
    kept = window(samples, analysis["warmup_seconds"])
    first, warm, last = samples[0], kept[0], samples[-1]
    lines = [
        f"haproxy-sync soak: {result['run']['churn_seconds']:.0f} s of churn at {params['rate']:g} changes/s "
        f"(seed {params['seed']}, {len(params['services'])} services, {params['min_instances']}-"
        f"{params['max_instances']} instances each), a sample every {params['interval']:g} s; the first "
        f"{analysis['warmup_seconds']:.0f} s are warm-up, not fitted ({analysis['samples_fitted']} samples fitted)",
        "",
    ]
    header = ("daemon", "start", "warm", "end", "growth/hour", "±95%", "noise sd", "verdict")
    rows = [header]
    for key, label, verdict_key, digits in ROWS:
        f = analysis["fits"][key]
        verdict = analysis["verdicts"][verdict_key] if verdict_key else "(part of RSS)"
        if verdict_key == "rss":
            verdict += f" (target < {analysis['rss_target_mb_per_hour']:g} MB/h)"
        rows.append((label, _fmt(first[key], digits), _fmt(warm[key], digits), _fmt(last[key], digits),
                     f"{f['slope_per_hour']:+.3f}", f"±{f['slope_ci95']:.3f}", f"{f['residual_std']:.3f}", verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append("  ".join(cell.rjust(widths[i]) if 0 < i < 7 else cell.ljust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
    run = result["run"]
    lines.append(f"CPU: {run['daemon_cpu_percent_mean']:.1f} % of one core on average "
                 f"(max sample {max(s['cpu_percent'] for s in samples):.0f} %)")
    rss = analysis["fits"]["rss_mb"]
    lines.append(f"RSS median, first third -> last third of the window: {rss['median_first_third']:.2f} -> "
                 f"{rss['median_last_third']:.2f} MB ({rss['median_change']:+.3f} MB over {rss['hours'] * 60:.1f} min)")
    if (jumps := analysis.get("rss_steps")) is not None:
        listed = ", ".join(f"{j['mb']:+.2f} MB at {j['t'] / 60:.1f} min" for j in jumps[:5])
        lines.append(f"RSS steps (a rise of >= 0.25 MB between two samples): {len(jumps)}"
                     + (f" ({listed})" if jumps else "")
                     + f"; growth between steps (last - first - steps): {analysis['rss_creep_per_hour']:+.3f} MB/h")
    if late := analysis.get("rss_second_half"):
        lines.append(f"RSS growth over the second half of the window only: {late['slope_per_hour']:+.3f} MB/h "
                     f"(±{late['slope_ci95']:.3f})" + ("; slowing down: the tail of the warm-up, run longer to see "
                                                       "where it levels off" if analysis.get("rss_slowing") else ""))
    hap_start, hap_end = result["haproxy"]["start"], result["haproxy"]["end"]
    lines += [
        "",
        f"HAProxy under test: workers {hap_start.get('workers', '?')} -> {hap_end.get('workers', '?')} "
        f"(old generations at the end: {hap_end.get('old_workers', '?')}), processes {hap_start['processes']} -> "
        f"{hap_end['processes']}, RSS {hap_start['rss_mb']:.1f} -> {hap_end['rss_mb']:.1f} MB (master + workers), "
        f"reloads {hap_start.get('reloads', '?')} -> {hap_end.get('reloads', '?')} "
        f"(failed {hap_end.get('failed_reloads', '?')})",
    ]
    churn = result["churn"]
    sent = ", ".join(f"{kind} {count}" for kind, count in churn["sent"].items())
    errors = sum(churn["errors"].values())
    lines.append(f"churn: {churn['total']} Consul changes in {churn['seconds']:.0f} s "
                 f"({churn['rate_per_second']:.2f}/s): {sent}; errors {errors}"
                 + (f" (last: {churn['last_error']})" if errors else ""))
    metrics = result["daemon_metrics"]
    lines.append(f"daemon applies during the run: {_applies(metrics['applies'])}; runtime commands "
                 f"{metrics['runtime_commands']:.0f}; renders {metrics['renders']:.0f}; failed applies "
                 f"{sum(metrics['apply_failures'].values()):.0f}; disk writes retried "
                 f"{sum(metrics.get('write_failures', {}).values()):.0f}; drift found {metrics['drift_found']:.0f}; "
                 f"Consul read errors {sum(metrics['consul_errors'].values()):.0f}")
    end = result["end_state"]
    drift = [item for backend in end.get("backends", []) for item in backend.get("drift", [])]
    lines.append(f"after the churn: haproxy-sync status {'healthy' if end.get('healthy') else 'NOT healthy'}"
                 + (f", drift: {'; '.join(drift[:3])}" if drift else ", no drift between Consul and HAProxy")
                 + (f" ({end['error']})" if end.get("error") else ""))
    guard = ", ".join(f"{_labels(k).get('service', '?')} {_labels(k).get('outcome', '?')} {v:.0f}"
                      for k, v in metrics.get("guard", {}).items())
    log = result["daemon_log"]
    lines.append(f"empty-backend guard: {guard or 'never held'}; daemon log: {log['lines']} lines, "
                 f"{log['warning']} warnings, {log['error']} errors, {log['traceback']} tracebacks")
    if faults := result.get("faults"):
        lines += ["", *fault_lines(faults, metrics)]
    if result.get("suspicious"):
        lines += ["", "suspicious:", *(f"  - {item}" for item in result["suspicious"])]
    if result.get("tracemalloc"):
        traced = result["tracemalloc"]
        lines += ["", "tracemalloc (diagnostic run; numbers inflated by tracing):", *traced["summary"],
                  *traced.get("steps", [])]
    return "\n".join(lines)


def fault_lines(faults: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """The ``--faults`` part of the table: one line per fault, the totals, and the daemon's notable log lines."""
    count = ", ".join(f"{kind} {n}" for kind, n in faults["count"].items()) or "none"
    skipped = "; ".join(f"{kind}: {why}" for kind, why in faults["skipped"].items())
    failures = sum(metrics["apply_failures"].values())
    lines = [f"faults, one every {faults['every_s']:g} s from {faults['first_at_s']:g} s: "
             f"{sum(faults['count'].values())} injected ({count})" + (f"; skipped: {skipped}" if skipped else ""),
             f"failed applies (haproxy_sync_apply_failures_total): {failures:.0f} in the run, "
             f"{faults['apply_failures_in_faults']:.0f} of them during a fault or its recovery; Consul read errors "
             f"during faults {faults['consul_errors_in_faults']:.0f}, churn writes refused "
             f"{faults['churn_errors_in_faults']}"]
    notable: dict[str, int] = {}
    for fault in faults["injected"]:
        window = fault.get("window") or {}
        log = window.get("log") or {}
        if fault["error"]:
            outcome = f"ERROR {fault['error']}"
        elif fault["converged_after_s"] is not None:
            outcome = f"in step with Consul {fault['converged_after_s']:.1f} s after"
        else:
            outcome = f"NOT in step within {window.get('seconds', 0):.0f} s: {fault['not_converged']}"
        if fault["kind"] == "readonly_config" and not fault["error"]:
            caught = fault.get("caught_up_after_s")
            outcome += (f", haproxy.cfg written {caught:.1f} s after" if caught is not None
                        else ", haproxy.cfg NOT written again in the window")
        fds = window.get("fds") or [None, None]
        end = f"{fault['end']:.0f}" if fault["end"] is not None else "?"
        lines.append(f"  {fault['kind']:<16} {fault['start']:>5.0f}-{end:>4} s: {outcome}; failed applies "
                     f"{sum(window.get('apply_failures', {}).values()):.0f}, disk writes retried "
                     f"{sum(window.get('write_failures', {}).values()):.0f}, Consul read errors "
                     f"{sum(window.get('consul_errors', {}).values()):.0f}; FDs {fds[0]} -> {fds[1]}; log "
                     f"{log.get('warning', 0)} warnings, {log.get('error', 0)} errors")
        for item in log.get("notable", []):
            notable[item["line"]] = notable.get(item["line"], 0) + item["count"]
    if notable:
        lines.append("daemon log during faults (warnings and errors, most frequent first; first of each kind):")
        lines += [f"  [{n}x] {line[:220]}" for line, n in sorted(notable.items(), key=lambda kv: -kv[1])[:12]]
    return lines


def _labels(key: str) -> dict[str, str]:
    """``{path=reload,reason=slots}`` of a key made by :func:`sampler.parse_metrics`, as a dict."""
    if "{" not in key:
        return {}
    return dict(part.split("=", 1) for part in key[key.index("{") + 1:-1].split(",") if "=" in part)


def suspicions(result: dict[str, Any]) -> list[str]:
    """Things a soak should not show, whatever the memory figures say; each names its evidence."""
    found = []
    metrics = result["daemon_metrics"]
    minutes = max(result["run"]["churn_seconds"] / 60, 1e-9)
    # With --faults, what a fault causes while it lasts (and until the daemon is back in step) is expected
    # and reported per fault; only what happens outside those windows is suspicious here.
    faults = result.get("faults") or {}
    in_faults = faults.get("log_in_faults", {})
    for key, count in metrics["applies"].items():
        labels = _labels(key)
        if labels.get("path") == "reload" and labels.get("reason") in ("settings", "structure", "other"):
            found.append(f"{count:.0f} reloads ({count / minutes:.1f}/min) with reason {labels['reason']!r} although "
                         "the benchmark edits neither config nor template (only Consul changes)")
    if failures := sum(metrics["apply_failures"].values()) - faults.get("apply_failures_in_faults", 0):
        found.append(f"{failures:.0f} failed applies{' outside faults' if faults else ''}: {metrics['apply_failures']}")
    if metrics["drift_found"]:
        found.append(f"the daemon found {metrics['drift_found']:.0f} servers running off plan and repaired them "
                     "(haproxy_sync_drift_found_total; the daemon log's 'off plan' lines say which)")
    if errors := sum(metrics["consul_errors"].values()) - faults.get("consul_errors_in_faults", 0):
        found.append(f"{errors:.0f} failed Consul reads{' outside faults' if faults else ''}: "
                     f"{metrics['consul_errors']}")
    log = result["daemon_log"]
    if (errors := log["error"] - in_faults.get("error", 0)) or log["traceback"]:
        found.append(f"the daemon logged {errors} errors{' outside faults' if faults else ''} and "
                     f"{log['traceback']} tracebacks")
    for line in faults.get("not_converged", []):
        found.append(f"not back in step with Consul after the fault {line}")
    for fault in faults.get("injected", []):
        if fault["error"]:
            found.append(f"fault {fault['kind']} at {fault['start']:.0f} s failed: {fault['error']}")
    if not result["end_state"].get("healthy"):
        found.append("after the churn, haproxy-sync status did not report healthy within the settle time")
    if result["haproxy"]["end"].get("old_workers"):
        found.append(f"{result['haproxy']['end']['old_workers']} old HAProxy workers still alive at the end")
    if churn_errors := sum(result["churn"]["errors"].values()) - faults.get("churn_errors_in_faults", 0):
        found.append(f"{churn_errors} Consul changes failed{' outside faults' if faults else ''}: "
                     f"{result['churn']['last_error']}")
    return found


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    """``<out>.json`` and ``<out>.png`` (bench/common's writer: via a temp file and a rename, so an
    interrupted write never leaves half a result)."""
    return common.write_outputs(out, result, draw=lambda png: write_png(result, png))


def write_png(result: dict[str, Any], path: Path) -> str | None:
    """RSS and FDs over time with the fitted lines; returns why not when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (.venv/bin/pip install -e '.[bench]')"
    samples = result["samples"]
    analysis = result["analysis"]
    warmup = analysis["warmup_seconds"]
    kept = window(samples, warmup)
    minutes = [s["t"] / 60 for s in samples]
    fit_minutes = [kept[0]["t"] / 60, kept[-1]["t"] / 60]
    fig, (ax_rss, ax_fd) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for ax, key, label, unit in ((ax_rss, "rss_mb", "RSS", "MB"), (ax_fd, "fds", "open FDs", "")):
        f = analysis["fits"][key]
        ax.plot(minutes, [s[key] for s in samples], ".-", lw=1, ms=3, label=label)
        if key == "fds":
            ax.plot(minutes, [s["threads"] for s in samples], "-", lw=0.8, alpha=0.7, label="threads")
        line = [f["intercept"], f["intercept"] + f["slope_per_hour"] * f["hours"]]
        ax.plot(fit_minutes, line, "--", color="crimson", lw=1.5,
                label=f"fit: {f['slope_per_hour']:+.3f} {unit + '/h' if unit else '/h'} "
                      f"(±{f['slope_ci95']:.3f}), noise sd {f['residual_std']:.3f}")
        ax.axvspan(0, warmup / 60, color="0.85", label="warm-up (not fitted)")
        for kind, colour in (("consul_restart", "tab:orange"), ("socket_drip", "tab:purple"),
                             ("readonly_config", "tab:green")):
            spans = [f for f in (result.get("faults") or {}).get("injected", [])
                     if f["kind"] == kind and f["end"] is not None]
            for i, fault in enumerate(spans):
                ax.axvspan(fault["start"] / 60, fault["end"] / 60, color=colour, alpha=0.25,
                           label=f"fault: {kind}" if i == 0 else None)
        ax.set_ylabel(f"{label} ({unit})" if unit else label)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    ax_rss.set_title("RSS (not zero-based, so that noise and slope are visible)", fontsize=9)
    ax_fd.set_ylim(bottom=0)
    ax_fd.set_xlabel("minutes since the daemon was ready")
    params = result["params"]
    verdicts = analysis["verdicts"]
    rss = analysis["fits"]["rss_mb"]
    fig.suptitle(f"haproxy-sync soak: {result['run']['churn_seconds'] / 60:.0f} min at {params['rate']:g} changes/s "
                 f"(seed {params['seed']}): RSS {rss['slope_per_hour']:+.2f} MB/h, {verdicts['rss']}; "
                 f"FDs {verdicts['fds']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
    return None
