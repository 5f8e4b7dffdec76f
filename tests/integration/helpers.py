"""Client-side helpers shared by the integration tests (confluent-kafka based)."""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

import kafka_wire as kw


def unique_topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def base_conf(bootstrap: str, **extra) -> dict:
    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "client.id": "riptide-it",
    }
    conf.update(extra)
    return conf


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(base_conf(bootstrap))


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # keep polling; report the last error on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_exc!r})" if last_exc else ""))
        time.sleep(interval)


def topic_metadata_raw(bootstrap: str, topic: Optional[str] = None, allow_auto_create: bool = False,
                       version: Optional[int] = None) -> dict:
    """Metadata over a raw connection (never auto-creates unless asked)."""
    host, port = bootstrap.rsplit(":", 1)
    with kw.KafkaConnection(host, int(port)) as conn:
        if version is None:
            keys = conn.api_versions(0)["api_keys"]
            version = kw.pick_version(keys, kw.ApiKey.METADATA, 4, 12)
        return conn.metadata(version, None if topic is None else [topic], allow_auto_create)


def topic_names_raw(bootstrap: str) -> set:
    md = topic_metadata_raw(bootstrap, None)
    return {t["name"] for t in md["topics"] if t["error_code"] == 0}


def wait_for_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> dict:
    def ready():
        md = topic_metadata_raw(bootstrap, name)
        for t in md["topics"]:
            if t["name"] == name and t["error_code"] == 0 and len(t["partitions"]) == partitions \
                    and all(p["error_code"] == 0 and p["leader_id"] >= 0 for p in t["partitions"]):
                return t
        return None
    return wait_until(ready, timeout, f"topic {name} with {partitions} partitions and leaders")


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: Optional[dict] = None,
                 timeout: float = 30.0) -> None:
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1,
                                            config=config or {})], request_timeout=timeout)
    futures[name].result(timeout)
    wait_for_topic(bootstrap, name, partitions, timeout)


@dataclass
class Delivered:
    key: Optional[bytes]
    value: Optional[bytes]
    partition: int
    offset: int
    error: object
    timestamp: int


def produce(bootstrap: str, topic: str, messages: Iterable[dict], conf: Optional[dict] = None,
            flush_timeout: float = 120.0, poll_every: int = 1000) -> list:
    """Produce `messages` (dicts of produce() kwargs) and wait for every delivery report.

    Returns the delivery reports in the order they arrived. Asserts none failed."""
    reports: list = []

    def on_delivery(err, msg):
        reports.append(Delivered(msg.key(), msg.value(), msg.partition(), msg.offset(), err,
                                 msg.timestamp()[1]))

    p = Producer(base_conf(bootstrap, **{"acks": "all", "linger.ms": 5, **(conf or {})}))
    n = 0
    for m in messages:
        while True:
            try:
                p.produce(topic, on_delivery=on_delivery, **m)
                break
            except BufferError:
                p.poll(0.05)
        n += 1
        if n % poll_every == 0:
            p.poll(0)
    left = p.flush(flush_timeout)
    assert left == 0, f"{left} of {n} messages still undelivered after {flush_timeout}s"
    assert len(reports) == n, f"{len(reports)} delivery reports for {n} messages"
    failed = [r for r in reports if r.error is not None]
    assert not failed, f"{len(failed)} of {n} deliveries failed, first: {failed[0].error}"
    return reports


@dataclass
class Consumed:
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Optional[list]
    timestamp_type: int
    timestamp: int


def consumer(bootstrap: str, **extra) -> Consumer:
    return Consumer(base_conf(bootstrap, **{
        "group.id": "riptide-it-" + uuid.uuid4().hex[:8],  # required by the client; no group APIs used
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 100,
        **extra,
    }))


def watermarks(bootstrap: str, topic: str, partition: int, timeout: float = 10.0) -> tuple:
    c = consumer(bootstrap)
    try:
        return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
    finally:
        c.close()


def consume_partitions(bootstrap: str, topic: str, partitions: Sequence[int],
                       expected: Optional[dict] = None, timeout: float = 120.0,
                       conf: Optional[dict] = None) -> dict:
    """assign() every partition from the beginning (no consumer group) and read until each holds
    `expected[p]` messages (default: its high watermark at the start). Returns {p: [Consumed]}."""
    c = consumer(bootstrap, **(conf or {}))
    try:
        if expected is None:
            expected = {}
            for p in partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                expected[p] = hi - lo
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        out = {p: [] for p in partitions}
        deadline = time.monotonic() + timeout
        while any(len(out[p]) < expected[p] for p in partitions):
            for m in c.consume(num_messages=10000, timeout=0.5):
                if m.error():
                    raise KafkaException(m.error())
                ts_type, ts = m.timestamp()
                out[m.partition()].append(Consumed(m.partition(), m.offset(), m.key(), m.value(),
                                                   m.headers(), ts_type, ts))
            if time.monotonic() > deadline:
                got = {p: len(out[p]) for p in partitions}
                raise AssertionError(f"consume timed out after {timeout}s: got {got}, want {expected}")
        return out
    finally:
        c.close()


def sha256_of(items: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(len(it).to_bytes(4, "big"))
        h.update(it)
    return h.hexdigest()


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (as used by the Java client's and librdkafka's murmur2 partitioners);
    returns the unsigned 32-bit hash."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    for i in range(length // 4):
        j = i * 4
        k = data[j] | (data[j + 1] << 8) | (data[j + 2] << 16) | (data[j + 3] << 24)
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = length & ~3
    extra = length & 3
    if extra == 3:
        h ^= data[tail + 2] << 16
    if extra >= 2:
        h ^= data[tail + 1] << 8
    if extra >= 1:
        h ^= data[tail]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def murmur2_partition(key: bytes, num_partitions: int) -> int:
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions
