"""devconsul's ACL system against what Consul does, over real HTTP.

What a client of Consul must survive is a token that is missing or too weak: Consul then answers
200 with the part the token may see (an empty list, an empty object), with
``X-Consul-Results-Filtered-By-ACLs: true`` only when a token was presented, and refuses (403) only
an unknown token or a write without permission. Each test starts its own devconsul on a free port,
fills it with the management token, and stops it; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Literal

import pytest

from haproxy_sync.dev.devconsul import AclConfig, AclToken, DevConsulThread, parse_rules
from haproxy_sync.dev.devconsul.cli import _parser, acl_from_args
from tests.integration.devconsul_http import Reply, call

ROOT = "r00t-management-secret"
ANONYMOUS_ACCESSOR = "00000000-0000-0000-0000-000000000002"
ANONYMOUS_TAIL = ". The anonymous token is used implicitly when a request does not specify a token."




def get(consul: DevConsulThread, path: str, **kwargs: Any) -> Reply:
    return call("GET", consul.url + path, **kwargs)


def put(consul: DevConsulThread, path: str, body: Any = None, **kwargs: Any) -> Reply:
    return call("PUT", consul.url + path, body, **kwargs)


def token(name: str, rules: str = "") -> AclToken:
    return AclToken(name, f"{name}-secret", parse_rules(rules))


def secret(t: AclToken) -> str:
    return t.secret_id


@contextmanager
def devconsul(
    *tokens: AclToken, default_policy: Literal["allow", "deny"] = "deny", anonymous: str = ""
) -> Iterator[DevConsulThread]:
    """A devconsul with ACLs on (ROOT a management token), holding web-1, web-admin-1 and api-1 with a TTL
    check each, registered with the management token."""
    acl = AclConfig(default_policy, (AclToken.manager(ROOT), *tokens), parse_rules(anonymous))
    with DevConsulThread(port=0, acl=acl) as consul:
        for service_id, name in (("web-1", "web"), ("web-admin-1", "web-admin"), ("api-1", "api")):
            reply = put(consul, "/v1/agent/service/register",
                        {"ID": service_id, "Name": name, "Port": 80, "Check": {"TTL": "60s", "Status": "passing"}},
                        token=ROOT)
            assert reply.status == 200, reply.text
        yield consul


def service_ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.text
    return sorted(entry["Service"]["ID"] for entry in reply.json())


# ------------------------------------------------------------------------------------------------
# Reads are filtered, not refused


READS_EMPTY_FOR_NOBODY = [
    ("/v1/health/service/web", []),
    ("/v1/health/checks/web", []),
    ("/v1/health/state/any", []),
    ("/v1/health/node/devconsul", []),
    ("/v1/catalog/services", {}),
    ("/v1/catalog/service/web", []),
    ("/v1/catalog/nodes", []),
    ("/v1/agent/services", {}),
    ("/v1/agent/checks", {}),
    ("/v1/agent/members", []),
]


def test_no_token_with_default_deny_reads_nothing_and_gets_no_filtered_header() -> None:
    with devconsul() as consul:
        for path, empty in READS_EMPTY_FOR_NOBODY:
            reply = get(consul, path)
            assert (reply.status, reply.json()) == (200, empty), path
            assert not reply.filtered, f"{path}: Consul masks the header for token-less requests"
            assert reply.headers["x-consul-default-acl-policy"] == "deny"
        assert service_ids(get(consul, "/v1/health/service/web", token=ROOT)) == ["web-1"], "the data is there"


def test_a_token_with_service_and_node_read_gets_the_full_answer_without_the_header() -> None:
    reader = token("reader", "service_prefix:read,node_prefix:read")
    with devconsul(reader) as consul:
        full = get(consul, "/v1/health/service/web", token=secret(reader))
        assert service_ids(full) == ["web-1"] and not full.filtered
        services = get(consul, "/v1/catalog/services", token=secret(reader))
        assert set(services.json()) == {"consul", "web", "web-admin", "api"} and not services.filtered
        checks = get(consul, "/v1/health/state/any", token=secret(reader))
        assert {c["CheckID"] for c in checks.json()} == {"serfHealth", "service:web-1", "service:web-admin-1",
                                                         "service:api-1"} and not checks.filtered
        assert get(consul, "/v1/health/service/web", token=secret(reader)).json() == full.json()


def test_a_token_without_node_read_sees_no_health_entry_and_is_told() -> None:
    services_only = token("services-only", "service_prefix:read")
    with devconsul(services_only) as consul:
        for path in ("/v1/health/service/web", "/v1/catalog/service/web", "/v1/catalog/nodes",
                     "/v1/health/checks/web", "/v1/health/node/devconsul", "/v1/agent/members"):
            reply = get(consul, path, token=secret(services_only))
            assert (reply.status, reply.json(), reply.filtered) == (200, [], True), path
        # Consul's catalog/services and agent/services only ask service:read: nothing is left out there
        services = get(consul, "/v1/catalog/services", token=secret(services_only))
        assert set(services.json()) == {"consul", "web", "web-admin", "api"} and not services.filtered
        agent = get(consul, "/v1/agent/services", token=secret(services_only))
        assert set(agent.json()) == {"web-1", "web-admin-1", "api-1"} and not agent.filtered


def test_a_token_without_service_read_sees_no_health_entry_and_is_told() -> None:
    nodes_only = token("nodes-only", "node_prefix:read")
    with devconsul(nodes_only) as consul:
        for path, empty in (("/v1/health/service/web", []), ("/v1/catalog/service/web", []),
                            ("/v1/catalog/services", {}), ("/v1/agent/services", {})):
            reply = get(consul, path, token=secret(nodes_only))
            assert (reply.status, reply.json(), reply.filtered) == (200, empty, True), path
        nodes = get(consul, "/v1/catalog/nodes", token=secret(nodes_only))
        assert [n["Node"] for n in nodes.json()] == ["devconsul"] and not nodes.filtered
        node_checks = get(consul, "/v1/health/node/devconsul", token=secret(nodes_only))
        assert [c["CheckID"] for c in node_checks.json()] == ["serfHealth"] and node_checks.filtered
        agent_checks = get(consul, "/v1/agent/checks", token=secret(nodes_only))
        assert (agent_checks.json(), agent_checks.filtered) == ({}, True)


def test_exact_rules_win_over_prefixes_and_the_longest_prefix_wins() -> None:
    exact_wins = token("exact", "service_prefix:web:read,service:web-admin:deny,node_prefix:read")
    longest = token("longest", "service_prefix::read,service_prefix:web-:deny,node_prefix:read")
    with devconsul(exact_wins, longest) as consul:
        exact = get(consul, "/v1/catalog/services", token=secret(exact_wins))
        assert (set(exact.json()), exact.filtered) == ({"web"}, True), "api and consul: no rule, default deny"
        assert service_ids(get(consul, "/v1/health/service/web", token=secret(exact_wins))) == ["web-1"]
        denied = get(consul, "/v1/health/service/web-admin", token=secret(exact_wins))
        assert (denied.json(), denied.filtered) == ([], True)

        prefixed = get(consul, "/v1/catalog/services", token=secret(longest))
        assert (set(prefixed.json()), prefixed.filtered) == ({"consul", "web", "api"}, True)
        agent = get(consul, "/v1/agent/services", token=secret(longest))
        assert (set(agent.json()), agent.filtered) == ({"web-1", "api-1"}, True)


def test_rules_for_one_name_merge_deny_over_write_over_read() -> None:
    denied = token("denied", "service:web:deny,service:web:write,node_prefix:read")
    upgraded = token("upgraded", "service:web:write,service:web:read,node_prefix:read")
    with devconsul(denied, upgraded) as consul:
        assert get(consul, "/v1/health/service/web", token=secret(denied)).json() == []
        assert put(consul, "/v1/agent/service/register", {"ID": "web-1", "Name": "web"},
                   token=secret(denied)).status == 403
        assert service_ids(get(consul, "/v1/health/service/web", token=secret(upgraded))) == ["web-1"]
        assert put(consul, "/v1/agent/service/register", {"ID": "web-1", "Name": "web"},
                   token=secret(upgraded)).status == 200


def test_under_default_allow_only_rules_restrict() -> None:
    no_api = token("no-api", "service:api:deny")
    with devconsul(no_api, default_policy="allow") as consul:
        anonymous = get(consul, "/v1/catalog/services")
        assert set(anonymous.json()) == {"consul", "web", "web-admin", "api"}
        assert anonymous.headers["x-consul-default-acl-policy"] == "allow"
        restricted = get(consul, "/v1/catalog/services", token=secret(no_api))
        assert (set(restricted.json()), restricted.filtered) == ({"consul", "web", "web-admin"}, True)
        # an explicit read is no write, even where the default allows it
        reader = put(consul, "/v1/agent/service/register", {"Name": "api"}, token=secret(no_api))
        assert reader.status == 403


def test_the_anonymous_token_has_configurable_rules_and_never_gets_the_header() -> None:
    with devconsul(anonymous="service:web:read,node_prefix:read") as consul:
        assert service_ids(get(consul, "/v1/health/service/web")) == ["web-1"]
        partial = get(consul, "/v1/catalog/services")
        assert (set(partial.json()), partial.filtered) == ({"web"}, False)
        explicit = get(consul, "/v1/catalog/services?token=anonymous")
        assert (set(explicit.json()), explicit.filtered) == ({"web"}, True), "a presented token is told"


def test_a_blocking_query_on_a_filtered_read_waits_on_the_real_index() -> None:
    services_only = token("services-only", "service_prefix:read")
    with devconsul(services_only) as consul, ThreadPoolExecutor(1) as pool:
        first = get(consul, "/v1/health/service/web", token=secret(services_only))
        index = int(first.headers["x-consul-index"])
        started = time.monotonic()
        pending = pool.submit(get, consul, f"/v1/health/service/web?index={index}&wait=10s",
                              token=secret(services_only))
        time.sleep(0.3)
        assert not pending.done(), "the query blocks"
        assert put(consul, "/v1/agent/service/register", {"ID": "web-2", "Name": "web"}, token=ROOT).status == 200
        woken = pending.result(timeout=10)
        assert time.monotonic() - started < 8, "woken by the write, not by the wait"
        assert int(woken.headers["x-consul-index"]) > index
        assert (woken.status, woken.json(), woken.filtered) == (200, [], True)


# ------------------------------------------------------------------------------------------------
# 403 only where Consul gives it


def test_an_unknown_token_is_acl_not_found_on_reads_and_writes() -> None:
    with devconsul() as consul:
        for path in ("/v1/health/service/web", "/v1/catalog/services", "/v1/agent/services", "/v1/agent/self",
                     "/v1/health/state/any", "/v1/catalog/nodes"):
            reply = get(consul, path, token="no-such-token")
            assert (reply.status, reply.text) == (403, "ACL not found"), path
        for path, body in (("/v1/agent/service/register", {"Name": "web"}), ("/v1/agent/service/deregister/nope", None),
                           ("/v1/agent/check/pass/nope", None), ("/v1/agent/maintenance?enable=true", None)):
            write = put(consul, path, body, token="no-such-token")
            assert (write.status, write.text) == (403, "ACL not found"), path
        bad_body = put(consul, "/v1/agent/service/register", {"Port": 1}, token="no-such-token")
        assert (bad_body.status, bad_body.text) == (400, "Missing service name"), "Consul decodes the body first"


def test_status_and_datacenters_need_no_token_at_all() -> None:
    with devconsul() as consul:
        for path in ("/v1/status/leader", "/v1/status/peers", "/v1/catalog/datacenters"):
            for tok in (None, "no-such-token"):
                assert get(consul, path, token=tok).status == 200, (path, tok)
        assert get(consul, "/v1/status/leader").json() == "127.0.0.1:8300"


def test_writes_without_permission_are_refused_with_consuls_text() -> None:
    reader = token("reader", "service_prefix:read,node_prefix:read")
    writer = token("web-writer", "service:web:write,node_prefix:read")
    with devconsul(reader, writer) as consul:
        refused = put(consul, "/v1/agent/service/register", {"ID": "web-9", "Name": "web"}, token=secret(reader))
        assert refused.status == 403
        assert refused.text == (f"Permission denied: token with AccessorID '{reader.accessor_id}' "
                                "lacks permission 'service:write' on \"web\"")
        assert put(consul, "/v1/agent/service/register", {"ID": "web-9", "Name": "web"},
                   token=secret(writer)).status == 200
        other = put(consul, "/v1/agent/service/register", {"Name": "api"}, token=secret(writer))
        assert (other.status, other.text) == (
            403, f"Permission denied: token with AccessorID '{writer.accessor_id}' lacks permission "
                 "'service:write' on \"api\"")
        taking_over = put(consul, "/v1/agent/service/register", {"ID": "api-1", "Name": "web"}, token=secret(writer))
        assert taking_over.status == 403 and "'service:write' on \"api\"" in taking_over.text, "vets the replaced one"

        assert put(consul, "/v1/agent/service/deregister/web-1", token=secret(reader)).status == 403
        unknown = put(consul, "/v1/agent/service/deregister/nope", token=secret(reader))
        assert unknown.status == 404, "an unknown ID is a 404 before any permission"
        assert put(consul, "/v1/agent/check/pass/service:web-1", token=secret(reader)).status == 403
        assert put(consul, "/v1/agent/check/pass/service:web-1", token=secret(writer)).status == 200
        update = put(consul, "/v1/agent/check/update/service:api-1", {"Status": "warning"}, token=secret(writer))
        assert update.status == 403
        maintenance = put(consul, "/v1/agent/service/maintenance/web-1?enable=true", token=secret(reader))
        assert maintenance.status == 403
        node = put(consul, "/v1/agent/maintenance?enable=true", token=secret(writer))
        assert (node.status, node.text) == (
            403, f"Permission denied: token with AccessorID '{writer.accessor_id}' lacks permission "
                 "'node:write' on \"devconsul\"")
        node_check = put(consul, "/v1/agent/check/register", {"Name": "disk", "TTL": "30s"}, token=secret(writer))
        assert node_check.status == 403 and "'node:write'" in node_check.text
        assert put(consul, "/v1/agent/check/deregister/service:web-1", token=secret(writer)).status == 200

        anonymous = put(consul, "/v1/agent/service/register", {"Name": "web"})
        assert (anonymous.status, anonymous.text) == (
            403, "Permission denied: anonymous token lacks permission 'service:write' on \"web\"" + ANONYMOUS_TAIL)
        assert put(consul, "/v1/agent/service/deregister/web-9", token=ROOT).status == 200
        ids = set(get(consul, "/v1/agent/services", token=ROOT).json())
        assert ids == {"web-1", "web-admin-1", "api-1"}, "only the permitted writes landed"


def test_agent_self_and_single_service_reads_need_their_permission() -> None:
    reader = token("reader", "service:web:read,node_prefix:read")
    with devconsul(reader) as consul:
        anonymous = get(consul, "/v1/agent/self")
        assert (anonymous.status, anonymous.text) == (
            403, "Permission denied: anonymous token lacks permission 'agent:read' on \"devconsul\"" + ANONYMOUS_TAIL)
        self_ = get(consul, "/v1/agent/self", token=ROOT)
        assert self_.status == 200
        body = self_.json()
        assert body["DebugConfig"]["ACLsEnabled"] is True
        assert body["DebugConfig"]["ACLResolverSettings"]["ACLDefaultPolicy"] == "deny"
        assert body["Member"]["Tags"]["acls"] == "1" and body["Stats"]["consul"]["acl"] == "enabled"

        assert get(consul, "/v1/agent/service/web-1", token=secret(reader)).status == 200
        api = get(consul, "/v1/agent/service/api-1", token=secret(reader))
        assert (api.status, api.text) == (
            403, f"Permission denied: token with AccessorID '{reader.accessor_id}' lacks permission "
                 "'service:read' on \"api\"")
        assert get(consul, "/v1/agent/service/nope", token=secret(reader)).status == 404
    with DevConsulThread(port=0, acl=AclConfig("allow")) as open_consul:
        assert get(open_consul, "/v1/agent/self").status == 200, "anonymous under default allow may read the agent"


def test_devconsuls_control_endpoints_need_operator_rights() -> None:
    reader = token("reader", "service_prefix:read,node_prefix:read,operator:read")
    with devconsul(reader) as consul:
        assert get(consul, "/v1/devconsul/fault", token=secret(reader)).status == 200
        refused = call("PUT", consul.url + "/v1/devconsul/fault", {"fault": "no_leader"}, token=secret(reader))
        assert (refused.status, refused.text) == (
            403, f"Permission denied: token with AccessorID '{reader.accessor_id}' lacks permission 'operator:write'")
        assert get(consul, "/v1/devconsul/fault").status == 403
        assert call("PUT", consul.url + "/v1/devconsul/fault", {"fault": "no_leader"}, token=ROOT).status == 200
        assert get(consul, "/v1/health/service/web", token=ROOT).status == 500
        assert call("DELETE", consul.url + "/v1/devconsul/fault", token=ROOT).status == 200


# ------------------------------------------------------------------------------------------------
# Tokens: precedence, token/self, configuration


def test_token_precedence_is_query_then_header_then_bearer() -> None:
    a, b, c = token("a"), token("b"), token("c")
    with devconsul(a, b, c) as consul:
        def who(path: str = "/v1/acl/token/self", **headers: str) -> str:
            reply = get(consul, path, headers=headers)
            assert reply.status == 200, reply.text
            return str(reply.json()["AccessorID"])

        bearer = {"Authorization": f"Bearer {secret(c)}"}
        assert who(f"/v1/acl/token/self?token={secret(a)}", **{"X-Consul-Token": secret(b)}, **bearer) == a.accessor_id
        assert who(**{"X-Consul-Token": secret(b)}, **bearer) == b.accessor_id
        assert who(**bearer) == c.accessor_id
        assert who(Authorization=f"bearer {secret(c)}") == c.accessor_id, "the scheme in any case"
        assert who(Authorization=f"Bearer  {secret(c)} trailing") == c.accessor_id, "the first word of the value"
        other_scheme = get(consul, "/v1/acl/token/self", headers={"Authorization": f"Basic {secret(c)}"})
        assert other_scheme.status == 404, "not a bearer token: no token at all"
        wrong_query = get(consul, "/v1/catalog/services?token=nope", token=ROOT)
        assert (wrong_query.status, wrong_query.text) == (403, "ACL not found"), "?token= wins, even a wrong one"


def test_token_self_answers_consuls_shape() -> None:
    reader = token("reader", "service_prefix:read,node_prefix:read")
    with devconsul(reader) as consul:
        mine = get(consul, "/v1/acl/token/self", token=secret(reader))
        assert mine.status == 200
        body = mine.json()
        assert list(body) == ["AccessorID", "SecretID", "Description", "Policies", "Local", "CreateTime", "Hash",
                              "CreateIndex", "ModifyIndex"]
        assert (body["AccessorID"], body["SecretID"], body["Local"]) == (reader.accessor_id, secret(reader), False)
        assert [policy["Name"] for policy in body["Policies"]] == ["reader-policy"]
        assert body["CreateTime"][:2] == "20" and body["Hash"] and body["CreateIndex"] >= 1

        root = get(consul, "/v1/acl/token/self", token=ROOT).json()
        assert root["Policies"] == [{"ID": "00000000-0000-0000-0000-000000000001", "Name": "global-management"}]
        assert root["Description"] == "Initial Management Token"

        anonymous = get(consul, "/v1/acl/token/self?token=anonymous").json()
        assert (anonymous["AccessorID"], anonymous["Description"]) == (ANONYMOUS_ACCESSOR, "Anonymous Token")
        assert "Policies" not in anonymous, "Consul omits empty Policies"

        for tok in (None, "no-such-token"):
            missing = get(consul, "/v1/acl/token/self", token=tok)
            assert (missing.status, missing.text) == (404, "Supplied token does not exist"), tok
    with DevConsulThread(port=0) as no_acl:
        disabled = get(no_acl, "/v1/acl/token/self", token="anything")
        assert (disabled.status, disabled.text) == (401, "ACL support disabled")


def test_without_acls_nothing_is_filtered_or_refused() -> None:
    with DevConsulThread(port=0) as consul:
        assert put(consul, "/v1/agent/service/register", {"Name": "web"}, token="whatever").status == 200
        reply = get(consul, "/v1/health/service/web", token="whatever")
        assert [e["Service"]["ID"] for e in reply.json()] == ["web"] and not reply.filtered
        assert reply.headers["x-consul-default-acl-policy"] == "allow"
        body = get(consul, "/v1/agent/self").json()
        assert body["Member"]["Tags"]["acls"] == "0" and body["DebugConfig"]["ACLsEnabled"] is False


def test_a_restarted_devconsul_keeps_its_acl_system() -> None:
    reader = token("reader", "service_prefix:read,node_prefix:read")
    with devconsul(reader) as consul:
        consul.stop()
        consul.start()
        assert service_ids(get(consul, "/v1/health/service/web", token=secret(reader))) == ["web-1"]
        assert get(consul, "/v1/health/service/web", token="no-such-token").status == 403
        assert get(consul, "/v1/health/service/web").json() == []


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match=r"either token= .* or acl="):
        DevConsulThread(port=0, token=ROOT, acl=AclConfig()).start()
    for bad in ("service_prefix:reed", "services:read", "operator:x:read", "read"):
        with pytest.raises(ValueError):
            parse_rules(bad)
    with pytest.raises(ValueError, match="same secret"):
        AclConfig("deny", (AclToken("a", "s"), AclToken("b", "s")))
    with pytest.raises(ValueError, match="reserved"):
        AclConfig("deny", (AclToken("a", "anonymous"),))
    assert parse_rules("service:a:b:write")[0].name == "a:b", "the level is the last field, the kind the first"


def test_command_line_flags_build_the_acl_system(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = _parser()
    args = parser.parse_args(["--management-token", "S", "--token", "reader=R:service_prefix:read,node_prefix:read",
                              "--anonymous-rules", "node_prefix:read"])
    acl = acl_from_args(args, env_token=None)
    assert acl is not None and acl.default_policy == "deny"
    assert [(t.name, t.management) for t in acl.tokens] == [("management", True), ("reader", False)]
    assert [rule.text for rule in acl.tokens[1].rules] == ["service_prefix:read", "node_prefix:read"]
    assert [rule.text for rule in acl.anonymous_rules] == ["node_prefix:read"]
    assert acl_from_args(parser.parse_args([]), env_token=None) is None, "no option: ACLs off"
    env_only = acl_from_args(parser.parse_args([]), env_token="E")
    assert env_only == AclConfig.management_only("E"), "DEVCONSUL_TOKEN alone is the token= shorthand"
    allow = acl_from_args(parser.parse_args(["--acl-default-policy", "allow"]), env_token=None)
    assert allow == AclConfig("allow")
    assert "NAME=SECRET[:RULES]" in parser.format_help() and "service_prefix" in parser.format_help()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_python_m_devconsul_serves_the_tokens_it_is_given() -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "DEVCONSUL_TOKEN"}
    command = [sys.executable, "-m", "haproxy_sync.dev.devconsul", "--port", str(port), "--management-token", ROOT,
               "--token", "reader=r3ad:service_prefix:read,node_prefix:read"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if call("GET", url + "/v1/status/leader", timeout=1).status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, "devconsul did not start"
            time.sleep(0.05)
        assert call("PUT", url + "/v1/agent/service/register", {"Name": "web"}, token="r3ad").status == 403
        assert call("PUT", url + "/v1/agent/service/register", {"Name": "web"}, token=ROOT).status == 200
        assert [e["Service"]["ID"] for e in call("GET", url + "/v1/health/service/web", token="r3ad").json()] == ["web"]
        assert call("GET", url + "/v1/health/service/web").json() == []
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0
    assert "acl=default-deny acl_tokens=management,reader" in stderr
    assert ROOT not in stderr and "r3ad" not in stderr, "secrets never reach the log"


def test_a_bad_flag_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, "-m", "haproxy_sync.dev.devconsul", "--token", "reader=r:service:web"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "unknown level 'web'" in result.stderr
