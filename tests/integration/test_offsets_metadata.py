"""ListOffsets (earliest / latest / by timestamp), Metadata, topic auto-creation, broker identity
flags and the TOML config file."""

import pytest
from confluent_kafka import Producer, TopicPartition

import kafka_wire as kw
from helpers import (base_conf, consume_partitions, consumer, create_topic, produce,
                     topic_metadata_raw, topic_names_raw, unique_topic, wait_until, watermarks)

T0 = 1_690_000_000_000


@pytest.mark.timeout(120)
def test_watermarks_and_offsets_for_times(broker):
    topic = unique_topic("times")
    create_topic(broker.bootstrap, topic, 1)
    assert watermarks(broker.bootstrap, topic, 0) == (0, 0)

    # 20 messages one batch each, then 80 in a few large batches; timestamp of offset k is T0 + k s.
    for i in range(20):
        produce(broker.bootstrap, topic, [{"value": b"m%d" % i, "partition": 0, "timestamp": T0 + i * 1000}],
                conf={"linger.ms": 0})
    produce(broker.bootstrap, topic,
            [{"value": b"m%d" % i, "partition": 0, "timestamp": T0 + i * 1000} for i in range(20, 100)],
            conf={"linger.ms": 50})
    assert watermarks(broker.bootstrap, topic, 0) == (0, 100)

    c = consumer(broker.bootstrap)
    try:
        def lookup(ts):
            (tp,) = c.offsets_for_times([TopicPartition(topic, 0, ts)], timeout=10)
            assert tp.error is None, tp.error
            return tp.offset

        assert lookup(T0 - 60_000) == 0
        for k in (0, 5, 19, 20, 21, 57, 99):
            assert lookup(T0 + k * 1000) == k, f"timestamp of offset {k}"
        for k in (5, 19, 20, 57, 98):
            assert lookup(T0 + k * 1000 + 1) == k + 1, f"just after the timestamp of offset {k}"
        assert lookup(T0 + 99 * 1000 + 1) == -1, "a timestamp after the last message has no offset"
    finally:
        c.close()

    # Raw ListOffsets in each supported version: earliest, latest, unknown partition.
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        keys = conn.api_versions(0)["api_keys"]
        versions = kw.supported_versions(keys, kw.ApiKey.LIST_OFFSETS, range(1, 10))
        assert versions, keys
        for v in versions:
            resp = conn.list_offsets(v, [(topic, [(0, kw.EARLIEST_TIMESTAMP)])])
            (p,) = resp["topics"][0]["partitions"]
            assert (p["error_code"], p["offset"]) == (0, 0), (v, p)
            resp = conn.list_offsets(v, [(topic, [(0, kw.LATEST_TIMESTAMP), (7, kw.LATEST_TIMESTAMP)])])
            parts = {p["partition_index"]: p for p in resp["topics"][0]["partitions"]}
            assert (parts[0]["error_code"], parts[0]["offset"]) == (0, 100), (v, parts[0])
            assert parts[7]["error_code"] == kw.Err.UNKNOWN_TOPIC_OR_PARTITION, (v, parts[7])
            resp = conn.list_offsets(v, [(topic, [(0, T0 + 42_000)])])
            (p,) = resp["topics"][0]["partitions"]
            assert (p["error_code"], p["offset"], p["timestamp"]) == (0, 42, T0 + 42_000), (v, p)
            if v >= 7:  # KIP-734: offset of the record with the largest timestamp
                resp = conn.list_offsets(v, [(topic, [(0, kw.MAX_TIMESTAMP)])])
                (p,) = resp["topics"][0]["partitions"]
                assert (p["error_code"], p["offset"], p["timestamp"]) == (0, 99, T0 + 99_000), (v, p)


@pytest.mark.timeout(120)
def test_produce_auto_creates_topic(broker):
    topic = unique_topic("auto")
    assert topic not in topic_names_raw(broker.bootstrap)
    reports = produce(broker.bootstrap, topic, [{"value": b"first"}])
    assert reports[0].offset == 0
    md = topic_metadata_raw(broker.bootstrap, topic)
    (t,) = md["topics"]
    assert t["error_code"] == 0 and len(t["partitions"]) == 1, t
    (p,) = t["partitions"]
    assert p["leader_id"] == md["brokers"][0]["node_id"]
    assert p["replica_nodes"] == [p["leader_id"]] and p["isr_nodes"] == [p["leader_id"]]


