"""One benchmark run: for each scenario and mode, a fresh stack, paired quiet and churn blocks, the numbers.

Why this shape: the modes must be comparable on a noisy 2-core machine, so each mode gets the same
seeded change sequence at the same offsets, a fresh devconsul and HAProxy, and its *own* no-churn
reference measured by the same load generator on the same connections, interleaved with its churn
(throughput is reported as churn / quiet, block by block). One load-generator process runs through
all blocks without reconnecting, so the keep-alive connections that reloads hurt are the same ones
throughout.

Timeline of one mode (seconds, from the moment all load connections are up; see :mod:`blocks`)::

    | warmup | quiet | churn 1/N | quiet | churn 2/N | ... | churn N/N | quiet | settle |

The changes keep their churn-time offsets and are played block by block. Failures, latency and
throughput "during churn" cover the churn blocks, each with a guard of a second or so after it, so
the effects of a block's last changes (a reload right after it) are charged to the churn; the quiet
windows (the rest of the quiet blocks) are the baseline. Why interleaved and not one baseline: this
machine's throughput drifts by tens of percent over a run (a shared 2-core VM; the Python load
generator is the bottleneck), more than the effect measured; comparing each churn block with the
quiet blocks seconds before and after it cancels that drift block by block, and the N per-block
ratios carry a confidence interval. The settle at the end is outside every window: the load still
runs while the last changes' consequences (old workers, late convergence) play out and the final
workers and RSS are read.

``--pin`` (Params.pin) puts the orchestrator, and so everything it starts, on CPU 0 and the load
generator alone on CPU 1, to see whether throughput is lost to CPU contention with the harness. Note
that HAProxy sizes its thread count to the CPUs it may use, so pinned it runs one thread where
unpinned it runs two: that is part of what pinning changes.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.backends import BackendPool, Streamer
from bench.common.consul import DevConsul
from bench.common.metrics import scrape, total
from bench.common.ports import HOST, free_ports
from bench.common.process import Proc, StackError, clean_env, wait_for
from bench.common.syncers import ConsulTemplate, HaproxySync, Syncer, overrides
from bench.common.under_test import HAProxyUnderTest, haproxy_binary
from haproxy_sync import haproxy
from haproxy_sync.dev.workdir import Workdir, merged

from . import limit
from .blocks import Schedule, Window, shift
from .changes import Change, Plan
from .observe import ConvergenceTracker, Outcome, ProcessSampler, Sample, matches, reload_count

HERE = Path(__file__).resolve().parent
#: Server slots per backend for haproxy-sync: the default. The first plan gives max(8, 2 x the instances
#: at start) = 20 slots for ``--initial 10``; the pool of 24 (``--pool``) outgrows them, and growth is
#: ``add server`` on the Runtime API path (a reload only where HAProxy refuses dynamic servers).
SLOTS = 8
#: haproxy-sync's settings beside the Workdir's defaults. The quiescence timers stay at their defaults
#: (10 ms / 1 s): the benchmark measures what users get; ``sync.runtime_api`` picks the mode.
SETTINGS = {"log": {"level": "info"}, "consul": {"backoff_max": "2s"}, "sync": {"slots": SLOTS}}
SERVICES = ({"name": "cabify"}, {"name": "stream", "host": "stream.local"})


@dataclass(frozen=True)
class Mode:
    key: str
    label: str


MODES: dict[str, Mode] = {
    "consul-template": Mode("consul-template", "consul-template, reload per change"),
    "reload": Mode("reload", "haproxy-sync, reloads only (coalesced)"),
    "runtime": Mode("runtime", "haproxy-sync, Runtime API"),
}
SCENARIOS = ("short", "streaming")


@dataclass(frozen=True)
class Params:
    """Everything that shapes a run; written to the JSON so a result says how it was made."""

    duration: float  # churn seconds in all, played in `blocks` blocks
    changes: int
    blocks: int
    quiet: float  # seconds per quiet block
    guard: float  # seconds after each churn block charged to it
    warmup: float
    settle: float
    connections: int
    streams: int
    pool: int
    initial: int
    seed: int
    poll_ms: float
    quick: bool
    haproxy_sync_set: tuple[tuple[str, str, str], ...] = ()  # (section, key, TOML value) added to its config
    pin: bool = False  # load generator on CPU 1, everything else (the orchestrator included) on CPU 0

    @property
    def schedule(self) -> Schedule:
        return Schedule(self.duration, self.blocks, self.quiet, self.guard)

    @property
    def load_seconds(self) -> float:
        """How long the load generator runs once its connections are up."""
        return self.warmup + self.schedule.total + self.settle


@dataclass
class LoadResult:
    """The load generator's raw record: every response, every failure, every stream."""

    started: float
    t_end: array[float]
    latency: array[float]
    status: array[int]
    failures: list[tuple[float, str]]
    streams: list[dict[str, Any]]


