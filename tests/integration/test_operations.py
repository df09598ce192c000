"""Operations: metrics from a real run, /health and /ready, `status`, the systemd unit."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

import haproxy_sync
from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from haproxy_sync.reasons import FailureStage, ReloadFailure
from tests.helpers import Stack, cli, consul_put, haproxy_version, http_get, operator_command, register, wait_until

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


@pytest.fixture
def stack(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Stack]:
    with ExitStack() as exits:
        # The guard would (rightly) hold the last removal of the metrics test; it has tests of its own.
        yield Stack(tmp_path, consul, make_apps(3), exits, service_options="guard = false\n")


def test_metrics_count_what_the_run_did(stack: Stack) -> None:
    before = stack.scrape()
    build = [key for key in before if key.startswith("haproxy_sync_build_info{")]
    assert len(build) == 1 and before[build[0]] == 1
    running = ".".join(map(str, haproxy_version()))
    labels = (r'haproxy_version="[0-9.]+",revision="([0-9a-f]{7,}(-dirty)?|unknown)",'
              rf'version="{re.escape(haproxy_sync.__version__)}"')
    assert re.fullmatch(r"haproxy_sync_build_info\{" + labels + r"\}", build[0]), build[0]
    assert f'haproxy_version="{running}.' in build[0]  # major.minor from the tests' binary, then the patch
    assert before['haproxy_sync_servers{backend="cabify",state="up"}'] == 3
    assert before['haproxy_sync_servers{backend="cabify",state="free"}'] == 5
    assert before['haproxy_sync_consul_watch_up{service="cabify"}'] == 1
    runtime_key = 'haproxy_sync_applies_total{path="runtime",reason="runtime"}'
    assert before.get(runtime_key, 0) == 0
    for app in stack.apps:  # three changes, each applied on its own through the Runtime API
        consul_put(stack.consul.url, f"/v1/agent/service/deregister/{app.instance_id}")
        stack.daemon.wait_for_log("runtime API:", count=stack.apps.index(app) + 1)
    after = stack.scrape()
    # On 3.0 a drain with nothing on it ends at HAProxy's word (0.5 s later, one more runtime apply).
    idle_rule = haproxy_version() >= (3, 0)
    assert after[runtime_key] == 3 or (idle_rule and after[runtime_key] > 3)
    assert after["haproxy_sync_runtime_commands_total"] >= 3
    assert after['haproxy_sync_convergence_seconds_count{path="runtime"}'] == 3
    draining = after.get('haproxy_sync_servers{backend="cabify",state="drain"}', 0)
    assert draining + after['haproxy_sync_servers{backend="cabify",state="free"}'] == 8
    assert draining == 3 or idle_rule
    assert after["haproxy_sync_renders_total"] >= 3


def test_first_failures_are_visible_to_increase_and_the_process_is_measured(stack: Stack) -> None:
    """Every labelled counter with known labels has a sample at 0 from the start, so that the first
    failure is an increase() and an alert rule sees it; the process collectors are on."""
    scraped = stack.scrape()
    for stage in FailureStage:
        assert scraped[f'haproxy_sync_apply_failures_total{{stage="{stage.label}"}}'] == 0
    for failure in ReloadFailure:
        assert scraped[f'haproxy_sync_reload_failures_total{{kind="{failure.label}"}}'] == 0
    assert scraped['haproxy_sync_config_rereads_total{result="rejected"}'] == 0
    for outcome in ("held", "applied", "recovered"):
        assert scraped[f'haproxy_sync_guard_total{{outcome="{outcome}",service="cabify"}}'] == 0
    assert scraped['haproxy_sync_applies_total{path="runtime",reason="runtime"}'] == 0
    assert scraped["process_open_fds"] > 0 and scraped["process_max_fds"] >= scraped["process_open_fds"]
    assert scraped["process_resident_memory_bytes"] > 10_000_000
    started = scraped["process_start_time_seconds"]
    assert abs(started - time.time()) < 600
    assert scraped["haproxy_sync_config_last_reload_successful"] == 1
    assert started <= scraped["haproxy_sync_last_apply_timestamp_seconds"] <= time.time()
    assert any(key.startswith("python_info{") for key in scraped)
    # A SIGHUP owes a reload; the next change pays it, and the reload's time is recorded.
    reloads = stack.daemon.log().count("reloaded in")
    stack.daemon.signal(signal.SIGHUP)
    stack.daemon.wait_for_log("configuration and template re-read", timeout=10)
    consul_put(stack.consul.url, f"/v1/agent/service/deregister/{stack.apps[0].instance_id}")
    stack.daemon.wait_for_log("reloaded in", count=reloads + 1, timeout=20)
    after = stack.scrape()
    assert after["haproxy_sync_config_last_reload_successful"] == 1
    assert started <= after["haproxy_sync_config_last_reload_success_timestamp_seconds"] <= time.time()


def test_health_and_ready_follow_consul(stack: Stack) -> None:
    base = f"http://127.0.0.1:{stack.layout.metrics_port}"
    assert http_get(f"{base}/health")[0] == 200
    status, body = http_get(f"{base}/ready")
    assert status == 200 and json.loads(body) == {"ready": True, "reasons": []}
    port = stack.consul.port
    stack.consul.stop()
    # Both the catalog watch and the cabify watch go stale; which is reported first is a race.
    status, body = wait_until(
        lambda: (r := http_get(f"{base}/ready"))[0] == 503 and "Consul data for cabify is" in r[1] and r,
        10,
        what="/ready 503 naming cabify",
    )
    assert "stale_after 2s" in body and json.loads(body)["ready"] is False
    assert stack.scrape()['haproxy_sync_consul_errors_total{kind="unreachable",service="cabify"}'] >= 1
    assert http_get(f"{base}/health")[0] == 200, "health is the process, not Consul"
    revived = DevConsulThread(port=port).start()
    try:
        for app in stack.apps:
            register(revived.url, app)
        wait_until(lambda: http_get(f"{base}/ready")[0] == 200, 15, what="/ready back to 200")
    finally:
        revived.stop()


def test_status_shows_drift_made_by_hand_and_exits_1(stack: Stack) -> None:
    config = str(stack.layout.config_toml)
    ok = cli("status", "--config", config)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert re.search(r"^cabify\s+3/0/0\s+3/0/0/0\s+none$", ok.stdout, re.M), ok.stdout
    assert "last apply: cabify: 3 servers" in ok.stdout and "daemon: ready" in ok.stdout
    operator_command(stack.layout.stats_socket, "disable server cabify/slot2")
    drift = cli("status", "--config", config)
    assert drift.returncode == 1
    assert "drift cabify: cabify/slot2 runs 127.0.0.1:" in drift.stdout and "maint, planned" in drift.stdout
    as_json = json.loads(cli("status", "--json", "--config", config).stdout)
    assert as_json["healthy"] is False and as_json["backends"][0]["haproxy"]["MAINT"] == 1


def test_status_exits_1_when_haproxy_is_unreachable(stack: Stack) -> None:
    stack.haproxy.stop()
    result = cli("status", "--config", str(stack.layout.config_toml))
    assert result.returncode == 1 and "haproxy: HAProxy socket" in result.stdout


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies_and_is_rated_ok(tmp_path: Path) -> None:
    unit = tmp_path / "haproxy-sync.service"
    unit.write_text(cli("systemd-unit", "--exec-path", "/bin/true", "--user", "root", "--group", "root").stdout)
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                              capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for haproxy-sync.service: ([\d.]+) (\w+)", security.stdout)
    assert match, security.stdout[-500:] + security.stderr
    assert float(match.group(1)) <= 2.0 and match.group(2) == "OK"
    text = unit.read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "ExecReload=/bin/kill -HUP $MAINPID",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK\n",
                 "SystemCallFilter=@system-service", "LimitNOFILE=65536\n",
                 "After=network-online.target haproxy.service consul.service\n"):
        assert line in text, line
    # What a real systemd showed to break the service (tests/host/test_unit.py).
    assert not re.search(r"^(Group|MemoryDenyWriteExecute)=", text, re.M), text


def test_every_series_the_dashboard_queries_exists(stack: Stack) -> None:
    dashboard = Path(__file__).parents[2] / "ansible/roles/monitoring/files/dashboards/haproxy-sync.json"
    exprs = [t["expr"] for panel in json.loads(dashboard.read_text())["panels"] for t in panel.get("targets", [])]
    wanted = {re.sub(r"_(bucket|count|sum)$", "", name) for e in exprs for name in re.findall(r"haproxy_sync_\w+", e)}
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.layout.metrics_port}/metrics", timeout=5) as response:
        exported = set(re.findall(r"^# HELP (haproxy_sync_\w+)", response.read().decode(), re.M))
    assert wanted, "the dashboard queries haproxy-sync's series"
    assert {w.removesuffix("_total") for w in wanted} <= {e.removesuffix("_total") for e in exported}, wanted - exported


def test_skipped_instances_are_counted_while_they_last(stack: Stack) -> None:
    key = 'haproxy_sync_instances_skipped{reason="address",service="cabify"}'
    assert not any(name.startswith("haproxy_sync_instances_skipped{") for name in stack.scrape())
    bad = {"ID": "evil-1", "Name": "cabify", "Address": "10.0.0.1\nserver evil 6.6.6.6:80", "Port": 80}
    consul_put(stack.consul.url, "/v1/agent/service/register", bad)
    wait_until(lambda: stack.scrape().get(key) == 1, 10, what="the skipped instance counted")
    consul_put(stack.consul.url, "/v1/agent/service/deregister/evil-1")
    wait_until(lambda: key not in stack.scrape(), 10, what="the series gone with the instance")
    assert "6.6.6.6" not in stack.layout.haproxy_cfg.read_text()
