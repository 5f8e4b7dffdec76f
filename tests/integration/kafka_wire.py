"""A small, self-contained Kafka wire-protocol helper for raw-socket tests.

It covers what the bad-input tests need and nothing more:
  * primitive encoders / decoders (classic and "compact"/flexible forms, varints, tagged fields)
  * request header v0/v1/v2, response header v0/v1, length-prefixed framing
  * ApiVersions (v0-v4), Metadata (v0-v12), Produce (v3-v9), ListOffsets (v1-v9), Fetch (v4-v11)
  * record batch v2 building/parsing (CRC32C), legacy magic v0/v1 message building (CRC32)

Written from the public protocol description (kafka.apache.org/protocol); no broker code is shared.
"""

from __future__ import annotations

import socket
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence

# ---------------------------------------------------------------------------------------------
# CRC32C (Castagnoli). The `crc32c` package is used when installed; a table-driven fallback
# keeps this module importable without it.

_CRC32C_POLY_REFLECTED = 0x82F63B78


def _make_crc32c_table() -> list:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _CRC32C_POLY_REFLECTED if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c_pure(data: bytes, crc: int = 0) -> int:
    crc ^= 0xFFFFFFFF
    table = _CRC32C_TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # pragma: no cover - depends on the environment
    import crc32c as _crc32c_mod

    def crc32c(data: bytes) -> int:
        return _crc32c_mod.crc32c(bytes(data))

    CRC32C_IMPL = "crc32c package"
except Exception:  # pragma: no cover
    crc32c = crc32c_pure
    CRC32C_IMPL = "pure python"


# ---------------------------------------------------------------------------------------------
# API keys, error codes, flexible-version thresholds.

class ApiKey:
    PRODUCE = 0
    FETCH = 1
    LIST_OFFSETS = 2
    METADATA = 3
    FIND_COORDINATOR = 10
    API_VERSIONS = 18
    CREATE_TOPICS = 19
    DELETE_TOPICS = 20
    DESCRIBE_CONFIGS = 32
    ALTER_CONFIGS = 33
    INCREMENTAL_ALTER_CONFIGS = 44
    DESCRIBE_CLIENT_QUOTAS = 48
    ALTER_CLIENT_QUOTAS = 49


class Err:
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_FETCH_SIZE = 4
    LEADER_NOT_AVAILABLE = 5
    NOT_LEADER_OR_FOLLOWER = 6
    REQUEST_TIMED_OUT = 7
    MESSAGE_TOO_LARGE = 10
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    INVALID_REQUIRED_ACKS = 21
    UNSUPPORTED_VERSION = 35
    TOPIC_ALREADY_EXISTS = 36
    INVALID_REQUEST = 42
    UNSUPPORTED_FOR_MESSAGE_FORMAT = 43
    FETCH_SESSION_ID_NOT_FOUND = 70
    INVALID_FETCH_SESSION_EPOCH = 71
    INVALID_RECORD = 87


# First version of each API that uses the flexible ("compact" + tagged fields) encoding.
FLEXIBLE_FROM = {
    ApiKey.PRODUCE: 9,
    ApiKey.FETCH: 12,
    ApiKey.LIST_OFFSETS: 6,
    ApiKey.METADATA: 9,
    ApiKey.FIND_COORDINATOR: 3,
    ApiKey.API_VERSIONS: 3,
    ApiKey.CREATE_TOPICS: 5,
    ApiKey.DELETE_TOPICS: 4,
    ApiKey.DESCRIBE_CONFIGS: 4,
    ApiKey.ALTER_CONFIGS: 2,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: 1,
    ApiKey.DESCRIBE_CLIENT_QUOTAS: 1,
    ApiKey.ALTER_CLIENT_QUOTAS: 1,
    23: 4,  # OffsetForLeaderEpoch
}


def is_flexible(api_key: int, version: int) -> bool:
    first = FLEXIBLE_FROM.get(api_key)
    return first is not None and version >= first


def request_header_version(api_key: int, version: int) -> int:
    # ControlledShutdown v0 uses header v0; every other API uses v1, or v2 when flexible.
    return 2 if is_flexible(api_key, version) else 1


