"""The slot planner: pure, so every lifecycle step is checked without sockets."""

from __future__ import annotations

import pytest

from haproxy_sync.catalog import Instance, Service, Snapshot, Status
from haproxy_sync.plan import (
    FREE_ADDRESS,
    BackendSlots,
    assign,
    big_catalog_drop,
    draining,
    find_drift,
    next_deadline,
    plan_runtime,
    slot_commands,
    slots_from_config,
    structure,
)


def inst(i: int, status: Status = Status.PASSING, *, passing: int = 1, warning: int = 1, port: int = 0) -> Instance:
    return Instance("n1", f"web-{i}", "10.0.0.1", port or 9000 + i, status, passing, warning)


def svc(*instances: Instance) -> Service:
    return Service("web", instances)


def step(prev: BackendSlots | None, service: Service, now: float = 0.0, base: int = 4, drain: float = 10.0):
    return assign(prev, "web", service, base=base, now=now, drain_timeout=drain)


def by_owner(table: BackendSlots) -> dict[str, tuple]:
    return {s.owner[1]: (s.name, s.weight, s.maint) for s in table.slots if s.owner}


def test_new_instances_take_free_slots_in_order() -> None:
    table = step(None, svc(inst(1), inst(2)))
    assert len(table.slots) == 4
    assert by_owner(table) == {"web-1": ("slot1", 1, False), "web-2": ("slot2", 1, False)}
    assert [s.maint for s in table.slots[2:]] == [True, True]
    assert table.slots[3].address == FREE_ADDRESS


def test_an_instance_keeps_its_slot_for_life() -> None:
    first = step(None, svc(inst(1), inst(2), inst(3)))
    second = step(first, svc(inst(3), inst(4)), now=1)  # 1 and 2 leave, 4 arrives
    assert by_owner(second)["web-3"][0] == "slot3"
    assert by_owner(second)["web-4"][0] == "slot4", "draining slots are not free yet"


def test_leaving_instance_drains_then_frees_its_slot() -> None:
    table = step(None, svc(inst(1)))
    draining = step(table, svc(), now=100)
    (slot,) = [s for s in draining.slots if s.owner]
    assert (slot.weight, slot.maint, slot.draining_since) == (0, False, 100)
    assert next_deadline({"web": draining}, 10.0) == 110
    still = step(draining, svc(), now=109)
    assert still.slots[0].owner is not None
    freed = step(still, svc(), now=110)
    assert freed.slots[0].owner is None and freed.slots[0].maint
    assert next_deadline({"web": freed}, 10.0) is None


def test_a_drain_ends_early_when_haproxy_reports_the_server_idle() -> None:
    table = step(None, svc(inst(1), inst(2)))
    # HAProxy's reading of slot1 from before its drain began counts for nothing: it had weight > 0.
    started = assign(table, "web", svc(inst(2)), base=4, now=100, drain_timeout=60, idle=frozenset({"slot1"}))
    assert started.slots[0].draining_since == 100 and draining({"web": started}) == {"web": (started.slots[0],)}
    # Draining, and idle at the next reading: freed at once, 59 s before drain_timeout.
    freed = assign(started, "web", svc(inst(2)), base=4, now=101, drain_timeout=60, idle=frozenset({"slot1"}))
    assert freed.slots[0].owner is None and freed.slots[0].maint and draining({"web": freed}) == {}
    # A critical instance idle in its drain goes to maintenance (and keeps its slot for a comeback).
    critical = assign(table, "web", svc(inst(1), inst(2, Status.CRITICAL)), base=4, now=5, drain_timeout=60)
    maint = assign(critical, "web", svc(inst(1), inst(2, Status.CRITICAL)), base=4, now=6, drain_timeout=60,
                   idle=frozenset({"slot2"}))
    assert by_owner(maint)["web-2"] == ("slot2", 0, True)
    # Idle names another slot: this one's drain goes on.
    other = assign(started, "web", svc(inst(2)), base=4, now=101, drain_timeout=60, idle=frozenset({"slot2"}))
    assert other.slots[0].draining_since == 100


