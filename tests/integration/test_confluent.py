"""confluent-kafka (bundled librdkafka): keyed production over 8 partitions, read back per
partition with assign() (no consumer group)."""

import collections
import random

import pytest

from helpers import (consume_partitions, create_topic, murmur2_partition, produce, sha256_of,
                     topic_metadata_raw, unique_topic, watermarks)

N_MESSAGES = 200_000
N_KEYS = 2_000
PARTITIONS = 8
BASE_TS = 1_700_000_000_000


def _messages():
    rng = random.Random(42)
    seq = collections.Counter()
    for i in range(N_MESSAGES):
        key = b"key-%05d" % rng.randrange(N_KEYS)
        n = seq[key]
        seq[key] += 1
        filler = rng.randbytes(rng.randrange(0, 64))
        value = key + b"|%07d|%07d|" % (n, i) + filler
        m = {"key": key, "value": value, "timestamp": BASE_TS + i}
        if i % 10 == 0:
            m["headers"] = [("seq", b"%d" % i), ("empty", b"")]
        yield m


def _parse(value):
    key, n, i, _ = value.split(b"|", 3)
    return key, int(n), int(i)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_keyed_production_over_8_partitions(broker):
    topic = unique_topic("keyed")
    create_topic(broker.bootstrap, topic, PARTITIONS)

    md = topic_metadata_raw(broker.bootstrap, topic)
    (t,) = [t for t in md["topics"] if t["name"] == topic]
    assert sorted(p["partition_index"] for p in t["partitions"]) == list(range(PARTITIONS))

    produced = list(_messages())
    reports = produce(broker.bootstrap, topic, produced,
                      conf={"partitioner": "murmur2_random", "linger.ms": 10,
                            "queue.buffering.max.messages": 300000, "batch.num.messages": 5000})

    # Delivery reports: every message went to the partition the key hashes to, offsets are unique.
    by_value = {}
    for r in reports:
        assert r.partition == murmur2_partition(r.key, PARTITIONS), (r.key, r.partition)
        by_value[r.value] = (r.partition, r.offset)
    assert len(by_value) == N_MESSAGES
    assert len(set(by_value.values())) == N_MESSAGES, "two messages acknowledged at the same offset"

    per_part = collections.Counter(p for p, _ in by_value.values())
    assert set(per_part) == set(range(PARTITIONS)), per_part
    for p in range(PARTITIONS):
        lo, hi = watermarks(broker.bootstrap, topic, p)
        assert (lo, hi) == (0, per_part[p]), f"partition {p}: watermarks {(lo, hi)}, delivered {per_part[p]}"

    consumed = consume_partitions(broker.bootstrap, topic, range(PARTITIONS), expected=dict(per_part),
                                  timeout=300)

    key_partition = {}
    key_next_seq = collections.Counter()
    for p, msgs in consumed.items():
        assert [m.offset for m in msgs] == list(range(len(msgs))), f"partition {p}: offsets not contiguous from 0"
        for m in msgs:
            key, n, i = _parse(m.value)
            assert m.key == key, (p, m.offset, m.key, key)
            assert key_partition.setdefault(key, p) == p, f"key {key!r} seen in partitions {key_partition[key]} and {p}"
            assert n == key_next_seq[key], f"key {key!r}: got sequence {n}, expected {key_next_seq[key]} (order broken)"
            key_next_seq[key] += 1
            assert by_value[m.value] == (p, m.offset), "consumed at a different place than acknowledged"
            src = produced[i]
            assert m.value == src["value"]
            assert m.timestamp == src["timestamp"], (m.offset, m.timestamp, src["timestamp"])
            assert m.timestamp_type == 1  # TIMESTAMP_CREATE_TIME
            want_headers = src.get("headers")
            if want_headers:
                assert m.headers == want_headers, (m.offset, m.headers, want_headers)
            else:
                assert not m.headers

    want = sha256_of(sorted(m["key"] + b"\0" + m["value"] for m in produced))
    got = sha256_of(sorted(m.key + b"\0" + m.value for msgs in consumed.values() for m in msgs))
    assert got == want, "content checksum differs"


@pytest.mark.timeout(120)
def test_null_key_and_empty_and_null_values(broker):
    """Edge-case records: null key, empty value, null value (tombstone), empty key, large value."""
    topic = unique_topic("edge")
    create_topic(broker.bootstrap, topic, 1)
    big = random.Random(1).randbytes(512 * 1024)
    msgs = [{"value": b"plain", "partition": 0},
            {"key": b"k", "value": b"", "partition": 0},
            {"key": b"tomb", "value": None, "partition": 0},
            {"key": b"", "value": b"empty-key", "partition": 0},
            {"key": b"big", "value": big, "partition": 0}]
    produce(broker.bootstrap, topic, msgs, conf={"linger.ms": 0})
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: len(msgs)}, timeout=60)[0]
    assert [(m.key, m.value) for m in got] == [(m.get("key"), m["value"]) for m in msgs]
