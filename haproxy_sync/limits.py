"""Open files: what the daemon needs, checked at start, so that it never meets EMFILE in the middle.

Each watched service holds one connection to Consul for its blocking query (up to
``consul.max_connections``); HAProxy's sockets, the metrics server, file watching, logs and worker
threads need a few more (:data:`OVERHEAD`). At start the soft limit is raised to the hard one when
short; what the configured services need and cannot get is an error naming ``LimitNOFILE``; the
connections to Consul are capped at what the limit leaves, so services discovered later queue for a
connection (logged) instead of failing with "too many open files".
"""

from __future__ import annotations

import dataclasses
import logging
import resource

from haproxy_sync.config import Settings

log = logging.getLogger(__name__)

#: File descriptors for everything but the Consul connections, with a margin.
OVERHEAD = 128


class LimitError(Exception):
    """The open-files limit is too low for the configured services; the message names LimitNOFILE."""


def fit(settings: Settings, limits: tuple[int, int] | None = None) -> Settings:
    """``settings`` with ``consul.max_connections`` capped at what the open-files limit allows.

    Raises :class:`LimitError` when even the configured services cannot each have a connection.
    ``limits`` (soft, hard) is for tests; by default the process's own, raised first when short.
    """
    wanted = settings.consul.max_connections + OVERHEAD
    soft, hard = limits if limits is not None else _raised(wanted)
    needed = len(settings.services) + OVERHEAD
    if soft < needed:
        raise LimitError(f"the open-files limit is {soft} (hard {hard}), and the {len(settings.services)} configured "
                         f"services need {needed}; raise it (LimitNOFILE=65536 in the systemd unit, ulimit -n)")
    if soft >= wanted:
        return settings
    cap = soft - OVERHEAD
    log.warning("the open-files limit (%d, hard %d) allows %d connections to Consul, not consul.max_connections %d: "
                "services beyond %d queue for a connection; set LimitNOFILE=65536 to lift it", soft, hard, cap,
                settings.consul.max_connections, cap)
    return dataclasses.replace(settings, consul=dataclasses.replace(settings.consul, max_connections=cap))


def _raised(wanted: int) -> tuple[int, int]:
    """The process's (soft, hard) limit, the soft one raised towards ``wanted`` (at most the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError) as exc:  # a seccomp filter (@resources) or a container refusing it
            log.info("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
        else:
            log.info("raised the open-files limit from %d to %d (hard %d)", soft, target, hard)
            soft = target
    return soft, hard
