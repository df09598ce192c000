"""TLS to Consul: CA, client certificate, server name; a wrong CA fails with one clear line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import cli

tls = pytest.importorskip("tests.tls")


@pytest.fixture
def pki(tmp_path: Path) -> dict:
    ca = tls.make_ca(tmp_path, "consul CA")
    other_ca = tls.make_ca(tmp_path, "other CA")
    return {
        "ca": ca[0], "other_ca": other_ca[0],
        "server": tls.issue(tmp_path, ca, "server", ["consul.test"], []),  # a name only, no IP
        "client": tls.issue(tmp_path, ca, "client", [], [], client=True),
    }


def https_consul(pki: dict) -> DevConsulThread:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki["ca"].cert))
    context.load_cert_chain(str(pki["server"].cert), str(pki["server"].key))
    context.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: the client must show a certificate too
    return DevConsulThread(port=0, ssl_context=context)


def env(pki: dict, ca: str = "ca", server_name: str = "consul.test") -> dict[str, str]:
    values = {
        "CONSUL_CACERT": str(pki[ca].cert),
        "CONSUL_CLIENT_CERT": str(pki["client"].cert),
        "CONSUL_CLIENT_KEY": str(pki["client"].key),
    }
    if server_name:
        values["CONSUL_TLS_SERVER_NAME"] = server_name
    return values


def test_mutual_tls_with_server_name(pki: dict) -> None:
    with https_consul(pki) as consul:
        assert consul.url.startswith("https://127.0.0.1:")
        result = cli("render", "--dry-run", "--consul", consul.url, env=env(pki))
    assert result.returncode == 0, result.stderr
    assert "backend cabify" in result.stdout


def test_without_server_name_the_ip_does_not_match_the_certificate(pki: dict) -> None:
    with https_consul(pki) as consul:
        result = cli("render", "--dry-run", "--consul", consul.url, env=env(pki, server_name=""))
    assert result.returncode == 1
    assert result.stderr.startswith("haproxy-sync: TLS handshake failed") and "Traceback" not in result.stderr


def test_wrong_ca_fails_with_one_clear_line(pki: dict) -> None:
    with https_consul(pki) as consul:
        result = cli("render", "--dry-run", "--consul", consul.url, env=env(pki, ca="other_ca"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "TLS handshake failed" in result.stderr and "certificate verify failed" in result.stderr


def test_missing_client_key_is_a_config_error(pki: dict) -> None:
    values = env(pki)
    del values["CONSUL_CLIENT_KEY"]
    result = cli("check", "--consul", "https://127.0.0.1:1", env=values)
    assert result.returncode == 1 and "cert_file and key_file go together" in result.stderr
