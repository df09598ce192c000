"""A host in a box: a Debian root, built once by debootstrap, booted with systemd as PID 1 of namespaces
of its own (issue 21).

Why: the rest of the suite checks the systemd unit only statically (``systemd-analyze verify`` and
``security``) and converges the roles with service management off, so nothing else starts haproxy-sync
under systemd. A box does, with no VM and no Docker: what READY, the watchdog, ``ExecReload``,
``LimitNOFILE`` and the sandbox directives do is then what systemd 252 really does.

How (docs/host-box.md has the whole story):

* :func:`build_root` runs ``debootstrap --variant=minbase`` once per package list and suite into
  ``.cache/hostbox/<key>/root``: built in a temporary directory beside it and renamed into place, under a
  lock, inside a mount and PID namespace of its own, so a killed build leaves neither a half root nor a
  mount nor a process.
* :class:`Box` copies that root (``cp -a``, about a second), then starts ``unshare --pid --fork --mount
  --uts --ipc --cgroup --mount-proc=ROOT/proc`` in a cgroup of its own. Inside that mount namespace it
  binds the root onto itself (systemd's per-service namespacing, ``ProtectSystem=`` and the like, needs
  ``/`` to be a mount point: in a plain chroot they fail with 226/NAMESPACE), binds ``/sys`` read-only
  and ``/dev``, mounts a cgroup2 of the box's own cgroup namespace over ``/sys/fs/cgroup``, makes
  ``/proc/sys`` read-only, and execs ``chroot ROOT /lib/systemd/systemd --system`` with
  ``container=other``. Every mount lives in the box's mount namespace and dies with it.
* The box shares the machine's network namespace: a devconsul on 127.0.0.1 outside is its Consul, and
  the ports HAProxy and the daemon bind inside are reachable from the test.
* :meth:`Box.teardown` kills PID 1 of the box (the kernel then kills every process of the PID
  namespace), waits for it, checks the box's cgroup is empty (killing what is left), removes it, undoes
  any mount under the root that reached the machine's namespace (lazily as a last resort) and only then
  deletes the copy. ``setpriv --pdeathsig`` and ``unshare --kill-child`` take the box down even when
  pytest itself is killed.

What the box must not do to the machine it runs on, and why each piece is there: the host's cgroup v1
hierarchies and its cgroup tmpfs are never shown to the box (its systemd would remount the tmpfs
read-only and mount v1 controllers for the whole machine: seen in the first trial), ``/proc/sys`` is
read-only (PID 1 raises ``fs.file-max`` and ``net.unix.max_dgram_qlen`` of the shared kernel and network
namespace at boot, systemd-sysctl applies Debian's sysctl.d), and :data:`MASKED` units are masked.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache" / "hostbox"

SUITE = "bookworm"
#: What the box is built with: systemd as init, and what the tests run inside (HAProxy from Debian, a
#: Python for haproxy-sync's venv); procps for /bin/kill, which both units' ExecReload= run (every Debian
#: install but minbase has it: Priority important). Part of the cache key: a change builds a new root.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "procps", "python3", "python3-venv", "haproxy", "ca-certificates")
VARIANT = "minbase"

#: PATH inside the box (nsenter passes on the caller's environment, so every command gets a clean one).
BOX_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: The machine's own tools the harness runs outside the box, whatever the caller's PATH.
HOST_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

BUILD_TIMEOUT = 900.0  # debootstrap: about 80 s cold on 2 cores, more on a slow mirror
COPY_TIMEOUT = 180.0
BOOT_TIMEOUT = 90.0  # systemd to running/degraded: a few seconds here
KILL_TIMEOUT = 30.0

#: Units masked in every box, each because it would reach the machine outside the box, or change the box
#: under a test. Nothing of haproxy-sync's or HAProxy's.
MASKED = {
    "getty.target": "gettys would hold the machine's /dev/tty1 and /dev/console (the box binds the host's /dev)",
    "console-getty.service": "the same: the machine's console",
    "getty@.service": "the same: the machine's virtual terminals",
    "systemd-modules-load.service": "it loads modules into the machine's kernel",
    "systemd-sysctl.service": "it writes the shared kernel's settings (refused anyway: /proc/sys is read-only)",
    "systemd-binfmt.service": "binfmt_misc is the whole machine's",
    "proc-sys-fs-binfmt_misc.automount": "the same",
    "apt-daily.timer": "apt would change the box in the middle of a test",
    "apt-daily-upgrade.timer": "the same",
    "e2scrub_all.timer": "it scans the machine's block devices",
    "fstrim.timer": "the same",
}

#: Runs in the box's fresh mount namespace (after unshare mounted its /proc), as the namespace's PID 1
#: until it execs systemd. $1 is the root. Each mount is the box's alone (unshare made the namespace
#: private), so none needs undoing outside.
INNER = r"""
set -eu
R="$1"
# The root a mount point: systemd's per-service mount namespaces (ProtectSystem=, PrivateTmp=,
# BindReadOnlyPaths=, ...) remount "/" and fail with 226/NAMESPACE in a chroot that is only a directory.
mount --rbind "$R" "$R"
# The shared kernel's settings stay as they are: PID 1 and systemd-sysctl would write them.
mount --bind "$R/proc/sys" "$R/proc/sys"
mount -o remount,bind,ro "$R/proc/sys"
# sysfs without the machine's cgroup mounts; the box's own cgroup2 (its cgroup namespace) over them.
mount --bind /sys "$R/sys"
mount -o remount,bind,ro "$R/sys"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup"
mount --rbind /dev "$R/dev"
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin container=other chroot "$R" /lib/systemd/systemd --system
"""

#: Puts itself in the box's cgroup ($1), then becomes unshare; killed with its parent (pytest), and
#: unshare kills the namespace's PID 1 when it dies.
OUTER = (
    'echo $$ > "$1/cgroup.procs" && exec setpriv --pdeathsig KILL -- '
    'unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --mount-proc="$2/proc" -- sh -c "$3" inner "$2"'
)


class BuildFailed(Exception):
    """debootstrap could not build the root; the message has the end of its log."""


def unavailable_reason() -> str | None:
    """Why a box cannot run on this machine (the tests then skip with it), or None."""
    if os.geteuid() != 0:
        return "the host box needs root (debootstrap, mount, unshare, chroot); run the tests as root"
    missing = [tool for tool in ("unshare", "nsenter", "chroot", "mount", "umount", "setpriv", "cp")
               if shutil.which(tool, path=HOST_PATH) is None]
    if missing:
        return f"the host box needs {', '.join(missing)} (util-linux, coreutils)"
    if cgroup2_mount() is None:
        return "the host box needs a cgroup2 hierarchy mounted (for the box's own cgroup); none in /proc/self/mounts"
    return None


def debootstrap_missing_reason() -> str | None:
    """Why a root cannot be built (no debootstrap), or None."""
    if shutil.which("debootstrap", path=HOST_PATH) is None:
        return ("debootstrap is not installed: scripts/test installs it when run as root (ensure_debootstrap in "
                "scripts/bootstrap.sh), or apt-get install debootstrap")
    return None


def cgroup2_mount() -> Path | None:
    """Where the machine mounts its cgroup2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified in hybrid)."""
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def own_cgroup() -> Path:
    """This process's cgroup2 directory, under which the boxes' cgroups go."""
    mount = cgroup2_mount()
    assert mount is not None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return mount


def root_key(suite: str = SUITE, packages: Sequence[str] = PACKAGES, variant: str = VARIANT) -> str:
    """The cache key of a root: its suite, variant and package list, and nothing else."""
    text = json.dumps({"suite": suite, "variant": variant, "packages": sorted(packages)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BuiltRoot:
    """A cached root: where it is, and how long debootstrap took (``cached`` when this run reused it)."""

    path: Path
    key: str
    build_seconds: float
    cached: bool


def mirror() -> str:
    """The Debian archive this machine already uses, as scripts/bootstrap.sh's debian_mirror finds it."""
    proc = subprocess.run(["bash", "-c", f'source "{REPO}/scripts/bootstrap.sh" && debian_mirror'],
                          capture_output=True, text=True, timeout=30, check=False)
    found = proc.stdout.strip()
    return found if proc.returncode == 0 and found.startswith("http") else "http://deb.debian.org/debian"


