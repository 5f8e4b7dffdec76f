"""Classic consumer groups with librdkafka (confluent-kafka): partitions split exactly once,
take-over when a member leaves with nothing lost, a member joining, the range / roundrobin /
cooperative-sticky assignors, static membership restarting without a rebalance, and committed
offsets surviving a consumer restart and a broker kill -9.
"""

from __future__ import annotations

import pytest

from groups_support import (GROUP_BROKER_ARGS, Tracked, balanced, committed, group_consumer,
                            owned_exactly_once, poll_until, unique, values_received)
from helpers import create_topic, produce

PARTITIONS = 6


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(*GROUP_BROKER_ARGS)


def fill(bootstrap: str, topic: str, count: int, start: int = 0) -> set:
    values = [f"v{i}".encode() for i in range(start, start + count)]
    produce(bootstrap, topic, [{"value": v, "partition": i % PARTITIONS} for i, v in enumerate(values)])
    return set(values)


def members(bootstrap: str, group: str, topic: str, count: int, **conf) -> list:
    return [Tracked(group_consumer(bootstrap, group, **conf), f"c{i}").subscribe([topic])
            for i in range(count)]


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_then_one_leaves_and_one_joins(group_broker, strategy):
    """Three members own the six partitions exactly once; when one closes the other two take
    over and nothing is lost; a new member then gets its share back."""
    topic, group = unique("gt"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    expected = fill(group_broker.bootstrap, topic, 300)
    conf = {"partition.assignment.strategy": strategy}
    group_members = members(group_broker.bootstrap, group, topic, 3, **conf)
    try:
        poll_until(group_members, lambda: balanced(group_members, PARTITIONS) and
                   all(len(m.assignment()) == 2 for m in group_members), 30,
                   "three members with two partitions each")
        poll_until(group_members, lambda: len(values_received(group_members)) >= 150, 30,
                   "half of the messages")
        leaving = group_members[0]
        leaving.close()  # commits were synchronous: everything it saw is committed
        rest = group_members[1:]
        poll_until(rest, lambda: balanced(rest, PARTITIONS), 30, "two members own all six")
        poll_until(rest, lambda: values_received(group_members) >= expected, 30, "every message")
        assert values_received(group_members) == expected

        more = fill(group_broker.bootstrap, topic, 60, start=300)
        revokes_before = {m.name: len(m.revokes) for m in rest}
        joiner = Tracked(group_consumer(group_broker.bootstrap, group, **conf), "joiner").subscribe([topic])
        everyone = rest + [joiner]
        poll_until(everyone, lambda: balanced(everyone, PARTITIONS) and len(joiner.assignment()) == 2, 30,
                   "the new member gets two partitions")
        poll_until(everyone, lambda: values_received(everyone) >= more, 30, "the new messages")
        if strategy == "cooperative-sticky":
            # Incremental: for the joiner, the members that stayed gave up one partition each,
            # never their whole assignment.
            for m in rest:
                later = m.revokes[revokes_before[m.name]:]
                assert later and all(len(revoked) <= 1 for revoked in later), m.revokes
        else:
            # Eager: the joiner's rebalance revoked the members' whole assignments.
            assert all(len(r) == 3 for m in rest for r in m.revokes[revokes_before[m.name]:][:1])
    finally:
        for m in group_members + locals().get("everyone", []):
            m.close()


def test_static_member_restarts_without_rebalance(group_broker):
    topic, group = unique("gt"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    a = Tracked(group_consumer(group_broker.bootstrap, group, **{"group.instance.id": "a"}), "a").subscribe([topic])
    b = Tracked(group_consumer(group_broker.bootstrap, group, **{"group.instance.id": "b"}), "b").subscribe([topic])
    try:
        poll_until([a, b], lambda: balanced([a, b], PARTITIONS) and len(a.assignment()) == 3, 30,
                   "two static members with three partitions each")
        a_partitions = a.assignment()
        b_rebalances = (len(b.assigns), len(b.revokes))
        a.close()  # a static member leaves no LeaveGroup behind: its place is kept
        a2 = Tracked(group_consumer(group_broker.bootstrap, group, **{"group.instance.id": "a"}),
                     "a2").subscribe([topic])
        poll_until([a2, b], lambda: a2.assignment() == a_partitions, 30, "the restarted member's partitions")
        fill(group_broker.bootstrap, topic, 30)
        poll_until([a2, b], lambda: len(values_received([a2, b])) == 30, 30, "messages on both members")
        assert (len(b.assigns), len(b.revokes)) == b_rebalances, "b saw a rebalance"
        assert b.assignment() == sorted(set(range(PARTITIONS)) - set(a_partitions))
    finally:
        for m in (a, b, locals().get("a2")):
            if m is not None:
                m.close()


def test_commits_survive_consumer_restart_and_broker_kill(group_broker):
    """Committed offsets come back after the consumer restarts and after kill -9 of the broker:
    the group continues where it committed (at least once, no gaps)."""
    topic, group = unique("gt"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    first = fill(group_broker.bootstrap, topic, 120)
    c = Tracked(group_consumer(group_broker.bootstrap, group), "c").subscribe([topic])
    poll_until([c], lambda: len(c.received) >= 60, 30, "some messages")
    c.close()
    seen = {v for (_, _, v) in c.received}
    # Every commit was synchronous: the committed offsets are past everything received.
    probe = group_consumer(group_broker.bootstrap, group)
    before_restart = committed(probe, topic, PARTITIONS)
    probe.close()
    assert sum(o for o in before_restart.values() if o > 0) == len(c.received)

    c2 = Tracked(group_consumer(group_broker.bootstrap, group), "c2").subscribe([topic])
    poll_until([c2], lambda: seen | values_received([c2]) >= first, 30, "the rest after a consumer restart")
    assert not (seen & values_received([c2])), "a restarted consumer starts after its commits"
    c2.close()

    group_broker.restart(hard=True)  # kill -9
    second = fill(group_broker.bootstrap, topic, 60, start=120)
    probe = group_consumer(group_broker.bootstrap, group)
    after_kill = committed(probe, topic, PARTITIONS)
    probe.close()
    assert after_kill == {p: 20 for p in range(PARTITIONS)}, after_kill
    c3 = Tracked(group_consumer(group_broker.bootstrap, group), "c3").subscribe([topic])
    try:
        poll_until([c3], lambda: values_received([c3]) >= second, 30, "new messages after kill -9")
        assert values_received([c3]) == second, "resumed exactly at the committed offsets"
        assert sorted(o for (_, o, _) in c3.received)[0] == 20
    finally:
        c3.close()


def test_owned_exactly_once_helper():
    class Fake:
        def __init__(self, parts, closed=False):
            self.parts, self.closed = parts, closed

        def assignment(self):
            return self.parts
    assert owned_exactly_once([Fake([0, 1]), Fake([2])], 3)
    assert not owned_exactly_once([Fake([0, 1]), Fake([1, 2])], 3)
    assert owned_exactly_once([Fake([0, 1, 2]), Fake([1], closed=True)], 3)


def test_topic_gaining_partitions_rebalances(group_broker):
    """The leader's client sees the new partitions in metadata and rejoins; the broker rebalances
    and the new partitions get owners."""
    from confluent_kafka.admin import NewPartitions
    from helpers import admin_client
    topic, group = unique("gt"), unique("g")
    create_topic(group_broker.bootstrap, topic, 2)
    group_members = members(group_broker.bootstrap, group, topic, 2)
    try:
        poll_until(group_members, lambda: balanced(group_members, 2) and
                   all(len(m.assignment()) == 1 for m in group_members), 30, "one partition each")
        admin = admin_client(group_broker.bootstrap)  # kept alive until the result is in
        admin.create_partitions([NewPartitions(topic, 4)])[topic].result(30)
        poll_until(group_members, lambda: balanced(group_members, 4) and
                   all(len(m.assignment()) == 2 for m in group_members), 30, "two partitions each")
    finally:
        for m in group_members:
            m.close()


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_lone_leader_rejoining_for_a_new_regex_topic_is_answered_at_once(group_broker, strategy):
    """A regex subscription gains a topic: the only member (the leader) rejoins a Stable group.
    Everyone has rejoined, so the join completes now, not after the 300 s rebalance timeout
    (the client's default max.poll.interval.ms)."""
    prefix = unique("rx")
    first, second = f"{prefix}-a", f"{prefix}-b"
    create_topic(group_broker.bootstrap, first, 2)
    consumer = Tracked(group_consumer(group_broker.bootstrap, unique("g"), **{
        "partition.assignment.strategy": strategy,
        "topic.metadata.refresh.interval.ms": 500,
    }), "c").subscribe([f"^{prefix}-.*"])
    try:
        poll_until([consumer], lambda: len(consumer.assignment()) == 2, 30, "the first topic")
        create_topic(group_broker.bootstrap, second, 2)
        poll_until([consumer], lambda: len(consumer.assignment()) == 4, 30,
                   "the new topic's partitions assigned too")
    finally:
        consumer.close()
