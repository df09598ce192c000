"""Bursts: which change opens a burst (applied at once) and which joins one (settles)."""

from __future__ import annotations

from haproxy_sync.bursts import Bursts

QUIET = 0.010


def test_the_first_change_ever_opens_a_burst() -> None:
    bursts = Bursts()
    bursts.seen(100.0, QUIET)
    assert bursts.opens


def test_a_change_while_another_is_pending_joins_it() -> None:
    bursts = Bursts()
    bursts.seen(100.0, QUIET)
    bursts.seen(100.5, QUIET)  # long after, yet the first is not taken yet: both settle together
    assert not bursts.opens


def test_a_change_soon_after_the_last_one_joins_its_burst_even_once_that_was_applied() -> None:
    bursts = Bursts()
    bursts.seen(100.0, QUIET)
    bursts.taken()
    bursts.seen(100.004, QUIET)
    assert not bursts.opens


def test_a_change_after_quiet_opens_the_next_burst() -> None:
    bursts = Bursts()
    bursts.seen(100.0, QUIET)
    bursts.taken()
    bursts.seen(100.004, QUIET)
    bursts.taken()
    bursts.seen(100.004 + QUIET, QUIET)
    assert bursts.opens


def test_taken_clears_what_was_pending() -> None:
    bursts = Bursts()
    bursts.seen(100.0, QUIET)
    bursts.taken()
    assert not bursts.opens and not bursts.pending
