"""devconsul's catalog writes and node reads against Consul's (api-docs/catalog, agent/catalog_endpoint.go,
agent/consul/catalog_endpoint.go, agent/consul/state/catalog.go).

External nodes registered through /v1/catalog/register (the way ESM or a Nomad-style registration does
it) show in every health and catalog read with their own node and checks, wake blocking queries, go
with /v1/catalog/deregister, and are vetted with Consul's ACL rules; /v1/catalog/node/<node> answers
Consul's shape, null for an unknown node; a service without instances answers the last extinction
index. Raw HTTP to a devconsul of each test's own; every wait is bounded.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from haproxy_sync.dev.devconsul import AclConfig, AclToken, DevConsulThread, parse_rules
from tests.integration.devconsul_http import Reply, call

ROOT = "catalog-root-secret"
NODE_ID = "2d6a5f1e-8c3b-4f7a-9e0d-1b2c3d4e5f60"




def get(consul: DevConsulThread, path: str, **kwargs: Any) -> Reply:
    return call("GET", consul.url + path, **kwargs)


def put(consul: DevConsulThread, path: str, body: Any = None, **kwargs: Any) -> Reply:
    return call("PUT", consul.url + path, body, **kwargs)


def external(node: str = "ext-1", address: str = "192.0.2.10", **overrides: Any) -> dict[str, Any]:
    """A registration as api-docs/catalog#register-entity shows one: node, service, a check on it."""
    body: dict[str, Any] = {
        "Datacenter": "dc1",
        "ID": NODE_ID,
        "Node": node,
        "Address": address,
        "TaggedAddresses": {"lan": address, "wan": "198.51.100.1"},
        "NodeMeta": {"external-node": "true", "rack": "r1"},
        "Service": {"ID": "redis-1", "Service": "redis", "Tags": ["primary"], "Address": "", "Port": 6379,
                    "Meta": {"version": "7"}},
        "Check": {"Node": node, "CheckID": "redis-alive", "Name": "Redis alive", "Status": "passing",
                  "ServiceID": "redis-1", "Output": "PONG", "Definition": {"TCP": f"{address}:6379",
                                                                          "Interval": "5s", "Timeout": "1s"}},
    }
    body.update(overrides)
    return body


def register(consul: DevConsulThread, body: dict[str, Any], token: str | None = None) -> None:
    reply = put(consul, "/v1/catalog/register", body, token=token)
    assert (reply.status, reply.text) == (200, "true"), reply.text


# --------------------------------------------------------------------------------------------------
# catalog/node


def test_catalog_node_answers_the_node_and_its_services_by_id(consul: DevConsulThread) -> None:
    put(consul, "/v1/agent/service/register", {"ID": "web-1", "Name": "web", "Port": 80})

    reply = get(consul, "/v1/catalog/node/devconsul")

    body = reply.json()
    assert set(body) == {"Node", "Services"}
    assert (body["Node"]["Node"], body["Node"]["Address"], body["Node"]["Datacenter"]) == ("devconsul", "127.0.0.1",
                                                                                         "dc1")
    assert set(body["Services"]) == {"consul", "web-1"}
    web = body["Services"]["web-1"]
    assert (web["ID"], web["Service"], web["Port"], web["Tags"]) == ("web-1", "web", 80, [])
    assert reply.index == consul.index  # the service write moved the node's own index
    node_id = body["Node"]["ID"]
    assert get(consul, f"/v1/catalog/node/{node_id}").json()["Node"]["Node"] == "devconsul"  # by ID too
    assert get(consul, f"/v1/catalog/node/{node_id[:8]}").json()["Node"]["Node"] == "devconsul"  # an ID prefix
    assert get(consul, "/v1/catalog/node/DevConsul").json()["Node"]["Node"] == "devconsul"  # any case
    filtered = get(consul, "/v1/catalog/node/devconsul?filter=Service%20%3D%3D%20%22web%22").json()
    assert set(filtered["Services"]) == {"web-1"}


def test_catalog_node_of_an_unknown_node_is_null(consul: DevConsulThread) -> None:
    reply = get(consul, "/v1/catalog/node/no-such-node")

    assert (reply.status, reply.body) == (200, b"null")
    assert reply.index == 1  # no node ever went: node_last_extinction is 0, reported as 1


# --------------------------------------------------------------------------------------------------
# catalog/register


