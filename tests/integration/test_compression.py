"""Compressed batches (gzip, snappy, lz4, zstd) from librdkafka are stored as sent and served back
intact; the batch attributes on the wire still name the producer's codec."""

import random

import pytest

import kafka_wire as kw
from helpers import consume_partitions, create_topic, produce, unique_topic

CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
N = 5000


def _payloads():
    rng = random.Random(7)
    words = [b"riptide", b"kafka", b"batch", b"offset", b"partition", b"segment", b"shard"]
    out = []
    for i in range(N):
        if i % 3 == 0:
            v = rng.randbytes(rng.randrange(1, 300))  # incompressible
        else:
            v = b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 60)))  # compressible
        out.append(b"%06d:" % i + v)
    return out


def _fetch_all_batches(broker, topic, partition=0):
    """Raw Fetch from offset 0 until the high watermark; returns parsed batches."""
    batches = []
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        version = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.FETCH, 4, 11)
        offset = 0
        for _ in range(1000):
            resp = conn.fetch(version, [(topic, [(partition, offset, 4 * 1024 * 1024)])], max_wait_ms=100)
            (p,) = resp["topics"][0]["partitions"]
            assert p["error_code"] == 0, p
            got = kw.parse_record_batches(p["records"] or b"", decode_records=False)
            batches.extend(got)
            if got:
                offset = got[-1].base_offset + got[-1].last_offset_delta + 1
            if offset >= p["high_watermark"]:
                return batches
            assert got, f"empty fetch at offset {offset} below high watermark {p['high_watermark']}"
    raise AssertionError("fetch loop did not reach the high watermark")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("codec", list(CODECS))
def test_compressed_roundtrip(broker, codec):
    topic = unique_topic(f"comp-{codec}")
    create_topic(broker.bootstrap, topic, 1)
    payloads = _payloads()
    msgs = [{"value": v, "key": b"k%d" % (i % 10), "partition": 0} for i, v in enumerate(payloads)]
    reports = produce(broker.bootstrap, topic, msgs,
                      conf={"compression.type": codec, "linger.ms": 20, "batch.num.messages": 500})
    assert sorted(r.offset for r in reports) == list(range(N))

    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: N}, timeout=90)[0]
    assert [m.offset for m in got] == list(range(N))
    assert [m.value for m in got] == payloads
    assert [m.key for m in got] == [b"k%d" % (i % 10) for i in range(N)]

    # The broker keeps the producer's compression (compression.type=producer semantics) and the
    # batches it serves carry valid CRCs after it assigned offsets.
    batches = _fetch_all_batches(broker, topic)
    assert batches, "no batches fetched"
    assert all(b.crc_ok for b in batches), "fetched batch with a bad CRC"
    codecs = {b.compression for b in batches}
    # librdkafka sends a batch uncompressed when compressing does not shrink it (a lone
    # incompressible record, when a loaded machine makes batches tiny): those may be 0.
    assert CODECS[codec] in codecs and codecs <= {0, CODECS[codec]}, \
        f"stored codecs {codecs}, produced with {codec}"
    assert len(batches) > 1, "expected several batches"
    assert sum(b.record_count for b in batches) == N
    expected_next = 0
    for b in batches:
        assert b.base_offset == expected_next, (b.base_offset, expected_next)
        expected_next = b.base_offset + b.last_offset_delta + 1


@pytest.mark.timeout(180)
def test_mixed_codecs_in_one_partition(broker):
    topic = unique_topic("comp-mixed")
    create_topic(broker.bootstrap, topic, 1)
    expected = []
    for codec in ["none", *CODECS, "none"]:
        vals = [b"%s-%04d-" % (codec.encode(), i) + b"x" * (i % 50) for i in range(300)]
        produce(broker.bootstrap, topic, [{"value": v, "partition": 0} for v in vals],
                conf={"compression.type": codec, "linger.ms": 10})
        expected.extend(vals)
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: len(expected)}, timeout=90)[0]
    assert [m.value for m in got] == expected
