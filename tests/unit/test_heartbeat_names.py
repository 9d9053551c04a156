"""The cluster-wide name table on its own: validation, versions, lookups, peers' sets."""
from __future__ import annotations

import pytest

from skyge.services.heartbeat.names import (MAX_CLUSTER_PUBLICATIONS, MAX_VALUE_BYTES,
                                            NamePublished, NameTable, NameTableError,
                                            NameWithdrawn, Publication, Scope)

NOW = 5_000_000_000
PEER = (1000, 2)


def table() -> NameTable:
    return NameTable(1000, 1)


def peer_publication(pid: int, lower: int = 1, upper: int = 1, value: bytes = b"v") -> Publication:
    return Publication(3, lower, upper, Scope.CLUSTER, value, PEER, pid, 0)


@pytest.mark.parametrize("args, field, allowed", [
    ((-1, 0, 0, Scope.CLUSTER, b""), "type", "0..4294967295"),
    ((0, 2**32, 2**32, Scope.CLUSTER, b""), "lower", "0..4294967295"),
    ((0, 0, 2**32, Scope.CLUSTER, b""), "upper", "0..4294967295"),
    ((0, 5, 4, Scope.CLUSTER, b""), "upper", ">= lower (5)"),
    ((0, 0, 0, Scope.CLUSTER, "text"), "value", "bytes"),
    ((0, 0, 0, Scope.CLUSTER, b"x" * (MAX_VALUE_BYTES + 1)), "value", "at most 256 bytes"),
    ((0, 0, 0, 7, b""), "scope", "NODE (1) or CLUSTER (2)"),
])
def test_validation_names_the_field_and_the_allowed_range(args, field, allowed):
    with pytest.raises(NameTableError) as refused:
        table().publish(*args, now_ns=NOW, unix_ns=0)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ") and allowed in str(refused.value)


def test_publish_withdraw_bump_the_version_and_emit_events():
    names = table()
    assert names.version == 0
    first, events = names.publish(0, 10, 20, Scope.CLUSTER, b"a", now_ns=NOW, unix_ns=77)
    assert events == [NamePublished(NOW, first)]
    assert first.publisher == (1000, 1) and first.published_unix_ns == 77
    second, _ = names.publish(0, 30, 30, Scope.NODE, b"b", now_ns=NOW, unix_ns=0)
    assert second.publication_id > first.publication_id
    assert names.version == 2
    assert names.withdraw(first.publication_id, now_ns=NOW + 1) == [NameWithdrawn(NOW + 1, first)]
    assert names.version == 3
    with pytest.raises(NameTableError, match="publication_id: no publication"):
        names.withdraw(first.publication_id, now_ns=NOW)
    assert NamePublished(NOW, first).text == "Published name 0 10 20 <1000.1:1> cluster"


def test_node_scope_is_never_announced():
    names = table()
    shared, _ = names.publish(1, 1, 1, Scope.CLUSTER, b"", now_ns=NOW, unix_ns=0)
    names.publish(1, 2, 2, Scope.NODE, b"", now_ns=NOW, unix_ns=0)
    assert names.cluster_publications() == [shared]
    assert len(names.lookup(1)) == 2


def test_lookup_returns_publications_covering_the_instance():
    names = table()
    wide, _ = names.publish(5, 100, 199, Scope.CLUSTER, b"wide", now_ns=NOW, unix_ns=0)
    narrow, _ = names.publish(5, 150, 150, Scope.NODE, b"narrow", now_ns=NOW, unix_ns=0)
    names.publish(6, 150, 150, Scope.NODE, b"other type", now_ns=NOW, unix_ns=0)
    assert names.lookup(5, 150) == [wide, narrow]
    assert names.lookup(5, 100) == [wide]
    assert names.lookup(5, 200) == []
    assert names.lookup(5) == [wide, narrow]


def test_cluster_scope_is_bounded_at_publish_time():
    names = table()
    for i in range(MAX_CLUSTER_PUBLICATIONS):
        names.publish(1, i, i, Scope.CLUSTER, b"", now_ns=NOW, unix_ns=0)
    with pytest.raises(NameTableError, match="at most 256 cluster-scope"):
        names.publish(1, 0, 0, Scope.CLUSTER, b"", now_ns=NOW, unix_ns=0)
    names.publish(1, 0, 0, Scope.NODE, b"", now_ns=NOW, unix_ns=0)  # node scope still fits


def test_peer_sets_are_replaced_only_by_newer_versions():
    names = table()
    a, b = peer_publication(1), peer_publication(2, 5, 9)
    assert names.apply_peer(PEER, 3, [a, b], now_ns=NOW) == [NamePublished(NOW, a),
                                                             NamePublished(NOW, b)]
    assert names.peer_version(PEER) == 3
    assert names.apply_peer(PEER, 3, [], now_ns=NOW) == []  # same version: already held
    assert names.apply_peer(PEER, 2, [], now_ns=NOW) == []  # older: stale
    assert names.lookup(3, 7) == [b]
    changed_b = peer_publication(2, 5, 9, b"new")
    events = names.apply_peer(PEER, 4, [a, changed_b], now_ns=NOW)
    assert events == [NameWithdrawn(NOW, b), NamePublished(NOW, changed_b)]
    assert names.lookup(3, 7) == [changed_b]


def test_a_peer_cannot_publish_for_another():
    names = table()
    forged = Publication(3, 1, 1, Scope.CLUSTER, b"", (1000, 9), 1, 0)
    assert names.apply_peer(PEER, 1, [forged], now_ns=NOW) == []
    assert names.all() == []


def test_dropping_a_peer_withdraws_its_names_and_forgets_its_version():
    names = table()
    mine, _ = names.publish(3, 1, 1, Scope.CLUSTER, b"", now_ns=NOW, unix_ns=0)
    a = peer_publication(1)
    names.apply_peer(PEER, 8, [a], now_ns=NOW)
    assert names.drop_peer(PEER, now_ns=NOW) == [NameWithdrawn(NOW, a)]
    assert names.all() == [mine]
    assert names.peer_version(PEER) is None
    # A restarted peer starts its versions again from 0: accepted after the drop.
    assert names.apply_peer(PEER, 0, [a], now_ns=NOW) == [NamePublished(NOW, a)]
