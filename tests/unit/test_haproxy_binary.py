"""The HAProxy 3.0 LTS that scripts/bootstrap.sh (ensure_haproxy30) builds from Debian 13's source package."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

VERSION = "3.0.11"
CACHED = Path(__file__).resolve().parents[2] / ".cache" / "haproxy" / VERSION / "haproxy"
BUILD = "sudo bash -c 'source scripts/bootstrap.sh && ensure_haproxy30' (or scripts/test as root)"


@pytest.fixture(scope="module")
def haproxy30() -> Path:
    named = os.environ.get("HAPROXY_30")
    if named:  # bootstrap exports it only once the binary is built and verified: it must be there
        path = Path(named)
        assert path.is_file() and os.access(path, os.X_OK), f"HAPROXY_30={named} is not an executable file"
        return path
    if not CACHED.is_file():
        pytest.skip(f"HAProxy {VERSION} is not built (no $HAPROXY_30, no {CACHED}); build it with {BUILD}")
    return CACHED


def run(binary: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30, check=False)


def test_version(haproxy30: Path) -> None:
    result = run(haproxy30, "-v")
    assert result.returncode == 0, result.stderr
    assert re.match(rf"HAProxy version {re.escape(VERSION)}[ -]", result.stdout), result.stdout


@pytest.mark.parametrize(("feature", "built_with"), [
    ("OPENSSL", r"^Built with OpenSSL version : OpenSSL \d"),
    ("PCRE2", r"^Built with PCRE2 version : \d"),
    ("PCRE2_JIT", r"^PCRE2 library supports JIT : yes$"),
    ("PROMEX", r"^Built with the Prometheus exporter as a service$"),
])
def test_built_with(haproxy30: Path, feature: str, built_with: str) -> None:
    result = run(haproxy30, "-vv")
    assert result.returncode == 0, result.stderr
    features = re.search(r"^Feature list : (.*)$", result.stdout, re.M)
    assert features, result.stdout
    assert f"+{feature}" in features.group(1).split(), features.group(0)
    assert re.search(built_with, result.stdout, re.M), result.stdout


def test_prometheus_exporter_config_is_valid(haproxy30: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        "frontend stats\n  mode http\n  bind 127.0.0.1:8404\n"  # -c binds nothing
        "  http-request use-service prometheus-exporter if { path /metrics }\n"
    )
    result = run(haproxy30, "-c", "-f", str(cfg))
    assert result.returncode == 0, result.stdout + result.stderr
