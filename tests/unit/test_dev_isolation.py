"""The stand-ins in haproxy_sync/dev/ (devconsul, the sandbox, its app) never load in production.

Checked three ways: importing the product loads none of them; the real ``haproxy-sync run``
(``python -m haproxy_sync.cli run``, with ``--once`` and as the daemon until SIGTERM, against a Consul
that refuses connections) imports none of them, by its import-time profile; and no module of the
product imports ``haproxy_sync.dev`` anywhere but the ``dev`` and ``devconsul`` commands of cli.py,
inside their functions. The first two run in fresh interpreters: this one has devconsul loaded
(tests/conftest.py).
"""

from __future__ import annotations

import ast
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import DaemonProcess, cli

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "haproxy_sync"
DEV = PACKAGE / "dev"
#: Where the product may import the stand-ins: these command functions of cli.py, lazily.
ALLOWED = {("cli.py", "dev"), ("cli.py", "devconsul")}

#: What ``python -X importtime`` (here: PYTHONPROFILEIMPORTTIME) writes to stderr for each module imported.
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def is_dev(module: str) -> bool:
    """haproxy_sync.dev and below, and the stand-ins' old names (haproxy_sync.devconsul)."""
    return module.startswith("haproxy_sync.dev")


def python(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          stdin=subprocess.DEVNULL, check=False)


def product_modules() -> list[str]:
    """Every module of the package outside dev/, as an import name."""
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if DEV in path.parents or "__pycache__" in path.parts:
            continue
        parts = path.relative_to(REPO).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture
def closed_consul() -> Iterator[str]:
    """A Consul address that refuses connections: a port held bound but not listening, so no one takes it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{holder.getsockname()[1]}"


@pytest.fixture
def config(tmp_path: Path, closed_consul: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[consul]\naddress = "{closed_consul}"\nbackoff_max = "1s"\n'
        f'[haproxy]\nbinary = "{tmp_path / "no-haproxy"}"\nconfig_path = "{tmp_path / "haproxy.cfg"}"\n'
        f'master_socket = "{tmp_path / "master.sock"}"\nstats_socket = "{tmp_path / "admin.sock"}"\n'
        f'server_state_file = "{tmp_path / "server-state"}"\nuser = ""\ngroup = ""\n'
        '[metrics]\nlisten = ""\n'
        '[[services]]\nname = "web"\n'
    )
    return path


def imported(stderr: str) -> set[str]:
    """Every module a process imported, from its import-time profile."""
    return set(IMPORT_LINE.findall(stderr))


def test_importing_the_cli_loads_no_stand_in() -> None:
    result = python("-c", "import json, sys, haproxy_sync.cli; print(json.dumps(sorted(sys.modules)))")
    assert result.returncode == 0, result.stderr
    modules = json.loads(result.stdout)
    assert "haproxy_sync.cli" in modules
    assert [m for m in modules if is_dev(m)] == []


def test_importing_every_product_module_loads_no_stand_in() -> None:
    names = product_modules()
    assert {"haproxy_sync.cli", "haproxy_sync.daemon", "haproxy_sync.status"} <= set(names)
    assert not any(is_dev(name) for name in names)
    code = f"import importlib, json, sys\nfor name in {names!r}: importlib.import_module(name)\n" \
           "print(json.dumps(sorted(sys.modules)))"
    result = python("-c", code)
    assert result.returncode == 0, result.stderr
    assert [m for m in json.loads(result.stdout) if is_dev(m)] == []


def test_run_once_loads_no_stand_in(config: Path) -> None:
    result = cli("run", "--once", "--config", str(config), env={"PYTHONPROFILEIMPORTTIME": "1"})
    modules = imported(result.stderr)
    # It got as far as reading Consul: settings loaded, the pipeline's run_once called, the client made.
    assert result.returncode == 1 and "(consul.address) refused the connection" in result.stderr, result.stderr[-2000:]
    assert {"haproxy_sync.pipeline", "haproxy_sync.consul", "consul.aio"} <= modules
    assert [m for m in modules if is_dev(m)] == []


def test_the_daemon_loads_no_stand_in(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPROFILEIMPORTTIME", "1")
    daemon = DaemonProcess(config, tmp_path / "daemon.log")
    try:
        # Started, and its watches running against the (unreachable) Consul.
        daemon.wait_for_log("consul watch service=web failing", timeout=30)
    finally:
        code = daemon.stop(timeout=30)
    log = daemon.log()
    modules = imported(log)
    assert code == 0, log[-2000:]
    assert "event=daemon.started started services=web" in log and "event=daemon.stopped stopped" in log, log[-2000:]
    assert {"haproxy_sync.daemon", "haproxy_sync.metrics"} <= modules
    assert [m for m in modules if is_dev(m)] == []


def dev_imports(path: Path) -> list[tuple[str | None, str]]:
    """(enclosing top-level function or None, module) for each import of haproxy_sync.dev in a file.

    Counts ``import haproxy_sync.dev...``, ``from haproxy_sync[.dev...] import ...`` naming it, relative
    imports resolved against the file's package, and any string that is a dev module's name alone
    (``importlib.import_module("haproxy_sync.dev.x")``, ``["-m", "haproxy_sync.dev.app"]``).
    """
    package = ".".join(path.parent.relative_to(REPO).parts)
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str | None, str]] = []

    def named(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [alias.name for alias in node.names]
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([base] if base else [])])
            return [base, *(f"{base}.{alias.name}" for alias in node.names)]
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        return []

    def is_dev_module(name: str) -> bool:
        return name == "haproxy_sync.dev" or name.startswith("haproxy_sync.dev.")

    for top in tree.body:
        scope = top.name if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef) else None
        for node in ast.walk(top):
            for name in named(node):
                if is_dev_module(name):
                    found.append((scope, name))
                    break
    return found


def test_no_product_module_imports_a_stand_in_but_the_dev_commands_lazily() -> None:
    where: dict[tuple[str, str | None], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if DEV in path.parents or "__pycache__" in path.parts:
            continue
        for scope, module in dev_imports(path):
            where.setdefault((str(path.relative_to(PACKAGE)), scope), []).append(module)
    assert set(where) == ALLOWED, where  # == and not <=: the check sees the imports it allows
    assert not (PACKAGE / "devconsul.py").exists() and not (PACKAGE / "sandbox.py").exists()
    assert not (PACKAGE / "sandbox_app.py").exists()
