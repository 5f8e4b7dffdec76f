"""Bad input over raw sockets. After every case the broker process must still be running and
must still serve a normal client."""

import random
import socket
import struct
import time

import pytest

import kafka_wire as kw
from helpers import consume_partitions, create_topic, produce, unique_topic

SMALL_MAX_REQUEST = 1024 * 1024


def connect(broker, timeout=10.0):
    return kw.KafkaConnection(broker.host, broker.port, timeout=timeout)


def healthy(broker):
    """The process is alive and both a raw client and librdkafka get served."""
    broker.ensure_alive()
    topic = unique_topic("sanity")
    produce(broker.bootstrap, topic, [{"value": b"sanity-%d" % i, "partition": 0} for i in range(10)],
            conf={"message.timeout.ms": 30000})
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 10}, timeout=30)[0]
    assert [m.value for m in got] == [b"sanity-%d" % i for i in range(10)]


def closed_or_error(conn, corr, timeout=10.0):
    """After a malformed request: the broker either closes the connection ("closed") or answers
    with a frame carrying our correlation id ("response"). Anything else fails."""
    conn.sock.settimeout(timeout)
    try:
        size_bytes = conn.recv_exact(4)
    except kw.ConnectionClosed:
        return "closed"
    except socket.timeout:
        pytest.fail(f"broker neither answered nor closed the connection within {timeout}s")
    (size,) = struct.unpack(">i", size_bytes)
    assert 4 <= size <= 64 * 1024 * 1024, f"nonsense response size {size}"
    payload = conn.recv_exact(size)
    (got_corr,) = struct.unpack_from(">i", payload)
    assert got_corr == corr, f"response correlation id {got_corr}, sent {corr}"
    return "response"


def api_versions_of(broker):
    with connect(broker) as c:
        return c.api_versions(0)["api_keys"]


# ---------------------------------------------------------------------------------------------
# Framing

@pytest.mark.timeout(120)
def test_frame_larger_than_max_request_size_closes_connection(broker_factory):
    broker = broker_factory("--max-request-size-bytes", SMALL_MAX_REQUEST)
    topic = unique_topic("big")
    create_topic(broker.bootstrap, topic, 1)

    # Just below the limit: a ~1,000,000-byte produce request is accepted.
    keys = api_versions_of(broker)
    pv = kw.pick_version(keys, kw.ApiKey.PRODUCE, 3, 9)
    batch = kw.build_record_batch([b"x" * 999_000])
    with connect(broker) as c:
        resp = c.produce(pv, [(topic, [(0, batch)])], acks=1)
        (p,) = kw.produce_partition_results(resp).values()
        assert p["error_code"] == 0, p

    # One byte over: the broker closes without reading the body (we never send it all).
    with connect(broker) as c:
        c.send_raw(struct.pack(">i", SMALL_MAX_REQUEST + 1) + kw.encode_request_header(0, pv, 1) + b"\0" * 1000)
        assert c.wait_closed(10) == b"", "broker answered an oversized frame instead of closing"
    healthy(broker)


@pytest.mark.timeout(120)
def test_default_max_request_size_and_bad_sizes(broker):
    # Default limit is 100 MiB: a 100 MiB + 1 header is refused up front.
    for size in (104857600 + 1, 0x7FFFFFFF, -1, -2147483648, 0):
        with connect(broker) as c:
            c.send_raw(struct.pack(">i", size) + b"\x00\x12\x00\x00")
            assert c.wait_closed(10) == b"", f"size {size}: got a response instead of a close"
        broker.ensure_alive()
    healthy(broker)


@pytest.mark.timeout(120)
def test_garbage_bytes(broker):
    rng = random.Random(1234)
    cases = [
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(200),  # a TLS ClientHello-ish start
        rng.randbytes(64),
        kw.frame(rng.randbytes(40)),                                         # right size, random content
        kw.frame(b"\x00\x03\x00\x01\x00\x00\x00\x07\x00\x05ab"),             # client_id string runs past the end
        kw.frame(kw.encode_request_header(3, 1, 7) + b"\x00\x00\x00\x05"),   # Metadata: 5 topics announced, none sent
        kw.frame(kw.encode_request_header(0, 7, 7) + rng.randbytes(30)),     # Produce v7 with a random body
        kw.frame(kw.encode_request_header(0, 9, 7) + b"\xff\xff\xff\xff\xff\xff"),  # flexible: bad varints
        kw.frame(kw.encode_request_header(0, 99, 7) + b"\x00" * 20),         # Produce v99
        kw.frame(kw.encode_request_header(3, 99, 7) + b"\x00" * 20),         # Metadata v99
    ]
    outcomes = []
    for i, data in enumerate(cases):
        with connect(broker) as c:
            try:
                c.send_raw(data)
            except kw.ConnectionClosed:
                outcomes.append("closed")
                continue
            outcomes.append(closed_or_error(c, 7))
        assert broker.alive(), f"broker died on garbage case {i}: {data[:40]!r}\n{broker.log_tail(40)}"
        broker.ensure_alive()
    healthy(broker)