@dataclass
class ModeRun:
    """Raw observations of one mode in one scenario; :mod:`report` turns them into numbers."""

    scenario: str
    mode: Mode
    skipped: str = ""
    error: str = ""
    windows: dict[str, list[Window]] = field(default_factory=dict)  # "quiet", "churn", "settle" (monotonic)
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    load: LoadResult | None = None
    reloads: int | None = None
    polls: int = 0
    poll_errors: int = 0
    servers: tuple[int | None, int] = (None, 0)  # server lines in the backend: first seen, most seen
    syncer: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""
    limit: dict[str, Any] | None = None  # the physical limit of a change, measured on this mode's stack (limit)


class Shared:
    """What all modes of one invocation share: the work root, the backend pool, the streamer."""

    def __init__(self, params: Params, keep: bool) -> None:
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="churn-bench-"))
        self._stack = contextlib.ExitStack()
        self.pool: BackendPool | None = None
        self.streamer: Streamer | None = None
        self.params = params

    def __enter__(self) -> Shared:
        try:
            self.pool = BackendPool(self.root / "backends", self.params.pool)
            self._stack.callback(self.pool.stop)
        except BaseException:
            self.__exit__()
            raise
        return self

    def ensure_streamer(self) -> Streamer:
        if self.streamer is None:
            self.streamer = Streamer(self.root / "backends")
            self._stack.callback(self.streamer.stop)
        return self.streamer

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        if self.keep:
            print(f"work directories kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)

    @property
    def pool_ports(self) -> list[int]:
        assert self.pool is not None
        return self.pool.ports


def run_mode(shared: Shared, scenario: str, mode: Mode, plan: Plan, params: Params,
             consul_template: Path | None) -> ModeRun:
    """Run one mode of one scenario end to end; every process it starts is stopped before it returns."""
    run = ModeRun(scenario, mode)
    workdir = shared.root / f"{scenario}-{mode.key}"
    workdir.mkdir(parents=True)
    run.workdir = str(workdir)
    with contextlib.ExitStack() as stack:
        try:
            _run_mode(stack, run, shared, workdir, plan, params, consul_template)
        except StackError as exc:
            run.error = str(exc)
    return run


def _run_mode(stack: contextlib.ExitStack, run: ModeRun, shared: Shared, workdir: Path, plan: Plan,
              params: Params, consul_template: Path | None) -> None:
    streaming = run.scenario == "streaming"
    consul = DevConsul(workdir)
    stack.callback(consul.stop)
    ports = {inst.id: inst.port for inst in plan.pool}
    for instance_id in plan.initial:
        register(consul, instance_id, ports[instance_id], weight=10)
    if streaming:
        streamer = shared.ensure_streamer()
        register(consul, "stream-1", streamer.port, weight=1, service="stream")
    wait_for(lambda: len(consul.health("cabify")) == len(plan.initial), 10, "the initial instances in devconsul")

    cell = layout(workdir, consul.url, run.mode.key == "runtime", params.haproxy_sync_set)
    target = HAProxyUnderTest(workdir)
    syncer: Syncer
    if run.mode.key == "consul-template":
        assert consul_template is not None
        syncer = ConsulTemplate(consul_template, HERE / "haproxy.ctmpl", cell, consul.address)
    else:
        syncer = HaproxySync(cell)
    syncer.initial_render()
    target.start()
    stack.callback(target.stop)
    syncer.start()
    stack.callback(syncer.stop)
    _wait_initial_state(target, plan, streaming, syncer)
    if run.mode.key == "runtime":
        run.limit = _limit(consul, target)

    poller = ConvergenceTracker(target.stats_socket, interval=params.poll_ms / 1000)
    sampler = _sampler(shared, target, consul, syncer, streaming)
    hard_deadline = time.monotonic() + params.load_seconds + 120
    poller.start(hard_deadline)
    sampler.start(hard_deadline)
    stack.callback(poller.stop)
    stack.callback(sampler.stop)

    load_out = workdir / "load"
    argv = [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(cell.http_port),
        "--connections", str(params.connections), "--duration", str(params.load_seconds), "--out", str(load_out),
        "--seed", str(params.seed), "--streams", str(params.streams if streaming else 0),
    ]
    loadgen = Proc("loadgen", argv, workdir / "loadgen.log", env=clean_env(), stdout_pipe=True)
    stack.callback(loadgen.stop)
    if params.pin:
        pin_process(loadgen.pid, LOADGEN_CPU)
    sampler.watch("loadgen", loadgen.pid)
    ready = _read_ready(loadgen, timeout=30)
    schedule, origin = params.schedule, ready + params.warmup  # origin: the first quiet block starts
    run.windows = _windows(schedule, origin, params.settle)
    _sleep_until(origin + schedule.churn_start(0))
    reloads_before = reload_count(target.master_socket)
    _apply_changes(consul, poller, plan.changes, origin, schedule, syncer)
    _sleep_until(run.windows["settle"][0][1])
    reloads_after = reload_count(target.master_socket)
    if reloads_before is not None and reloads_after is not None:
        run.reloads = reloads_after - reloads_before
    if not syncer.alive():
        run.error = f"{syncer.name} exited during the run; last log lines: {' | '.join(syncer.proc.log_tail(5))}" \
            if syncer.proc else f"{syncer.name} was not running"
    try:
        loadgen.process.wait(timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"the load generator did not stop; see {loadgen.log_path}") from exc
    poller.stop()
    sampler.stop()
    run.outcomes, run.samples = poller.outcomes, sampler.samples
    run.polls, run.poll_errors = poller.polls, poller.poll_errors
    run.servers = (poller.servers_first, poller.servers_max)
    run.load = _read_load(load_out, ready)
    run.syncer = syncer_summary(syncer)


def _limit(consul: DevConsul, target: HAProxyUnderTest) -> dict[str, Any]:
    """The limit a change's convergence is compared with, on the same devconsul and HAProxy; an error
    leaves it unmeasured (said in the JSON) rather than failing the run."""
    try:
        return limit.measure(consul.url, target.stats_socket, "cabify").as_dict()
    except (OSError, haproxy.HAProxyError) as exc:
        return {"error": str(exc)[:300]}


def layout(root: Path, consul_url: str, runtime_api: bool, extra: tuple[tuple[str, str, str], ...] = ()) -> Workdir:
    """The mode's paths, ports and haproxy-sync settings (its config.toml, in haproxy-sync's modes);
    ``extra``: ``--haproxy-sync-set``, experiments only, recorded in the JSON."""
    http_port, stats_port, metrics_port = free_ports(3)
    settings = merged(SETTINGS, {"sync": {"runtime_api": runtime_api}}, *overrides(extra))
    return Workdir(root, consul_url, http_port, stats_port, metrics_port=metrics_port,
                   haproxy_binary=haproxy_binary(), services=SERVICES, settings=settings)


def _windows(schedule: Schedule, origin: float, settle: float) -> dict[str, list[Window]]:
    """The quiet, churn and settle windows on the monotonic clock (the load generator's clock too)."""
    end = origin + schedule.total
    return {
        "quiet": shift(schedule.quiet_windows(), origin),
        "churn": shift(schedule.churn_windows(), origin),
        "settle": [(end, end + settle)],
    }


def _sampler(shared: Shared, target: HAProxyUnderTest, consul: DevConsul, syncer: Syncer,
             streaming: bool) -> ProcessSampler:
    """HAProxy's workers and RSS, plus the CPU of every role (the load generator joins once started).

    The syncer is sampled as its main process plus the children it has reaped (``haproxy -c``,
    consul-template's ``sh -c`` reload commands): see :func:`observe.tree_cpu_seconds`.
    """
    assert shared.pool is not None
    sampler = ProcessSampler(target.master_socket, target.master_pid)
    sampler.watch("backends", shared.pool.pid)
    sampler.watch("devconsul", consul.proc.pid)
    if syncer.proc is not None:
        sampler.watch("syncer", syncer.proc.pid)
    if streaming and shared.streamer is not None:
        sampler.watch("streamer", shared.streamer.proc.pid)
    sampler.watch_self()
    return sampler


#: With --pin: the load generator alone on one CPU, everything else on the other.
LOADGEN_CPU, HARNESS_CPU = 1, 0


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of ``pid`` to one CPU (affinity is per thread; new threads and children inherit it).

    Called right after the process starts, while it is still a single thread.
    """
    tasks = Path(f"/proc/{pid}/task")
    for tid in [int(t.name) for t in tasks.iterdir()] if tasks.exists() else [pid]:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, {cpu})


def pin_check() -> str:
    """Why --pin cannot work here ("" when it can): it needs CPUs 0 and 1 available to this process."""
    available = os.sched_getaffinity(0)
    if {LOADGEN_CPU, HARNESS_CPU} <= available:
        return ""
    return (f"--pin needs CPUs {HARNESS_CPU} and {LOADGEN_CPU} (the load generator alone on one); this process may "
            f"use {len(available)} CPU(s): {sorted(available)}")


def _wait_initial_state(target: HAProxyUnderTest, plan: Plan, streaming: bool, syncer: Syncer) -> None:
    """Every initial instance served with weight 10 (and the stream backend up) before any load."""
    probes = [Change(-1, 0.0, "initial", inst.id, inst.port, 10, 10 if inst.id in plan.initial else None)
              for inst in plan.pool]

    def ready() -> bool:
        if not syncer.alive():
            tail = " | ".join(syncer.proc.log_tail(5)) if syncer.proc else ""
            raise StackError(f"{syncer.name} exited at start: {tail}")
        try:
            states = haproxy.servers_state(target.stats_socket, "cabify")
            if streaming and not any(s.operational == 2 for s in haproxy.servers_state(target.stats_socket, "stream")):
                return False
        except haproxy.HAProxyError:
            return False
        return all(matches(states, probe) for probe in probes)

    wait_for(ready, 30, f"HAProxy to serve the {len(plan.initial)} initial instances (see {target.root})")


def _read_ready(loadgen: Proc, timeout: float) -> float:
    """The load generator prints ``READY <monotonic time>`` once all its connections are up."""
    assert loadgen.process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        readable, _, _ = select.select([loadgen.process.stdout], [], [], 0.2)
        if readable:
            line = loadgen.process.stdout.readline().decode()
            if line.startswith("READY "):
                return float(line.split()[1])
            if not line and not loadgen.alive():
                break
    raise StackError(f"the load generator did not get its connections up: {loadgen.log_tail()}")


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _apply_changes(consul: DevConsul, poller: ConvergenceTracker, changes: tuple[Change, ...], origin: float,
                   schedule: Schedule, syncer: Syncer) -> None:
    """Make each Consul write at its offset, mapped into its churn block; the poller learns of it just
    before the write."""
    for change in changes:
        _sleep_until(origin + schedule.wall_offset(change.offset))
        outcome = poller.expect(change)
        try:
            _write(consul, change)
        except (StackError, OSError) as exc:
            poller.write_failed(outcome, str(exc))
        if not syncer.alive():
            return


def register(consul: DevConsul, instance_id: str, port: int, weight: int, service: str = "cabify") -> None:
    """Register (or re-register: checks keep their state) an instance with an HTTP and a TTL check.

    Both checks start ``passing``, so an added instance is routable at once and its convergence
    measures the tool, not Consul's first check interval. The TTL check is the flap switch: the
    benchmark fails and passes it, as an app reporting its own health would.
    """
    consul.put("/v1/agent/service/register", {
        "ID": instance_id, "Name": service, "Address": HOST, "Port": port,
        "Weights": {"Passing": weight, "Warning": 1},
        "Checks": [
            {"CheckID": f"http:{instance_id}", "Name": "http", "HTTP": f"http://{HOST}:{port}/health",
             "Interval": "5s", "Timeout": "1s", "Status": "passing"},
            {"CheckID": f"flap:{instance_id}", "Name": "flap", "TTL": "1h", "Status": "passing"},
        ],
    })


def _write(consul: DevConsul, change: Change) -> None:
    if change.kind == "add" or change.kind == "weight":
        register(consul, change.instance, change.port, change.weight)
    elif change.kind == "remove":
        consul.put(f"/v1/agent/service/deregister/{change.instance}")
    elif change.kind == "flap_down":
        consul.put(f"/v1/agent/check/fail/flap:{change.instance}")
    elif change.kind == "flap_up":
        consul.put(f"/v1/agent/check/pass/flap:{change.instance}")
    else:
        raise ValueError(change.kind)


def _read_load(prefix: Path, ready: float) -> LoadResult:
    summary = json.loads(Path(f"{prefix}.json").read_text())
    t_end, latency, status = array("d"), array("f"), array("H")
    for arr, suffix in ((t_end, ".t"), (latency, ".lat"), (status, ".status")):
        path = Path(f"{prefix}{suffix}")
        with path.open("rb") as handle:
            arr.frombytes(handle.read())
    return LoadResult(ready, t_end, latency, status, [tuple(f) for f in summary["failures"]], summary["streams"])


def syncer_summary(syncer: Syncer) -> dict[str, Any]:
    """What the syncer did, for the JSON: haproxy-sync's counters from its /metrics (read while it still
    runs), consul-template's rendered templates and commands; log lines only as excerpts."""
    lines = syncer.log_lines()
    if isinstance(syncer, HaproxySync):
        applies = "haproxy_sync_applies_total"
        series = scrape(syncer.metrics_url, (applies,))
        return {
            "log": str(syncer.log_path),
            "applied": total(series, applies),
            "reloaded": total(series, applies, path="reload"),
            "runtime": total(series, applies, path="runtime"),
            "metrics_answered": bool(series),
            "reload_lines": [line[:300] for line in lines if "reloaded in" in line][:30],
            "errors": [line[:300] for line in lines if "level=error" in line or "level=warning" in line][:20],
        }
    assert isinstance(syncer, ConsulTemplate)
    return {
        "log": str(syncer.log_path),
        "reload_command": syncer.reload_command,
        "rendered": sum("rendered" in line and "[INFO]" in line for line in lines),
        "commands": sum("executing command" in line for line in lines),
        "errors": [line for line in lines if "[ERR]" in line or "[WARN]" in line][:20],
    }


@contextlib.contextmanager
def shared_stack(params: Params, keep: bool) -> Iterator[Shared]:
    with Shared(params, keep) as shared:
        yield shared
