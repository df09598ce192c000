"""HTTPS against real HAProxy, devconsul and the daemon: the same routes over TLS, certificates rotated,
added and removed on the Runtime API with no reload and no failed request, a bad file refused while
the old certificate keeps serving, redirects and HSTS, and the expiry warning."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from haproxy_sync import haproxy, master
from haproxy_sync.dev.devconsul import DevConsulThread
from tests.helpers import Stack, free_port, register, wait_until
from tests.tls import bundle

pytestmark = pytest.mark.skipif(haproxy.find_binary("haproxy") is None, reason="HAProxy is not installed")


class Edge:
    """A Stack with HTTPS on: its certificate directory and HTTPS port."""

    def __init__(self, stack: Stack, cert_dir: Path, https_port: int) -> None:
        self.stack, self.cert_dir, self.https_port = stack, cert_dir, https_port
        self.last_pem = b""

    def install(self, name: str, names: list[str], **options: object) -> str:
        """Put ``name``.pem in the directory as a deploy tool does (written aside, renamed in); its fingerprint."""
        pem, fingerprint = bundle(names, **options)
        self.put(name, pem)
        self.last_pem = pem
        return fingerprint

    def put(self, name: str, data: bytes) -> None:
        aside = self.cert_dir / f".{name}.pem.new"
        aside.write_bytes(data)
        os.replace(aside, self.cert_dir / f"{name}.pem")

    def served(self, server_name: str | None = None) -> str:
        """The SHA-1 fingerprint of the certificate a client gets for ``server_name`` (SNI)."""
        return hashlib.sha1(self.served_der(server_name)).hexdigest().upper()

    def served_der(self, server_name: str | None = None) -> bytes:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", self.https_port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            return tls.getpeercert(binary_form=True)

    def get(self, path: str = "/", host: str = "localhost", **headers: str) -> tuple[int, str, dict[str, str]]:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", self.https_port, timeout=5, context=context)
        try:
            connection.request("GET", path, headers={"Host": host, **headers})
            response = connection.getresponse()
            return response.status, response.read().decode(), dict(response.getheaders())
        finally:
            connection.close()

    def worker(self) -> int:
        worker = master.show_proc(self.stack.layout.master_socket).current_worker
        assert worker is not None, "HAProxy has a worker"
        return worker


def _edge(tmp_path: Path, consul: DevConsulThread, make_apps, exits: ExitStack, tls: str = "") -> Edge:
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    pem, _ = bundle(["localhost", "*.localhost"])
    (cert_dir / "default.pem").write_bytes(pem)
    port = free_port()
    extra = (f'[tls]\nenabled = true\ncert_dir = "{cert_dir}"\nstore_dir = "{tmp_path / "store"}"\n'
             f'bind = "127.0.0.1:{port}"\n{tls}')
    stack = Stack(tmp_path, consul, make_apps(3), exits, extra=extra)
    return Edge(stack, cert_dir, port)


@pytest.fixture
def edge(tmp_path: Path, consul: DevConsulThread, make_apps) -> Iterator[Edge]:
    with ExitStack() as exits:
        yield _edge(tmp_path, consul, make_apps, exits)


def test_https_serves_the_same_routes_with_the_certificate_of_each_name(edge: Edge, make_apps) -> None:
    status, body, _ = edge.get()
    assert status == 200 and body.strip() in {app.instance_id for app in edge.stack.apps}
    shop_fingerprint = edge.install("shop", ["shop.test"])
    wildcard = edge.install("branches", ["*.branches.test"])
    shop = make_apps(1, prefix="shop")[0]
    register(edge.stack.consul.url, shop, service="shop", Tags=["haproxy-sync"],
             Meta={"haproxy-sync-host": "shop.test"})
    wait_until(lambda: edge.served("shop.test") == shop_fingerprint, 15, what="shop.test's certificate served")
    assert edge.served("feature-x.branches.test") == wildcard, "a branch host gets the wildcard certificate"
    wait_until(lambda: edge.get(host="shop.test")[1] == "shop-4\n", 15, what="shop routed over HTTPS by its Host")
    store = sorted(p.name for p in (edge.stack.layout.root / "store").iterdir())
    assert store == ["branches.pem", "crt-list.txt", "default.pem", "shop.pem"]
    assert oct((edge.stack.layout.root / "store" / "shop.pem").stat().st_mode & 0o777) == "0o640"


def test_a_rotation_under_keep_alive_load_fails_no_request_and_starts_no_worker(edge: Edge) -> None:
    wrk = shutil.which("wrk")
    if wrk is None:
        pytest.skip("wrk is not installed (scripts/test installs it: apt-get install wrk)")
    worker, reloads = edge.worker(), edge.stack.layout.reloads()
    load = subprocess.Popen([wrk, "-t2", "-c8", "-d6s", "--timeout", "2s", f"https://127.0.0.1:{edge.https_port}/"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        fingerprints = []
        for _ in range(3):
            fingerprints.append(edge.install("default", ["localhost", "*.localhost"]))
            wait_until(lambda: edge.served("localhost") == fingerprints[-1], 10, what="the new certificate served")
        out, _ = load.communicate(timeout=30)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 500, out
    assert "Socket errors" not in out and "Non-2xx" not in out, out
    assert edge.worker() == worker and edge.stack.layout.reloads() == reloads, "rotated on the Runtime API"
    wanted = x509.load_pem_x509_certificate(edge.last_pem).serial_number
    assert x509.load_der_x509_certificate(edge.served_der("localhost")).serial_number == wanted, "a client sees it"
    store = edge.stack.layout.root / "store" / "default.pem"
    assert fingerprints[-1] in {_fingerprint_of(store.read_bytes())}, "the store serves the same after a restart"


def _fingerprint_of(pem: bytes) -> str:
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA1()).hex().upper()


def test_a_bad_file_is_refused_and_the_old_certificate_keeps_serving(edge: Edge) -> None:
    good = edge.install("shop", ["shop.test"])
    wait_until(lambda: edge.served("shop.test") == good, 10, what="shop.test's certificate")
    reloads = edge.stack.layout.reloads()
    edge.install("shop", ["shop.test"], days=1, starts_in=-3 * 86400)  # an expired renewal
    edge.stack.daemon.wait_for_log("shop.pem refused: expired on")
    assert edge.served("shop.test") == good, "the old certificate keeps serving"
    assert edge.stack.metric("haproxy_sync_tls_certificates_refused") == 1
    edge.put("shop", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\nshow ssl cert\n")
    edge.stack.daemon.wait_for_log("shop.pem refused: expected one private key with the certificate, found 0")
    assert edge.served("shop.test") == good
    renewed = edge.install("shop", ["shop.test"])
    wait_until(lambda: edge.served("shop.test") == renewed, 10, what="the good renewal served")
    assert edge.stack.metric("haproxy_sync_tls_certificates_refused") == 0
    (edge.cert_dir / "shop.pem").unlink()
    default = edge.served("localhost")
    wait_until(lambda: edge.served("shop.test") == default, 10, what="shop.test back to the default certificate")
    assert edge.stack.layout.reloads() == reloads, "added, rotated and removed with no reload"


def test_redirect_hsts_and_the_expiry_warning(tmp_path: Path, consul: DevConsulThread, make_apps) -> None:
    with ExitStack() as exits:
        edge = _edge(tmp_path, consul, make_apps, exits,
                     tls='https_redirect = true\nhsts = true\nhsts_max_age = "24h"\nexpiry_warning = "240h"\n')
        connection = http.client.HTTPConnection("127.0.0.1", edge.stack.layout.http_port, timeout=5)
        connection.request("GET", "/path?q=1", headers={"Host": "localhost"})
        response = connection.getresponse()
        assert (response.status, response.getheader("Location")) == (301, "https://localhost/path?q=1")
        connection.close()
        status, _, headers = edge.get()
        assert status == 200 and headers.get("strict-transport-security") == "max-age=86400"
        assert edge.stack.metric("haproxy_sync_tls_certificates_expiring") == 0
        edge.install("soon", ["soon.test"], days=5)
        edge.stack.daemon.wait_for_log("certificate soon (soon.test) expires in")
        wait_until(lambda: edge.stack.metric("haproxy_sync_tls_certificates_expiring") == 1, 10)
        expiry = edge.stack.metric('haproxy_sync_tls_certificate_expiry_timestamp_seconds{name="soon"}')
        assert expiry > 0


def test_a_route_asks_for_its_own_redirect(edge: Edge, make_apps) -> None:
    shop = make_apps(1, prefix="shop")[0]
    register(edge.stack.consul.url, shop, service="shop", Tags=["haproxy-sync"],
             Meta={"haproxy-sync-host": "shop.test", "haproxy-sync-https-redirect": "true"})

    def plain(host: str) -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", edge.stack.layout.http_port, timeout=5)
        try:
            connection.request("GET", "/", headers={"Host": host})
            response = connection.getresponse()
            response.read()
            return response.status, response.getheader("Location")
        finally:
            connection.close()

    wait_until(lambda: plain("shop.test") == (301, "https://shop.test/"), 20, what="shop's HTTP redirected")
    assert plain("localhost")[0] == 200, "the default backend keeps plain HTTP (tls.https_redirect = false)"
    # The route comes with the reload that adds shop's backend; its server answers once its check passed.
    wait_until(lambda: edge.get(host="shop.test")[:2] == (200, "shop-4\n"), 20, what="shop answering over HTTPS")


def test_no_certificate_to_serve_is_one_clear_error_at_start(tmp_path: Path) -> None:
    from tests.helpers import cli

    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "default.pem").write_bytes(b"junk")
    config = tmp_path / "config.toml"
    config.write_text(f'[haproxy]\nconfig_path = "{tmp_path}/haproxy.cfg"\n[tls]\nenabled = true\n'
                      f'cert_dir = "{tmp_path}/certs"\nstore_dir = "{tmp_path}/store"\n[[services]]\nname = "cabify"\n')
    result = cli("check", "--config", str(config))
    assert result.returncode == 1, result
    assert result.stderr.count("\n") == 1 and "holds no certificate that can be served" in result.stderr, result.stderr
    assert "default.pem: no certificate in it" in result.stderr