def test_an_external_registration_shows_in_every_read(consul: DevConsulThread) -> None:
    register(consul, external())

    [entry] = get(consul, "/v1/catalog/service/redis").json()
    assert (entry["Node"], entry["Address"], entry["ID"], entry["Datacenter"]) == ("ext-1", "192.0.2.10", NODE_ID,
                                                                                  "dc1")
    assert (entry["ServiceID"], entry["ServicePort"], entry["ServiceTags"]) == ("redis-1", 6379, ["primary"])
    assert entry["NodeMeta"] == {"external-node": "true", "rack": "r1"}
    assert entry["TaggedAddresses"] == {"lan": "192.0.2.10", "wan": "198.51.100.1"}
    assert entry["ServiceTaggedAddresses"] is None  # no lan/wan derived: that is the agent's doing
    assert entry["ServiceWeights"] == {"Passing": 1, "Warning": 1}

    [health] = get(consul, "/v1/health/service/redis?passing").json()
    assert health["Node"]["Node"] == "ext-1"
    [check] = health["Checks"]  # its own check only: an external node has no serfHealth
    assert (check["CheckID"], check["Node"], check["Status"], check["Output"]) == ("redis-alive", "ext-1", "passing",
                                                                                "PONG")
    assert (check["ServiceName"], check["ServiceTags"], check["Type"]) == ("redis", ["primary"], "tcp")
    assert check["Definition"] == {"TCP": "192.0.2.10:6379", "Interval": "5s", "Timeout": "1s"}

    assert [n["Node"] for n in get(consul, "/v1/catalog/nodes").json()] == ["devconsul", "ext-1"]
    assert [n["Node"] for n in get(consul, "/v1/catalog/nodes?node-meta=rack:r1").json()] == ["ext-1"]
    assert get(consul, "/v1/catalog/services").json()["redis"] == ["primary"]
    assert get(consul, "/v1/catalog/services?node-meta=rack:r1").json() == {"redis": ["primary"]}
    node = get(consul, "/v1/catalog/node/ext-1").json()
    assert (node["Node"]["Meta"], set(node["Services"])) == ({"external-node": "true", "rack": "r1"}, {"redis-1"})
    assert [c["CheckID"] for c in get(consul, "/v1/health/node/ext-1").json()] == ["redis-alive"]
    assert "redis-alive" in {c["CheckID"] for c in get(consul, "/v1/health/state/passing").json()}
    assert "redis-1" not in get(consul, "/v1/agent/services").json()  # the catalog has it, the agent does not


def test_a_registration_without_maps_keeps_them_null_and_the_check_critical(consul: DevConsulThread) -> None:
    register(consul, {"Node": "bare", "Address": "192.0.2.20", "Service": {"Service": "db"},
                      "Check": {"Name": "db check", "ServiceID": "db"}})

    [entry] = get(consul, "/v1/health/service/db").json()
    assert (entry["Node"]["Meta"], entry["Node"]["TaggedAddresses"], entry["Node"]["ID"]) == (None, None, "")
    assert entry["Service"]["ID"] == "db"  # the ID defaults to the name
    [check] = entry["Checks"]
    assert (check["CheckID"], check["Status"]) == ("db check", "critical")  # CheckID from the Name; critical
    assert get(consul, "/v1/health/service/db?passing").json() == []


def test_an_update_moves_only_what_changed(consul: DevConsulThread) -> None:
    register(consul, external())
    first = get(consul, "/v1/health/service/redis")
    index = consul.index

    register(consul, external())  # the same again: nothing changes
    assert (consul.index, get(consul, "/v1/health/service/redis").index) == (index, first.index)

    register(consul, external(Check={**external()["Check"], "Status": "critical", "Output": "refused"}))
    assert get(consul, "/v1/health/service/redis?passing").json() == []
    assert get(consul, "/v1/health/service/redis").index > first.index
    assert get(consul, "/v1/catalog/services").index == first.index  # a check status moves no service list

    moved = get(consul, "/v1/health/service/redis").index
    register(consul, external(address="192.0.2.99"))  # a node field: every service on the node moves
    assert get(consul, "/v1/health/service/redis").index > moved
    assert get(consul, "/v1/catalog/service/redis").json()[0]["Address"] == "192.0.2.99"

    kept = external(address="", SkipNodeUpdate=True, Service={"ID": "redis-1", "Service": "redis", "Port": 7000})
    register(consul, kept)
    [entry] = get(consul, "/v1/catalog/service/redis").json()
    assert (entry["Address"], entry["ServicePort"]) == ("192.0.2.99", 7000)  # SkipNodeUpdate kept the node