def test_critical_drains_then_maint_and_comes_back_to_the_same_slot() -> None:
    table = step(None, svc(inst(1), inst(2)))
    critical = step(table, svc(inst(1), inst(2, Status.CRITICAL)), now=5)
    assert by_owner(critical)["web-2"] == ("slot2", 0, False)
    maint = step(critical, svc(inst(1), inst(2, Status.CRITICAL)), now=15)
    assert by_owner(maint)["web-2"] == ("slot2", 0, True)
    back = step(maint, svc(inst(1), inst(2)), now=16)
    assert by_owner(back)["web-2"] == ("slot2", 1, False)


def test_warning_uses_warning_weight_and_zero_drains() -> None:
    table = step(None, svc(inst(1, passing=10, warning=3)))
    assert by_owner(table)["web-1"][1] == 10
    assert by_owner(step(table, svc(inst(1, Status.WARNING, passing=10, warning=3))))["web-1"][1] == 3
    assert by_owner(step(table, svc(inst(1, Status.WARNING, passing=10, warning=0))))["web-1"] == ("slot1", 0, False)


def test_new_critical_instance_goes_straight_to_maintenance() -> None:
    table = step(None, svc(inst(1, Status.CRITICAL)))
    assert by_owner(table)["web-1"] == ("slot1", 0, True)


def test_first_plan_leaves_room_to_double_then_slots_double_when_full_and_never_shrink() -> None:
    table = step(None, svc(*[inst(i) for i in range(3)]))
    assert len(table.slots) == 6, "twice the instances seen first, when that beats the base count"
    assert len(step(None, svc(inst(1))).slots) == 4, "never fewer than the base count"
    same = step(table, svc(*[inst(i) for i in range(6)]))
    assert len(same.slots) == 6
    grown = step(same, svc(*[inst(i) for i in range(7)]))
    assert len(grown.slots) == 12
    huge = step(grown, svc(*[inst(i) for i in range(40)]))
    assert len(huge.slots) == 48
    assert len(step(huge, svc(), now=1000).slots) == 48


def test_slot_commands_order_maint_first_ready_last() -> None:
    table = step(None, svc(inst(1)))
    free, held = step(None, svc()).slots[0], table.slots[0]
    assert slot_commands("web", free, held) == [
        "set server web/slot1 addr 10.0.0.1 port 9001",
        "set server web/slot1 weight 1",
        "set server web/slot1 state ready",
    ]
    assert slot_commands("web", held, free) == [
        "set server web/slot1 state maint",
        "set server web/slot1 addr 127.0.0.1 port 1",
        "set server web/slot1 weight 0",
    ]


def test_membership_change_plans_runtime_commands_only() -> None:
    old = step(None, svc(inst(1)))
    new = step(old, svc(inst(1), inst(2)))
    live, rendered = "backend web\n    server slot1 a:1", "backend web\n    server slot1 b:2"
    plan = plan_runtime({"web": old}, {"web": new}, live, rendered)
    assert not plan.needs_reload
    assert plan.commands[-1] == "set server web/slot2 state ready"


def reason(plan) -> tuple[str, str]:
    assert plan.reload_reason is not None
    return plan.reload_reason.label, str(plan.reload_reason)


def test_reload_reasons_are_typed_with_their_label_and_sentence() -> None:
    old = step(None, svc(inst(1)))
    grown = step(old, svc(*[inst(i) for i in range(6)]))
    label, text = reason(plan_runtime({"web": old}, {"web": grown}, "", ""))
    assert label == "slots" and "slots 4 -> 8" in text, "no rendered backend: growth cannot be add server"
    label, text = reason(plan_runtime({"web": old}, {"web": old, "api": old}, "", ""))
    assert label == "backends" and "backends changed (+api" in text
    assert reason(plan_runtime({}, {}, None, "x")) == ("first", "no live config yet")
    live, rendered = "backend web\n balance roundrobin", "backend web\n balance first"
    label, text = reason(plan_runtime({"web": old}, {"web": old}, live, rendered))
    assert label == "structure" and "config structure changed" in text
    host = step(old, svc(Instance("n1", "web-9", "app.internal", 80, Status.PASSING)))
    label, text = reason(plan_runtime({"web": old}, {"web": host}, "", ""))
    assert label == "hostname" and "is a host name" in text


