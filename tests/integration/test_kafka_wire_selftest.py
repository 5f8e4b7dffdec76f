"""Self-tests of the raw-protocol helper against known byte layouts (no broker needed).

The expected bytes are written out by hand from the protocol description, and the record batch
encoder is cross-checked against kafka-python's independent implementation.
"""

import struct
import zlib

import pytest

import kafka_wire as kw


def test_crc32c_check_values():
    # The standard CRC-32C check value and the iSCSI test vectors (RFC 3720, B.4).
    assert kw.crc32c_pure(b"123456789") == 0xE3069283
    assert kw.crc32c(b"123456789") == 0xE3069283
    assert kw.crc32c_pure(b"\x00" * 32) == 0x8A9136AA
    assert kw.crc32c_pure(b"\xff" * 32) == 0x62A8AB43
    assert kw.crc32c_pure(bytes(range(32))) == 0x46DD794E
    assert kw.crc32c(bytes(range(32))) == 0x46DD794E


@pytest.mark.parametrize("value,expected", [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (2**32 - 1, b"\xff\xff\xff\xff\x0f"),
])
def test_uvarint(value, expected):
    assert kw.encode_uvarint(value) == expected
    assert kw.Reader(expected).uvarint() == value


@pytest.mark.parametrize("value,expected", [
    (0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"), (63, b"\x7e"), (-64, b"\x7f"),
    (64, b"\x80\x01"), (300, b"\xd8\x04"), (-(2**31), b"\xff\xff\xff\xff\x0f"),
    (2**63 - 1, b"\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
])
def test_zigzag_varint(value, expected):
    assert kw.encode_varint(value) == expected
    assert kw.Reader(expected).varint() == value


def test_strings_and_bytes():
    w = kw.Writer().string("ab").string(None).string("ab", compact=True).string(None, compact=True)
    w.bytes_(b"xyz").bytes_(None).bytes_(b"xyz", compact=True).bytes_(None, compact=True)
    assert w.getvalue() == (b"\x00\x02ab" b"\xff\xff" b"\x03ab" b"\x00"
                            b"\x00\x00\x00\x03xyz" b"\xff\xff\xff\xff" b"\x04xyz" b"\x00")
    r = kw.Reader(w.getvalue())
    assert [r.string(), r.string(), r.string(True), r.string(True)] == ["ab", None, "ab", None]
    assert [r.bytes_(), r.bytes_(), r.bytes_(True), r.bytes_(True)] == [b"xyz", None, b"xyz", None]
    assert r.remaining() == 0


def test_request_header_layouts():
    # v1: api_key, api_version, correlation_id, client_id (int16-length string)
    assert kw.encode_request_header(18, 0, 1, "x") == bytes.fromhex("0012 0000 00000001 0001 78")
    # v2 adds an empty tagged-field section; client_id stays a classic string
    assert kw.encode_request_header(18, 3, 7, "x") == bytes.fromhex("0012 0003 00000007 0001 78 00")
    # null client id
    assert kw.encode_request_header(3, 1, 2, None) == bytes.fromhex("0003 0001 00000002 ffff")
    assert kw.request_header_version(0, 8) == 1 and kw.request_header_version(0, 9) == 2
    assert kw.response_header_version(18, 3) == 0  # ApiVersions: always v0
    assert kw.response_header_version(3, 9) == 1 and kw.response_header_version(3, 8) == 0


def test_api_versions_request_frames():
    f0 = kw.encode_request(18, 0, 1, kw.encode_api_versions_request(0), client_id="x")
    assert f0 == bytes.fromhex("0000000b" "0012 0000 00000001 0001 78")
    body3 = kw.encode_api_versions_request(3, "py", "1")
    assert body3 == bytes.fromhex("03 7079 02 31 00")
    f3 = kw.encode_request(18, 3, 2, body3, client_id="x")
    assert f3[:4] == struct.pack(">i", len(f3) - 4)
    assert f3[4:] == bytes.fromhex("0012 0003 00000002 0001 78 00") + body3


def test_api_versions_response_decoding():
    v0 = bytes.fromhex("0000" "00000002" "0000 0003 0009" "0012 0000 0004")
    resp = kw.decode_api_versions_response(kw.Reader(v0), 0)
    assert resp["error_code"] == 0 and resp["api_keys"] == {0: (3, 9), 18: (0, 4)}
    v3 = bytes.fromhex("0000" "03" "0000 0003 0009 00" "0012 0000 0004 00" "00000000" "00")
    resp = kw.decode_api_versions_response(kw.Reader(v3), 3)
    assert resp["api_keys"] == {0: (3, 9), 18: (0, 4)} and resp["throttle_time_ms"] == 0


def test_metadata_request_layouts():
    assert kw.encode_metadata_request(1, None) == bytes.fromhex("ffffffff")
    assert kw.encode_metadata_request(1, ["t"]) == bytes.fromhex("00000001 0001 74")
    assert kw.encode_metadata_request(0, None) == bytes.fromhex("00000000")
    assert kw.encode_metadata_request(4, ["t"], False) == bytes.fromhex("00000001 0001 74 00")
    assert kw.encode_metadata_request(8, None) == bytes.fromhex("ffffffff 01 00 00")
    # v9: compact array, compact string, tagged fields per topic and at the end
    assert kw.encode_metadata_request(9, ["t"]) == bytes.fromhex("02 02 74 00 01 00 00 00")
    # v12: topic id before the (nullable) name; no include_cluster_authorized_operations
    assert kw.encode_metadata_request(12, ["t"]) == bytes.fromhex("02" + "00" * 16 + "02 74 00" "01 00 00")


def test_metadata_response_decoding_v1_and_v9():
    v1 = (bytes.fromhex("00000001" "00000001" "0009") + b"127.0.0.1" + bytes.fromhex("00002384" "ffff")
          + bytes.fromhex("00000001")  # controller
          + bytes.fromhex("00000001" "0000" "0001") + b"t" + bytes.fromhex("00")
          + bytes.fromhex("00000001" "0000 00000000 00000001 00000001 00000001 00000001 00000001"))
    m = kw.decode_metadata_response(kw.Reader(v1), 1)
    assert m["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": 9092, "rack": None}]
    assert m["topics"][0]["name"] == "t" and m["topics"][0]["partitions"][0]["leader_id"] == 1
    v9 = (bytes.fromhex("00000000" "02" "00000001" "0a") + b"127.0.0.1" + bytes.fromhex("00002384" "00" "00")
          + bytes.fromhex("03") + b"id" + bytes.fromhex("00000001")
          + bytes.fromhex("02" "0000" "02") + b"t" + bytes.fromhex("00")
          + bytes.fromhex("02" "0000 00000000 00000001 00000000 02 00000001 02 00000001 01 00")
          + bytes.fromhex("80000000 00") + bytes.fromhex("80000000 00"))
    m = kw.decode_metadata_response(kw.Reader(v9), 9)
    assert m["cluster_id"] == "id" and m["controller_id"] == 1
    assert m["topics"][0]["partitions"][0]["isr_nodes"] == [1]


def test_produce_request_layout_v3_and_v9():
    batch = b"BATCH"
    v3 = kw.encode_produce_request(3, -1, 1000, [("t", [(0, batch)])])
    assert v3 == bytes.fromhex("ffff ffff 000003e8 00000001 0001 74 00000001 00000000 00000005") + batch
    v9 = kw.encode_produce_request(9, 1, 1000, [("t", [(0, batch)])])
    assert v9 == bytes.fromhex("00 0001 000003e8 02 02 74 02 00000000 06") + batch + bytes.fromhex("00 00 00")


def test_produce_response_decoding():
    v8 = bytes.fromhex("00000001 0001 74 00000001 00000000 0002 ffffffffffffffff ffffffffffffffff"
                       "0000000000000000 00000000 ffff 00000000")
    resp = kw.decode_produce_response(kw.Reader(v8), 8)
    p = kw.produce_partition_results(resp)[("t", 0)]
    assert p["error_code"] == 2 and p["base_offset"] == -1 and p["error_message"] is None


def test_record_batch_layout():
    batch = kw.build_record_batch([kw.Record(value=b"v", key=b"k")], base_timestamp=1000)
    # header fields at their fixed positions
    assert batch[kw.BATCH_OFF_MAGIC] == 2
    (length,) = struct.unpack_from(">i", batch, kw.BATCH_OFF_LENGTH)
    assert length == len(batch) - 12
    (crc,) = struct.unpack_from(">I", batch, kw.BATCH_OFF_CRC)
    assert crc == kw.crc32c_pure(batch[kw.BATCH_OFF_ATTRIBUTES:])
    # record: len=8: attrs 0, tsdelta 0, offdelta 0, keylen 1 'k', vallen 1 'v', 0 headers
    assert batch[kw.BATCH_HEADER_SIZE:] == bytes.fromhex("10 00 00 00 02 6b 02 76 00")
    (count,) = struct.unpack_from(">i", batch, kw.BATCH_HEADER_SIZE - 4)
    assert count == 1
    parsed = kw.parse_record_batches(batch)
    assert len(parsed) == 1 and parsed[0].crc_ok
    assert parsed[0].records == [(0, 1000, b"k", b"v", [])]
    assert not kw.parse_record_batches(kw.corrupt_batch_crc(batch))[0].crc_ok
    assert not kw.parse_record_batches(kw.corrupt_batch_payload(batch))[0].crc_ok


def test_record_batch_matches_kafka_python():
    """Our encoder and kafka-python's builder must produce identical bytes; each parser must
    accept the other's output."""
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    ts = 1_700_000_000_000
    recs = [(b"key-%d" % i, b"value-%d" % i * (i + 1), [("h", b"x")] if i % 2 else []) for i in range(20)]
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=False,
                                        producer_id=-1, producer_epoch=-1, base_sequence=-1,
                                        batch_size=1 << 20)
    for i, (k, v, h) in enumerate(recs):
        assert builder.append(i, timestamp=ts + i, key=k, value=v, headers=h) is not None
    theirs = bytes(builder.build())
    ours = kw.build_record_batch([kw.Record(value=v, key=k, headers=h, timestamp_delta=i)
                                  for i, (k, v, h) in enumerate(recs)],
                                 base_timestamp=ts, partition_leader_epoch=0)
    assert ours == theirs
    parsed = kw.parse_record_batches(theirs)[0]
    assert parsed.crc_ok and parsed.record_count == 20
    assert [(r[2], r[3], r[4]) for r in parsed.records] == recs
    batch = DefaultRecordBatch(ours)
    assert batch.validate_crc()
    assert [(r.key, r.value, list(r.headers)) for r in batch] == recs