def test_registrations_wake_blocking_queries(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    register(consul, external())
    health = get(consul, "/v1/health/service/redis")
    nodes = get(consul, "/v1/catalog/nodes")
    by_health: Future[Reply] = pool.submit(get, consul, f"/v1/health/service/redis?index={health.index}&wait=10s")
    by_nodes: Future[Reply] = pool.submit(get, consul, f"/v1/catalog/nodes?index={nodes.index}&wait=10s")
    time.sleep(0.1)
    started = time.monotonic()

    second = external("ext-2", "192.0.2.11", ID="", Service={"ID": "redis-2", "Service": "redis", "Port": 6379},
                      Check={"CheckID": "redis-2-alive", "Name": "alive", "Status": "passing", "ServiceID": "redis-2"})
    register(consul, second)

    woken = by_health.result(timeout=5)
    assert sorted(e["Node"]["Node"] for e in woken.json()) == ["ext-1", "ext-2"]
    assert [n["Node"] for n in by_nodes.result(timeout=5).json()] == ["devconsul", "ext-1", "ext-2"]
    assert time.monotonic() - started < 2


def test_deregister_a_service_a_check_and_a_node(consul: DevConsulThread, pool: ThreadPoolExecutor) -> None:
    register(consul, external())
    register(consul, external(Service={"ID": "cache-1", "Service": "cache", "Port": 11211},
                              Check={"CheckID": "node-ok", "Name": "node ok", "Status": "passing"}))

    check = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "CheckID": "node-ok"})
    assert (check.status, check.text) == (200, "true")
    assert [c["CheckID"] for c in get(consul, "/v1/health/node/ext-1").json()] == ["redis-alive"]

    service = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "ServiceID": "redis-1"})
    assert service.status == 200
    assert get(consul, "/v1/health/service/redis").json() == []
    assert get(consul, "/v1/health/node/ext-1").json() == []  # its checks went with it
    assert set(get(consul, "/v1/catalog/node/ext-1").json()["Services"]) == {"cache-1"}

    cache = get(consul, "/v1/health/service/cache")
    pending: Future[Reply] = pool.submit(get, consul, f"/v1/health/service/cache?index={cache.index}&wait=10s")
    time.sleep(0.1)
    node = put(consul, "/v1/catalog/deregister", {"Node": "ext-1"})
    assert node.status == 200
    assert pending.result(timeout=5).json() == []  # the node's removal woke it
    gone = get(consul, "/v1/catalog/node/ext-1")
    assert (gone.body, gone.index) == (b"null", consul.index)  # the node extinction index
    assert [n["Node"] for n in get(consul, "/v1/catalog/nodes").json()] == ["devconsul"]
    assert put(consul, "/v1/catalog/deregister", {"Node": "ext-1"}).text == "true"  # what is gone is no error


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"Address": "192.0.2.1"}, 500, "Must provide node"),
        ({"Node": "n"}, 500, "Must provide address if SkipNodeUpdate is not set"),
        ({"Node": "n", "Address": "a", "ID": "nope"}, 500, "Bad node ID: uuid string is wrong length"),
        ({"Node": "n", "Address": "a", "ID": "2d6a5f1e_8c3b-4f7a-9e0d-1b2c3d4e5f60"}, 500,
         "Bad node ID: uuid is improperly formatted"),
        ({"Node": "n", "Address": "a", "Datacenter": "dc9"}, 500, "No path to datacenter"),
        ({"Node": "n", "Address": "a", "Service": {"ID": "x"}}, 500,
         "Must provide service name (Service.Service) when service ID is provided"),
        ({"Node": "n", "Address": "a", "Service": {"Service": "x", "Address": "0.0.0.0"}}, 500,
         "Invalid service address"),
        ({"Node": "n", "Address": "a", "Check": {"Node": "m", "CheckID": "c"}}, 500,
         "Node 'm' for check 'c' doesn't match register request node 'n'"),
        ({"Node": "n", "Address": "a", "Check": {"CheckID": "c", "ServiceID": "s"}}, 500,
         "Unknown service ID 's' for check ID 'c'"),
        ({"Node": 7, "Address": "a"}, 400,
         "Request decode failed: json: cannot unmarshal number 7 into Go struct field RegisterRequest.Node of type "
         "string"),
    ],
)
def test_bad_registrations_answer_like_consul(consul: DevConsulThread, body: Any, status: int, message: str) -> None:
    reply = put(consul, "/v1/catalog/register", body)

    assert (reply.status, reply.text) == (status, message)
    assert get(consul, "/v1/catalog/nodes").json()[0]["Node"] == "devconsul"
    assert len(get(consul, "/v1/catalog/nodes").json()) == 1  # nothing was written


