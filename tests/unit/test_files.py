"""The files haproxy-sync replaces cannot be redirected: no write through a planted link, no link
accepted as a target, no temp file left behind, stale temp files of dead writers cleaned at start.

Everything runs for real on the test's own directory: the real filesystem, the real `haproxy -c`.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.config import ConfigError, load_settings
from tests.helpers import cli

BINARY = haproxy.find_binary("haproxy")
GOOD_CFG = "global\ndefaults\n    mode http\n    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"


def temp_files(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if ".tmp-" in name)


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped): what a killed writer leaves behind."""
    child = subprocess.Popen(["true"])
    child.wait()
    assert not Path(f"/proc/{child.pid}").exists()
    return child.pid


def write_config(tmp_path: Path, **paths: Path) -> Path:
    lines = "".join(f'{key} = "{value}"\n' for key, value in paths.items())
    path = tmp_path / "config.toml"
    path.write_text(f'[haproxy]\nbinary = "{BINARY or "haproxy"}"\n{lines}')
    return path


# --- writes do not follow links ---


def test_link_planted_at_the_old_predictable_temp_name_is_not_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    planted = tmp_path / f".haproxy.cfg.tmp-{os.getpid()}"  # the name the old writer always used
    planted.symlink_to(victim)
    cfg = tmp_path / "haproxy.cfg"

    haproxy.atomic_write(cfg, "new\n")

    assert victim.read_text() == "precious\n"
    assert cfg.read_text() == "new\n" and not cfg.is_symlink()
    assert planted.is_symlink() and os.readlink(planted) == str(victim), "the planted link is left as it was"


def test_temp_name_is_unpredictable_and_carries_the_writers_pid(tmp_path: Path) -> None:
    """A stand-in for `haproxy -c` (a real script) records the name of the candidate it is shown."""
    seen = tmp_path / "seen"
    checker = tmp_path / "check"
    checker.write_text(f'#!/bin/sh\nprintf "%s\\n" "$3" >> {seen}\nexit 0\n')
    checker.chmod(0o755)
    cfg = tmp_path / "haproxy.cfg"
    for text in ("one\n", "two\n"):
        haproxy.atomic_write(cfg, text, binary=str(checker))
    names = [Path(line).name for line in seen.read_text().splitlines()]
    assert len(names) == 2 and names[0] != names[1]
    pattern = re.compile(rf"^\.haproxy\.cfg\.tmp-{os.getpid()}-[a-z0-9_]{{6,}}$")
    assert all(pattern.match(name) for name in names), names
    assert cfg.read_text() == "two\n" and temp_files(tmp_path) == []


# --- a target that is a link is refused ---


def test_symlinked_target_is_refused_with_one_line(tmp_path: Path) -> None:
    real = tmp_path / "real.cfg"
    real.write_text("real\n")
    cfg = tmp_path / "haproxy.cfg"
    cfg.symlink_to(real)
    with pytest.raises(haproxy.HAProxyError) as err:
        haproxy.atomic_write(cfg, "new\n", setting="haproxy.config_path")
    assert str(err.value) == (
        f"{cfg} is a symbolic link (to {real}); haproxy-sync replaces files atomically and will not "
        "write through links: point haproxy.config_path at the real file"
    )
    assert real.read_text() == "real\n" and cfg.is_symlink()
    assert temp_files(tmp_path) == []


@pytest.mark.parametrize("setting", ["config_path", "routes_map", "server_state_file"])
def test_settings_naming_a_link_are_refused_at_load(tmp_path: Path, setting: str) -> None:
    paths = {"config_path": tmp_path / "haproxy.cfg", "routes_map": tmp_path / "routes.map",
             "server_state_file": tmp_path / "server-state"}
    (tmp_path / "elsewhere").write_text("")
    paths[setting].symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, **paths), env={})
    assert err.value.problems == (
        f"{paths[setting]} is a symbolic link (to {tmp_path / 'elsewhere'}); haproxy-sync replaces files "
        f"atomically and will not write through links: point haproxy.{setting} at the real file",
    )


def test_a_linked_last_good_copy_is_refused_at_load(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    haproxy.last_good_path(cfg).symlink_to("/etc/shadow")
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, config_path=cfg, server_state_file=tmp_path / "state"), env={})
    (problem,) = err.value.problems
    assert problem.startswith(f"{cfg}.last-good is a symbolic link (to /etc/shadow); ")
    assert "remove the link" in problem


def test_check_command_refuses_a_linked_config_path_with_one_line(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.symlink_to(tmp_path / "real.cfg")
    proc = cli("check", "--config", str(write_config(tmp_path, config_path=cfg,
                                                        server_state_file=tmp_path / "state")))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"haproxy-sync: config: {cfg} is a symbolic link (to {tmp_path / 'real.cfg'}); haproxy-sync replaces "
        "files atomically and will not write through links: point haproxy.config_path at the real file"
    ]


def test_a_linked_parent_directory_is_fine(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "etc").symlink_to(tmp_path / "real")
    cfg = tmp_path / "etc" / "haproxy.cfg"
    settings = load_settings(write_config(tmp_path, config_path=cfg, server_state_file=tmp_path / "etc" / "s"),
                             env={})
    haproxy.atomic_write(settings.haproxy.config_path, "new\n")
    assert (tmp_path / "real" / "haproxy.cfg").read_text() == "new\n"


