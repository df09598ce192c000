"""The state store: nodes, services, checks and the KV store (kvstate.py), with Consul's raft-like indexes.

Every write is one raft entry: one new global index for everything it changed, and each record
carries CreateIndex/ModifyIndex. Table indexes say what a query depends on and move as the ones of
Consul's state store do (agent/consul/state/catalog.go and catalog_ce.go), because a client's blocking
queries wake exactly when those move:

* "nodes" and "node.<name>": a node registered or changed, a service added to or removed from it
  (catalogInsertService, deleteServiceTxn); a node's entry goes with the node ("node_last_extinction"
  then moves);
* "services": any service registered or removed;
* "service.<name>": an instance of it, its checks, a node-level check or a change of a node it runs on
  (updateAllServiceIndexesOfNode); when its last instance goes, the entry goes and
  "service_last_extinction" moves instead;
* "checks": any check.

A write that changes nothing moves no index, as an idempotent catalog write in Consul leaves its
tables alone. Node names are matched case-insensitively, as Consul's memdb indexes lower-case them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final

from haproxy_sync.dev.devconsul.kvstate import KVState
from haproxy_sync.dev.devconsul.records import Check, Node, Service, _unindexed

SERVICE_EXTINCTION: Final = "service_last_extinction"  # indexServiceExtinction
NODE_EXTINCTION: Final = "node_last_extinction"  # indexNodeExtinction
_MIN_UUID_LOOKUP: Final = 2  # minUUIDLookupLen: a shorter name is never tried as an ID prefix


def _service_table(name: str) -> str:
    return f"service.{name}"


def _node_table(name: str) -> str:
    return f"node.{name.lower()}"


@dataclass
class _NodeRecords:
    """One node and what is registered on it."""

    node: Node
    services: dict[str, Service] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)
    by_owner: dict[str, set[str]] = field(default_factory=dict)  # service ID ("" for node checks) -> check IDs


@dataclass
class _Txn:
    """What one write touched: the tables to move, the service names left without instances, nodes gone."""

    tables: set[str] = field(default_factory=set)
    extinct: set[str] = field(default_factory=set)
    nodes_gone: set[str] = field(default_factory=set)


class _Catalog:
    """The catalog of one datacenter as this agent's server holds it, and the KV store.

    ``node`` is the agent's own node; ``services`` and ``checks`` are what is registered on it (what the
    agent endpoints and the check runners work on). Other nodes are external ones registered through
    /v1/catalog/register. ``agent_outputs`` is the agent's local state the catalog has not seen yet:
    check outputs whose sync is deferred (agentsync.py). It lives here so that a restarted server
    (``restored_from``) finds it, as an agent finds its local state.
    """

    def __init__(self, node: Node, on_change: Callable[[], None]) -> None:
        self.node = node
        self.index = node.modify_index
        self._nodes: dict[str, _NodeRecords] = {node.name.lower(): _NodeRecords(node)}
        self._by_name: dict[str, set[tuple[str, str]]] = {}  # service name -> (node key, service ID)
        self._tables: dict[str, int] = {"nodes": node.modify_index, _node_table(node.name): node.modify_index}
        self.kv = KVState()
        self.agent_outputs: dict[str, str] = {}
        self._on_change = on_change

    # ---- reads -----------------------------------------------------------------------------------

    @property
    def services(self) -> dict[str, Service]:
        """The services on the agent's own node, by ID."""
        return self._nodes[self.node.name.lower()].services

    @property
    def checks(self) -> dict[str, Check]:
        """The checks on the agent's own node, by ID."""
        return self._nodes[self.node.name.lower()].checks

    def table_index(self, table: str) -> int:
        """The index of a table; 0 for one never written (Consul's maxIndexTxn; reads report at least 1)."""
        return self._tables.get(table, 0)

    def service_index(self, name: str, *, checks: bool) -> int:
        """What a health (checks=True) or catalog read of service `name` depends on: maxIndexForService.

        With instances: its own "service.<name>" index. Without: the last extinction of any service, so
        the query is held until an instance appears or another service loses its last instance (not by
        other registrations); before any extinction, the max of the nodes, services (and checks) tables.
        """
        if self._by_name.get(name):
            return self._tables.get(_service_table(name), 0)
        if SERVICE_EXTINCTION in self._tables:
            return self._tables[SERVICE_EXTINCTION]
        tables = ("nodes", "services", "checks") if checks else ("nodes", "services")
        return max(self._tables.get(table, 0) for table in tables)

    def nodes(self) -> list[Node]:
        return sorted((records.node for records in self._nodes.values()), key=lambda node: node.name.lower())

    def node_named(self, name: str) -> Node | None:
        """The node of that name (any case)."""
        records = self._nodes.get(name.lower())
        return records.node if records is not None else None

    def find_node(self, name_or_id: str) -> Node | None:
        """Consul's nodeServices lookup: the name (any case), else the one node whose ID starts with it."""
        found = self.node_named(name_or_id)
        if found is not None or len(name_or_id) < _MIN_UUID_LOOKUP:
            return found
        matches = [node for node in self.nodes() if node.node_id and node.node_id.startswith(name_or_id.lower())]
        return matches[0] if len(matches) == 1 else None

    def services_on(self, node_name: str) -> list[Service]:
        records = self._nodes.get(node_name.lower())
        return sorted(records.services.values(), key=lambda s: s.service_id) if records is not None else []

    def checks_on(self, node_name: str) -> list[Check]:
        records = self._nodes.get(node_name.lower())
        return sorted(records.checks.values(), key=lambda c: (c.service_id, c.check_id)) if records else []

    def all_services(self) -> list[Service]:
        return [service for node in self.nodes() for service in self.services_on(node.name)]

    def all_checks(self) -> list[Check]:
        return [check for node in self.nodes() for check in self.checks_on(node.name)]

    def instances(self, name: str) -> list[Service]:
        """The instances of service `name`, by node then ID (the order of Consul's memdb index)."""
        keys = sorted(self._by_name.get(name, ()))
        return [self._nodes[node].services[sid] for node, sid in keys]

    def node_of(self, record: Service | Check) -> Node:
        return self._nodes[record.node.lower()].node

    def checks_of(self, owner: str, node: str | None = None) -> list[Check]:
        """The checks of a service ID, or the node-level checks for owner "", on `node` (the agent's)."""
        records = self._nodes.get((node or self.node.name).lower())
        if records is None:
            return []
        return sorted((records.checks[cid] for cid in records.by_owner.get(owner, ())), key=lambda c: c.check_id)

    # ---- writes ----------------------------------------------------------------------------------

    def write(
        self,
        *,
        node: str | None = None,
        register_node: Node | None = None,
        drop_node: bool = False,
        services: Iterable[Service] = (),
        drop_services: Iterable[str] = (),
        checks: Iterable[Check] = (),
        drop_checks: Iterable[str] = (),
    ) -> bool:
        """Apply one write on one node (the agent's unless `node`) atomically: the node itself
        (`register_node`, `drop_node`), then services, checks and their removals. Returns whether
        anything changed (and an index moved)."""
        index = self.index + 1
        key = (register_node.name if register_node is not None else node or self.node.name).lower()
        txn = _Txn()
        if register_node is not None:
            self._put_node(register_node, index, txn)
        records = self._nodes[key]
        for service in services:
            self._put_service(records, service, index, txn)
        for check in checks:
            self._put_check(records, check, index, txn)
        for check_id in drop_checks:
            self._drop_check(records, check_id, txn)
        for service_id in drop_services:
            self._drop_service(records, service_id, txn)
        if drop_node:
            self._drop_node(records, txn)
        if not txn.tables:
            return False
        self.index = index
        self._tables.update(dict.fromkeys(txn.tables, index))
        for name in txn.extinct:
            if not self._by_name.get(name):  # the last instance went: its index goes, the extinction moves
                self._tables.pop(_service_table(name), None)
                self._tables[SERVICE_EXTINCTION] = index
        for gone in txn.nodes_gone:
            self._tables.pop(_node_table(gone), None)
            self._tables[NODE_EXTINCTION] = index
        self._on_change()
        return True

    def kv_write(self, apply: Callable[[int], tuple[bool, set[str]]]) -> bool:
        """Apply one KV operation as one raft entry: `apply` gets the new index and returns (its answer,
        the KV tables it moved); the index only moves when a table did."""
        index = self.index + 1
        answer, tables = apply(index)
        if tables:
            self.index = index
            self.kv.tables.update(dict.fromkeys(tables, index))
            self._on_change()
        return answer

    def _services_tables(self, records: _NodeRecords) -> set[str]:
        return {_service_table(service.name) for service in records.services.values()}

    def _put_node(self, node: Node, index: int, txn: _Txn) -> None:
        records = self._nodes.get(node.name.lower())
        if records is not None and _unindexed(records.node) == _unindexed(node):
            return
        create = records.node.create_index if records is not None else index
        stored = replace(node, create_index=create, modify_index=index)
        if records is None:
            self._nodes[node.name.lower()] = _NodeRecords(stored)
        else:
            records.node = stored
            txn.tables |= self._services_tables(records)
        txn.tables |= {"nodes", _node_table(node.name)}

    def _put_service(self, records: _NodeRecords, service: Service, index: int, txn: _Txn) -> None:
        service = replace(service, node=records.node.name)
        old = records.services.get(service.service_id)
        if old is not None and _unindexed(old) == _unindexed(service):
            return
        records.services[service.service_id] = replace(
            service, create_index=old.create_index if old else index, modify_index=index
        )
        key = (records.node.name.lower(), service.service_id)
        if old is not None:
            self._by_name[old.name].discard(key)
            txn.tables.add(_service_table(old.name))
        self._by_name.setdefault(service.name, set()).add(key)
        txn.tables |= {"services", "nodes", _node_table(records.node.name), _service_table(service.name)}

    def _check_tables(self, records: _NodeRecords, check: Check) -> set[str]:
        if check.service_id:
            return {"checks", _service_table(check.service_name)}
        return {"checks"} | self._services_tables(records)

    def _put_check(self, records: _NodeRecords, check: Check, index: int, txn: _Txn) -> None:
        check = replace(check, node=records.node.name)
        old = records.checks.get(check.check_id)
        if old is not None and _unindexed(old) == _unindexed(check):
            return
        records.checks[check.check_id] = replace(
            check, create_index=old.create_index if old else index, modify_index=index
        )
        txn.tables |= self._check_tables(records, check)
        if old is not None:
            records.by_owner[old.service_id].discard(old.check_id)
            txn.tables |= self._check_tables(records, old)
        records.by_owner.setdefault(check.service_id, set()).add(check.check_id)

    def _drop_check(self, records: _NodeRecords, check_id: str, txn: _Txn) -> None:
        old = records.checks.pop(check_id, None)
        if old is None:
            return
        records.by_owner[old.service_id].discard(check_id)
        txn.tables |= self._check_tables(records, old)

    def _drop_service(self, records: _NodeRecords, service_id: str, txn: _Txn) -> None:
        old = records.services.get(service_id)
        if old is None:
            return
        for check_id in list(records.by_owner.get(service_id, ())):
            self._drop_check(records, check_id, txn)
        del records.services[service_id]
        self._by_name[old.name].discard((records.node.name.lower(), service_id))
        txn.tables |= {"services", "nodes", _node_table(records.node.name), _service_table(old.name)}
        txn.extinct.add(old.name)

    def _drop_node(self, records: _NodeRecords, txn: _Txn) -> None:
        """deleteNodeTxn: its services (each moving its service index), its checks, then the node."""
        txn.tables |= self._services_tables(records)
        for service_id in list(records.services):
            self._drop_service(records, service_id, txn)
        for check_id in list(records.checks):
            self._drop_check(records, check_id, txn)
        del self._nodes[records.node.name.lower()]
        txn.tables.add("nodes")
        txn.nodes_gone.add(records.node.name)
