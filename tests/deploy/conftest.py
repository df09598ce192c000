"""Helpers shared by the deployment-layer tests: repository paths, the venv's tools, a bounded
subprocess runner, an Ansible environment that writes only under pytest's temporary dirs, promtool,
and one real edge's scrapes for the monitoring tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hcl2
import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import App, Stack

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "ansible"
NOMAD_DIR = REPO / "nomad"
APP_DIR = ANSIBLE_DIR / "roles" / "cabify" / "files"
VENV_BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of a tool from the `deploy` extra: the venv's own first, then PATH."""
    candidate = VENV_BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: install the deploy extra (pip install -e '.[test,deploy]')")
    return found


def run(
    argv: list[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs argv to completion, bounded by timeout, with ``input`` on stdin (else none); a timeout fails
    the test with the command."""
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"timed out after {timeout:.0f}s: {' '.join(argv)}\n{exc.stdout or ''}{exc.stderr or ''}")


def tail(proc: subprocess.CompletedProcess[str], lines: int = 60) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def ansible_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for ansible-* commands: this repo's ansible.cfg, no colour, no vault password,
    and Ansible's own scratch files under a temporary directory instead of ~/.ansible."""
    home = tmp_path_factory.mktemp("ansible-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_CONFIG=str(ANSIBLE_DIR / "ansible.cfg"),
        ANSIBLE_ROLES_PATH=str(ANSIBLE_DIR / "roles"),
        ANSIBLE_HOME=str(home),
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}{os.pathsep}/usr/sbin{os.pathsep}/sbin",
        PY_COLORS="0",
    )
    return env


def hcl_plain(value: Any) -> Any:
    """python-hcl2's output without its markers: strings and block labels unquoted."""
    if isinstance(value, dict):
        return {hcl_plain(k): hcl_plain(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [hcl_plain(v) for v in value]
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load_hcl(path: Path) -> dict[str, Any]:
    with path.open() as handle:
        return hcl_plain(hcl2.load(handle))


def hcl_block(blocks: list[dict[str, Any]], label: str) -> dict[str, Any]:
    """The body of the labelled block among blocks (e.g. job "cabify")."""
    for block in blocks:
        if label in block:
            return block[label]
    raise AssertionError(f"no block labelled {label!r} in {[list(b) for b in blocks]}")


PROMTOOL_CACHE = REPO / ".cache" / "promtool"
PROMTOOL_HOW = "scripts/test fetches it (ensure_promtool in scripts/bootstrap.sh: Debian's prometheus package)"


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool: $HAPROXY_SYNC_PROMTOOL (scripts/bootstrap.sh's ensure_promtool), else the newest in
    .cache/promtool/, else one on PATH. Missing, the test is skipped, except under CI, where bootstrap
    ran and its absence is a failure: a CI run must not pass by checking no rule."""
    named = os.environ.get("HAPROXY_SYNC_PROMTOOL")
    if named:
        assert os.access(named, os.X_OK), f"HAPROXY_SYNC_PROMTOOL={named} is not an executable file"
        return named
    cached = sorted(PROMTOOL_CACHE.glob("*/promtool"))
    found = str(cached[-1]) if cached else shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"promtool not found under CI: {PROMTOOL_HOW}")
        pytest.skip(f"promtool not found: {PROMTOOL_HOW}")
    return found


@dataclass(frozen=True)
class LiveScrapes:
    """One real edge's two /metrics answers: haproxy-sync's, and HAProxy's exporter as the monitoring
    role scrapes it (``?no-maint=``)."""

    haproxy_sync: str
    haproxy: str


@pytest.fixture(scope="session")
def live_scrapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveScrapes]:
    """A real daemon against devconsul and a real HAProxy (tests/helpers.Stack, as the integration
    tests start it), scraped once for every test that checks names against what is really exported."""
    if haproxy.find_binary("haproxy") is None:
        pytest.skip("HAProxy is not installed")
    consul = DevConsulThread(port=0, check_update_interval=0)
    consul.start()
    apps = [App(f"cabify-{i}") for i in (1, 2, 3)]
    try:
        with ExitStack() as exits:
            stack = Stack(tmp_path_factory.mktemp("live-scrape"), consul, apps, exits)
            yield LiveScrapes(
                haproxy_sync=_get(f"http://127.0.0.1:{stack.layout.metrics_port}/metrics"),
                haproxy=_get(f"http://127.0.0.1:{stack.layout.stats_port}/metrics?no-maint="),
            )
    finally:
        for app in apps:
            app.stop()
        consul.stop()


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()
