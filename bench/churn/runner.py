"""One benchmark run: for each scenario and mode, a fresh stack, a baseline, the churn, the numbers.

Why this shape: the modes must be comparable on a noisy 2-core machine, so each mode gets the same
seeded change sequence at the same offsets, a fresh devconsul and HAProxy, and its *own* no-churn
baseline measured by the same load generator on the same connections right before its churn
(throughput is reported as churn / baseline). One load-generator process runs through both phases
without reconnecting, so the keep-alive connections that reloads hurt are the same ones throughout.

Timeline of one mode (seconds, from the moment all load connections are up)::

    | warmup | baseline, first half | churn: the changes at their offsets | settle | baseline, second half |

Failures, latency and throughput "during churn" cover churn + settle, so that the effects of the
last changes (a reload right after the window) are counted too. The baseline is split around the
churn because this machine's throughput drifts by tens of percent over seconds (a shared 2-core VM;
the load generator's rate also ramps up over its first seconds): half before and half after cancels
a linear drift instead of crediting or charging it to the churn.
"""

from __future__ import annotations

import contextlib
import json
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

from haproxy_sync import haproxy

from .changes import Change, Plan
from .observe import ConvergenceTracker, Outcome, ProcessSampler, Sample, matches, reload_count
from .stack import (
    HERE,
    BackendPool,
    Consul,
    ConsulTemplate,
    HaproxySync,
    Proc,
    StackError,
    Streamer,
    Syncer,
    Target,
    clean_env,
    free_ports,
    wait_for,
)


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

    duration: float
    changes: int
    baseline: float
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
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    load: LoadResult | None = None
    reloads: int | None = None
    polls: int = 0
    poll_errors: int = 0
    syncer: dict[str, Any] = field(default_factory=dict)
    workdir: str = ""


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
    consul = Consul(workdir)
    stack.callback(consul.stop)
    ports = {inst.id: inst.port for inst in plan.pool}
    for instance_id in plan.initial:
        consul.register(instance_id, ports[instance_id], weight=10)
    if streaming:
        streamer = shared.ensure_streamer()
        consul.register("stream-1", streamer.port, weight=1, service="stream")
    wait_for(lambda: len(consul.health("cabify")) == len(plan.initial), 10, "the initial instances in devconsul")

    http_port, stats_port = free_ports(2)
    target = Target(workdir, http_port, stats_port)
    syncer: Syncer
    if run.mode.key == "consul-template":
        assert consul_template is not None
        syncer = ConsulTemplate(consul_template, target, consul)
    else:
        syncer = HaproxySync(target, consul, runtime_api=run.mode.key == "runtime", extra=params.haproxy_sync_set)
    syncer.initial_render()
    hap = target.start_haproxy()
    stack.callback(hap.stop)
    syncer.start()
    stack.callback(syncer.stop)
    assert hap.process is not None
    _wait_initial_state(target, plan, streaming, syncer)

    poller = ConvergenceTracker(target.stats_socket, interval=params.poll_ms / 1000)
    sampler = ProcessSampler(target.master_socket, hap.process.pid)
    total = params.warmup + params.baseline + params.duration + params.settle
    hard_deadline = time.monotonic() + total + 120
    poller.start(hard_deadline)
    sampler.start(hard_deadline)
    stack.callback(poller.stop)
    stack.callback(sampler.stop)

    load_out = workdir / "load"
    argv = [
        sys.executable, str(HERE / "loadgen.py"), "--port", str(http_port), "--connections", str(params.connections),
        "--duration", str(total), "--out", str(load_out), "--seed", str(params.seed),
        "--streams", str(params.streams if streaming else 0),
    ]
    loadgen = Proc("loadgen", argv, workdir / "loadgen.log", env=clean_env(), stdout_pipe=True)
    stack.callback(loadgen.stop)
    ready = _read_ready(loadgen, timeout=30)
    churn_start = ready + params.warmup + params.baseline / 2
    churn_end = churn_start + params.duration + params.settle
    run.windows = {
        "baseline": [(ready + params.warmup, churn_start), (churn_end, churn_end + params.baseline / 2)],
        "churn": [(churn_start, churn_end)],
    }
    _sleep_until(churn_start)
    reloads_before = reload_count(target.master_socket)
    _apply_changes(consul, poller, plan.changes, churn_start, syncer)
    _sleep_until(churn_end)
    reloads_after = reload_count(target.master_socket)
    if reloads_before is not None and reloads_after is not None:
        run.reloads = reloads_after - reloads_before
    if not syncer.alive():
        run.error = f"{syncer.name} exited during the run; last log lines: {' | '.join(syncer.proc.log_tail(5))}" \
            if syncer.proc else f"{syncer.name} was not running"
    try:
        loadgen.process.wait(timeout=params.baseline / 2 + 60)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"the load generator did not stop; see {loadgen.log_path}") from exc
    poller.stop()
    sampler.stop()
    run.outcomes, run.samples = poller.outcomes, sampler.samples
    run.polls, run.poll_errors = poller.polls, poller.poll_errors
    run.load = _read_load(load_out, ready)
    run.syncer = syncer.log_summary()


def _wait_initial_state(target: Target, plan: Plan, streaming: bool, syncer: Syncer) -> None:
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

    wait_for(ready, 30, f"HAProxy to serve the {len(plan.initial)} initial instances (see {target.workdir})")


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


def _apply_changes(consul: Consul, poller: ConvergenceTracker, changes: tuple[Change, ...], start: float,
                   syncer: Syncer) -> None:
    """Make each Consul write at its offset; the poller learns of it just before the write."""
    for change in changes:
        _sleep_until(start + change.offset)
        outcome = poller.expect(change)
        try:
            _write(consul, change)
        except (StackError, OSError) as exc:
            poller.write_failed(outcome, str(exc))
        if not syncer.alive():
            return


def _write(consul: Consul, change: Change) -> None:
    if change.kind == "add" or change.kind == "weight":
        consul.register(change.instance, change.port, change.weight)
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


@contextlib.contextmanager
def shared_stack(params: Params, keep: bool) -> Iterator[Shared]:
    with Shared(params, keep) as shared:
        yield shared
