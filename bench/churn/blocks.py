"""The paired (ABAB) layout of one mode's run and the statistics over it (pure).

Why blocks: the Python load generator is the bottleneck and its rate drifts over a run by more than
the effect being measured (one quiet run read 0.93 for the Runtime API and 1.15 for reload-only,
which does strictly more work). So the churn is not played in one window against one baseline;
it is cut into ``blocks`` churn blocks with a quiet block before the first, between each two and
after the last::

    | quiet 0 | churn 0 | quiet 1 | churn 1 | ... | churn N-1 | quiet N |

Each churn block is compared with the two quiet blocks around it, seconds away, so a slow drift
cancels block by block, and the N block ratios give a mean with a confidence interval instead of
one number whose noise is unknown.

The change sequence keeps its offsets in *churn time* (0 .. duration, as :func:`changes.make_plan`
built it); :meth:`Schedule.wall_offset` maps them onto the wall clock by inserting the quiet blocks.
Wall gaps between changes only ever grow, so the sequence's per-instance cooldown (in churn time)
still holds on the wall clock.

Each churn window runs ``guard`` seconds past its block's end: a reload or a convergence spilling
past the last change of a block is charged to the churn, not to the quiet block after it (whose
window starts after the guard).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

Window = tuple[float, float]

#: Student t, two-sided 95% (0.975 quantile), by degrees of freedom; beyond 30 see :func:`t975`.
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)
Z975 = 1.959964


@dataclass(frozen=True)
class Schedule:
    """Where the quiet and churn blocks sit, in seconds from the start of the first quiet block."""

    duration: float  # churn seconds in all: the change sequence's time axis
    blocks: int
    quiet: float  # seconds per quiet block
    guard: float  # seconds after each churn block still charged to it

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.duration <= 0 or self.quiet <= 0:
            raise ValueError("blocks, duration and quiet must be positive")
        if not 0 <= self.guard < self.quiet:
            raise ValueError(f"the guard ({self.guard:g} s) must be shorter than a quiet block ({self.quiet:g} s)")

    @property
    def churn_block(self) -> float:
        return self.duration / self.blocks

    @property
    def total(self) -> float:
        """From the start of the first quiet block to the end of the last one."""
        return (self.blocks + 1) * self.quiet + self.duration

    def block_of(self, offset: float) -> int:
        """The churn block a churn-time offset falls in (the last block keeps its end point)."""
        return min(self.blocks - 1, max(0, math.floor(offset / self.churn_block)))

    def churn_start(self, k: int) -> float:
        return self.quiet + k * (self.churn_block + self.quiet)

    def quiet_start(self, j: int) -> float:
        return j * (self.churn_block + self.quiet)

    def wall_offset(self, offset: float) -> float:
        """Churn time to wall time: ``quiet + k * (churn_block + quiet) + (offset - k * churn_block)``."""
        k = self.block_of(offset)
        return self.churn_start(k) + offset - k * self.churn_block

    def churn_windows(self) -> list[Window]:
        """Churn block k plus the guard after it."""
        return [(self.churn_start(k), self.churn_start(k) + self.churn_block + self.guard) for k in range(self.blocks)]

    def quiet_windows(self) -> list[Window]:
        """Quiet block j minus the guard charged to the churn block before it (the first has none)."""
        return [(self.quiet_start(j) + (self.guard if j else 0.0), self.quiet_start(j) + self.quiet)
                for j in range(self.blocks + 1)]


def shift(windows: Sequence[Window], origin: float) -> list[Window]:
    return [(origin + a, origin + b) for a, b in windows]


def count_in(times: Sequence[float], window: Window) -> int:
    """How many of the sorted ``times`` fall in ``[start, end)``."""
    return bisect.bisect_left(times, window[1]) - bisect.bisect_left(times, window[0])


def rate_in(times: Sequence[float], window: Window) -> float:
    """Events per second in a window of sorted times."""
    return count_in(times, window) / max(1e-9, window[1] - window[0])


def block_ratios(churn_rps: Sequence[float], quiet_rps: Sequence[float]) -> list[float | None]:
    """Per churn block k: its rate over the mean of the quiet blocks k (before) and k + 1 (after).

    None for a block whose neighbours served nothing (nothing to compare with).
    """
    if len(quiet_rps) != len(churn_rps) + 1:
        raise ValueError("need one more quiet block than churn blocks")
    ratios: list[float | None] = []
    for k, rps in enumerate(churn_rps):
        reference = (quiet_rps[k] + quiet_rps[k + 1]) / 2
        ratios.append(rps / reference if reference > 0 else None)
    return ratios


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t: the table up to 30, then a Cornish-Fisher expansion (< 1e-3 off)."""
    if df < 1:
        raise ValueError("degrees of freedom must be at least 1")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def mean_ci95(values: Sequence[float]) -> tuple[float | None, tuple[float, float] | None]:
    """Mean and Student-t 95% confidence interval of the mean; no interval for fewer than 2 values."""
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)


def verdict(mean: float | None, ci: tuple[float, float] | None, target: float) -> str:
    """"met" only when the interval's lower bound reaches the target; "met on the mean" when only the mean does."""
    if mean is None:
        return "not measured"
    if ci is not None and ci[0] >= target:
        return "met"
    if mean >= target:
        return "met on the mean"
    return "missed"


def interpolate(ts: Sequence[float], values: Sequence[float], t: float) -> float | None:
    """A cumulative counter's value at ``t``, linear between the samples around it; None outside them."""
    if not ts or t < ts[0] or t > ts[-1]:
        return None
    i = bisect.bisect_left(ts, t)
    if ts[i] == t or i == 0:
        return values[i]
    t0, t1 = ts[i - 1], ts[i]
    return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)


def cpu_percent(ts: Sequence[float], cumulative: Sequence[float], windows: Sequence[Window]) -> float | None:
    """CPU seconds spent in the windows over their length, in % of one core; None when not sampled."""
    spent = seconds = 0.0
    for start, end in windows:
        a, b = interpolate(ts, cumulative, start), interpolate(ts, cumulative, end)
        if a is None or b is None:
            continue
        spent += b - a
        seconds += end - start
    return 100.0 * spent / seconds if seconds > 0 else None
