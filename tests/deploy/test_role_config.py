"""Every setting is reachable from the haproxy_sync role: haproxy_sync_config (a dict merged over the
role's variables) reaches every key of the configuration reference, the role's TOML filter escapes
whatever a string holds, and the file the role renders passes `haproxy-sync check`."""

from __future__ import annotations

import importlib.util
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from haproxy_sync import haproxy
from haproxy_sync.config import SCHEMA, SERVICE_SCHEMA

from .conftest import ANSIBLE_DIR, run, tail, tool

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

_spec = importlib.util.spec_from_file_location(
    "haproxy_sync_toml", ANSIBLE_DIR / "roles/haproxy_sync/filter_plugins/haproxy_sync_toml.py")
assert _spec is not None and _spec.loader is not None
toml_filter = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toml_filter)

HOSTILE = [
    'a"b', "back\\slash", "line\nbreak", "cr\rlf", "nul\x00", "del\x7f", "tab\t", "\u2028sep", "é ü 漢",
    '"\n[haproxy]\nbinary = "/bin/sh', "x\n[[services]]\nname = \"evil\"", "'''", '"""', "#comment", "${x}",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_a_hostile_string_stays_one_value(text: str) -> None:
    rendered = toml_filter.to_toml({"log": {"level": text}, "services": [{"name": text, "host": text}]})
    parsed = tomllib.loads(rendered)
    assert parsed == {"log": {"level": text}, "services": [{"name": text, "host": text}]}


@pytest.mark.parametrize(("config", "says"), [
    ({"log": {"level": None}}, "haproxy_sync_config.log.level: null"),
    ({"log": {"a b": 1}}, "key 'a b'"),
    ({"log": "info"}, "haproxy_sync_config.log: expected a table"),
    ({"log": {"x": {"nested": 1}}}, "a dict is not"),
    ({"sync": {"x": float("inf")}}, "not a number TOML can hold"),
    ({"services": {"name": "a"}}, "expected a list"),
])
def test_what_toml_cannot_hold_is_an_error_naming_where(config: dict[str, Any], says: str) -> None:
    with pytest.raises(AnsibleFilterError, match=says.replace("(", r"\(")):
        toml_filter.to_toml(config)


def _every_key(tmp_path: Path) -> dict[str, Any]:
    """A value for every key of the reference: each one's default as a file writes it, paths in tmp_path."""
    config: dict[str, Any] = {
        section: {key: setting.default for key, setting in keys.items() if setting.default is not None}
        for section, keys in SCHEMA.items()
    }
    config["haproxy"].update(binary=haproxy.find_binary("haproxy"), config_path=str(tmp_path / "haproxy.cfg"))
    config["tls"].update(cert_dir=str(tmp_path / "certs"), store_dir=str(tmp_path / "store"))
    config["consul"]["token_file"] = ""
    service = {key: setting.default for key, setting in SERVICE_SCHEMA.items() if setting.default is not None}
    config["services"] = [{**service, "name": "cabify"}, {**service, "name": "shop", "host": "shop.test"}]
    return config


def test_the_role_renders_every_key_of_the_reference_and_check_accepts_it(
    tmp_path: Path, ansible_env: dict[str, str]
) -> None:
    wanted = _every_key(tmp_path)
    playbook = tmp_path / "render.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Render the haproxy_sync role's config.toml with every key set.",
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "roles": [{"role": "haproxy_sync", "when": False}],
        "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
        "tasks": [{"name": "Render config.toml.", "ansible.builtin.template": {
            "src": str(ANSIBLE_DIR / "roles/haproxy_sync/templates/config.toml.j2"),
            "dest": str(tmp_path / "config.toml"), "mode": "0644"}}],
    }]))
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"haproxy_sync_config": wanted}))
    proc = run([tool("ansible-playbook"), "-i", "localhost,", str(playbook), "-e", f"@{extra}"], timeout=120,
               cwd=tmp_path, env=ansible_env)
    assert proc.returncode == 0, tail(proc)
    written = tomllib.loads((tmp_path / "config.toml").read_text())
    expected = {section: {key: str(value) if isinstance(value, Path) else value for key, value in keys.items()}
                for section, keys in wanted.items() if section != "services"}
    for section, keys in expected.items():
        assert written[section] == keys, section
    assert written["services"] == wanted["services"]
    assert {(s, k) for s in SCHEMA for k in SCHEMA[s]} - {(s, k) for s in written if s != "services"
                                                           for k in written[s]} <= {
        (s, k) for s in SCHEMA for k, v in SCHEMA[s].items() if v.default is None}, "every key with a default"
    check = run([sys.executable, "-m", "haproxy_sync.cli", "check", "--config", str(tmp_path / "config.toml")],
                timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("ok: config"), tail(check)
