"""Group administration with real admin clients: ListGroups (with a state filter),
DescribeGroups / ConsumerGroupDescribe, DeleteGroups, and listing / altering committed offsets
(confluent-kafka's AdminClient and kafka-python's KafkaAdminClient).
"""

from __future__ import annotations

import pytest
from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from kafka.admin import KafkaAdminClient

from groups_support import GROUP_BROKER_ARGS, Tracked, committed, group_consumer, poll_until, unique
from helpers import admin_client, create_topic, produce, wait_until

PARTITIONS = 3


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(*GROUP_BROKER_ARGS)


def listed(admin, states=None) -> dict:
    kwargs = {"states": states} if states else {}
    result = admin.list_consumer_groups(request_timeout=30, **kwargs).result(30)
    return {g.group_id: g for g in result.valid}


def test_list_describe_alter_and_delete(group_broker):
    topic = unique("ga")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    produce(group_broker.bootstrap, topic, [{"value": b"x", "partition": i % PARTITIONS} for i in range(9)])
    active, idle = unique("active"), unique("idle")
    admin = admin_client(group_broker.bootstrap)

    member = Tracked(group_consumer(group_broker.bootstrap, active, **{"client.id": "admin-test-member"}),
                     "m").subscribe([topic])
    try:
        poll_until([member], lambda: len(member.received) == 9, 30, "the active group consuming")
        # An offsets-only group: committed by an admin, never joined.
        admin.alter_consumer_group_offsets([ConsumerGroupTopicPartitions(
            idle, [TopicPartition(topic, p, 2) for p in range(PARTITIONS)])])[idle].result(30)

        groups = listed(admin)
        assert groups[active].state == ConsumerGroupState.STABLE
        assert groups[idle].state == ConsumerGroupState.EMPTY
        assert not groups[active].is_simple_consumer_group
        stable_only = listed(admin, states={ConsumerGroupState.STABLE})
        assert active in stable_only and idle not in stable_only

        described = admin.describe_consumer_groups([active, idle])
        d = described[active].result(30)
        assert d.state == ConsumerGroupState.STABLE
        assert d.partition_assignor == "range"
        assert [m.client_id for m in d.members] == ["admin-test-member"]
        assert sorted(tp.partition for tp in d.members[0].assignment.topic_partitions) == [0, 1, 2]
        assert described[idle].result(30).state == ConsumerGroupState.EMPTY

        offsets = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(active)])[active].result(30)
        assert {tp.partition: tp.offset for tp in offsets.topic_partitions} == {0: 3, 1: 3, 2: 3}

        # Members still in it: the group cannot be deleted.
        with pytest.raises(KafkaException) as refused:
            admin.delete_consumer_groups([active])[active].result(30)
        assert "NON_EMPTY_GROUP" in str(refused.value) or "not empty" in str(refused.value).lower()
    finally:
        member.close()

    admin.delete_consumer_groups([active, idle])[active].result(30)
    wait_until(lambda: not ({active, idle} & set(listed(admin))), 30, "deleted groups gone from the list")
    probe = group_consumer(group_broker.bootstrap, active)
    assert set(committed(probe, topic, PARTITIONS).values()) == {-1001}, "offsets deleted with the group"
    probe.close()


def test_kafka_python_admin_sees_groups(group_broker):
    topic, group = unique("ga"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    member = Tracked(group_consumer(group_broker.bootstrap, group), "m").subscribe([topic])
    admin = KafkaAdminClient(bootstrap_servers=group_broker.bootstrap, client_id="riptide-it-admin",
                             request_timeout_ms=30000)
    try:
        poll_until([member], lambda: len(member.assignment()) == PARTITIONS, 30, "a stable one-member group")
        groups = {g["group_id"]: g for g in admin.list_groups()}
        assert groups[group]["protocol_type"] == "consumer"
        assert groups[group]["group_state"] == "Stable" and groups[group]["group_type"] == "classic"
        assert group in {g["group_id"] for g in admin.list_groups(states_filter=["Stable"])}
        assert group not in {g["group_id"] for g in admin.list_groups(states_filter=["Empty"])}
        description = admin.describe_groups([group])[group]
        assert description["group_state"] == "Stable" and description["protocol_data"] == "range"
        (only,) = description["members"]
        assert only["member_metadata"]["topics"] == [topic]
        assert only["member_assignment"]["assigned_partitions"] == [{"topic": topic, "partitions": [0, 1, 2]}]
        member.close()
        wait_until(lambda: admin.describe_groups([group])[group]["group_state"] == "Empty", 30, "an empty group")
        missing = unique("missing")
        deleted = {k: str(v) for k, v in dict(admin.delete_groups([group, missing])).items()}
        assert deleted[group] == "OK" and "GroupIdNotFound" in deleted[missing], deleted
    finally:
        member.close()
        admin.close()
