"""The release: requirements.lock pins every runtime dependency inside pyproject's ranges, and the
artifact scripts/release builds installs into a new virtualenv with no package index and runs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from haproxy_sync import haproxy

from .conftest import REPO, run, tail

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]

LOCK = REPO / "requirements.lock"


def _pins() -> dict[str, str]:
    lines = [line for line in LOCK.read_text().splitlines() if line and not line.startswith("#")]
    return {name.lower().replace("_", "-"): version for name, _, version in (line.partition("==") for line in lines)}


def test_the_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = _pins()
    for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(text)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not pinned in requirements.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} is outside {requirement.specifier}"


def test_the_license_file_is_the_declared_licence() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]
    text = (REPO / "LICENSE").read_text()
    assert declared == "Apache-2.0" and "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text, "the whole licence, not a pointer to it"


def test_release_refuses_a_version_that_is_not_one() -> None:
    proc = run([str(REPO / "scripts" / "release"), "v1.2"], timeout=30, cwd=REPO)
    assert proc.returncode == 64 and "VERSION as 1.2.3" in proc.stderr, tail(proc)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("release")
    proc = run([str(REPO / "scripts" / "release"), "0.2.0", str(out)], timeout=240, cwd=REPO,
               env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "HOME": str(Path.home())})
    assert proc.returncode == 0, tail(proc)
    return out / "haproxy-sync-0.2.0.tar.gz"


def test_a_release_installs_offline_into_a_new_venv_and_checks_a_config(artifact: Path, tmp_path: Path) -> None:
    with tarfile.open(artifact) as archive:
        archive.extractall(tmp_path, filter="data")
    house = tmp_path / "haproxy-sync-0.2.0"
    wheels = {p.name.split("-")[0].lower() for p in house.glob("*.whl")}
    assert {"haproxy_sync", "aiohttp", "cryptography", "jinja2"} <= wheels
    assert (house / "SHA256SUMS").exists() and (house / "requirements.lock").read_text() == LOCK.read_text()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "--no-index",
                   "--find-links", str(house), "-c", str(house / "requirements.lock"), "haproxy-sync==0.2.0"],
                  timeout=180)
    assert install.returncode == 0, tail(install)
    version = run([str(venv / "bin" / "haproxy-sync"), "--version"], timeout=30)
    revision = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty", "--abbrev=12",
                               "--exclude", "*"], capture_output=True, text=True, timeout=10).stdout.strip()
    assert version.stdout.strip() == f"haproxy-sync 0.2.0 (revision {revision})", tail(version)
    binary = haproxy.find_binary("haproxy")
    assert binary is not None
    config = tmp_path / "config.toml"
    config.write_text(f'[haproxy]\nbinary = "{binary}"\nconfig_path = "{tmp_path}/haproxy.cfg"\n'
                      '[[services]]\nname = "cabify"\n')
    check = run([str(venv / "bin" / "haproxy-sync"), "check", "--config", str(config)], timeout=60)
    assert check.returncode == 0 and check.stdout.startswith("ok: config"), tail(check)
    frozen = run([str(venv / "bin" / "pip"), "freeze", "--exclude", "haproxy-sync"], timeout=60)
    assert {line.lower().replace("_", "-") for line in frozen.stdout.split()} == {
        f"{name}=={version}" for name, version in _pins().items()}, "exactly the locked versions"
