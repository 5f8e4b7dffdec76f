"""Consumer-group APIs over the raw wire: the exact error codes Kafka clients react to.

KIP-394 member-id-required joins, generation and member checks of Heartbeat and OffsetCommit,
REBALANCE_IN_PROGRESS between join and sync, static membership fencing, the rebalance timeout
that drops a member which does not rejoin (the broker side of max.poll.interval.ms), commit
metadata round trip, batched FindCoordinator, ListGroups with a state filter, DescribeGroups,
OffsetDelete and DeleteGroups.
"""

from __future__ import annotations

import time

import pytest

from groups_support import (E_FENCED_INSTANCE_ID, E_GROUP_ID_NOT_FOUND,
                            E_GROUP_SUBSCRIBED_TO_TOPIC, E_ILLEGAL_GENERATION,
                            E_INCONSISTENT_GROUP_PROTOCOL, E_INVALID_GROUP_ID, E_INVALID_REQUEST,
                            E_INVALID_SESSION_TIMEOUT, E_MEMBER_ID_REQUIRED, E_NON_EMPTY_GROUP, E_NONE,
                            E_NOT_COORDINATOR,
                            E_OFFSET_METADATA_TOO_LARGE, E_REBALANCE_IN_PROGRESS,
                            E_UNKNOWN_MEMBER_ID, E_UNKNOWN_TOPIC_OR_PARTITION, GROUP_BROKER_ARGS,
                            GroupWire, consumer_assignment, unique, unpack_assignment)
from helpers import create_topic, wait_until


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(*GROUP_BROKER_ARGS)


@pytest.fixture
def wire(group_broker):
    conn = GroupWire(group_broker.host, group_broker.port)
    yield conn
    conn.close()


def join_member(wire: GroupWire, group: str, **kwargs) -> dict:
    """KIP-394: the first join gets MEMBER_ID_REQUIRED and an id, the second joins with it."""
    first = wire.join(group, **kwargs)
    assert first["error"] == E_MEMBER_ID_REQUIRED, first
    assert first["member_id"], first
    joined = wire.join(group, member_id=first["member_id"], **kwargs)
    assert joined["error"] == E_NONE, joined
    return joined


def test_join_sync_heartbeat_commit_errors(group_broker, wire):
    topic = unique("gp")
    create_topic(group_broker.bootstrap, topic, partitions=2)
    group = unique("g")
    assert wire.join(group, session_ms=10)["error"] == E_INVALID_SESSION_TIMEOUT
    assert wire.join(group, member_id="never-issued")["error"] == E_UNKNOWN_MEMBER_ID
    assert wire.join("", topics=[topic])["error"] == E_INVALID_GROUP_ID

    joined = join_member(wire, group, topics=[topic])
    me, generation = joined["member_id"], joined["generation"]
    assert generation == 1 and joined["leader"] == me and joined["protocol"] == "range"
    assert [m[0] for m in joined["members"]] == [me]

    # Joined, not synced: commits wait for the rebalance to complete.
    codes = wire.commit(group, [(topic, 0, 5, "")], generation=generation, member_id=me)
    assert codes == {(topic, 0): E_REBALANCE_IN_PROGRESS}
    # A protocol nobody in the group speaks is refused.
    assert wire.join(group, topics=[topic], protocols=["sticky-x"])["error"] == E_INCONSISTENT_GROUP_PROTOCOL

    synced = wire.sync(group, generation, me, assignments=[(me, consumer_assignment(topic, [0, 1]))])
    assert synced["error"] == E_NONE
    assert unpack_assignment(synced["assignment"]) == {topic: [0, 1]}

    assert wire.heartbeat(group, generation, me) == E_NONE
    assert wire.heartbeat(group, generation + 1, me) == E_ILLEGAL_GENERATION
    assert wire.heartbeat(group, generation, "someone-else") == E_UNKNOWN_MEMBER_ID
    assert wire.sync(group, generation + 1, me)["error"] == E_ILLEGAL_GENERATION

    codes = wire.commit(group, [(topic, 0, 42, "meta-0"), (topic, 1, 7, ""), ("no-such-topic", 0, 1, ""),
                                (topic, 9, 1, "")], generation=generation, member_id=me)
    assert codes == {(topic, 0): E_NONE, (topic, 1): E_NONE, ("no-such-topic", 0): E_UNKNOWN_TOPIC_OR_PARTITION,
                     (topic, 9): E_UNKNOWN_TOPIC_OR_PARTITION}
    assert wire.commit(group, [(topic, 0, 1, "")], generation=generation + 5, member_id=me) == \
        {(topic, 0): E_ILLEGAL_GENERATION}
    assert wire.commit(group, [(topic, 0, 1, "")], generation=generation, member_id="stranger") == \
        {(topic, 0): E_UNKNOWN_MEMBER_ID}
    # A non-member (generation -1) cannot commit while the group has members.
    assert wire.commit(group, [(topic, 0, 1, "")]) == {(topic, 0): E_UNKNOWN_MEMBER_ID}
    assert wire.commit(group, [(topic, 0, 1, "x" * 5000)], generation=generation, member_id=me) == \
        {(topic, 0): E_OFFSET_METADATA_TOO_LARGE}

    fetched = wire.fetch(group, [(topic, [0, 1, 2])])
    assert fetched["error"] == E_NONE
    assert fetched["offsets"][(topic, 0)]["offset"] == 42
    assert fetched["offsets"][(topic, 0)]["metadata"] == "meta-0"
    assert fetched["offsets"][(topic, 1)]["offset"] == 7
    assert fetched["offsets"][(topic, 2)]["offset"] == -1
    everything = wire.fetch(group, None, version=7, require_stable=True)
    assert {k: v["offset"] for k, v in everything["offsets"].items()} == {(topic, 0): 42, (topic, 1): 7}

    # Subscribed topics cannot lose their offsets; a non-empty group cannot be deleted.
    deleted = wire.offset_delete(group, [(topic, [0])])
    assert deleted["partitions"] == {(topic, 0): E_GROUP_SUBSCRIBED_TO_TOPIC}
    assert wire.delete_groups([group]) == {group: E_NON_EMPTY_GROUP}

    left = wire.leave(group, [(me, None), ("ghost", None)])
    assert left["error"] == E_NONE
    assert [m[2] for m in left["members"]] == [E_NONE, E_UNKNOWN_MEMBER_ID]
    assert wire.heartbeat(group, generation, me) == E_UNKNOWN_MEMBER_ID

    # Empty now: offsets can go, then the group.
    assert wire.offset_delete(group, [(topic, [0])])["partitions"] == {(topic, 0): E_NONE}
    assert wire.fetch(group, [(topic, [0, 1])])["offsets"][(topic, 0)]["offset"] == -1
    missing = unique("missing")
    assert wire.delete_groups([group, missing]) == {group: E_NONE, missing: E_GROUP_ID_NOT_FOUND}
    assert wire.delete_groups([group]) == {group: E_GROUP_ID_NOT_FOUND}
    assert wire.fetch(group, [(topic, [1])])["offsets"][(topic, 1)]["offset"] == -1
    assert wire.offset_delete(group, [(topic, [0])])["error"] == E_GROUP_ID_NOT_FOUND


