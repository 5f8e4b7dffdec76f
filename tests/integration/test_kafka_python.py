"""kafka-python (pure Python client): admin API (topics and configs) and a produce/consume round
trip with assign() + seek_to_beginning() (no consumer group)."""

import time

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import AlterConfigOp, ConfigResource, ConfigResourceType, KafkaAdminClient
import kafka.errors as Errors

import kafka_wire as kw
from helpers import topic_names_raw, unique_topic, wait_until


@pytest.fixture
def admin(broker):
    client = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="riptide-it-admin",
                              request_timeout_ms=30000)
    yield client
    client.close()


def _topic_configs(admin, topic):
    res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all")
    return res["topic"][topic]


def _value(configs, name):
    assert name in configs, f"{name} missing from DescribeConfigs: {sorted(configs)}"
    return configs[name]["value"]


@pytest.mark.timeout(180)
def test_admin_topics_and_configs(broker, admin):
    topic = unique_topic("kpy-admin")
    res = admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1,
                                       "configs": {"retention.ms": "3600000", "cleanup.policy": "delete"}}})
    (t,) = [t for t in res["topics"] if t["name"] == topic]
    assert t["error_code"] == 0, res
    admin.wait_for_topics([topic], timeout_ms=30000)

    # Creating it again fails with TOPIC_ALREADY_EXISTS.
    again = admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}}, raise_errors=False)
    assert [t["error_code"] for t in again["topics"] if t["name"] == topic] == [kw.Err.TOPIC_ALREADY_EXISTS]

    assert topic in admin.list_topics()
    (desc,) = [d for d in admin.describe_topics([topic]) if d["name"] == topic]
    assert sorted(p["partition_index"] for p in desc["partitions"]) == [0, 1, 2]

    # Configs given at creation time are stored and described.
    configs = _topic_configs(admin, topic)
    assert _value(configs, "retention.ms") == "3600000"
    assert _value(configs, "cleanup.policy") == "delete"
    assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", configs["retention.ms"]

    # Alter (IncrementalAlterConfigs when the broker offers it, else AlterConfigs).
    changes = {"retention.ms": "7200000", "cleanup.policy": "compact", "retention.bytes": "1073741824",
               "segment.bytes": "67108864", "max.message.bytes": "2097152"}
    res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, dict(changes))],
                              raise_on_unknown=False)
    assert res == {"topic": {topic: "OK"}}, res
    configs = _topic_configs(admin, topic)
    for k, v in changes.items():
        assert _value(configs, k) == v, (k, configs.get(k))

    # Only-the-named-key semantics of incremental alter: others keep their values.
    if kw.ApiKey.INCREMENTAL_ALTER_CONFIGS in broker.api_versions:
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  {"retention.ms": "9000000"})],
                                  raise_on_unknown=False, incremental=True)
        assert res == {"topic": {topic: "OK"}}, res
        configs = _topic_configs(admin, topic)
        assert _value(configs, "retention.ms") == "9000000"
        assert _value(configs, "cleanup.policy") == "compact", "incremental alter reset another key"
        # DELETE reverts a key to its default.
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  {"retention.ms": (AlterConfigOp.DELETE, None)})],
                                  raise_on_unknown=False, incremental=True)
        assert res == {"topic": {topic: "OK"}}, res
        configs = _topic_configs(admin, topic)
        assert configs.get("retention.ms", {}).get("value") != "9000000"
        if "retention.ms" in configs:
            assert configs["retention.ms"]["config_source"] != "DYNAMIC_TOPIC_CONFIG", configs["retention.ms"]
            assert configs["retention.ms"]["value"] == "604800000", "Kafka's default retention.ms is 7 days"

    # The legacy AlterConfigs replaces the whole set.
    if kw.ApiKey.ALTER_CONFIGS in broker.api_versions:
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  {"retention.ms": "1234567", "cleanup.policy": "delete"})],
                                  raise_on_unknown=False, incremental=False)
        assert res == {"topic": {topic: "OK"}}, res
        configs = _topic_configs(admin, topic)
        assert _value(configs, "retention.ms") == "1234567"
        assert _value(configs, "cleanup.policy") == "delete"

    # Invalid values and unknown keys are refused with an error, not stored.
    for bad in ({"retention.ms": "not-a-number"}, {"cleanup.policy": "sometimes"}):
        res = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, bad)],
                                  raise_on_unknown=False)
        assert res["topic"][topic] != "OK", (bad, res)
    configs = _topic_configs(admin, topic)
    assert _value(configs, "cleanup.policy") in ("delete", "compact")

    # Delete: gone from the topic list; deleting again reports UNKNOWN_TOPIC_OR_PARTITION.
    res = admin.delete_topics([topic])
    assert [t["error_code"] for t in res["topics"] if t["name"] == topic] == [0], res
    wait_until(lambda: topic not in admin.list_topics(), 30, f"{topic} to disappear from metadata")
    assert topic not in topic_names_raw(broker.bootstrap)
    res = admin.delete_topics([topic], raise_errors=False)
    assert [t["error_code"] for t in res["topics"] if t["name"] == topic] == [kw.Err.UNKNOWN_TOPIC_OR_PARTITION]


