"""The table, the paragraph and the two files, from the run's JSON document (the words follow its figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import report as common


def _pct(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 100:.{digits}f} %"


def _weights(row: dict[str, Any]) -> str:
    """HAProxy's weights after the change, stable / canary (each side's distinct values)."""
    canaries = set(row["canary_ids"])
    sides = [sorted({w for i, w in row["haproxy_weights"].items() if (i in canaries) == is_canary})
             for is_canary in (False, True)]
    return " / ".join(",".join(map(str, side)) or "-" for side in sides)


def _case(row: dict[str, Any]) -> str:
    return f"{row['case']} at {row['asked']}" if row["asked"] else row["case"]


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| HAProxy | case | asked share | weights stable / canary | promised share | measured share "
        "| measured - promised | requests during the change (s) | failed requests (during + measured) | reloads |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        for row in run["rows"]:
            lines.append(
                f"| {run['version']} | {_case(row)} | {row['asked'] or 'none (promoted)'} | {_weights(row)} "
                f"| {_pct(row['promised_share'])} | {_pct(row['measured_share'])} | {row['deviation_pp']:+.2f} pp "
                f"| {row['change_requests']:,} ({row['change_seconds']:.2f}) "
                f"| {row['change_failed']} + {row['failed']} | {row['reloads']} |")
        if "error" in run:
            lines.append(f"| {run['version']} | error: {run['error']} |" + " |" * 8)
    return "\n".join(lines)


def paragraph(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    rows = [row for run in doc["runs"] for row in run["rows"]]
    worst = max((abs(row["deviation_pp"]) for row in rows), default=0.0)
    reloads = sum(row["reloads"] for row in rows)
    failed = sum(row["failed"] + row["change_failed"] for row in rows)
    during = sum(row["change_requests"] for row in rows)
    weights_only = [row for row in rows if row["sighup_rereads"] is not None]
    said = sum(1 for row in weights_only if row["reread_said_weights_only"])
    connections = sum(row["connections_opened"] for row in rows)
    daemon = sum(1 for row in rows if row["daemon_share"] is not None
                 and abs(row["daemon_share"] - (row["promised_share"] if row["asked"] else 0.0)) < 1e-9)
    return (
        f"Measured: {p['stable']} stable instances and canaries behind the real haproxy-sync daemon and a real "
        f"master-worker HAProxy (`balance roundrobin`, the default), devconsul as Consul. Each instance is a one-port "
        f"HAProxy answering its own id (bench/common's BackendPool), so the client, sending {p['requests']:,} GETs "
        f"per row over one keep-alive connection (`http.client`, 127.0.0.1), counts who answered. A share change is "
        f"an edit of config.toml and a SIGHUP (the file watch off, so the SIGHUP is what re-reads it), the first from "
        f"the start at `canary_share = \"{p['start_share']}\"` (the canary in rotation at weight 0); canaries join "
        f"and are promoted through devconsul's agent API. Requests go on while a change is applied, in batches of "
        f"{p['batch']}, until HAProxy's runtime weights are the new ones ({during:,} requests in all); the reload "
        f"counter is the master's `show proc`, read before the change and after the measurement. The promised share "
        f"is `haproxy_sync.canary.split(...).share` (promoted: 1 of 8 equal weights). Largest gap between measured "
        f"and promised: {worst:.2f} percentage points. Reloads over all rows: {reloads}; failed requests: {failed}; "
        f"connections opened after the first: {connections}. The daemon logged \"{doc['weights_only_words']}\" on "
        f"{said} of {len(weights_only)} SIGHUP re-reads, and its `/status` `canary_shares` equalled the promised "
        f"share (0 once promoted) on {daemon} of {len(rows)} rows."
    )


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    versions = "; ".join(f"`{line}`" for line in env["haproxy_versions"].values())
    return (
        "# Canary shares through HAProxy\n\n"
        f"`{doc['command']}` on {doc['generated']} (commit {env['code']['commit']}, uncommitted changes in "
        f"haproxy_sync: {env['code']['uncommitted_changes_in_haproxy_sync']}; {versions}; {env['cpus']} CPUs, "
        f"{doc['wall_seconds']:.0f} s).\n\n{table(doc['runs'])}\n\n{paragraph(doc)}\n"
    )


def write_outputs(out: Path, doc: dict[str, Any]) -> list[Path]:
    """``<out>.json`` and ``<out>.md`` (bench/common's writer: each via a .tmp file and a rename)."""
    return common.write_outputs(out, doc, markdown(doc))
