"""The unit's promises under a real systemd (issue 21 pt 3): haproxy-sync installed from the release
artifact into a box, run by the unit ``haproxy-sync systemd-unit`` prints, HAProxy from Debian's
haproxy.service, devconsul and the backends outside on 127.0.0.1.

The unit runs as shipped, every directive in force, the mount-namespace ones included (the box makes them
work: test_the_sandbox_directives_are_in_force). The product bugs the box found each keep a test at the end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import App, all_passing, http_get, register, wait_until
from tests.host.box import Box
from tests.host.edge import BINARY, CONFIG, UNIT, Edge, install

pytestmark = [pytest.mark.host, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def installed(box: Box, release_artifact: Path) -> Box:
    """The box with haproxy-sync's release installed and its unit in place."""
    install(box, release_artifact)
    return box


@pytest.fixture
def edge(installed: Box, consul: DevConsulThread) -> Iterator[Edge]:
    """This test's edge: its own ports and devconsul, HAProxy restarted from Debian's config, haproxy-sync
    stopped; stopped again afterwards."""
    this = Edge(installed, consul.url)
    this.reset()
    yield this
    installed.systemctl("stop", UNIT, check=False, timeout=60)
    installed.systemctl("reset-failed", UNIT, check=False)


def _backends(consul: DevConsulThread, make_apps: object, count: int) -> list[App]:
    apps: list[App] = make_apps(count)  # type: ignore[operator]
    for app in apps:
        register(consul.url, app)
    wait_until(lambda: all_passing(consul.url, count), 10, what="the backends passing in devconsul")
    return apps


def _started(edge: Edge, **sections: dict[str, object]) -> int:
    """Config written and ``systemctl start`` done; the daemon's PID in the box."""
    edge.write_config(edge.settings(**sections))
    started = edge.start()
    assert started.returncode == 0, f"{started.stderr}\n{edge.journal()}"
    return edge.main_pid()


def _served_by(edge: Edge, apps: list[App]) -> set[str]:
    """Which backends HAProxy in the box sends requests to, asked from outside (the network is shared)."""
    seen = set()
    for _ in range(4 * len(apps)):
        code, body = http_get(f"http://127.0.0.1:{edge.http_port}/")
        if code == 200:
            seen.add(body.strip())
    return seen


