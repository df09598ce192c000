"""Certificate files are hostile: what becomes a served certificate, what is refused and why, and the
steps from what HAProxy serves to what the directory holds."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from haproxy_sync import certs, commands
from haproxy_sync.certs import Certificate, Directory, Step
from tests.tls import bundle


def test_a_good_bundle_becomes_pem_lines_only_with_its_names_and_fingerprint() -> None:
    pem, fingerprint = bundle(["shop.example.com", "*.branches.example.com"])
    cert = certs.parse("shop", b"# a comment an operator left\n" + pem, time.time())
    assert cert.fingerprint == fingerprint
    assert cert.names == ("*.branches.example.com", "shop.example.com")
    assert "# a comment" not in cert.pem, "the file's own bytes never reach HAProxy"
    commands.Payload(cert.pem)  # what is sent passes the payload grammar


@pytest.mark.parametrize(("make", "says"), [
    (lambda: bundle(["a.test"], days=1, starts_in=-3 * 86400)[0], "expired on"),
    (lambda: bundle(["a.test"], starts_in=3600)[0], "not valid before"),
    (lambda: bundle(["a.test"], signing_key=ec.generate_private_key(ec.SECP256R1()))[0], "does not match"),
    (lambda: bundle(["a.test"], key=rsa.generate_private_key(65537, 1024))[0], "1024 bits"),
    (lambda: bundle(["a.test"])[0].split(b"-----BEGIN PRIVATE KEY")[0], "found 0"),
    (lambda: bundle(["a.test"])[0] * 2, "found 2"),
    (lambda: bundle(["a.test"])[0].replace(b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY"), "passphrase"),
    (lambda: bundle(["a.test"])[0] + b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "X509 CRL"),
    (lambda: b"not a certificate", "no certificate"),
    (lambda: bundle(["bad name.test"])[0], "not a DNS name"),
    (lambda: bundle(["a.test\nshow ssl cert"])[0], "not a DNS name"),
    (lambda: bundle([], common_name="x y")[0], "not a DNS name"),
    (lambda: b"x" * (certs.MAX_FILE_BYTES + 1), "larger than"),
])
def test_a_file_that_cannot_be_served_is_refused_with_why(make, says: str) -> None:
    with pytest.raises(certs.Refusal, match=says):
        certs.parse("a", make(), time.time())


def test_the_store_reads_its_own_expired_certificate_it_still_serves() -> None:
    pem, _ = bundle(["a.test"], days=1, starts_in=-3 * 86400)
    assert certs.parse("a", pem, time.time(), check_dates=False).names == ("a.test",)


@pytest.mark.parametrize(("name", "stem"), [
    ("shop.pem", "shop"), ("a.b-c_d.pem", "a.b-c_d"), ("shop.crt", None), (".shop.pem", None),
    ("sh op.pem", None), ("shop.pem\n", None), ("x;y.pem", None),
])
def test_file_names_become_store_names_only_when_safe(name: str, stem: str | None) -> None:
    assert certs.file_stem(name) == stem


def _cert(name: str, fingerprint: str) -> Certificate:
    return Certificate(name, "", fingerprint, "1", time.time() + 86400, (f"{name}.test",))


def test_the_default_is_the_directorys_default_else_its_first_certificate() -> None:
    a, b, d = _cert("a", "A"), _cert("b", "B"), _cert("default", "D")
    assert certs.wanted(Directory({"b": b, "a": a}, {})) == {"default": a.with_name("default"), "a": a, "b": b}
    assert list(certs.wanted(Directory({"b": b, "default": d}, {}))) == ["default", "b"]
    assert certs.wanted(Directory({}, {"x.pem": "expired"})) == {}


def test_steps_add_replace_then_remove_and_never_remove_the_default() -> None:
    entries = {"default": _cert("default", "A"), "a": _cert("a", "A2"), "new": _cert("new", "N")}
    plan = certs.steps({"default": "A", "a": "A", "gone": "G"}, entries)
    assert [(s.kind, s.name) for s in plan] == [("add", "new"), ("replace", "a"), ("remove", "gone")]
    assert certs.steps({"default": "A"}, {}) == (), "HAProxy keeps its default certificate"
    assert all(isinstance(s, Step) for s in plan)


def test_the_crt_list_names_the_default_first(tmp_path) -> None:
    entries = {"default": _cert("default", "A"), "b": _cert("b", "B"), "a": _cert("a", "A")}
    assert certs.crt_list_text(tmp_path, entries) == "".join(
        f"{tmp_path}/{name}.pem\n" for name in ("default", "a", "b"))


@pytest.mark.parametrize("payload", [
    "-----BEGIN CERTIFICATE-----\nAAAA\n\nshow ssl cert\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\nAA AA\n-----END CERTIFICATE-----\n",
    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\nshutdown frontend http\n",
    "",
])
def test_a_payload_that_is_not_pem_lines_is_never_sent(payload: str) -> None:
    with pytest.raises(commands.UnsafeCommand):
        commands.Payload(payload)


def test_certificate_commands_take_only_safe_paths() -> None:
    assert commands.set_ssl_cert("/etc/haproxy/certs/a.pem", bundle(["a.test"])[0].decode())[0].endswith(" <<")
    with pytest.raises(ValueError):
        commands.new_ssl_cert("/etc/haproxy/certs/a.pem; shutdown frontend http")
