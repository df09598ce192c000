"""The state store: services, checks and their raft-like modify indexes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from haproxy_sync.dev.devconsul.records import Check, Node, Service, _unindexed


def _service_table(name: str) -> str:
    return f"service:{name}"


def _catalog_table(name: str) -> str:
    return f"catalog:{name}"


def _instance_tables(name: str) -> set[str]:
    """What a change to an instance of service `name` moves: the catalog's and the health view's."""
    return {"services", _service_table(name), _catalog_table(name)}


class _Catalog:
    """Services, checks and Consul's raft-like indexes for one node.

    Every agent write is one raft entry: one new global index for everything it changed. Each
    record carries CreateIndex/ModifyIndex. Per-table indexes say what a query depends on:
    "services", "checks", "nodes", "node_checks", "catalog:<name>" (its instances) and
    "service:<name>" (its instances, their checks, and its deregistration). A write that changes
    nothing moves no index, as an idempotent catalog write in Consul leaves its tables alone.
    """

    def __init__(self, node: Node, on_change: Callable[[], None]) -> None:
        self.node = node
        self.index = node.modify_index
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Check] = {}
        self._by_name: dict[str, set[str]] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._tables: dict[str, int] = {"nodes": node.modify_index}
        self._on_change = on_change

    def table_index(self, table: str) -> int:
        """The index of a table, or the global one for a table never written (Consul's behaviour)."""
        return self._tables.get(table, self.index)

    def health_index(self, name: str) -> int:
        """What a health/service/<name> answer depends on: its instances, their checks, node checks."""
        own = self._tables.get(_service_table(name))
        if own is None:
            return self.index
        return max(own, self._tables.get("node_checks", 0))

    def instances(self, name: str) -> list[Service]:
        return sorted((self.services[sid] for sid in self._by_name.get(name, ())), key=lambda s: s.service_id)

    def checks_of(self, owner: str) -> list[Check]:
        """The checks of a service ID, or the node-level checks for owner ""."""
        return sorted((self.checks[cid] for cid in self._by_owner.get(owner, ())), key=lambda c: c.check_id)

    def write(
        self,
        *,
        services: Iterable[Service] = (),
        drop_services: Iterable[str] = (),
        checks: Iterable[Check] = (),
        drop_checks: Iterable[str] = (),
    ) -> bool:
        """Apply one agent write atomically. Returns whether anything changed (and an index moved)."""
        index = self.index + 1
        tables: set[str] = set()
        for service in services:
            tables |= self._put_service(service, index)
        for check in checks:
            tables |= self._put_check(check, index)
        for check_id in drop_checks:
            tables |= self._drop_check(check_id)
        for service_id in drop_services:
            tables |= self._drop_service(service_id)
        if not tables:
            return False
        self.index = index
        self._tables.update(dict.fromkeys(tables, index))
        self._on_change()
        return True

    def _put_service(self, service: Service, index: int) -> set[str]:
        old = self.services.get(service.service_id)
        if old is not None and _unindexed(old) == _unindexed(service):
            return set()
        self.services[service.service_id] = replace(
            service, create_index=old.create_index if old else index, modify_index=index
        )
        tables = _instance_tables(service.name)
        if old is not None:
            self._by_name[old.name].discard(old.service_id)
            tables |= _instance_tables(old.name)
        self._by_name.setdefault(service.name, set()).add(service.service_id)
        return tables

    def _check_tables(self, check: Check) -> set[str]:
        return {"checks", _service_table(check.service_name) if check.service_id else "node_checks"}

    def _put_check(self, check: Check, index: int) -> set[str]:
        old = self.checks.get(check.check_id)
        if old is not None and _unindexed(old) == _unindexed(check):
            return set()
        self.checks[check.check_id] = replace(
            check, create_index=old.create_index if old else index, modify_index=index
        )
        tables = self._check_tables(check)
        if old is not None:
            self._by_owner[old.service_id].discard(old.check_id)
            tables |= self._check_tables(old)
        self._by_owner.setdefault(check.service_id, set()).add(check.check_id)
        return tables

    def _drop_check(self, check_id: str) -> set[str]:
        old = self.checks.pop(check_id, None)
        if old is None:
            return set()
        self._by_owner[old.service_id].discard(check_id)
        return self._check_tables(old)

    def _drop_service(self, service_id: str) -> set[str]:
        old = self.services.pop(service_id, None)
        if old is None:
            return set()
        self._by_name[old.name].discard(service_id)
        tables = _instance_tables(old.name)
        for check_id in list(self._by_owner.get(service_id, ())):
            tables |= self._drop_check(check_id)
        return tables
