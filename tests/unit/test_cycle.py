"""The daemon's decisions, one cycle at a time: a fake watch feed and a fake applier, no process and
no socket. Each cycle's sentence and path are asserted, as Patroni's tests assert ``run_cycle()``."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.apply import ReloadReport
from haproxy_sync.catalog import Instance, Service, Status
from haproxy_sync.config import Settings, load_settings
from haproxy_sync.consul import WatchUpdate
from haproxy_sync.daemon import Daemon, Outcome
from haproxy_sync.plan import BackendSlots, Drift
from haproxy_sync.reasons import ApplyPath, ReloadKind
from haproxy_sync.render import load_template


@pytest.fixture(autouse=True)
def no_process_no_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """A cycle here must not reach HAProxy or Consul by any other way than the fake applier."""

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process or a socket was opened: {args[:2]!r}")

    monkeypatch.setattr(subprocess, "run", refused)
    monkeypatch.setattr(subprocess, "Popen", refused)
    monkeypatch.setattr(haproxy, "socket_command", refused)


class FakeApplier:
    """Records what the daemon asks of HAProxy and answers like a healthy one (or fails on request)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.live: str | None = None
        self.runtime_fails = False
        self.refused_port: int | None = None  # HAProxy refuses any config holding a server on this port
        self.refuses_all = False  # ... or every config (a template or settings fault)

    def read_live(self, settings: Settings) -> str | None:
        return self.live

    def features(self, settings: Settings) -> haproxy.Features:
        return haproxy.Features((2, 6, 12))

    def running(self, settings: Settings) -> dict:
        return {}

    def restore_routes(self, settings: Settings, routing) -> None:
        self.calls.append("restore_routes")

    def routes_on_disk(self, settings: Settings) -> dict[str, str]:
        return {}

    def inherit(self, settings: Settings, live: str) -> dict[str, str] | None:
        return None  # a HAProxy not known to run the live file: the first apply reloads

    def old_workers(self, settings: Settings) -> int | None:
        return 0

    def runtime(self, settings: Settings, tables: Mapping[str, BackendSlots], sequence: tuple, routing) -> str:
        self.calls.append(f"runtime {len(sequence)}")
        if self.runtime_fails:
            raise haproxy.SocketError("HAProxy socket admin.sock refused the connection")
        return f"runtime API: {len(sequence)} commands"

    def reload(self, settings: Settings, text: str, tables, routes, waiting=None, admin_socket=True) -> ReloadReport:
        self.calls.append("reload")
        if self._refuses(tables):
            raise haproxy.ValidationError("haproxy -c rejected haproxy.cfg: 'server web/slot4' : refused")
        self.live = text
        return ReloadReport("written (worker 7)", True, 0.02, 0)

    def repair(self, settings: Settings, tables, routing) -> Drift:
        return Drift()

    def persist(self, settings: Settings, text: str, routes: str | None = None) -> None:
        self.live = text

    def check(self, settings: Settings, template, features, prepared) -> str | None:
        self.calls.append("check")
        return "'server web/slot4' : refused" if self._refuses(prepared.tables) else None

    def _refuses(self, tables) -> bool:
        return self.refuses_all or (self.refused_port is not None and any(
            slot.owner is not None and slot.port == self.refused_port for t in tables.values() for slot in t.slots))


def settings_for(tmp_path: Path, sync: str = "") -> Settings:
    sync = sync or 'reload_min_interval = "10s"\n'
    path = tmp_path / "config.toml"
    path.write_text(
        f'[haproxy]\nbinary = "{tmp_path / "no-haproxy-here"}"\nconfig_path = "{tmp_path / "haproxy.cfg"}"\n'
        f'stats_socket = "{tmp_path / "admin.sock"}"\nserver_state_file = "{tmp_path / "state"}"\n'
        f'[sync]\nwait_min = "1ms"\nwait_max = "5ms"\ndrain_timeout = "0s"\n{sync}'
        '[discovery]\nenabled = false\n[[services]]\nname = "web"\n[[services]]\nname = "api"\n')
    return load_settings(path, env={})


