"""What a topic's configuration does to the records it is sent, as Kafka's log validator does:
keyless records refused on compacted topics and out-of-range timestamps refused, both with
per-record errors (KIP-467); LogAppendTime stamping; topic configs Kafka accepts."""

import time

import pytest
from confluent_kafka import KafkaError, TIMESTAMP_LOG_APPEND_TIME, TopicPartition

import kafka_wire as kw
from confluent_kafka.admin import ConfigResource, ResourceType

from helpers import admin_client, consumer, create_topic, produce, unique_topic

INVALID_TIMESTAMP = 32
INVALID_RECORD = 87


def produce_raw(broker, topic, batch):
    with kw.KafkaConnection(broker.host, broker.port, timeout=30) as c:
        response = c.produce(9, [(topic, [(0, batch)])], acks=1)
    return kw.produce_partition_results(response)[(topic, 0)]


@pytest.mark.timeout(120)
def test_compacted_topic_refuses_keyless_records_with_record_errors(broker):
    topic = unique_topic("compact-keys")
    create_topic(broker.bootstrap, topic, 1, config={"cleanup.policy": "compact"})
    batch = kw.build_record_batch([kw.Record(value=b"a", key=b"k"), kw.Record(value=b"b"),
                                   kw.Record(value=b"c", key=b"k"), kw.Record(value=b"d")])
    result = produce_raw(broker, topic, batch)
    assert result["error_code"] == INVALID_RECORD
    assert [e["batch_index"] for e in result["record_errors"]] == [1, 3]
    assert "without key" in result["record_errors"][0]["message"]
    assert result["error_message"]
    # librdkafka surfaces the error to the application, and keyed records still go through.
    with pytest.raises(AssertionError, match="INVALID_RECORD|nvalid record"):
        produce(broker.bootstrap, topic, [{"value": b"no key"}], conf={"retries": 0})
    reports = produce(broker.bootstrap, topic, [{"key": b"k", "value": b"keyed"}])
    assert reports[0].offset == 0, "nothing of the refused batches was appended"


@pytest.mark.timeout(120)
def test_timestamps_outside_the_topic_bounds_are_refused(broker):
    topic = unique_topic("ts-bounds")
    create_topic(broker.bootstrap, topic, 1, config={"message.timestamp.before.max.ms": "60000",
                                                     "message.timestamp.after.max.ms": "60000"})
    now_ms = int(time.time() * 1000)
    stale = kw.build_record_batch([b"old", b"older"], base_timestamp=now_ms - 3_600_000)
    result = produce_raw(broker, topic, stale)
    assert result["error_code"] == INVALID_TIMESTAMP
    assert [e["batch_index"] for e in result["record_errors"]] == [0, 1]
    fresh = kw.build_record_batch([b"now"], base_timestamp=now_ms)
    assert produce_raw(broker, topic, fresh)["error_code"] == 0


@pytest.mark.timeout(120)
def test_log_append_time_topic_stamps_the_broker_time(broker):
    topic = unique_topic("lat")
    create_topic(broker.bootstrap, topic, 1, config={"message.timestamp.type": "LogAppendTime"})
    before_ms = int(time.time() * 1000)
    batch = kw.build_record_batch([b"x", b"y"], base_timestamp=1_000)
    result = produce_raw(broker, topic, batch)
    after_ms = int(time.time() * 1000)
    assert result["error_code"] == 0
    assert before_ms <= result["log_append_time_ms"] <= after_ms
    produce(broker.bootstrap, topic, [{"value": b"z", "timestamp": 2_000}])
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        seen = []
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.append(m.timestamp())
        assert len(seen) == 3
        for kind, ts in seen:
            assert kind == TIMESTAMP_LOG_APPEND_TIME
            assert ts >= before_ms, "the broker's clock, not the producer's 1000 / 2000"
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_topic_configs_kafka_accepts(broker):
    topic = unique_topic("cfgs")
    configs = {"min.cleanable.dirty.ratio": "0.01", "segment.jitter.ms": "10",
               "message.timestamp.difference.max.ms": "1000", "preallocate": "true",
               "index.interval.bytes": "8192", "compression.zstd.level": "5"}
    create_topic(broker.bootstrap, topic, 1, config=configs)
    admin = admin_client(broker.bootstrap)
    described = list(admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
                     .values())[0].result(30)
    for key, value in configs.items():
        assert described[key].value == value, key
    with pytest.raises(Exception, match="min.cleanable.dirty.ratio"):
        create_topic(broker.bootstrap, unique_topic("bad"), 1,
                     config={"min.cleanable.dirty.ratio": "1.5"})
