"""Fixtures of the host-in-a-box tests: the cached root (session), a booted box (module), the release
artifact (session). Each test marks itself ``host``; the fixtures skip with the reason when the machine
cannot run a box (not root, no debootstrap, no cgroup2), so that such a machine still runs the rest."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tests.host.box import Box, BuildFailed, BuiltRoot, build_root, unavailable_reason
from tests.host.edge import RELEASE_VERSION, build_release

#: Timings of this run, printed at its end (docs/host-box.md quotes them).
TIMINGS: dict[str, str] = {}


#: The Debian releases every host test runs on, by test id: 12 with HAProxy 2.6 and systemd 252 (what the
#: roles deploy to), 13 with HAProxy 3.0 LTS and systemd 257, each its distribution's own package.
SUITES = {"debian12": "bookworm", "debian13": "trixie"}
#: A built root's path -> its test id (for the timings).
RELEASE_OF: dict[Path, str] = {}


@pytest.fixture(scope="session", params=list(SUITES), ids=list(SUITES))
def hostbox_image(request: pytest.FixtureRequest) -> BuiltRoot:
    """The Debian root of this parameter's release, built by debootstrap once and cached in
    .cache/hostbox/<key>/."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    try:
        image = build_root(SUITES[request.param])
    except BuildFailed as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the host box cannot be built: {exc}")
        pytest.skip(f"the host box cannot be built: {exc}")
    TIMINGS[f"root {request.param}"] = (
        f"{image.path} reused (debootstrap took {image.build_seconds:.0f}s when it was built)"
        if image.cached else f"{image.path} built by debootstrap in {image.build_seconds:.0f}s")
    RELEASE_OF[image.path] = request.param
    return image


@pytest.fixture(scope="module")
def box(hostbox_image: BuiltRoot, tmp_path_factory: pytest.TempPathFactory,
        request: pytest.FixtureRequest) -> Iterator[Box]:
    """A box of this module's own, booted from a copy of the root and always torn down."""
    booted = Box(hostbox_image.path, tmp_path_factory.mktemp("hostbox"))
    try:
        booted.boot()
        TIMINGS[f"box of {request.module.__name__} on {RELEASE_OF.get(hostbox_image.path, '?')}"] = (
            f"copy {booted.timings['copy']:.1f}s, systemd as PID 1 after {booted.timings['exec']:.1f}s, "
            f"{booted.state} after {booted.timings['boot']:.1f}s")
        yield booted
    finally:
        booted.teardown()


@pytest.fixture(scope="session")
def release_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scripts/release's artifact of the tree as it is: what the haproxy_sync role installs on an edge."""
    started = time.monotonic()
    artifact = build_release(tmp_path_factory.mktemp("release"), RELEASE_VERSION, python=sys.executable)
    TIMINGS["release"] = f"scripts/release {RELEASE_VERSION} in {time.monotonic() - started:.0f}s"
    return artifact


@pytest.fixture(scope="session")
def ansible_wheels(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """ansible-core as wheels, with its dependencies, for a box's Python ("3.11"): the box has Python but no
    Ansible, and the roles must converge inside it (``-c local``), so the .venv's pip fetches the version the
    deploy tests run with, once a session per Python, and the box installs from these alone (``--no-index``)."""
    fetched: dict[str, Path] = {}

    def for_python(python: str) -> Path:
        if python not in fetched:
            started = time.monotonic()
            out = tmp_path_factory.mktemp(f"ansible-wheels-{python}")
            version = metadata.version("ansible-core")
            platforms = [f"--platform=manylinux{tag}_{platform.machine()}"
                         for tag in ("2014", "_2_17", "_2_28", "_2_34")]
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                 "--only-binary=:all:", f"--python-version={python}", "--implementation=cp", *platforms,
                 "--dest", str(out), f"ansible-core=={version}"],
                capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
            assert proc.returncode == 0, f"pip download ansible-core=={version} failed:\n{proc.stdout}{proc.stderr}"
            TIMINGS[f"ansible-core wheels for {python}"] = (
                f"pip download ansible-core=={version} in {time.monotonic() - started:.0f}s")
            fetched[python] = out
        return fetched[python]

    return for_python


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("host box timings")
        for what, text in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {text}")

