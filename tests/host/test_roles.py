"""The edge roles converged for real (issue 21 pts 2 and 4): ``common``, ``haproxy`` and ``haproxy_sync``
run by ``ansible-playbook -c local`` inside the box with service management on, haproxy-sync installed
from scripts/release's artifact, then upgraded to a second release and rolled back to the first the way
the role documents it (``haproxy_sync_release`` naming the other artifact).

Why here and not only in tests/deploy: that suite converges the roles on the test machine with services
off, so nothing there ever sees systemd start HAProxy with the role's command line, start haproxy-sync from
the unit the role installs, or the role's handlers in the order a real host runs them. The box is a real
Debian 12 with systemd as PID 1, so what the roles assume of a host is checked against one.

One module-long rollout, four converges in order (A, A again, B, back to A), each run once and observed
before and after: HAProxy's master through ``show proc``, both units' MainPID and InvocationID, the
starts systemd logs for haproxy-sync during the converge, the version that answers, what HAProxy serves.
Consul is a devconsul outside the box on 127.0.0.1, one backend registered in it.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import App, all_passing, devconsul, free_port, http_get, register, wait_until
from tests.host.box import REPO, Box, BuiltRoot
from tests.host.conftest import TIMINGS
from tests.host.edge import BINARY, CONFIG, MASTER_SOCKET, RELEASE_VERSION, UNIT, VENV, Edge, ShowProc, build_release

pytestmark = [pytest.mark.host, pytest.mark.timeout(1800)]

#: The two releases: A is the session's artifact (the tree as it is), B the same tree stamped newer.
A, B = RELEASE_VERSION, "0.0.2.dev0"
STEPS = (("A", A), ("A again", A), ("B", B), ("back to A", A))
#: Inside the box: Ansible's venv, and what each converge reads (the roles, the playbook, the artifacts).
ANSIBLE_VENV = "/opt/ansible"
WORK = "/root/converge"
HAPROXY = "haproxy.service"
#: systemd's catalog id of "Started UNIT" (SD_MESSAGE_UNIT_STARTED): one per successful start of a unit.
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
RESTART_HANDLER = "RUNNING HANDLER [haproxy_sync : Restart haproxy-sync.]"
RECAP = re.compile(r"^\S+\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
CONVERGE_TIMEOUT = 900.0  # the first one installs packages from the Debian mirror: about a minute here


@dataclass(frozen=True)
class Observed:
    """Both services at one moment, as systemd and HAProxy's master tell it."""

    sync_pid: int
    sync_invocation: str
    haproxy_pid: int
    haproxy_invocation: str
    proc: ShowProc


@dataclass(frozen=True)
class Converge:
    """One converge: its output, how long it took, and the host before (None on the first) and after."""

    step: str
    version: str
    proc: subprocess.CompletedProcess[str]
    seconds: float
    before: Observed | None
    after: Observed
    sync_starts: int  # haproxy-sync starts systemd logged while the play ran
    sync_pids: frozenset[int]  # the PIDs haproxy-sync logged from while the play ran
    running: str  # the version /status answers after the play
    says: str  # `<venv>/current/bin/haproxy-sync --version` after the play
    served: frozenset[str]  # what HAProxy answered with after the play

    def recap(self) -> dict[str, int]:
        found = RECAP.findall(self.proc.stdout)
        assert found, f"no PLAY RECAP in the output of converge {self.step}:\n{_tail(self.proc)}"
        ok, changed, unreachable, failed = map(int, found[-1])
        return {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}

    def changed_tasks(self) -> list[str]:
        tasks, current = [], ""
        for line in self.proc.stdout.splitlines():
            if line.startswith(("TASK [", "RUNNING HANDLER [")):
                current = line.split("[", 1)[1].rsplit("]", 1)[0]
            elif line.startswith("changed:"):
                tasks.append(current)
        return tasks


def _tail(proc: subprocess.CompletedProcess[str], lines: int = 80) -> str:
    return "\n".join(((proc.stdout or "") + (proc.stderr or "")).splitlines()[-lines:])