def test_deregister_needs_a_node(consul: DevConsulThread) -> None:
    reply = put(consul, "/v1/catalog/deregister", {"ServiceID": "x"})

    assert (reply.status, reply.text) == (500, "Must provide node")


def test_the_agents_own_records_stay_the_agents(consul: DevConsulThread) -> None:
    put(consul, "/v1/agent/service/register", {"ID": "web-1", "Name": "web", "Check": {"CheckID": "beat",
                                                                                      "TTL": "30s"}})
    own = {"Node": "devconsul", "Address": "10.9.9.9", "Service": {"ID": "web-1", "Service": "web"}}
    assert put(consul, "/v1/catalog/register", own).status == 400
    assert put(consul, "/v1/catalog/deregister", {"Node": "devconsul", "ServiceID": "web-1"}).status == 400
    assert put(consul, "/v1/catalog/deregister", {"Node": "devconsul", "CheckID": "serfHealth"}).status == 400
    assert put(consul, "/v1/catalog/deregister", {"Node": "devconsul"}).status == 400

    register(consul, {"Node": "devconsul", "Address": "10.9.9.9", "Service": {"ID": "side-1", "Service": "side"}})
    [entry] = get(consul, "/v1/catalog/service/side").json()
    assert (entry["Node"], entry["Address"]) == ("devconsul", "127.0.0.1")  # the agent keeps its node's fields
    assert set(get(consul, "/v1/agent/services").json()) == {"web-1"}  # a catalog-only service
    assert put(consul, "/v1/catalog/deregister", {"Node": "devconsul", "ServiceID": "side-1"}).status == 200
    assert get(consul, "/v1/catalog/service/side").json() == []
    assert set(get(consul, "/v1/agent/checks").json()) == {"beat"}


# --------------------------------------------------------------------------------------------------
# The index of a service without instances


def test_a_service_without_instances_answers_the_last_extinction(consul: DevConsulThread,
                                                                 pool: ThreadPoolExecutor) -> None:
    """state/catalog.go maxIndexAndWatchChForService: no instances -> service_last_extinction, if any."""
    assert get(consul, "/v1/health/service/never").index == consul.index  # no extinction yet: the tables' max
    put(consul, "/v1/agent/service/register", {"ID": "gone-1", "Name": "gone"})
    assert get(consul, "/v1/health/service/never").index == consul.index  # ... which registrations move

    put(consul, "/v1/agent/service/deregister/gone-1")
    extinct = consul.index
    assert get(consul, "/v1/health/service/never").index == extinct
    assert get(consul, "/v1/health/service/gone").index == extinct
    assert get(consul, "/v1/catalog/service/never").index == extinct

    started = time.monotonic()
    held: Future[Reply] = pool.submit(get, consul, f"/v1/health/service/never?index={extinct}&wait=1s")
    time.sleep(0.1)
    put(consul, "/v1/agent/service/register", {"ID": "other-1", "Name": "other"})
    register(consul, external())
    assert held.result(timeout=5).index == extinct  # unrelated writes did not wake it
    assert time.monotonic() - started >= 0.95

    woken: Future[Reply] = pool.submit(get, consul, f"/v1/health/service/never?index={extinct}&wait=10s")
    time.sleep(0.1)
    put(consul, "/v1/catalog/deregister", {"Node": "ext-1"})  # another service lost its last instance
    assert woken.result(timeout=5).index == consul.index > extinct

    put(consul, "/v1/agent/service/register", {"ID": "gone-1", "Name": "gone"})
    assert get(consul, "/v1/health/service/gone").index == consul.index  # an instance: its own index again


# --------------------------------------------------------------------------------------------------
# ACLs


def _acl_consul(*tokens: AclToken) -> DevConsulThread:
    return DevConsulThread(acl=AclConfig("deny", (AclToken.manager(ROOT), *tokens)))


def _token(name: str, rules: str) -> AclToken:
    return AclToken(name, f"{name}-secret", parse_rules(rules))