def test_reads_of_owned_files_do_not_follow_links(tmp_path: Path) -> None:
    """A reload HAProxy rejects puts `.last-good` back: a link there must not choose what goes back."""
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text("live\n")
    foreign = tmp_path / "foreign"
    foreign.write_text("someone else's config\n")
    haproxy.last_good_path(cfg).symlink_to(foreign)
    with pytest.raises(haproxy.HAProxyError, match=r"last-good is a symbolic link \(to .*foreign\)"):
        haproxy.restore_last_good(cfg)
    assert cfg.read_text() == "live\n"
    assert haproxy.read_text(tmp_path / "absent") is None


# --- no temp file left behind ---


@pytest.mark.skipif(BINARY is None, reason="haproxy is not installed")
def test_no_temp_file_after_haproxy_check_rejects_the_candidate(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(GOOD_CFG)
    with pytest.raises(haproxy.ValidationError, match="haproxy -c rejected"):
        haproxy.atomic_write(cfg, "global\n    no-such-keyword here\n", binary=BINARY)
    assert cfg.read_text() == GOOD_CFG
    assert temp_files(tmp_path) == []


def test_no_temp_file_after_an_os_error(tmp_path: Path) -> None:
    target = tmp_path / "haproxy.cfg"
    target.mkdir()  # the rename over a directory fails with EISDIR, after the temp file was written
    with pytest.raises(haproxy.HAProxyError, match=r"cannot write .*haproxy\.cfg: Is a directory"):
        haproxy.atomic_write(target, "new\n")
    assert temp_files(tmp_path) == []


def test_no_temp_file_after_an_unknown_group(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    with pytest.raises(haproxy.HAProxyError, match="group 'no-such-group-here' does not exist"):
        haproxy.atomic_write(cfg, "new\n", group="no-such-group-here")
    assert not cfg.exists() and temp_files(tmp_path) == []


# --- stale temp files ---


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    etc, state = tmp_path / "etc", tmp_path / "lib"
    etc.mkdir()
    state.mkdir()
    yield etc, state


def test_stale_temp_files_of_all_four_targets_are_removed(tmp_path: Path, layout: tuple[Path, Path]) -> None:
    etc, state = layout
    settings = load_settings(
        write_config(tmp_path, config_path=etc / "haproxy.cfg", server_state_file=state / "server-state"), env={}
    )
    dead = dead_pid()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    stale = [
        etc / f".haproxy.cfg.tmp-{dead}-abc123",
        etc / f".haproxy.cfg.last-good.tmp-{dead}-k2j4l_",
        etc / f".routes.map.tmp-{dead}",  # the old writer's name
        state / f".server-state.tmp-{dead}-zz9",
    ]
    for path in stale:
        path.write_text("half a file")
    link = etc / f".haproxy.cfg.tmp-{dead}-link00"
    link.symlink_to(victim)
    kept = [
        etc / f".haproxy.cfg.tmp-{os.getpid()}-mine00",  # this process's own write in progress
        etc / f".haproxy.cfg.tmp-{os.getppid()}-live00",  # a live writer's
        etc / ".haproxy.cfg.tmp-notapid",
        etc / "haproxy.cfg",
    ]
    for path in kept:
        path.write_text("keep")

    removed = haproxy.remove_stale_temp_files(*haproxy.owned_files(settings.haproxy))

    assert sorted(removed) == sorted([*stale, link])
    assert not any(p.exists() or p.is_symlink() for p in [*stale, link])
    assert victim.read_text() == "precious\n", "removing a planted link never touches its target"
    assert all(p.exists() for p in kept)


def test_cleanup_skips_what_cannot_be_removed(layout: tuple[Path, Path]) -> None:
    etc, state = layout
    dead = dead_pid()
    blocker = etc / f".haproxy.cfg.tmp-{dead}-adir00"
    blocker.mkdir()  # unlink() of a directory fails, even for root
    (blocker / "x").write_text("")
    assert haproxy.remove_stale_temp_files(etc / "haproxy.cfg", state / "absent-dir" / "server-state") == []
    assert blocker.is_dir()


def test_cleanup_in_a_directory_that_refuses_removal_does_not_raise(layout: tuple[Path, Path]) -> None:
    """EACCES/EPERM on unlink: as a normal user a 0555 directory; as root (which ignores modes) the
    immutable flag, where the filesystem has one."""
    etc, _ = layout
    dead = dead_pid()
    stale = etc / f".haproxy.cfg.tmp-{dead}-ro0000"
    stale.write_text("half a file")
    if os.geteuid() != 0:
        etc.chmod(0o555)
        undo = ["chmod", "0755", str(etc)]
    else:
        proc = subprocess.run(["chattr", "+i", str(etc)], capture_output=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"running as root and chattr +i is unavailable here: {proc.stderr.decode().strip()}")
        undo = ["chattr", "-i", str(etc)]
    try:
        assert haproxy.remove_stale_temp_files(etc / "haproxy.cfg") == []
        assert stale.exists()
        with pytest.raises(haproxy.HAProxyError, match="cannot write"):
            haproxy.atomic_write(etc / "haproxy.cfg", "new\n")
    finally:
        subprocess.run(undo, check=True)
    assert temp_files(etc) == [stale.name]