class Rollout:
    """The four converges of :data:`STEPS`, each run once, in order, when a test first asks for it (or for a
    later one), so every test reads the converge it is about whatever order pytest picks."""

    def __init__(self, box: Box, edge: Edge, artifacts: dict[str, str], base_vars: dict[str, Any],
                 suite: str) -> None:
        self.box, self.edge, self.artifacts, self.base_vars, self.suite = box, edge, artifacts, base_vars, suite
        self.done: dict[str, Converge] = {}
        self.failed = ""

    def at(self, step: str) -> Converge:
        for name, version in STEPS:
            if name not in self.done:
                if self.failed:
                    pytest.fail(f"converge {self.failed} failed before converge {step} could run")
                try:
                    self.done[name] = self._converge(name, version)
                except BaseException:
                    self.failed = name
                    raise
            if name == step:
                return self.done[name]
        raise KeyError(step)

    def _converge(self, step: str, version: str) -> Converge:
        before = None if step == "A" else self.observe()
        extra = f"{WORK}/vars-{step.replace(' ', '-')}.json"
        self.box.path(extra).write_text(json.dumps({**self.base_vars, "haproxy_sync_release": self.artifacts[version]}))
        since = time.time()
        started = time.monotonic()
        proc = self.box.run(
            "HOME=/root", f"ANSIBLE_CONFIG={WORK}/ansible/ansible.cfg", f"ANSIBLE_ROLES_PATH={WORK}/ansible/roles",
            "ANSIBLE_NOCOLOR=1", "ANSIBLE_FORCE_COLOR=0", "ANSIBLE_RETRY_FILES_ENABLED=0",
            f"{ANSIBLE_VENV}/bin/ansible-playbook", "-c", "local", "-i", f"{WORK}/inventory.ini", "-e", f"@{extra}",
            f"{WORK}/converge.yml", check=False, timeout=CONVERGE_TIMEOUT)
        seconds = time.monotonic() - started
        (self.box.workdir / f"converge-{step.replace(' ', '-')}.log").write_text(proc.stdout + proc.stderr)
        TIMINGS[f"roles on {self.suite}: converge {step} ({version})"] = f"{seconds:.1f}s"
        assert proc.returncode == 0, f"converge {step} exited {proc.returncode}:\n{_tail(proc)}"
        after = self.observe()
        entries = self._journal(since)
        served = wait_until(lambda: (seen := self.served()) == {"cabify-1"} and seen, 20, interval=0.2,
                            what="HAProxy in the box serving cabify-1")
        return Converge(
            step, version, proc, seconds, before, after,
            sync_starts=sum(1 for e in entries if e.get("MESSAGE_ID") == UNIT_STARTED),
            sync_pids=frozenset(int(e["_PID"]) for e in entries if e.get("_PID") not in (None, "1")),
            running=str(self.edge.status().get("version")),
            says=self.box.run(BINARY, "--version").stdout.strip(),
            served=frozenset(served),
        )

    def _journal(self, since: float) -> list[dict[str, str]]:
        """haproxy-sync's journal since ``since``: systemd's lines about the unit and the daemon's own."""
        self.box.run("journalctl", "--sync", check=False)
        text = self.box.journal("-u", UNIT, f"--since=@{since:.6f}", "-o", "json")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def observe(self) -> Observed:
        return Observed(int(self.box.show(UNIT, "MainPID")), self.box.show(UNIT, "InvocationID"),
                        int(self.box.show(HAPROXY, "MainPID")), self.box.show(HAPROXY, "InvocationID"),
                        self.edge.show_proc())

    def served(self) -> set[str]:
        seen = set()
        for _ in range(4):
            with contextlib.suppress(OSError):
                code, body = http_get(f"http://127.0.0.1:{self.edge.http_port}/")
                if code == 200:
                    seen.add(body.strip())
        return seen


def _suite(image: BuiltRoot) -> str:
    """The Debian suite a root was built from (its build.json), to label this module's timings."""
    return str(json.loads((image.path.parent / "build.json").read_text())["suite"])


@pytest.fixture(scope="module", autouse=True)
def _module_clock(hostbox_image: BuiltRoot) -> Iterator[None]:
    """The module's wall time on one suite, box boot and teardown included (autouse: set up before the box)."""
    started = time.monotonic()
    yield
    TIMINGS[f"roles on {_suite(hostbox_image)}: test module total"] = f"{time.monotonic() - started:.0f}s"


