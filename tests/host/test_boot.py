"""The box itself: it boots systemd as PID 1 with journald and Debian's HAProxy running, and its teardown
leaves nothing on the machine, not a process, a mount, a cgroup, nor a changed kernel setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.host.box import Box, BuiltRoot, cgroup2_mount, mounts_under

pytestmark = [pytest.mark.host, pytest.mark.timeout(900)]

#: Kernel settings systemd would change at boot for the whole machine (shared kernel, shared network
#: namespace) if the box let it.
SYSCTLS = ("fs/file-max", "fs/nr_open", "net/unix/max_dgram_qlen")


def test_pid1_is_systemd_and_journald_runs(box: Box) -> None:
    assert box.run("cat", "/proc/1/comm").stdout.strip() == "systemd"
    assert box.run("readlink", "/proc/1/exe").stdout.strip() == "/usr/lib/systemd/systemd"
    assert box.systemctl("is-active", "systemd-journald.service", "dbus.service").stdout.split() == ["active"] * 2
    state = box.systemctl("is-system-running", check=False).stdout.strip()
    failed = box.systemctl("list-units", "--failed", "--plain", "--no-legend").stdout.strip()
    assert state == "running" and failed == "", f"state {state}, failed units:\n{failed}"


def test_a_line_logged_inside_reaches_the_journal(box: Box) -> None:
    box.run("systemd-cat", "-t", "hostbox-test", "-p", "err", "echo", "hello from the box")
    box.run("journalctl", "--sync")
    assert "hello from the box" in box.journal("-t", "hostbox-test", "-p", "err")


#: The HAProxy and systemd each Debian release ships (tests/host/conftest.py SUITES): what the box runs.
SHIPPED = {"debian12": ("HAProxy version 2.6.", "systemd 252 "), "debian13": ("HAProxy version 3.0.", "systemd 257 ")}


def test_the_box_runs_its_releases_own_haproxy_and_systemd(box: Box, request: pytest.FixtureRequest) -> None:
    release = request.node.callspec.params["hostbox_image"]
    haproxy, systemd = SHIPPED[release]
    assert box.run("/usr/sbin/haproxy", "-v").stdout.startswith(haproxy)
    assert box.run("systemctl", "--version").stdout.startswith(systemd)


def test_haproxy_runs_from_debians_unit_in_master_worker_mode(box: Box) -> None:
    assert box.systemctl("is-active", "haproxy.service").stdout.strip() == "active"
    cmdline = box.run("cat", f"/proc/{box.show('haproxy.service', 'MainPID')}/cmdline").stdout.split("\0")
    assert cmdline[:2] == ["/usr/sbin/haproxy", "-Ws"], cmdline
    assert box.show("haproxy.service", "Type") == "notify"
    # The master and its worker, seen from outside in the unit's cgroup: systemd tracks them there.
    assert len(box.unit_pids("haproxy.service")) == 2


def _machine_state() -> dict[str, str]:
    state = {name: Path("/proc/sys", name).read_text().strip() for name in SYSCTLS}
    state["/proc/self/cgroup"] = Path("/proc/self/cgroup").read_text()
    with open("/proc/self/mountinfo") as mountinfo:
        state["cgroup mounts"] = "\n".join(sorted(
            " ".join(line.split()[4:6]) for line in mountinfo if "/sys/fs/cgroup" in line.split()[4]))
    return state


def test_teardown_leaves_nothing_on_the_machine(hostbox_image: BuiltRoot, tmp_path: Path) -> None:
    before = _machine_state()
    second = Box(hostbox_image.path, tmp_path, hostname="hostbox-2")
    try:
        second.boot()
        pid, cgroup, root = second.pid, second.cgroup, second.root
        service_pids = second.unit_pids("haproxy.service") | second.unit_pids("systemd-journald.service")
        assert service_pids and cgroup.is_dir() and (root / "usr/sbin/haproxy").exists()
        assert mounts_under(tmp_path) == [], "the box's mounts are its own namespace's, never the machine's"
    finally:
        second.teardown()
    for gone in {pid} | service_pids:
        with pytest.raises(ProcessLookupError):
            os.kill(gone, 0)
    assert not cgroup.exists(), f"{cgroup} is still there"
    assert mounts_under(tmp_path) == []
    assert not root.exists(), "the copy of the root is deleted"
    assert (hostbox_image.path / "usr/sbin/haproxy").exists(), "the cached root is untouched"
    assert _machine_state() == before
    assert cgroup2_mount() is not None
