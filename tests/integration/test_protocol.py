"""Request handling details over raw sockets: pipelining order across shards, acks=0,
per-partition errors, fetch positions, segment rolling."""

import pytest
from confluent_kafka import TopicPartition

import kafka_wire as kw
from helpers import consume_partitions, consumer, create_topic, produce, unique_topic


def connect(broker):
    return kw.KafkaConnection(broker.host, broker.port, timeout=30)


@pytest.mark.timeout(120)
def test_pipelined_requests_answered_in_order(broker):
    """Many requests sent before reading any response, touching partitions spread over both
    shards: responses come back in request order with matching correlation ids."""
    topic = unique_topic("pipe")
    create_topic(broker.bootstrap, topic, 8)
    with connect(broker) as c:
        keys = c.api_versions(0)["api_keys"]
        pv = kw.pick_version(keys, kw.ApiKey.PRODUCE, 3, 9)
        mv = kw.pick_version(keys, kw.ApiKey.METADATA, 1, 12)
        sent = []
        for i in range(200):
            if i % 5 == 4:
                corr = c.send_request(kw.ApiKey.METADATA, mv, kw.encode_metadata_request(mv, [topic], False))
                sent.append((corr, kw.ApiKey.METADATA, mv, None))
            else:
                parts = [((i + j) % 8, kw.build_record_batch([b"p%d-%d" % (i, j)])) for j in range(1 + i % 3)]
                body = kw.encode_produce_request(pv, -1, 10000, [(topic, parts)])
                corr = c.send_request(kw.ApiKey.PRODUCE, pv, body)
                sent.append((corr, kw.ApiKey.PRODUCE, pv, [p for p, _ in parts]))
        counts = [0] * 8
        for corr, api, v, parts in sent:
            r = c.read_response(api, v, expected_corr=corr)
            if api == kw.ApiKey.PRODUCE:
                resp = kw.decode_produce_response(r, v)
                res = kw.produce_partition_results(resp)
                assert sorted(p for _, p in res) == sorted(parts)
                for (_, p), pr in res.items():
                    assert pr["error_code"] == 0, pr
                    assert pr["base_offset"] == counts[p], (p, pr, counts[p])
                    counts[p] += 1
            else:
                md = kw.decode_metadata_response(r, v)
                assert md["topics"][0]["name"] == topic
    got = consume_partitions(broker.bootstrap, topic, range(8), timeout=60)
    assert [len(got[p]) for p in range(8)] == counts


@pytest.mark.timeout(60)
def test_acks_zero_sends_no_response(broker):
    topic = unique_topic("acks0")
    create_topic(broker.bootstrap, topic, 1)
    with connect(broker) as c:
        pv = kw.pick_version(c.api_versions(0)["api_keys"], kw.ApiKey.PRODUCE, 3, 9)
        for i in range(10):
            assert c.produce(pv, [(topic, [(0, kw.build_record_batch([b"z%d" % i]))])], acks=0) is None
        # The next response on the connection belongs to the next request.
        resp = c.api_versions(0)
        assert resp["error_code"] == 0
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 10}, timeout=30)[0]
    assert [m.value for m in got] == [b"z%d" % i for i in range(10)]
    # An acks=0 produce that fails (here: a partition that does not exist) closes the
    # connection, as Kafka does: the client has no other way to learn of the error.
    with connect(broker) as c:
        assert c.produce(pv, [(topic, [(7, kw.build_record_batch([b"lost"]))])], acks=0) is None
        assert c.wait_closed(10) == b""


@pytest.mark.timeout(60)
def test_per_partition_errors(broker):
    topic = unique_topic("perr")
    create_topic(broker.bootstrap, topic, 2)
    missing_topic = unique_topic("nosuch")
    with connect(broker) as c:
        keys = c.api_versions(0)["api_keys"]
        pv = kw.pick_version(keys, kw.ApiKey.PRODUCE, 3, 9)
        batch = kw.build_record_batch([b"x"])
        resp = c.produce(pv, [(topic, [(0, batch), (5, batch)])])
        res = kw.produce_partition_results(resp)
        assert res[(topic, 0)]["error_code"] == 0
        assert res[(topic, 5)]["error_code"] == kw.Err.UNKNOWN_TOPIC_OR_PARTITION
        # invalid acks value
        resp = c.produce(pv, [(topic, [(1, batch)])], acks=2)
        assert kw.produce_partition_results(resp)[(topic, 1)]["error_code"] == kw.Err.INVALID_REQUIRED_ACKS
        # Fetch past the end and from a missing partition
        fv = kw.pick_version(keys, kw.ApiKey.FETCH, 4, 11)
        resp = c.fetch(fv, [(topic, [(0, 100, 1 << 20), (9, 0, 1 << 20)])], max_wait_ms=10)
        parts = {p["partition_index"]: p for p in resp["topics"][0]["partitions"]}
        assert parts[0]["error_code"] == kw.Err.OFFSET_OUT_OF_RANGE, parts[0]
        assert parts[9]["error_code"] == kw.Err.UNKNOWN_TOPIC_OR_PARTITION, parts[9]
        # Fetch at the end waits up to max_wait_ms and returns empty
        resp = c.fetch(fv, [(topic, [(0, 1, 1 << 20)])], max_wait_ms=200)
        (p,) = resp["topics"][0]["partitions"]
        assert p["error_code"] == 0 and not p["records"] and p["high_watermark"] == 1, p
    # Producing to a topic that does not exist (no auto-create in Produce) fails, nothing created.
    with connect(broker) as c:
        resp = c.produce(pv, [(missing_topic, [(0, kw.build_record_batch([b"y"]))])])
        assert kw.produce_partition_results(resp)[(missing_topic, 0)]["error_code"] == kw.Err.UNKNOWN_TOPIC_OR_PARTITION


