"""A change after a quiet period is applied at once; the changes that follow it fold (``sync.first_change_at_once``).

The daemon runs with a long quiescence (``wait_min = wait_max = WINDOW``) so that "at once" and
"after the window" read apart on a busy host: a lone deregistration leaves HAProxy's rotation well
inside the window, the two that follow it within the window leave together, in one apply, after it.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from tests.helpers import Stack, consul_put, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")

WINDOW = 3.0
QUIESCENCE = (f"{WINDOW:g}s", f"{WINDOW:g}s")


def leave(stack: Stack, index: int) -> None:
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[index].instance_id}")


def applies(stack: Stack) -> int:
    return stack.daemon.log().count("applied ")


def test_a_change_after_quiet_goes_at_once_and_the_ones_after_it_fold(tmp_path: Path, consul, make_apps) -> None:
    with ExitStack() as exits:
        # 8 instances: 3 leaving stays within the guard's max_drop, which would hold the burst otherwise
        stack = Stack(tmp_path, consul, make_apps(8), exits, quiescence=QUIESCENCE, extra='drain_timeout = "0s"\n')
        time.sleep(WINDOW + 0.5)  # quiet: the start's reads are older than the window
        before = applies(stack)
        started = time.monotonic()
        leave(stack, 0)
        wait_until(lambda: stack.apps[0].instance_id not in stack.serving(), WINDOW, what="the lone change applied")
        at_once = time.monotonic() - started
        assert at_once < WINDOW * 0.7, f"a lone change after quiet waited {at_once:.2f}s of a {WINDOW:g}s window"
        wait_until(lambda: applies(stack) == before + 1, 2, what="its apply line")

        leave(stack, 1)  # within the window of the change before: a burst, folded
        leave(stack, 2)
        time.sleep(WINDOW / 3)
        assert {stack.apps[1].instance_id, stack.apps[2].instance_id} <= stack.serving(), (
            "a change that follows another within wait_min waits for quiet")
        rest = {app.instance_id for app in stack.apps[3:]}
        wait_until(lambda: stack.serving() == rest, WINDOW * 3, what="the burst applied")
        time.sleep(0.3)
        assert applies(stack) == before + 2, stack.daemon.log()[-2000:]


def test_first_change_at_once_off_keeps_every_change_waiting_for_quiet(tmp_path: Path, consul, make_apps) -> None:
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, quiescence=QUIESCENCE,
                      extra='drain_timeout = "0s"\nfirst_change_at_once = false\n')
        time.sleep(WINDOW + 0.5)
        leave(stack, 0)
        time.sleep(WINDOW / 3)
        assert stack.apps[0].instance_id in stack.serving(), "with the setting off, a lone change waits wait_min"
        wait_until(lambda: stack.apps[0].instance_id not in stack.serving(), WINDOW * 3, what="the change applied")
