"""Scraping both real ``/metrics`` endpoints once a second, as Prometheus would, into a :class:`~.promql.Store`.

Why a scraper of our own: there is no Prometheus here. What matters for honest panels is what
Prometheus would store: the samples of each scrape, the ``job`` and ``instance`` labels it adds
(named as in ``ansible/roles/monitoring/templates/prometheus.yml.j2``), the synthetic ``up`` series
(1 when the scrape worked, 0 when not), and staleness (a series missing from a scrape ends there).

Only the series the dashboard's queries name are kept sample by sample (everything HAProxy exports,
every second, would be megabytes for nothing); the full list of series names each endpoint exported
is kept too, so a query naming a series nobody exports can be reported exactly.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .promql import Labels, Store


@dataclass(frozen=True)
class Target:
    """One scrape target: ``job`` as in the Ansible Prometheus config, ``instance`` host:port."""

    job: str
    instance: str

    @property
    def url(self) -> str:
        return f"http://{self.instance}/metrics"


_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "summary": ("_count", "_sum")}


def parse_exposition(text: str, target: Target) -> tuple[dict[Labels, float], set[str]]:
    """Every sample of one scrape, labelled with the target's ``job`` and ``instance`` as Prometheus does,
    and the series names declared (``# TYPE``) by families that have no sample yet.

    The second part matters for the report: a labelled counter of prometheus_client (such as
    ``haproxy_sync_consul_errors_total{service,kind}``) has no series at all until it first counts,
    which is not the same as a name nobody exports.
    """
    samples: dict[Labels, float] = {}
    declared: set[str] = set()
    for family in text_string_to_metric_families(text):
        if not family.samples:
            declared.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        for sample in family.samples:
            labels = {**sample.labels, "__name__": sample.name, "job": target.job, "instance": target.instance}
            samples[frozenset(labels.items())] = float(sample.value)
    return samples, declared


@dataclass
class Scraper:
    """Scrapes every target each ``interval`` seconds on a thread until :meth:`stop`.

    Each round starts both scrapes at once and stamps them with the round's start time (Prometheus
    stamps a sample with its scrape's start). ``keep`` are the metric names whose samples are kept.
    """

    targets: list[Target]
    keep: set[str]
    interval: float = 1.0
    timeout: float = 0.9
    times: list[float] = field(default_factory=list)
    series: dict[Labels, list[float | None]] = field(default_factory=dict)
    exported: dict[str, set[str]] = field(default_factory=dict)  # job -> every metric name seen
    declared_only: dict[str, set[str]] = field(default_factory=dict)  # job -> names declared, never sampled
    failures: dict[str, int] = field(default_factory=dict)  # job -> failed scrapes
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def store(self) -> Store:
        """A copy of everything scraped so far."""
        with self._lock:
            return Store(list(self.times), {labels: list(values) for labels, values in self.series.items()})

    def _fetch(self, target: Target) -> tuple[dict[Labels, float], set[str]] | None:
        try:
            with urllib.request.urlopen(target.url, timeout=self.timeout) as response:
                text = response.read().decode()
        except OSError:
            return None
        try:
            return parse_exposition(text, target)
        except ValueError:
            return None

    def _run(self) -> None:
        next_round = time.time()
        with ThreadPoolExecutor(len(self.targets)) as pool:
            while not self._stop.is_set():
                started = time.time()
                results = list(pool.map(self._fetch, self.targets))
                self._record(started, zip(self.targets, results, strict=True))
                next_round += self.interval
                delay = next_round - time.time()
                if delay < 0:  # a slow round: skip ahead rather than scrape in a burst
                    next_round = time.time()
                    delay = 0
                self._stop.wait(delay)

    def _record(self, when: float,
                results: Iterable[tuple[Target, tuple[dict[Labels, float], set[str]] | None]]) -> None:
        with self._lock:
            index = len(self.times)
            self.times.append(when)
            for values in self.series.values():
                values.append(None)  # stale unless this round has it
            for target, result in results:
                up = frozenset({"__name__": "up", "job": target.job, "instance": target.instance}.items())
                self._put(up, index, 0.0 if result is None else 1.0)
                if result is None:
                    self.failures[target.job] = self.failures.get(target.job, 0) + 1
                    continue
                samples, declared = result
                self.declared_only.setdefault(target.job, set()).update(declared)
                names = self.exported.setdefault(target.job, set())
                for labels, value in samples.items():
                    name = dict(labels)["__name__"]
                    names.add(name)
                    if name in self.keep and not math.isnan(value):
                        self._put(labels, index, value)

    def _put(self, labels: Labels, index: int, value: float) -> None:
        values = self.series.get(labels)
        if values is None:
            values = self.series[labels] = [None] * (index + 1)
        values[index] = value
