"""The search for the instances HAProxy refuses, as a pure function of a check, and the record of what
was left out. The check here is a rule over the suspects' positions (which ones a config may hold);
tests/integration/test_isolation.py runs the same search with real ``haproxy -c``."""

from __future__ import annotations

import math

import pytest

from haproxy_sync.catalog import Instance, Service, Snapshot, Status
from haproxy_sync.isolate import Isolation, Rejected, Rejections, changed, find_rejected, leave_out


def inst(i: int, port: int | None = None) -> Instance:
    return Instance("n1", f"web-{i}", "10.0.0.1", port or 9000 + i, Status.PASSING, 1, 1)


def suspects(n: int) -> list[tuple[str, Instance]]:
    return [("web", inst(i)) for i in range(n)]


def refusing(bad: set[int], calls: list[frozenset[int]] | None = None):
    """A check refusing any config that holds one of ``bad``, naming the first."""
    def check(kept: frozenset[int]) -> str | None:
        if calls is not None:
            calls.append(kept)
        hit = sorted(kept & bad)
        return f"server web-{hit[0]} refused" if hit else None
    return check


def rejected_positions(found: Isolation, pool: list[tuple[str, Instance]]) -> set[int]:
    return {pool.index(suspect) for suspect, _ in found.rejected}


@pytest.mark.parametrize("n", [2, 7, 100, 1000, 10000])
def test_one_bad_instance_among_n_is_found_in_about_two_log2_n_checks(n: int) -> None:
    pool = suspects(n)
    found = find_rejected(pool, refusing({n // 3}))
    assert rejected_positions(found, pool) == {n // 3}
    assert found.rejected[0][1] == f"server web-{n // 3} refused" and found.complete
    assert found.checks <= 2 * math.ceil(math.log2(n)) + 1


def test_every_bad_instance_is_found_and_everything_else_is_kept() -> None:
    pool, bad = suspects(64), {0, 17, 18, 63}
    calls: list[frozenset[int]] = []
    found = find_rejected(pool, refusing(bad, calls))
    assert rejected_positions(found, pool) == bad
    # What the search ends with was checked as a whole: the last accepted check holds all the good ones.
    accepted = [kept for kept in calls if not kept & bad]
    assert max(accepted, key=len) == frozenset(range(64)) - bad


def test_two_instances_that_only_clash_together_cost_one_of_them() -> None:
    pool = suspects(10)

    def clash(kept: frozenset[int]) -> str | None:  # e.g. two servers pinned to the same `id`
        return "custom id already used" if {3, 8} <= kept else None

    found = find_rejected(pool, clash)
    assert len(found.rejected) == 1 and rejected_positions(found, pool) <= {3, 8}


def test_a_config_refused_without_any_suspect_is_not_an_instances_fault() -> None:
    found = find_rejected(suspects(5), lambda kept: "unknown keyword 'bogus' in the template")
    assert found.rejected == () and found.base_refused == "unknown keyword 'bogus' in the template"
    assert found.checks == 1


def test_a_refusal_that_does_not_come_back_blames_no_one() -> None:
    assert find_rejected(suspects(1), refusing(set())) == Isolation(checks=2)
    found = find_rejected(suspects(40), refusing(set()))
    assert found.rejected == () and found.base_refused is None and found.complete


def test_the_check_budget_bounds_the_work_and_says_so() -> None:
    pool = suspects(1000)
    found = find_rejected(pool, refusing(set(range(0, 1000, 10))), max_checks=20)
    assert found.checks == 20 and not found.complete
    assert found.rejected and rejected_positions(found, pool) <= set(range(0, 1000, 10))


def test_changed_is_what_the_last_good_apply_did_not_hold_as_it_is() -> None:
    applied = Snapshot.of([Service("web", (inst(0), inst(1)))])
    candidate = Snapshot.of([Service("web", (inst(0), inst(1, port=7001), inst(2)))])
    assert changed(applied, candidate) == (("web", inst(1, port=7001)), ("web", inst(2)))
    assert len(changed(None, candidate)) == 3


def test_leave_out_keeps_only_the_suspects_asked_for() -> None:
    candidate = Snapshot.of([Service("web", (inst(0), inst(1), inst(2))), Service("api", (inst(5),))])
    pool = [("web", inst(1)), ("api", inst(5))]
    kept = leave_out(candidate, pool, frozenset({1}))
    assert kept.get("web").instances == (inst(0), inst(2)) and kept.get("api").instances == (inst(5),)
    assert leave_out(candidate, pool, frozenset({0, 1})) is candidate


def test_a_rejected_instance_stays_out_until_its_registration_changes_or_it_leaves() -> None:
    record = Rejections().with_found([Rejected("web", inst(1), "refused")])
    latest = {"web": Service("web", (inst(0), inst(1))), "api": Service("api", (inst(5),))}
    narrowed, kept = record.narrow(latest)
    assert narrowed["web"].instances == (inst(0),) and narrowed["api"] == latest["api"]
    assert kept is record and kept.counts() == {"web": 1}
    fixed = {"web": Service("web", (inst(0), inst(1, port=7001)))}  # re-registered on another port
    narrowed, kept = record.narrow(fixed)
    assert narrowed["web"].instances == fixed["web"].instances and not kept
    narrowed, kept = record.narrow({"web": Service("web", (inst(0),))})  # deregistered
    assert not kept and not record.cleared()
