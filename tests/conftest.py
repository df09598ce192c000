from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from haproxy_sync import haproxy
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import App, devconsul

# The HAProxy binary the tests run: `--haproxy PATH` wins over $HAPROXY_SYNC_TEST_HAPROXY; with neither,
# the distribution's haproxy, found as the product finds it (haproxy.find_binary("haproxy")).
HAPROXY_ENV = "HAPROXY_SYNC_TEST_HAPROXY"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--haproxy", metavar="PATH", default=None,
                     help=f"HAProxy binary the tests run (default: ${HAPROXY_ENV}, else the distribution's haproxy)")


def pytest_configure(config: pytest.Config) -> None:
    """Put the chosen binary first on PATH as `haproxy`.

    Every test, helper and subprocess (daemon, CLI, ansible) finds HAProxy through PATH, so this one setting
    changes it everywhere without touching how the product looks for the binary.
    """
    chosen = config.getoption("--haproxy") or os.environ.get(HAPROXY_ENV) or None
    if chosen is None:
        return
    path = Path(os.path.abspath(Path(chosen).expanduser()))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise pytest.UsageError(f"--haproxy / ${HAPROXY_ENV}: {chosen} is not an executable file")
    saved = {name: os.environ.get(name) for name in ("PATH", HAPROXY_ENV)}
    if path.name == "haproxy":
        bin_dir = path.parent
    else:  # e.g. /opt/haproxy-3.0: a link named haproxy in a directory of its own
        bin_dir = Path(tempfile.mkdtemp(prefix="haproxy-sync-test-bin-"))
        (bin_dir / "haproxy").symlink_to(path)
        config.add_cleanup(lambda: shutil.rmtree(bin_dir, ignore_errors=True))
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ[HAPROXY_ENV] = str(path)  # the choice, for subprocesses and the report header

    def restore() -> None:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    config.add_cleanup(restore)
    found = haproxy.find_binary("haproxy")
    if found is None or not os.path.samefile(found, path):
        raise pytest.UsageError(f"--haproxy / ${HAPROXY_ENV}: {path} put first on PATH, yet haproxy is {found}")


def haproxy_version_line(binary: str) -> str:
    try:
        result = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run it: {exc}"
    lines = (result.stdout or result.stderr).strip().splitlines()
    return lines[0] if lines else f"no version; exit status {result.returncode}"


@functools.lru_cache(maxsize=4)
def _short_version(binary: str) -> str:
    match = re.search(r"version (\d+\.\d+\.\d+)", haproxy_version_line(binary))
    return match.group(1) if match else "unknown"


@pytest.fixture(autouse=True)
def haproxy_under_test(request: pytest.FixtureRequest) -> str | None:
    """The HAProxy binary of this test's id (see pytest_generate_tests); None where no HAProxy runs."""
    return getattr(request, "param", None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test that runs HAProxy says which one in its id (``test_x[haproxy-3.0.11]``), so the two
    passes of the version matrix read apart in reports."""
    binary = haproxy.find_binary("haproxy")
    in_suite = any(part in ("integration", "property") for part in Path(str(metafunc.definition.path)).parts)
    in_suite = in_suite or metafunc.definition.get_closest_marker("runs_haproxy") is not None
    if binary is not None and in_suite and "haproxy_under_test" in metafunc.fixturenames:
        metafunc.parametrize("haproxy_under_test", [binary], ids=[f"haproxy-{_short_version(binary)}"],
                             indirect=True)


#: Test directories whose modules share one pytest-xdist worker: the deploy suite's converges install
#: apt packages and create users, and two of them at once would wait on each other's dpkg lock.
ONE_WORKER = ("deploy",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``scripts/test`` runs two workers, ``--dist loadgroup``) each module runs whole
    on one worker, so its module fixtures start once, and each of :data:`ONE_WORKER` on one worker."""
    root = Path(str(config.rootpath))
    for item in items:
        where = Path(str(item.path)).relative_to(root)
        shared = next((d for d in ONE_WORKER if d in where.parts[:2]), None)
        item.add_marker(pytest.mark.xdist_group(shared or str(where)))


#: How much of a failed test's daemon log its report carries: the lines that say why, not the whole run.
DAEMON_LOG_TAIL = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """A failed test that ran a daemon (``<tmp_path>/**/daemon.log``) shows that log's last lines in its
    report: a clean-clone CI run keeps only its output, and a race is then read off what the daemon did."""
    report: pytest.TestReport = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.failed and isinstance(tmp_path, Path) and tmp_path.is_dir():
        for log in sorted(tmp_path.rglob("daemon*.log"))[:3]:
            lines = log.read_text(errors="replace").splitlines()[-DAEMON_LOG_TAIL:]
            report.sections.append((f"{log.relative_to(tmp_path)} (last {len(lines)} lines)", "\n".join(lines)))
    return report


def pytest_report_header(config: pytest.Config) -> str:
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        return "haproxy: not found (the tests that run HAProxy are skipped)"
    shown = os.environ.get(HAPROXY_ENV) or binary
    return f"haproxy: {shown} ({haproxy_version_line(binary)})"


@pytest.fixture(scope="session")
def haproxy_binary() -> str:
    """The HAProxy binary the tests run (see --haproxy); skips the test when there is none."""
    binary = haproxy.find_binary("haproxy")
    if binary is None:
        pytest.skip("HAProxy is not installed")
    return binary


@pytest.fixture
def consul() -> Iterator[DevConsulThread]:
    """A devconsul of this test's own (:func:`tests.helpers.devconsul`)."""
    with devconsul() as server:
        yield server


@pytest.fixture
def make_apps() -> Iterator:
    """Start N backend instances (threads on free ports); all stopped at the end of the test."""
    started: list[App] = []

    def make(count: int, prefix: str = "cabify") -> list[App]:
        apps = [App(f"{prefix}-{len(started) + i + 1}") for i in range(count)]
        started.extend(apps)
        return apps

    yield make
    for app in started:
        app.stop()
