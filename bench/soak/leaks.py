"""Where memory goes: tracemalloc snapshots and object counts of a traced run, compared.

Why three snapshots (end of warm-up, middle, end) and not two: memory that grows once (a cache
filling, a pool reaching its size) grows in the first half only; a leak grows in both halves by
about the same amount. Lines that grew steadily (in both halves, by comparable amounts) are listed
first; a leak of any size shows up there, while the net change says how big it is.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

_IGNORE = (tracemalloc.__file__, "<frozen importlib._bootstrap>", "<frozen importlib._bootstrap_external>",
           "<unknown>", "*/linecache.py", "*/bench/soak/traced.py")


def _load(base: Path) -> tracemalloc.Snapshot:
    snapshot = tracemalloc.Snapshot.load(f"{base}.tracemalloc")
    return snapshot.filter_traces([tracemalloc.Filter(False, pattern) for pattern in _IGNORE])


def _where(stat: tracemalloc.StatisticDiff) -> str:
    frame = stat.traceback[0]
    return f"{frame.filename.split('site-packages/')[-1].replace(str(Path.cwd()) + '/', '')}:{frame.lineno}"


def _line_growth(old: tracemalloc.Snapshot, new: tracemalloc.Snapshot) -> dict[str, tuple[int, int]]:
    """Allocation site -> (bytes grown, blocks grown), grouped by the allocating line."""
    return {_where(stat): (stat.size_diff, stat.count_diff) for stat in new.compare_to(old, "lineno")}


def _types(base: Path) -> dict[str, int]:
    data: dict[str, Any] = json.loads(base.with_suffix(".json").read_text())
    return {str(k): int(v) for k, v in data["types"].items()}


def _gc(base: Path) -> list[dict[str, int]]:
    data: dict[str, Any] = json.loads(base.with_suffix(".json").read_text())
    return list(data.get("gc_stats") or [])


def compare(dumps: list[Path], top: int = 12) -> dict[str, Any]:
    """Growth between the first and last dump, split at the middle one; a summary for the table."""
    if len(dumps) < 2:
        return {"summary": ["fewer than two tracemalloc dumps; nothing to compare"]}
    first, middle, last = dumps[0], dumps[len(dumps) // 2], dumps[-1]
    snaps = {path: _load(path) for path in {first, middle, last}}
    overall = _line_growth(snaps[first], snaps[last])
    early = _line_growth(snaps[first], snaps[middle]) if middle not in (first, last) else overall
    late = _line_growth(snaps[middle], snaps[last]) if middle not in (first, last) else overall
    def steady(site: str) -> bool:
        """Grew in each half, and by comparable amounts (the smaller at least a third of the larger):
        a one-off allocation in one half plus a few bytes of noise in the other is not a leak."""
        first_half, second_half = early.get(site, (0, 0))[0], late.get(site, (0, 0))[0]
        return first_half > 0 and second_half > 0 and 3 * min(first_half, second_half) >= max(first_half, second_half)

    both = sorted((site for site, (size, _) in overall.items() if size > 0 and steady(site)),
                  key=lambda site: -overall[site][0])
    growing = sorted(((site, size, count) for site, (size, count) in overall.items() if size > 0),
                     key=lambda item: -item[1])[:top]
    total = sum(size for size, _ in overall.values())
    types_first, types_mid, types_last = _types(first), _types(middle), _types(last)
    type_growth = sorted(((name, types_last.get(name, 0) - types_first.get(name, 0),
                           types_mid.get(name, 0) - types_first.get(name, 0))
                          for name in set(types_first) | set(types_last)), key=lambda item: -item[1])
    type_growth = [item for item in type_growth if item[1] > 0][:top]
    summary = [f"traced memory net change first -> last dump: {total / 1024:+.1f} KiB"]
    steady_lines = [f"  grew steadily (both halves): {site} {overall[site][0] / 1024:+.1f} KiB "
                    f"({overall[site][1]:+d} blocks)" for site in both[:top]]
    summary += steady_lines or ["  no allocation site grew steadily in both halves"]
    summary += [f"  objects: {name} {grown:+d} (first half {half:+d})" for name, grown, half in type_growth[:6]]
    gc_first, gc_last = _gc(first), _gc(last)
    if gc_first and gc_last:
        cyclic = [b["collected"] - a["collected"] for a, b in zip(gc_first, gc_last, strict=True)]
        runs = [b["collections"] - a["collections"] for a, b in zip(gc_first, gc_last, strict=True)]
        summary.append(f"  cyclic garbage collected between the dumps, generations 0/1/2: "
                       f"{'/'.join(map(str, cyclic))} objects in {'/'.join(map(str, runs))} collections")
    return {
        "dumps": [str(path) for path in dumps],
        "net_bytes": total,
        "grew_in_both_halves": [{"site": site, "bytes": overall[site][0], "blocks": overall[site][1],
                                 "bytes_first_half": early.get(site, (0, 0))[0],
                                 "bytes_second_half": late.get(site, (0, 0))[0]} for site in both[:top * 2]],
        "top_growth": [{"site": site, "bytes": size, "blocks": count} for site, size, count in growing],
        "gc_stats": {"first": _gc(first), "last": _gc(last)},
        "object_growth": [{"type": name, "count": grown, "first_half": half} for name, grown, half in type_growth],
        "summary": summary,
    }


def attach_traced(samples: list[dict[str, Any]], log_path: Path, started: float) -> None:
    """Add ``traced_mb`` (Python's traced memory at the sample) and ``traced_peak_mb`` (its peak since
    the previous sample) to each sample, from the traced daemon's ``--memory-log``."""
    try:
        rows = [line.split() for line in log_path.read_text().splitlines()]
    except OSError:
        return
    points = [(float(t) - started, int(now), int(peak)) for t, now, peak in (r for r in rows if len(r) == 3)]
    previous_t = float("-inf")
    for sample in samples:
        inside = [p for p in points if previous_t < p[0] <= sample["t"]]
        before = [p for p in points if p[0] <= sample["t"]]
        if before:
            sample["traced_mb"] = round(before[-1][1] / 1024 / 1024, 4)
        if inside:
            sample["traced_peak_mb"] = round(max(p[2] for p in inside) / 1024 / 1024, 4)
        previous_t = sample["t"]


def explain_steps(samples: list[dict[str, Any]], jumps: list[dict[str, float]], dump_t: list[float]) -> list[str]:
    """For each RSS step: was there a peak of Python allocations in the same interval? Steps right
    after a snapshot (which lifts RSS itself) are named as such."""
    peaks = sorted(s["traced_peak_mb"] for s in samples if "traced_peak_mb" in s)
    if not peaks:
        return []
    typical = peaks[len(peaks) // 2]
    by_t = {round(s["t"], 1): s for s in samples}
    lines = []
    for jump in jumps:
        sample = by_t.get(jump["t"], {})
        if any(0 <= jump["t"] - t <= 30 for t in dump_t):
            lines.append(f"  RSS step {jump['mb']:+.2f} MB at {jump['t'] / 60:.1f} min: right after a snapshot")
            continue
        peak = sample.get("traced_peak_mb")
        lines.append(f"  RSS step {jump['mb']:+.2f} MB at {jump['t'] / 60:.1f} min: traced peak in that interval "
                     f"{peak if peak is not None else '?'} MB (median interval {typical:.2f} MB)")
    return lines
