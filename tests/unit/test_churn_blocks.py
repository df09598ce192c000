"""The churn benchmark's paired blocks (bench/churn/blocks.py): the schedule, the ratios, the interval.

Pure functions only: the benchmark itself is run by hand, but the statistics it reports must be right.
"""

from __future__ import annotations

import itertools
import math

import pytest

from bench.churn.blocks import (
    Schedule,
    block_ratios,
    count_in,
    cpu_percent,
    interpolate,
    mean_ci95,
    t975,
    verdict,
)
from bench.churn.changes import make_plan


def test_schedule_layout() -> None:
    s = Schedule(duration=60, blocks=6, quiet=5, guard=1)
    assert s.churn_block == 10
    assert s.total == 7 * 5 + 60
    assert [s.churn_start(k) for k in range(3)] == [5, 20, 35]
    assert s.churn_windows()[0] == (5, 16)
    assert s.churn_windows()[-1] == (80, 91)
    # the first quiet window follows the warm-up, the others start after the guard
    assert s.quiet_windows()[0] == (0, 5)
    assert s.quiet_windows()[1] == (16, 20)
    assert s.quiet_windows()[-1] == (91, 95)


def test_windows_do_not_overlap_and_alternate() -> None:
    s = Schedule(duration=8, blocks=2, quiet=2, guard=0.5)
    quiet, churn = s.quiet_windows(), s.churn_windows()
    timeline = [quiet[0], churn[0], quiet[1], churn[1], quiet[2]]
    for (_, end), (start, _) in itertools.pairwise(timeline):
        assert end <= start
    assert timeline[-1][1] == s.total


def test_wall_offset_maps_churn_time_into_blocks() -> None:
    s = Schedule(duration=60, blocks=6, quiet=5, guard=1)
    assert s.wall_offset(0.0) == 5
    assert s.wall_offset(9.5) == 14.5
    assert s.wall_offset(10.0) == 20  # first instant of block 1
    assert s.wall_offset(25.0) == 35 + 5  # block 2 starts at 35 s wall, 20 s churn
    assert s.block_of(60.0) == 5  # the end point stays in the last block
    assert s.wall_offset(60.0) == s.churn_start(5) + 10


def test_wall_offsets_stay_in_their_churn_block() -> None:
    s = Schedule(duration=60, blocks=6, quiet=5, guard=1)
    windows = s.churn_windows()
    for i in range(600):
        offset = i * 0.1
        start, end = windows[s.block_of(offset)]
        assert start <= s.wall_offset(offset) <= end - s.guard + 1e-9


def test_wall_gaps_only_grow_so_the_cooldown_holds() -> None:
    plan = make_plan(list(range(9000, 9024)), count=200, duration=60, seed=42)
    s = Schedule(duration=60, blocks=6, quiet=5, guard=1)
    changes = plan.changes
    for a, b in itertools.pairwise(changes):
        assert s.wall_offset(b.offset) - s.wall_offset(a.offset) >= b.offset - a.offset - 1e-9
    last: dict[str, float] = {}
    for change in changes:
        wall = s.wall_offset(change.offset)
        if change.instance in last:
            assert wall - last[change.instance] >= 2.5 - 1e-9
        last[change.instance] = wall


def test_schedule_rejects_a_guard_as_long_as_the_quiet_block() -> None:
    with pytest.raises(ValueError):
        Schedule(duration=60, blocks=6, quiet=1, guard=1)
    with pytest.raises(ValueError):
        Schedule(duration=60, blocks=0, quiet=5, guard=1)


def test_block_ratio_uses_the_quiet_blocks_on_both_sides() -> None:
    # a linear drift 100 -> 140 with no churn effect reads exactly 1 per block
    assert block_ratios([110, 130], [100, 120, 140]) == [1.0, 1.0]
    assert block_ratios([90], [100, 100]) == [0.9]
    assert block_ratios([50], [0, 0]) == [None]
    with pytest.raises(ValueError):
        block_ratios([1, 2], [1, 2])


def test_mean_ci95() -> None:
    mean, ci = mean_ci95([0.9, 1.0, 1.1])
    assert mean == pytest.approx(1.0)
    assert ci is not None
    half = 4.303 * 0.1 / math.sqrt(3)
    assert ci == pytest.approx((1.0 - half, 1.0 + half))
    assert mean_ci95([0.97]) == (0.97, None)
    assert mean_ci95([]) == (None, None)
    assert mean_ci95([1.0, 1.0, 1.0])[1] == (1.0, 1.0)


def test_t975_table_and_expansion_agree() -> None:
    assert t975(1) == 12.706
    assert t975(5) == 2.571
    assert t975(30) == 2.042
    assert t975(31) == pytest.approx(2.040, abs=1e-3)
    assert t975(60) == pytest.approx(2.000, abs=1e-3)
    assert t975(10_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)


def test_verdict() -> None:
    assert verdict(0.98, (0.96, 1.0), 0.95) == "met"
    assert verdict(0.97, (0.93, 1.01), 0.95) == "met on the mean"
    assert verdict(0.97, None, 0.95) == "met on the mean"
    assert verdict(0.93, (0.90, 0.96), 0.95) == "missed"
    assert verdict(None, None, 0.95) == "not measured"


def test_count_in_is_half_open() -> None:
    times = [0.0, 0.5, 1.0, 1.5, 2.0]
    assert count_in(times, (0.5, 1.5)) == 2
    assert count_in(times, (3.0, 4.0)) == 0


def test_cpu_percent_interpolates_cumulative_seconds() -> None:
    ts = [0.0, 1.0, 2.0, 3.0, 4.0]
    cumulative = [0.0, 0.5, 1.0, 1.1, 1.2]  # 50% for 2 s, then 10%
    assert interpolate(ts, cumulative, 0.5) == pytest.approx(0.25)
    assert interpolate(ts, cumulative, 5.0) is None
    assert cpu_percent(ts, cumulative, [(0.0, 2.0)]) == pytest.approx(50.0)
    assert cpu_percent(ts, cumulative, [(0.5, 1.5), (2.0, 4.0)]) == pytest.approx(100 * (0.5 + 0.2) / 3)
    assert cpu_percent(ts, cumulative, [(5.0, 6.0)]) is None