def web(count: int, status: Status = Status.PASSING, service: str = "web") -> Service:
    return Service(service, tuple(Instance("n1", f"{service}-{i}", "10.0.0.1", 9000 + i, status, 1, 1)
                                  for i in range(count)))


class Cycle:
    """A daemon with its template and a fake applier; ``feed`` is what a watch would deliver."""

    def __init__(self, tmp_path: Path, sync: str = "") -> None:
        self.applier = FakeApplier()
        self.daemon = Daemon(settings_for(tmp_path, sync), applier=self.applier)
        self.daemon.template = load_template(self.daemon.settings.template_path())

    def feed(self, *services: Service) -> None:
        for service in services:
            self.daemon._on_update(WatchUpdate(service, (), 1, 0.0))

    def run(self) -> Outcome:
        async def once() -> Outcome:
            outcome = await self.daemon._apply_once()
            self.daemon._after(outcome)
            return outcome
        return asyncio.run(once())


def test_first_apply_reloads_then_membership_goes_through_the_runtime_api(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path)
    cycle.feed(web(3), web(1, service="api"))
    first = cycle.run()
    assert first.ok and first.path is ApplyPath.RELOAD and first.reason is ReloadKind.UNCONFIRMED
    assert "reloaded in 20 ms" in first.sentence and cycle.applier.calls == ["reload"]
    cycle.feed(web(4))
    second = cycle.run()
    assert second.path is ApplyPath.RUNTIME and second.sentence == "web: 4 servers (+1 -0 ~0); runtime API: 3 commands"
    assert cycle.applier.calls[-1].startswith("runtime ")
    cycle.feed(web(4))
    assert cycle.run().sentence.endswith("rendered config identical, no write, no reload")


def test_the_guard_holds_a_big_drop_then_applies_it_once_a_reread_confirms(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path)
    cycle.feed(web(10), web(1, service="api"))
    cycle.run()
    cycle.feed(web(1))
    held = cycle.run()
    assert "web held by the guard" in held.sentence and held.path is ApplyPath.NONE
    assert cycle.daemon.guard.held == ["web"]
    cycle.daemon.guard.reread("web")  # the second look, as _reread_guarded records it
    confirmed = cycle.run()
    assert confirmed.path is ApplyPath.RUNTIME and confirmed.sentence.startswith("web: 1 servers (+0 -9 ~0); runtime")
    assert cycle.daemon.guard.held == []


def test_the_guard_recovers_when_consul_comes_back(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path)
    cycle.feed(web(10), web(1, service="api"))
    cycle.run()
    cycle.feed(web(0))
    assert "held by the guard" in cycle.run().sentence
    cycle.feed(web(10))
    recovered = cycle.run()
    assert "held by the guard" not in recovered.sentence and cycle.daemon.guard.held == []
    assert recovered.sentence.endswith("rendered config identical, no write, no reload")


def test_hold_down_keeps_a_new_status_until_it_lasted(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path, 'hold_down = "1h"\n')
    cycle.feed(web(3), web(1, service="api"))
    cycle.run()
    cycle.feed(Service("web", (*web(2).instances, Instance("n1", "web-2", "10.0.0.1", 9002, Status.CRITICAL, 1, 1))))
    held = cycle.run()
    assert "1 status changes held by hold_down" in held.sentence and held.path is ApplyPath.NONE


def test_the_reload_budget_defers_a_second_reload(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path)
    cycle.feed(web(3), web(1, service="api"))
    cycle.run()
    cycle.daemon._structure_changed = True  # what a SIGHUP with a changed template leaves for the next apply
    cycle.feed(web(4))
    deferred = cycle.run()
    assert deferred.deferred and "deferred" in deferred.sentence and "by the reload budget" in deferred.sentence
    assert cycle.applier.calls == ["reload"], "no second reload inside reload_min_interval"
    assert cycle.daemon._retry_at is not None


