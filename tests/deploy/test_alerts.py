"""The alert rules the monitoring role installs (ansible/roles/monitoring/files/prometheus/): promtool
checks them and runs their unit tests (alerts_test.yml), every rule's test is shown to fail when the
rule stops firing, every rule has its runbook paragraph in docs/alerts.md, and every metric a rule
names is looked up in a real scrape of haproxy-sync and of HAProxy's exporter, so that the rules cannot
drift from what the code exports. haproxy-sync's own exposition passes `promtool check metrics`."""

from __future__ import annotations

import re
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, operator_command, wait_until

from .conftest import REPO, LiveScrapes, run
from .promql import Exposition, Selector, selectors

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

RULES = REPO / "ansible" / "roles" / "monitoring" / "files" / "prometheus" / "haproxy-sync.rules.yml"
RULE_TESTS = REPO / "tests" / "deploy" / "alerts_test.yml"
RUNBOOK = REPO / "docs" / "alerts.md"
RUNBOOK_BASE = "https://haproxy-sync.invalid/docs/alerts.md#"
#: Labels Prometheus adds to every series of a target; no exporter has them.
TARGET_LABELS = frozenset({"job", "instance"})
#: Series Prometheus makes itself for each target.
SYNTHETIC = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _promtool(promtool: str, *args: str, cwd: Path | None = None) -> tuple[int, str]:
    proc = run([promtool, *args], timeout=60, cwd=cwd)
    return proc.returncode, proc.stdout + proc.stderr


def test_the_promql_reader_finds_selectors_not_functions_or_label_lists() -> None:
    """The reader the drift tests rely on: it must see every metric and nothing else."""
    expr = ('sum without (outcome) (rate(a_total{x="1",y=~"p|q"}[5m])) - on (job, instance) group_left(z) '
            'histogram_quantile(0.9, sum by (le) (b_bucket)) > 1e3 and time() - c offset 5m > bool 0.8')
    assert selectors(expr) == [
        Selector("a_total", (("x", "=", "1"), ("y", "=~", "p|q"))), Selector("b_bucket", ()), Selector("c", ())]
    assert [s.name for s in selectors('up{job="a,b}"} == 0 or vector(1)')] == ["up"]
    with pytest.raises(ValueError):
        selectors('{__name__="x"}')


def test_promtool_check_rules(promtool: str) -> None:
    code, out = _promtool(promtool, "check", "rules", str(RULES))
    assert code == 0, out
    assert f"SUCCESS: {len(_rules())} rules found" in out, out
    assert len(_rules()) == 11, "the 11 alerts of issue #17 point 1"


def test_promtool_test_rules(promtool: str) -> None:
    code, out = _promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert code == 0, out
    assert "SUCCESS" in out, out


def test_every_rule_has_a_firing_and_a_quiet_case() -> None:
    """A rule tested only where it fires would pass if it fired always; only where quiet, if never."""
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    assert {name: kinds for name, kinds in cases.items() if kinds != {True, False}} == {}
    assert set(cases) == {rule["alert"] for rule in _rules()}


@pytest.mark.parametrize("alert", [rule["alert"] for rule in _rules()])
def test_a_rule_that_never_fires_fails_its_test(alert: str, promtool: str, tmp_path: Path) -> None:
    """Each rule's expression replaced by one that is never true: promtool test must fail on it."""
    document = yaml.safe_load(RULES.read_text())
    for group in document["groups"]:
        for rule in group["rules"]:
            if rule["alert"] == alert:
                rule["expr"] = "vector(1) < 0"
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(document))
    tests = yaml.safe_load(RULE_TESTS.read_text())
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    code, out = _promtool(promtool, "test", "rules", "tests.yml", cwd=tmp_path)
    assert code != 0, out
    assert f"alertname: {alert}," in out, out


def test_every_rule_has_a_runbook_paragraph_and_says_what_it_is() -> None:
    headings = {_anchor(line[3:]) for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}
    for rule in _rules():
        annotations = rule["annotations"]
        assert annotations["runbook_url"] == RUNBOOK_BASE + rule["alert"].lower(), rule["alert"]
        assert rule["alert"].lower() in headings, f"no '## {rule['alert']}' in docs/alerts.md"
        assert annotations["summary"] and annotations["description"], rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert "for" in rule, f"{rule['alert']} would fire on a single evaluation"


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, spaces to dashes, punctuation dropped."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def _rule_selectors() -> list[tuple[str, Selector]]:
    return [(rule["alert"], selector) for rule in _rules() for selector in selectors(rule["expr"])]


@pytest.mark.runs_haproxy
def test_every_metric_a_rule_names_is_exported(live_scrapes: LiveScrapes) -> None:
    """Each selector of each rule matches a series of a real scrape: haproxy_* (but haproxy_sync_*)
    from HAProxy's exporter, the rest from haproxy-sync; label values the rule filters on must exist."""
    sync, exporter = Exposition.parse(live_scrapes.haproxy_sync), Exposition.parse(live_scrapes.haproxy)
    missing = []
    for alert, selector in _rule_selectors():
        if selector.name in SYNTHETIC:
            continue
        source = exporter if _is_haproxys(selector.name) else sync
        if selector.name not in source.names:
            missing.append(f"{alert}: {selector.name} is not exported")
        elif selector.matchers and not source.matches(selector, ignore=TARGET_LABELS):
            missing.append(f"{alert}: no {selector.name} series has {selector.matchers}")
    assert missing == []


def _is_haproxys(name: str) -> bool:
    return name.startswith("haproxy_") and not name.startswith("haproxy_sync_")


@pytest.mark.runs_haproxy
def test_haproxy_sync_exposition_passes_promtool_check_metrics(live_scrapes: LiveScrapes, promtool: str) -> None:
    proc = run([promtool, "check", "metrics"], timeout=60, input=live_scrapes.haproxy_sync)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout + proc.stderr == "", "promtool's lint has complaints"
    assert "haproxy_sync_ready" in live_scrapes.haproxy_sync


@pytest.mark.runs_haproxy
def test_haproxy_counts_drained_servers_as_not_active(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    """HaproxyBackendNoServerUp reads haproxy_backend_active_servers: on the real exporter it counts the
    servers taking traffic, so a backend whose servers are all up but at weight 0 (drained) is 0,
    while haproxy_server_status still calls them UP."""
    if haproxy.find_binary("haproxy") is None:
        pytest.skip("HAProxy is not installed")
    with ExitStack() as exits:
        stack = Stack(tmp_path, consul, make_apps(2), exits, extra="reconcile_interval = \"0s\"\n")
        url = f"http://127.0.0.1:{stack.layout.stats_port}/metrics?no-maint="
        assert _active(url) == 2
        held = [s.name for s in stack.layout.servers() if not s.in_maintenance]
        for name in held:
            operator_command(stack.layout.stats_socket, f"set server cabify/{name} weight 0")
        wait_until(lambda: _active(url) == 0, 5, what="active_servers 0 with every server at weight 0")
        body = _scrape(url)
        for name in held:
            assert f'haproxy_server_status{{proxy="cabify",server="{name}",state="UP"}} 1' in body
        operator_command(stack.layout.stats_socket, f"set server cabify/{held[0]} weight 1")
        wait_until(lambda: _active(url) == 1, 5, what="active_servers back to 1")


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def _active(url: str) -> int:
    match = re.search(r'^haproxy_backend_active_servers\{proxy="cabify"\} (\S+)$', _scrape(url), re.M)
    assert match, "no haproxy_backend_active_servers for cabify"
    return int(float(match.group(1)))
