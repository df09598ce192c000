"""Why things happen, as types: each kind carries its bounded metric label, and the sentence that
goes to the log is built where the thing happens. Nothing parses a sentence back into a label.

Metric label values are part of the interface (dashboards and alerts select on them): they stay the
strings they were before these types existed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class _Labelled(enum.Enum):
    """An enum whose value is its metric label."""

    @property
    def label(self) -> str:
        return str(self.value)


class ReloadKind(_Labelled):
    """What makes a change a reload instead of Runtime API commands (``applies_total{reason}``)."""

    FIRST = "first"  # no live config yet
    BACKENDS = "backends"  # a backend came or went
    SLOTS = "slots"  # a backend's slots cannot grow at runtime for a reason other than dynamic servers
    SLOTS_NO_DYNAMIC = "slots_no_dynamic"  # HAProxy takes no dynamic servers for this backend
    HOSTNAME = "hostname"  # a slot's address is a host name: only a reload resolves it
    STATIC_WEIGHTS = "static_weights"  # a static balance algorithm takes weights only by a reload
    STRUCTURE = "structure"  # the rendered config differs in more than the runtime can apply
    SETTINGS = "settings"  # the template or the settings changed
    RUNTIME_OFF = "runtime_off"  # sync.runtime_api = false
    RUNTIME_FAILED = "runtime_failed"  # the Runtime API path failed; the reload makes HAProxy whole
    UNCONFIRMED = "unconfirmed"  # HAProxy is not yet known to run the live config
    SOCKET_GONE = "socket_gone"  # the admin socket file was deleted: a reload binds it again



@dataclass(frozen=True)
class ReloadReason:
    """One reload's reason: its kind (the metric label) and its sentence (the log line)."""

    kind: ReloadKind
    text: str

    @property
    def label(self) -> str:
        return self.kind.label

    def __str__(self) -> str:
        return self.text


class ApplyPath(_Labelled):
    """How an apply reached HAProxy (``applies_total{path}``, ``convergence_seconds{path}``)."""

    RUNTIME = "runtime"
    RELOAD = "reload"
    NONE = "none"  # nothing to send: identical render, or HAProxy already ran it



class FailureStage(_Labelled):
    """Where an apply failed (``apply_failures_total{stage}``)."""

    TEMPLATE = "template"
    VALIDATION = "validation"
    RELOAD = "reload"
    RUNTIME = "runtime"
    PERSIST = "persist"
    UNEXPECTED = "unexpected"



class ReloadFailure(_Labelled):
    """Why a reload did not confirm (``reload_failures_total{kind}``): each asks for other work."""

    REJECTED = "rejected"  # HAProxy refused the new config at load; the old worker serves
    FD_LIMIT = "fd_limit"  # HAProxy could not get the file descriptors its config needs
    NOT_STARTED = "not_started"  # the master never began the reload
    MASTER_GONE = "master_gone"  # HAProxy's master exited during the reload
    STILL_LOADING = "still_loading"  # the master was still loading at reload_max_wait
    COMMAND = "command"  # haproxy.reload_command failed
    NO_MASTER = "no_master"  # the master CLI could not be reached to ask for a reload


class SkipKind(_Labelled):
    """Why an instance was left out of the config (``instances_skipped{reason}``)."""

    ENTRY = "entry"  # the entry is not the shape of a health answer
    ID = "id"
    NODE = "node"
    ADDRESS = "address"
    PORT = "port"
    WEIGHT = "weight"
    LIMIT = "limit"  # over catalog.MAX_INSTANCES of one service
    REJECTED = "rejected"  # HAProxy refused the config holding it (isolate)