def test_a_failed_runtime_path_falls_back_to_a_reload_with_its_reason(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path, 'reload_min_interval = "0s"\n')
    cycle.feed(web(3), web(1, service="api"))
    cycle.run()
    cycle.applier.runtime_fails = True
    cycle.feed(web(4))
    fallback = cycle.run()
    assert fallback.ok and fallback.path is ApplyPath.RELOAD and fallback.reason is ReloadKind.RUNTIME_FAILED
    assert "runtime API path failed (HAProxy socket admin.sock refused the connection)" in fallback.sentence
    assert cycle.applier.calls[-2:] == ["runtime 3", "reload"]


def test_an_instance_haproxy_refuses_is_left_out_and_everything_else_applies(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path, 'reload_min_interval = "0s"\n')
    cycle.applier.refused_port = 9003
    cycle.feed(web(3), web(1, service="api"))
    assert cycle.run().ok
    cycle.daemon._structure_changed = True  # the next apply reloads, so haproxy -c sees the newcomers
    cycle.feed(web(6), web(2, service="api"))  # web-3 (port 9003) is refused, the rest is good
    outcome = cycle.run()
    assert outcome.ok and outcome.path is ApplyPath.RELOAD, outcome.sentence
    assert "web: 5 servers (+2 -0 ~0)" in outcome.sentence and "api: 2 servers" in outcome.sentence
    assert ":9003 " not in cycle.applier.live and ":9005 " in cycle.applier.live
    assert cycle.daemon.state_view().skipped == {("web", "rejected"): 1}
    checks = cycle.applier.calls.count("check")
    assert 2 <= checks <= 5, cycle.applier.calls
    cycle.feed(web(7))  # a later change of the same service still applies, web-3 stays out
    later = cycle.run()
    runs = cycle.daemon.runs.text  # the runtime path writes to disk in the background: what HAProxy runs
    assert later.ok and later.path is ApplyPath.RUNTIME and ":9006 " in runs and ":9003 " not in runs
    cycle.feed(Service("web", tuple(i if i.id != "web-3" else dataclasses.replace(i, port=7003)
                                    for i in web(7).instances)))  # re-registered on another port: checked again
    assert cycle.run().ok and ":7003 " in cycle.daemon.runs.text and not cycle.daemon.rejections


def test_a_refusal_no_instance_explains_keeps_the_last_good_config(tmp_path: Path) -> None:
    cycle = Cycle(tmp_path, 'reload_min_interval = "0s"\n')
    cycle.feed(web(3), web(1, service="api"))
    cycle.run()
    cycle.applier.refuses_all = True  # even with no instance at all: the fault is not an instance's
    cycle.daemon._structure_changed = True
    live = cycle.applier.live
    cycle.feed(web(4))
    outcome = cycle.run()
    assert not outcome.ok and "kept last good config" in outcome.sentence
    assert not cycle.daemon.rejections and cycle.applier.live == live
    assert cycle.applier.calls.count("check") == 2  # the changed ones out, then every instance out


def test_an_applied_daemon_has_no_deadline_in_the_past_to_wake_for(tmp_path: Path) -> None:
    """A start that got Consul's answer before sync.ready_without_consul came due owes no READY without
    it: its deadline must not stay among the timers, where, once past, it woke the loop at once on
    every cycle (a busy loop: bench/tls_rotation saw the idle daemon use 8.8 s of CPU in 23 s)."""
    cycle = Cycle(tmp_path)
    cycle.daemon._ready_without_consul_at = time.monotonic() - 5  # set at start, now past
    assert cycle.daemon._ready_without_consul_at in cycle.daemon._timers(), "still owed before the first apply"
    cycle.feed(web(3), web(1, service="api"))
    cycle.run()
    now = time.monotonic()
    assert all(deadline > now for deadline in cycle.daemon._timers()), cycle.daemon._timers()
