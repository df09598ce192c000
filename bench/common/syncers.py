"""What keeps the HAProxy under test in step with Consul, started the way its users start it.

* :class:`HaproxySync`: ``haproxy-sync run`` as a process, configured by a
  ``haproxy_sync.dev.workdir.Workdir`` (the benchmark gives its settings as sections of Python values;
  the Workdir writes them as TOML), waited for on its ``/ready``;
* :class:`ConsulTemplate`: the real consul-template (the pinned version, built once with ``go
  install``) with one template and the reload command of :func:`reload_command`.

Both write the file the HAProxy under test (:class:`~.under_test.HAProxyUnderTest` of the same
directory) runs, and log into that directory.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from haproxy_sync.dev.workdir import Sections, Workdir, parse_sections

from . import REPO
from .ports import HOST
from .process import Proc, StackError, clean_env, http_get, log_lines, wait_for

CONSUL_TEMPLATE_MODULE = "github.com/hashicorp/consul-template"
CONSUL_TEMPLATE_VERSION = "v0.41.1"  # the newest tag on the Go module proxy when this was written
CACHE_DIR = Path(__file__).resolve().parent / ".cache"  # git-ignored (bench/common/.gitignore)
#: The reload command's one retry budget: up to RELOAD_TRIES attempts RELOAD_PAUSE seconds apart (10 s).
RELOAD_TRIES = 200
RELOAD_PAUSE = 0.05


class Syncer:
    """A tool that keeps HAProxy in step: a process started by :meth:`start`, its log in ``log_path``."""

    name = ""
    log_path: Path
    env: Mapping[str, str] | None = None
    stop_signal = signal.SIGTERM
    proc: Proc | None = None
    started_at = 0.0  # time.monotonic() when start() was last called

    def argv(self) -> list[str]:
        raise NotImplementedError

    def initial_render(self) -> None:
        """Write the first config once, before HAProxy starts from it."""
        raise NotImplementedError

    def start(self) -> None:
        self.started_at = time.monotonic()
        self.proc = Proc(self.name, self.argv(), self.log_path, env=self.env)

    def stop(self) -> int | None:
        return self.proc.stop(self.stop_signal) if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} is not running")
        return self.proc.pid

    def logs(self) -> list[Path]:
        """Files the tool appends to over its run."""
        return [self.log_path]

    def log_lines(self) -> list[str]:
        return log_lines(self.log_path)


# --- haproxy-sync ---


def parse_setting(item: str) -> tuple[str, str, str]:
    """``SECTION.KEY=TOML_VALUE`` (a ``--haproxy-sync-set``) as (section, key, value); ValueError when it is
    malformed or its value is not TOML."""
    name, sep, value = item.partition("=")
    section, dot, key = name.strip().partition(".")
    section, key, value = section.strip(), key.strip(), value.strip()
    if not (sep and dot and section and key and value):
        raise ValueError(f"--haproxy-sync-set {item!r}: expected SECTION.KEY=TOML_VALUE, e.g. "
                         "sync.watch_files=false or 'sync.wait_min=\"50ms\"'")
    try:
        parse_sections(f"{key} = {value}", section)
    except ValueError as exc:
        raise ValueError(f"--haproxy-sync-set {item!r}: the value is not TOML ({exc})") from None
    return section, key, value


def add_syncer_arguments(parser: argparse.ArgumentParser, where: str, skipped: str) -> None:
    """The flags every benchmark running both tools takes: ``--haproxy-sync-set`` (parsed into (section,
    key, value) triples, checked as TOML), ``--consul-template`` and ``--no-install``.

    ``where``: what the settings apply to, for the help; ``skipped``: what is skipped without consul-template.
    """

    def setting(item: str) -> tuple[str, str, str]:
        try:
            return parse_setting(item)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--haproxy-sync-set {item!r}: ")) from None

    parser.add_argument("--haproxy-sync-set", action="append", default=[], type=setting, metavar="SECTION.KEY=TOML",
                        help=f"add a setting to haproxy-sync's config.toml{where}, for experiments, e.g. "
                             "--haproxy-sync-set sync.watch_files=false or 'consul.wait=\"5m\"' (repeatable; "
                             "recorded in the JSON)")
    parser.add_argument("--consul-template", type=Path, metavar="PATH",
                        help="a consul-template binary to use instead of the pinned one built with go install")
    parser.add_argument("--no-install", action="store_true", help=f"never run go install; skip {skipped} instead")


def overrides(settings: Iterable[tuple[str, str, str]]) -> list[Sections]:
    """(section, key, TOML value) triples as sections, for ``merged`` after a benchmark's own settings."""
    return [parse_sections(f"{key} = {value}", section) for section, key, value in settings]