@pytest.mark.timeout(180)
def test_create_topic_with_bad_arguments(broker, admin):
    topic = unique_topic("kpy-bad")
    res = admin.create_topics({topic: {"num_partitions": 0, "replication_factor": 1}}, raise_errors=False)
    assert [t["error_code"] for t in res["topics"] if t["name"] == topic] != [0], res
    res = admin.create_topics({"bad/name": {"num_partitions": 1, "replication_factor": 1}}, raise_errors=False)
    assert [t["error_code"] for t in res["topics"]] == [kw.Err.INVALID_TOPIC_EXCEPTION], res
    assert topic not in topic_names_raw(broker.bootstrap)
    assert "bad/name" not in topic_names_raw(broker.bootstrap)


@pytest.mark.timeout(180)
def test_kafka_python_produce_consume_roundtrip(broker, admin):
    topic = unique_topic("kpy-rt")
    admin.create_topics({topic: {"num_partitions": 3, "replication_factor": 1}})
    admin.wait_for_topics([topic], timeout_ms=30000)

    n = 5000
    # Idempotence (InitProducerId) is not part of this broker yet; kafka-python 3 turns it on by
    # default with acks=all, so say no explicitly.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=False)
    futures = []
    for i in range(n):
        futures.append(producer.send(topic, key=b"k%d" % (i % 37), value=b"value-%06d" % i,
                                     partition=i % 3, headers=[("i", b"%d" % i)]))
    producer.flush(timeout=60)
    acked = {}
    for i, f in enumerate(futures):
        md = f.get(timeout=30)
        assert md.partition == i % 3
        acked[(md.partition, md.offset)] = i
    producer.close(timeout=10)
    assert len(acked) == n

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
    try:
        tps = [TopicPartition(topic, p) for p in range(3)]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        end = consumer.end_offsets(tps)
        assert sum(end.values()) == n, end
        got = {}
        deadline = time.monotonic() + 60
        while len(got) < n:
            assert time.monotonic() < deadline, f"consumed {len(got)} of {n}"
            for tp, records in consumer.poll(timeout_ms=500).items():
                for r in records:
                    assert (tp.partition, r.offset) not in got, "duplicate offset"
                    got[(tp.partition, r.offset)] = r
    finally:
        consumer.close()
    for (p, off), r in got.items():
        i = acked[(p, off)]
        assert r.value == b"value-%06d" % i and r.key == b"k%d" % (i % 37)
        assert list(r.headers) == [("i", b"%d" % i)]
    for p in range(3):
        offs = sorted(o for (pp, o) in got if pp == p)
        assert offs == list(range(len(offs)))


@pytest.mark.timeout(120)
def test_kafka_python_producer_auto_creates_topic(broker):
    topic = unique_topic("kpy-auto")
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=1, enable_idempotence=False)
    try:
        md = producer.send(topic, b"hello").get(timeout=30)
        assert md.topic == topic and md.offset == 0
    finally:
        producer.close(timeout=10)
    assert topic in topic_names_raw(broker.bootstrap)