def test_structure_ignores_server_values_and_comments() -> None:
    a = "backend web\n    server slot1 10.0.0.1:80 check weight 1  # web-1\n# comment\n"
    b = "backend web\n    server slot1 127.0.0.1:1 check weight 0 disabled  # free\n"
    assert structure(a) == structure(b) == ["backend web", "server slot1"]


def test_restart_adopts_slots_from_the_live_config() -> None:
    config = (
        "frontend http\n    bind *:80\nbackend web\n    balance roundrobin\n"
        "    server slot1 127.0.0.1:1 check weight 0 disabled  # free\n"
        "    server slot2 10.0.0.1:9002 check weight 5  # web-2\n"
        "    server slot3 10.0.0.1:9001 check weight 1  # web-1\n"
        "backend other\n    server slot1 10.0.0.1:9001 check weight 1\n"
    )
    snapshot = Snapshot.of([svc(inst(1), inst(2, passing=5))])
    tables = slots_from_config(config, snapshot, [("web", "web")])
    assert set(tables) == {"web"}
    assert by_owner(tables["web"]) == {"web-2": ("slot2", 5, False), "web-1": ("slot3", 1, False)}
    again = step(tables["web"], snapshot.get("web"), base=3)
    assert again == tables["web"], "the first apply after a restart changes nothing"


def test_drift_is_found_and_commands_repair_it() -> None:
    table = step(None, svc(inst(1), inst(2)))
    running = {("web", s.name): s.runtime for s in table.slots}
    assert find_drift({"web": table}, running).empty
    running[("web", "slot2")] = ("10.0.0.1", 9002, 1, True)  # someone ran `disable server`
    del running[("web", "slot4")]
    drift = find_drift({"web": table}, running)
    assert drift.found == ("web/slot2 runs 10.0.0.1:9002 weight 1 maint, planned 10.0.0.1:9002 weight 1",)
    assert drift.commands == ("set server web/slot2 state ready",)
    assert drift.missing == ("web/slot4",)


def test_drift_compares_ipv6_addresses_by_value() -> None:
    table = step(None, svc(Instance("n1", "v6", "2001:db8::1", 80, Status.PASSING)))
    running = {("web", s.name): s.runtime for s in table.slots}
    running[("web", "slot1")] = ("2001:0db8:0:0::1", 80, 1, False)
    assert find_drift({"web": table}, running).empty


def test_restart_drains_a_slot_whose_instance_left_meanwhile() -> None:
    config = "backend web\n    server slot1 10.0.0.1:9001 check weight 1  # web-1\n"
    tables = slots_from_config(config, Snapshot.of([svc()]), [("web", "web")])
    after = step(tables["web"], svc(), now=50, base=1)
    assert (after.slots[0].weight, after.slots[0].maint, after.slots[0].draining_since) == (0, False, 50)


def test_hold_down_damps_flapping_health() -> None:
    from haproxy_sync.damping import damp

    applied = Snapshot.of([svc(inst(1), inst(2))])
    flapped = Snapshot.of([svc(inst(1), inst(2, Status.CRITICAL))])
    held, history, deadline = damp(applied, flapped, {}, now=100, hold_down=5)
    assert held.get("web").instances[1].status is Status.PASSING and deadline == 105
    back, history2, deadline2 = damp(applied, applied, history, now=102, hold_down=5)
    assert back == applied and history2 == {} and deadline2 is None, "a flap shorter than hold_down never applies"
    _, history, _ = damp(applied, flapped, {}, now=200, hold_down=5)
    matured, _, _ = damp(applied, flapped, history, now=205, hold_down=5)
    assert matured.get("web").instances[1].status is Status.CRITICAL
    new_member = Snapshot.of([svc(inst(1), inst(2), inst(3, Status.CRITICAL))])
    assert damp(applied, new_member, {}, now=1, hold_down=5)[0] == new_member, "membership is never held"
    assert damp(applied, flapped, {}, now=1, hold_down=0)[0] == flapped, "off by default"


