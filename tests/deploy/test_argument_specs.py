"""Each role's meta/argument_specs.yml against its defaults/main.yml, its tasks and its README.md, and
Ansible's own run-time argument validation: a wrongly typed variable stops a role before its first task,
the roles' defaults and every inventory's values pass it."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from .conftest import ANSIBLE_DIR, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

ROLES_DIR = ANSIBLE_DIR / "roles"
ROLES = sorted(p.name for p in ROLES_DIR.iterdir() if (p / "tasks" / "main.yml").is_file())
INVENTORIES = ["vagrant", "vagrant-cluster", "cluster.example"]

# Variables a role reads that its defaults/main.yml does not define (from the inventory, or another
# role's variable behind a default()), with the default their spec gives (None: none).
INPUTS: dict[str, dict[str, Any]] = {
    "consul": {"private_ip": None, "consul_acl_haproxy_sync_token": "", "consul_acl_nomad_token": "",
               "consul_acl_prometheus_token": ""},
    "haproxy_sync": {"cabify_domain": "cabify.internal", "cabify_canary_tag": "canary", "cabify_canary_share": "10%"},
    "keepalived": {"private_ip": None},
    "logging": {"private_ip": None},
    "monitoring": {"private_ip": None},
    "nomad": {"private_ip": None},
}
# Entry points besides main: tasks files that playbooks run on their own (tasks_from). Ansible looks the
# spec up by the tasks_from value as written, so each has its name with and without ".yml".
ENTRY_POINTS: dict[str, set[str]] = {
    "cabify": {"build", "deploy", "stop"}, "consul": {"wait_server"}, "nomad": {"wait_server"},
    "haproxy_sync": {"wait_ready"}, "keepalived": {"step_aside", "step_back"},
}

# The validation task Ansible prepends to a role (tagged always): with tags that match nothing, a
# play runs it alone.
NO_TAGS = "never-existing-tag"
VALIDATION = re.compile(r"^TASK \[(\w+) : Validating arguments against arg spec '([^']+)'", re.M)


class Unsafe(str):
    """A string tagged !unsafe in a spec (Ansible never templates it)."""


class SpecLoader(yaml.SafeLoader):
    pass


SpecLoader.add_constructor("!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def _spec_file(role: str) -> Path:
    return ROLES_DIR / role / "meta" / "argument_specs.yml"


def _specs(role: str) -> dict[str, Any]:
    with _spec_file(role).open() as handle:
        return yaml.load(handle, Loader=SpecLoader)["argument_specs"]


def _defaults(role: str) -> dict[str, Any]:
    return yaml.safe_load((ROLES_DIR / role / "defaults" / "main.yml").read_text())


def _is_jinja(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, list):
        return any(_is_jinja(v) for v in value)
    if isinstance(value, dict):
        return any(_is_jinja(v) for v in value.values())
    return False


def _jinja_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if _is_jinja(value) else []
    if isinstance(value, list):
        return [s for v in value for s in _jinja_strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _jinja_strings(v)]
    return []


# --- the spec files ------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_spec_matches_ansible_lints_schema(role: str) -> None:
    """ansible-lint skips the schema of a file with a tag it cannot load (!unsafe): checked here."""
    schema_dir = Path(next(iter(importlib.util.find_spec("ansiblelint").submodule_search_locations))) / "schemas"
    schema = json.loads((schema_dir / "role-arg-spec.json").read_text())
    with _spec_file(role).open() as handle:
        data = yaml.load(handle, Loader=SpecLoader)
    jsonschema.validate(json.loads(json.dumps(data)), schema)


@pytest.mark.parametrize("role", ROLES)
def test_spec_declares_every_default_with_its_value(role: str) -> None:
    defaults = _defaults(role)
    options = _specs(role)["main"]["options"]
    inputs = INPUTS.get(role, {})
    assert set(options) - set(inputs) == set(defaults), (
        f"{role}: only in defaults/main.yml: {sorted(set(defaults) - set(options))}; "
        f"only in the spec: {sorted(set(options) - set(defaults) - set(inputs))}")
    for name, value in defaults.items():
        assert "default" in options[name], f"{role}: {name} has no default in the spec"
        assert options[name]["default"] == value, f"{role}: {name}: spec {options[name]['default']!r} != {value!r}"
        assert not options[name].get("required"), f"{role}: {name} has a default: it cannot be required"
    for name, default in inputs.items():
        assert name in options, f"{role}: the input {name} is not declared"
        assert options[name].get("default") == default, f"{role}: {name}"
        assert not options[name].get("required"), f"{role}: {name}"


@pytest.mark.parametrize("role", ROLES)
def test_spec_types_fit_the_defaults(role: str) -> None:
    """Every option has a type, a description and (lists) an element type; Ansible's own validator
    accepts every literal default; every Jinja default is !unsafe, so that Ansible, which templates the
    spec as the validation task's arguments, never evaluates it (facts, secrets)."""
    options = _specs(role)["main"]["options"]
    literal = {}
    for name, spec in options.items():
        assert spec.get("type") in {"str", "path", "bool", "int", "list", "dict"}, f"{role}: {name}"
        assert spec.get("description"), f"{role}: {name} has no description"
        if spec["type"] == "list":
            assert spec.get("elements"), f"{role}: list {name} has no elements"
        if "default" not in spec:
            continue
        for text in _jinja_strings(spec["default"]):
            assert isinstance(text, Unsafe), f"{role}: {name}: tag {text!r} !unsafe"
        if _is_jinja(spec["default"]):
            # What a templated default becomes is checked by the runs below, not here.
            assert spec["type"] in {"str", "path", "bool", "int", "list"}, f"{role}: {name}"
            continue
        value = spec["default"]
        python_type = {"str": str, "path": str, "bool": bool, "int": int, "list": list, "dict": dict}[spec["type"]]
        assert isinstance(value, python_type) and not (python_type is int and isinstance(value, bool)), (
            f"{role}: {name}: default {value!r} is not a {spec['type']}")
        literal[name] = value
    result = ArgumentSpecValidator({k: options[k] for k in literal}).validate(literal)
    assert not result.error_messages, f"{role}: {result.error_messages}"
    assert result.validated_parameters == literal, f"{role}: the validator changed a default"


