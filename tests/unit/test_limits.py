"""The open-files check at start (limits.fit): capped, refused, or left as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from haproxy_sync import limits
from haproxy_sync.config import load_settings


def settings_with(tmp_path: Path, services: int):
    path = tmp_path / "config.toml"
    path.write_text("".join(f'[[services]]\nname = "s{i}"\n' for i in range(services)))
    return load_settings(path, env={})


def test_enough_files_leave_the_settings_alone(tmp_path: Path) -> None:
    settings = settings_with(tmp_path, 2)
    assert limits.fit(settings, (65536, 65536)) is settings


def test_a_low_limit_caps_the_connections_to_consul_with_a_warning(tmp_path: Path, caplog) -> None:
    fitted = limits.fit(settings_with(tmp_path, 2), (1024, 1024))
    assert fitted.consul.max_connections == 1024 - limits.OVERHEAD
    assert "set LimitNOFILE=65536" in caplog.text


def test_too_few_for_the_configured_services_is_an_error_naming_limitnofile(tmp_path: Path) -> None:
    with pytest.raises(limits.LimitError, match=r"limit is 200 \(hard 200\), and the 100 configured services need 228"):
        limits.fit(settings_with(tmp_path, 100), (200, 200))
    with pytest.raises(limits.LimitError, match="LimitNOFILE=65536"):
        limits.fit(settings_with(tmp_path, 100), (200, 200))
