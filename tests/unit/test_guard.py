"""The guards as objects with now passed in: held, then applied or recovered, each counted once."""

from __future__ import annotations

from haproxy_sync.catalog import Instance, Service, Snapshot, Status
from haproxy_sync.config import ServiceSettings
from haproxy_sync.guard import CatalogGuard, ServiceGuard

WEB = ServiceSettings(name="web", backend="web")


def web(count: int) -> Snapshot:
    return Snapshot.of([Service("web", tuple(Instance("n1", f"web-{i}", "10.0.0.1", 9000 + i, Status.PASSING, 1, 1)
                                              for i in range(count)))])


def recorder() -> tuple[list[tuple[str, str]], ServiceGuard]:
    seen: list[tuple[str, str]] = []
    return seen, ServiceGuard(lambda service, outcome: seen.append((service, outcome)))


def test_a_big_drop_is_held_until_a_reread_confirms_it() -> None:
    seen, guard = recorder()
    applied = web(10)
    kept = guard.judge(applied, web(1), [WEB], now=0, delay=2)
    assert kept == applied and guard.held == ["web"] and guard.deadlines() == [2]
    assert guard.due(now=1) == [] and guard.due(now=2) == ["web"]
    assert guard.judge(applied, web(1), [WEB], now=1, delay=2) == applied and seen == [("web", "held")]
    guard.reread("web")
    assert guard.judge(applied, web(1), [WEB], now=3, delay=2) == web(1)
    assert seen == [("web", "held"), ("web", "applied")] and guard.held == []


def test_a_drop_that_goes_away_is_a_recovery() -> None:
    seen, guard = recorder()
    applied = web(10)
    guard.judge(applied, web(0), [WEB], now=0, delay=2)
    assert guard.judge(applied, web(10), [WEB], now=1, delay=2) == web(10)
    assert seen == [("web", "held"), ("web", "recovered")] and guard.held == []


def test_a_failed_reread_keeps_holding_and_an_unwatched_service_is_forgotten() -> None:
    _, guard = recorder()
    guard.judge(web(10), web(0), [WEB], now=0, delay=2)
    guard.retry("web", now=2, delay=2)
    assert guard.deadlines() == [4]
    guard.forget("web")
    assert guard.held == [] and guard.deadlines() == []


def test_without_an_applied_snapshot_or_with_the_guard_off_nothing_is_held() -> None:
    seen, guard = recorder()
    assert guard.judge(None, web(0), [WEB], now=0, delay=2) == web(0)
    off = ServiceSettings(name="web", backend="web", guard=False)
    assert guard.judge(web(10), web(0), [off], now=0, delay=2) == web(0) and seen == []


def test_the_catalog_guard_holds_a_big_drop_judges_partial_returns_and_applies_a_confirmed_one() -> None:
    seen: list[tuple[str, str]] = []
    guard = CatalogGuard(lambda service, outcome: seen.append((service, outcome)))
    before = frozenset({"a", "b", "c", "d"})
    assert guard.judge(before, frozenset({"a"}), True, 0.5, now=0, delay=2) == before
    assert guard.due_at == 2 and seen == [("catalog", "held")]
    # A partial return under max_drop ends the hold and applies what is missing.
    assert guard.judge(frozenset(before), frozenset({"a", "b", "c"}), True, 0.5, now=1, delay=2) == {"a", "b", "c"}
    assert seen[-1] == ("catalog", "applied") and guard.before is None
    # Held again; the second read still shows the drop: the next answer is taken as it is.
    guard.judge(before, frozenset({"a"}), True, 0.5, now=3, delay=2)
    guard.confirm(frozenset({"a"}), 0.5)
    assert guard.judge(before, frozenset({"a"}), True, 0.5, now=5, delay=2) == {"a"}
    assert [outcome for _, outcome in seen] == ["held", "applied", "held", "applied"]
    # Before the first apply nothing is held.
    assert CatalogGuard(lambda *_: None).judge(before, frozenset(), False, 0.5, now=0, delay=2) == frozenset()
