"""TLS to Consul: CA, client certificate, server name; a wrong CA fails with one clear line."""

from __future__ import annotations

import shutil
import ssl
import subprocess
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
    assert result.stderr.startswith("haproxy-sync: Consul at https://") and ": TLS handshake failed" in result.stderr
    assert "Traceback" not in result.stderr


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


def test_ssl_verify_off_skips_the_ca_and_says_so(pki: dict) -> None:
    """CONSUL_HTTP_SSL_VERIFY=false, as Consul's client: the certificate is not checked (the wrong CA
    passes), and the start says so, since the token then goes to whoever answers."""
    with https_consul(pki) as consul:
        result = cli("render", "--dry-run", "--consul", consul.url,
                     env={**env(pki, ca="other_ca", server_name=""), "CONSUL_HTTP_SSL_VERIFY": "false"})
    assert result.returncode == 0, result.stderr
    assert "backend cabify" in result.stdout
    assert "environment CONSUL_HTTP_SSL_VERIFY: Consul's certificate is not verified" in result.stderr


def test_ca_path_is_a_directory_of_hashed_certificates(pki: dict, tmp_path: Path) -> None:
    """CONSUL_CAPATH: OpenSSL's CA directory (certificates named by subject hash, as c_rehash names them)."""
    hashed = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(pki["ca"].cert)], capture_output=True,
                            text=True, check=False) if shutil.which("openssl") else None
    if hashed is None or hashed.returncode != 0:
        pytest.skip("no openssl to name the CA by its subject hash")
    directory = tmp_path / "cas"
    directory.mkdir()
    shutil.copy(pki["ca"].cert, directory / f"{hashed.stdout.strip()}.0")
    values = env(pki)
    del values["CONSUL_CACERT"]
    with https_consul(pki) as consul:
        without = cli("render", "--dry-run", "--consul", consul.url, env=values)
        result = cli("render", "--dry-run", "--consul", consul.url, env={**values, "CONSUL_CAPATH": str(directory)})
    assert without.returncode == 1 and "certificate verify failed" in without.stderr, without.stderr
    assert result.returncode == 0, result.stderr
    assert "backend cabify" in result.stdout