class HaproxySync(Syncer):
    """``haproxy-sync run --config <workdir>/config.toml``; the config is written when this is made.

    ``launcher``: what runs the CLI (``-m haproxy_sync.cli``; bench/soak runs it under its tracer);
    the one-shot commands of :meth:`cli` always run the plain CLI.
    """

    name = "haproxy-sync"

    def __init__(self, workdir: Workdir, *, log_name: str = "haproxy-sync.log", env: Mapping[str, str] | None = None,
                 launcher: Sequence[str] = ("-m", "haproxy_sync.cli")) -> None:
        self.workdir = workdir
        self.root = workdir.root
        self.config_toml = workdir.write()
        self.metrics_url = workdir.metrics_url
        self.log_path = workdir.root / log_name
        self.env = dict(env) if env is not None else clean_env()
        self.launcher = tuple(launcher)

    def argv(self) -> list[str]:
        return [sys.executable, *self.launcher, "run", "--config", str(self.config_toml)]

    def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``haproxy-sync <args> --config <config.toml>`` to its end, output captured."""
        return subprocess.run(
            [sys.executable, "-m", "haproxy_sync.cli", *args, "--config", str(self.config_toml)],
            capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL, cwd=REPO,
            check=False,
        )

    def initial_render(self, timeout: float = 60.0) -> None:
        """``run --once`` before HAProxy runs: it writes the validated file HAProxy then starts from."""
        result = self.cli("run", "--once", timeout=timeout)
        if result.returncode != 0:
            raise StackError(f"haproxy-sync run --once failed ({result.returncode}): {result.stderr.strip()[-500:]}")

    def ready(self) -> bool:
        """Whether ``/ready`` answers 200 (first apply done, HAProxy confirmed)."""
        return bool(self.metrics_url) and http_get(f"{self.metrics_url}/ready", 1.0)[0] == 200

    def wait_ready(self, timeout: float = 30.0, interval: float = 0.2) -> None:
        """Until ``/ready`` answers 200; :class:`StackError` when the daemon exits or ``timeout`` passes."""

        def ready() -> bool:
            if self.proc is not None and not self.proc.alive():
                raise StackError(f"haproxy-sync exited with {self.proc.process.returncode}; see {self.log_path}")
            return self.ready()

        wait_for(ready, timeout, f"haproxy-sync /ready (log: {self.log_path})", interval=interval)


# --- consul-template ---


def reload_command(master_socket: Path, reloads_log: Path | None = None) -> str:
    """The reload line users put after consul-template's template: ``reload`` on the master socket.

    consul-template runs it with ``sh -c`` and exits when it fails. socat is what HAProxy's docs and
    most scripts use; where it is missing, the same conversation in a Python one-liner. The bounded
    retry is not optional: HAProxy's master re-executes itself on every reload and refuses
    connections on its socket meanwhile, so a second change right after a first makes a plain
    ``echo reload | socat`` fail (measured in bench/churn: consul-template died on the 2nd and 3rd
    changes, 28 ms apart, of the first quick run). With tens of thousands of servers the master is away
    for a good part of a second (bench/scale), so the one budget is 10 s (:data:`RELOAD_TRIES` x
    :data:`RELOAD_PAUSE`), what a user with a big config would have learned to write; where the master
    answers at once the budget is never used. ``reloads_log``: a line appended per reload that reached
    the master, to count them.
    """
    if shutil.which("socat"):
        once = f"echo reload | socat stdio unix-connect:{shlex.quote(str(master_socket))}"
    else:
        once = (f"{sys.executable} -c \"import socket; s = socket.socket(socket.AF_UNIX); "
                f"s.connect('{master_socket}'); s.sendall(b'reload\\n'); s.recv(64)\"")
    counted = f"date +%s.%N >> {shlex.quote(str(reloads_log))}; " if reloads_log is not None else ""
    return (f"for i in $(seq {RELOAD_TRIES}); do if {once} >/dev/null 2>&1; then {counted}exit 0; fi; "
            f"sleep {RELOAD_PAUSE:g}; done; exit 1")


class ConsulTemplate(Syncer):
    """The real consul-template with one template (``source``, placeholders filled) and a reload command.

    The template's ``@STATS_SOCKET@`` and ``@HTTP_BIND@`` become the workdir's; ``replacements`` fill
    any other placeholder. ``count_reloads``: the reload command logs each reload to ``reloads.log``.
    """

    name = "consul-template"
    stop_signal = signal.SIGINT

    def __init__(self, binary: Path, source: Path, workdir: Workdir, consul_address: str, *,
                 replacements: Mapping[str, str] | None = None, count_reloads: bool = False) -> None:
        self.binary = binary
        self.root = workdir.root
        self.output = workdir.haproxy_cfg
        text = (source.read_text().replace("@STATS_SOCKET@", str(workdir.stats_socket))
                .replace("@HTTP_BIND@", f"{HOST}:{workdir.http_port}"))
        for placeholder, value in (replacements or {}).items():
            text = text.replace(placeholder, value)
        self.source = workdir.root / "haproxy.ctmpl"
        self.source.write_text(text)
        self.reloads_log = workdir.root / "reloads.log" if count_reloads else None
        self.reload_command = reload_command(workdir.master_socket, self.reloads_log)
        self.log_path = workdir.root / "consul-template.log"
        self.env = clean_env(CONSUL_HTTP_ADDR=consul_address)

    def argv(self) -> list[str]:
        return [str(self.binary), "-log-level", "info",
                "-template", f"{self.source}:{self.output}:{self.reload_command}"]

    def initial_render(self, timeout: float = 60.0) -> None:
        """``-once`` without the command: the file HAProxy starts from (its later renders equal it)."""
        result = subprocess.run(
            [str(self.binary), "-once", "-log-level", "warn", "-template", f"{self.source}:{self.output}"],
            capture_output=True, text=True, timeout=timeout, env=self.env, stdin=subprocess.DEVNULL, check=False,
        )
        if result.returncode != 0 or not self.output.exists():
            raise StackError(f"consul-template -once failed ({result.returncode}): {result.stderr.strip()[-500:]}")

    def logs(self) -> list[Path]:
        return [self.log_path, *([self.reloads_log] if self.reloads_log is not None else [])]

    def reloads_run(self) -> int:
        """Reload commands that reached HAProxy's master (with ``count_reloads``; 0 without)."""
        return len(log_lines(self.reloads_log)) if self.reloads_log is not None else 0


