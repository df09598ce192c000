"""The Nomad job files, parsed with python-hcl2, say what the deployment relies on."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import NOMAD_DIR, hcl_block, load_hcl

pytestmark = pytest.mark.deploy


def _variables(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: body for block in doc["variable"] for name, body in block.items()}


@pytest.fixture(scope="module")
def cabify() -> dict[str, Any]:
    return load_hcl(NOMAD_DIR / "cabify.nomad.hcl")


@pytest.fixture(scope="module")
def registry() -> dict[str, Any]:
    return load_hcl(NOMAD_DIR / "registry.nomad.hcl")


def test_cabify_variables_version_count_registry(cabify: dict[str, Any]) -> None:
    variables = _variables(cabify)
    assert {"version", "count", "registry"} <= set(variables)
    assert variables["count"]["default"] == 7
    assert variables["version"]["type"] == "string"


def test_cabify_runs_count_instances_of_the_versioned_image(cabify: dict[str, Any]) -> None:
    job = hcl_block(cabify["job"], "cabify")
    group = hcl_block(job["group"], "cabify")
    assert group["count"] == "${var.count}"
    task = hcl_block(group["task"], "cabify")
    assert task["driver"] == "docker"
    assert task["config"][0]["image"] == "${var.registry}/cabify:${var.version}"
    assert task["resources"][0]["cpu"] > 0 and task["resources"][0]["memory"] > 0
    assert task["logs"][0]["max_files"] >= 1, "Nomad must rotate the task's logs"


def test_cabify_registers_in_consul_with_an_http_health_check(cabify: dict[str, Any]) -> None:
    group = hcl_block(hcl_block(cabify["job"], "cabify")["group"], "cabify")
    services = group["service"]
    assert len(services) == 1
    # Named by local.name: "cabify" for branch main, cabify-<branch> otherwise (evaluated in test_branch.py).
    assert services[0]["name"] == "${local.name}"
    check = services[0]["check"][0]
    assert (check["type"], check["path"]) == ("http", "/health")
    assert check["interval"] and check["timeout"]


def test_cabify_updates_without_downtime(cabify: dict[str, Any]) -> None:
    job = hcl_block(cabify["job"], "cabify")
    update = job["update"][0]
    assert update["auto_revert"] is True
    assert update["canary"] >= 1
    assert update["max_parallel"] >= 1
    assert update["health_check"] == "checks"
    for key in ("min_healthy_time", "healthy_deadline", "progress_deadline"):
        assert update[key], key
    group = hcl_block(job["group"], "cabify")
    assert group["shutdown_delay"], "Consul must deregister an instance before it stops"


def test_cabify_spreads_and_restarts(cabify: dict[str, Any]) -> None:
    group = hcl_block(hcl_block(cabify["job"], "cabify")["group"], "cabify")
    assert group["spread"][0]["attribute"] == "${node.unique.id}"
    assert group["restart"][0]["attempts"] >= 1
    assert group["reschedule"][0]


def test_registry_listens_on_static_port_5000(registry: dict[str, Any]) -> None:
    group = hcl_block(hcl_block(registry["job"], "registry")["group"], "registry")
    port = hcl_block(group["network"][0]["port"], "http")
    assert port["static"] == 5000


def test_registry_keeps_images_on_a_host_volume(registry: dict[str, Any]) -> None:
    group = hcl_block(hcl_block(registry["job"], "registry")["group"], "registry")
    volume = hcl_block(group["volume"], "registry")
    assert volume["type"] == "host"
    assert volume["read_only"] is False
    task = hcl_block(group["task"], "registry")
    mount = task["volume_mount"][0]
    assert (mount["volume"], mount["destination"]) == ("registry", "/var/lib/registry")


def test_registry_has_its_own_health_check_and_a_pinned_image(registry: dict[str, Any]) -> None:
    group = hcl_block(hcl_block(registry["job"], "registry")["group"], "registry")
    check = group["service"][0]["check"][0]
    assert (check["type"], check["path"]) == ("http", "/v2/")
    image = _variables(registry)["image"]["default"]
    name, _, tag = image.partition(":")
    assert name == "registry" and tag and tag != "latest" and tag.count(".") == 2


def test_a_registry_update_replaces_its_one_allocation_once_healthy_for_two_checks(registry: dict[str, Any]) -> None:
    job = hcl_block(registry["job"], "registry")
    update = job["update"][0]
    group = hcl_block(job["group"], "registry")
    assert group["count"] == 1 and "canary" not in update, "a second registry could not bind static 5000"
    assert (update["max_parallel"], update["health_check"], update["auto_revert"]) == (1, "checks", True)
    interval = int(group["service"][0]["check"][0]["interval"].rstrip("s"))
    assert int(update["min_healthy_time"].rstrip("s")) >= 2 * interval, "more than one check must pass"


def test_cabify_moves_off_a_draining_client_one_healthy_instance_at_a_time(cabify: dict[str, Any]) -> None:
    """site.yml drains each Nomad client before its restart: the group's migrate block decides how."""
    job = hcl_block(cabify["job"], "cabify")
    group = hcl_block(job["group"], "cabify")
    migrate = group["migrate"][0]
    update = job["update"][0]
    assert migrate["max_parallel"] == 1, "count - 1 instances keep serving while one moves"
    assert migrate["health_check"] == "checks", "healthy as haproxy-sync sees it: the Consul check passing"
    check = group["service"][0]["check"][0]
    interval = int(check["interval"].rstrip("s"))
    assert int(migrate["min_healthy_time"].rstrip("s")) >= 2 * interval, "more than one check must pass"
    assert (migrate["min_healthy_time"], migrate["healthy_deadline"]) == (update["min_healthy_time"],
                                                                           update["healthy_deadline"])