def test_legacy_message_layout():
    msg = kw.build_legacy_message(b"v", key=None, magic=1, offset=0, timestamp=5)
    # offset(8) size(4) crc(4) magic(1) attrs(1) ts(8) key(-1) value(len 1 'v')
    content = bytes.fromhex("01 00 0000000000000005 ffffffff 00000001 76")
    assert msg == (bytes.fromhex("0000000000000000") + struct.pack(">i", 4 + len(content))
                   + struct.pack(">I", zlib.crc32(content)) + content)
    from kafka.record.legacy_records import LegacyRecordBatch
    recs = list(LegacyRecordBatch(bytearray(msg), 1))
    assert len(recs) == 1 and recs[0].value == b"v" and recs[0].validate_crc()


def test_list_offsets_and_fetch_layouts():
    assert kw.encode_list_offsets_request(1, [("t", [(0, -1)])]) == bytes.fromhex(
        "ffffffff 00000001 0001 74 00000001 00000000 ffffffffffffffff")
    assert kw.encode_list_offsets_request(4, [("t", [(0, -2)])]) == bytes.fromhex(
        "ffffffff 00 00000001 0001 74 00000001 00000000 ffffffff fffffffffffffffe")
    f4 = kw.encode_fetch_request(4, [("t", [(0, 5, 1024)])], max_wait_ms=100, min_bytes=1, max_bytes=4096)
    assert f4 == bytes.fromhex("ffffffff 00000064 00000001 00001000 00"
                               "00000001 0001 74 00000001 00000000 0000000000000005 00000400")


def test_reader_rejects_truncation():
    with pytest.raises(kw.DecodeError):
        kw.Reader(b"\x00\x05ab").string()
    with pytest.raises(kw.DecodeError):
        kw.Reader(b"\x7f\xff\xff\xff").array(lambda r: r.int32())


@pytest.mark.parametrize("key,signed", [
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971), (b"abc", 479470107),
])
def test_murmur2_matches_java_client(key, signed):
    from helpers import murmur2
    assert murmur2(key) == signed & 0xFFFFFFFF
