"""One classic group with three different clients: librdkafka (confluent-kafka), kafka-python and
aiokafka. They agree on the `roundrobin` assignor (the only one all three offer by default), the
leader's client-side assignment reaches everyone, every partition is owned exactly once, every
message is consumed, and the offsets they commit are readable by the others.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer

from groups_support import (GROUP_BROKER_ARGS, HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, Tracked,
                            committed, group_consumer, unique)
from helpers import create_topic, produce, wait_until

PARTITIONS = 6


class KafkaPythonMember(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True, name="kafka-python-member")
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.stop = threading.Event()
        self.values: list = []
        self.partitions: list = []
        self.error = None

    def run(self) -> None:
        try:
            consumer = KafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                                     client_id="kafka-python-member", auto_offset_reset="earliest",
                                     enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                                     heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, fetch_max_wait_ms=100)
            try:
                while not self.stop.is_set():
                    batches = consumer.poll(timeout_ms=100)
                    for records in batches.values():
                        self.values.extend(r.value for r in records)
                    if batches:
                        consumer.commit()
                    self.partitions = sorted(tp.partition for tp in consumer.assignment())
            finally:
                consumer.close()
        except Exception as e:  # reported by the test
            self.error = e


class AioKafkaMember(threading.Thread):
    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        super().__init__(daemon=True, name="aiokafka-member")
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.stop = threading.Event()
        self.values: list = []
        self.partitions: list = []
        self.error = None

    def run(self) -> None:
        try:
            asyncio.run(self._run())
        except Exception as e:
            self.error = e

    async def _run(self) -> None:
        consumer = AIOKafkaConsumer(self.topic, bootstrap_servers=self.bootstrap, group_id=self.group,
                                    client_id="aiokafka-member", auto_offset_reset="earliest",
                                    enable_auto_commit=False, session_timeout_ms=SESSION_TIMEOUT_MS,
                                    heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            while not self.stop.is_set():
                batches = await consumer.getmany(timeout_ms=100)
                for records in batches.values():
                    self.values.extend(r.value for r in records)
                if batches:
                    await consumer.commit()
                self.partitions = sorted(tp.partition for tp in consumer.assignment())
        finally:
            await consumer.stop()


@pytest.fixture
def group_broker(broker_factory):
    return broker_factory(*GROUP_BROKER_ARGS)


def test_librdkafka_kafka_python_and_aiokafka_share_a_group(group_broker):
    topic, group = unique("gi"), unique("g")
    create_topic(group_broker.bootstrap, topic, PARTITIONS)
    values = [f"v{i}".encode() for i in range(180)]
    produce(group_broker.bootstrap, topic, [{"value": v, "partition": i % PARTITIONS} for i, v in enumerate(values)])

    rdkafka = Tracked(group_consumer(group_broker.bootstrap, group,
                                     **{"partition.assignment.strategy": "roundrobin"}), "rdkafka").subscribe([topic])
    kpy = KafkaPythonMember(group_broker.bootstrap, group, topic)
    aio = AioKafkaMember(group_broker.bootstrap, group, topic)
    kpy.start()
    aio.start()
    try:
        def all_in():
            rdkafka.check()
            for thread in (kpy, aio):
                assert thread.error is None, thread.error
            owned = rdkafka.assignment() + kpy.partitions + aio.partitions
            return (sorted(owned) == list(range(PARTITIONS)) and
                    all(len(x) == 2 for x in (rdkafka.assignment(), kpy.partitions, aio.partitions)))
        wait_until(all_in, 60, "three clients owning two partitions each", interval=0.01)

        def everything():
            got = {v for (_, _, v) in rdkafka.received} | set(kpy.values) | set(aio.values)
            return got >= set(values)
        wait_until(everything, 60, "all messages across the three clients", interval=0.01)

        # Each client committed what it consumed; a probe sees every partition at its end.
        wait_until(lambda: committed_probe(group_broker.bootstrap, group, topic) ==
                   {p: 30 for p in range(PARTITIONS)}, 30, "every partition committed at its end")
    finally:
        kpy.stop.set()
        aio.stop.set()
        rdkafka.close()
        kpy.join(30)
        aio.join(30)
    assert kpy.error is None and aio.error is None, (kpy.error, aio.error)


def committed_probe(bootstrap: str, group: str, topic: str) -> dict:
    probe = group_consumer(bootstrap, group)
    try:
        return committed(probe, topic, PARTITIONS)
    finally:
        probe.close()