def test_second_member_rebalance_and_rebalance_timeout(group_broker, wire, broker_factory):
    """A second member triggers a rebalance; the first member, heartbeating, learns it must
    rejoin. A member that does not rejoin within the rebalance timeout is dropped (the broker
    side of max.poll.interval.ms) and the generation completes without it."""
    group = unique("g")
    a = join_member(wire, group, rebalance_ms=1500)
    assert wire.sync(group, 1, a["member_id"])["error"] == E_NONE
    other = GroupWire(group_broker.host, group_broker.port)
    try:
        first = other.join(group, rebalance_ms=1500)
        corr = other.join_send(group, member_id=first["member_id"], rebalance_ms=1500)
        # The join travels on another connection: wait until the coordinator has it.
        wait_until(lambda: wire.heartbeat(group, 1, a["member_id"]) == E_REBALANCE_IN_PROGRESS, 10,
                   "the rebalance to start")
        started = time.monotonic()
        b = other.join_recv(corr)  # a never rejoins: completes at the rebalance timeout
        waited = time.monotonic() - started
        assert b["error"] == E_NONE, b
        assert b["generation"] == 2 and b["leader"] == b["member_id"], b
        assert [m[0] for m in b["members"]] == [b["member_id"]]
        assert 0.5 < waited < 10, waited
        assert wire.heartbeat(group, 1, a["member_id"]) == E_UNKNOWN_MEMBER_ID
    finally:
        other.close()


def test_static_member_replaced_and_fenced(group_broker, wire):
    group = unique("g")
    topic = unique("gp")
    create_topic(group_broker.bootstrap, topic)
    joined = wire.join(group, instance_id="instance-1")  # static members need no KIP-394 round
    assert joined["error"] == E_NONE, joined
    old = joined["member_id"]
    assert wire.sync(group, 1, old, instance_id="instance-1",
                     assignments=[(old, b"A")])["error"] == E_NONE
    # The same instance restarts: a new member id, same generation, no rebalance.
    again = wire.join(group, instance_id="instance-1")
    assert again["error"] == E_NONE
    assert again["generation"] == 1 and again["member_id"] != old
    assert again["leader"] == old  # the old leader id: the new member does not reassign
    assert wire.sync(group, 1, again["member_id"], instance_id="instance-1")["assignment"] == b"A"
    # The previous incarnation is fenced everywhere.
    assert wire.heartbeat(group, 1, old, instance_id="instance-1") == E_FENCED_INSTANCE_ID
    assert wire.commit(group, [(topic, 0, 1, "")], generation=1, member_id=old,
                       instance_id="instance-1") == {(topic, 0): E_FENCED_INSTANCE_ID}
    assert wire.sync(group, 1, old, instance_id="instance-1")["error"] == E_FENCED_INSTANCE_ID
    left = wire.leave(group, [("", "instance-1")])
    assert left["members"] == [("", "instance-1", E_NONE)]
    assert wire.describe([group])[0]["state"] == "Empty"


