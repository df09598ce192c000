"""Growth against noise: a least-squares line through each series after the warm-up.

Why a fitted slope and not "last minus first": two samples carry all the noise of two moments (an
allocator arena kept or released, a thread pool that just grew); the slope of a line through every
sample after the warm-up uses all of them. It is reported with

* the residual standard deviation (sigma): how far samples scatter around the line, the noise floor;
* a 95 % interval of the slope (±1.96 standard errors). It assumes independent residuals; memory
  samples are correlated in time, so the true interval is wider. Read it as a lower bound of what
  the run can tell apart, and run longer (an hour) when it is wider than the target;
* the change of the median between the first and the last third of the window, a second estimate
  that a single outlier cannot move.

Pure Python (no numpy), so the numbers do not depend on the plotting extra being installed.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

RSS_TARGET_MB_PER_HOUR = 1.0
Z95 = 1.96


@dataclass(frozen=True)
class Fit:
    """A line ``value = intercept + slope * hours`` through ``n`` samples, and how well it fits."""

    n: int
    hours: float  # length of the fitted window
    slope_per_hour: float
    intercept: float  # at the start of the window
    residual_std: float  # sigma of the samples around the line
    slope_ci95: float  # half-width of the 95 % interval of the slope (independent residuals)
    first: float
    last: float
    minimum: float
    maximum: float
    median_first_third: float
    median_last_third: float

    @property
    def change_over_window(self) -> float:
        return self.slope_per_hour * self.hours

    @property
    def median_change(self) -> float:
        return self.median_last_third - self.median_first_third

    def as_dict(self) -> dict[str, Any]:
        data = {key: round(value, 6) if isinstance(value, float) else value for key, value in asdict(self).items()}
        data["change_over_window"] = round(self.change_over_window, 6)
        data["median_change"] = round(self.median_change, 6)
        return data


def fit(times_s: Sequence[float], values: Sequence[float]) -> Fit:
    """Least-squares line through (time in seconds, value); the slope is returned per hour."""
    n = len(values)
    if n != len(times_s) or n < 3:
        raise ValueError(f"need at least 3 samples to fit a line, got {n}")
    hours = [(t - times_s[0]) / 3600.0 for t in times_s]
    mean_t = statistics.fmean(hours)
    mean_v = statistics.fmean(values)
    sxx = sum((h - mean_t) ** 2 for h in hours)
    if sxx == 0:
        raise ValueError("all samples at the same time")
    slope = sum((h - mean_t) * (v - mean_v) for h, v in zip(hours, values, strict=True)) / sxx
    intercept = mean_v - slope * mean_t
    residuals = [v - (intercept + slope * h) for h, v in zip(hours, values, strict=True)]
    residual_std = math.sqrt(sum(r * r for r in residuals) / (n - 2))
    third = max(1, n // 3)
    return Fit(
        n=n, hours=hours[-1], slope_per_hour=slope, intercept=intercept, residual_std=residual_std,
        slope_ci95=Z95 * residual_std / math.sqrt(sxx), first=values[0], last=values[-1],
        minimum=min(values), maximum=max(values),
        median_first_third=statistics.median(values[:third]), median_last_third=statistics.median(values[-third:]),
    )


def rss_verdict(rss: Fit, target: float = RSS_TARGET_MB_PER_HOUR) -> str:
    """``pass`` when even the upper end of the slope's interval is under the target, ``fail`` when
    even its lower end is over it, ``inconclusive`` when the noise straddles the target."""
    if rss.slope_per_hour + rss.slope_ci95 < target:
        return "pass"
    if rss.slope_per_hour - rss.slope_ci95 > target:
        return "fail"
    return "inconclusive"


def fd_verdict(fds: Fit) -> str:
    """``flat`` unless descriptors grow both by the fit (interval above zero, at least one descriptor
    over the window) and by the medians (the last third holds more than the first). A descriptor
    open for a moment at one sample (a check subprocess, a socket to HAProxy) moves neither much."""
    fitted_growth = fds.slope_per_hour - fds.slope_ci95 > 0 and fds.change_over_window >= 1.0
    if fitted_growth and fds.median_change >= 1.0:
        return "growing"
    return "flat"


STEP_MB = 0.25  # a rise of RSS between two samples this large is a step, not creep


def steps(samples: Sequence[dict[str, Any]], key: str = "rss_mb") -> list[dict[str, float]]:
    """Rises of at least :data:`STEP_MB` between two consecutive samples.

    Why: allocator arenas are grabbed whole, so RSS often rises in steps (a new arena kept by one
    long-lived object) rather than in a slope. A line through a step reports a rate the process does
    not have between steps; listing the steps separately lets a reader tell one event from creep.
    """
    return [{"t": round(b["t"], 1), "mb": round(float(b[key]) - float(a[key]), 3)}
            for a, b in itertools.pairwise(samples) if float(b[key]) - float(a[key]) >= STEP_MB]


def window(samples: Sequence[dict[str, Any]], warmup_s: float) -> list[dict[str, Any]]:
    """The samples after the warm-up, which the fits use."""
    return [s for s in samples if s["t"] >= warmup_s]


def analyse(samples: Sequence[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Fits of RSS, USS, descriptors and threads after the warm-up, and the verdicts."""
    kept = window(samples, warmup_s)
    if len(kept) < 3:
        raise ValueError(f"only {len(kept)} samples after a {warmup_s:g}s warm-up; run longer or sample more often")
    times = [s["t"] for s in kept]
    keys = ("rss_mb", "uss_mb", "heap_mb", "anon_mb", "file_mb", "fds", "threads")
    fits = {key: fit(times, [float(s.get(key, 0.0)) for s in kept]) for key in keys}
    half = kept[len(kept) // 2:]
    late = fit([s["t"] for s in half], [float(s["rss_mb"]) for s in half]) if len(half) >= 3 else None
    slowing = bool(late and fits["rss_mb"].slope_per_hour > 0
                   and late.slope_per_hour < 0.5 * fits["rss_mb"].slope_per_hour)
    jumps = steps(kept)
    rss_fit = fits["rss_mb"]
    creep = (rss_fit.last - rss_fit.first - sum(j["mb"] for j in jumps)) / rss_fit.hours if rss_fit.hours else 0.0
    rss = rss_verdict(rss_fit)
    if rss == "fail" and slowing:
        # Growth that halves within the window is the tail of the warm-up (or hides a smaller steady
        # leak): either way this run cannot tell, and a longer one can.
        rss = "inconclusive: still settling"
    return {
        "warmup_seconds": warmup_s,
        "samples_fitted": len(kept),
        "fits": {key: value.as_dict() for key, value in fits.items()},
        # The same fit over the second half of the window only: much less than the whole window's
        # slope means growth is slowing down (the tail of the warm-up), not a steady leak.
        "rss_second_half": late.as_dict() if late else None,
        "rss_slowing": slowing,
        "rss_steps": jumps,
        "rss_creep_per_hour": round(creep, 4),  # last - first - steps, per hour: growth between the steps
        "verdicts": {
            "rss": rss,
            "uss": rss_verdict(fits["uss_mb"]),
            "fds": fd_verdict(fits["fds"]),
            "threads": fd_verdict(fits["threads"]),
        },
        "rss_target_mb_per_hour": RSS_TARGET_MB_PER_HOUR,
    }
