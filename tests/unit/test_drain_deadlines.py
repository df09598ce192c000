"""The drains' deadlines, as the loop collects them: no socket is opened (``poll`` is the one that reads)."""

from __future__ import annotations

from pathlib import Path

from haproxy_sync.drains import POLL_INTERVAL, DrainWatch
from haproxy_sync.plan import BackendSlots, Slot


def tables(draining_since: float | None) -> dict[str, BackendSlots]:
    slot = Slot(1, ("n1", "web-1"), "10.0.0.1", 9000, 0, False, draining_since)
    return {"web": BackendSlots("web", (slot,))}


def test_a_plan_sets_the_drain_end_and_the_next_reading(tmp_path: Path) -> None:
    watch = DrainWatch(tmp_path / "admin.sock")
    watch.planned(tables(draining_since=100.0), drain_timeout=30, now=101.0, can_poll=True)
    assert watch.ends_at == 130.0 and watch.poll_at == 101.0 + POLL_INTERVAL
    assert sorted(watch.deadlines()) == [101.0 + POLL_INTERVAL, 130.0]
    assert not watch.due(129.9) and watch.due(130.0), "the timer ends the drain at the latest"
    assert not watch.poll_due(101.0) and watch.poll_due(101.0 + POLL_INTERVAL)


def test_without_an_idle_rule_only_the_timer_counts_and_a_failed_plan_clears_both(tmp_path: Path) -> None:
    watch = DrainWatch(tmp_path / "admin.sock")
    watch.planned(tables(draining_since=100.0), drain_timeout=30, now=101.0, can_poll=False)
    assert watch.poll_at is None and watch.deadlines() == [130.0]
    watch.stop()
    assert watch.deadlines() == [] and not watch.due(1e9)
    watch.planned(tables(draining_since=None), drain_timeout=30, now=101.0, can_poll=True)
    assert watch.deadlines() == [], "nothing drains: nothing to wake for"
    assert watch.take_idle() == {}
