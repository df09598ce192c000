"""The table, the paragraph and the two files: everything the run prints or writes, from its JSON document.

Kept apart from the measuring so that the words follow the figures of the run they describe (the
paragraph's ratios are computed here from the JSON, never typed in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import report as common

ALL, BARE, EMPTY = "(none)", "?no-maint", "?no-maint="


def _ratio(after: int, before: int) -> str:
    return f"{after / before:.3f}" if before else "-"


def per_server(row: dict[str, Any]) -> tuple[float | None, float | None]:
    """Server series per server in rotation (the ``?no-maint`` answer) and per server in maintenance
    (what ``?no-maint`` took away): the two differ, since only checked servers get check series."""
    full, bare = row["scrapes"][ALL], row["scrapes"][BARE]
    kept = bare["server_series"] / bare["servers_exported"] if bare["servers_exported"] else None
    gone = full["servers_exported"] - bare["servers_exported"]
    dropped = (full["server_series"] - bare["server_series"]) / gone if gone else None
    return kept, dropped


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    """One row per (binary, size): series, bytes and scrape time with and without ``no-maint``."""
    lines = [
        "| HAProxy | services | servers (disabled) | series `/metrics` | series `?no-maint` | series `?no-maint=` "
        "| after/before | series per server: in rotation / disabled | MB `/metrics` | MB `?no-maint` "
        "| scrape s `/metrics` | scrape s `?no-maint` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in results:
        if "error" in row:
            lines.append(f"| {row['version']} | {row['services']} | error: {row['error']} |" + " |" * 9)
            continue
        s = row["scrapes"]
        full, bare, empty = s[ALL], s[BARE], s[EMPTY]
        lines.append(
            f"| {row['version']} | {row['services']:,}{'*' if row['template'] != 'built-in' else ''} "
            f"| {row['servers']:,} ({row['servers_disabled']:,}) "
            f"| {full['series']:,} | {bare['series']:,} | {empty['series']:,} "
            f"| {_ratio(bare['series'], full['series'])} "
            f"| {' / '.join(map(_num, per_server(row)))} | {full['bytes'] / 1e6:.1f} | {bare['bytes'] / 1e6:.1f} "
            f"| {full['seconds_median']:.2f} | {bare['seconds_median']:.2f} |"
        )
    return "\n".join(lines)


def paragraph(doc: dict[str, Any]) -> str:
    """What was measured and how, and the after/before ratio per size and version."""
    p = doc["parameters"]
    ok = [r for r in doc["results"] if "error" not in r]
    ratios = "; ".join(
        f"{r['version']} at {r['services']:,} services: "
        f"{_ratio(r['scrapes'][BARE]['series'], r['scrapes'][ALL]['series'])}"
        f" ({r['scrapes'][ALL]['series']:,} -> {r['scrapes'][BARE]['series']:,})"
        for r in ok
    ) or "no run succeeded"
    differing = [r for r in ok if r["scrapes"][BARE]["series"] != r["scrapes"][EMPTY]["series"]
                 or r["scrapes"][BARE]["servers_exported"] != r["scrapes"][EMPTY]["servers_exported"]]
    forms = ("`?no-maint` and `?no-maint=` (the form Prometheus sends for the monitoring role's "
             "`params: {no-maint: [\"\"]}`) gave the same servers on every run"
             if not differing else
             "`?no-maint` and `?no-maint=` differed on " + ", ".join(
                 f"{r['version']} at {r['services']:,} services ({r['scrapes'][BARE]['series']:,} vs "
                 f"{r['scrapes'][EMPTY]['series']:,} series)" for r in differing))
    kept = [r for r in ok if r["exports_every_server"] and r["no_maint_exports_the_servers_in_rotation"]]
    exact = (f"`/metrics` exported every server and `?no-maint` exactly as many as were not in maintenance "
             f"(runtime API) on {len(kept)} of {len(ok)} runs")
    shapes = "; ".join(sorted({
        f"{r['version']}: {' / '.join(map(_num, per_server(r)))}" for r in ok if r["services"] == max(
            x["services"] for x in ok if x["version"] == r["version"])}))
    relaxed = [r for r in ok if r["template"] != "built-in"]
    fds = doc["environment"]["fd_limit"]
    which = ", ".join(f"{r['version']} at {r['services']:,}" for r in relaxed)
    relaxing = "" if not relaxed else (
        f"Rows marked * ({which}): HAProxy refused to "
        f"start on the config of the built-in template (`{relaxed[0]['fd_limit_alert']}`; this machine's fd limit is "
        f"{fds[0]:,} soft, {fds[1]:,} hard, and cannot be raised unprivileged), so they ran with `no strict-limits` "
        f"added to the template's global section and nothing else changed; the exporter's answer does not depend on "
        f"it. ")
    return (
        f"Measured: the series HAProxy's built-in Prometheus exporter serves on one haproxy-sync edge, scraped on "
        f"the `frontend stats` of the rendered config as `/metrics` and as `/metrics?no-maint`. Each edge holds N "
        f"services x {p['instances']} passing instances (discovered by tag, plus the configured `default` service "
        f"with one), built in-process without Consul through the product's own path (`parse_health_entries`, "
        f"`pipeline.observe`, `pipeline.prepare` on the built-in template, `write_live` with `haproxy -c`), so every "
        f"backend has the free slots a first start plans, written as `disabled` servers. Each config ran in a "
        f"fresh master-worker HAProxy (`HAProxyProcess`); after the stats port answered, {p['settle']:g} s for "
        f"checks, then {p['scrapes']} rounds of scrapes of each URL (counts from the last round, times the median). "
        f"Series are the answer's non-empty, non-comment lines. {doc['responder']} {relaxing}{forms}. "
        f"{exact}. Server series per server in rotation / per disabled server (largest size): {shapes}; "
        f"the difference is the check series (`check_status` per state, `check_code`, `check_duration`), which "
        f"HAProxy emits only for a server whose check has run. "
        f"Series after/before (`?no-maint` / `/metrics`): {ratios}."
    )


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    versions = "; ".join(f"`{line}`" for line in env["haproxy_versions"].values())
    return (
        "# HAProxy exporter series per edge, with and without `no-maint`\n\n"
        f"`{doc['command']}` on {doc['generated']} (commit {env['code']['commit']}, "
        f"uncommitted changes in haproxy_sync: {env['code']['uncommitted_changes_in_haproxy_sync']}; {versions}; "
        f"{env['cpus']} CPUs, {doc['wall_seconds']:.0f} s).\n\n"
        f"{table(doc['results'])}\n\n{paragraph(doc)}\n"
    )


def write_outputs(out: Path, doc: dict[str, Any]) -> list[Path]:
    """``<out>.json`` and ``<out>.md`` (bench/common's writer: each via a .tmp file and a rename)."""
    return common.write_outputs(out, doc, markdown(doc))
