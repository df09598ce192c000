"""The KV store's state: entries, tombstones and their indexes, as Consul's agent/consul/state/kvs.go.

Why tombstones: a blocking list of a prefix answers the highest ModifyIndex under it; when a key goes,
that would slide backwards (and a client waiting on the old index would never wake), so a delete
leaves a tombstone with its index under the key (a tree delete: one under the prefix) and a list
answers the max of both. Consul reaps tombstones after tombstone_ttl (15 minutes); devconsul keeps
them, which only keeps a list's index from falling back to the table index later.

The operations take the raft index the write would get and return the tables they moved ("kvs",
"tombstones"); `_Catalog.kv_write` (store.py) turns that into one raft entry, or none when nothing
changed (a set of the same value and flags moves nothing, as kvsSetTxn skips an equal entry).
"""

from __future__ import annotations

from haproxy_sync.dev.devconsul.records import KVEntry


class KVState:
    """Keys, tombstones and the "kvs" / "tombstones" table indexes."""

    def __init__(self) -> None:
        self.entries: dict[str, KVEntry] = {}
        self.tombstones: dict[str, int] = {}
        self.tables: dict[str, int] = {}

    def max_index(self) -> int:
        """kvsMaxIndex: the max of the kvs and tombstones tables (0 when never written)."""
        return max(self.tables.get("kvs", 0), self.tables.get("tombstones", 0))

    def get(self, key: str) -> tuple[int, KVEntry | None]:
        """KVSGet: the table index, and the entry if there is one."""
        return self.max_index(), self.entries.get(key)

    def list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        """KVSList: the entries under `prefix` in key order, and the index of what the answer depends on:
        the highest ModifyIndex among them or among the tombstones under the prefix (the whole tables'
        index for the empty prefix, or when neither has any)."""
        found = [self.entries[key] for key in sorted(self.entries) if key.startswith(prefix)]
        if not prefix:
            return self.max_index(), found
        latest = max((entry.modify_index for entry in found), default=0)
        buried = max((index for key, index in self.tombstones.items() if key.startswith(prefix)), default=0)
        return (max(latest, buried) or self.max_index()), found

    def set(self, key: str, value: bytes | None, flags: int, index: int) -> set[str]:
        """kvsSetTxn: create or update; an equal value and flags change nothing."""
        old = self.entries.get(key)
        if old is not None and (old.value or b"", old.flags) == (value or b"", flags):
            return set()
        create = old.create_index if old is not None else index
        self.entries[key] = KVEntry(key, value, flags, create, index)
        return {"kvs"}

    def set_cas(self, key: str, value: bytes | None, flags: int, cas: int, index: int) -> tuple[bool, set[str]]:
        """kvsSetCASTxn: cas 0 creates only; otherwise the key must exist with that ModifyIndex."""
        old = self.entries.get(key)
        if (cas == 0 and old is not None) or (cas != 0 and (old is None or old.modify_index != cas)):
            return False, set()
        return True, self.set(key, value, flags, index)

    def delete(self, key: str, index: int) -> set[str]:
        """kvsDeleteTxn: a missing key is no change; otherwise it goes and leaves a tombstone."""
        if self.entries.pop(key, None) is None:
            return set()
        self.tombstones[key] = index
        return {"kvs", "tombstones"}

    def delete_cas(self, key: str, cas: int, index: int) -> tuple[bool, set[str]]:
        """kvsDeleteCASTxn: true for a key that does not exist; else only with its ModifyIndex."""
        old = self.entries.get(key)
        if old is None:
            return True, set()
        if old.modify_index != cas:
            return False, set()
        return True, self.delete(key, index)

    def delete_tree(self, prefix: str, index: int) -> set[str]:
        """kvsDeleteTreeTxn: every key under the prefix; one tombstone under the prefix (none for "")."""
        doomed = [key for key in self.entries if key.startswith(prefix)]
        if not doomed:
            return set()
        for key in doomed:
            del self.entries[key]
        if not prefix:
            return {"kvs"}
        self.tombstones[prefix] = index
        return {"kvs", "tombstones"}