def _seconds(value: str) -> float:
    """A duration as ``systemctl show`` prints it: "30s", "1min 30s", "500ms"."""
    units = {"min": 60.0, "s": 1.0, "ms": 0.001, "us": 0.000001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(min|ms|us|s)", value)
    assert parts, f"not a duration: {value!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def test_start_returns_once_the_first_apply_is_done(edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    apps = _backends(consul, make_apps, 2)
    _started(edge)
    # Nothing is waited for from here on: `systemctl start` returned, so systemd had READY=1, and the
    # daemon sends it after its first apply.
    assert (edge.box.show(UNIT, "ActiveState"), edge.box.show(UNIT, "SubState")) == ("active", "running")
    status = edge.status()
    assert status["last_apply"].startswith("cabify: 2 servers (+2 -0 ~0)"), status
    assert status["last_apply_path"] == "reload", status
    assert edge.box.show(UNIT, "StatusText").startswith("cabify: 2 servers"), "STATUS= reaches systemd too"
    journal = edge.journal("-o", "cat")
    assert journal.index("applied cabify: 2 servers") < journal.index("Started haproxy-sync.service"), journal
    assert wait_until(lambda: _served_by(edge, apps) == {app.instance_id for app in apps}, 20,
                      what="HAProxy in the box serving both backends")
    inside = wait_until(lambda: (p := edge.box.run(BINARY, "status", "--config", CONFIG, check=False)).returncode == 0
                        and p, 20, interval=0.5, what="haproxy-sync status inside exiting 0 (no drift)")
    assert "daemon: ready" in inside.stdout and "last apply: cabify: 2 servers" in inside.stdout, inside.stdout


def test_restart_does_not_reload_haproxy(edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    apps = _backends(consul, make_apps, 2)
    first = _started(edge)
    wait_until(lambda: edge.status()["confirmed"], 20, interval=0.2, what="HAProxy confirmed running the config")
    before, haproxy_pids = edge.show_proc(), edge.box.unit_pids("haproxy.service")
    restarted = edge.box.systemctl("restart", UNIT, check=False, timeout=90)
    assert restarted.returncode == 0, f"{restarted.stderr}\n{edge.journal()}"
    second = edge.main_pid()
    assert second not in (0, first)
    assert edge.show_proc() == before, "same master, same reload count, same worker"
    assert edge.box.unit_pids("haproxy.service") == haproxy_pids, "no process came or went in haproxy.service"
    second_run = edge.journal("-o", "cat", f"_PID={second}")
    assert "reloaded" not in second_run, second_run
    assert _served_by(edge, apps) == {app.instance_id for app in apps}


def test_reload_rereads_the_config_and_keeps_the_running_one_on_a_bad_edit(
        edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    apps = _backends(consul, make_apps, 1)
    pid = _started(edge)
    edge.write_config(edge.settings(log={"level": "debug"}))
    assert edge.box.systemctl("reload", UNIT, check=False).returncode == 0
    wait_until(lambda: "SIGHUP: configuration and template re-read" in edge.journal("-o", "cat"), 20,
               interval=0.2, what="the re-read in the journal")
    assert "SIGHUP: logging now level=debug format=text" in edge.journal("-o", "cat")

    edge.write_config(edge.settings(sync={"no_such_key": "1"}))
    assert edge.box.systemctl("reload", UNIT, check=False).returncode == 0
    rejected = wait_until(lambda: "new configuration rejected, keeping the running one" in (
        text := edge.journal("-p", "err", "-o", "cat")) and text, 20, interval=0.2,
        what="the rejected re-read in the journal at priority err")
    assert "no_such_key" in rejected, rejected
    assert edge.main_pid() == pid and edge.box.show(UNIT, "ActiveState") == "active"
    code, body = http_get(f"http://127.0.0.1:{edge.metrics_port}/ready")
    assert code == 503 and "the last re-read of the configuration was rejected" in body, (code, body)
    assert _served_by(edge, apps) == {apps[0].instance_id}, "HAProxy still serves the running config"


def test_a_stopped_loop_is_restarted_by_the_watchdog(edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    _backends(consul, make_apps, 1)
    pid = _started(edge)
    watchdog = _seconds(edge.box.show(UNIT, "WatchdogUSec"))
    abort = _seconds(edge.box.show(UNIT, "TimeoutAbortUSec"))
    restart = _seconds(edge.box.show(UNIT, "RestartUSec"))
    assert watchdog > 0, "the unit sets WatchdogSec"
    edge.box.systemctl("kill", "--kill-who=main", "--signal=SIGSTOP", UNIT)
    limit = watchdog + abort + restart + 30  # the margin: a start on a busy 2-core machine
    wait_until(lambda: edge.main_pid() not in (0, pid) and edge.box.show(UNIT, "ActiveState") == "active", limit,
               interval=0.5, what=f"a new haproxy-sync within WatchdogSec {watchdog:g}s + abort + restart + 30s")
    journal = edge.journal("-o", "cat")
    assert "Watchdog timeout" in journal, journal
    assert int(edge.box.show(UNIT, "NRestarts")) >= 1


def _open_files(box: Box, pid: int) -> tuple[int, int]:
    line = next(x for x in box.run("cat", f"/proc/{pid}/limits").stdout.splitlines() if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_the_daemon_runs_with_the_units_open_files_limit(edge: Edge, consul: DevConsulThread,
                                                         make_apps: object) -> None:
    _backends(consul, make_apps, 1)
    pid = _started(edge)
    wanted = int(edge.box.show(UNIT, "LimitNOFILE"))
    assert wanted == 65536, "the unit's LimitNOFILE"
    ceiling = _open_files(edge.box, 1)[1]  # what the box's PID 1 may hand out
    if ceiling >= wanted:
        assert _open_files(edge.box, pid) == (wanted, wanted)
        return
    # systemd gives what it can (its setrlimit_closest) when it may not raise its own hard limit.
    assert _open_files(edge.box, pid) == (ceiling, ceiling)
    pytest.skip(f"this machine caps the box's PID 1 at {ceiling} open files (no CAP_SYS_RESOURCE in its bounding "
                f"set), below the unit's {wanted}: the daemon got {ceiling}, as systemd clamps it")


def test_a_broken_config_fails_the_start_with_the_reason_in_the_error_journal(edge: Edge) -> None:
    edge.write_config(edge.settings(sync={"no_such_key": "1"}))
    started = edge.start()
    assert started.returncode != 0, "the start fails"
    assert edge.box.show(UNIT, "Result") == "exit-code"
    assert edge.box.show(UNIT, "ExecMainStatus") == "1"
    errors = edge.journal("-p", "err", "-o", "cat")
    assert "no_such_key" in errors and CONFIG in errors, errors


def test_the_sandbox_directives_are_in_force(edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    _backends(consul, make_apps, 1)
    pid = _started(edge)
    status = edge.box.run("cat", f"/proc/{pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert re.search(r"^Seccomp:\s+2$", status, re.M), "SystemCallFilter and friends: a seccomp filter"
    assert re.search(r"^CapBnd:\s+0+$", status, re.M), "CapabilityBoundingSet= empty"
    uid = edge.box.run("id", "-u", "haproxy-sync").stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s", status, re.M), status
    own, init = (edge.box.run("readlink", f"/proc/{p}/ns/mnt").stdout for p in (pid, 1))
    assert own != init, "a mount namespace of its own: ProtectSystem=, PrivateTmp= and the rest took effect"
    # The daemon's own view of its mounts: point -> (mount options, file system options); the last wins.
    mounts = {}
    for line in edge.box.run("cat", f"/proc/{pid}/mountinfo").stdout.splitlines():
        before, _, after = line.partition(" - ")
        mounts[before.split()[4]] = (before.split()[5].split(","), after.split()[2].split(","))
    assert "ro" in mounts["/"][0], f"ProtectSystem=strict: / read-only, /usr and /etc with it: {mounts}"
    assert "rw" in mounts["/etc/haproxy"][0] and "rw" in mounts["/var/lib/haproxy"][0], "ReadWritePaths="
    assert "/tmp" in mounts and "/var/tmp" in mounts, "PrivateTmp= mounts its own"
    assert "/dev" in mounts and "tmpfs" in edge.box.run("stat", "-f", "-c", "%T", f"/proc/{pid}/root/dev").stdout, \
        "PrivateDevices= gives a /dev of its own"
    assert "hidepid=invisible" in mounts["/proc"][1], "ProtectProc=invisible"


def test_consul_down_at_boot_with_a_last_good_config_still_reaches_ready(
        edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    apps = _backends(consul, make_apps, 1)
    _started(edge)
    wait_until(lambda: edge.status()["confirmed"], 20, interval=0.2, what="HAProxy confirmed running the config")
    # A reboot with Consul's agent not answering: both stopped, HAProxy started again from the last good
    # config on disk, Consul gone (its port refuses), then haproxy-sync started.
    edge.box.systemctl("stop", UNIT, "haproxy.service", timeout=60)
    consul.stop()
    # As after a reboot, the file is older than the worker that reads it by more than show proc's
    # whole-second uptime can blur (running_claim.UPTIME_MARGIN): then the daemon may trust that the
    # worker runs it, the one thing that lets it tell systemd READY without Consul.
    cfg = edge.box.path("/etc/haproxy/haproxy.cfg")
    wait_until(lambda: time.time() - cfg.stat().st_mtime > 4, 10, interval=0.2, what="haproxy.cfg 4 s old")
    edge.box.systemctl("reset-failed", "haproxy.service", check=False)  # the start limit: see Edge.reset
    edge.box.systemctl("start", "haproxy.service", timeout=60)
    assert _served_by(edge, apps) == {apps[0].instance_id}, "HAProxy serves the last good config by itself"
    started = edge.start()
    assert started.returncode == 0, f"{started.stderr}\n{edge.journal('-o', 'cat')}"
    assert edge.box.show(UNIT, "StatusText").startswith("waiting for Consul; HAProxy serves the last good config")
    code, body = http_get(f"http://127.0.0.1:{edge.metrics_port}/ready")
    assert code == 503 and "no good read of cabify from Consul yet" in body, (code, body)
    assert _served_by(edge, apps) == {apps[0].instance_id}


def test_started_together_haproxy_comes_first(edge: Edge, consul: DevConsulThread, make_apps: object) -> None:
    _backends(consul, make_apps, 1)
    edge.write_config(edge.settings())
    edge.box.systemctl("stop", "haproxy.service", timeout=60)
    # One transaction holding both start jobs, as multi-user.target's at boot (`systemctl start A B` would
    # be two, and the first job runs before the second exists): only After=haproxy.service orders them.
    target = edge.box.path("/etc/systemd/system/hostbox-edge.target")
    target.write_text(f"[Unit]\nDescription=both, as at boot\nWants={UNIT} haproxy.service\n")
    edge.box.systemctl("daemon-reload")
    since = time.time()
    started = edge.box.systemctl("start", "hostbox-edge.target", check=False, timeout=90)
    target.unlink()
    assert started.returncode == 0, f"{started.stderr}\n{edge.journal('-o', 'cat')}"
    wait_until(lambda: edge.box.show(UNIT, "ActiveState") == "active", 90, interval=0.2, what=f"{UNIT} active")
    lines = edge.box.journal("_PID=1", f"--since=@{since:.6f}", "-o", "cat").splitlines()
    haproxy_up = lines.index("Started haproxy.service - HAProxy Load Balancer.")
    sync_starting = next(i for i, line in enumerate(lines) if line.startswith("Starting haproxy-sync.service"))
    assert haproxy_up < sync_starting, "\n".join(lines)
    assert edge.status()["last_apply_path"] == "reload", "the first apply found HAProxy's master socket"


# --- the product bugs the box found in the shipped unit, fixed; each test failed on the unit before ---


def test_the_daemon_reads_its_config_as_the_role_installs_it(edge: Edge) -> None:
    """config.toml is 0640 root:haproxy-sync and the user is not listed in its own group (useradd --gid): the
    unit once ran with Group=haproxy, and initgroups() does not add the user's primary group back."""
    assert "haproxy-sync" not in edge.box.run("getent", "group", "haproxy-sync").stdout.rpartition(":")[2]
    edge.write_config(edge.settings())
    started = edge.start()
    assert started.returncode == 0, f"{started.stderr}\n{edge.journal('-o', 'cat')}"
    groups = edge.box.run("cat", f"/proc/{edge.main_pid()}/status").stdout
    gid = edge.box.run("getent", "group", "haproxy-sync").stdout.split(":")[2]
    haproxy_gid = edge.box.run("getent", "group", "haproxy").stdout.split(":")[2]
    assert re.search(rf"^Gid:\s+{gid}\b", groups, re.M), groups
    assert re.search(rf"^Groups:.*\b{haproxy_gid}\b", groups, re.M), "HAProxy's group, for its sockets"


def test_the_shipped_unit_lets_the_daemon_read_the_local_addresses(edge: Edge) -> None:
    """getifaddrs() asks the kernel over AF_NETLINK, which RestrictAddressFamilies= once refused (exit 1)."""
    edge.write_config(edge.settings())
    started = edge.start()
    journal = edge.journal("-o", "cat")
    assert started.returncode == 0, f"{started.stderr}\n{journal}"
    assert "Address family not supported" not in journal


def test_the_shipped_unit_lets_haproxy_check_the_built_in_template(edge: Edge) -> None:
    """The `haproxy -c` the daemon runs inherits the unit's sandbox; MemoryDenyWriteExecute=yes once made
    PCRE2's JIT fail on the template's regexes, and every apply was refused."""
    edge.write_config(edge.settings())
    # Not `systemctl start`: with every apply refused it would wait for TimeoutStartSec (90 s).
    edge.box.systemctl("start", "--no-block", UNIT)
    deadline = time.monotonic() + 30
    while not (outcome := re.search(r"^(applied|apply failed)\b.*", edge.journal("-o", "cat"), re.M)):
        assert time.monotonic() < deadline, f"no apply within 30s:\n{edge.journal('-o', 'cat')}"
        time.sleep(0.2)
    assert outcome.group(1) == "applied", edge.journal("-o", "cat")
    assert "jit compilation failed" not in edge.journal("-o", "cat")