def find_consul_template(explicit: Path | None, install: bool) -> tuple[Path | None, str]:
    """The pinned consul-template binary, installed with ``go install`` into the cache when missing.

    Returns (path, "") or (None, the reason the tool is skipped).
    """
    if explicit is not None:
        return (explicit, "") if explicit.exists() else (None, f"--consul-template {explicit} does not exist")
    candidates = [CACHE_DIR / "bin" / "consul-template", Path.home() / "go" / "bin" / "consul-template"]
    for candidate in candidates:
        if candidate.exists() and version_of(candidate) == CONSUL_TEMPLATE_VERSION:
            return candidate, ""
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        return None, "Go is not installed, so consul-template cannot be built (install Go, or pass --consul-template)"
    if not install:
        return None, "consul-template is not installed and --no-install was given"
    print(f"installing consul-template {CONSUL_TEMPLATE_VERSION} with go install into {CACHE_DIR / 'bin'} "
          "(about a minute, once) ...", flush=True)
    try:
        result = subprocess.run(
            [go, "install", f"{CONSUL_TEMPLATE_MODULE}@{CONSUL_TEMPLATE_VERSION}"],
            capture_output=True, text=True, timeout=900, check=False, stdin=subprocess.DEVNULL,
            env={**os.environ, "GOBIN": str(CACHE_DIR / "bin")},
        )
    except subprocess.TimeoutExpired:
        return None, "go install of consul-template took longer than 15 minutes"
    if result.returncode != 0:
        return None, f"go install of consul-template failed: {result.stderr.strip()[-300:]}"
    return CACHE_DIR / "bin" / "consul-template", ""


def version_of(binary: Path) -> str:
    try:
        result = subprocess.run([str(binary), "-version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    words = (result.stdout + result.stderr).split()
    return words[1] if len(words) > 1 else ""