def test_big_drop_rules() -> None:
    from haproxy_sync.plan import big_drop

    four = svc(inst(1), inst(2), inst(3), inst(4))
    assert big_drop(four, svc(inst(1), inst(2)), 1, 0.5) is None, "exactly half is allowed"
    assert "more than max_drop 50%" in big_drop(four, svc(inst(1)), 1, 0.5)
    assert "under min_servers 1" in big_drop(four, svc(), 1, 1.0)
    critical = svc(*(inst(i, Status.CRITICAL) for i in range(1, 5)))
    assert "4 -> 0 healthy servers" in big_drop(four, critical, 1, 0.5), "critical counts as gone"
    assert big_drop(svc(), svc(), 1, 0.5) is None and big_drop(svc(inst(1)), four, 1, 0.5) is None


def test_saved_state_is_kept_only_for_slots_that_stay_what_they_ran() -> None:
    from haproxy_sync.apply import _state_fits
    from haproxy_sync.haproxy import filter_server_state

    table = step(None, svc(inst(1)))  # slot1 holds web-1; slot2..4 free
    saved = (
        "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight ...\n"
        "3 web 1 slot1 10.0.0.1 2 0 1 1 5 6 3 4 6 0 0 0 - 9001 - 0 0 - - 0\n"  # what it runs: keep
        "3 web 2 slot2 127.0.0.1 0 5 0 0 5 1 0 0 14 0 0 0 - 1 - 0 0 - - 0\n"  # free and stays free: keep
        "3 web 3 slot3 10.0.0.9 2 0 1 1 5 6 3 4 6 0 0 0 - 9009 - 0 0 - - 0\n"  # planned free now: drop
        "3 web 9 slot9 127.0.0.1 0 5 0 0 5 1 0 0 14 0 0 0 - 1 - 0 0 - - 0\n"  # no such slot: drop
    )
    kept = filter_server_state(saved, lambda state: _state_fits({"web": table}, state))
    assert [line.split()[3] for line in kept.splitlines()[2:]] == ["slot1", "slot2"]
    assert kept.startswith("1\n# be_id")


def test_a_host_name_slot_is_not_drift_once_haproxy_resolved_it() -> None:
    table = step(None, svc(Instance("n1", "web-h", "app.internal", 80, Status.PASSING)))
    running = {("web", s.name): s.runtime for s in table.slots}
    running[("web", "slot1")] = ("10.1.2.3", 80, 1, False)  # HAProxy shows what the name resolved to
    assert find_drift({"web": table}, running).empty
    running[("web", "slot1")] = ("10.1.2.3", 81, 1, False)
    drift = find_drift({"web": table}, running)
    assert not drift.empty, "the port still counts"
    assert drift.missing == ("web/slot1",) and drift.commands == (), "only a reload re-resolves a host name"


def test_apply_sentence_stays_one_short_line_with_hundreds_of_services() -> None:
    from haproxy_sync.catalog import Instance, Service, Snapshot, Status
    from haproxy_sync.plan import describe, diff_snapshots

    services = [Service(f"svc-{i:03d}", (Instance("n", f"svc-{i:03d}-0", "10.0.0.1", 80, Status.PASSING),))
                for i in range(300)]
    sentence = describe(diff_snapshots(None, Snapshot.of(services)))
    assert sentence == ("300 services, 300 servers (+300 -0 ~0): svc-000, svc-001, svc-002, svc-003, svc-004 "
                        "and 295 more")
    few = describe(diff_snapshots(None, Snapshot.of(services[:2])))
    assert few == "svc-000: 1 servers (+1 -0 ~0); svc-001: 1 servers (+1 -0 ~0)"


@pytest.mark.parametrize(("before", "after", "held"), [
    ({"a", "b", "c", "d"}, {"a"}, True),              # three of four gone at once
    ({"a", "b", "c", "d"}, {"a", "b"}, False),         # half: not more than max_drop
    ({"a", "b"}, set(), True),                         # both gone
    ({"a"}, set(), False),                             # one branch torn down: never held
    ({"a", "b", "c"}, {"a", "b", "c", "e"}, False),    # growth is never a drop
])
def test_catalog_drop_guard(before: set[str], after: set[str], held: bool) -> None:
    reason = big_catalog_drop(frozenset(before), frozenset(after), 0.5)
    assert (reason is not None) == held
    if held:
        assert f"{len(before)} -> {len(before & after)} tagged services" in reason
    assert big_catalog_drop(frozenset(before), frozenset(after), 1.0) is None, "100% turns it off"
