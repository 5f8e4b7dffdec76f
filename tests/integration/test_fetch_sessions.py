"""Incremental fetch sessions (KIP-227): the session life cycle over the wire (open, incremental
requests that carry and answer only changes, forgotten partitions, wrong epochs, unknown ids,
closing), and kafka-python, which fetches in sessions by default, consuming through them."""

import urllib.request

import pytest
from kafka import KafkaConsumer, TopicPartition

import kafka_wire as kw
from helpers import create_topic, produce, unique_topic, wait_until

FETCH_VERSION = 11
PARTITION_MAX_BYTES = 1 << 20


def metric_total(broker, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def produce_to(conn, topic, partition, values):
    response = conn.produce(7, [(topic, [(partition, kw.build_record_batch(values))])])
    result = kw.produce_partition_results(response)[(topic, partition)]
    assert result["error_code"] == 0, result


def partitions_of(response):
    """{(topic, partition): partition data} of a fetch response."""
    return {(t["name"], p["partition_index"]): p for t in response["topics"] for p in t["partitions"]}


def values_of(partition_data):
    return [record[3] for batch in kw.parse_record_batches(partition_data["records"] or b"")
            for record in batch.records]


@pytest.mark.timeout(120)
def test_session_life_cycle_over_the_wire(broker):
    topic = unique_topic("fsess")
    create_topic(broker.bootstrap, topic, 3)
    with kw.KafkaConnection(broker.host, broker.port, timeout=30) as conn:
        produce_to(conn, topic, 0, [b"a0"])
        everything = [(topic, [(p, 0, PARTITION_MAX_BYTES) for p in range(3)])]

        # A full fetch with epoch 0 opens a session and answers every partition.
        full = conn.fetch(FETCH_VERSION, everything, max_wait_ms=0, session_epoch=0)
        assert full["error_code"] == 0, full
        session = full["session_id"]
        assert session != 0, "the broker declined to open a session"
        assert set(partitions_of(full)) == {(topic, 0), (topic, 1), (topic, 2)}
        assert values_of(partitions_of(full)[(topic, 0)]) == [b"a0"]

        # Epoch 1 names partition 0's new offset only. Nothing changed anywhere: an empty
        # answer after the wait.
        quiet = conn.fetch(FETCH_VERSION, [(topic, [(0, 1, PARTITION_MAX_BYTES)])], max_wait_ms=200,
                           session_id=session, session_epoch=1)
        assert quiet["error_code"] == 0 and quiet["session_id"] == session, quiet
        assert partitions_of(quiet) == {}

        # New records on partition 2: an empty incremental request reads the whole session and
        # answers partition 2 alone, with its records.
        produce_to(conn, topic, 2, [b"c0", b"c1"])
        changed = conn.fetch(FETCH_VERSION, [], max_wait_ms=5000, session_id=session, session_epoch=2)
        assert changed["error_code"] == 0, changed
        assert list(partitions_of(changed)) == [(topic, 2)]
        assert values_of(partitions_of(changed)[(topic, 2)]) == [b"c0", b"c1"]

        # Partition 2 forgotten: new records there no longer come back; partition 1's do.
        produce_to(conn, topic, 2, [b"c2"])
        produce_to(conn, topic, 1, [b"b0"])
        after_forget = conn.fetch(FETCH_VERSION, [], max_wait_ms=5000, session_id=session,
                                  session_epoch=3, forgotten=[(topic, [2])])
        assert after_forget["error_code"] == 0, after_forget
        assert list(partitions_of(after_forget)) == [(topic, 1)]
        assert values_of(partitions_of(after_forget)[(topic, 1)]) == [b"b0"]

        # A replayed epoch and an unknown id are refused, the session is kept.
        replayed = conn.fetch(FETCH_VERSION, [], max_wait_ms=0, session_id=session, session_epoch=3)
        assert replayed["error_code"] == kw.Err.INVALID_FETCH_SESSION_EPOCH, replayed
        unknown = conn.fetch(FETCH_VERSION, [], max_wait_ms=0, session_id=session ^ 0x5A5A,
                             session_epoch=1)
        assert unknown["error_code"] == kw.Err.FETCH_SESSION_ID_NOT_FOUND, unknown
        assert metric_total(broker, "riptide_fetch_sessions") >= 1

        # The final epoch closes it: a full answer without a session, and the id is gone.
        closing = conn.fetch(FETCH_VERSION, everything, max_wait_ms=0, session_id=session,
                             session_epoch=-1)
        assert closing["error_code"] == 0 and closing["session_id"] == 0, closing
        assert len(partitions_of(closing)) == 3
        gone = conn.fetch(FETCH_VERSION, [], max_wait_ms=0, session_id=session, session_epoch=4)
        assert gone["error_code"] == kw.Err.FETCH_SESSION_ID_NOT_FOUND, gone


@pytest.mark.timeout(180)
@pytest.mark.parametrize("slots", [1000, 0], ids=["sessions", "sessions-off"])
def test_kafka_python_consumes_through_incremental_sessions(broker_factory, slots):
    broker = broker_factory(config={"fetch_session_slots_per_shard": slots})
    topic = unique_topic("fsess-kpy")
    partitions = 12
    create_topic(broker.bootstrap, topic, partitions)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             fetch_max_wait_ms=100, request_timeout_ms=30000)
    expected, got = {}, {}
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        # Rounds of records spread unevenly while the consumer polls, so fetches follow one
        # another and incremental responses carry a changing subset of the partitions.
        for round_ in range(5):
            messages = [{"value": b"r%d-%d" % (round_, i), "partition": (i * i + round_) % partitions}
                        for i in range(120)]
            produce(broker.bootstrap, topic, messages)
            for m in messages:
                expected.setdefault(m["partition"], []).append(m["value"])
            total = sum(len(v) for v in expected.values())

            def all_consumed():
                for tp, records in consumer.poll(timeout_ms=500).items():
                    got.setdefault(tp.partition, []).extend((r.offset, r.value) for r in records)
                return sum(len(v) for v in got.values()) >= total
            wait_until(all_consumed, 60, f"{total} records consumed")
    finally:
        consumer.close()

    for partition, values in expected.items():
        consumed = got.get(partition, [])
        assert [offset for offset, _ in consumed] == list(range(len(values))), partition
        assert [value for _, value in consumed] == values, partition
    assert set(got) == set(expected)

    incremental = metric_total(broker, "riptide_incremental_fetches_total")
    if slots:
        assert incremental > 0, "kafka-python never fetched incrementally"
    else:
        assert incremental == 0
        assert metric_total(broker, "riptide_fetch_sessions") == 0