def _role_vars_in(text: str, names: set[str]) -> set[str]:
    return {word for word in re.findall(r"\b[a-z][a-z0-9_]*\b", text) if word in names}


@pytest.mark.parametrize("role", ROLES)
def test_spec_has_an_entry_point_per_tasks_from(role: str) -> None:
    """main, plus each tasks file run on its own (with and without .yml); every role variable the
    entry point's tasks use (or their defaults use in turn) is in its options, as main declares it."""
    specs = _specs(role)
    entries = ENTRY_POINTS.get(role, set())
    assert set(specs) == {"main"} | entries | {f"{e}.yml" for e in entries}, role
    main = specs["main"]["options"]
    defaults_text = {name: json.dumps(value) for name, value in _defaults(role).items()}
    for entry in entries:
        assert specs[entry] == specs[f"{entry}.yml"], f"{role}: {entry} and {entry}.yml differ"
        options = specs[entry]["options"]
        assert set(options) <= set(main), f"{role}: {entry}: {sorted(set(options) - set(main))}"
        for name, spec in options.items():
            assert spec == main[name], f"{role}: {entry}: {name} differs from main's"
        needed = _role_vars_in((ROLES_DIR / role / "tasks" / f"{entry}.yml").read_text(), set(main))
        while True:
            more = needed | {v for n in needed for v in _role_vars_in(defaults_text.get(n, ""), set(main))}
            if more == needed:
                break
            needed = more
        assert needed <= set(options), f"{role}: {entry} lacks {sorted(needed - set(options))}"


