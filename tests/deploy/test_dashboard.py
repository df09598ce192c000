"""The Grafana dashboard the monitoring role provisions (files/dashboards/haproxy-sync.json): its data
source is a variable (no hard-coded uid), it has `instance` and `backend` variables that every query
uses and keeps in its result, so that two edges are never added together, every metric it queries
is in a real scrape of haproxy-sync or HAProxy's exporter, and it has the panels operators page on."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import ANSIBLE_DIR, LiveScrapes
from .promql import Exposition, selectors

pytestmark = pytest.mark.deploy

DASHBOARD = ANSIBLE_DIR / "roles" / "monitoring" / "files" / "dashboards" / "haproxy-sync.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: Prometheus's own series for each target.
SYNTHETIC = frozenset({"up"})
#: Which label of a series names the backend: haproxy-sync's and HAProxy's own.
BACKEND_LABELS = ("backend", "proxy")
AGGREGATION = re.compile(r"\b(sum|min|max|avg|count|group|stddev|stdvar|topk|bottomk|quantile)\b\s*(by|without|\()")


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _variables() -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in _dashboard()["templating"]["list"]}


def _queries() -> list[tuple[str, str]]:
    """(panel title, expression) of every target of every panel."""
    return [(panel["title"], target["expr"]) for panel in _dashboard()["panels"] for target in panel["targets"]]


def _datasources(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasources(item)


def test_the_data_source_is_a_variable_everywhere() -> None:
    variable = _variables()["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    panels = _dashboard()["panels"]
    assert panels and all(panel["datasource"] == DATASOURCE for panel in panels)
    assert all(target["datasource"] == DATASOURCE for panel in panels for target in panel["targets"])
    found = list(_datasources(_dashboard()))
    assert found and all(ds == DATASOURCE for ds in found), "a hard-coded data source uid is left"


def test_instance_and_backend_variables() -> None:
    variables = _variables()
    for name in ("instance", "backend"):
        assert variables[name]["type"] == "query" and variables[name]["multi"] and variables[name]["includeAll"]
        assert variables[name]["datasource"] == DATASOURCE
    assert variables["instance"]["query"]["query"] == "label_values(haproxy_sync_build_info, instance)"
    assert 'instance=~"$instance"' in variables["backend"]["query"]["query"], "backends of the chosen edges"


@pytest.mark.parametrize(("title", "expr"), _queries())
def test_every_query_keeps_edges_apart(title: str, expr: str) -> None:
    """Every selector is filtered by $instance, and every aggregation keeps `instance`: with several
    edges chosen, each stays its own series instead of two edges' servers being added up."""
    found = selectors(expr)
    assert found, expr
    for selector in found:
        assert selector.matcher("instance") == ("=~", "$instance"), f"{title}: {selector.name} not by $instance"
    for match in AGGREGATION.finditer(expr):
        assert match.group(2) == "by", f"{title}: {match.group(1)} without `by (instance, ...)`: {expr}"
        clause = expr[match.end():].split(")", 1)[0]
        assert "instance" in re.split(r"[\s,(]+", clause), f"{title}: {match.group(1)} drops instance: {expr}"


@pytest.mark.runs_haproxy
def test_every_query_names_exported_series_and_filters_by_backend(live_scrapes: LiveScrapes) -> None:
    """Each metric of each query (and of the variables) is in a real scrape, haproxy_* but haproxy_sync_*
    from HAProxy's exporter as the role scrapes it; a series that carries a backend label is filtered by
    $backend, so the variable reaches every panel where it means something."""
    sync, exporter = Exposition.parse(live_scrapes.haproxy_sync), Exposition.parse(live_scrapes.haproxy)
    variables = [("variable " + name, re.fullmatch(r"label_values\((.+), *\w+\)", query).group(1))
                 for name in ("instance", "backend") if (query := _variables()[name]["query"]["query"])]
    problems = []
    for title, expr in [*_queries(), *variables]:
        for selector in selectors(expr):
            if selector.name in SYNTHETIC:
                continue
            is_haproxys = selector.name.startswith("haproxy_") and not selector.name.startswith("haproxy_sync_")
            source = exporter if is_haproxys else sync
            if selector.name not in source.names:
                problems.append(f"{title}: {selector.name} is not exported")
                continue
            if selector.matchers and not source.matches(selector, ignore=frozenset({"job", "instance"})):
                problems.append(f"{title}: no {selector.name} series has {selector.matchers}")
            labels = {label for sample in source.samples.get(selector.name, []) for label in sample}
            for label in BACKEND_LABELS:
                if label in labels and not title.startswith("variable ") and \
                        selector.matcher(label) != ("=~", "$backend"):
                    problems.append(f"{title}: {selector.name} has {label} but is not filtered by $backend")
    assert problems == []


def test_the_panels_operators_page_on_are_there() -> None:
    """Readiness, data age, apply and reload failures (the last-reload gauge too), guard holds and FDs."""
    used = {selector.name for _, expr in _queries() for selector in selectors(expr)}
    assert {
        "haproxy_sync_ready", "haproxy_sync_consul_data_age_seconds", "haproxy_sync_apply_failures_total",
        "haproxy_sync_reload_failures_total", "haproxy_sync_config_last_reload_successful",
        "haproxy_sync_guard_total", "process_open_fds", "process_max_fds", "haproxy_backend_active_servers",
    } <= used


def test_panels_do_not_overlap_and_fit_the_grid() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in _dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]
    ids = [panel["id"] for panel in _dashboard()["panels"]]
    assert len(ids) == len(set(ids))
