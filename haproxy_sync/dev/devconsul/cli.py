"""Command line: ``python -m haproxy_sync.dev.devconsul`` and ``run_forever`` (``haproxy-sync devconsul``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import textwrap
from collections.abc import Sequence
from typing import Final

from haproxy_sync.dev.devconsul.acl import RULES_SYNTAX, AclConfig, AclConfigError, AclToken, parse_rules
from haproxy_sync.dev.devconsul.agentsync import DEFAULT_CHECK_UPDATE_INTERVAL
from haproxy_sync.dev.devconsul.records import _log
from haproxy_sync.dev.devconsul.server import DevConsul
from haproxy_sync.durations import parse_go_duration

_ACL_HELP: Final = f"""\
ACLs are off unless one of the ACL options is given or DEVCONSUL_TOKEN is set. With ACLs on, reads
answer what the request's token may see (200, filtered; X-Consul-Results-Filtered-By-ACLs: true when
a token was sent and something was left out), an unknown token is 403 "ACL not found" and a write
without permission is 403 "Permission denied: token with AccessorID ... lacks permission ...", as in
Consul. A request without a token is the anonymous token's.

  --token NAME=SECRET[:RULES]   a token named NAME (its AccessorID derives from NAME) whose secret is
                                SECRET (no ":" in it); without RULES it may do only what the default
                                policy allows.
{textwrap.fill(RULES_SYNTAX, width=100, initial_indent="  ", subsequent_indent="  ")}
  An exact rule wins over prefix rules, the longest matching prefix wins over shorter ones, write
  implies read, deny denies both; where no rule matches, --acl-default-policy decides.

DEVCONSUL_TOKEN=S alone is ACLs on, default policy deny, S a management token, anonymous nothing.

Example:
  python -m haproxy_sync.dev.devconsul --acl-default-policy deny --management-token root \\
      --token reader=r3ad:service_prefix:read,node_prefix:read \\
      --token web-writer=w3b:service:web:write,node_prefix:read --anonymous-rules node_prefix:read
"""


def _ensure_stderr_logging() -> None:
    """Make sure INFO lines reach stderr when nobody configured logging (python -m, the sandbox)."""
    if not _log.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _log.addHandler(handler)
    if _log.getEffectiveLevel() > logging.INFO:
        _log.setLevel(logging.INFO)


async def _serve_until_signal(
    host: str, port: int, token: str | None, acl: AclConfig | None, check_update_interval: float
) -> None:
    server = DevConsul(host, port, token=token, acl=acl, check_update_interval=check_update_interval)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    _log.info("devconsul listening on %s", server.url)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.stop()


def run_forever(
    host: str,
    port: int,
    *,
    token: str | None = None,
    acl: AclConfig | None = None,
    check_update_interval: float = DEFAULT_CHECK_UPDATE_INTERVAL,
) -> None:
    """Serve until SIGINT/SIGTERM; logs one line 'devconsul listening on http://...' to stderr.

    ``token``: a management token (ACLs on, default deny); ``acl``: the whole ACL system. Not both.
    ``check_update_interval``: seconds an output-only check change waits for the catalog (Consul's).
    """
    _ensure_stderr_logging()
    asyncio.run(_serve_until_signal(host, port, token, acl, check_update_interval))


def _go_duration_arg(text: str) -> float:
    """An argparse type: a Go duration ("5m", "10s", "0") of at least 0."""
    try:
        seconds = parse_go_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return seconds


def acl_from_args(args: argparse.Namespace, env_token: str | None) -> AclConfig | None:
    """The ACL system the command line asks for; None when no ACL option is given and no DEVCONSUL_TOKEN.

    Management tokens are named management, management-2, ... (DEVCONSUL_TOKEN first).
    """
    secrets = ([env_token] if env_token else []) + list(args.management_token)
    wanted = secrets or args.token or args.anonymous_rules is not None or args.acl_default_policy is not None
    if not wanted:
        return None
    managers = tuple(
        AclToken.manager(secret, "management" if n == 1 else f"management-{n}") for n, secret in enumerate(secrets, 1)
    )
    tokens = managers + tuple(AclToken.parse(text) for text in args.token)
    return AclConfig(args.acl_default_policy or "deny", tokens, parse_rules(args.anonymous_rules or ""))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="devconsul",
        description="A Consul HTTP API for development.",
        epilog=_ACL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument(
        "--check-update-interval",
        type=_go_duration_arg,
        default=DEFAULT_CHECK_UPDATE_INTERVAL,
        metavar="DURATION",
        help="Consul's check_update_interval: how long a check result that changes only the output waits "
        "before it reaches the catalog (default 5m; 0: at once).",
    )
    acl = parser.add_argument_group("ACLs (see below)")
    acl.add_argument(
        "--acl-default-policy",
        choices=("allow", "deny"),
        default=None,
        help="What applies where no rule of the token matches (default with ACLs on: deny; Consul's is allow).",
    )
    acl.add_argument(
        "--management-token", action="append", default=[], metavar="SECRET", help="A token that may do everything."
    )
    acl.add_argument(
        "--token", action="append", default=[], metavar="NAME=SECRET[:RULES]", help="A token with rules (repeatable)."
    )
    acl.add_argument(
        "--anonymous-rules", default=None, metavar="RULES", help="The rules of the anonymous token (default: none)."
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m haproxy_sync.dev.devconsul [--host H] [--port P] [ACL options]`; see ``--help``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        acl = acl_from_args(args, os.environ.get("DEVCONSUL_TOKEN") or None)
    except AclConfigError as exc:
        parser.error(str(exc))
    run_forever(args.host, args.port, acl=acl, check_update_interval=args.check_update_interval)