@pytest.mark.timeout(120)
def test_truncated_frames_do_not_block_other_clients(broker):
    # Several connections announce 100 bytes and send 10; half close, half stay open (both shards
    # get some, since connections are spread over the shards' listeners).
    hanging = []
    for i in range(8):
        c = connect(broker)
        c.send_raw(struct.pack(">i", 100) + kw.encode_request_header(18, 0, 1)[:10])
        if i % 2:
            c.close()
        else:
            hanging.append(c)
    try:
        for _ in range(8):
            broker.ensure_alive()
        healthy(broker)
    finally:
        for c in hanging:
            c.close()
    # A request delivered a few bytes at a time is still read correctly.
    frame = kw.encode_request(kw.ApiKey.API_VERSIONS, 0, 42, kw.encode_api_versions_request(0))
    with connect(broker) as c:
        for i in range(0, len(frame), 3):
            c.send_raw(frame[i:i + 3])
            time.sleep(0.01)  # pacing so the broker sees partial reads (not synchronisation)
        r = c.read_response(kw.ApiKey.API_VERSIONS, 0, expected_corr=42)
        assert kw.decode_api_versions_response(r, 0)["error_code"] == 0
    healthy(broker)


# ---------------------------------------------------------------------------------------------
# Unknown API and versions

@pytest.mark.timeout(60)
@pytest.mark.parametrize("api_key", [9999, 200, 32767])
def test_unknown_api_key_closes_connection(broker, api_key):
    with connect(broker) as c:
        c.send_raw(kw.encode_request(api_key, 0, 5, b"\x00" * 8))
        assert c.wait_closed(10) == b"", "broker answered an unknown API key instead of closing"
    healthy(broker)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("header_version,body_version", [(2, 3), (1, 0)])
def test_api_versions_too_new_gets_v0_unsupported_version(broker, header_version, body_version):
    with connect(broker) as c:
        corr = c.send_request(kw.ApiKey.API_VERSIONS, 127, kw.encode_api_versions_request(body_version),
                              header_version=header_version)
        payload = c.recv_frame()
        r = kw.Reader(payload)
        assert r.int32() == corr  # response header v0: correlation id only
        resp = kw.decode_api_versions_response(r, 0)
        assert resp["error_code"] == kw.Err.UNSUPPORTED_VERSION, resp
        assert r.remaining() == 0, f"{r.remaining()} trailing bytes: not the v0 response format"
        assert kw.ApiKey.API_VERSIONS in resp["api_keys"], resp
        lo, hi = resp["api_keys"][kw.ApiKey.API_VERSIONS]
        assert 0 <= lo <= hi < 127, resp
        # The connection stays usable: the client retries with a supported version (as librdkafka does).
        again = c.api_versions(hi)
        assert again["error_code"] == 0
        assert kw.ApiKey.PRODUCE in again["api_keys"] and kw.ApiKey.METADATA in again["api_keys"], again
    healthy(broker)


@pytest.mark.timeout(60)
def test_api_versions_advertises_core_apis(broker):
    with connect(broker) as c:
        v0 = c.api_versions(0)
        v3 = c.api_versions(3) if v0["api_keys"][kw.ApiKey.API_VERSIONS][1] >= 3 else v0
    for resp in (v0, v3):
        assert resp["error_code"] == 0
        keys = resp["api_keys"]
        for api in (kw.ApiKey.PRODUCE, kw.ApiKey.FETCH, kw.ApiKey.LIST_OFFSETS, kw.ApiKey.METADATA,
                    kw.ApiKey.API_VERSIONS):
            assert api in keys, f"api {api} not advertised"
            lo, hi = keys[api]
            assert 0 <= lo <= hi, (api, keys[api])
        assert keys[kw.ApiKey.PRODUCE][1] >= 7, "zstd needs Produce v7"
    assert v0["trailing_bytes"] == 0 and v3["trailing_bytes"] == 0
    assert v0["api_keys"] == v3["api_keys"]


# ---------------------------------------------------------------------------------------------
# Record batch validation