def build_root(suite: str = SUITE, packages: Sequence[str] = PACKAGES, variant: str = VARIANT,
               timeout: float = BUILD_TIMEOUT) -> BuiltRoot:
    """The root for ``suite`` and ``packages``: the cached one, else built now (once, under a lock).

    A build runs in ``.cache/hostbox/.build-<key>-<pid>/`` and becomes ``<key>/`` by one rename, so a
    reader never sees a half root; a build killed half-way leaves only that temporary directory, which the
    next build removes (under the lock, so never one still being written).
    """
    key = root_key(suite, packages, variant)
    final = CACHE / key
    if (final / "build.json").exists():
        return _cached(final, key)
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / f"{key}.lock", timeout):
        if (final / "build.json").exists():  # another run built it while we waited
            return _cached(final, key)
        reason = debootstrap_missing_reason()
        if reason:
            raise BuildFailed(reason)
        for stale in CACHE.glob(f".build-{key}-*"):
            remove_tree(stale)
        work = CACHE / f".build-{key}-{os.getpid()}"
        work.mkdir()
        log = work / "debootstrap.log"
        started = time.monotonic()
        argv = ["debootstrap", f"--variant={variant}", f"--include={','.join(packages)}", suite,
                str(work / "root"), mirror()]
        try:
            with log.open("w") as out:
                # Its own mount and PID namespaces: debootstrap mounts /proc and /sys inside the target, and
                # a killed build must leave no mount on the machine and no process behind.
                proc = subprocess.run(
                    ["setpriv", "--pdeathsig", "KILL", "--", "unshare", "--mount", "--pid", "--fork", "--kill-child",
                     "--mount-proc", "--", *argv],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout, check=False,
                    env={"PATH": HOST_PATH, "LANG": "C.UTF-8"},
                )
        except subprocess.TimeoutExpired as exc:
            raise BuildFailed(f"debootstrap took more than {timeout:.0f}s; the end of {log}:\n{_tail(log)}") from exc
        if proc.returncode != 0:
            raise BuildFailed(f"debootstrap exited {proc.returncode}: {' '.join(argv)}; "
                              f"the end of {log}:\n{_tail(log)}")
        root = work / "root"
        for needed in ("lib/systemd/systemd", "usr/sbin/haproxy", "usr/bin/python3"):
            if not (root / needed).exists():
                raise BuildFailed(f"debootstrap finished but {needed} is missing in {root}")
        # The downloaded .debs (about 50 MB) are no use to a box and every copy would carry them.
        for deb in (root / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        seconds = time.monotonic() - started
        (work / "build.json").write_text(json.dumps({
            "suite": suite, "variant": variant, "packages": sorted(packages), "key": key,
            "debootstrap_seconds": round(seconds, 1), "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2) + "\n")
        os.rename(work, final)
    return BuiltRoot(final / "root", key, seconds, cached=False)


def _cached(final: Path, key: str) -> BuiltRoot:
    seconds = float(json.loads((final / "build.json").read_text()).get("debootstrap_seconds", 0.0))
    return BuiltRoot(final / "root", key, seconds, cached=True)


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[None]:
    """An exclusive flock on ``path``, waited for at most ``timeout`` (two runs must not build at once)."""
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildFailed(f"another run held {path} for more than {timeout:.0f}s") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or under ``path`` in this (the machine's) mount namespace, deepest first."""
    base = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].encode().decode("unicode_escape")  # octal escapes: \040 is a space
            if point == base or point.startswith(base + "/"):
                found.append(Path(point))
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_all(path: Path) -> list[str]:
    """Undo every mount under ``path`` in the machine's namespace; what had to be lazily unmounted."""
    forced = []
    for point in mounts_under(path):
        proc = subprocess.run(["umount", str(point)], capture_output=True, text=True, timeout=30, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30, check=False)
            forced.append(f"{point} (lazily: {proc.stderr.strip()})")
    return forced


def remove_tree(path: Path) -> None:
    """Delete a box root, never through a mount: refuses while anything is mounted under it, and
    ``rm --one-file-system`` stays off any other file system (a bound /dev or /sys) even so."""
    if not path.exists():
        return
    unmount_all(path)
    left = mounts_under(path)
    if left:
        raise AssertionError(f"not deleting {path}: still mounted under it: {left}")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], check=True, timeout=300,
                   env={"PATH": HOST_PATH})


def _cgroup_pids(cgroup: Path) -> list[int]:
    pids: list[int] = []
    if not cgroup.is_dir():
        return pids
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError):
            pids.extend(int(p) for p in procs.read_text().split())
    return pids


def _remove_cgroup(cgroup: Path) -> None:
    """rmdir the cgroup and its children, deepest first (a cgroup directory holds only kernel files)."""
    if not cgroup.is_dir():
        return
    for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    cgroup.rmdir()


def remove_stale_cgroups() -> None:
    """Empty cgroups of boxes whose pytest was killed before its teardown. Only those of a pytest that is
    gone (the PID in the name): another worker's may be empty because its box is about to start."""
    for stale in own_cgroup().glob("hostbox-*"):
        owner = stale.name.split("-")[1]
        if not (stale.is_dir() and owner.isdigit()) or Path(f"/proc/{owner}").exists() or _cgroup_pids(stale):
            continue
        with contextlib.suppress(OSError):
            _remove_cgroup(stale)


class Box:
    """One booted box: ``boot()``, then ``run()`` commands in it, then ``teardown()`` (always)."""

    def __init__(self, image: Path, workdir: Path, hostname: str = "hostbox") -> None:
        self.image = image
        self.workdir = workdir
        self.root = workdir / "root"
        self.hostname = hostname
        self.log_path = workdir / "box.log"
        self.cgroup = own_cgroup() / f"hostbox-{os.getpid()}-{workdir.name}"
        self.process: subprocess.Popen[bytes] | None = None
        self.pid = 0  # PID 1 of the box, as the machine numbers it
        self.timings: dict[str, float] = {}
        self.state = ""  # what systemctl is-system-running said when the boot was done
        self._torn_down = False

    # --- life cycle ---

    def boot(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Copy the root, start systemd in its namespaces, wait until it is running (or degraded)."""
        atexit.register(self.teardown)  # in case pytest exits without running its finalizers
        started = time.monotonic()
        subprocess.run(["cp", "-a", "--", str(self.image), str(self.root)], check=True, timeout=COPY_TIMEOUT,
                       env={"PATH": HOST_PATH})
        self.timings["copy"] = time.monotonic() - started
        self._prepare()
        remove_stale_cgroups()
        self.cgroup.mkdir()
        started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["sh", "-c", OUTER, "outer", str(self.cgroup), str(self.root), INNER],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env={"PATH": HOST_PATH},
                start_new_session=True,  # Ctrl-C reaches pytest (which tears down), never the box's PID 1
            )
        self.pid = wait_until(self._find_init, timeout, interval=0.05, what="systemd as PID 1 of the box")
        self.timings["exec"] = time.monotonic() - started
        state = wait_until(self._booted, timeout, interval=0.2, what="systemctl is-system-running: running/degraded")
        self.timings["boot"] = time.monotonic() - started
        self.state = state

    def _prepare(self) -> None:
        """What every box gets before it boots: its hostname and the masks of :data:`MASKED`."""
        (self.root / "etc/hostname").write_text(self.hostname + "\n")
        units = self.root / "etc/systemd/system"
        for unit in MASKED:
            link = units / unit
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")
        # journald reads the machine's kernel log otherwise (the same kernel): noise in every journal.
        conf = self.root / "etc/systemd/journald.conf.d"
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "hostbox.conf").write_text("# tests/host/box.py: the kernel log is the machine's, not the box's\n"
                                           "[Journal]\nReadKMsg=no\n")

    def _find_init(self) -> int | None:
        """The machine's PID of the box's PID 1 once it is systemd; fails when the box already died."""
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the box exited {self.process.returncode} before systemd ran:\n"
                                 f"{_tail(self.log_path)}")
        for pid in _cgroup_pids(self.cgroup):
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{pid}/status").read_text()
                nspid = re.search(r"^NSpid:\s+(.*)$", status, re.M)
                is_init = nspid is not None and nspid.group(1).split()[-1] == "1"
                if is_init and Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        return None

    def _booted(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"the box's systemd exited {self.process.returncode}:\n{_tail(self.log_path)}")
        # "offline" early on: systemd has not opened its sockets yet. "maintenance" or "stopping" will not pass.
        state = self.run("systemctl", "is-system-running", check=False, timeout=15).stdout.strip()
        if state in ("maintenance", "stopping"):
            failed = self.run("systemctl", "--failed", check=False).stdout
            raise AssertionError(f"the box's systemd is {state}:\n{failed}")
        return state if state in ("running", "degraded") else None

    def teardown(self) -> None:
        """Kill the box and undo everything it had; raises when something had to be forced.

        Bounded at every step. Idempotent: the fixture's finalizer calls it, and so does atexit.
        """
        if self._torn_down:
            return
        self._torn_down = True
        forced: list[str] = []
        if self.pid and self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):  # the journal of a box that is gone is no reason to stop here
                journal = self.run("journalctl", "-b", "--no-pager", "-o", "short-monotonic", check=False, timeout=20)
                (self.workdir / "journal.txt").write_text(journal.stdout)
        if self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # PID 1 gone: the kernel kills the whole PID namespace
        if self.process is not None:
            try:
                self.process.wait(KILL_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(KILL_TIMEOUT)
                forced.append(f"unshare (pid {self.process.pid}) outlived the box's PID 1 by {KILL_TIMEOUT:.0f}s")
        deadline = time.monotonic() + KILL_TIMEOUT
        while _cgroup_pids(self.cgroup) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _cgroup_pids(self.cgroup)
        if left:
            forced.append(f"processes outlived the box's PID 1: {left}")
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _cgroup_pids(self.cgroup), KILL_TIMEOUT, what="the box's cgroup to empty")
        _remove_cgroup(self.cgroup)
        forced.extend(f"a mount reached the machine: {m}" for m in unmount_all(self.workdir))
        remove_tree(self.root)
        if forced:
            raise AssertionError("the box's teardown had to force: " + "; ".join(forced))

    # --- inside ---

    def run(self, *argv: str, check: bool = True, timeout: float = 60.0,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the box (all its namespaces, its root), with a clean environment."""
        assert self.pid, "the box has not booted"
        command = ["nsenter", "-t", str(self.pid), "-a", "-r", "-w", "env", "-i", f"PATH={BOX_PATH}", "LANG=C.UTF-8",
                   "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", *argv]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input,
                                  stdin=None if input is not None else subprocess.DEVNULL, check=False,
                                  env={"PATH": HOST_PATH})
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"timed out after {timeout:.0f}s in the box: {' '.join(argv)}\n"
                                 f"{exc.stdout or ''}{exc.stderr or ''}") from exc
        if check and proc.returncode != 0:
            raise AssertionError(f"in the box, {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-euc", script, check=check, timeout=timeout)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", *args, check=check, timeout=timeout)

    def show(self, unit: str, prop: str) -> str:
        """One property of ``unit`` as systemd holds it (``systemctl show -p PROP --value``)."""
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "--no-pager", *args, timeout=30).stdout

    def path(self, inside: str) -> Path:
        """The machine's path of a file on the box's root file system (not /run, /tmp: the box's own mounts)."""
        return self.root / inside.lstrip("/")

    def unit_pids(self, unit: str) -> set[int]:
        """The machine's PIDs in ``unit``'s cgroup: what runs in it, seen from outside the box."""
        return set(_cgroup_pids(self.cgroup / "system.slice" / unit))

    def extract(self, archive: Path, inside: str) -> None:
        """Unpack a tarball onto the box's file system (as the role's unarchive would)."""
        target = self.path(inside)
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
