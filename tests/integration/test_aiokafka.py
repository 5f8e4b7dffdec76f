"""aiokafka (asyncio client): produce and read back with assign() (no consumer group)."""

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from helpers import create_topic, unique_topic


async def _roundtrip(bootstrap, topic, n):
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futs = [await producer.send(topic, value=b"aio-%05d" % i, key=b"%d" % (i % 5), partition=i % 2)
                for i in range(n)]
        acked = [await f for f in futs]
    finally:
        await producer.stop()
    offsets = {(md.partition, md.offset) for md in acked}
    assert len(offsets) == n

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got = []
        while len(got) < n:
            batch = await asyncio.wait_for(consumer.getmany(timeout_ms=500), 30)
            for tp, records in batch.items():
                got.extend((tp.partition, r.offset, r.key, r.value) for r in records)
    finally:
        await consumer.stop()
    return acked, got


@pytest.mark.timeout(120)
def test_aiokafka_roundtrip(broker):
    topic = unique_topic("aio")
    create_topic(broker.bootstrap, topic, 2)
    n = 2000
    acked, got = asyncio.run(asyncio.wait_for(_roundtrip(broker.bootstrap, topic, n), 90))
    assert len(got) == n
    want = sorted((i % 2, b"%d" % (i % 5), b"aio-%05d" % i) for i in range(n))
    assert sorted((p, k, v) for p, _, k, v in got) == want
    for p in (0, 1):
        offs = sorted(o for pp, o, _, _ in got if pp == p)
        assert offs == list(range(len(offs)))