def test_find_coordinator_list_and_describe(group_broker, wire):
    keys = [unique("g"), unique("g")]
    found = wire.find_coordinator(keys)
    assert [c["key"] for c in found] == keys
    assert all(c["error"] == E_NONE and c["port"] == group_broker.port for c in found)
    assert all(c["error"] == E_INVALID_REQUEST for c in wire.find_coordinator(keys, key_type=7))

    stable, empty = unique("stable"), unique("empty")
    member = join_member(wire, stable)
    assert wire.sync(stable, 1, member["member_id"], assignments=[(member["member_id"], b"x")])["error"] == 0
    topic = unique("gp")
    create_topic(group_broker.bootstrap, topic)
    assert wire.commit(empty, [(topic, 0, 3, "")]) == {(topic, 0): E_NONE}

    listed = wire.list_groups()
    assert listed["groups"][stable] == {"protocol_type": "consumer", "state": "Stable"}
    assert listed["groups"][empty]["state"] == "Empty"
    assert set(wire.list_groups(["stable"])["groups"]) >= {stable}
    assert empty not in wire.list_groups(["Stable"])["groups"]

    described = {d["group_id"]: d for d in wire.describe([stable, empty, unique("none"), ""])}
    assert described[stable]["state"] == "Stable" and described[stable]["protocol"] == "range"
    assert described[stable]["members"][0]["member_id"] == member["member_id"]
    assert described[stable]["members"][0]["assignment"] == b"x"
    assert described[stable]["members"][0]["client_id"] == "riptide-it-raw"
    assert described[empty]["state"] == "Empty" and described[empty]["members"] == []
    assert [d["state"] for d in described.values() if d["group_id"] not in (stable, empty, "")] == ["Dead"]
    assert described[""]["error"] == E_INVALID_GROUP_ID


def test_shutdown_answers_parked_joins(broker_factory):
    """A JoinGroup parked in a rebalance is answered (NOT_COORDINATOR, clients look for the
    coordinator again) when the broker stops, so shutdown does not wait for the rebalance."""
    broker = broker_factory(*GROUP_BROKER_ARGS)
    wire = GroupWire(broker.host, broker.port)
    other = GroupWire(broker.host, broker.port)
    try:
        group = unique("g")
        a = join_member(wire, group, rebalance_ms=120_000)
        assert wire.sync(group, 1, a["member_id"])["error"] == E_NONE
        first = other.join(group, rebalance_ms=120_000)
        corr = other.join_send(group, member_id=first["member_id"], rebalance_ms=120_000)
        # b is parked until a rejoins (up to two minutes). Make sure it is parked, then stop.
        wait_until(lambda: wire.heartbeat(group, 1, a["member_id"]) == E_REBALANCE_IN_PROGRESS, 10,
                   "the rebalance to start")
        started = time.monotonic()
        broker.proc.send_signal(15)
        parked = other.join_recv(corr)
        assert parked["error"] == E_NOT_COORDINATOR, parked
        broker.stop(timeout=10)
        assert time.monotonic() - started < 5
    finally:
        wire.close()
        other.close()


def test_offset_fetch_v8_several_groups(group_broker, wire):
    """OffsetFetch v8 answers several groups (on different coordinator shards) in one request."""
    topic = unique("gp")
    create_topic(group_broker.bootstrap, topic, partitions=2)
    groups = [unique("g") for _ in range(6)]
    for i, group in enumerate(groups):
        assert wire.commit(group, [(topic, 0, 100 + i, ""), (topic, 1, 200 + i, "")]) == \
            {(topic, 0): E_NONE, (topic, 1): E_NONE}
    answer = wire.fetch_groups([(g, None) for g in groups] + [(unique("none"), [(topic, [0])]), ("", None)])
    for i, group in enumerate(groups):
        assert answer[group] == {"error": E_NONE, "offsets": {(topic, 0): 100 + i, (topic, 1): 200 + i}}
    unknown = [k for k in answer if k not in groups and k]
    assert answer[unknown[0]] == {"error": E_NONE, "offsets": {(topic, 0): -1}}
    assert answer[""]["error"] == E_INVALID_GROUP_ID
