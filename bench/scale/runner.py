"""One (size, tool) run, start to finish: fill devconsul, cold start, one-shot render, idle, burst.

The order is chosen so that each figure is read in a known state:

1. devconsul is started fresh and filled (so both tools of a size see the same catalog and indexes);
   the backend pool and the HAProxy under test (placeholder config) start.
2. **Cold start**: the tool is started; the clock stops at the first ``show proc`` of HAProxy's
   master (polled every 50 ms) showing a new worker after a reload while the live file holds every
   backend. The same event for both tools: HAProxy runs the full config. For haproxy-sync the time
   until ``/ready`` answers 200 is recorded beside it. Taken ``--cold-repeat`` times (one sample
   swings by +-0.5 s on a shared 2-core machine); the median is reported with min and max. Between
   two, the cell goes back to where the first began (:func:`reset_cold`): tool stopped, HAProxy
   restarted on the placeholder config, whatever the tool wrote removed. The last start's tool is
   the one steps 3-5 measure.
3. **One-shot render** (a separate process, the tool keeps running untouched): haproxy-sync's
   ``render --dry-run --check`` in bench/scale/probe.py, timed phase by phase; consul-template
   ``-once`` with debug logs, whose timestamps give the last template execution (all data in hand),
   then ``haproxy -c`` on its output.
4. **Idle**: ``--idle`` seconds with no change; CPU and RSS of the tool, devconsul and HAProxy.
   Both tools hold a blocking query per service that Consul answers every ``wait`` (60 s for both,
   plus up to 1/16 of jitter) even when nothing changed; a 60 s window that opens 4-60 s after the
   tool started (as it does here) holds exactly one such round of answers and re-polls.
5. **Burst**: devconsul makes the writes of :func:`~bench.scale.burst.make_burst`
   ``--burst-window / writes`` apart on its own loop (its landing times are recorded: a loop busy
   answering the queries the previous write woke lands the next one a little late); meanwhile and
   after, HAProxy's ``show servers state`` is read until every tagged server has its final weight
   ("converged", from the first write), and the wait goes on (bounded) until neither the tool's
   apply count nor HAProxy's reload count moved for ``--quiet`` seconds. Counted: the tool's applies
   (haproxy-sync: ``haproxy_sync_applies_total`` by path; consul-template: templates rendered and
   reload commands run) and HAProxy's reloads (the master's ``show proc`` counter).

Everything started is stopped in a ``finally`` block, also on Ctrl-C.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import REPO
from bench.common.backends import BackendPool
from bench.common.catalog import DEFAULT_SERVICE, Catalog, host_of
from bench.common.consul import DevConsul
from bench.common.ports import HOST
from bench.common.process import StackError, clean_env, stop_all
from bench.common.syncers import ConsulTemplate, HaproxySync, Syncer
from bench.common.under_test import HAProxyUnderTest, count_backends, count_servers
from haproxy_sync.dev.workdir import Workdir

from . import measure
from .burst import Burst, make_burst
from .cell import layout, populate, tool_for, under_test, weights_over_time

TOOLS = ("haproxy-sync", "consul-template")


@dataclass(frozen=True)
class Params:
    """What every run of one benchmark invocation shares (recorded in the JSON)."""

    instances: int = 10
    idle: float = 60.0
    burst_changes: int = 10_000
    burst_writes: int = 10
    burst_window: float = 1.0
    quiet: float = 5.0
    settle_max: float = 120.0
    cold_timeout: float = 180.0
    render_repeat: int = 4
    cold_repeat: int = 3
    health_checks: bool = False
    haproxy_sync_set: tuple[tuple[str, str, str], ...] = ()  # (section, key, TOML value) added to config.toml

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_one(tool_key: str, services: int, params: Params, workdir: Path, consul_template: Path | None,
            started: float) -> dict[str, Any]:
    """Measure one tool at one size; a failure becomes ``error`` in the result, not an exception."""
    result: dict[str, Any] = {"tool": tool_key, "services": services, "instances": services * params.instances}
    parts: list[Any] = []

    def step(text: str) -> None:
        say(f"[{time.monotonic() - started:6.0f}s] {services} services / {tool_key}: {text}")

    try:
        workdir.mkdir(parents=True, exist_ok=True)
        step("devconsul, backends, HAProxy")
        consul = DevConsul(workdir)
        parts.append(consul)
        pool = BackendPool(workdir / "pool", params.instances)
        parts.append(pool)
        catalog = Catalog(services, params.instances, tuple(pool.ports))
        result["populate_seconds"] = round(populate(consul, catalog), 3)
        cell = layout(workdir, consul, params.health_checks, params.haproxy_sync_set)
        target = under_test(cell)
        parts.append(target)
        target.start()
        tool = tool_for(tool_key, cell, consul, params.health_checks, consul_template)
        parts.append(tool)  # stopped in the finally block even when its start fails
        step(f"cold start ({catalog.total} instances registered in {result['populate_seconds']:.1f} s)")
        result["cold_start"] = cold_starts(tool, target, services + 1, params.cold_timeout, params.cold_repeat, step)
        result["config"] = config_facts(target, cell, catalog)
        cold = result["cold_start"]
        spread = f" (median of {len(cold['samples'])}, {cold['min']:.2f}-{cold['max']:.2f})" \
            if len(cold["samples"]) > 1 else ""
        step(f"first config applied in {cold['seconds']:.2f} s{spread}; one-shot render")
        if isinstance(tool, HaproxySync):
            result["render"] = render_haproxy_sync(tool, params.render_repeat)
        else:
            result["render"] = render_consul_template(tool, params.render_repeat)
        step(f"render {fmt(result['render'].get('render'))} s, + haproxy -c {fmt(result['render'].get('check'))} s; "
             f"idle {params.idle:g} s")
        result["idle"] = idle(tool, target, consul, params.idle)
        step(f"idle CPU {fmt(result['idle']['cpu_percent'].get('tool'), 2)} %, RSS "
             f"{fmt(result['idle']['rss_mb'].get('tool'))} MB; burst of {params.burst_changes} changes")
        burst = make_burst(catalog, params.burst_changes, params.burst_writes)
        result["burst"] = run_burst(tool, target, consul, catalog, burst, params)
        step(f"burst: {result['burst']['applies']} applies, {result['burst']['haproxy_reloads']} reloads, "
             f"converged {fmt(result['burst'].get('converged_seconds'))} s")
        result["log"] = log_facts(tool)
        result["alive_at_end"] = tool.alive()
    except KeyboardInterrupt:
        raise
    except (StackError, OSError, subprocess.SubprocessError, ValueError, AssertionError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        step(f"FAILED: {result['error']}")
    finally:
        stop_all(parts)
    return result


def fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# --- cold start ---


def cold_starts(tool: Syncer, target: HAProxyUnderTest, backends: int, timeout: float, repeat: int,
                step: Callable[[str], None] | None = None) -> dict[str, Any]:
    """:func:`cold_start` ``repeat`` times from the same starting state; the median, min, max and samples.

    ``seconds`` and ``ready_seconds`` are medians (a ``ready_seconds`` sample that timed out, None,
    is left out of its median but kept in ``ready_samples``); ``rss_mb_after`` is the last start's,
    whose tool keeps running for the rest of the cell.
    """
    baseline = {entry.name for entry in target.root.iterdir()}  # before the tool's first start
    runs: list[dict[str, Any]] = []
    removed: set[str] = set()
    for index in range(repeat):
        if index:
            removed.update(reset_cold(tool, target, baseline, index))
        runs.append(cold_start(tool, target, backends, timeout))
        if step is not None and repeat > 1:
            step(f"cold start {index + 1}/{repeat}: {runs[-1]['seconds']:.2f} s")
    samples = [run["seconds"] for run in runs]
    seconds = measure.spread(samples)
    out: dict[str, Any] = {"seconds": seconds["median"], "min": seconds["min"], "max": seconds["max"],
                           "samples": samples}
    if isinstance(tool, HaproxySync):
        ready = [run.get("ready_seconds") for run in runs]
        out["ready_seconds"] = measure.spread(ready)["median"]
        out["ready_samples"] = ready
    out["rss_mb_after"] = runs[-1]["rss_mb_after"]
    if repeat > 1:
        out["between_repeats"] = {
            "how": "tool stopped; HAProxy stopped and started again on the placeholder config; the tool's logs set "
                   "aside; every file added to the work directory since before the first start removed",
            "removed": sorted(removed),
        }
    return out


def reset_cold(tool: Syncer, target: HAProxyUnderTest, baseline: set[str], index: int) -> list[str]:
    """Put the cell back where its first cold start began; returns the names of the files removed.

    The tool is stopped, then HAProxy (the tool's stop may still write the live config). Its logs go
    to ``cold-<index>/`` so that the cell's later figures (log_facts, consul-template's rendered
    count) read the last start's alone. Every other file in the work directory that was not there
    before the first start is removed: haproxy-sync's ``haproxy.cfg.last-good``, ``routes.map`` and
    ``server-state`` (HAProxy would load the last run's server state on the first reload), a temp file
    of an interrupted write, HAProxy's stats socket; nothing a warm start could find is left. Then
    HAProxy starts afresh on the placeholder config each start writes (cell.under_test), as the first time.
    """
    tool.stop()
    target.stop()
    aside = target.root / f"cold-{index}"
    aside.mkdir(exist_ok=True)
    for path in tool.logs():
        if path.exists():
            path.rename(aside / path.name)
    removed = []
    for entry in sorted(target.root.iterdir()):
        if entry.name not in baseline and not entry.is_dir():
            entry.unlink()
            removed.append(entry.name)
    target.restart()
    return removed


def cold_start(tool: Syncer, target: HAProxyUnderTest, backends: int, timeout: float) -> dict[str, Any]:
    """Start the tool; seconds until HAProxy runs a config with every backend (and /ready, for haproxy-sync)."""
    began = time.monotonic()
    tool.start()
    deadline = began + timeout
    applied: float | None = None
    while applied is None:
        if not tool.alive():
            assert tool.proc is not None
            raise StackError(f"{tool.name} exited during its start: {tool.proc.log_tail(5)}")
        if time.monotonic() > deadline:
            raise StackError(f"{tool.name} did not apply a full config within {timeout:g}s")
        info = measure.show_proc(target.master_socket)
        if info is not None and info.reloads >= 1 and info.current_worker not in (None, target.first_worker):
            text = target.config.read_text(errors="replace")
            if count_backends(text) >= backends:
                applied = time.monotonic() - began
                break
        time.sleep(0.05)
    out: dict[str, Any] = {"seconds": round(applied, 3)}
    if isinstance(tool, HaproxySync):
        while time.monotonic() < deadline:
            if measure.http_status(f"{tool.metrics_url}/ready", timeout=2) == 200:
                out["ready_seconds"] = round(time.monotonic() - began, 3)
                break
            time.sleep(0.05)
        else:
            out["ready_seconds"] = None
    out["rss_mb_after"] = measure.rss_mb(tool.pid)
    return out


def config_facts(target: HAProxyUnderTest, cell: Workdir, catalog: Catalog) -> dict[str, Any]:
    """What the live config holds, and whether it routes (a request per host kind, through HAProxy)."""
    text = target.config.read_text(errors="replace")
    servers, enabled = count_servers(text)
    url = f"http://{HOST}:{cell.http_port}/"
    return {
        "bytes": len(text.encode()),
        "backends": count_backends(text),
        "server_lines": servers,
        "server_lines_enabled": enabled,
        "routed_status": measure.http_status(url, host_of(catalog.services - 1)),
        "default_status": measure.http_status(url, "unknown.invalid"),
        "haproxy_rss_mb": measure.haproxy_rss_mb(target.master_pid),
    }


# --- one-shot render ---


def render_haproxy_sync(tool: HaproxySync, repeat: int) -> dict[str, Any]:
    """bench/scale/probe.py in its own interpreter: phases of ``render --dry-run --check``."""
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale.probe", "--config", str(tool.config_toml), "--repeat", str(repeat)],
        capture_output=True, text=True, timeout=600, env=clean_env(), stdin=subprocess.DEVNULL, check=False,
        cwd=str(REPO),
    )
    if result.returncode != 0:
        raise StackError(f"render probe failed: {result.stderr.strip()[-500:]}")
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    runs = probe["runs"]
    failed = [run for run in runs if run["exit_code"] not in (0, None)]
    if failed:
        raise StackError(f"haproxy-sync render failed: {failed[0].get('stderr', '')[-400:]}")
    warm = runs[1:] or runs

    def median(key: str) -> float | None:
        values = [run[key] for run in warm if run.get(key) is not None]
        return round(statistics.median(values), 4) if values else None

    plan, render, check = median("plan"), median("render"), median("validate")
    return {
        "measured": "haproxy-sync render --dry-run --check, in-process, median of warm runs; "
                    "render = pipeline.lay_out + render (Jinja2), check = haproxy.validate (haproxy -c)",
        "render": None if render is None else round(render + (plan or 0.0), 4),
        "plan": plan,
        "jinja": render,
        "check": check,
        "read": median("read"),
        "one_shot_total": median("total"),
        "first_total": runs[0]["total"],
        "import_seconds": probe["import_seconds"],
        "backends": runs[0]["backends"],
        "runs": runs,
    }


_CT_TIME = re.compile(r"^(\S+Z) \[\w+\] \(runner\) (checking template|rendering) ")


def render_consul_template(tool: ConsulTemplate, repeat: int) -> dict[str, Any]:
    """``consul-template -once`` into a scratch file; its last template execution from the debug log.

    consul-template executes the template each time more data arrives and writes once nothing is
    missing; the last "checking template" to "rendering" span is the execution with all data in
    hand (millisecond timestamps), the figure that matches haproxy-sync's plan + render.
    """
    totals: list[float] = []
    renders: list[float] = []
    with tempfile.TemporaryDirectory(prefix="scale-ct-", dir=tool.root) as scratch:
        out = Path(scratch) / "haproxy.cfg"
        for _ in range(max(1, repeat)):
            out.unlink(missing_ok=True)
            began = time.perf_counter()
            done = subprocess.run(
                [str(tool.binary), "-once", "-log-level", "debug", "-template", f"{tool.source}:{out}"],
                capture_output=True, text=True, timeout=600, env=tool.env, stdin=subprocess.DEVNULL, check=False,
            )
            totals.append(time.perf_counter() - began)
            if done.returncode != 0 or not out.exists():
                raise StackError(f"consul-template -once failed ({done.returncode}): {done.stderr.strip()[-400:]}")
            span = last_render_span(done.stderr.splitlines())
            if span is not None:
                renders.append(span)
        check = measure.time_haproxy_check(out)
        backends = count_backends(out.read_text(errors="replace"))
    warm_totals = totals[1:] or totals
    return {
        "measured": "consul-template -once, median of warm runs; render = its last template execution "
                    "(debug log: checking template -> rendering), check = haproxy -c on its output",
        "render": round(statistics.median(renders[1:] or renders), 4) if renders else None,
        "check": check["median"],
        "check_valid": bool(check["valid"]),
        "one_shot_total": round(statistics.median(warm_totals), 4),
        "first_total": round(totals[0], 4),
        "renders": [round(r, 4) for r in renders],
        "totals": [round(t, 4) for t in totals],
        "backends": backends,
    }


def last_render_span(lines: list[str]) -> float | None:
    """Seconds from the last "(runner) checking template" to the "(runner) rendering" after it."""
    checking: datetime | None = None
    span = None
    for line in lines:
        match = _CT_TIME.match(line)
        if not match:
            continue
        when = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        if match.group(2) == "checking template":
            checking = when
        elif checking is not None:
            span = (when - checking).total_seconds()
    return span


# --- idle ---


def idle(tool: Syncer, target: HAProxyUnderTest, consul: DevConsul, seconds: float) -> dict[str, Any]:
    """CPU and RSS while nothing changes: the tool, devconsul and HAProxy's master + workers."""
    window = measure.Window({"tool": tool.pid, "devconsul": consul.proc.pid})
    haproxy_rss: list[float] = []
    per_second: list[float] = []  # the tool's CPU seconds in each second: shows what the idle cost is made of
    last_cpu = measure.cpu_seconds(tool.pid)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        window.sample()
        haproxy_rss.append(measure.haproxy_rss_mb(target.master_pid))
        cpu = measure.cpu_seconds(tool.pid)
        if cpu is not None and last_cpu is not None:
            per_second.append(round(cpu - last_cpu, 3))
        last_cpu = cpu
        if not tool.alive():
            raise StackError(f"{tool.name} exited while idle")
        time.sleep(min(1.0, max(0.0, end - time.monotonic())))
    window.sample()
    cpu_share = window.cpu_percent()
    return {
        "seconds": round(time.monotonic() - window.started, 2),
        "opened_after_start_seconds": round(window.started - tool.started_at, 1),
        "cpu_percent": {"tool": cpu_share["tool"], "devconsul": cpu_share["devconsul"]},
        "tool_cpu_seconds_per_second": per_second[1:],  # the first is the part-second before the window
        "rss_mb": {"tool": window.rss["tool"][-1] if window.rss["tool"] else None,
                   "tool_max": max(window.rss["tool"], default=None),
                   "haproxy": haproxy_rss[-1] if haproxy_rss else None},
    }


# --- the burst ---


def _apply_count(tool: Syncer, timeout: float = 0.0) -> tuple[float, dict[str, float]] | None:
    """(applies so far, detail) of the tool: haproxy-sync's metrics, consul-template's rendered lines.

    None when haproxy-sync's /metrics did not answer (a daemon busy with thousands of answers can be
    slow to); retried for up to ``timeout`` seconds first.
    """
    if isinstance(tool, HaproxySync):
        deadline = time.monotonic() + timeout
        while True:
            series = measure.scrape(tool.metrics_url)
            if series:
                by_path = measure.applies(series)
                return sum(by_path.values()), by_path
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.5)
    assert isinstance(tool, ConsulTemplate)
    rendered = sum(1 for line in tool.log_lines() if "(runner) rendered" in line)
    return float(rendered), {"rendered": float(rendered), "reload_commands": float(tool.reloads_run())}


def _must_count(tool: Syncer) -> tuple[float, dict[str, float]]:
    counted = _apply_count(tool, timeout=30.0)
    if counted is None:
        raise StackError(f"{tool.name}'s /metrics did not answer within 30 s")
    return counted


def run_burst(tool: Syncer, target: HAProxyUnderTest, consul: DevConsul, catalog: Catalog, burst: Burst,
              params: Params) -> dict[str, Any]:
    """Send the burst's writes on schedule, then wait (bounded) for HAProxy to serve it and things to go quiet."""
    expected = burst.expected_servers(catalog)
    skip = frozenset({DEFAULT_SERVICE})
    before_applies, before_detail = _must_count(tool)
    before_reloads = measure.reload_count(target.master_socket)
    window = measure.Window({"tool": tool.pid}, children=frozenset({"tool"}))
    interval = params.burst_window / len(burst.writes)  # write k at k * interval: all within the window
    landed: list[float] = []
    failure: list[BaseException] = []

    def send() -> None:
        try:
            landed.extend(weights_over_time(consul, burst.writes, interval))
        except BaseException as exc:  # handed to the main thread below
            failure.append(exc)

    sender = threading.Thread(target=send, name="burst", daemon=True)
    began_unix, began = time.time(), time.monotonic()
    sender.start()
    converged: float | None = None
    last_change = time.monotonic()
    last_seen: tuple[float, int | None] = (before_applies, before_reloads)
    next_state_check = 0.0
    deadline = began + params.settle_max
    while time.monotonic() < deadline:
        if failure:
            raise StackError(f"the burst's writes failed: {failure[0]}")
        window.sample()
        now = time.monotonic()
        if converged is None and now >= next_state_check:
            served = measure.served_servers(target.stats_socket, skip)
            if served == expected:
                converged = round(time.monotonic() - began, 2)
            # As often as it is cheap: reading 60,000 servers' state takes HAProxy and us a while.
            next_state_check = time.monotonic() + max(0.25, 2 * (time.monotonic() - now))
        counted = _apply_count(tool)
        seen = (counted[0] if counted is not None else last_seen[0], measure.reload_count(target.master_socket, 2.0))
        if seen != last_seen:
            last_seen, last_change = seen, time.monotonic()
        if converged is not None and not sender.is_alive() and time.monotonic() - last_change >= params.quiet:
            break
        if not tool.alive():
            break
        time.sleep(0.25)
    sender.join(timeout=5)
    after_applies, after_detail = _must_count(tool)
    after_reloads = measure.reload_count(target.master_socket)
    detail = {key: after_detail.get(key, 0.0) - before_detail.get(key, 0.0)
              for key in sorted(set(after_detail) | set(before_detail))}
    return {
        "changes": burst.changes,
        "changes_delivered": sum(len(batch) for batch in burst.writes),
        "writes": len(burst.writes),
        "services_touched": burst.services_touched,
        "interval": round(interval, 4),
        "write_landed_at": [round(t - began_unix, 3) for t in landed],
        "sent_seconds": round(landed[-1] - began_unix, 3) if landed else None,
        "applies": int(after_applies - before_applies),
        "applies_detail": {key: int(value) for key, value in detail.items()},
        "haproxy_reloads": None if before_reloads is None or after_reloads is None
        else after_reloads - before_reloads,
        "converged_seconds": converged,
        "settled_seconds": round(time.monotonic() - began, 2),
        "timed_out": converged is None,
        "tool_alive": tool.alive(),
        "cpu_seconds": window.cpu_used()["tool"],
        "rss_mb_max": max(window.rss["tool"], default=None),
    }


def log_facts(tool: Syncer) -> dict[str, Any]:
    """Warnings and errors the tool logged (the first few), so a number is never read without them."""
    lines = tool.log_lines()
    if isinstance(tool, HaproxySync):
        bad = [line for line in lines if re.search(r"level=(warning|error)|Traceback", line)]
        applied = sum(1 for line in lines if re.search(r"(^|\s)applied ", line))
    else:
        bad = [line for line in lines if "[ERR]" in line or "[WARN]" in line]
        applied = sum(1 for line in lines if "(runner) rendered" in line)
    return {"path": str(tool.log_path), "lines": len(lines), "applied_lines": applied,
            "warnings_and_errors": len(bad), "first_warnings": [line[:300] for line in bad[:8]]}
