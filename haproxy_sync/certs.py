"""Pure certificates: what a PEM file may become, and the steps that bring HAProxy's set to a new one.

The certificate directory (``tls.cert_dir``) is read like anything else haproxy-sync did not write:
as hostile. A file becomes a :class:`Certificate` only when it parses (certificates and exactly one
unencrypted private key, nothing else), the key matches the first certificate, the certificate is
valid now, and every name it serves is a DNS name or a wildcard of one. What HAProxy is then given,
on its Runtime API or in the store it reads at a reload, is not the file's bytes but the objects
serialized again by ``cryptography``: PEM lines of base64 and nothing else, so no byte of the file can
become a second Runtime API command.

The store (``tls.store_dir``) holds one ``<name>.pem`` per certificate and the crt-list HAProxy's
HTTPS bind loads. Its first entry, ``default.pem``, is the default certificate (what a client
without a matching SNI name gets): the directory's ``default.pem`` when it has one, else its first
certificate by name. HAProxy cannot remove its default certificate at runtime, only replace it, so
the default entry always exists and only its content changes.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from haproxy_sync import rules

#: The largest certificate file read: a leaf, a few intermediates and a key are a few KiB.
MAX_FILE_BYTES = 256 * 1024
DEFAULT_NAME = "default"
CRT_LIST_NAME = "crt-list.txt"
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.pem", re.ASCII)
_PEM_BLOCK = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]{1,40})-----\r?\n([A-Za-z0-9+/=\r\n]{1,200000}?)-----END \1-----", re.ASCII)
_KEY_BLOCKS = (b"PRIVATE KEY", b"EC PRIVATE KEY", b"RSA PRIVATE KEY")
_DNS_NAME = re.compile(r"(?:\*\.)?(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)[a-z0-9-]{1,63}(?<!-)", re.ASCII)
MIN_RSA_BITS = 2048


class Refusal(ValueError):
    """A certificate file that cannot be served; the message says why in a few words."""


@dataclasses.dataclass(frozen=True)
class Certificate:
    """One validated certificate with its key, as HAProxy is given it."""

    name: str  # the file's stem: the store's <name>.pem
    pem: str  # certificates then the key, serialized again (PEM lines only)
    fingerprint: str  # SHA-1 of the leaf, upper-case hex: what `show ssl cert` prints
    serial: str  # upper-case hex, as `show ssl cert` prints it
    not_after: float  # POSIX seconds
    names: tuple[str, ...]  # the DNS names it serves (subjectAltName, else the CN)

    def with_name(self, name: str) -> Certificate:
        return dataclasses.replace(self, name=name)


def file_stem(file_name: str) -> str | None:
    """The certificate name of a file in the directory (``shop.pem`` -> ``shop``); None for a file that
    is not a certificate of its naming rule (no ``.pem``, a name with spaces or a leading dot)."""
    return file_name[: -len(".pem")] if _FILE_NAME.fullmatch(file_name) else None


def parse(name: str, data: bytes, now: float, check_dates: bool = True) -> Certificate:
    """The certificate ``data`` holds, validated at ``now``; raises :class:`Refusal` naming why not.
    ``check_dates=False`` reads a certificate already served (the store's), expired or not."""
    if len(data) > MAX_FILE_BYTES:
        raise Refusal(f"larger than {MAX_FILE_BYTES // 1024} KiB")
    blocks = [(m.group(1), m.group(0)) for m in _PEM_BLOCK.finditer(data)]
    certificates = [pem for kind, pem in blocks if kind == b"CERTIFICATE"]
    keys = [pem for kind, pem in blocks if kind in _KEY_BLOCKS]
    if any(kind == b"ENCRYPTED PRIVATE KEY" for kind, _ in blocks) or b"Proc-Type: 4,ENCRYPTED" in data:
        raise Refusal("the private key has a passphrase; HAProxy needs it unencrypted")
    others = sorted({kind.decode() for kind, _ in blocks if kind != b"CERTIFICATE" and kind not in _KEY_BLOCKS})
    if others:
        raise Refusal(f"holds a PEM block this does not serve: {', '.join(others)}")
    if not certificates:
        raise Refusal("no certificate in it (PEM: the certificate, its chain, then the key)")
    if len(keys) != 1:
        raise Refusal(f"expected one private key with the certificate, found {len(keys)}")
    try:
        chain = [x509.load_pem_x509_certificate(pem) for pem in certificates]
    except ValueError as exc:
        raise Refusal(f"a certificate does not parse: {_short(exc)}") from None
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except TypeError:
        raise Refusal("the private key has a passphrase; HAProxy needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise Refusal(f"the private key does not parse: {_short(exc)}") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise Refusal(f"an RSA key of {key.key_size} bits; at least {MIN_RSA_BITS}")
    elif not isinstance(key, ec.EllipticCurvePrivateKey):
        raise Refusal(f"a {type(key).__name__.removeprefix('_')} key; RSA or ECDSA only")
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (leaf.public_key().public_bytes(serialization.Encoding.PEM, public)
            != key.public_key().public_bytes(serialization.Encoding.PEM, public)):
        raise Refusal("the private key does not match the certificate (the first one in the file)")
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    if check_dates and leaf.not_valid_after_utc <= moment:
        raise Refusal(f"expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    if check_dates and leaf.not_valid_before_utc > moment:
        raise Refusal(f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    names = _names(leaf)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return Certificate(
        name=name, pem=pem.decode("ascii"), fingerprint=leaf.fingerprint(hashes.SHA1()).hex().upper(),
        serial=f"{leaf.serial_number:X}", not_after=leaf.not_valid_after_utc.timestamp(), names=names,
    )


def _names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if not names:
        raise Refusal("serves no DNS name (no subjectAltName DNS entry, no CN)")
    lowered = [name.lower().rstrip(".") for name in names]
    bad = [name for name in lowered if not _DNS_NAME.fullmatch(name) or len(name) > 253]
    if bad:
        raise Refusal(f"serves a name that is not a DNS name: {bad[0][:80]!r}")
    return tuple(sorted(set(lowered)))


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class Directory:
    """What the certificate directory holds now: the certificates that can be served, and the files
    refused with why (by file name)."""

    certificates: Mapping[str, Certificate]
    refused: Mapping[str, str]


def wanted(directory: Directory) -> dict[str, Certificate]:
    """The store's entries for ``directory``: ``default`` first, then every other certificate by name."""
    others = {name: cert for name, cert in sorted(directory.certificates.items()) if name != DEFAULT_NAME}
    default = directory.certificates.get(DEFAULT_NAME) or next(iter(others.values()), None)
    if default is None:
        return {}
    return {DEFAULT_NAME: default.with_name(DEFAULT_NAME), **others}


def store_path(store_dir: Path, name: str) -> str:
    """The path HAProxy knows an entry by (in the crt-list, on the Runtime API): checked as a file path."""
    return str(rules.file_path(str(store_dir / f"{name}.pem")))


def crt_list_text(store_dir: Path, entries: Mapping[str, Certificate]) -> str:
    """The crt-list file: the default entry first (HAProxy's default certificate), the rest by name."""
    names = [DEFAULT_NAME, *sorted(n for n in entries if n != DEFAULT_NAME)] if DEFAULT_NAME in entries else []
    return "".join(f"{store_path(store_dir, name)}\n" for name in names)


@dataclasses.dataclass(frozen=True)
class Step:
    """One change of HAProxy's certificates: ``add`` a new entry, ``replace`` the content of one, or
    ``remove`` one (never the default: HAProxy keeps it, only replaced)."""

    kind: str  # "add" | "replace" | "remove"
    name: str
    certificate: Certificate | None = None


def steps(running: Mapping[str, str], entries: Mapping[str, Certificate]) -> tuple[Step, ...]:
    """From what HAProxy serves (``running``: entry name -> leaf fingerprint) to ``entries``: removals
    last, so a certificate moved from one name to another is never missing in between."""
    changes = [Step("add", name, cert) for name, cert in entries.items() if name not in running]
    changes += [Step("replace", name, cert) for name, cert in entries.items()
                if name in running and running[name] != cert.fingerprint]
    changes += [Step("remove", name) for name in sorted(running) if name not in entries and name != DEFAULT_NAME]
    return tuple(changes)


def expiring(entries: Mapping[str, Certificate], now: float, window: float) -> list[Certificate]:
    """The certificates that expire within ``window`` seconds of ``now``, soonest first."""
    return sorted((c for c in entries.values() if c.not_after - now <= window), key=lambda c: c.not_after)
