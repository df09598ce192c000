"""One haproxy-sync + HAProxy in a directory of its own: its paths, its ports and its config.toml.

The sandbox, the tests and the benches each describe their setup as a :class:`Workdir` and write it,
instead of each writing config.toml by hand. What every such setup shares (the files in the
directory, HAProxy as the current user, logs to stderr, backends on this machine) is the default;
``settings`` overrides or adds keys, section by section, as Python values written as TOML.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

HOST = "127.0.0.1"

Sections = Mapping[str, Mapping[str, Any]]


def merged(base: Sections, *overrides: Sections) -> dict[str, dict[str, Any]]:
    """``base`` with each override's keys replacing or adding to those of the same section."""
    result = {name: dict(keys) for name, keys in base.items()}
    for override in overrides:
        for name, keys in override.items():
            result.setdefault(name, {}).update(keys)
    return result


def parse_sections(text: str, section: str = "") -> dict[str, dict[str, Any]]:
    """TOML text as sections (keys before any header belong to ``section``): for callers that hold
    their overrides as config.toml lines. Raises ``tomllib.TOMLDecodeError`` on bad TOML."""
    parsed = tomllib.loads(f"[{section}]\n{text}" if section else text)
    return {name: dict(keys) for name, keys in parsed.items() if isinstance(keys, dict)}


class WorkdirPaths:
    """Where a setup's files are, below its ``root`` (shared by :class:`Workdir` and the tests' layouts)."""

    root: Path

    @property
    def config_toml(self) -> Path:
        return self.root / "config.toml"

    @property
    def haproxy_cfg(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def master_socket(self) -> Path:
        return self.root / "master.sock"

    @property
    def stats_socket(self) -> Path:
        return self.root / "admin.sock"

    @property
    def server_state_file(self) -> Path:
        return self.root / "server-state"

    @property
    def routes_map(self) -> Path:
        """Where the default settings put the routes map: next to haproxy.cfg."""
        return self.root / "routes.map"


@dataclass(frozen=True)
class Workdir(WorkdirPaths):
    """The files and ports of one setup; ``write`` puts its config.toml in ``root``."""

    root: Path
    consul_url: str
    http_port: int
    stats_port: int
    metrics_port: int | None = None  # None: no metrics server (metrics.listen = "")
    haproxy_binary: str = "haproxy"
    services: tuple[Mapping[str, Any], ...] = ({"name": "cabify"},)
    settings: Sections = field(default_factory=dict)  # overrides, {section: {key: value}}

    @property
    def metrics_url(self) -> str:
        return f"http://{HOST}:{self.metrics_port}" if self.metrics_port else ""

    def sections(self) -> dict[str, dict[str, Any]]:
        """The whole config, defaults first, then ``settings``."""
        base: dict[str, dict[str, Any]] = {
            "consul": {"address": self.consul_url},
            "haproxy": {
                "binary": self.haproxy_binary,
                "config_path": str(self.haproxy_cfg),
                "master_socket": str(self.master_socket),
                "stats_socket": str(self.stats_socket),
                "server_state_file": str(self.server_state_file),
                "http_bind": f"{HOST}:{self.http_port}",
                "stats_bind": f"{HOST}:{self.stats_port}",
                "user": "",
                "group": "",
                "log_target": "stderr format short local0 notice",
            },
            "sync": {"networks": ["127.0.0.0/8"]},  # the backends run on this machine
            "metrics": {"listen": f"{HOST}:{self.metrics_port}" if self.metrics_port else ""},
        }
        return merged(base, self.settings)

    def text(self) -> str:
        return tomli_w.dumps({**self.sections(), "services": [dict(s) for s in self.services]})

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_toml.write_text(self.text())
        return self.config_toml