def test_registration_acls_follow_vet_register_with_acl() -> None:
    services_only = _token("services-only", "service:redis:write")
    nodes_only = _token("nodes-only", "node_prefix:write")
    both = _token("both", "node_prefix:write,service_prefix:write")
    with _acl_consul(services_only, nodes_only, both) as consul:
        denied = put(consul, "/v1/catalog/register", external(), token="services-only-secret")
        assert (denied.status, denied.text) == (403, f"Permission denied: token with AccessorID "
                                                     f"'{services_only.accessor_id}' lacks permission 'node:write' "
                                                     f"on \"ext-1\"")
        no_service = put(consul, "/v1/catalog/register", external(), token="nodes-only-secret")
        assert no_service.status == 403
        assert no_service.text.endswith("lacks permission 'service:write' on \"redis\"")
        assert put(consul, "/v1/catalog/register", external(), token="bogus").text == "ACL not found"
        anonymous = put(consul, "/v1/catalog/register", external())
        assert anonymous.status == 403
        register(consul, external(), token="both-secret")

        # the node re-posted unchanged: no node:write needed for a service update (nor for its own check)
        same = external(Check=None)
        register(consul, {**same, "Service": {**same["Service"], "Port": 6380}}, token="services-only-secret")
        changed = put(consul, "/v1/catalog/register", external(address="192.0.2.77", Check=None),
                      token="services-only-secret")
        assert changed.status == 403  # a changed node field needs node:write
        node_check = put(consul, "/v1/catalog/register",
                         external(Service=None, Check={"CheckID": "n", "Name": "n", "Status": "passing"}),
                         token="services-only-secret")
        assert node_check.status == 403  # a node-level check needs node:write
        assert node_check.text.endswith("lacks permission 'node:write' on \"ext-1\"")


def test_deregistration_acls_follow_vet_deregister_with_acl() -> None:
    services_only = _token("services-only", "service:redis:write")
    with _acl_consul(services_only) as consul:
        register(consul, external(), token=ROOT)
        register(consul, external(Service={"ID": "cache-1", "Service": "cache"}, Check=None), token=ROOT)

        whole = put(consul, "/v1/catalog/deregister", {"Node": "ext-1"}, token="services-only-secret")
        assert whole.status == 403
        assert whole.text.endswith("lacks permission 'node:write' on \"ext-1\"")
        unknown = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "ServiceID": "nope"},
                      token="services-only-secret")
        assert (unknown.status, unknown.text) == (500, "Unknown service ID 'nope'")
        other = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "ServiceID": "cache-1"},
                    token="services-only-secret")
        assert other.text.endswith("lacks permission 'service:write' on \"cache\"")
        check = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "CheckID": "redis-alive"},
                    token="services-only-secret")
        assert check.status == 200  # a service check: service:write on its service is enough
        service = put(consul, "/v1/catalog/deregister", {"Node": "ext-1", "ServiceID": "redis-1"},
                      token="services-only-secret")
        assert service.status == 200
        assert set(get(consul, "/v1/catalog/node/ext-1", token=ROOT).json()["Services"]) == {"cache-1"}
        assert put(consul, "/v1/catalog/deregister", {"Node": "ext-1"}, token=ROOT).status == 200  # node:write: all


def test_reads_of_an_external_node_are_filtered_by_node_read() -> None:
    local_only = _token("local-only", "node:devconsul:read,service_prefix:read")
    with _acl_consul(local_only) as consul:
        register(consul, external(), token=ROOT)

        health = get(consul, "/v1/health/service/redis", token="local-only-secret")
        assert (health.json(), health.filtered) == ([], True)
        node = get(consul, "/v1/catalog/node/ext-1", token="local-only-secret")
        assert (node.body, node.filtered) == (b"null", True)
        nodes = get(consul, "/v1/catalog/nodes", token="local-only-secret")
        assert ([n["Node"] for n in nodes.json()], nodes.filtered) == (["devconsul"], True)
        assert get(consul, "/v1/health/node/ext-1", token="local-only-secret").json() == []
        assert get(consul, "/v1/catalog/services", token="local-only-secret").json()["redis"] == ["primary"]
        assert len(get(consul, "/v1/health/service/redis", token=ROOT).json()) == 1


@pytest.fixture
def consul(consul_defaults: DevConsulThread) -> DevConsulThread:
    """devconsul with Consul's defaults (tests/integration/conftest.py)."""
    return consul_defaults
