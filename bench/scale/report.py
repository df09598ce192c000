"""From the runs to bench/results/scale.{json,md,png}: the table, the ratios, the targets, the plot.

Kept apart from the running so that every figure's definition sits in one place and the outputs can be
re-made from the JSON alone (``python -m bench.scale --report-only``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import report as common

TOOL_COLORS = {"haproxy-sync": "tab:green", "consul-template": "tab:red"}
TARGET_SIZE = 1000  # issue #8: the targets are stated at 1,000 services


def _get(row: dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict) or value.get(key) is None:
            return None
        value = value[key]
    return value


def render_check(row: dict[str, Any]) -> float | None:
    render, check = _get(row, "render", "render"), _get(row, "render", "check")
    return None if render is None or check is None else round(render + check, 4)


#: The figures per row: (column title, function of the row, digits). One definition for table and plot.
FIGURES: list[tuple[str, Any, int]] = [
    ("cold start s", lambda r: _get(r, "cold_start", "seconds"), 2),
    ("render s", lambda r: _get(r, "render", "render"), 3),
    ("render + haproxy -c s", render_check, 3),
    ("one-shot CLI s", lambda r: _get(r, "render", "one_shot_total"), 2),
    ("RSS MB", lambda r: _get(r, "idle", "rss_mb", "tool"), 1),
    ("idle CPU %", lambda r: _get(r, "idle", "cpu_percent", "tool"), 2),
    ("burst applies", lambda r: _get(r, "burst", "applies"), 0),
    ("burst reloads", lambda r: _get(r, "burst", "haproxy_reloads"), 0),
    ("burst landed over s", lambda r: _get(r, "burst", "sent_seconds"), 2),
    ("burst converged s", lambda r: _get(r, "burst", "converged_seconds"), 1),
    ("HAProxy RSS MB", lambda r: _get(r, "idle", "rss_mb", "haproxy"), 0),
]
RATIO_FIGURES = ("cold start s", "render s", "render + haproxy -c s", "RSS MB", "idle CPU %", "burst applies",
                 "burst reloads", "burst converged s")


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | int) and digits == 0:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def cold_samples(row: dict[str, Any]) -> int:
    """How many cold starts the row's figure is the median of (1 for results from before --cold-repeat)."""
    samples = _get(row, "cold_start", "samples")
    return len(samples) if isinstance(samples, list) else 1


def cold_cell(row: dict[str, Any]) -> str:
    """The cold start as the table shows it: ``2.41`` for one start, ``2.41 (2.20-2.63)`` for the median of more."""
    median = _get(row, "cold_start", "seconds")
    low, high = _get(row, "cold_start", "min"), _get(row, "cold_start", "max")
    if median is None or cold_samples(row) < 2 or low is None or high is None:
        return _fmt(median, 2)
    return f"{median:.2f} ({low:.2f}-{high:.2f})"


def table(results: list[dict[str, Any]]) -> str:
    repeated = any(cold_samples(r) > 1 for r in results if not r.get("error") and not r.get("skipped"))
    titles = [f"{title}, median (min-max)" if title == "cold start s" and repeated else title
              for title, _, _ in FIGURES]
    head = ["services", "instances", "tool", *titles, "servers in config"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in results:
        if r.get("error") or r.get("skipped"):
            cells = [str(r["services"]), str(r["instances"]), r["tool"],
                     f"**{'skipped' if r.get('skipped') else 'failed'}**: {r.get('skipped') or r.get('error')}"]
            cells += [""] * (len(head) - len(cells))
        else:
            servers = _get(r, "config", "server_lines")
            enabled = _get(r, "config", "server_lines_enabled")
            in_config = "-" if servers is None else str(servers)
            if servers is not None and enabled != servers:
                in_config += f" ({enabled} enabled)"
            cells = [str(r["services"]), str(r["instances"]), r["tool"],
                     *(cold_cell(r) if title == "cold start s" else _fmt(fn(r), digits)
                       for title, fn, digits in FIGURES), in_config]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """haproxy-sync / consul-template per size and figure (None where either is missing or zero)."""
    rows = []
    for size in sorted({r["services"] for r in results}):
        mine = next((r for r in results if r["services"] == size and r["tool"] == "haproxy-sync"
                     and not r.get("error") and not r.get("skipped")), None)
        theirs = next((r for r in results if r["services"] == size and r["tool"] == "consul-template"
                       and not r.get("error") and not r.get("skipped")), None)
        if mine is None or theirs is None:
            continue
        row: dict[str, Any] = {"services": size}
        for title, fn, _ in FIGURES:
            if title not in RATIO_FIGURES:
                continue
            a, b = fn(mine), fn(theirs)
            row[title] = None if a is None or b in (None, 0) else round(a / b, 3)
        rows.append(row)
    return rows


def ratio_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no size has both tools measured)"
    head = ["services", *RATIO_FIGURES]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([str(row["services"]), *(_fmt(row.get(t), 2) for t in RATIO_FIGURES)]) + " |")
    return "\n".join(lines)


