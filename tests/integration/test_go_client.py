"""devconsul driven by Consul's official Go client (issue #15, point 6).

tests/goclient/main.go uses github.com/hashicorp/consul/api to run named behaviour checks against an
agent, each asserting what Consul's documentation and server code say the answer is (cited above each
check there), and prints one JSON line per check. This module starts its own devconsul, runs the
program against it (without ACLs, and with ACLs and a management token), and asserts that every check
passes except the ones listed in KNOWN_DIFFERENCES, and that each of those still fails: a difference
that gets fixed must leave the list, so the list cannot rot.

The binary is built by scripts/bootstrap.sh (ensure_goclient, into .cache/goclient/) or here when it
is missing or older than its sources; the test is skipped only when it cannot be built because Go is
not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haproxy_sync.dev.devconsul import DevConsulThread

pytestmark = pytest.mark.timeout(900)  # a cold build downloads the module and compiles (about a minute)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "tests" / "goclient"
BINARY = ROOT / ".cache" / "goclient" / "goclient"
TOKEN = "5d2c6c8e-7f0a-4b8e-9c55-3e1f0b7a9d41"  # the management token of the ACL run
RUN_TIMEOUT = 300

# name of a check in tests/goclient/main.go -> why devconsul answers otherwise, and what covers it.
# Empty since #15 point 5: every check the program has matches Consul.
KNOWN_DIFFERENCES: dict[str, str] = {}


def _go() -> str | None:
    return shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")


def _sources() -> list[Path]:
    return sorted([*SOURCE.glob("*.go"), SOURCE / "go.mod", SOURCE / "go.sum"])


def _stale(binary: Path) -> bool:
    if not binary.exists():
        return True
    built = binary.stat().st_mtime
    return any(source.stat().st_mtime > built for source in _sources())


@pytest.fixture(scope="module")
def goclient() -> Path:
    """The built program: scripts/test's (HAPROXY_SYNC_GOCLIENT), else .cache/goclient/goclient, built
    here (as ensure_goclient does) when missing or older than its sources."""
    explicit = os.environ.get("HAPROXY_SYNC_GOCLIENT")
    binary = Path(explicit) if explicit else BINARY
    if not _stale(binary):
        return binary
    go = _go()
    if go is None:
        pytest.skip("Go is not installed, so tests/goclient cannot be built (install Go 1.26+; scripts/test builds it)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(binary.name + ".partial")
    result = subprocess.run(
        [go, "build", "-buildvcs=false", "-trimpath", "-o", str(partial), "."],
        cwd=SOURCE, capture_output=True, text=True, timeout=600, check=False, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        pytest.fail(f"go build of tests/goclient failed:\n{result.stderr[-3000:]}")
    partial.replace(binary)
    return binary


def _all_checks(goclient: Path) -> dict[str, bool]:
    """Every check the program has (name -> ACL-only), from ``goclient -list``."""
    listed = subprocess.run([str(goclient), "-list"], capture_output=True, text=True, timeout=30, check=True)
    return {item["name"]: item["acl"] for item in map(json.loads, listed.stdout.splitlines())}


def _run(goclient: Path, consul: DevConsulThread, token: str | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    args = [str(goclient), "-addr", consul.address, *(["-token", token] if token else [])]
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSUL_")}
    result = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False,
                            stdin=subprocess.DEVNULL, env=env)
    assert result.returncode == 0, f"goclient could not run (exit {result.returncode}):\n{result.stderr[-3000:]}"
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].get("end") is True, f"goclient did not run to the end:\n{result.stdout[-3000:]}"
    results, end = lines[:-1], lines[-1]
    assert end["count"] == len(results), end
    return results, end


@pytest.fixture(params=["no-acl", "acl"])
def mode(request: pytest.FixtureRequest) -> Iterator[tuple[DevConsulThread, str | None]]:
    token = TOKEN if request.param == "acl" else None
    consul = DevConsulThread(port=0, token=token).start()
    try:
        yield consul, token
    finally:
        consul.stop()


def test_the_official_go_client_sees_consul(goclient: Path, mode: tuple[DevConsulThread, str | None]) -> None:
    consul, token = mode
    every = _all_checks(goclient)
    unknown = sorted(set(KNOWN_DIFFERENCES) - set(every))
    assert not unknown, f"KNOWN_DIFFERENCES names checks goclient does not have: {unknown}"

    results, _ = _run(goclient, consul, token)
    ran = {item["name"]: item for item in results}
    expected = {name for name, acl_only in every.items() if token or not acl_only}
    assert set(ran) == expected, f"checks missing {sorted(expected - set(ran))}, extra {sorted(set(ran) - expected)}"

    passed = sum(1 for item in results if item["ok"])
    print(f"\n{passed} of {len(results)} behaviours match Consul ({'ACLs on' if token else 'no ACLs'})")
    for item in results:
        if not item["ok"]:
            print(f"  differs: {item['name']}: {item['detail']}")

    unexpected = sorted(f"  {name}: {item['detail']}" for name, item in ran.items()
                        if not item["ok"] and name not in KNOWN_DIFFERENCES)
    fixed = sorted(name for name in KNOWN_DIFFERENCES if name in ran and ran[name]["ok"])
    assert not unexpected, ("devconsul differs from Consul (fix devconsul, or list it in KNOWN_DIFFERENCES with why):\n"
                            + "\n".join(unexpected))
    assert not fixed, f"these now match Consul: remove them from KNOWN_DIFFERENCES: {fixed}"
