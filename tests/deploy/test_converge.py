"""Converge the haproxy and haproxy_sync roles on this machine, twice, and check what they wrote.

Service management is off and every path the roles write is a role variable pointed into a
temporary directory, so nothing lands in /etc, /opt or /run. What the converge may change on the
machine itself is harmless: the `haproxy` and `python3-venv` packages, and the haproxy-sync system
user and group."""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import ANSIBLE_DIR, REPO, run, tail, tool

# The converge installs a venv (and may apt-get install): past pytest's default per-test timeout.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(900)]

TOKEN = "3f1c1f9e-6d8b-4b7e-9d55-0c6a1f2b7e10"  # a made-up token: checks where it goes, never used
RECAP = re.compile(r"^localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
# Real paths the converge must leave alone (the roles' defaults).
REAL_PATHS = [
    Path("/etc/haproxy/haproxy.cfg"),
    Path("/etc/default/haproxy"),
    Path("/etc/haproxy-sync"),
    Path("/opt/haproxy-sync"),
    Path("/etc/systemd/system/haproxy-sync.service"),
    Path("/var/lib/haproxy/server-state"),
]


@dataclass
class Converge:
    root: Path
    variables: dict[str, object]
    first: subprocess.CompletedProcess[str]
    second: subprocess.CompletedProcess[str]

    def path(self, name: str) -> Path:
        return Path(str(self.variables[name]))


def _snapshot(paths: list[Path]) -> dict[Path, tuple[int, int] | None]:
    result: dict[Path, tuple[int, int] | None] = {}
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            result[path] = None
        else:
            result[path] = (st.st_mtime_ns, st.st_ino)
    return result


def _snapshot_source(dest: Path) -> Path:
    dest.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    shutil.copytree(REPO / "haproxy_sync", dest / "haproxy_sync",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def _playbook(env: dict[str, str], inventory: Path, extra_vars: Path) -> subprocess.CompletedProcess[str]:
    return run(
        [tool("ansible-playbook"), "-i", str(inventory), "-e", f"@{extra_vars}",
         str(REPO / "tests" / "deploy" / "converge.yml")],
        timeout=300,
        cwd=ANSIBLE_DIR,
        env=env,
    )


def _why(proc: subprocess.CompletedProcess[str]) -> str:
    text = proc.stdout + proc.stderr
    if "systemd-unit` failed" in text:
        return ("haproxy-sync cannot print its systemd unit yet (`haproxy-sync systemd-unit`, issue 6); "
                "the role installs the unit the package prints and will not fake one")
    if "haproxy_sync.cli" in text or "No such command" in text:
        return "the installed haproxy-sync lacks a command the role runs (`check` or `systemd-unit`)"
    return "the converge failed"


@pytest.fixture(scope="module")
def converge(tmp_path_factory: pytest.TempPathFactory, ansible_env: dict[str, str]) -> Converge:
    if os.geteuid() != 0:
        pytest.skip("the converge installs apt packages and creates system users: run it as root")
    if shutil.which("apt-get") is None or shutil.which("dpkg-query") is None:
        pytest.skip("the roles target Debian/Ubuntu: no apt-get here")
    root = tmp_path_factory.mktemp("converge")
    # A snapshot of the package source: the role's "path" install from it, as from /vagrant, while
    # edits to the working tree during the run (or pip's in-tree build dir) cannot interfere.
    source = _snapshot_source(root / "src")
    variables: dict[str, object] = {
        "haproxy_manage_service": False,
        "haproxy_config_dir": str(root / "etc/haproxy"),
        "haproxy_defaults_file": str(root / "etc/default/haproxy"),
        "haproxy_server_state_file": str(root / "var/lib/haproxy/server-state"),
        "haproxy_sync_manage_service": False,
        "haproxy_sync_install_source": "path",
        "haproxy_sync_source_path": str(source),
        "haproxy_sync_venv_dir": str(root / "opt/haproxy-sync"),
        "haproxy_sync_config_dir": str(root / "etc/haproxy-sync"),
        "haproxy_sync_systemd_unit_dir": str(root / "etc/systemd/system"),
        "haproxy_sync_server_state_file": str(root / "var/lib/haproxy/server-state"),
        "haproxy_sync_haproxy_config_path": str(root / "etc/haproxy/haproxy.cfg"),
        "haproxy_sync_consul_token": TOKEN,
    }
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    extra_vars = root / "vars.json"
    extra_vars.write_text(json.dumps(variables))
    inventory = root / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")

    before = _snapshot(REAL_PATHS)
    first = _playbook(ansible_env, inventory, extra_vars)
    if first.returncode != 0:
        pytest.fail(f"first converge: {_why(first)} (exit {first.returncode})\n{tail(first)}")
    second = _playbook(ansible_env, inventory, extra_vars)
    if second.returncode != 0:
        pytest.fail(f"second converge: {_why(second)} (exit {second.returncode})\n{tail(second)}")
    assert _snapshot(REAL_PATHS) == before, "the converge touched a real path outside its temporary root"
    return Converge(root, variables, first, second)


def _recap(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    found = RECAP.findall(proc.stdout)
    assert found, f"no PLAY RECAP in the output:\n{tail(proc)}"
    ok, changed, unreachable, failed = map(int, found[-1])
    return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}


def _changed_tasks(output: str) -> list[str]:
    tasks, current = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:"):
            tasks.append(current)
    return tasks


def _owner(path: Path) -> tuple[str, str, int]:
    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, stat.S_IMODE(st.st_mode)


def test_first_converge_installs_and_writes(converge: Converge) -> None:
    recap = _recap(converge.first)
    assert recap["failed"] == 0
    assert recap["changed"] > 0


def test_second_converge_changes_nothing(converge: Converge) -> None:
    recap = _recap(converge.second)
    changed = _changed_tasks(converge.second.stdout)
    assert recap["changed"] == 0, f"not idempotent: {recap}; changed tasks: {changed}\n{tail(converge.second)}"
    assert recap["failed"] == 0


def test_config_toml_says_what_the_role_was_given(converge: Converge) -> None:
    path = converge.path("haproxy_sync_config_dir") / "config.toml"
    config = tomllib.loads(path.read_text())
    assert set(config) == {"log", "consul", "haproxy", "sync", "discovery", "metrics", "services"}
    assert config["log"] == {"level": "info", "format": "text"}
    consul = config["consul"]
    assert consul["address"] == "http://127.0.0.1:8500"
    assert consul["token_file"] == str(converge.path("haproxy_sync_config_dir") / "consul.token")
    assert "token" not in consul, "the token goes in token_file, never in config.toml"
    assert (consul["wait"], consul["backoff_max"]) == ("5m", "30s")
    haproxy = config["haproxy"]
    assert haproxy["config_path"] == str(converge.path("haproxy_config_dir") / "haproxy.cfg")
    assert haproxy["master_socket"] == "/run/haproxy-master.sock"
    assert haproxy["stats_socket"] == "/run/haproxy/admin.sock"
    # The file the role creates is the one the daemon writes (it once wrote the default path instead).
    assert haproxy["server_state_file"] == str(converge.path("haproxy_sync_server_state_file"))
    assert haproxy["reload_command"] == []
    assert (haproxy["http_bind"], haproxy["stats_bind"], haproxy["maxconn"]) == ("*:80", "127.0.0.1:8404", 2000)
    assert config["sync"] == {"wait_min": "10ms", "wait_max": "1s", "networks": []}
    assert config["discovery"] == {"hosts": ["*.cabify.internal"]}, "registrants claim branch hosts only"
    assert config["metrics"] == {"listen": "127.0.0.1:9725"}
    assert config["services"] == [{"name": "cabify", "balance": "roundrobin", "canary_share": "10%",
                                   "canary_tag": "canary", "health_path": "/health"}], "the canary follows cabify's"
    assert TOKEN not in path.read_text()


def test_token_file_is_readable_by_haproxy_sync_only(converge: Converge) -> None:
    path = converge.path("haproxy_sync_config_dir") / "consul.token"
    assert path.read_text().strip() == TOKEN
    assert _owner(path) == ("root", "haproxy-sync", 0o640)


def test_modes_and_owners(converge: Converge) -> None:
    config_dir = converge.path("haproxy_sync_config_dir")
    haproxy_dir = converge.path("haproxy_config_dir")
    expected = {
        config_dir: ("root", "haproxy-sync", 0o750),
        config_dir / "config.toml": ("root", "haproxy-sync", 0o640),
        # haproxy-sync swaps haproxy.cfg by rename here as the owner; never group-writable, setgid.
        haproxy_dir: ("haproxy-sync", "haproxy", 0o2755),
        converge.path("haproxy_sync_server_state_file").parent: ("haproxy-sync", "root", 0o755),
        haproxy_dir / "haproxy.cfg": ("root", "haproxy", 0o640),
        converge.path("haproxy_defaults_file"): ("root", "root", 0o644),
        converge.path("haproxy_sync_systemd_unit_dir") / "haproxy-sync.service": ("root", "root", 0o644),
        converge.path("haproxy_sync_server_state_file"): ("haproxy-sync", "haproxy", 0o640),
    }
    assert {path: _owner(path) for path in expected} == expected


def _writable_by(path: Path, user: str) -> bool:
    """Whether ``user``, with its groups, may write ``path`` by its owner, group and mode bits."""
    account = pwd.getpwnam(user)
    groups = {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    st = path.lstat()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == account.pw_uid:
        return bool(mode & 0o200)
    if st.st_gid in groups:
        return bool(mode & 0o020)
    return bool(mode & 0o002)


def test_haproxy_workers_cannot_write_what_haproxy_sync_writes(converge: Converge) -> None:
    """HAProxy's workers run as `haproxy`: a directory or file they could write would let them plant
    the config (or a link) that the root master loads on its next reload."""
    config_dir = converge.path("haproxy_config_dir")
    state_file = converge.path("haproxy_sync_server_state_file")
    paths = [config_dir, *sorted(config_dir.iterdir()), state_file.parent, state_file]
    assert not [p for p in paths if _writable_by(p, "haproxy")], {p: _owner(p) for p in paths}
    assert not [p for p in paths if p.is_symlink()]
    # ... while haproxy-sync still replaces its files there by rename.
    assert _writable_by(config_dir, "haproxy-sync") and _writable_by(state_file.parent, "haproxy-sync")


def test_service_user_is_in_the_haproxy_group(converge: Converge) -> None:
    user = pwd.getpwnam("haproxy-sync")
    assert grp.getgrgid(user.pw_gid).gr_name == "haproxy-sync"
    assert "haproxy-sync" in grp.getgrnam("haproxy").gr_mem
    assert user.pw_shell.endswith("nologin")


def test_haproxy_command_line_binds_the_master_socket_for_the_group(converge: Converge) -> None:
    text = converge.path("haproxy_defaults_file").read_text()
    assert 'EXTRAOPTS="-S /run/haproxy-master.sock,mode,660,group,haproxy"' in text
    assert f'CONFIG="{converge.path("haproxy_config_dir") / "haproxy.cfg"}"' in text


def test_initial_haproxy_cfg_passes_haproxy_check(converge: Converge) -> None:
    cfg = converge.path("haproxy_config_dir") / "haproxy.cfg"
    text = cfg.read_text()
    assert "stats socket /run/haproxy/admin.sock mode 660 level admin group haproxy" in text
    assert "use-service prometheus-exporter" in text
    assert "bind 127.0.0.1:8404" in text
    assert "master-worker" in text
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    proc = run([haproxy, "-c", "-f", str(cfg)], timeout=30)
    assert proc.returncode == 0, tail(proc)
    assert "WARNING" not in proc.stdout + proc.stderr, tail(proc)


def test_unit_comes_from_the_package(converge: Converge) -> None:
    unit = (converge.path("haproxy_sync_systemd_unit_dir") / "haproxy-sync.service").read_text()
    binary = converge.path("haproxy_sync_venv_dir") / "bin" / "haproxy-sync"
    printed = run(
        [str(binary), "systemd-unit", "--exec-path", str(binary), "--user", "haproxy-sync",
         "--group", "haproxy", "--config", str(converge.path("haproxy_sync_config_dir") / "config.toml")],
        timeout=60,
    )
    assert printed.returncode == 0, tail(printed)
    assert unit.strip() == printed.stdout.strip()
    assert re.search(r"^Type=notify$", unit, re.M)
    assert re.search(rf"^ExecStart={re.escape(str(binary))}\b", unit, re.M)
    assert re.search(r"^User=haproxy-sync$", unit, re.M)
    assert re.search(r"^SupplementaryGroups=haproxy$", unit, re.M)
    assert not re.search(r"^Group=", unit, re.M), "the user's own group owns its config (no Group=)"
    assert re.search(r"^ExecReload=.*(HUP|kill)", unit, re.M)


def test_venv_runs_haproxy_sync(converge: Converge) -> None:
    venv = converge.path("haproxy_sync_venv_dir")
    proc = run([str(venv / "bin" / "haproxy-sync"), "--help"], timeout=60)
    assert proc.returncode == 0, tail(proc)
    assert (venv / ".haproxy-sync-source").read_text().strip()


def test_unit_passes_systemd_analyze_verify(converge: Converge) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = converge.path("haproxy_sync_systemd_unit_dir") / "haproxy-sync.service"
    proc = run([analyze, "verify", str(unit)], timeout=60)
    assert proc.returncode == 0, tail(proc)


def _show_proc(socket_path: Path) -> str:
    """``show proc`` on the master CLI, read until the worker lines or the end (one recv may be a part)."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(str(socket_path))
        client.sendall(b"show proc\n")
        answer = b""
        while b"# programs" not in answer and (chunk := client.recv(4096)):
            answer += chunk
    return answer.decode()


def test_master_socket_options_give_the_haproxy_group_the_master_cli(converge: Converge, tmp_path: Path) -> None:
    """Starts a real master-worker HAProxy with the EXTRAOPTS the role wrote (socket moved into
    tmp_path) and checks the socket's mode and group, and that it answers `show proc`."""
    text = converge.path("haproxy_defaults_file").read_text()
    match = re.search(r'^EXTRAOPTS="([^"]*)"', text, re.M)
    assert match
    socket_path = tmp_path / "master.sock"
    extra = match.group(1).replace("/run/haproxy-master.sock", str(socket_path)).split()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "global\n    master-worker\ndefaults\n    mode http\n    timeout connect 1s\n"
        f"    timeout client 1s\n    timeout server 1s\nfrontend f\n    bind 127.0.0.1:{port}\n"
    )
    pidfile = tmp_path / "haproxy.pid"
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    proc = run([haproxy, "-W", "-D", "-p", str(pidfile), "-f", str(cfg), *extra], timeout=30)
    assert proc.returncode == 0, tail(proc)
    try:
        deadline = time.monotonic() + 30
        answer = ""
        while "worker" not in answer:
            try:
                answer = _show_proc(socket_path)
            except OSError:  # not there yet, refused, reset or timed out while HAProxy starts: again
                answer = ""
            if "worker" not in answer and time.monotonic() > deadline:
                raise AssertionError(f"the master CLI named no worker within 30s: {answer!r}")
            time.sleep(0.1)
        assert "master" in answer
        st = socket_path.stat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert grp.getgrgid(st.st_gid).gr_name == "haproxy"
    finally:
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGTERM)