def targets(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue #8's targets for haproxy-sync at 1,000 services: each with its value and met / missed."""
    row = next((r for r in results if r["services"] == TARGET_SIZE and r["tool"] == "haproxy-sync"
                and not r.get("error") and not r.get("skipped")), None)
    if row is None:
        return []
    starts, low, high = cold_samples(row), _get(row, "cold_start", "min"), _get(row, "cold_start", "max")
    cold_name = "cold start < 3 s"
    if starts > 1 and low is not None and high is not None:
        cold_name += f" (median of {starts}; min {low:.2f}, max {high:.2f})"
    checks = [
        (cold_name, _get(row, "cold_start", "seconds"), lambda v: v < 3.0),
        ("render < 0.5 s (plan + Jinja2)", _get(row, "render", "render"), lambda v: v < 0.5),
        ("render + haproxy -c < 0.5 s (the stricter reading)", render_check(row), lambda v: v < 0.5),
        ("RSS < 100 MB", _get(row, "idle", "rss_mb", "tool"), lambda v: v < 100.0),
        ("idle CPU < 1 %", _get(row, "idle", "cpu_percent", "tool"), lambda v: v < 1.0),
        ("burst -> at most 3 applies", _get(row, "burst", "applies"), lambda v: v <= 3),
        ("burst -> 0 reloads", _get(row, "burst", "haproxy_reloads"), lambda v: v == 0),
    ]
    return [{"target": name, "value": value, "met": None if value is None else bool(test(value))}
            for name, value, test in checks]


def markdown(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    code = doc["environment"]["haproxy_sync_code"]
    dirty = " plus uncommitted changes" if code["uncommitted_changes_in_haproxy_sync"] == "yes" else ""
    lines = [
        "# Scale benchmark results",
        "",
        f"Generated {doc['generated']} by `{doc['command']}` in {doc['wall_seconds'] / 60:.1f} min. "
        f"{doc['environment']['cpus']} CPUs, {doc['environment']['haproxy']}, Python "
        f"{doc['environment']['python']}; consul-template: {doc['consul_template']}. haproxy-sync measured: "
        f"commit {code['commit']}{dirty}"
        f", package sha256 {code['sha256_of_haproxy_sync']}.",
        "",
        f"Per size: N services x {p['instances']} instances in devconsul, all tagged; idle window {p['idle']:g} s; "
        f"burst of {p['burst_changes']} weight changes in {p['burst_writes']} catalog writes over "
        f"{p['burst_window']:g} s; HAProxy health checks {'on' if p['health_checks'] else 'off'} in both configs."
        + (" haproxy-sync settings added: " + ", ".join(f"{a}.{b}={c}" for a, b, c in p["haproxy_sync_set"]) + "."
           if p.get("haproxy_sync_set") else "")
        + (f" Cold start: the median of {p['cold_repeat']} starts per tool and size (min-max in brackets), each "
           "from the placeholder config on a freshly started HAProxy, the tool's files from the start before removed."
           if p.get("cold_repeat", 1) > 1 else ""),
        "",
        table(doc["results"]),
        "",
        "haproxy-sync / consul-template:",
        "",
        ratio_table(doc["ratios"]),
        "",
    ]
    if doc["targets"]:
        lines += ["Targets (issue #8) for haproxy-sync at 1,000 services:", ""]
        for t in doc["targets"]:
            verdict = "-" if t["met"] is None else "met" if t["met"] else "**missed**"
            lines.append(f"- {t['target']}: {_fmt(t['value'], 3) if isinstance(t['value'], float) else t['value']}"
                         f" -> {verdict}")
        lines.append("")
    lines += ["![cost against size, one line per tool](scale.png)", ""]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> str:
    """Cost against size (log x), one panel per figure, one line per tool; issue #8's targets dotted."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FormatStrFormatter, LogLocator, MaxNLocator, NullLocator
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    measured = [r for r in results if not r.get("error") and not r.get("skipped")]
    if not measured:
        return "no run produced measurements"
    # (figure, title, y scale, haproxy-sync's target at 1,000 services)
    panels: list[tuple[str, str, str, float | None]] = [
        ("cold start s", "cold start to first applied config (s)", "log", 3.0),
        ("render + haproxy -c s", "full render + haproxy -c (s)", "log", 0.5),
        ("RSS MB", "tool RSS, idle (MB)", "log", 100.0),
        ("idle CPU %", "tool CPU while idle (% of one core)", "symlog", 1.0),
        ("burst applies", "applies after the 10k-change burst", "linear", 3.0),
        ("burst reloads", "HAProxy reloads after the burst", "linear", 0.0),
        ("burst converged s", "burst: first write -> HAProxy serves all (s)", "log", None),
        ("HAProxy RSS MB", "HAProxy RSS, master + workers (MB)", "log", None),
    ]
    figures = {title: fn for title, fn, _ in FIGURES}
    sizes = sorted({r["services"] for r in measured})
    fig, axes = plt.subplots(2, 4, figsize=(18, 8.5))
    for ax, (key, title, scale, target) in zip(axes.flat, panels, strict=True):
        for tool, color in TOOL_COLORS.items():
            points = sorted((r["services"], figures[key](r)) for r in measured if r["tool"] == tool)
            points = [(x, y) for x, y in points if y is not None]
            if points:
                ax.plot([x for x, _ in points], [y for _, y in points], marker="o", color=color, label=tool)
        if target is not None:
            ax.axhline(target, color="grey", linestyle=":", linewidth=1)
            ax.annotate(f"target at {TARGET_SIZE:,}", (0.01, target), xycoords=("axes fraction", "data"),
                        textcoords="offset points", xytext=(2, 3), fontsize=7, color="grey")
        ax.set_xscale("log")
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{s:,}" for s in sizes])
        ax.xaxis.set_minor_locator(NullLocator())
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_ylim(bottom=0)
        elif scale == "log":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        else:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(bottom=0)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("services (x10 instances)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=9, ncol=2)
    fig.suptitle("bench/scale: cost against catalog size (log x; dotted: issue #8's targets for haproxy-sync)",
                 fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80, format="png")
    plt.close(fig)
    return ""


def document(results: list[dict[str, Any]], params: dict[str, Any], command: str, consul_template: str,
             started: float) -> dict[str, Any]:
    return {
        "benchmark": "scale",
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_seconds": round(time.monotonic() - started, 1),
        "command": command,
        "parameters": params,
        "consul_template": consul_template,
        "environment": common.environment(),
        "results": results,
        "ratios": ratios(results),
        "targets": targets(results),
    }


def write_outputs(out_dir: Path, doc: dict[str, Any]) -> list[Path]:
    """scale.json, scale.md and scale.png (bench/common's writer: each via a .tmp file and a rename)."""
    return common.write_outputs(out_dir / "scale", doc, markdown(doc), lambda png: plot(doc["results"], png))