def _latest_offset(conn, topic, partition):
    keys = conn.api_versions(0)["api_keys"]
    v = kw.pick_version(keys, kw.ApiKey.LIST_OFFSETS, 1, 7)
    resp = conn.list_offsets(v, [(topic, [(partition, kw.LATEST_TIMESTAMP)])])
    (p,) = resp["topics"][0]["partitions"]
    assert p["error_code"] == 0, p
    return p["offset"]


def _fetch_records(conn, topic, partition, offset=0):
    keys = conn.api_versions(0)["api_keys"]
    v = kw.pick_version(keys, kw.ApiKey.FETCH, 4, 11)
    resp = conn.fetch(v, [(topic, [(partition, offset, 1 << 20)])], max_wait_ms=100)
    (p,) = resp["topics"][0]["partitions"]
    assert p["error_code"] == 0, p
    return kw.parse_record_batches(p["records"] or b"")


def _good_batch(tag):
    return kw.build_record_batch([kw.Record(value=b"%s-%d" % (tag, i), key=b"k%d" % i) for i in range(3)])


def _bad_batches():
    good = _good_batch(b"bad")
    truncated = good[:-5]                               # batch length says more than is there
    count_mismatch = kw.build_record_batch([b"a", b"b", b"c"], record_count=5)
    return {
        "crc_field": (kw.corrupt_batch_crc(good), {kw.Err.CORRUPT_MESSAGE}),
        "payload_bit": (kw.corrupt_batch_payload(good), {kw.Err.CORRUPT_MESSAGE}),
        "truncated": (truncated, {kw.Err.CORRUPT_MESSAGE, kw.Err.INVALID_RECORD}),
        "count_mismatch": (count_mismatch, {kw.Err.CORRUPT_MESSAGE, kw.Err.INVALID_RECORD}),
    }


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", list(_bad_batches()))
def test_bad_batch_in_one_partition_only_fails_that_partition(broker, kind):
    bad, allowed = _bad_batches()[kind]
    keys = api_versions_of(broker)
    versions = kw.supported_versions(keys, kw.ApiKey.PRODUCE, [3, 5, 7, 8, 9])
    assert versions, keys
    for pv in versions:
        topic = unique_topic(f"crc-v{pv}")
        create_topic(broker.bootstrap, topic, 2)
        good = _good_batch(b"good")
        with connect(broker) as c:
            resp = c.produce(pv, [(topic, [(0, bad), (1, good)])], acks=-1)
            res = kw.produce_partition_results(resp)
            assert set(res) == {(topic, 0), (topic, 1)}, resp
            assert res[(topic, 0)]["error_code"] in allowed, (pv, res[(topic, 0)])
            assert res[(topic, 1)]["error_code"] == 0, (pv, res[(topic, 1)])
            assert res[(topic, 1)]["base_offset"] == 0, (pv, res[(topic, 1)])
            # nothing appended to partition 0; partition 1 holds exactly the good batch
            assert _latest_offset(c, topic, 0) == 0
            assert _latest_offset(c, topic, 1) == 3
            batches = _fetch_records(c, topic, 1)
            assert len(batches) == 1 and batches[0].crc_ok
            assert [(r[0], r[2], r[3]) for r in batches[0].records] == \
                [(i, b"k%d" % i, b"good-%d" % i) for i in range(3)]
            # the next good batch to partition 0 lands at offset 0
            resp = c.produce(pv, [(topic, [(0, good)])], acks=1)
            assert kw.produce_partition_results(resp)[(topic, 0)]["error_code"] == 0
            assert kw.produce_partition_results(resp)[(topic, 0)]["base_offset"] == 0
        assert broker.alive()
    healthy(broker)


@pytest.mark.timeout(120)
def test_magic_v1_message_set_is_unsupported(broker):
    keys = api_versions_of(broker)
    topic = unique_topic("magic1")
    create_topic(broker.bootstrap, topic, 1)
    legacy = kw.build_legacy_message(b"old", key=b"k", magic=1) + kw.build_legacy_message(b"old2", magic=1, offset=1)
    for pv in kw.supported_versions(keys, kw.ApiKey.PRODUCE, [3, 7, 9]):
        with connect(broker) as c:
            resp = c.produce(pv, [(topic, [(0, legacy)])], acks=-1)
            p = kw.produce_partition_results(resp)[(topic, 0)]
            assert p["error_code"] == kw.Err.UNSUPPORTED_VERSION, (pv, p)
            assert _latest_offset(c, topic, 0) == 0
    healthy(broker)
