"""The certificates rotated and the one question asked of HAProxy about them: which one does it serve now.

Every rotation is a new certificate (new key, new serial) for ``localhost`` and ``*.localhost`` from
``haproxy_sync.dev.certificate.self_signed``: one PEM, the certificate then the key, as ``tls.cert_dir``
takes it. They are all made before the load starts, so making them costs the measured run nothing.

A rotation lands as a deploy tool lands one: written aside (``.default.pem.new``: a dot name, which
haproxy-sync's directory reader ignores) and renamed over ``default.pem``, so no reader ever sees half
a file. What is served is told by a fresh TLS handshake (SNI ``localhost``, no verification): the SHA-1
fingerprint of the leaf HAProxy sends, compared with the one of the certificate written.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from bench.common.ports import HOST
from haproxy_sync.dev.certificate import NAMES, self_signed

SNI = "localhost"
DAYS = 30


@dataclass(frozen=True)
class Bundle:
    """One certificate and its key as one PEM, with what identifies it."""

    pem: bytes
    fingerprint: str  # SHA-1 of the leaf's DER, upper-case hex (as HAProxy's `show ssl cert` prints it)
    serial: str


def new_bundle() -> Bundle:
    pem = self_signed(NAMES, DAYS)
    cert = x509.load_pem_x509_certificate(pem)  # the first PEM block: the certificate
    return Bundle(pem, cert.fingerprint(hashes.SHA1()).hex().upper(), f"{cert.serial_number:x}")


def put(cert_dir: Path, pem: bytes, name: str = "default") -> Path:
    """``pem`` as ``<cert_dir>/<name>.pem``: written aside as ``.<name>.pem.new``, flushed, renamed in."""
    aside = cert_dir / f".{name}.pem.new"
    with aside.open("wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    target = cert_dir / f"{name}.pem"
    os.replace(aside, target)
    return target


def _context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


CONTEXT = _context()


def served(port: int, timeout: float = 2.0) -> str | None:
    """The SHA-1 fingerprint of the certificate a fresh handshake on ``port`` gets for SNI ``localhost``;
    None when the connection or the handshake fails (a worker going, a port not yet open)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as raw, \
                CONTEXT.wrap_socket(raw, server_hostname=SNI) as tls:
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return hashlib.sha1(der).hexdigest().upper() if der else None
