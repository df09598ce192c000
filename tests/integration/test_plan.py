"""``render --plan`` predicts the daemon: on the same state both decide, and they decide the same.

The daemon runs with a long quiescence (``wait_min = wait_max``), so after a change in Consul there
is a window in which the change is visible to ``render --plan`` but not yet applied; the test asks
for the plan inside it, then reads what the daemon did once the window closed.
"""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path

from tests.helpers import Stack, all_passing, cli, register, sentence, wait_until

#: Long enough for a registration's checks to pass and one `render --plan` to run on a busy CI host.
WINDOW = 5.0
TAG = "haproxy-sync"


def plan_then_apply(stack: Stack, change, settled) -> tuple[list[str], str]:
    """Make ``change``, wait for ``settled``, run the plan, then wait for the daemon's next apply."""
    applied_before = stack.daemon.log().count("applied ")
    change()
    wait_until(settled, WINDOW, what="the change settled in Consul")
    plan = cli("render", "--plan", "--config", str(stack.layout.config_toml))
    assert plan.returncode == 0, plan.stderr
    assert "note:" not in plan.stderr, f"the plan could not ask the daemon: {plan.stderr}"
    assert stack.daemon.log().count("applied ") == applied_before, (
        f"the daemon applied before the plan ran (window {WINDOW}s too short on this host?)")
    log = stack.daemon.wait_for_log("applied ", timeout=WINDOW * 3, count=applied_before + 1)
    return plan.stdout.splitlines(), sentence(log.split("applied ")[applied_before + 1].splitlines()[0])


def test_render_plan_prints_the_decision_the_daemon_then_takes(tmp_path: Path, consul, make_apps) -> None:
    window = f"{WINDOW:g}s"
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, quiescence=(window, window),
                      extra='drain_timeout = "0s"\nreload_min_interval = "0s"\nfirst_change_at_once = false\n')

        newcomer = make_apps(1, prefix="more")[0]
        plan, applied = plan_then_apply(stack, lambda: register(consul.url, newcomer),
                                        lambda: all_passing(consul.url, 3))
        assert plan[0].startswith("runtime: ") and plan[0].endswith(" commands, no reload"), plan
        commands = plan[0].split()[1]
        assert f"runtime API: {commands} commands in " in applied, (plan, applied)

        grown = make_apps(6, prefix="grown")
        plan, applied = plan_then_apply(stack, lambda: [register(consul.url, app) for app in grown],
                                        lambda: all_passing(consul.url, 9))
        assert "  cabify: slots 8 -> 16" in plan and plan[0].startswith("runtime: "), plan
        assert f"runtime API: {plan[0].split()[1]} commands in " in applied, (plan, applied)

        branch = make_apps(1, prefix="branch")[0]
        plan, applied = plan_then_apply(
            stack,
            lambda: register(consul.url, branch, service="cabify-branch", Tags=[TAG],
                             Meta={"haproxy-sync-host": "branch.cabify.test"}),
            lambda: all_passing(consul.url, 1, service="cabify-branch"))
        assert plan[0].startswith("reload: "), plan
        assert applied.endswith(f"({plan[0].removeprefix('reload: ')})"), (plan, applied)
        assert "  routes: +1 -0 ~0" in plan

        stack.daemon.signal(signal.SIGHUP)  # settings re-read: the next apply owes a reload
        stack.daemon.wait_for_log("configuration and template re-read")
        stack.daemon.wait_for_log("applied ", timeout=WINDOW * 3,
                                  count=stack.daemon.log().count("applied ") + 1)
        late = make_apps(1, prefix="late")[0]
        plan, applied = plan_then_apply(stack, lambda: register(consul.url, late),
                                        lambda: all_passing(consul.url, 10))
        assert plan[0] == "reload: template or settings changed", plan
        assert applied.endswith("(template or settings changed)"), applied
