"""Every role's templates rendered for every host of each inventory (tests/deploy/render.yml),
then read back: the inventory alone must turn the same roles into one node or real clusters
with no single point of failure (3-server quorums, 2 edge nodes with a floating IP)."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ANSIBLE_DIR, REPO, hcl_block, load_hcl, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(600)]

SERVERS = ["server-1", "server-2", "server-3"]


def _render(inventory: str, env: dict[str, str], out: Path) -> Path:
    args = [tool("ansible-playbook"), "-i", f"inventories/{inventory}", "-e", f"render_dir={out}",
            # Vagrant inventories make their secrets with password lookups: keep them here.
            "-e", f"vagrant_secrets_dir={out / 'secrets'}"]
    if inventory == "cluster.example":
        # The documented vault example must supply every secret the roles need.
        args += ["-e", "@inventories/cluster.example/group_vars/all/vault.yml.example"]
    proc = run([*args, str(REPO / "tests" / "deploy" / "render.yml")], timeout=180, cwd=ANSIBLE_DIR, env=env)
    assert proc.returncode == 0, tail(proc, 80)
    return out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> Path:
    return _render("cluster.example", ansible_env, tmp_path_factory.mktemp("render-cluster"))


@pytest.fixture(scope="module")
def vagrant(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> Path:
    return _render("vagrant", ansible_env, tmp_path_factory.mktemp("render-vagrant"))


@pytest.fixture(scope="module")
def vagrant_cluster(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> Path:
    return _render("vagrant-cluster", ansible_env, tmp_path_factory.mktemp("render-vagrant-cluster"))


def _consul(out: Path, host: str) -> dict[str, Any]:
    return load_hcl(out / host / "consul.hcl")


def _nomad(out: Path, host: str) -> dict[str, Any]:
    return load_hcl(out / host / "nomad.hcl")


def _hosts(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir() and p.name != "secrets")


def test_cluster_consul_servers_form_a_quorum_of_three(cluster: Path) -> None:
    for host in _hosts(cluster):
        consul = _consul(cluster, host)
        assert consul["data_dir"] == "/opt/consul"
        assert consul["retry_join"] == ["10.0.0.11", "10.0.0.12", "10.0.0.13"]
        assert consul["encrypt"], "gossip encryption"
        acl = consul["acl"][0]
        assert acl["enabled"] is True and acl["default_policy"] == "deny"
        tokens = acl["tokens"][0]
        assert tokens["agent"]
        if host in SERVERS:
            assert consul["server"] is True
            assert consul["bootstrap_expect"] == 3
            assert tokens["initial_management"]
        else:
            assert consul["server"] is False
            assert "bootstrap_expect" not in consul
            assert "initial_management" not in tokens, f"{host}: the management token stays on the servers"


def test_cluster_nomad_servers_and_clients(cluster: Path) -> None:
    for host in SERVERS:
        nomad = _nomad(cluster, host)
        server = nomad["server"][0]
        assert server["enabled"] is True and server["bootstrap_expect"] == 3 and server["encrypt"]
        assert nomad["client"][0]["enabled"] is False
    for host in ["client-1", "client-2", "client-3"]:
        nomad = _nomad(cluster, host)
        assert nomad["data_dir"] == "/opt/nomad/data"
        assert nomad["server"][0]["enabled"] is False
        assert nomad["client"][0]["enabled"] is True
        assert hcl_block(nomad["plugin"], "docker")
        assert nomad["consul"][0]["token"], "Nomad registers services with its own Consul token"
        assert nomad["acl"][0]["enabled"] is True
        volumes = nomad["client"][0].get("host_volume", [])
        if host == "client-1":
            assert hcl_block(volumes, "registry")["path"] == "/opt/registry"
        else:
            assert volumes == []
    assert not (cluster / "edge-1" / "nomad.hcl").exists()


def test_cluster_docker_rotates_logs_and_trusts_the_registry(cluster: Path) -> None:
    daemon = json.loads((cluster / "client-2" / "daemon.json").read_text())
    assert daemon["log-driver"] == "json-file"
    assert daemon["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert daemon["insecure-registries"] == ["10.0.0.21:5000"]


@pytest.mark.runs_haproxy
def test_cluster_edge_haproxy_and_haproxy_sync(cluster: Path) -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    for host, ip in [("edge-1", "10.0.0.31"), ("edge-2", "10.0.0.32")]:
        proc = run([haproxy, "-c", "-f", str(cluster / host / "haproxy.cfg")], timeout=30)
        assert proc.returncode == 0, tail(proc)
        assert f"bind {ip}:8404" in (cluster / host / "haproxy.cfg").read_text()
        config = tomllib.loads((cluster / host / "config.toml").read_text())
        assert config["consul"]["token_file"] == "/etc/haproxy-sync/consul.token"
        assert config["haproxy"]["stats_bind"] == f"{ip}:8404"
        assert config["metrics"]["listen"] == f"{ip}:9725", "Prometheus scrapes haproxy-sync on the private net"
        assert config["services"][0]["name"] == "cabify"


def test_cluster_keepalived_floats_one_address_over_both_edges(cluster: Path) -> None:
    one = (cluster / "edge-1" / "keepalived.conf").read_text()
    two = (cluster / "edge-2" / "keepalived.conf").read_text()
    assert "priority 150" in one and "priority 140" in two
    assert "unicast_peer {\n        10.0.0.32\n" in one
    assert "unicast_peer {\n        10.0.0.31\n" in two
    for text in (one, two):
        assert "10.0.0.100/24 dev " in text
        assert "virtual_router_id 51" in text
        assert "chk_haproxy" in text


def test_cluster_prometheus_scrapes_every_component(cluster: Path) -> None:
    config = yaml.safe_load((cluster / "ops-1" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"node", "haproxy", "haproxy-sync", "consul", "nomad"} <= set(jobs)
    assert jobs["haproxy"]["static_configs"][0]["targets"] == ["10.0.0.31:8404", "10.0.0.32:8404"]
    assert len(jobs["node"]["static_configs"][0]["targets"]) == 9
    assert jobs["consul"]["params"] == {"format": ["prometheus"]}
    assert jobs["haproxy"]["params"] == {"no-maint": [""]}, "free slots (in maintenance) are not scraped"
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]


def _relabelled_instances(job: dict[str, Any]) -> list[str]:
    """The `instance` label of each target after the job's relabel_configs, as Prometheus computes it
    for the replace action (regex anchored at both ends; no match leaves the target's address)."""
    instances = []
    for target in job["static_configs"][0]["targets"]:
        labels = {"__address__": target, "instance": target}
        for rule in job.get("relabel_configs", []):
            assert rule.get("action", "replace") == "replace", rule
            value = ";".join(labels.get(name, "") for name in rule["source_labels"])
            if match := re.fullmatch(rule.get("regex", "(.*)"), value):
                labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
        instances.append(labels["instance"])
    return instances


def test_cluster_edge_jobs_share_the_instance_label(cluster: Path) -> None:
    """haproxy-sync and HAProxy of one edge are scraped on two ports; both jobs call the edge by its
    address alone, so that the dashboard and the alert rules join them on `instance`."""
    config = yaml.safe_load((cluster / "ops-1" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert _relabelled_instances(jobs["haproxy"]) == ["10.0.0.31", "10.0.0.32"]
    assert _relabelled_instances(jobs["haproxy-sync"]) == ["10.0.0.31", "10.0.0.32"]
    assert _relabelled_instances(jobs["node"])[0].endswith(":9100"), "other jobs keep host:port"


def test_cluster_prometheus_config_and_rules_pass_promtool(cluster: Path, promtool: str, tmp_path: Path) -> None:
    """The role validates both files with promtool on the host; here the same checks run on the render,
    with the host's paths (the rules directory, the Consul token) pointed at files that exist."""
    rendered = cluster / "ops-1"
    rules = rendered / "haproxy-sync.rules.yml"
    proc = run([promtool, "check", "rules", str(rules)], timeout=60)
    assert proc.returncode == 0 and "SUCCESS: 11 rules found" in proc.stdout, tail(proc)
    text = rules.read_text()
    assert "haproxy-sync.invalid" not in text, "monitoring_alerts_runbook_base_url replaces the placeholder"
    assert text.count("runbook_url: \"https://git.example.com/ops/haproxy-sync/-/blob/main/docs/alerts.md#") == 11
    config = yaml.safe_load((rendered / "prometheus.yml").read_text())
    config["rule_files"] = [str(rendered / "*.rules.yml")]
    token = tmp_path / "consul.token"
    token.write_text("token\n")
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], timeout=60)
    assert proc.returncode == 0, tail(proc)
    assert "SUCCESS: 11 rules found" in proc.stdout + proc.stderr, tail(proc)


def test_cluster_journals_are_bounded_and_shipped(cluster: Path) -> None:
    for host in _hosts(cluster):
        journald = (cluster / host / "journald.conf").read_text()
        assert "SystemMaxUse=1G" in journald and "MaxRetentionSec=" in journald
        assert "loki.source.journal" in (cluster / host / "config.alloy").read_text()
        assert "http://10.0.0.41:3100/loki/api/v1/push" in (cluster / host / "config.alloy").read_text()
    assert "retention_enabled: true" in (cluster / "ops-1" / "loki.yml").read_text()


def test_vagrant_one_node_still_runs_servers_with_persistence(vagrant: Path) -> None:
    assert _hosts(vagrant) == ["cabify-1"]
    consul = _consul(vagrant, "cabify-1")
    assert consul["server"] is True and consul["bootstrap_expect"] == 1
    assert consul["data_dir"] == "/opt/consul"
    assert len(consul["encrypt"]) == 44, "a generated 32-byte gossip key"
    nomad = _nomad(vagrant, "cabify-1")
    assert nomad["server"][0]["bootstrap_expect"] == 1
    assert nomad["client"][0]["enabled"] is True
    assert hcl_block(nomad["client"][0]["host_volume"], "registry")
    assert not (vagrant / "cabify-1" / "keepalived.conf").exists()
    config = tomllib.loads((vagrant / "cabify-1" / "config.toml").read_text())
    assert config["haproxy"]["stats_bind"] == "*:8404"
    secrets = vagrant / "secrets"
    assert (secrets / "consul_gossip_key").exists(), "secrets generated outside the repository"


def test_vagrant_cluster_has_three_servers_and_a_floating_ip(vagrant_cluster: Path) -> None:
    for host in SERVERS:
        assert _consul(vagrant_cluster, host)["bootstrap_expect"] == 3
        assert _nomad(vagrant_cluster, host)["client"][0]["enabled"] is True
    for host in ["edge-1", "edge-2"]:
        assert "192.168.56.10/24 dev " in (vagrant_cluster / host / "keepalived.conf").read_text()
        assert _consul(vagrant_cluster, host)["server"] is False
