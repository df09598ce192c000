"""The scale benchmark's repeated cold start (bench/scale, --cold-repeat): the median and how it is shown.

Pure functions only: the benchmark itself is run by hand, but the figures it reports must be right.
"""

from __future__ import annotations

from bench.scale.measure import spread
from bench.scale.report import cold_cell, cold_samples, table, targets


def test_spread_median_min_max() -> None:
    assert spread([2.63, 2.2, 2.41]) == {"median": 2.41, "min": 2.2, "max": 2.63}
    assert spread([1.0, 2.0, 3.0, 10.0]) == {"median": 2.5, "min": 1.0, "max": 10.0}
    assert spread([1.23456]) == {"median": 1.235, "min": 1.235, "max": 1.235}


def test_spread_leaves_out_missing_samples() -> None:
    assert spread([None, 1.5, 2.5]) == {"median": 2.0, "min": 1.5, "max": 2.5}
    assert spread([None]) == {"median": None, "min": None, "max": None}
    assert spread([]) == {"median": None, "min": None, "max": None}


def _row(cold: dict[str, object], services: int = 1000) -> dict[str, object]:
    return {"tool": "haproxy-sync", "services": services, "instances": services * 10, "cold_start": cold}


def test_cold_cell_shows_the_range_only_for_repeats() -> None:
    repeated = _row({"seconds": 2.41, "min": 2.2, "max": 2.63, "samples": [2.63, 2.2, 2.41]})
    assert cold_samples(repeated) == 3
    assert cold_cell(repeated) == "2.41 (2.20-2.63)"
    single = _row({"seconds": 2.41, "min": 2.41, "max": 2.41, "samples": [2.41]})
    assert cold_cell(single) == "2.41"
    before = _row({"seconds": 2.414})  # a scale.json from before --cold-repeat
    assert cold_samples(before) == 1
    assert cold_cell(before) == "2.41"
    assert cold_cell(_row({})) == "-"


def test_table_and_target_use_the_median() -> None:
    row = _row({"seconds": 2.41, "min": 2.2, "max": 3.2, "samples": [3.2, 2.2, 2.41]})
    text = table([row])
    assert "cold start s, median (min-max)" in text.splitlines()[0]
    assert "| 2.41 (2.20-3.20) |" in text
    cold = targets([row])[0]
    assert cold["target"] == "cold start < 3 s (median of 3; min 2.20, max 3.20)"
    assert cold["value"] == 2.41
    assert cold["met"] is True
    single = targets([_row({"seconds": 3.1})])[0]
    assert single["target"] == "cold start < 3 s"
    assert single["met"] is False
    assert "cold start s |" in table([_row({"seconds": 3.1})]).splitlines()[0]
