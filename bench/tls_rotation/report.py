"""The table, the paragraph and the two files, from the run's JSON document (the words follow its figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import report as common

NO_FIGURES = 10  # the table's columns after HAProxy and mode


def _failed(load: dict[str, Any]) -> str:
    """Failed requests, then what they were when there were any."""
    parts = [f"{kind} {count}" for kind, count in load["socket_errors"].items() if count]
    if load["non_2xx"]:
        parts.append(f"non-2xx {load['non_2xx']}")
    return f"{load['failed']:,}" + (f" ({', '.join(parts)})" if parts else "")


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| HAProxy | mode | rotations served (under load) | requests | requests/s | failed requests | reloads "
        "| workers started | TLS connections wrk opened | rotation latency p50 / max (s) | every rotation served "
        "| haproxy-sync CPU (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        if "error" in run:
            lines.append(f"| {run['version']} | error: {run['error']} |" + " |" * NO_FIGURES)
        for mode in run.get("modes", []):
            name = f"{mode['mode']}: {mode['label']}"
            if "error" in mode:
                lines.append(f"| {run['version']} | {name} | error: {mode['error']} |" + " |" * (NO_FIGURES - 1))
                continue
            load = mode["load"]
            lines.append(
                f"| {run['version']} | {name} | {mode['rotations_served']}/{mode['rotations_asked']} "
                f"({mode['rotations_under_load']}) | {load['requests']:,} | {load['requests_per_second']:,.0f} "
                f"| {_failed(load)} | {mode['reloads']} | {mode['workers_started']} "
                f"| {_count(mode['wrk_tls_connections'])} "
                f"| {_seconds(mode['latency_p50_seconds'])} / {_seconds(mode['latency_max_seconds'])} "
                f"| {'yes' if mode['every_rotation_served'] else 'no'} "
                f"| {'-' if mode['daemon_cpu_seconds'] is None else format(mode['daemon_cpu_seconds'], '.1f')} |")
    return "\n".join(lines)


def _mode_sentence(version: str, mode: dict[str, Any]) -> str:
    if "error" in mode:
        return f"{version} mode {mode['mode']}: no figures ({mode['error'][:200]})"
    load = mode["load"]
    extra = ""
    if mode["mode"] == "A":
        extra = (f", the daemon logged {mode['runtime_api_changes']} Runtime API changes and used "
                 f"{mode['daemon_cpu_seconds']} s of CPU")
    else:
        commands = [r["reload_command_seconds"] for r in mode["rotations"] if "reload_command_seconds" in r]
        bad = sum(1 for r in mode["rotations"] if r.get("reload_command_exit") != 0)
        if commands:
            extra = (f", the reload command took {min(commands):.3f}-{max(commands):.3f} s "
                     f"({bad} of {len(commands)} did not exit 0)")
    return (f"{version} mode {mode['mode']}: {load['requests']:,} requests in {load['seconds']:.1f} s, "
            f"{load['failed']:,} failed, {mode['reloads']} reloads ({mode['failed_reloads']} failed), "
            f"{mode['workers_started']} workers started, {mode['workers_running_at_end']} worker(s) running at the "
            f"end, {mode['failed_probes']} of the handshakes made to look for the new certificate failed{extra}")


def _mode_c(p: dict[str, Any]) -> str:
    return (" Mode C is mode B on a config without `option idle-close-on-response`, as a typical consul-template "
            "template has it." if "C" in p["modes"] else "")


def paragraph(doc: dict[str, Any]) -> str:
    p = doc["parameters"]
    per_mode = "; ".join(_mode_sentence(run["version"], mode) for run in doc["runs"] for mode in run.get("modes", []))
    settings = (" haproxy-sync's config.toml had " + ", ".join(f"`{item}`" for item in p["haproxy_sync_set"])
                + " added (--haproxy-sync-set).") if p.get("haproxy_sync_set") else ""
    return (
        f"Measured: per HAProxy binary, devconsul (in a thread) with {p['instances']} instances of `cabify` (a "
        f"BackendPool of bench/common answering 200), then each mode on a fresh edge. Mode A is haproxy-sync's "
        f"way: the real `haproxy-sync run` with `[tls] enabled = true` watching `tls.cert_dir`; a rotation is a "
        f"new `default.pem` (new key and serial, for localhost and *.localhost) written aside as "
        f"`.default.pem.new` and renamed in, which the daemon applies with `set ssl cert` + `commit ssl cert`. "
        f"Mode B is rotation by reload: the config haproxy-sync renders for the same settings with the HTTPS bind's "
        f"`crt-list` replaced by `crt <dir>/default.pem`, run by HAProxy alone; a rotation is the same atomic "
        f"replace of that file, then `reload` on the master socket (bench/common's `reload_command`, the line "
        f"consul-template runs, with `sh -c`).{_mode_c(p)}{settings} {p['rotations']} rotations per mode, one every "
        f"{p['interval']:g} s after {p['warmup']:g} s of load, {p['tail']:g} s of load after the last; the load "
        f"is `wrk -t{p['threads']} -c{p['connections']} --timeout {p['wrk_timeout']:g}s` on "
        f"`https://127.0.0.1:<port>/` (kept-alive connections), stopped with SIGINT at the end. The latency of a "
        f"rotation runs from `default.pem` holding the new certificate to the first fresh handshake (Python "
        f"`ssl`, SNI localhost, a handshake every {p['probe_pause'] * 1000:g} ms, at most {p['serve_timeout']:g} "
        f"s) showing its SHA-1 fingerprint; in mode B it includes the reload command. Failed requests are wrk's "
        f"socket errors plus non-2xx answers; reloads are the master's `show proc` counter before and after; "
        f"workers started are the new current workers `show proc` named. TLS connections wrk opened: the "
        f"workers' `CumSslConns` (`show info` on the admin socket, sampled before each rotation and at the end, each "
        f"worker counted at its last sample) less the looking handshakes those samples saw (all of them while the "
        f"worker stays; after a reload the one on the new worker); {p['connections']} is wrk's connections opened "
        f"once, each reload that closes them adds up to {p['connections']} more. {per_mode}."
    )


def markdown(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    versions = "; ".join(f"`{line}`" for line in env["haproxy_versions"].values())
    return (
        "# Certificate rotation under HTTPS keep-alive load: Runtime API against reload\n\n"
        f"`{doc['command']}` on {doc['generated']} (commit {env['code']['commit']}, uncommitted changes in "
        f"haproxy_sync: {env['code']['uncommitted_changes_in_haproxy_sync']}; {versions}; {env['cpus']} CPUs, "
        f"{doc['wall_seconds']:.0f} s).\n\n{table(doc['runs'])}\n\n{paragraph(doc)}\n"
    )


def write_outputs(out: Path, doc: dict[str, Any]) -> list[Path]:
    """``<out>.json`` and ``<out>.md`` (bench/common's writer: each via a .tmp file and a rename)."""
    return common.write_outputs(out, doc, markdown(doc))
