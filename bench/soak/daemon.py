"""The daemon under soak: its settings, how it is started (traced or not), and what it says of itself.

Why these choices:

* devconsul runs in this process (``DevConsulThread``): only the daemon is measured, and an
  in-memory Consul costs nothing to start and holds no state between runs.
* The backends are bench/common's pool (one extra HAProxy answering 200 on many ports), tuned for
  health checks only: that is all they serve here.
* The daemon is a real ``haproxy-sync run`` process started the way an operator starts it (bench/common's
  :class:`~bench.common.syncers.HaproxySync`), so its RSS, descriptors and threads are those of
  production, not of a test harness.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from bench.common.process import StackError, clean_env, wait_for
from bench.common.syncers import HaproxySync
from haproxy_sync.dev.workdir import Workdir, merged, parse_sections

#: The settings beside the Workdir's defaults: short ``wait`` so blocking queries cycle often (more
#: request cycles per hour, so a per-request leak shows sooner), ``wait_min``/``wait_max`` as in the
#: tests, everything else the defaults an operator gets (drain 10 s, reconcile 30 s, reload budget 1 s,
#: 8 slots per backend).
SETTINGS = {
    "log": {"level": "info"},
    "consul": {"backoff_max": "2s", "wait": "5s"},
    "metrics": {"stale_after": "30s"},
    "sync": {"wait_min": "10ms", "wait_max": "200ms"},
}
#: The backend pool's tuning: it answers health checks (HAProxy's every 2 s, devconsul's every 5 s), no load.
BACKENDS = {"maxconn": 2000, "nbthread": None,
            "timeouts": (("connect", "2s"), ("client", "10s"), ("server", "10s"), ("http-keep-alive", "2s"))}


def backend_token() -> str:
    """What every backend port answers: this run's own, so a port shared with another process shows."""
    return f"soak-backend-{os.getpid()}"


def sync_line(option: str) -> str:
    """``--sync KEY=VALUE`` as a TOML line: booleans and numbers as they are, anything else quoted."""
    key, sep, value = option.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key.replace("_", "").isalnum() or not value:
        raise ValueError(f"--sync {option!r}: expected KEY=VALUE, e.g. watch_files=false or drain_timeout=2s")
    is_number = value.replace(".", "", 1).isdigit()
    return f"{key} = {value if value in ('true', 'false') or is_number else json.dumps(value)}"


def layout(root: Path, consul_url: str, services: tuple[str, ...], ports: list[int], binary: str,
           sync_lines: tuple[str, ...] = (), template: Path | None = None) -> Workdir:
    """The daemon's directory and config: ``ports`` are HTTP, stats and metrics; ``sync_lines`` from ``--sync``;
    ``template`` instead of the built-in one (``--faults``: HAProxy's admin socket moved behind the proxy)."""
    http_port, stats_port, metrics_port = ports
    extra = [parse_sections(line, "sync") for line in sync_lines]
    if template is not None:
        extra.append({"haproxy": {"template": str(template)}})
    return Workdir(root, consul_url, http_port, stats_port, metrics_port=metrics_port, haproxy_binary=binary,
                   services=tuple({"name": name, "health_path": "/health"} for name in services),
                   settings=merged(SETTINGS, *extra))


def daemon(workdir: Workdir, trace_dir: Path | None = None) -> HaproxySync:
    """``haproxy-sync run``, its output in ``daemon.log``; with ``trace_dir`` under :mod:`bench.soak.traced`,
    which adds tracemalloc and dumps a snapshot on SIGUSR1 (a diagnostic run: tracing inflates memory
    and CPU). Start it with ``start()``, then ``wait_ready()``."""
    launcher: tuple[str, ...] = ("-m", "haproxy_sync.cli")
    if trace_dir is not None:
        trace_dir.mkdir(parents=True, exist_ok=True)
        launcher = ("-m", "bench.soak.traced", "--dump-dir", str(trace_dir), "--memory-log",
                    str(memory_log(workdir, trace_dir)), "--")
    return HaproxySync(workdir, log_name="daemon.log", env=clean_env(PYTHONUNBUFFERED="1"), launcher=launcher)


def memory_log(workdir: Workdir, trace_dir: Path | None) -> Path:
    """Where the traced daemon logs its traced memory every second (only with ``trace_dir``)."""
    return (trace_dir or workdir.root) / "memory.log"


def dump_trace(pid: int, trace_dir: Path | None, number: int, timeout: float = 60.0) -> Path:
    """Ask the traced daemon for tracemalloc snapshot ``number`` and wait until it is written."""
    if trace_dir is None:
        raise StackError("dump_trace needs a daemon started with trace_dir")
    marker = trace_dir / f"dump-{number}.done"
    os.kill(pid, signal.SIGUSR1)
    wait_for(marker.exists, timeout, f"tracemalloc dump {number} from the daemon", interval=0.2)
    return trace_dir / f"dump-{number}"


def status_json(daemon: HaproxySync, timeout: float = 30.0) -> dict[str, Any]:
    """``haproxy-sync status --json``: Consul against HAProxy, and the drift between them."""
    result = daemon.cli("status", "--json", timeout=timeout)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        return {"healthy": False, "error": (result.stderr or result.stdout).strip()[-500:], "exit": result.returncode}
    report["exit"] = result.returncode
    return report


def disagreement(report: dict[str, Any]) -> str:
    """Why a :func:`status_json` report says the daemon is not in step with Consul; "" when it is: no
    drift between Consul and HAProxy, both reachable, the daemon ready (its Consul data fresh)."""
    if report.get("error"):
        return f"status failed ({report.get('exit')}): {report['error'][-200:]}"
    for key in ("consul_error", "haproxy_error", "daemon_error"):
        if report.get(key):
            return f"{key}: {str(report[key])[:200]}"
    drift = [item for backend in report.get("backends", []) for item in backend.get("drift", [])]
    if drift or report.get("routes_drift"):
        return "drift: " + "; ".join([*drift, *report.get("routes_drift", [])][:2])
    daemon = report.get("daemon") or {}
    if not daemon.get("ready"):
        return "daemon not ready: " + "; ".join(daemon.get("reasons", [])[:2])
    return "" if report.get("healthy") else "status not healthy"


def exited(daemon: HaproxySync, note: str = "") -> StackError:
    """The error for a daemon found gone during the run (``note``: e.g. the last fault injected)."""
    code = daemon.proc.process.returncode if daemon.proc is not None else "?"
    return StackError(f"the daemon exited with {code} during the run{f' ({note})' if note else ''}; "
                      f"see {daemon.log_path}")