@pytest.mark.timeout(120)
def test_metadata_auto_create_flag_is_respected(broker):
    topic = unique_topic("md-noauto")
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        v = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.METADATA, 4, 12)
        md = conn.metadata(v, [topic], allow_auto_topic_creation=False)
        assert [t["error_code"] for t in md["topics"]] == [kw.Err.UNKNOWN_TOPIC_OR_PARTITION], md["topics"]
        assert topic not in {t["name"] for t in conn.metadata(v, None)["topics"]}
        # With the flag the topic is created (the first answer may be LEADER_NOT_AVAILABLE).
        md = conn.metadata(v, [topic], allow_auto_topic_creation=True)
        assert [t["error_code"] for t in md["topics"]][0] in (0, kw.Err.LEADER_NOT_AVAILABLE), md["topics"]

        def ready():
            t = conn.metadata(v, [topic], allow_auto_topic_creation=False)["topics"][0]
            return t["error_code"] == 0 and len(t["partitions"]) == 1 and t["partitions"][0]["leader_id"] >= 0
        wait_until(ready, 20, "auto-created topic to have a leader")
    # Invalid names are refused, not created.
    md = topic_metadata_raw(broker.bootstrap, "bad/topic name", allow_auto_create=True)
    assert md["topics"][0]["error_code"] == kw.Err.INVALID_TOPIC_EXCEPTION, md["topics"]


@pytest.mark.timeout(120)
def test_num_partitions_flag_applies_to_auto_created_topics(broker_factory):
    broker = broker_factory("--num-partitions", "3")
    topic = unique_topic("auto3")
    reports = produce(broker.bootstrap, topic, [{"value": b"v%d" % i, "key": b"%d" % i} for i in range(300)],
                      conf={"partitioner": "murmur2_random"})
    assert {r.partition for r in reports} == {0, 1, 2}
    t = topic_metadata_raw(broker.bootstrap, topic)["topics"][0]
    assert len(t["partitions"]) == 3
    got = consume_partitions(broker.bootstrap, topic, [0, 1, 2], timeout=60)
    assert sum(len(v) for v in got.values()) == 300


@pytest.mark.timeout(120)
def test_auto_create_disabled(broker_factory):
    broker = broker_factory("--auto-create-topics", "false")
    topic = unique_topic("noauto")
    for _ in range(2):
        md = topic_metadata_raw(broker.bootstrap, topic, allow_auto_create=True)
        assert [t["error_code"] for t in md["topics"]] == [kw.Err.UNKNOWN_TOPIC_OR_PARTITION], md["topics"]

    errors = []
    p = Producer(base_conf(broker.bootstrap, **{"message.timeout.ms": 5000,
                                                "topic.metadata.propagation.max.ms": 1000}))
    p.produce(topic, b"nope", on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(30) == 0
    assert len(errors) == 1 and errors[0] is not None, errors
    assert topic not in topic_names_raw(broker.bootstrap)

    # Explicit creation still works.
    create_topic(broker.bootstrap, topic, 2)
    reports = produce(broker.bootstrap, topic, [{"value": b"yes", "partition": 1}])
    assert (reports[0].partition, reports[0].offset) == (1, 0)


@pytest.mark.timeout(60)
def test_metadata_advertises_listen_address_by_default(broker):
    md = topic_metadata_raw(broker.bootstrap, None)
    assert [(b["host"], b["port"]) for b in md["brokers"]] == [("127.0.0.1", broker.port)], md["brokers"]
    assert md["controller_id"] == md["brokers"][0]["node_id"]


@pytest.mark.timeout(60)
def test_advertise_and_node_id_flags(broker_factory):
    broker = broker_factory("--node-id", "7", "--advertise", "localhost:19092")
    topic = unique_topic("adv")
    md = topic_metadata_raw(broker.bootstrap, topic, allow_auto_create=True)
    assert [(b["node_id"], b["host"], b["port"]) for b in md["brokers"]] == [(7, "localhost", 19092)], md["brokers"]
    assert md["controller_id"] == 7

    def leader():
        t = topic_metadata_raw(broker.bootstrap, topic)["topics"][0]
        return t["error_code"] == 0 and t["partitions"] and t["partitions"][0]["leader_id"]
    assert wait_until(leader, 20, "auto-created topic leader") == 7


@pytest.mark.timeout(120)
def test_config_file(broker_factory):
    broker = broker_factory(config={"node_id": 3, "num_partitions": 2, "auto_create_topics": True,
                                    "max_request_size_bytes": 2 * 1024 * 1024, "segment_bytes": 1048576})
    assert "--config" in broker.command()
    md = topic_metadata_raw(broker.bootstrap, None)
    assert [(b["node_id"], b["port"]) for b in md["brokers"]] == [(3, broker.port)]
    topic = unique_topic("cfg")
    reports = produce(broker.bootstrap, topic, [{"value": b"x" * 1000, "partition": i % 2} for i in range(3000)])
    assert {r.partition for r in reports} == {0, 1}
    assert len(topic_metadata_raw(broker.bootstrap, topic)["topics"][0]["partitions"]) == 2
    # max_request_size_bytes from the file is in force
    with kw.KafkaConnection(broker.host, broker.port) as c:
        c.send_raw(b"\x00\x20\x00\x01" + b"\x00" * 16)  # announces 2 MiB + 1 byte
        assert c.wait_closed(10) == b""
    broker.ensure_alive()
