"""devconsul's ACL system, as Consul's: tokens with policies, an anonymous token, a default policy.

Why it is written out rather than one shared secret: a client of Consul must cope with what Consul
really does when a token is missing or too weak. Reads are *filtered*, not refused (200 with the
permitted part, ``X-Consul-Results-Filtered-By-ACLs: true`` when a token was presented), and only an
unknown token or a write without permission is a 403. A stand-in that refuses instead hides the most
dangerous case: an empty answer that looks like "no instances".

Pure and small on purpose (no HTTP here): the server resolves a request's token to an `Authorizer`
(pipeline.py) and asks it ``service_read(name)``, ``node_write(name)``, ...; the handlers filter and
vet with it. Semantics follow Consul's acl package:

* a rule is a name matched exactly (``service "web"``) or as a prefix (``service_prefix "web-"``),
  with a level ``read``, ``write`` or ``deny``; for a name, an exact rule wins, else the longest
  matching prefix rule (acl/policy_authorizer.go ``getPolicy``); ``write`` implies ``read``, ``deny``
  denies both (``enforce``);
* rules of the same kind and name from several policies merge with deny > write > read
  (acl/policy.go ``takesPrecedenceOver``);
* where no rule matches, the default policy (``allow`` or ``deny``) decides, after the token's own
  rules (agent/consul/acl.go: the token's authorizer chained with ``RootAuthorizer(default)``); a
  management token may do everything;
* a request without a token is the anonymous token's (AccessorID ``00000000-...-0002``, secret
  ``anonymous``), whose rules are configurable;
* ``key`` / ``key_prefix`` rules guard the KV store the same way; a recursive delete needs
  ``key_write_prefix`` (``KeyWritePrefix``): the longest prefix rule over the prefix grants write and
  no rule under the prefix (exact or prefix) grants less.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast

Level = Literal["read", "write", "deny"]
RuleKind = Literal["service", "node", "agent", "key", "operator"]
DefaultPolicy = Literal["allow", "deny"]

ANONYMOUS_ACCESSOR_ID: Final = "00000000-0000-0000-0000-000000000002"  # acl.AnonymousTokenID
ANONYMOUS_SECRET: Final = "anonymous"  # the anonymous token's SecretID
MANAGEMENT_POLICY_ID: Final = "00000000-0000-0000-0000-000000000001"  # structs.ACLPolicyGlobalManagementID
MANAGEMENT_POLICY_NAME: Final = "global-management"

_LEVELS: Final = ("read", "write", "deny")
_NAMED_KINDS: Final = ("service", "node", "agent", "key")  # each with an exact and a _prefix form
_KINDS: Final = (*_NAMED_KINDS, *(kind + "_prefix" for kind in _NAMED_KINDS), "operator")
_RESERVED_SECRETS: Final = (ANONYMOUS_SECRET, "allow", "deny", "manage")  # Consul's root policy names
_PRECEDENCE: Final = {"deny": 3, "write": 2, "read": 1}
_NAMESPACE: Final = uuid.UUID("7d3c8a52-5a0e-4f55-9d0c-6b1a3f0e9c41")  # devconsul's own uuid5 namespace

RULES_SYNTAX: Final = (
    "RULES is a comma-separated list of rules, each KIND:LEVEL (the name is \"\", so a _prefix kind "
    "matches every name) or KIND:NAME:LEVEL. KIND is service, service_prefix, node, node_prefix, "
    "agent, agent_prefix, key, key_prefix or operator (operator takes no name); LEVEL is read, write or "
    "deny. "
    "Example: service_prefix:read,node_prefix:read,service:web:write"
)


class AclConfigError(ValueError):
    """An ACL rule, token or configuration devconsul cannot honour (a typo would silently deny)."""


@dataclass(frozen=True)
class Rule:
    """One rule: ``service_prefix "web-" { policy = "read" }`` is Rule("service", "web-", "read", prefix=True)."""

    kind: RuleKind
    name: str
    level: Level
    prefix: bool = False

    def __post_init__(self) -> None:
        if self.kind not in (*_NAMED_KINDS, "operator"):
            raise AclConfigError(f"unknown ACL rule kind {self.kind!r}")
        if self.level not in _LEVELS:
            raise AclConfigError(f"unknown ACL level {self.level!r} (read, write or deny)")
        if self.kind == "operator" and (self.name or self.prefix):
            raise AclConfigError("an operator rule takes no name")

    @property
    def text(self) -> str:
        """The rule in the command-line syntax (see RULES_SYNTAX)."""
        kind = self.kind + ("_prefix" if self.prefix else "")
        return f"{kind}:{self.level}" if not self.name else f"{kind}:{self.name}:{self.level}"


def parse_rule(text: str) -> Rule:
    """``service_prefix:read``, ``service:web:write``, ``operator:read``: see RULES_SYNTAX."""
    kind, sep, rest = text.strip().partition(":")
    if not sep:
        raise AclConfigError(f"ACL rule {text!r} is not KIND:LEVEL or KIND:NAME:LEVEL")
    name, _, level = rest.rpartition(":")
    if kind not in _KINDS:
        raise AclConfigError(f"ACL rule {text!r}: unknown kind {kind!r} (one of {', '.join(_KINDS)})")
    if level not in _LEVELS:
        raise AclConfigError(f"ACL rule {text!r}: unknown level {level!r} (read, write or deny)")
    base = kind.removesuffix("_prefix")
    return Rule(cast(RuleKind, base), name, cast(Level, level), prefix=kind != base)


def parse_rules(text: str | Iterable[str] | Iterable[Rule]) -> tuple[Rule, ...]:
    """Rules from ``"service_prefix:read,node_prefix:read"``, from a list of such strings, or Rules."""
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(item if isinstance(item, Rule) else parse_rule(item) for item in items if item != "")


def _token_uuid(what: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, what))


@dataclass(frozen=True)
class AclToken:
    """A token: its secret (what clients send), a name, and either rules or management rights.

    The AccessorID is derived from the name, so a test knows it in advance (the 403 of a write
    without permission names it, as Consul's does).
    """

    name: str
    secret_id: str
    rules: tuple[Rule, ...] = ()
    management: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise AclConfigError("an ACL token needs a name")
        if not self.secret_id:
            raise AclConfigError(f"ACL token {self.name!r} needs a secret")
        object.__setattr__(self, "rules", parse_rules(self.rules))

    @classmethod
    def manager(cls, secret_id: str, name: str = "management") -> AclToken:
        """A management token, as ``acl.tokens.initial_management`` makes one."""
        return cls(name, secret_id, management=True, description="Initial Management Token")

    @classmethod
    def parse(cls, text: str) -> AclToken:
        """``NAME=SECRET`` or ``NAME=SECRET:RULES`` (the command line's ``--token``; see RULES_SYNTAX)."""
        name, sep, rest = text.partition("=")
        secret, _, rules = rest.partition(":")
        if not sep or not name or not secret:
            raise AclConfigError(f"ACL token {text!r} is not NAME=SECRET or NAME=SECRET:RULES")
        return cls(name, secret, parse_rules(rules))

    @property
    def accessor_id(self) -> str:
        return _token_uuid(f"token:{self.name}")

    @property
    def policy_links(self) -> list[dict[str, str]]:
        """The token's ``Policies`` as Consul lists them (devconsul gives each token one policy)."""
        if self.management:
            return [{"ID": MANAGEMENT_POLICY_ID, "Name": MANAGEMENT_POLICY_NAME}]
        if not self.rules:
            return []
        return [{"ID": _token_uuid(f"policy:{self.name}"), "Name": f"{self.name}-policy"}]


@dataclass(frozen=True)
class AclConfig:
    """The ACL system of one DevConsul: default policy, tokens, and the anonymous token's rules.

    ``default_policy`` is devconsul's own default, ``deny`` (Consul's config default is ``allow``,
    but with ACLs switched on for a test one wants them to bite).
    """

    default_policy: DefaultPolicy = "deny"
    tokens: tuple[AclToken, ...] = ()
    anonymous_rules: tuple[Rule, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.default_policy not in ("allow", "deny"):
            raise AclConfigError(f"ACL default policy must be allow or deny, not {self.default_policy!r}")
        object.__setattr__(self, "tokens", tuple(self.tokens))
        object.__setattr__(self, "anonymous_rules", parse_rules(self.anonymous_rules))
        names = [token.name for token in self.tokens]
        secrets = [token.secret_id for token in self.tokens]
        for what, values in (("name", names), ("secret", secrets)):
            if len(set(values)) != len(values):
                raise AclConfigError(f"two ACL tokens have the same {what}")
        for token in self.tokens:
            if token.secret_id in _RESERVED_SECRETS or token.name == "anonymous":
                raise AclConfigError(f"ACL token {token.name!r}: {token.secret_id!r}/{token.name!r} is reserved")

    @classmethod
    def management_only(cls, secret_id: str) -> AclConfig:
        """What ``DevConsul(token=S)`` means: ACLs on, default deny, S a management token, anonymous nothing."""
        return cls("deny", (AclToken.manager(secret_id),))

    @property
    def anonymous(self) -> AclToken:
        return AclToken("anonymous", ANONYMOUS_SECRET, self.anonymous_rules, description="Anonymous Token")

    def resolve(self, secret: str | None) -> Authorizer | None:
        """The Authorizer of a request's token; None when the secret is not a token ("ACL not found")."""
        if not secret:
            return Authorizer(self.anonymous, self.default_policy, presented=False)
        if hmac.compare_digest(secret.encode(), ANONYMOUS_SECRET.encode()):
            return Authorizer(self.anonymous, self.default_policy, presented=True)
        found = None
        for token in self.tokens:  # compare every secret, in constant time each
            if hmac.compare_digest(secret.encode(), token.secret_id.encode()):
                found = token
        return None if found is None else Authorizer(found, self.default_policy, presented=True)

    def token_by_secret(self, secret: str) -> AclToken | None:
        """The token whose SecretID this is (the anonymous one included), as ACL.TokenRead by secret."""
        authorizer = self.resolve(secret) if secret else None
        return authorizer.token if authorizer is not None else None


class _RuleTable:
    """The merged rules of one kind: exact and prefix rules by name, deny > write > read on a tie."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._exact: dict[str, Level] = {}
        self._prefix: dict[str, Level] = {}
        for rule in rules:
            table = self._prefix if rule.prefix else self._exact
            held = table.get(rule.name)
            if held is None or _PRECEDENCE[rule.level] > _PRECEDENCE[held]:
                table[rule.name] = rule.level

    def lookup(self, name: str) -> Level | None:
        """The exact rule for `name`, else the longest prefix rule that matches it, else None."""
        if name in self._exact:
            return self._exact[name]
        matches = [prefix for prefix in self._prefix if name.startswith(prefix)]
        return self._prefix[max(matches, key=len)] if matches else None

    def write_prefix(self, prefix: str) -> bool | None:
        """KeyWritePrefix (acl/policy_authorizer.go): False when the longest prefix rule over `prefix` is
        not write or any rule under it (exact or prefix) is not write; True when that prefix rule is write
        and nothing under it is less; None when no prefix rule covers it and nothing under it is less
        (the default policy decides)."""
        covering = [rule for rule in self._prefix if prefix.startswith(rule)]
        over = self._prefix[max(covering, key=len)] if covering else None
        if over is not None and over != "write":
            return False
        under = [level for name, level in (*self._prefix.items(), *self._exact.items()) if name.startswith(prefix)]
        if any(level != "write" for level in under):
            return False
        return None if over is None else True


def _enforce(level: Level, need: Literal["read", "write"]) -> bool:
    return level == "write" or (level == "read" and need == "read")


class Authorizer:
    """What one request's token may do. ACLs off: `ALLOW_ALL`, which never filters nor refuses."""

    def __init__(self, token: AclToken, default_policy: DefaultPolicy, *, presented: bool) -> None:
        self.token = token
        self.presented = presented  # the request carried a token: Consul only then sets the filtered header
        self._default_allow = default_policy == "allow"
        self._tables = {
            kind: _RuleTable(rule for rule in token.rules if rule.kind == kind) for kind in _NAMED_KINDS
        }
        self._operator = _RuleTable(rule for rule in token.rules if rule.kind == "operator")

    @property
    def accessor_id(self) -> str:
        return ANONYMOUS_ACCESSOR_ID if self.is_anonymous else self.token.accessor_id

    @property
    def is_anonymous(self) -> bool:
        return self.token.secret_id == ANONYMOUS_SECRET

    def _decide(self, kind: str, name: str, need: Literal["read", "write"]) -> bool:
        if self.token.management:
            return True
        level = (self._operator if kind == "operator" else self._tables[kind]).lookup(name)
        return self._default_allow if level is None else _enforce(level, need)

    def service_read(self, name: str) -> bool:
        return self._decide("service", name, "read")

    def service_write(self, name: str) -> bool:
        return self._decide("service", name, "write")

    def node_read(self, name: str) -> bool:
        return self._decide("node", name, "read")

    def node_write(self, name: str) -> bool:
        return self._decide("node", name, "write")

    def agent_read(self, node: str) -> bool:
        return self._decide("agent", node, "read")

    def agent_write(self, node: str) -> bool:
        return self._decide("agent", node, "write")

    def key_read(self, key: str) -> bool:
        return self._decide("key", key, "read")

    def key_write(self, key: str) -> bool:
        return self._decide("key", key, "write")

    def key_write_prefix(self, prefix: str) -> bool:
        """May delete everything under `prefix` (``?recurse``): see _RuleTable.write_prefix."""
        if self.token.management:
            return True
        decision = self._tables["key"].write_prefix(prefix)
        return self._default_allow if decision is None else decision

    def operator_read(self) -> bool:
        return self._decide("operator", "", "read")

    def operator_write(self) -> bool:
        return self._decide("operator", "", "write")

    def allowed(self, kind: str, need: Literal["read", "write"], name: str = "") -> bool:
        """The same decisions by name: ``allowed("service", "write", "web")``."""
        if kind == "operator":
            return self._decide("operator", "", need)
        return self._decide(kind, name, need)

    def denial(self, kind: str, need: Literal["read", "write"], name: str = "") -> str:
        """Consul's text for this refusal (acl/errors.go ``PermissionDeniedError.Error``)."""
        who = "anonymous token" if self.is_anonymous else f"token with AccessorID '{self.accessor_id}'"
        message = f"Permission denied: {who} lacks permission '{kind}:{need}'"
        if name:
            message += f' on "{name}"'
        if self.is_anonymous:
            message += ". The anonymous token is used implicitly when a request does not specify a token."
        return message

    def filtered_header(self, removed: bool) -> bool:
        """Whether to answer ``X-Consul-Results-Filtered-By-ACLs: true`` (Consul masks it for token-less
        requests: agent/consul/rpc.go ``maskResultsFilteredByACLs``)."""
        return removed and self.presented


ALLOW_ALL: Final = Authorizer(AclToken.manager("devconsul-acl-disabled", "acl-disabled"), "allow", presented=False)


def token_json(token: AclToken, *, created: str, index: int) -> dict[str, Any]:
    """The token as ``/v1/acl/token/self`` answers it (structs.ACLToken; empty Policies are omitted)."""
    accessor = ANONYMOUS_ACCESSOR_ID if token.secret_id == ANONYMOUS_SECRET else token.accessor_id
    links = token.policy_links
    digest = hashlib.blake2b(digest_size=32)
    for part in (token.description, *(link["ID"] for link in links), "local=false"):
        digest.update(part.encode() + b"\0")
    out: dict[str, Any] = {"AccessorID": accessor, "SecretID": token.secret_id, "Description": token.description}
    if links:
        out["Policies"] = links
    out.update(
        {
            "Local": False,
            "CreateTime": created,
            "Hash": base64.b64encode(digest.digest()).decode(),
            "CreateIndex": index,
            "ModifyIndex": index,
        }
    )
    return out


def acl_summary(config: AclConfig | None) -> Mapping[str, Any]:
    """What /v1/agent/self shows of the ACL configuration (DebugConfig, as Consul's runtime config)."""
    enabled = config is not None
    policy = config.default_policy if config is not None else "allow"
    return {
        "ACLsEnabled": enabled,
        "ACLResolverSettings": {"ACLsEnabled": enabled, "ACLDefaultPolicy": policy, "ACLDownPolicy": "extend-cache"},
    }