@pytest.fixture(scope="module")
def release_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Release B: the same tree as A, stamped with a newer version, as an upgrade would ship it."""
    started = time.monotonic()
    artifact = build_release(tmp_path_factory.mktemp("release-b"), B, python=sys.executable)
    TIMINGS["roles: scripts/release B"] = f"scripts/release {B} in {time.monotonic() - started:.0f}s"
    return artifact


def _install_ansible(box: Box, wheels: Callable[[str], Path], suite: str) -> None:
    """ansible-core into a venv of the box, from the wheels fetched outside for its Python only (no index)."""
    started = time.monotonic()
    python = box.run("python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])").stdout.strip()
    shutil.copytree(wheels(python), box.path("/root/ansible-wheels"))
    version = metadata.version("ansible-core")
    box.sh(f"python3 -m venv {ANSIBLE_VENV} && {ANSIBLE_VENV}/bin/pip install --quiet --disable-pip-version-check "
           f"--no-index --find-links /root/ansible-wheels ansible-core=={version}", timeout=600)
    TIMINGS[f"roles on {suite}: ansible-core into the box"] = f"{time.monotonic() - started:.1f}s"


def _protect_the_clock(box: Box) -> None:
    """chronyd never disciplines the clock from inside the box: the box is real root in the machine's
    kernel, so the chrony the common role installs and starts would adjust the machine's clock (and fight
    whatever keeps it there). ``-x`` keeps everything else of it (the service runs, the role's task is
    checked); the file is in place before apt installs chrony, whose postinst starts it, and apt keeps it
    (the role's apt runs dpkg with --force-confold)."""
    box.path("/etc/default/chrony").write_text(
        "# tests/host/test_roles.py: never set the clock, which is the machine's (see _protect_the_clock)\n"
        'DAEMON_OPTS="-F 1 -x"\n')


@pytest.fixture(scope="module")
def rollout(box: Box, hostbox_image: BuiltRoot, release_artifact: Path, release_b: Path,
            ansible_wheels: Callable[[str], Path]) -> Iterator[Rollout]:
    """The box with Ansible in it, the roles, the playbook and both artifacts under /root/converge, a
    devconsul outside with cabify-1 registered; the converges themselves run when the tests ask."""
    with contextlib.ExitStack() as stack:
        consul = stack.enter_context(devconsul())
        app = App("cabify-1")
        stack.callback(app.stop)
        register(consul.url, app)
        wait_until(lambda: all_passing(consul.url, 1), 10, what="cabify-1 passing in devconsul")
        suite = _suite(hostbox_image)
        _install_ansible(box, ansible_wheels, suite)
        _protect_the_clock(box)
        work = box.path(WORK)
        shutil.copytree(REPO / "ansible", work / "ansible", ignore=shutil.ignore_patterns(".secrets", ".ansible"))
        shutil.copy(REPO / "tests/host/converge.yml", work / "converge.yml")
        (work / "dist").mkdir()
        artifacts = {}
        for version, artifact in ((A, release_artifact), (B, release_b)):
            shutil.copy(artifact, work / "dist" / artifact.name)
            artifacts[version] = f"{WORK}/dist/{artifact.name}"
        (work / "inventory.ini").write_text(
            "edge-box ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n")
        edge = Edge(box, consul.url, http_port=free_port(), stats_port=free_port(), metrics_port=free_port())
        http, stats = f"127.0.0.1:{edge.http_port}", f"127.0.0.1:{edge.stats_port}"
        base_vars = {
            "haproxy_sync_install_source": "release",
            "haproxy_http_bind": http, "haproxy_sync_haproxy_http_bind": http,
            "haproxy_stats_bind": stats, "haproxy_sync_haproxy_stats_bind": stats,
            "haproxy_sync_metrics_listen": f"127.0.0.1:{edge.metrics_port}",
            "haproxy_sync_consul_address": consul.url,
            # The backend runs outside the box on 127.0.0.1, an address haproxy-sync refuses unless listed.
            "haproxy_sync_networks": ["127.0.0.0/8"],
            "haproxy_sync_ready_retries": 30, "haproxy_sync_ready_delay": 1,
        }
        yield Rollout(box, edge, artifacts, base_vars, suite)
        box.systemctl("stop", UNIT, check=False, timeout=60)


def test_the_first_converge_runs_haproxy_and_haproxy_sync_from_their_units(rollout: Rollout) -> None:
    first = rollout.at("A")
    assert first.recap()["failed"] == 0 and first.recap()["changed"] > 0, first.recap()
    box = rollout.box
    # HAProxy: Debian's own unit, no override, in master-worker mode with the master socket the role asks for.
    assert box.show(HAPROXY, "FragmentPath") in ("/lib/systemd/system/haproxy.service",
                                                 "/usr/lib/systemd/system/haproxy.service")
    assert box.show(HAPROXY, "DropInPaths") == ""
    cmdline = box.run("cat", f"/proc/{first.after.haproxy_pid}/cmdline").stdout.split("\0")
    assert cmdline[:2] == ["/usr/sbin/haproxy", "-Ws"], cmdline
    assert cmdline[cmdline.index("-S") + 1] == f"{MASTER_SOCKET},mode,660,group,haproxy", cmdline
    assert first.after.proc.master == first.after.haproxy_pid and first.after.proc.workers
    # haproxy-sync: the unit the role installed is the one the release prints, and it runs the current link.
    unit = box.run(BINARY, "systemd-unit", "--exec-path", BINARY, "--user", "haproxy-sync", "--group", "haproxy",
                   "--config", CONFIG).stdout
    assert box.path(f"/etc/systemd/system/{UNIT}").read_text() == unit.strip() + "\n"
    assert (box.show(UNIT, "ActiveState"), box.show(UNIT, "SubState")) == ("active", "running")
    assert box.show(UNIT, "UnitFileState") == "enabled"
    assert box.run("readlink", f"{VENV}/current").stdout.strip() == f"{VENV}/releases/{A}"
    cmdline = box.run("cat", f"/proc/{first.after.sync_pid}/cmdline").stdout.split("\0")
    assert BINARY in cmdline and "run" in cmdline, cmdline
    assert first.running == A and first.says.startswith(f"haproxy-sync {A} "), (first.running, first.says)
    code, body = http_get(f"http://127.0.0.1:{rollout.edge.metrics_port}/ready")
    assert code == 200, body
    assert first.served == {"cabify-1"}, "HAProxy serves the backend registered in Consul"


def test_a_second_converge_changes_nothing(rollout: Rollout) -> None:
    again = rollout.at("A again")
    assert again.recap()["changed"] == 0, again.changed_tasks()
    assert RESTART_HANDLER not in again.proc.stdout
    assert again.after == again.before, "neither service restarted or reloaded, HAProxy's master as it was"
    assert again.sync_starts == 0 and again.served == {"cabify-1"}


@pytest.mark.parametrize(("step", "version"), [("B", B), ("back to A", A)])
def test_a_switch_restarts_haproxy_sync_once_and_never_reloads_haproxy(
        rollout: Rollout, step: str, version: str) -> None:
    switch = rollout.at(step)
    assert switch.recap()["failed"] == 0, switch.recap()
    assert switch.proc.stdout.count(RESTART_HANDLER) == 1, switch.changed_tasks()
    before, after = switch.before, switch.after
    assert before is not None
    # haproxy-sync: one start in the journal, one new process, a new invocation.
    assert switch.sync_starts == 1, f"haproxy-sync started {switch.sync_starts} times during converge {step}"
    assert after.sync_pid not in (0, before.sync_pid) and after.sync_invocation != before.sync_invocation
    assert switch.sync_pids - {before.sync_pid} == {after.sync_pid}, switch.sync_pids
    # HAProxy: the same master, the same reload count, the same workers, the same unit invocation.
    assert after.proc == before.proc, f"HAProxy's show proc moved: {before.proc} -> {after.proc}"
    assert (after.haproxy_pid, after.haproxy_invocation) == (before.haproxy_pid, before.haproxy_invocation)
    # The version the link names is the one that runs, and it serves.
    assert rollout.box.run("readlink", f"{VENV}/current").stdout.strip() == f"{VENV}/releases/{version}"
    assert switch.running == version and switch.says.startswith(f"haproxy-sync {version} "), switch.says
    assert switch.served == {"cabify-1"}


def test_rolling_back_reinstalls_nothing(rollout: Rollout) -> None:
    back = rollout.at("back to A")
    changed = back.changed_tasks()
    assert changed == ["haproxy_sync : Point the current link at the release.",
                       "haproxy_sync : Restart haproxy-sync."], changed
    releases = rollout.box.run("ls", f"{VENV}/releases").stdout.split()
    assert sorted(releases) == sorted([A, B]), "B stays for the next upgrade"
