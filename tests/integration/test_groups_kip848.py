"""KIP-848 consumer groups with librdkafka's `group.protocol=consumer` (ConsumerGroupHeartbeat,
server-side `uniform` and `range` assignors): partitions owned exactly once, incremental
take-over when a member leaves and when one joins, a topic gaining partitions, static members
rejoining, commits surviving a restart of the consumers, and ConsumerGroupDescribe.
"""

from __future__ import annotations

import confluent_kafka
import pytest
from confluent_kafka.admin import NewPartitions

from groups_support import (GROUP_BROKER_ARGS, Tracked, balanced, committed, group_consumer,
                            poll_until, unique, values_received)
from helpers import admin_client, create_topic, produce

PARTITIONS = 6

pytestmark = pytest.mark.skipif(
    tuple(int(x) for x in confluent_kafka.libversion()[0].split(".")[:2]) < (2, 4),
    reason="group.protocol=consumer needs librdkafka >= 2.4",
)


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(*GROUP_BROKER_ARGS)


def member(bootstrap: str, group: str, topic: str, name: str, **conf) -> Tracked:
    return Tracked(group_consumer(bootstrap, group, **{"group.protocol": "consumer", **conf}), name).subscribe([topic])


def fill(bootstrap: str, topic: str, count: int, start: int = 0, partitions: int = PARTITIONS) -> set:
    values = [f"v{i}".encode() for i in range(start, start + count)]
    produce(bootstrap, topic, [{"value": v, "partition": i % partitions} for i, v in enumerate(values)])
    return set(values)


