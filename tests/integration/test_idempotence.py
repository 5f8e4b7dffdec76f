"""Idempotent producers: InitProducerId, retried batches answered with their first offset and
not written twice, sequence gaps and stale epochs refused; real clients with idempotence on."""

import kafka_wire as kw
from helpers import consume_partitions, create_topic, produce, unique_topic, watermarks

INIT_PRODUCER_ID = 22
kw.FLEXIBLE_FROM.setdefault(INIT_PRODUCER_ID, 2)
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
INVALID_PRODUCER_EPOCH = 47


def init_producer_id(conn, version=4):
    flexible = version >= 2
    w = kw.Writer()
    w.string(None, compact=flexible)  # transactional id: none, an idempotent producer
    w.int32(60000)  # transaction timeout
    if version >= 3:
        w.int64(-1).int16(-1)  # no existing producer id / epoch
    if flexible:
        w.tagged_fields()
    r = conn.request(INIT_PRODUCER_ID, version, w.getvalue())
    r.int32()  # throttle time
    return r.int16(), r.int64(), r.int16()  # error code, producer id, epoch


def produce_batch(conn, topic, batch):
    resp = conn.produce(9, [(topic, [(0, batch)])], acks=-1)
    return kw.produce_partition_results(resp)[(topic, 0)]


def test_retries_are_not_written_twice_and_gaps_are_refused(broker):
    topic = unique_topic("idem")
    create_topic(broker.bootstrap, topic, partitions=1)
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        error, pid, epoch = init_producer_id(conn)
        assert (error, epoch) == (0, 0) and pid >= 0
        error, other_pid, _ = init_producer_id(conn)
        assert error == 0 and other_pid != pid, "every InitProducerId gets a fresh id"

        def batch(sequence, values):
            return kw.build_record_batch(values, producer_id=pid, producer_epoch=epoch,
                                         base_sequence=sequence)

        first = produce_batch(conn, topic, batch(0, [b"a", b"b"]))
        assert (first["error_code"], first["base_offset"]) == (0, 0)
        second = produce_batch(conn, topic, batch(2, [b"c"]))
        assert (second["error_code"], second["base_offset"]) == (0, 2)
        retry = produce_batch(conn, topic, batch(0, [b"a", b"b"]))
        assert (retry["error_code"], retry["base_offset"]) == (0, 0), "a retry gets its first offset"
        gap = produce_batch(conn, topic, batch(5, [b"x"]))
        assert gap["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 3}, timeout=30)[0]
    assert [m.value for m in got] == [b"a", b"b", b"c"]
    assert watermarks(broker.bootstrap, topic, 0)[1] == 3, "nothing but the three records was written"


def test_stale_epoch_is_fenced(broker):
    topic = unique_topic("idem-epoch")
    create_topic(broker.bootstrap, topic, partitions=1)
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        _, pid, _ = init_producer_id(conn)
        newer = kw.build_record_batch([b"n"], producer_id=pid, producer_epoch=3, base_sequence=0)
        assert produce_batch(conn, topic, newer)["error_code"] == 0
        older = kw.build_record_batch([b"o"], producer_id=pid, producer_epoch=2, base_sequence=1)
        assert produce_batch(conn, topic, older)["error_code"] == INVALID_PRODUCER_EPOCH


def test_confluent_idempotent_producer_writes_each_record_once(broker):
    topic = unique_topic("idem-confluent")
    create_topic(broker.bootstrap, topic, partitions=4)
    messages = [{"key": b"k%d" % (i % 50), "value": b"v%d" % i} for i in range(20000)]
    reports = produce(broker.bootstrap, topic, messages,
                      conf={"enable.idempotence": True, "max.in.flight.requests.per.connection": 5})
    per_partition = {}
    for report in reports:
        per_partition.setdefault(report.partition, []).append(report.offset)
    for partition, offsets in per_partition.items():
        assert sorted(offsets) == list(range(len(offsets))), f"partition {partition} has gaps or repeats"
        assert watermarks(broker.bootstrap, topic, partition)[1] == len(offsets)


def test_kafka_python_default_producer_is_idempotent(broker):
    from kafka import KafkaProducer
    topic = unique_topic("idem-kp")
    create_topic(broker.bootstrap, topic, partitions=1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    futures = [producer.send(topic, b"m%d" % i, partition=0) for i in range(500)]
    offsets = [future.get(timeout=30).offset for future in futures]
    producer.close()
    assert offsets == list(range(500))


def test_retries_after_a_broker_crash_are_still_duplicates(broker_factory):
    """Producer state is rebuilt from the log's tail at start-up: a batch retried after the
    broker was killed is answered with its original offset, not written again, and sequence
    gaps are still refused."""
    broker = broker_factory()
    topic = unique_topic("idem-crash")
    create_topic(broker.bootstrap, topic, partitions=1)
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        error, pid, epoch = init_producer_id(conn)
        assert error == 0

        def batch(sequence, values):
            return kw.build_record_batch(values, producer_id=pid, producer_epoch=epoch,
                                         base_sequence=sequence)

        assert produce_batch(conn, topic, batch(0, [b"a", b"b"]))["base_offset"] == 0
        assert produce_batch(conn, topic, batch(2, [b"c"]))["base_offset"] == 2
    broker.restart(hard=True)
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        retry = produce_batch(conn, topic, batch(2, [b"c"]))
        assert (retry["error_code"], retry["base_offset"]) == (0, 2), "the retry is a duplicate"
        older = produce_batch(conn, topic, batch(0, [b"a", b"b"]))
        assert (older["error_code"], older["base_offset"]) == (0, 0)
        gap = produce_batch(conn, topic, batch(7, [b"x"]))
        assert gap["error_code"] == OUT_OF_ORDER_SEQUENCE_NUMBER
        following = produce_batch(conn, topic, batch(3, [b"d"]))
        assert (following["error_code"], following["base_offset"]) == (0, 3)
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 4}, timeout=30)[0]
    assert [m.value for m in got] == [b"a", b"b", b"c", b"d"]
    assert watermarks(broker.bootstrap, topic, 0)[1] == 4
