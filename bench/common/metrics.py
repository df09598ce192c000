"""The one reader of haproxy-sync's /metrics: prometheus_client's own parser, not a hand-written one.

Series are keyed ``name{label=value,...}`` with the labels sorted (``name`` alone without labels), so
a benchmark can diff two scrapes and a report can print them. Counters keep their ``_total`` name.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator

from prometheus_client.parser import text_string_to_metric_families


def parse_metrics(text: str, wanted: Iterable[str] | None = None) -> dict[str, float]:
    """Every sample of an exposition (or only those whose name is in ``wanted``), as floats."""
    keep = set(wanted) if wanted is not None else None
    series: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if keep is not None and sample.name not in keep:
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            series[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return series


def scrape(metrics_url: str, wanted: Iterable[str] | None = None, timeout: float = 10.0) -> dict[str, float]:
    """``<metrics_url>/metrics`` parsed; empty when it does not answer (a busy or stopped daemon)."""
    try:
        with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=timeout) as response:
            return parse_metrics(response.read().decode(errors="replace"), wanted)
    except (OSError, ValueError, urllib.error.URLError):
        return {}


def samples(series: dict[str, float], name: str) -> Iterator[tuple[dict[str, str], float]]:
    """(labels, value) of every sample of ``name`` in a parsed scrape."""
    for key, value in series.items():
        base, _, rest = key.partition("{")
        if base == name:
            yield dict(part.split("=", 1) for part in rest.rstrip("}").split(",") if part), value


def total(series: dict[str, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum((value for have, value in samples(series, name) if all(have.get(k) == v for k, v in labels.items())),
               0.0)