@pytest.mark.parametrize("assignor", ["uniform", "range"])
def test_consumer_protocol_members_leave_and_join(group_broker, assignor):
    topic, group = unique("k848"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    expected = fill(group_broker.bootstrap, topic, 300)
    conf = {"group.remote.assignor": assignor}
    members = [member(group_broker.bootstrap, group, topic, f"c{i}", **conf) for i in range(3)]
    joiner = None
    try:
        poll_until(members, lambda: balanced(members, PARTITIONS) and
                   all(len(m.assignment()) == 2 for m in members), 30, "three members, two partitions each")
        if assignor == "range":
            # Contiguous ranges in member id order.
            assert sorted(m.assignment() for m in members) == [[0, 1], [2, 3], [4, 5]]
        poll_until(members, lambda: len(values_received(members)) >= 150, 30, "half of the messages")
        members[0].close()  # leaves with member epoch -1
        rest = members[1:]
        poll_until(rest, lambda: balanced(rest, PARTITIONS), 30, "two members own all six")
        poll_until(rest, lambda: values_received(members) >= expected, 30, "every message")
        assert values_received(members) == expected
        revokes_before = {m.name: len(m.revokes) for m in rest}
        joiner = member(group_broker.bootstrap, group, topic, "joiner", **conf)
        everyone = rest + [joiner]
        poll_until(everyone, lambda: balanced(everyone, PARTITIONS) and len(joiner.assignment()) == 2, 30,
                   "the joiner gets two partitions")
        if assignor == "uniform":
            # Incremental and sticky: for the joiner, each of the others gave up one partition.
            for m in rest:
                later = m.revokes[revokes_before[m.name]:]
                assert later and all(len(revoked) <= 1 for revoked in later), m.revokes
    finally:
        for m in members + [joiner]:
            if m is not None:
                m.close()


def test_consumer_protocol_topic_growth_commits_and_describe(group_broker):
    topic, group = unique("k848"), unique("g")
    create_topic(group_broker.bootstrap, topic, 2)
    first = fill(group_broker.bootstrap, topic, 40, partitions=2)
    a = member(group_broker.bootstrap, group, topic, "a", **{"topic.metadata.refresh.interval.ms": 500})
    b = member(group_broker.bootstrap, group, topic, "b", **{"topic.metadata.refresh.interval.ms": 500})
    try:
        poll_until([a, b], lambda: balanced([a, b], 2) and values_received([a, b]) >= first, 30,
                   "two members consuming two partitions")
        admin = admin_client(group_broker.bootstrap)
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
        poll_until([a, b], lambda: balanced([a, b], 4) and all(len(m.assignment()) == 2 for m in (a, b)), 30,
                   "the new partitions assigned")
        second = fill(group_broker.bootstrap, topic, 40, start=40, partitions=4)
        poll_until([a, b], lambda: values_received([a, b]) >= first | second, 30, "messages on all four")

        described = admin.describe_consumer_groups([group])[group].result(30)
        assert described.type == confluent_kafka.ConsumerGroupType.CONSUMER
        assert described.state == confluent_kafka.ConsumerGroupState.STABLE
        owned = sorted(tp.partition for m in described.members for tp in m.assignment.topic_partitions)
        assert owned == [0, 1, 2, 3]
    finally:
        a.close()
        b.close()
    probe = group_consumer(group_broker.bootstrap, group)
    assert committed(probe, topic, 4) == {0: 30, 1: 30, 2: 10, 3: 10}
    probe.close()
    # A new member of the (now empty) group starts at the committed offsets.
    third = fill(group_broker.bootstrap, topic, 8, start=80, partitions=4)
    c = member(group_broker.bootstrap, group, topic, "c")
    try:
        poll_until([c], lambda: values_received([c]) >= third, 30, "messages after the restart")
        assert values_received([c]) == third
    finally:
        c.close()


def test_consumer_protocol_static_member_rejoins(group_broker):
    topic, group = unique("k848"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    a = member(group_broker.bootstrap, group, topic, "a", **{"group.instance.id": "a"})
    b = member(group_broker.bootstrap, group, topic, "b", **{"group.instance.id": "b"})
    a2 = None
    try:
        poll_until([a, b], lambda: balanced([a, b], PARTITIONS) and len(a.assignment()) == 3, 30,
                   "two static members")
        a_partitions, b_partitions = a.assignment(), b.assignment()
        # b may have held every partition before a joined: only revokes from here on count.
        revokes_before = len(b.revokes)
        a.close()  # member epoch -2: leaves temporarily, keeps its partitions
        a2 = member(group_broker.bootstrap, group, topic, "a2", **{"group.instance.id": "a"})
        poll_until([a2, b], lambda: a2.assignment() == a_partitions, 30, "the instance's partitions back")
        assert b.assignment() == b_partitions
        assert all(not revoked for revoked in b.revokes[revokes_before:]), b.revokes
    finally:
        for m in (a, b, a2):
            if m is not None:
                m.close()


def test_consumer_protocol_regex_subscription_follows_new_topics(group_broker):
    """A regex subscription (librdkafka sends `^...` patterns as SubscribedTopicRegex under
    group.protocol=consumer; the coordinator resolves it): two members share the matching
    topics, a topic created later that matches is picked up without resubscribing, and a topic
    that does not match is never consumed."""
    base = unique("k848re")
    create_topic(group_broker.bootstrap, f"{base}-a", 2)
    create_topic(group_broker.bootstrap, f"x{base}-a", 2)  # "^base-.*" must not match it
    first = fill(group_broker.bootstrap, f"{base}-a", 20, partitions=2)
    fill(group_broker.bootstrap, f"x{base}-a", 20, start=1000, partitions=2)
    group = unique("g")
    members = [Tracked(group_consumer(group_broker.bootstrap, group, **{"group.protocol": "consumer"}),
                       f"c{i}").subscribe([f"^{base}-.*"]) for i in range(2)]
    try:
        poll_until(members, lambda: values_received(members) >= first, 30, "the matching topic's messages")
        create_topic(group_broker.bootstrap, f"{base}-b", 2)
        second = fill(group_broker.bootstrap, f"{base}-b", 20, start=100, partitions=2)
        poll_until(members, lambda: values_received(members) >= first | second, 60,
                   "the new matching topic's messages")
        assert values_received(members) == first | second, "a topic outside the regex was consumed"
        for m in members:
            assert not m.errors, m.errors
    finally:
        for m in members:
            m.close()