def _tasks_from(node: Any) -> list[tuple[str, str]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith(("include_role", "import_role")) and isinstance(value, dict) and "tasks_from" in value:
                found.append((value["name"], value["tasks_from"]))
            found += _tasks_from(value)
    elif isinstance(node, list):
        for item in node:
            found += _tasks_from(item)
    return found


def test_every_tasks_from_in_the_playbooks_has_a_spec() -> None:
    calls = [call for playbook in sorted(ANSIBLE_DIR.glob("*.yml"))
             for call in _tasks_from(yaml.safe_load(playbook.read_text()))]
    assert calls, "branch.yml runs the cabify role's steps with tasks_from"
    for role, tasks_from in calls:
        assert tasks_from in _specs(role), f"{role}: tasks_from {tasks_from} has no argument spec"


# --- the READMEs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_readme_lists_every_variable(role: str) -> None:
    readme = ROLES_DIR / role / "README.md"
    assert readme.is_file(), f"{role} has no README.md"
    text = readme.read_text()
    missing = [name for name in [*_defaults(role), *INPUTS.get(role, {})] if f"`{name}`" not in text]
    assert not missing, f"{role}/README.md does not list {missing}"
    assert "## Example" in text, f"{role}/README.md has no example"


# --- Ansible's run-time validation ---------------------------------------------------------------


def _validate(tmp_path: Path, env: dict[str, str], play: dict[str, Any]) -> tuple[int, str]:
    """Runs one play on localhost with tags that match nothing: only the argument validation runs."""
    playbook = tmp_path / "validate.yml"
    playbook.write_text(yaml.safe_dump([{"name": "Validate role arguments.", "hosts": "localhost",
                                         "connection": "local", "gather_facts": False, **play}], sort_keys=False))
    proc = run([tool("ansible-playbook"), "-i", "localhost,", str(playbook), "--tags", NO_TAGS],
               timeout=120, cwd=tmp_path, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _roles_play(role: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {"vars": variables, "roles": [{"role": role}]}


def _tasks_from_play(role: str, tasks_from: str, variables: dict[str, Any]) -> dict[str, Any]:
    return {"vars": variables,
            "tasks": [{"name": "Run one step of the role.",
                       "ansible.builtin.import_role": {"name": role, "tasks_from": tasks_from}}]}


# The consul role's defaults need facts for this host's address; these plays gather none.
CONSUL_HOST = {"private_ip": "10.0.0.1"}
MARKER = "do-not-print-0123456789abcdef"

REJECTED = {
    "haproxy_sync-bool": (_roles_play("haproxy_sync", {"haproxy_sync_manage_service": "not-a-bool"}),
                          "haproxy_sync", "main", "haproxy_sync_manage_service", "is not a valid boolean"),
    "haproxy_sync-choice": (_roles_play("haproxy_sync", {"haproxy_sync_install_source": "git"}),
                            "haproxy_sync", "main", "haproxy_sync_install_source", "must be one of: path, wheel"),
    "haproxy-int": (_roles_play("haproxy", {"haproxy_maxconn": "lots"}),
                    "haproxy", "main", "haproxy_maxconn", "unable to convert to int"),
    # A secret in the vars must stay out of what a failed validation prints (the spec's defaults).
    "consul-int": (_roles_play("consul", {**CONSUL_HOST, "consul_http_max_conns_per_client": "many",
                                          "consul_acl_agent_token": MARKER, "consul_gossip_key": MARKER}),
                   "consul", "main", "consul_http_max_conns_per_client", "unable to convert to int"),
    "cabify-stop-bool": (_tasks_from_play("cabify", "stop.yml", {"cabify_stop_production": "maybe"}),
                         "cabify", "stop.yml", "cabify_stop_production", "is not a valid boolean"),
}


@pytest.mark.parametrize(("play", "role", "entry", "variable", "why"), REJECTED.values(), ids=REJECTED.keys())
def test_ansible_rejects_a_wrongly_typed_variable(
    play: dict[str, Any], role: str, entry: str, variable: str, why: str, tmp_path: Path,
    ansible_env: dict[str, str],
) -> None:
    returncode, output = _validate(tmp_path, ansible_env, play)
    assert returncode == 2, output[-3000:]
    assert VALIDATION.findall(output) == [(role, entry)], output[-3000:]
    assert re.search(r"^fatal: \[localhost\]: FAILED!.*Validation of arguments failed", output, re.M), output[-3000:]
    assert f"argument '{variable}'" in output or f"value of {variable} must" in output, output[-3000:]
    assert why in output, output[-3000:]
    assert MARKER not in output, "a failed validation printed a secret"


ACCEPTED = {
    "haproxy_sync": (_roles_play("haproxy_sync", {}), [("haproxy_sync", "main")]),
    "haproxy": (_roles_play("haproxy", {}), [("haproxy", "main")]),
    "consul": (_roles_play("consul", CONSUL_HOST), [("consul", "main")]),
    # What the cabify role's entry points get from branch.yml: strings from -e, templated values.
    "cabify-stop": (_tasks_from_play("cabify", "stop.yml", {"cabify_branch": "feature-x",
                                                            "cabify_stop_production": "{{ 'false' | bool }}"}),
                    [("cabify", "stop.yml")]),
    "cabify-build": (_tasks_from_play("cabify", "build", {"cabify_version": "feature-x-0a1b2c3d4e5f"}),
                     [("cabify", "build")]),
}


@pytest.mark.parametrize(("play", "validated"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_ansible_accepts_the_defaults(
    play: dict[str, Any], validated: list[tuple[str, str]], tmp_path: Path, ansible_env: dict[str, str]
) -> None:
    returncode, output = _validate(tmp_path, ansible_env, play)
    assert returncode == 0, output[-3000:]
    assert VALIDATION.findall(output) == validated, output[-3000:]
    # Nothing but the validation ran.
    assert re.findall(r"^TASK \[", output, re.M) == ["TASK ["] * len(validated), output[-3000:]


def _site_roles() -> list[str]:
    plays = yaml.safe_load((ANSIBLE_DIR / "site.yml").read_text())
    return [role["role"] for play in plays for role in play.get("roles", [])]


@pytest.mark.parametrize("inventory", INVENTORIES)
def test_site_yml_values_pass_the_validation(inventory: str, tmp_path: Path, ansible_env: dict[str, str]) -> None:
    """site.yml with each inventory, run only as far as the validation (tags that match nothing), on
    this machine: every host connects locally and gathers this machine's facts, as render.yml does."""
    env = {**ansible_env, "ANSIBLE_GATHERING": "smart"}  # the facts once per host, not once per play
    args = [tool("ansible-playbook"), "-i", f"inventories/{inventory}", "site.yml", "--tags", NO_TAGS,
            "-e", "ansible_connection=local", "-e", "ansible_become=false",
            "-e", json.dumps({"ansible_python_interpreter": "{{ ansible_playbook_python }}"}),
            # Vagrant inventories make their secrets with password lookups: keep them here.
            "-e", f"vagrant_secrets_dir={tmp_path / 'secrets'}"]
    if inventory == "cluster.example":
        args += ["-e", "@inventories/cluster.example/group_vars/all/vault.yml.example"]
    proc = run(args, timeout=240, cwd=ANSIBLE_DIR, env=env)
    assert proc.returncode == 0, tail(proc, 80)
    validated = {role for role, entry in VALIDATION.findall(proc.stdout) if entry == "main"}
    # The one Vagrant node floats no address: its keepalived group is empty, the play has no host.
    expected = set(_site_roles()) - ({"keepalived"} if inventory == "vagrant" else set())
    assert validated == expected, tail(proc, 80)
    assert not re.search(r"^fatal:", proc.stdout, re.M), tail(proc, 80)