@pytest.mark.timeout(180)
def test_segment_roll_restart_and_seek(broker_factory):
    broker = broker_factory("--segment-bytes", 1048576)
    topic = unique_topic("roll")
    create_topic(broker.bootstrap, topic, 1)
    n = 6000
    values = [b"%06d:" % i + bytes([65 + i % 26]) * 2000 for i in range(n)]  # ~12 MB
    produce(broker.bootstrap, topic, [{"value": v, "partition": 0} for v in values])

    segs = sorted(broker.data_dir.rglob("*.log"))
    in_topic = [s for s in segs if topic in str(s.parent)]
    assert len(in_topic) >= 2, f"expected several segments with segment.bytes=1MiB, found {in_topic or segs}"

    broker.restart()
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: n}, timeout=120)[0]
    assert [m.value for m in got] == values

    # Start reading in the middle of a later segment.
    c = consumer(broker.bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 4321)])
        msg = None
        for _ in range(100):
            msg = c.poll(1.0)
            if msg is not None:
                break
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert (msg.offset(), msg.value()) == (4321, values[4321])
    finally:
        c.close()


@pytest.mark.timeout(60)
def test_fetch_response_respects_max_bytes_but_returns_a_whole_first_batch(broker):
    """KIP-74: the request's max_bytes bounds the response even when the partition limit is
    larger, yet a first batch bigger than max_bytes still comes whole (consumers progress)."""
    topic = unique_topic("fmax")
    create_topic(broker.bootstrap, topic, 1)
    batch_values = [bytes([i]) * 1000 for i in range(100)]  # ~100 KB per batch
    with connect(broker) as c:
        pv = kw.pick_version(c.api_versions(0)["api_keys"], kw.ApiKey.PRODUCE, 3, 9)
        for _ in range(30):
            resp = c.produce(pv, [(topic, [(0, kw.build_record_batch(batch_values))])], acks=1)
            assert kw.produce_partition_results(resp)[(topic, 0)]["error_code"] == 0
        big = c.fetch(11, [(topic, [(0, 0, 20 * 1024 * 1024)])], max_bytes=1_000_000)
        (p,) = big["topics"][0]["partitions"]
        records = p["records"] or b""
        batches = kw.parse_record_batches(records, decode_records=False)
        assert 0 < len(records) <= 1_000_000, len(records)
        assert len(batches) >= 5 and batches[0].base_offset == 0
        small = c.fetch(11, [(topic, [(0, 0, 20 * 1024 * 1024)])], max_bytes=50_000)
        (p,) = small["topics"][0]["partitions"]
        batches = kw.parse_record_batches(p["records"] or b"", decode_records=False)
        assert [b.base_offset for b in batches] == [0], "exactly the first whole batch"


@pytest.mark.timeout(60)
def test_produce_to_and_delete_of_the_offsets_topic_are_refused(broker):
    """Only the group coordinator writes __consumer_offsets (Kafka: INVALID_TOPIC_EXCEPTION),
    and nobody deletes it."""
    from groups_support import GroupWire
    from helpers import wait_until

    def coordinator_ready():  # the first FindCoordinator creates __consumer_offsets
        wire = GroupWire(broker.host, broker.port)
        try:
            return wire.find_coordinator(["any-group"])[0]["error"] == 0
        finally:
            wire.close()
    wait_until(coordinator_ready, 30, "a group coordinator")
    with connect(broker) as c:
        pv = kw.pick_version(c.api_versions(0)["api_keys"], kw.ApiKey.PRODUCE, 3, 9)
        resp = c.produce(pv, [("__consumer_offsets", [(0, kw.build_record_batch([b"x"]))])], acks=1)
    assert kw.produce_partition_results(resp)[("__consumer_offsets", 0)]["error_code"] == 17
    from helpers import admin_client
    admin = admin_client(broker.bootstrap)  # kept alive until the result is in
    with pytest.raises(Exception, match="TOPIC_EXCEPTION"):
        admin.delete_topics(["__consumer_offsets"])["__consumer_offsets"].result(30)
    assert "__consumer_offsets" in admin.list_topics(timeout=10).topics
