"""ansible-lint (production profile) over ansible/ and the converge playbook, and
`ansible-playbook --syntax-check` of site.yml against every inventory."""

from __future__ import annotations

import json

import pytest

from .conftest import ANSIBLE_DIR, REPO, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(600)]

INVENTORIES = ["vagrant", "vagrant-cluster", "cluster.example"]


def test_ansible_lint_production_profile_is_clean(ansible_env: dict[str, str]) -> None:
    proc = run(
        [tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor",
         ".", str(REPO / "tests" / "deploy" / "converge.yml"), str(REPO / "tests" / "deploy" / "render.yml")],
        timeout=180,
        cwd=ANSIBLE_DIR,
        env=ansible_env,
    )
    assert proc.returncode == 0, tail(proc, 120)
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_site_yml_syntax(inventory: str, ansible_env: dict[str, str]) -> None:
    proc = run(
        [tool("ansible-playbook"), "--syntax-check", "-i", f"inventories/{inventory}", "site.yml"],
        timeout=120,
        cwd=ANSIBLE_DIR,
        env=ansible_env,
    )
    assert proc.returncode == 0, tail(proc)


def _groups(inventory: str, env: dict[str, str]) -> dict[str, set[str]]:
    """Every group of an inventory with its hosts, children resolved."""
    proc = run([tool("ansible-inventory"), "-i", f"inventories/{inventory}", "--list"],
               timeout=120, cwd=ANSIBLE_DIR, env=env)
    assert proc.returncode == 0, tail(proc)
    data = json.loads(proc.stdout)

    def hosts(name: str) -> set[str]:
        group = data.get(name, {})
        found = set(group.get("hosts", []))
        for child in group.get("children", []):
            found |= hosts(child)
        return found

    return {name: hosts(name) for name in data if name != "_meta"}


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_inventory_fills_the_groups_site_yml_uses(inventory: str, ansible_env: dict[str, str]) -> None:
    groups = _groups(inventory, ansible_env)
    for group in ["consul_servers", "nomad_servers", "nomad_clients", "registry", "edge"]:
        assert groups.get(group), f"{inventory}: group {group} has no hosts"
    assert groups["registry"] <= groups["nomad_clients"], "the registry's volume is on a Nomad client"
    if inventory == "vagrant":
        assert len(groups["all"]) == 1
        assert not groups.get("keepalived")
    else:
        # No single point of failure: a 3-server quorum, 2 edge nodes sharing a floating IP.
        assert len(groups["consul_servers"]) == 3
        assert len(groups["nomad_servers"]) == 3
        assert len(groups["edge"]) == 2
        assert groups["keepalived"] == groups["edge"]
