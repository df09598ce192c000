"""``haproxy_sync_toml``: the role's structured configuration as haproxy-sync's config.toml.

Ansible has no TOML writer, and ``to_json`` is TOML only by luck (JSON's ``\\u`` escapes and numbers
agree with TOML's, ``null`` and nested objects do not). This filter writes exactly the TOML subset
haproxy-sync reads: one table per section, ``[[services]]`` tables, and values that are strings,
booleans, integers, finite floats or lists of them. Strings are TOML basic strings with every quote,
backslash and control character escaped, so no value can end its line or open a table; a key that is
not a bare TOML key, a null, or a nested table is an error naming where it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible.errors import AnsibleFilterError

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _key(key: object, where: str) -> str:
    if not isinstance(key, str) or not _BARE_KEY.fullmatch(key):
        raise AnsibleFilterError(f"haproxy_sync_config{where}: key {key!r} is not a haproxy-sync setting name")
    return key


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnsibleFilterError(f"haproxy_sync_config{where}: {value} is not a number TOML can hold")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(item, f"{where}[{i}]") for i, item in enumerate(value)) + "]"
    if value is None:
        raise AnsibleFilterError(f"haproxy_sync_config{where}: null has no TOML form; remove the key for the default")
    raise AnsibleFilterError(f"haproxy_sync_config{where}: a {type(value).__name__} is not a setting's value")


def _table(keys: Any, where: str) -> list[str]:
    if not isinstance(keys, Mapping):
        raise AnsibleFilterError(f"haproxy_sync_config{where}: expected a table (a dict of settings)")
    return [f"{_key(key, where)} = {_value(value, f'{where}.{key}')}" for key, value in keys.items()]


def to_toml(config: Any) -> str:
    """``{section: {key: value}, "services": [{key: value}, ...]}`` as config.toml's text."""
    if not isinstance(config, Mapping):
        raise AnsibleFilterError("haproxy_sync_config: expected a dict of sections")
    blocks = []
    for section, keys in config.items():
        if section == "services":
            continue
        blocks.append("\n".join([f"[{_key(section, '')}]", *_table(keys, f'.{section}')]))
    services = config.get("services", [])
    if not isinstance(services, Sequence) or isinstance(services, str):
        raise AnsibleFilterError("haproxy_sync_config.services: expected a list of service tables")
    for index, service in enumerate(services):
        blocks.append("\n".join(["[[services]]", *_table(service, f".services[{index}]")]))
    return "\n\n".join(blocks) + "\n"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"haproxy_sync_toml": to_toml}