def response_header_version(api_key: int, version: int) -> int:
    # ApiVersions responses always use header v0 so that a client can read them before it
    # knows which versions the broker supports.
    if api_key == ApiKey.API_VERSIONS:
        return 0
    return 1 if is_flexible(api_key, version) else 0


# ---------------------------------------------------------------------------------------------
# Primitive encoding.

def zigzag(v: int) -> int:
    return (v << 1) ^ (v >> 63)


def unzigzag(v: int) -> int:
    return (v >> 1) ^ -(v & 1)


def encode_uvarint(v: int) -> bytes:
    if v < 0:
        raise ValueError("uvarint must be >= 0")
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_varint(v: int) -> bytes:
    """Signed zigzag varint (used for both varint and varlong fields)."""
    return encode_uvarint(zigzag(v) & 0xFFFFFFFFFFFFFFFF)


class Writer:
    def __init__(self) -> None:
        self.buf = bytearray()

    def getvalue(self) -> bytes:
        return bytes(self.buf)

    def raw(self, b: bytes) -> "Writer":
        self.buf += b
        return self

    def int8(self, v: int) -> "Writer":
        self.buf += struct.pack(">b", v)
        return self

    def boolean(self, v: bool) -> "Writer":
        return self.int8(1 if v else 0)

    def int16(self, v: int) -> "Writer":
        self.buf += struct.pack(">h", v)
        return self

    def int32(self, v: int) -> "Writer":
        self.buf += struct.pack(">i", v)
        return self

    def uint32(self, v: int) -> "Writer":
        self.buf += struct.pack(">I", v)
        return self

    def int64(self, v: int) -> "Writer":
        self.buf += struct.pack(">q", v)
        return self

    def uvarint(self, v: int) -> "Writer":
        self.buf += encode_uvarint(v)
        return self

    def varint(self, v: int) -> "Writer":
        self.buf += encode_varint(v)
        return self

    def uuid(self, v: bytes = b"\x00" * 16) -> "Writer":
        assert len(v) == 16
        self.buf += v
        return self

    def string(self, s: Optional[str], compact: bool = False) -> "Writer":
        if s is None:
            return self.uvarint(0) if compact else self.int16(-1)
        data = s.encode("utf-8")
        if compact:
            self.uvarint(len(data) + 1)
        else:
            self.int16(len(data))
        self.buf += data
        return self

    def bytes_(self, b: Optional[bytes], compact: bool = False) -> "Writer":
        if b is None:
            return self.uvarint(0) if compact else self.int32(-1)
        if compact:
            self.uvarint(len(b) + 1)
        else:
            self.int32(len(b))
        self.buf += b
        return self

    def array(self, items: Optional[Sequence], fn: Callable[["Writer", object], None],
              compact: bool = False) -> "Writer":
        if items is None:
            return self.uvarint(0) if compact else self.int32(-1)
        if compact:
            self.uvarint(len(items) + 1)
        else:
            self.int32(len(items))
        for it in items:
            fn(self, it)
        return self

    def tagged_fields(self, fields: Optional[dict] = None) -> "Writer":
        fields = fields or {}
        self.uvarint(len(fields))
        for tag in sorted(fields):
            data = fields[tag]
            self.uvarint(tag)
            self.uvarint(len(data))
            self.buf += data
        return self


class DecodeError(Exception):
    pass


class Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = memoryview(bytes(data))
        self.pos = pos

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"need {n} bytes at {self.pos}, have {self.remaining()}")
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def raw(self, n: int) -> bytes:
        return self._take(n)

    def rest(self) -> bytes:
        return self._take(self.remaining())

    def int8(self) -> int:
        return struct.unpack(">b", self._take(1))[0]

    def boolean(self) -> bool:
        return self.int8() != 0

    def int16(self) -> int:
        return struct.unpack(">h", self._take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def uint32(self) -> int:
        return struct.unpack(">I", self._take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self._take(8))[0]

    def uvarint(self) -> int:
        shift = 0
        result = 0
        while True:
            if shift > 63:
                raise DecodeError("varint too long")
            b = self._take(1)[0]
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def varint(self) -> int:
        return unzigzag(self.uvarint())

    def uuid(self) -> bytes:
        return self._take(16)

    def string(self, compact: bool = False) -> Optional[str]:
        if compact:
            n = self.uvarint() - 1
        else:
            n = self.int16()
        if n < 0:
            return None
        return self._take(n).decode("utf-8")

    def bytes_(self, compact: bool = False) -> Optional[bytes]:
        if compact:
            n = self.uvarint() - 1
        else:
            n = self.int32()
        if n < 0:
            return None
        return self._take(n)

    def array(self, fn: Callable[["Reader"], object], compact: bool = False) -> Optional[list]:
        if compact:
            n = self.uvarint() - 1
        else:
            n = self.int32()
        if n < 0:
            return None
        if n > self.remaining():  # every element takes at least one byte
            raise DecodeError(f"array length {n} exceeds remaining {self.remaining()} bytes")
        return [fn(self) for _ in range(n)]

    def tagged_fields(self) -> dict:
        fields = {}
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            size = self.uvarint()
            fields[tag] = self._take(size)
        return fields


# ---------------------------------------------------------------------------------------------
# Headers and framing.

DEFAULT_CLIENT_ID = "riptide-it"


def encode_request_header(api_key: int, api_version: int, correlation_id: int,
                          client_id: Optional[str] = DEFAULT_CLIENT_ID,
                          header_version: Optional[int] = None) -> bytes:
    if header_version is None:
        header_version = request_header_version(api_key, api_version)
    w = Writer().int16(api_key).int16(api_version).int32(correlation_id)
    if header_version >= 1:
        w.string(client_id)  # client_id stays a classic nullable string even in header v2
    if header_version >= 2:
        w.tagged_fields()
    return w.getvalue()


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def encode_request(api_key: int, api_version: int, correlation_id: int, body: bytes,
                   client_id: Optional[str] = DEFAULT_CLIENT_ID,
                   header_version: Optional[int] = None) -> bytes:
    """A complete length-prefixed request frame."""
    return frame(encode_request_header(api_key, api_version, correlation_id, client_id,
                                       header_version) + body)


def decode_response_header(r: Reader, header_version: int) -> int:
    corr = r.int32()
    if header_version >= 1:
        r.tagged_fields()
    return corr


# ---------------------------------------------------------------------------------------------
# ApiVersions

def encode_api_versions_request(version: int, software_name: str = "riptide-it",
                                software_version: str = "0.1") -> bytes:
    w = Writer()
    if version >= 3:
        w.string(software_name, compact=True)
        w.string(software_version, compact=True)
        w.tagged_fields()
    return w.getvalue()


def decode_api_versions_response(r: Reader, version: int) -> dict:
    flexible = version >= 3
    error_code = r.int16()

    def api(rr: Reader):
        key, vmin, vmax = rr.int16(), rr.int16(), rr.int16()
        if flexible:
            rr.tagged_fields()
        return key, vmin, vmax

    keys = r.array(api, compact=flexible) or []
    throttle = r.int32() if version >= 1 else 0
    tags = r.tagged_fields() if flexible else {}
    return {
        "error_code": error_code,
        "api_keys": {k: (lo, hi) for k, lo, hi in keys},
        "api_list": keys,
        "throttle_time_ms": throttle,
        "tagged_fields": tags,
    }


# ---------------------------------------------------------------------------------------------
# Metadata

def encode_metadata_request(version: int, topics: Optional[Sequence[str]] = None,
                            allow_auto_topic_creation: bool = True,
                            include_cluster_authorized_operations: bool = False,
                            include_topic_authorized_operations: bool = False) -> bytes:
    flexible = version >= 9
    w = Writer()
    if version == 0 and topics is None:
        topics = []  # v0: an empty array means "all topics"

    def topic(ww: Writer, name):
        if version >= 10:
            ww.uuid(b"\x00" * 16)
        ww.string(name, compact=flexible)
        if flexible:
            ww.tagged_fields()

    w.array(None if topics is None else list(topics), topic, compact=flexible)
    if version >= 4:
        w.boolean(allow_auto_topic_creation)
    if 8 <= version <= 10:
        w.boolean(include_cluster_authorized_operations)
    if version >= 8:
        w.boolean(include_topic_authorized_operations)
    if flexible:
        w.tagged_fields()
    return w.getvalue()


def decode_metadata_response(r: Reader, version: int) -> dict:
    flexible = version >= 9
    out: dict = {}
    out["throttle_time_ms"] = r.int32() if version >= 3 else 0

    def broker(rr: Reader):
        b = {"node_id": rr.int32(), "host": rr.string(compact=flexible), "port": rr.int32()}
        b["rack"] = rr.string(compact=flexible) if version >= 1 else None
        if flexible:
            rr.tagged_fields()
        return b

    out["brokers"] = r.array(broker, compact=flexible)
    out["cluster_id"] = r.string(compact=flexible) if version >= 2 else None
    out["controller_id"] = r.int32() if version >= 1 else -1

    def int32_array(rr: Reader):
        return rr.array(lambda x: x.int32(), compact=flexible)

    def partition(rr: Reader):
        p = {"error_code": rr.int16(), "partition_index": rr.int32(), "leader_id": rr.int32()}
        p["leader_epoch"] = rr.int32() if version >= 7 else -1
        p["replica_nodes"] = int32_array(rr)
        p["isr_nodes"] = int32_array(rr)
        p["offline_replicas"] = int32_array(rr) if version >= 5 else []
        if flexible:
            rr.tagged_fields()
        return p

    def topic(rr: Reader):
        t = {"error_code": rr.int16(), "name": rr.string(compact=flexible)}
        t["topic_id"] = rr.uuid() if version >= 10 else None
        t["is_internal"] = rr.boolean() if version >= 1 else False
        t["partitions"] = rr.array(partition, compact=flexible)
        t["topic_authorized_operations"] = rr.int32() if version >= 8 else None
        if flexible:
            rr.tagged_fields()
        return t

    out["topics"] = r.array(topic, compact=flexible)
    if 8 <= version <= 10:
        out["cluster_authorized_operations"] = r.int32()
    if flexible:
        out["tagged_fields"] = r.tagged_fields()
    return out


# ---------------------------------------------------------------------------------------------
# Produce (v3..v9)

def encode_produce_request(version: int, acks: int, timeout_ms: int,
                           topic_data: Sequence[tuple], transactional_id: Optional[str] = None) -> bytes:
    """topic_data: [(topic, [(partition, records_bytes_or_None), ...]), ...]"""
    if version < 3:
        raise ValueError("only Produce v3+ (record batches) is supported here")
    flexible = version >= 9
    w = Writer()
    w.string(transactional_id, compact=flexible)
    w.int16(acks)
    w.int32(timeout_ms)

    def part(ww: Writer, item):
        index, records = item
        ww.int32(index)
        ww.bytes_(records, compact=flexible)
        if flexible:
            ww.tagged_fields()

    def topic(ww: Writer, item):
        name, parts = item
        ww.string(name, compact=flexible)
        ww.array(list(parts), part, compact=flexible)
        if flexible:
            ww.tagged_fields()

    w.array(list(topic_data), topic, compact=flexible)
    if flexible:
        w.tagged_fields()
    return w.getvalue()


def decode_produce_response(r: Reader, version: int) -> dict:
    flexible = version >= 9

    def record_error(rr: Reader):
        e = {"batch_index": rr.int32(), "message": rr.string(compact=flexible)}
        if flexible:
            rr.tagged_fields()
        return e

    def part(rr: Reader):
        p = {"index": rr.int32(), "error_code": rr.int16(), "base_offset": rr.int64()}
        p["log_append_time_ms"] = rr.int64() if version >= 2 else -1
        p["log_start_offset"] = rr.int64() if version >= 5 else -1
        if version >= 8:
            p["record_errors"] = rr.array(record_error, compact=flexible)
            p["error_message"] = rr.string(compact=flexible)
        else:
            p["record_errors"] = []
            p["error_message"] = None
        if flexible:
            p["tagged_fields"] = rr.tagged_fields()
        return p

    def topic(rr: Reader):
        t = {"name": rr.string(compact=flexible), "partitions": rr.array(part, compact=flexible)}
        if flexible:
            rr.tagged_fields()
        return t

    out = {"topics": r.array(topic, compact=flexible)}
    out["throttle_time_ms"] = r.int32()
    if flexible:
        out["tagged_fields"] = r.tagged_fields()
    return out


def produce_partition_results(resp: dict) -> dict:
    """{(topic, partition): partition_response} for convenience."""
    return {(t["name"], p["index"]): p for t in resp["topics"] for p in t["partitions"]}


# ---------------------------------------------------------------------------------------------
# ListOffsets (v1..v9)

EARLIEST_TIMESTAMP = -2
LATEST_TIMESTAMP = -1
MAX_TIMESTAMP = -3


def encode_list_offsets_request(version: int, topics: Sequence[tuple], isolation_level: int = 0,
                                replica_id: int = -1) -> bytes:
    """topics: [(topic, [(partition, timestamp), ...]), ...]"""
    if version < 1:
        raise ValueError("ListOffsets v0 is not supported here")
    flexible = version >= 6
    w = Writer().int32(replica_id)
    if version >= 2:
        w.int8(isolation_level)

    def part(ww: Writer, item):
        index, ts = item
        ww.int32(index)
        if version >= 4:
            ww.int32(-1)  # current_leader_epoch: unknown
        ww.int64(ts)
        if flexible:
            ww.tagged_fields()

    def topic(ww: Writer, item):
        name, parts = item
        ww.string(name, compact=flexible)
        ww.array(list(parts), part, compact=flexible)
        if flexible:
            ww.tagged_fields()

    w.array(list(topics), topic, compact=flexible)
    if version >= 10:
        w.int32(30000)  # timeout_ms
    if flexible:
        w.tagged_fields()
    return w.getvalue()


def decode_list_offsets_response(r: Reader, version: int) -> dict:
    flexible = version >= 6
    out = {"throttle_time_ms": r.int32() if version >= 2 else 0}

    def part(rr: Reader):
        p = {"partition_index": rr.int32(), "error_code": rr.int16(),
             "timestamp": rr.int64(), "offset": rr.int64()}
        p["leader_epoch"] = rr.int32() if version >= 4 else -1
        if flexible:
            rr.tagged_fields()
        return p

    def topic(rr: Reader):
        t = {"name": rr.string(compact=flexible), "partitions": rr.array(part, compact=flexible)}
        if flexible:
            rr.tagged_fields()
        return t

    out["topics"] = r.array(topic, compact=flexible)
    if flexible:
        out["tagged_fields"] = r.tagged_fields()
    return out


# ---------------------------------------------------------------------------------------------
# Fetch (v4..v11, the classic encoding)

def encode_fetch_request(version: int, topics: Sequence[tuple], max_wait_ms: int = 500,
                         min_bytes: int = 1, max_bytes: int = 50 * 1024 * 1024,
                         isolation_level: int = 0, session_id: int = 0, session_epoch: int = -1,
                         forgotten: Sequence[tuple] = ()) -> bytes:
    """topics: [(topic, [(partition, fetch_offset, partition_max_bytes), ...]), ...];
    forgotten (v7+, incremental fetch sessions): [(topic, [partition, ...]), ...]. The default
    session fields (id 0, epoch -1) ask for a full fetch without a session."""
    if not 4 <= version <= 11:
        raise ValueError("Fetch v4..v11 supported here")
    w = Writer().int32(-1).int32(max_wait_ms).int32(min_bytes).int32(max_bytes).int8(isolation_level)
    if version >= 7:
        w.int32(session_id)
        w.int32(session_epoch)

    def part(ww: Writer, item):
        index, offset, pmax = item
        ww.int32(index)
        if version >= 9:
            ww.int32(-1)  # current_leader_epoch
        ww.int64(offset)
        if version >= 5:
            ww.int64(-1)  # log_start_offset (followers only)
        ww.int32(pmax)

    def topic(ww: Writer, item):
        name, parts = item
        ww.string(name)
        ww.array(list(parts), part)

    def forgotten_topic(ww: Writer, item):
        name, parts = item
        ww.string(name)
        ww.array(list(parts), lambda www, index: www.int32(index))

    w.array(list(topics), topic)
    if version >= 7:
        w.array(list(forgotten), forgotten_topic)
    if version >= 11:
        w.string("")  # rack_id
    return w.getvalue()


def decode_fetch_response(r: Reader, version: int) -> dict:
    out = {"throttle_time_ms": r.int32()}
    if version >= 7:
        out["error_code"] = r.int16()
        out["session_id"] = r.int32()

    def aborted(rr: Reader):
        return {"producer_id": rr.int64(), "first_offset": rr.int64()}

    def part(rr: Reader):
        p = {"partition_index": rr.int32(), "error_code": rr.int16(), "high_watermark": rr.int64(),
             "last_stable_offset": rr.int64()}
        p["log_start_offset"] = rr.int64() if version >= 5 else -1
        p["aborted_transactions"] = rr.array(aborted)
        p["preferred_read_replica"] = rr.int32() if version >= 11 else -1
        p["records"] = rr.bytes_()
        return p

    def topic(rr: Reader):
        return {"name": rr.string(), "partitions": rr.array(part)}

    out["topics"] = r.array(topic)
    return out


# ---------------------------------------------------------------------------------------------
# Records

@dataclass
class Record:
    value: Optional[bytes]
    key: Optional[bytes] = None
    headers: list = field(default_factory=list)  # [(str, Optional[bytes])]
    timestamp_delta: int = 0
    offset_delta: Optional[int] = None  # defaults to the record's index in the batch
    attributes: int = 0


def encode_record(rec: Record, index: int) -> bytes:
    body = Writer()
    body.int8(rec.attributes)
    body.varint(rec.timestamp_delta)
    body.varint(index if rec.offset_delta is None else rec.offset_delta)
    if rec.key is None:
        body.varint(-1)
    else:
        body.varint(len(rec.key)).raw(rec.key)
    if rec.value is None:
        body.varint(-1)
    else:
        body.varint(len(rec.value)).raw(rec.value)
    body.varint(len(rec.headers))
    for hk, hv in rec.headers:
        hkb = hk.encode("utf-8")
        body.varint(len(hkb)).raw(hkb)
        if hv is None:
            body.varint(-1)
        else:
            body.varint(len(hv)).raw(hv)
    payload = body.getvalue()
    return encode_varint(len(payload)) + payload


# Offsets of the v2 batch header fields (bytes from the start of the batch).
BATCH_OFF_BASE_OFFSET = 0
BATCH_OFF_LENGTH = 8
BATCH_OFF_LEADER_EPOCH = 12
BATCH_OFF_MAGIC = 16
BATCH_OFF_CRC = 17
BATCH_OFF_ATTRIBUTES = 21
BATCH_HEADER_SIZE = 61


def build_record_batch(records: Sequence, base_offset: int = 0, base_timestamp: Optional[int] = None,
                       max_timestamp: Optional[int] = None, attributes: int = 0,
                       partition_leader_epoch: int = -1, producer_id: int = -1, producer_epoch: int = -1,
                       base_sequence: int = -1, last_offset_delta: Optional[int] = None,
                       record_count: Optional[int] = None, records_payload: Optional[bytes] = None,
                       crc: Optional[int] = None, magic: int = 2) -> bytes:
    """Build a v2 record batch. `records` are Record objects or plain bytes values.

    The override arguments (last_offset_delta, record_count, records_payload, crc, magic) exist
    to build deliberately invalid batches.
    """
    recs = [r if isinstance(r, Record) else Record(value=r) for r in records]
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    if records_payload is None:
        records_payload = b"".join(encode_record(r, i) for i, r in enumerate(recs))
    if last_offset_delta is None:
        deltas = [i if r.offset_delta is None else r.offset_delta for i, r in enumerate(recs)]
        last_offset_delta = max(deltas) if deltas else 0
    if max_timestamp is None:
        max_timestamp = base_timestamp + max([r.timestamp_delta for r in recs] or [0])
    if record_count is None:
        record_count = len(recs)
    after_crc = (Writer().int16(attributes).int32(last_offset_delta).int64(base_timestamp)
                 .int64(max_timestamp).int64(producer_id).int16(producer_epoch).int32(base_sequence)
                 .int32(record_count).raw(records_payload).getvalue())
    if crc is None:
        crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # leader epoch + magic + crc + rest
    return (Writer().int64(base_offset).int32(batch_length).int32(partition_leader_epoch).int8(magic)
            .uint32(crc).raw(after_crc).getvalue())


def corrupt_batch_crc(batch: bytes) -> bytes:
    """Flip one bit in the CRC field."""
    b = bytearray(batch)
    b[BATCH_OFF_CRC] ^= 0x01
    return bytes(b)


def corrupt_batch_payload(batch: bytes) -> bytes:
    """Flip one bit in the last byte (covered by the CRC), keeping the stored CRC."""
    b = bytearray(batch)
    b[-1] ^= 0x01
    return bytes(b)


def build_legacy_message(value: Optional[bytes], key: Optional[bytes] = None, magic: int = 1,
                         offset: int = 0, timestamp: Optional[int] = None, attributes: int = 0) -> bytes:
    """One magic v0/v1 message-set entry: offset, message_size, crc(CRC32), magic, attributes,
    [timestamp], key, value."""
    body = Writer().int8(magic).int8(attributes)
    if magic >= 1:
        body.int64(int(time.time() * 1000) if timestamp is None else timestamp)
    body.bytes_(key).bytes_(value)
    content = body.getvalue()
    message = struct.pack(">I", zlib.crc32(content) & 0xFFFFFFFF) + content
    return Writer().int64(offset).int32(len(message)).raw(message).getvalue()


@dataclass
class ParsedBatch:
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int
    crc_ok: bool
    raw: bytes
    records: Optional[list]  # [(offset, timestamp, key, value, headers)] when uncompressed

    @property
    def compression(self) -> int:
        return self.attributes & 0x07


def parse_record_batches(data: bytes, decode_records: bool = True) -> list:
    """Parse consecutive v2 batches. A trailing partial batch (allowed in Fetch responses) is
    ignored. Compressed batches are returned without records."""
    out = []
    pos = 0
    while len(data) - pos >= BATCH_OFF_MAGIC + 1:
        base_offset, batch_length = struct.unpack_from(">qi", data, pos)
        total = 12 + batch_length
        if batch_length < 0 or pos + total > len(data):
            break
        raw = bytes(data[pos:pos + total])
        r = Reader(raw, 12)
        leader_epoch = r.int32()
        magic = r.int8()
        if magic != 2:
            raise DecodeError(f"batch at {pos} has magic {magic}")
        crc = r.uint32()
        crc_ok = crc32c(raw[BATCH_OFF_ATTRIBUTES:]) == crc
        attributes = r.int16()
        last_offset_delta = r.int32()
        base_ts = r.int64()
        max_ts = r.int64()
        pid = r.int64()
        pepoch = r.int16()
        bseq = r.int32()
        count = r.int32()
        records = None
        if decode_records and (attributes & 0x07) == 0:
            records = []
            for _ in range(count):
                length = r.varint()
                end = r.pos + length
                r.int8()  # attributes
                ts = base_ts + r.varint()
                off = base_offset + r.varint()
                klen = r.varint()
                key = r.raw(klen) if klen >= 0 else None
                vlen = r.varint()
                value = r.raw(vlen) if vlen >= 0 else None
                headers = []
                for _h in range(r.varint()):
                    hk = r.raw(r.varint()).decode("utf-8")
                    hvl = r.varint()
                    headers.append((hk, r.raw(hvl) if hvl >= 0 else None))
                if r.pos != end:
                    raise DecodeError(f"record length mismatch at offset {off}")
                records.append((off, ts, key, value, headers))
        out.append(ParsedBatch(base_offset, batch_length, leader_epoch, magic, crc, attributes,
                               last_offset_delta, base_ts, max_ts, pid, pepoch, bseq, count, crc_ok,
                               raw, records))
        pos += total
    return out


# ---------------------------------------------------------------------------------------------
# Connection

class ConnectionClosed(Exception):
    """The peer closed (EOF) or reset the connection."""


class KafkaConnection:
    def __init__(self, host: str, port: int, timeout: float = 10.0,
                 client_id: Optional[str] = DEFAULT_CLIENT_ID) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.client_id = client_id
        self._corr = 0

    def __enter__(self) -> "KafkaConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def next_correlation_id(self) -> int:
        self._corr += 1
        return self._corr

    # -- raw I/O --------------------------------------------------------------------------
    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ConnectionClosed(str(e)) from e

    def recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            try:
                chunk = self.sock.recv(min(n - len(buf), 1 << 20))
            except ConnectionResetError as e:
                raise ConnectionClosed(f"reset after {len(buf)}/{n} bytes") from e
            if not chunk:
                raise ConnectionClosed(f"EOF after {len(buf)}/{n} bytes")
            buf += chunk
        return bytes(buf)

    def recv_frame(self, max_size: int = 512 * 1024 * 1024) -> bytes:
        (size,) = struct.unpack(">i", self.recv_exact(4))
        if size < 0 or size > max_size:
            raise DecodeError(f"bad response size {size}")
        return self.recv_exact(size)

    def wait_closed(self, timeout: float = 10.0) -> bytes:
        """Read until the peer closes. Returns whatever arrived first (usually b"").
        Raises TimeoutError when the connection is still open after `timeout`."""
        deadline = time.monotonic() + timeout
        got = bytearray()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"connection still open after {timeout}s (received {len(got)} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return bytes(got)
            finally:
                self.sock.settimeout(self.timeout)
            if not chunk:
                return bytes(got)
            got += chunk

    # -- requests -------------------------------------------------------------------------
    def send_request(self, api_key: int, version: int, body: bytes,
                     header_version: Optional[int] = None, correlation_id: Optional[int] = None) -> int:
        corr = self.next_correlation_id() if correlation_id is None else correlation_id
        self.send_raw(encode_request(api_key, version, corr, body, self.client_id, header_version))
        return corr

    def read_response(self, api_key: int, version: int, expected_corr: Optional[int] = None,
                      header_version: Optional[int] = None) -> Reader:
        payload = self.recv_frame()
        r = Reader(payload)
        if header_version is None:
            header_version = response_header_version(api_key, version)
        corr = decode_response_header(r, header_version)
        if expected_corr is not None and corr != expected_corr:
            raise DecodeError(f"correlation id {corr}, expected {expected_corr}")
        return r

    def request(self, api_key: int, version: int, body: bytes, header_version: Optional[int] = None) -> Reader:
        corr = self.send_request(api_key, version, body, header_version)
        return self.read_response(api_key, version, corr)

    # -- typed helpers --------------------------------------------------------------------
    def api_versions(self, version: int = 0) -> dict:
        r = self.request(ApiKey.API_VERSIONS, version, encode_api_versions_request(version))
        resp = decode_api_versions_response(r, version)
        resp["trailing_bytes"] = r.remaining()
        return resp

    def metadata(self, version: int, topics: Optional[Sequence[str]] = None,
                 allow_auto_topic_creation: bool = True) -> dict:
        r = self.request(ApiKey.METADATA, version,
                         encode_metadata_request(version, topics, allow_auto_topic_creation))
        return decode_metadata_response(r, version)

    def produce(self, version: int, topic_data: Sequence[tuple], acks: int = -1,
                timeout_ms: int = 10000, transactional_id: Optional[str] = None) -> Optional[dict]:
        body = encode_produce_request(version, acks, timeout_ms, topic_data, transactional_id)
        if acks == 0:
            self.send_request(ApiKey.PRODUCE, version, body)
            return None
        r = self.request(ApiKey.PRODUCE, version, body)
        return decode_produce_response(r, version)

    def list_offsets(self, version: int, topics: Sequence[tuple]) -> dict:
        r = self.request(ApiKey.LIST_OFFSETS, version, encode_list_offsets_request(version, topics))
        return decode_list_offsets_response(r, version)

    def fetch(self, version: int, topics: Sequence[tuple], max_wait_ms: int = 500,
              min_bytes: int = 1, max_bytes: int = 50 * 1024 * 1024, **session) -> dict:
        """`session`: encode_fetch_request's session_id, session_epoch and forgotten."""
        r = self.request(ApiKey.FETCH, version,
                         encode_fetch_request(version, topics, max_wait_ms, min_bytes, max_bytes,
                                              **session))
        return decode_fetch_response(r, version)


def pick_version(api_keys: dict, api_key: int, lo: int, hi: int) -> int:
    """Highest version in [lo, hi] that the broker supports (from an ApiVersions response)."""
    if api_key not in api_keys:
        raise LookupError(f"broker does not advertise api key {api_key}")
    bmin, bmax = api_keys[api_key]
    v = min(hi, bmax)
    if v < max(lo, bmin):
        raise LookupError(f"no common version for api {api_key}: broker {bmin}..{bmax}, wanted {lo}..{hi}")
    return v


def supported_versions(api_keys: dict, api_key: int, candidates: Iterable[int]) -> list:
    if api_key not in api_keys:
        return []
    bmin, bmax = api_keys[api_key]
    return [v for v in candidates if bmin <= v <= bmax]
