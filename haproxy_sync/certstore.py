"""The certificates' edge: the directory read, the store written, HAProxy's set changed on its Runtime API.

:mod:`certs` decides (pure); this module reads ``tls.cert_dir``, writes ``tls.store_dir`` (one
``<name>.pem`` per entry and the crt-list, each replaced atomically) and runs the steps on the admin
socket: ``new ssl cert`` / ``set ssl cert`` / ``commit ssl cert`` / ``add ssl crt-list`` for a new
entry, ``set`` and ``commit`` for a changed one, ``del ssl crt-list`` / ``del ssl cert`` for a removed
one. Each step is read back (``show ssl cert``: the leaf's SHA-1 fingerprint) before the store is
written, so the files HAProxy loads at its next reload or restart always hold what it serves now.

:class:`CertSync` is the daemon's collaborator: when to look again (a file watch event, every
``tls.check_interval``), what was refused (logged once per file and reason), what is served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

from haproxy_sync import certs, commands, haproxy, logs
from haproxy_sync.certs import Certificate, Directory, Step
from haproxy_sync.config import Settings, TlsSettings

log = logging.getLogger(__name__)

_FINGERPRINT = re.compile(r"^SHA1 FingerPrint: ([0-9A-F]{40})$", re.M)
STORE_MODE = 0o640  # keys: the daemon and HAProxy's group only


class CertError(haproxy.HAProxyError):
    """A certificate change HAProxy did not take, or a store that cannot be written; names which."""


def read_directory(cert_dir: Path, now: float) -> Directory:
    """Every ``*.pem`` of ``cert_dir`` parsed and validated (a link is followed, as Let's Encrypt's
    ``live/`` layout needs); a file that cannot be served is in ``refused`` with why."""
    try:
        names = sorted(os.listdir(cert_dir))
    except OSError as exc:
        raise CertError(f"tls.cert_dir {cert_dir}: cannot list it: {exc.strerror or exc}") from None
    found: dict[str, Certificate] = {}
    refused: dict[str, str] = {}
    for file_name in names:
        if file_name.startswith("."):
            continue  # an editor's or a deploy tool's temp file, not a certificate
        stem = certs.file_stem(file_name)
        if stem is None:
            if file_name.endswith(".pem"):
                refused[file_name] = "a file name of A-Z a-z 0-9 . _ - only (it names the store's file)"
            continue
        path = cert_dir / file_name
        try:
            with path.open("rb") as handle:
                data = handle.read(certs.MAX_FILE_BYTES + 1)
        except OSError as exc:
            refused[file_name] = f"cannot read it: {exc.strerror or exc}"
            continue
        try:
            found[stem] = certs.parse(stem, data, now)
        except certs.Refusal as exc:
            refused[file_name] = str(exc)
    return Directory(found, refused)


def read_store(tls: TlsSettings, now: float) -> dict[str, Certificate]:
    """The store as HAProxy would load it now (the crt-list's entries), for a start that finds it; its
    certificates are served as they are, expired or not, until the directory has better ones."""
    try:
        listed = tls.crt_list.read_text().split()
    except (OSError, UnicodeDecodeError):
        return {}
    entries: dict[str, Certificate] = {}
    for path in map(Path, listed):
        stem = certs.file_stem(path.name)
        if stem is None or path.parent != tls.store_dir:
            continue
        with contextlib.suppress(OSError, certs.Refusal):
            entries[stem] = certs.parse(stem, path.read_bytes(), now, check_dates=False)
    return entries


def write_store(tls: TlsSettings, entries: Mapping[str, Certificate], group: str = "") -> None:
    """Each entry's file, then the crt-list (the file HAProxy reads last names only written files), then
    the files of entries gone; every file replaced whole."""
    try:
        tls.store_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"tls.store_dir {tls.store_dir}: cannot create it: {exc.strerror or exc}") from None
    for name, cert in entries.items():
        haproxy.atomic_write(Path(certs.store_path(tls.store_dir, name)), cert.pem, mode=STORE_MODE, group=group,
                             setting="tls.store_dir")
    haproxy.atomic_write(tls.crt_list, certs.crt_list_text(tls.store_dir, entries), mode=STORE_MODE, group=group,
                         setting="tls.store_dir")
    for file_name in os.listdir(tls.store_dir):
        stem = certs.file_stem(file_name)
        if stem is not None and stem not in entries:
            with contextlib.suppress(OSError):
                (tls.store_dir / file_name).unlink()


def trial_store(tls: TlsSettings, directory: Path) -> TlsSettings:
    """``tls`` for a ``haproxy -c`` that must not depend on the live store: unchanged when the store
    exists (what HAProxy loads), else pointing at a store written in ``directory`` from the certificate
    directory (a first ``check`` on a new host). Raises :class:`CertError` when nothing can be served."""
    if not tls.enabled or tls.crt_list.exists():
        return tls
    found = read_directory(tls.cert_dir, time.time())
    entries = certs.wanted(found)
    if not entries:
        raise CertError(f"tls.cert_dir {tls.cert_dir} holds no certificate that can be served{_reasons(found)}; add "
                        "one (PEM: certificate, chain, key) or set tls.enabled = false")
    trial = dataclasses.replace(tls, store_dir=directory)
    write_store(trial, entries)
    return trial


def running(stats_socket: Path, tls: TlsSettings) -> dict[str, str] | None:
    """What HAProxy serves from the store: entry name -> leaf fingerprint; None when HAProxy does not
    load the store (TLS just turned on: the next reload loads it)."""
    listing = haproxy.socket_command(stats_socket, commands.SHOW_SSL_CERTS)
    ours = [Path(line.strip()) for line in listing.splitlines() if line.startswith("/")]
    ours = [path for path in ours if path.parent == tls.store_dir and certs.file_stem(path.name)]
    if not ours:
        return None
    served: dict[str, str] = {}
    for path in ours:
        match = _FINGERPRINT.search(haproxy.socket_command(stats_socket, commands.show_ssl_cert(str(path))))
        stem = certs.file_stem(path.name)
        if match and stem:
            served[stem] = match.group(1)
    return served


def apply_steps(stats_socket: Path, tls: TlsSettings, steps: tuple[Step, ...]) -> None:
    """Run ``steps`` on the admin socket, each read back; raises :class:`CertError` at the first that
    HAProxy did not take (its transaction aborted: what HAProxy served before stays)."""
    crt_list = str(tls.crt_list)
    for step in steps:
        path = certs.store_path(tls.store_dir, step.name)
        if step.kind == "remove":
            _expect(haproxy.socket_command(stats_socket, commands.del_ssl_crt_list(crt_list, path)), "deleted", step)
            _expect(haproxy.socket_command(stats_socket, commands.del_ssl_cert(path)), "deleted", step)
            continue
        cert = step.certificate
        assert cert is not None
        if step.kind == "add":
            _expect(haproxy.socket_command(stats_socket, commands.new_ssl_cert(path)), "New empty certificate", step)
        command, payload = commands.set_ssl_cert(path, cert.pem)
        try:
            _expect(haproxy.socket_payload(stats_socket, command, payload), "Transaction created", step)
            _expect(haproxy.socket_command(stats_socket, commands.commit_ssl_cert(path)), "Success!", step)
        except CertError:
            with contextlib.suppress(haproxy.HAProxyError):
                haproxy.socket_command(stats_socket, commands.abort_ssl_cert(path))
            if step.kind == "add":
                with contextlib.suppress(haproxy.HAProxyError):
                    haproxy.socket_command(stats_socket, commands.del_ssl_cert(path))
            raise
        if step.kind == "add":
            _expect(haproxy.socket_command(stats_socket, commands.add_ssl_crt_list(crt_list, path)), "Success!", step)
        shown = _FINGERPRINT.search(haproxy.socket_command(stats_socket, commands.show_ssl_cert(path)))
        if not shown or shown.group(1) != cert.fingerprint:
            raise CertError(f"certificate {step.name}: HAProxy serves fingerprint "
                            f"{shown.group(1) if shown else 'none'} after the change, expected {cert.fingerprint}")


def _expect(answer: str, marker: str, step: Step) -> None:
    if marker not in answer:
        first = next((line.strip() for line in answer.splitlines() if line.strip()), "no answer")
        raise CertError(f"certificate {step.name}: HAProxy refused the {step.kind}: {first[:200]!r}")


@dataclasses.dataclass(frozen=True)
class Applied:
    """The outcome of one look at the directory."""

    added: int = 0
    replaced: int = 0
    removed: int = 0
    runtime: bool = False  # the changes went through the Runtime API (else: written for the next reload)
    newly_expiring: tuple[Certificate, ...] = ()  # served, within tls.expiry_warning, not told before

    @property
    def changed(self) -> bool:
        return bool(self.added or self.replaced or self.removed)

    def sentence(self) -> str:
        where = "on the Runtime API, no reload" if self.runtime else "written to the store for HAProxy's next load"
        return f"certificates +{self.added} ~{self.replaced} -{self.removed} {where}"


class CertSync:
    """When the daemon looks at the certificate directory again, and what it serves."""

    def __init__(self) -> None:
        self.entries: dict[str, Certificate] = {}  # what the store holds (and HAProxy serves)
        self.refused: dict[str, str] = {}  # file name -> why, as last logged
        self.due_at: float | None = 0.0  # at start: at once
        self.expiring: list[Certificate] = []
        self._told_expiring: set[str] = set()  # fingerprints whose expiry was reported once already

    def look_soon(self) -> None:
        self.due_at = 0.0

    def due(self, now: float) -> bool:
        return self.due_at is not None and now >= self.due_at

    def sync(self, settings: Settings, now: float, haproxy_runs: bool) -> Applied:
        """Read the directory, refuse what cannot be served (the store keeps what it had), change
        HAProxy's set on its Runtime API when it runs the store, write the store."""
        tls = settings.tls
        self.due_at = time.monotonic() + tls.check_interval
        directory = read_directory(tls.cert_dir, now)
        self._log_refusals(tls, directory)
        # A file refused now keeps the entry it had: a bad renewal never takes a name off the edge.
        kept = {stem: self.entries[stem] for stem in map(certs.file_stem, directory.refused)
                if stem and stem in self.entries}
        wanted = certs.wanted(Directory({**kept, **directory.certificates}, directory.refused))
        if not wanted:
            kept = self.entries or read_store(tls, now)
            if not kept:
                raise CertError(f"tls.cert_dir {tls.cert_dir} holds no certificate that can be served"
                                f"{_reasons(directory)}; add one (PEM: certificate, chain, key) or set tls.enabled "
                                "= false")
            log.warning("tls.cert_dir %s holds no certificate that can be served: the last good ones stay",
                        tls.cert_dir, extra=logs.event("tls.none_valid", path=str(tls.cert_dir)))
            self.entries = kept
            wanted = kept
        served = None
        if haproxy_runs:
            with contextlib.suppress(haproxy.SocketError):  # not running (yet): the store is what it loads
                served = running(settings.haproxy.stats_socket, tls)
        plan = certs.steps(served if served is not None else self.entries, wanted)
        if served is not None:
            apply_steps(settings.haproxy.stats_socket, tls, plan)
        if plan or not tls.crt_list.exists():
            write_store(tls, wanted, settings.haproxy.group)
        self.entries = dict(wanted)
        self.expiring = certs.expiring(self.entries, now, tls.expiry_warning)
        newly = tuple(c for c in self.expiring if c.fingerprint not in self._told_expiring)
        self._told_expiring.update(c.fingerprint for c in newly)
        kinds = [step.kind for step in plan]
        return Applied(kinds.count("add"), kinds.count("replace"), kinds.count("remove"), served is not None, newly)

    def _log_refusals(self, tls: TlsSettings, directory: Directory) -> None:
        for file_name, why in sorted(directory.refused.items()):
            if self.refused.get(file_name) != why:
                log.warning("certificate %s refused: %s; the certificate served before stays", tls.cert_dir / file_name,
                            why, extra=logs.event("tls.refused", path=str(tls.cert_dir / file_name), reason=why))
        self.refused = dict(directory.refused)


def _reasons(directory: Directory) -> str:
    if not directory.refused:
        return " (no *.pem file)"
    return " (" + "; ".join(f"{name}: {why}" for name, why in sorted(directory.refused.items())[:3]) + ")"
