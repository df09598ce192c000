"""Helpers shared by the deployment-layer tests: repository paths, the venv's tools, a bounded
subprocess runner and an Ansible environment that writes only under pytest's temporary dirs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest

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
) -> subprocess.CompletedProcess[str]:
    """Runs argv to completion, bounded by timeout; a timeout fails the test with the command."""
    try:
        return subprocess.run(
            argv,
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
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
