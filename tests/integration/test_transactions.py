"""Kafka transactions with real clients: the transaction coordinator (FindCoordinator key type 1,
InitProducerId with a transactional.id, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit,
EndTxn), the markers it writes (WriteTxnMarkers), and read_committed Fetch / ListOffsets bounded
by the last stable offset (LSO); DescribeTransactions, ListTransactions and DescribeProducers.

Clients: confluent-kafka (librdkafka) for most tests, kafka-python for its own round trip and for
the admin APIs (confluent-kafka 2.16.1 has no list/describe_transactions), raw frames
(kafka_wire.py) for exact error codes and for the bytes on the log (control batches, aborted
transaction lists). Everything waits on conditions with deadlines; the only fixed waits are the
random delay that places a kill -9 somewhere inside a transaction, and two bounded observation
windows that check that nothing happens while a transaction is open (a read_committed consumer
gets nothing; compaction cleans nothing past the LSO).

Kafka facts the assertions rely on:
* A transaction writes one control batch (one record: key = version 0, type 0 abort / 1 commit)
  to every partition it touched, so each occupies one offset: high watermark = data + markers.
* Kafka answers EndTxn once PrepareCommit/PrepareAbort is logged and writes the markers after;
  Riptide answers once the markers are written (bounded). Tests wait for the LSO either way, so
  they hold for both.
* The LSO of a partition is the first offset of its earliest open transaction (else the high
  watermark); read_committed ListOffsets(latest) answers the LSO and read_committed Fetch returns
  nothing at or past it, plus the aborted transactions (producer id, first offset) in range.
* A second InitProducerId for a transactional id with an open transaction aborts it and bumps
  the epoch: the first producer is fenced (librdkafka: fatal _FENCED). A transaction open longer
  than its timeout is aborted by the coordinator with an epoch bump (its producer is fenced too).
"""

from __future__ import annotations

import collections
import json
import os
import queue
import random
import struct
import subprocess
import threading
import time
import uuid
from typing import Dict, Iterable, List, Optional

import pytest
from confluent_kafka import (OFFSET_BEGINNING, Consumer, IsolationLevel, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import OffsetSpec

import kafka_wire as kw
from helpers import admin_client, base_conf, create_topic, produce, unique_topic, wait_until

# ---- constants --------------------------------------------------------------------------------

INIT_PRODUCER_ID = 22
kw.FLEXIBLE_FROM.setdefault(INIT_PRODUCER_ID, 2)

E_NONE = 0
E_COORDINATOR_LOAD_IN_PROGRESS = 14
E_COORDINATOR_NOT_AVAILABLE = 15
E_NOT_COORDINATOR = 16
E_INVALID_PRODUCER_EPOCH = 47
E_INVALID_TRANSACTION_TIMEOUT = 50
E_CONCURRENT_TRANSACTIONS = 51
E_PRODUCER_FENCED = 90
RETRIABLE_COORDINATOR_ERRORS = {E_COORDINATOR_LOAD_IN_PROGRESS, E_COORDINATOR_NOT_AVAILABLE,
                                E_NOT_COORDINATOR, E_CONCURRENT_TRANSACTIONS}

ISOLATION_READ_UNCOMMITTED = 0
ISOLATION_READ_COMMITTED = 1
CONTROL_ABORT = 0
CONTROL_COMMIT = 1
ATTR_TRANSACTIONAL = 0x10
ATTR_CONTROL = 0x20

# Seconds a blocking client call (init/commit/abort/flush) may take before the test gives up.
CLIENT_TIMEOUT = 20.0
# Seconds for the LSO to catch up after a commit/abort returned (Kafka writes markers after EndTxn).
SETTLE_TIMEOUT = 15.0

FENCED_CODES = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

# Small internal topics (quick to create) and a fast timed-out-transaction sweep.
TXN_ARGS = (
    "--transaction-state-log-num-partitions", "4",
    "--transaction-cleanup-interval-ms", "500",
    "--offsets-topic-num-partitions", "4",
)
# For tests with a consumer group: no initial rebalance delay, short sessions allowed.
GROUP_ARGS = (
    "--group-initial-rebalance-delay-ms", "0",
    "--group-min-session-timeout-ms", "1000",
)


# ---- confluent-kafka helpers ------------------------------------------------------------------

def txn_conf(bootstrap: str, transactional_id: str, **extra) -> dict:
    return base_conf(bootstrap, **{
        "transactional.id": transactional_id,
        "linger.ms": 5,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 100,
        **extra,
    })


def txn_producer(bootstrap: str, transactional_id: Optional[str] = None, **extra) -> Producer:
    """A confluent-kafka transactional producer after init_transactions()."""
    p = Producer(txn_conf(bootstrap, transactional_id or unique_topic("tid"), **extra))
    p.init_transactions(CLIENT_TIMEOUT)
    return p


def send(p: Producer, topic: str, values: Dict[int, List[bytes]]) -> list:
    """Produce {partition: [value, ...]} and flush; asserts every delivery succeeded. Returns the
    delivery reports as (partition, offset, value)."""
    reports, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            reports.append((msg.partition(), msg.offset(), msg.value()))

    for partition, vals in values.items():
        for v in vals:
            while True:
                try:
                    p.produce(topic, value=v, partition=partition, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.05)
    left = p.flush(CLIENT_TIMEOUT)
    assert left == 0, f"{left} messages undelivered after {CLIENT_TIMEOUT}s"
    assert not errors, f"deliveries failed: {errors[:3]}"
    return reports


def batch_values(tag: str, partitions: Iterable[int], n: int) -> Dict[int, List[bytes]]:
    return {p: [f"{tag}-p{p}-{i:04d}".encode() for i in range(n)] for p in partitions}


def admin_end_offsets(bootstrap: str, topic: str, partitions: Iterable[int], committed: bool) -> dict:
    """ListOffsets(latest) through confluent-kafka's AdminClient with an isolation level."""
    admin = admin_client(bootstrap)
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in partitions},
                                 isolation_level=level, request_timeout=10)
    return {tp.partition: f.result(15).offset for tp, f in futures.items()}


class Reader:
    """An assign()-based confluent-kafka consumer (no group membership) that reads from the
    beginning with partition EOF events on; `read_to` consumes until every partition reported
    EOF at a given offset. For read_committed, librdkafka reports EOF at the LSO, so EOF at the
    high watermark also proves that the position moved past trailing control records."""

    def __init__(self, bootstrap: str, topic: str, partitions: Iterable[int], committed: bool) -> None:
        self.topic = topic
        self.partitions = list(partitions)
        self.committed = committed
        self.consumer = Consumer(base_conf(bootstrap, **{
            "group.id": "riptide-it-" + uuid.uuid4().hex[:8],  # required; no group API is used
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "isolation.level": "read_committed" if committed else "read_uncommitted",
        }))
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in self.partitions])
        self.got: Dict[int, List[tuple]] = {p: [] for p in self.partitions}  # (offset, value)
        self.eof: Dict[int, int] = {}

    def _consume(self, timeout: float) -> int:
        n = 0
        for m in self.consumer.consume(num_messages=10000, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.eof[m.partition()] = m.offset()
                    continue
                raise KafkaException(err)
            self.got[m.partition()].append((m.offset(), m.value()))
            n += 1
        return n

    def read_to(self, ends: Dict[int, int], timeout: float = 30.0) -> Dict[int, List[tuple]]:
        deadline = time.monotonic() + timeout
        while any(self.eof.get(p, -1) < end for p, end in ends.items()):
            self._consume(0.2)
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{'read_committed' if self.committed else 'read_uncommitted'} consumer of {self.topic}: "
                    f"no EOF at {ends} within {timeout}s; EOF seen at {self.eof}, "
                    f"records per partition {({p: len(v) for p, v in self.got.items()})}")
        assert {p: self.eof[p] for p in ends} == ends, \
            f"EOF past the expected end: {self.eof}, want {ends}"
        return self.got

    def observe(self, seconds: float) -> int:
        """Consume for a fixed window; returns how many records arrived (used to show that
        nothing does while a transaction is open)."""
        deadline = time.monotonic() + seconds
        n = 0
        while time.monotonic() < deadline:
            n += self._consume(0.1)
        return n

    def close(self) -> None:
        self.consumer.close()


def read_all(bootstrap: str, topic: str, ends: Dict[int, int], committed: bool,
             timeout: float = 30.0) -> Dict[int, List[tuple]]:
    r = Reader(bootstrap, topic, ends.keys(), committed)
    try:
        return r.read_to(ends, timeout)
    finally:
        r.close()


def values_of(got: Dict[int, List[tuple]]) -> Dict[int, List[bytes]]:
    return {p: [v for (_, v) in recs] for p, recs in got.items()}


def offsets_of(got: Dict[int, List[tuple]]) -> Dict[int, List[int]]:
    return {p: [o for (o, _) in recs] for p, recs in got.items()}


# ---- raw protocol helpers ---------------------------------------------------------------------

def _conn(bootstrap: str) -> kw.KafkaConnection:
    host, port = bootstrap.rsplit(":", 1)
    return kw.KafkaConnection(host, int(port), timeout=15)


def raw_end_offsets(bootstrap: str, topic: str, partitions: Iterable[int], isolation: int) -> dict:
    """ListOffsets(latest) with an isolation level: the LSO (read_committed) or the high
    watermark (read_uncommitted)."""
    parts = list(partitions)
    with _conn(bootstrap) as conn:
        version = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.LIST_OFFSETS, 2, 9)
        body = kw.encode_list_offsets_request(version, [(topic, [(p, kw.LATEST_TIMESTAMP) for p in parts])],
                                              isolation_level=isolation)
        resp = kw.decode_list_offsets_response(conn.request(kw.ApiKey.LIST_OFFSETS, version, body), version)
    out = {}
    for t in resp["topics"]:
        for p in t["partitions"]:
            assert p["error_code"] == E_NONE, f"ListOffsets {topic}/{p['partition_index']}: {p}"
            out[p["partition_index"]] = p["offset"]
    return out


def lso(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict:
    return raw_end_offsets(bootstrap, topic, partitions, ISOLATION_READ_COMMITTED)


def hw(bootstrap: str, topic: str, partitions: Iterable[int]) -> dict:
    return raw_end_offsets(bootstrap, topic, partitions, ISOLATION_READ_UNCOMMITTED)


def wait_settled(bootstrap: str, topic: str, want: Dict[int, int], timeout: float = SETTLE_TIMEOUT) -> None:
    """Wait until, per partition, high watermark == LSO == want (every transaction on it ended and
    its markers are written)."""
    last = {}

    def settled():
        last["hw"] = hw(bootstrap, topic, want.keys())
        last["lso"] = lso(bootstrap, topic, want.keys())
        return last["hw"] == want and last["lso"] == want

    try:
        wait_until(settled, timeout, f"{topic}: high watermark and LSO at {want}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last high watermarks {last.get('hw')}, LSOs {last.get('lso')}") from None


FETCH_VERSION = 11


def raw_fetch_all(bootstrap: str, topic: str, partition: int, isolation: int) -> dict:
    """Fetch (v11) from offset 0 until nothing more is returned. Returns the batches (parsed),
    the aborted transactions reported {(producer_id, first_offset)}, and the last response's
    high watermark and LSO."""
    batches: List[kw.ParsedBatch] = []
    aborted = set()
    saw_null_aborted = False
    offset = 0
    hw_, lso_ = None, None
    with _conn(bootstrap) as conn:
        for _ in range(10000):
            body = kw.encode_fetch_request(FETCH_VERSION, [(topic, [(partition, offset, 1 << 20)])],
                                           max_wait_ms=50, isolation_level=isolation)
            resp = kw.decode_fetch_response(conn.request(kw.ApiKey.FETCH, FETCH_VERSION, body), FETCH_VERSION)
            assert resp.get("error_code", 0) == E_NONE, resp
            (t,) = resp["topics"]
            (part,) = t["partitions"]
            assert part["error_code"] == E_NONE, f"Fetch {topic}/{partition} at {offset}: {part}"
            hw_, lso_ = part["high_watermark"], part["last_stable_offset"]
            if part["aborted_transactions"] is None:
                saw_null_aborted = True
            for a in part["aborted_transactions"] or []:
                aborted.add((a["producer_id"], a["first_offset"]))
            got = kw.parse_record_batches(part["records"] or b"")
            got = [b for b in got if b.base_offset + b.last_offset_delta >= offset]
            if not got:
                break
            for b in got:
                assert b.crc_ok, f"bad CRC in batch at {b.base_offset}"
            batches.extend(got)
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1
    return {"batches": batches, "aborted": aborted, "hw": hw_, "lso": lso_, "null_aborted": saw_null_aborted}


def is_control(b: kw.ParsedBatch) -> bool:
    return bool(b.attributes & ATTR_CONTROL)


def is_transactional(b: kw.ParsedBatch) -> bool:
    return bool(b.attributes & ATTR_TRANSACTIONAL)


def control_type(b: kw.ParsedBatch) -> int:
    """The control record's type (0 abort, 1 commit), from its key (int16 version, int16 type)."""
    assert b.records is not None and len(b.records) == 1, f"control batch at {b.base_offset}: {b.records}"
    key = b.records[0][2]
    assert key is not None and len(key) >= 4, f"control record key {key!r}"
    version, kind = struct.unpack(">hh", key[:4])
    assert version == 0, f"control record key version {version}"
    return kind


def markers(batches: List[kw.ParsedBatch]) -> List[tuple]:
    """[(offset, type, producer_id)] of the control batches."""
    out = []
    for b in batches:
        if is_control(b):
            assert is_transactional(b), f"control batch at {b.base_offset} without the transactional bit"
            assert b.last_offset_delta == 0 and b.record_count == 1, \
                f"control batch at {b.base_offset}: {b.record_count} records"
            out.append((b.base_offset, control_type(b), b.producer_id))
    return out


def data_offsets(batches: List[kw.ParsedBatch]) -> List[int]:
    return [r[0] for b in batches if not is_control(b) for r in (b.records or [])]


def find_coordinator_raw(conn: kw.KafkaConnection, key: str, key_type: int, version: int) -> dict:
    """FindCoordinator v1..v4 for one key; returns {error_code, node_id, host, port}."""
    flexible = version >= 3
    w = kw.Writer()
    if version >= 4:
        w.int8(key_type)
        w.array([key], lambda ww, k: ww.string(k, compact=True), compact=True)
    else:
        w.string(key, compact=flexible)
        w.int8(key_type)
    if flexible:
        w.tagged_fields()
    r = conn.request(kw.ApiKey.FIND_COORDINATOR, version, w.getvalue())
    r.int32()  # throttle
    if version >= 4:
        def coordinator(rr):
            c = {"key": rr.string(compact=True), "node_id": rr.int32(), "host": rr.string(compact=True),
                 "port": rr.int32(), "error_code": rr.int16(), "error_message": rr.string(compact=True)}
            rr.tagged_fields()
            return c
        (c,) = r.array(coordinator, compact=True)
        assert c["key"] == key, c
        return c
    c = {"error_code": r.int16(), "error_message": r.string(compact=flexible), "node_id": r.int32(),
         "host": r.string(compact=flexible), "port": r.int32()}
    return c


def init_producer_id_raw(conn: kw.KafkaConnection, transactional_id: Optional[str], timeout_ms: int,
                         version: int = 1, producer_id: int = -1, producer_epoch: int = -1) -> dict:
    flexible = version >= 2
    w = kw.Writer()
    w.string(transactional_id, compact=flexible)
    w.int32(timeout_ms)
    if version >= 3:
        w.int64(producer_id).int16(producer_epoch)
    if flexible:
        w.tagged_fields()
    r = conn.request(INIT_PRODUCER_ID, version, w.getvalue())
    r.int32()  # throttle
    return {"error_code": r.int16(), "producer_id": r.int64(), "producer_epoch": r.int16()}


def until_no_coordinator_error(call, what: str, timeout: float = 30.0) -> dict:
    """Repeat `call()` while it answers a retriable coordinator error (loading, not available,
    concurrent transactions); return the first other answer."""
    last = {}

    def attempt():
        last["resp"] = call()
        return last["resp"]["error_code"] not in RETRIABLE_COORDINATOR_ERRORS

    try:
        wait_until(attempt, timeout, what, interval=0.1)
    except AssertionError as e:
        raise AssertionError(f"{e}; last answer {last.get('resp')}") from None
    return last["resp"]


# ---- 1. commit and abort ------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_commit_then_abort_then_commit(broker):
    """confluent-kafka: a committed transaction over 3 partitions is read exactly by
    read_committed; an aborted one is invisible to read_committed but read by read_uncommitted;
    the next committed one is read after the skipped offsets; each transaction leaves one control
    record per partition (commit, abort, commit) and the aborted range is reported by Fetch."""
    bootstrap = broker.bootstrap  # default broker: __transaction_state gets its 50 partitions
    topic = unique_topic("txn-basic")
    parts = [0, 1, 2]
    create_topic(bootstrap, topic, len(parts))
    p = txn_producer(bootstrap)

    first = batch_values("c1", parts, 100)
    p.begin_transaction()
    send(p, topic, first)
    p.commit_transaction(CLIENT_TIMEOUT)
    wait_settled(bootstrap, topic, {q: 101 for q in parts})  # 100 records + 1 commit marker
    got = read_all(bootstrap, topic, {q: 101 for q in parts}, committed=True)
    assert values_of(got) == first
    assert offsets_of(got) == {q: list(range(100)) for q in parts}

    aborted = batch_values("a2", parts, 30)
    p.begin_transaction()
    send(p, topic, aborted)
    p.abort_transaction(CLIENT_TIMEOUT)
    wait_settled(bootstrap, topic, {q: 132 for q in parts})  # + 30 records + 1 abort marker
    got = read_all(bootstrap, topic, {q: 132 for q in parts}, committed=True)
    assert values_of(got) == first, "read_committed returned records of an aborted transaction"
    got = read_all(bootstrap, topic, {q: 132 for q in parts}, committed=False)
    assert values_of(got) == {q: first[q] + aborted[q] for q in parts}
    assert offsets_of(got) == {q: list(range(100)) + list(range(101, 131)) for q in parts}

    third = batch_values("c3", parts, 10)
    p.begin_transaction()
    send(p, topic, third)
    p.commit_transaction(CLIENT_TIMEOUT)
    ends = {q: 143 for q in parts}  # + 10 records + 1 commit marker
    wait_settled(bootstrap, topic, ends)
    got = read_all(bootstrap, topic, ends, committed=True)
    assert values_of(got) == {q: first[q] + third[q] for q in parts}
    assert offsets_of(got) == {q: list(range(100)) + list(range(132, 142)) for q in parts}, \
        "read_committed did not move past the aborted records and the markers"
    got = read_all(bootstrap, topic, ends, committed=False)
    assert values_of(got) == {q: first[q] + aborted[q] + third[q] for q in parts}

    for q in parts:
        f = raw_fetch_all(bootstrap, topic, q, ISOLATION_READ_COMMITTED)
        assert (f["hw"], f["lso"]) == (143, 143), f
        data = [b for b in f["batches"] if not is_control(b)]
        assert data and all(is_transactional(b) for b in data), "data batches lack the transactional bit"
        pids = {b.producer_id for b in data}
        assert len(pids) == 1 and min(pids) >= 0, f"one producer wrote all data batches: {pids}"
        (pid,) = pids
        assert markers(f["batches"]) == [(100, CONTROL_COMMIT, pid), (131, CONTROL_ABORT, pid),
                                         (142, CONTROL_COMMIT, pid)], f"partition {q} markers"
        assert data_offsets(f["batches"]) == list(range(100)) + list(range(101, 131)) + list(range(132, 142))
        assert f["aborted"] == {(pid, 101)}, f"partition {q}: aborted transactions {f['aborted']}"
        # read_uncommitted fetches carry no aborted-transaction list
        u = raw_fetch_all(bootstrap, topic, q, ISOLATION_READ_UNCOMMITTED)
        assert not u["aborted"], u["aborted"]


# ---- 2. the LSO holds read_committed back -----------------------------------------------------

@pytest.mark.timeout(60)
def test_open_transaction_holds_back_the_lso(broker_factory):
    """While a transaction is open on partition 0 (records produced and acknowledged, no
    EndTxn), read_committed ListOffsets answers its first offset there (the high watermark
    elsewhere), read_committed Fetch and a read_committed consumer stop before it; after the
    commit the LSO is the high watermark and the consumer gets the records."""
    broker = broker_factory(*TXN_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-lso")
    create_topic(bootstrap, topic, 2)
    plain = batch_values("plain", [0, 1], 5)
    produce(bootstrap, topic, [{"value": v, "partition": q} for q, vs in plain.items() for v in vs],
            conf={"enable.idempotence": True})

    p = txn_producer(bootstrap)
    pending = batch_values("open", [0], 7)
    p.begin_transaction()
    reports = send(p, topic, pending)
    assert sorted(o for (_, o, _) in reports) == list(range(5, 12))

    assert admin_end_offsets(bootstrap, topic, [0, 1], committed=True) == {0: 5, 1: 5}
    assert admin_end_offsets(bootstrap, topic, [0, 1], committed=False) == {0: 12, 1: 5}
    assert lso(bootstrap, topic, [0, 1]) == {0: 5, 1: 5}
    assert hw(bootstrap, topic, [0, 1]) == {0: 12, 1: 5}

    f = raw_fetch_all(bootstrap, topic, 0, ISOLATION_READ_COMMITTED)
    assert (f["hw"], f["lso"]) == (12, 5), f
    assert data_offsets(f["batches"]) == list(range(5)), "read_committed Fetch returned records past the LSO"
    assert not markers(f["batches"]) and not f["aborted"]
    u = raw_fetch_all(bootstrap, topic, 0, ISOLATION_READ_UNCOMMITTED)
    assert data_offsets(u["batches"]) == list(range(12))

    # `riptide group describe` measures lag against the end a consumer of each isolation can
    # read to: LSO - committed for read_committed, HW - committed otherwise.
    group = unique_topic("txn-lag-group")
    committer = Consumer(base_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False}))
    try:
        committer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 5)],
                         asynchronous=False)
    finally:
        committer.close()
    lags = {}
    for isolation in ("read-committed", "read-uncommitted"):
        described = subprocess.run(
            [str(broker.binary), "group", "describe", group, "--isolation", isolation,
             "--format", "json", "-b", bootstrap],
            capture_output=True, text=True, timeout=60)
        assert described.returncode == 0, described.stderr
        doc = json.loads(described.stdout)
        lags[doc["lag_against"]] = {o["partition"]: (o["end_offset"], o["lag"]) for o in doc["offsets"]}
    assert lags == {"last_stable_offset": {0: (5, 2), 1: (5, 0)},
                    "high_watermark": {0: (12, 9), 1: (5, 0)}}, lags

    reader = Reader(bootstrap, topic, [0, 1], committed=True)
    try:
        got = reader.read_to({0: 5, 1: 5})  # EOF at the LSO on partition 0
        assert values_of(got) == plain
        assert reader.observe(1.5) == 0, "read_committed consumer got records of an open transaction"

        p.commit_transaction(CLIENT_TIMEOUT)
        wait_settled(bootstrap, topic, {0: 13, 1: 5})
        assert admin_end_offsets(bootstrap, topic, [0, 1], committed=True) == {0: 13, 1: 5}
        got = reader.read_to({0: 13, 1: 5})
        assert values_of(got) == {0: plain[0] + pending[0], 1: plain[1]}
        assert offsets_of(got)[0] == list(range(12))
    finally:
        reader.close()


# ---- 2b. compaction of a transactional topic -------------------------------------------------

COMPACTION_ARGS = ("--compaction-interval-ms", "200", "--recovery-checkpoint-interval-ms", "200")


def send_keyed(p: Producer, topic: str, records: List[tuple]) -> list:
    """Produce [(key, value)] to partition 0 and flush; returns the offsets in order."""
    reports, errors = [], []

    def on_delivery(err, msg):
        (errors if err is not None else reports).append(err if err is not None else msg.offset())

    for key, value in records:
        while True:
            try:
                p.produce(topic, key=key, value=value, partition=0, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.05)
    assert p.flush(CLIENT_TIMEOUT) == 0
    assert not errors, f"deliveries failed: {errors[:3]}"
    return sorted(reports)


def keyed_view(bootstrap: str, topic: str, isolation: int) -> dict:
    """The partition as a raw Fetch sees it: data records [(offset, key, value)], markers,
    aborted transactions."""
    f = raw_fetch_all(bootstrap, topic, 0, isolation)
    records = [(r[0], r[2], r[3]) for b in f["batches"] if not is_control(b) for r in (b.records or [])]
    # What a read_committed client keeps: it drops a producer's transactional batches from the
    # first offset of each aborted transaction it was told of until that producer's ABORT marker.
    pending = sorted(f["aborted"], key=lambda a: a[1])
    aborting, visible = set(), []
    for b in f["batches"]:
        while pending and pending[0][1] <= b.base_offset:
            aborting.add(pending.pop(0)[0])
        if is_control(b):
            if control_type(b) == CONTROL_ABORT:
                aborting.discard(b.producer_id)
        elif not (is_transactional(b) and b.producer_id in aborting):
            visible.extend((r[0], r[2], r[3]) for r in (b.records or []))
    return {"records": records, "visible": visible, "markers": markers(f["batches"]),
            "aborted": f["aborted"]}


@pytest.mark.timeout(180)
def test_compaction_respects_transactions(broker_factory):
    """Kafka's cleaner rules on a compacted topic with transactions. One producer commits
    keys k00..k19 (T1), aborts new values for them (T2), and opens a third transaction on them
    (T3); duplicate-keyed filler records follow. While T3 is open nothing at or past its first
    offset is cleaned (its keys must not supersede committed values: it may abort). After T3
    aborts: the aborted data is removed, the aborted writes superseded nothing (read_committed
    still reads T1's values at their offsets), the aborted-transaction index entries retire,
    and once no data is left to protect the ABORT markers go too (delete.retention.ms=0),
    while T1's COMMIT marker stays. All of it holds across a kill -9 and restart."""
    broker = broker_factory(*TXN_ARGS, *COMPACTION_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-compact")
    create_topic(bootstrap, topic, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "65536", "min.compaction.lag.ms": "0",
        "delete.retention.ms": "0", "min.cleanable.dirty.ratio": "0.01"})
    pad = b"x" * 1000
    keys = [b"k%02d" % i for i in range(20)]
    plain = Producer(base_conf(bootstrap, **{"enable.idempotence": True, "linger.ms": 5}))

    def fillers(tag: bytes) -> list:
        # 100 KB: seals whatever came before (64 KiB segments); each key twice.
        return send_keyed(plain, topic, [(b"f%02d" % (i % 50), tag + pad) for i in range(100)])

    p = txn_producer(bootstrap)
    p.begin_transaction()
    t1 = send_keyed(p, topic, [(k, b"c1-" + k + pad) for k in keys])
    p.commit_transaction(CLIENT_TIMEOUT)
    p.begin_transaction()
    t2 = send_keyed(p, topic, [(k, b"a2-" + k + pad) for k in keys])
    p.abort_transaction(CLIENT_TIMEOUT)
    p.begin_transaction()
    t3 = send_keyed(p, topic, [(k, b"o3-" + k + pad) for k in keys])
    first_fillers = fillers(b"first-")
    assert lso(bootstrap, topic, [0]) == {0: t3[0]}
    committed = [(o, k, b"c1-" + k + pad) for o, k in zip(t1, keys)]

    def committed_keyed():
        got = keyed_view(bootstrap, topic, ISOLATION_READ_COMMITTED)
        return [r for r in got["visible"] if r[1].startswith(b"k")]

    # T3 open: a bounded window of at least five compaction intervals, in which the aborted
    # T2 below the LSO may be cleaned but the fillers past it must not be, nor may T3's keys
    # remove T1's values.
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert committed_keyed() == committed, "committed values lost while a transaction was open"
        time.sleep(0.1)
    raw = keyed_view(bootstrap, topic, ISOLATION_READ_UNCOMMITTED)["records"]
    assert [o for (o, k, _) in raw if k.startswith(b"f")] == first_fillers, \
        "records past the last stable offset were compacted"

    p.abort_transaction(CLIENT_TIMEOUT)
    wait_settled(bootstrap, topic, {0: first_fillers[-1] + 2})  # + T3's abort marker
    second_fillers = fillers(b"second-")

    def aborted_data_removed():
        view = keyed_view(bootstrap, topic, ISOLATION_READ_UNCOMMITTED)
        aborted_left = [r for r in view["records"] if r[2][:3] in (b"a2-", b"o3-")]
        return view if not aborted_left and not view["aborted"] else None

    view = wait_until(aborted_data_removed, 60, "compaction to remove the aborted transactions'"
                      " data and retire their aborted-index entries", interval=0.3)
    assert [r for r in view["records"] if r[1].startswith(b"k")] == committed
    assert committed_keyed() == committed
    # Superseded fillers went (the ones below the active segment at least).
    firsts = [o for (o, k, _) in view["records"] if k.startswith(b"f") and o in first_fillers]
    assert len(firsts) < len(first_fillers), "fillers past the old LSO were never compacted"

    # Nothing protects the ABORT markers now: the next pass with new dirty data removes them;
    # T1's COMMIT marker stays (its data does).
    def abort_markers_removed():
        fillers(b"more-")
        got = keyed_view(bootstrap, topic, ISOLATION_READ_UNCOMMITTED)
        return got if not [m for m in got["markers"] if m[1] == CONTROL_ABORT] else None

    view = wait_until(abort_markers_removed, 60, "compaction to remove the ABORT markers",
                      interval=0.5)
    assert (t1[-1] + 1, CONTROL_COMMIT) in {(o, t) for (o, t, _) in view["markers"]}
    assert committed_keyed() == committed

    broker.restart(hard=True)
    after = keyed_view(bootstrap, topic, ISOLATION_READ_COMMITTED)
    assert not after["aborted"], "a restart revived retired aborted-index entries"
    assert [r for r in after["visible"] if r[1].startswith(b"k")] == committed
    p.flush(1)
    plain.flush(1)


# ---- 3. the coordinator aborts a transaction past its timeout --------------------------------

@pytest.mark.timeout(60)
def test_transaction_timeout_aborts(broker_factory):
    """A producer with transaction.timeout.ms=2000 produces and then goes quiet: the coordinator
    aborts the transaction (abort markers, LSO = high watermark, nothing visible to
    read_committed), the producer's later commit fails, and a new producer with the same
    transactional.id works."""
    broker = broker_factory(*TXN_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-timeout")
    create_topic(bootstrap, topic, 2)
    tid = unique_topic("tid-timeout")
    p = txn_producer(bootstrap, tid, **{"transaction.timeout.ms": 2000})
    doomed = batch_values("doomed", [0, 1], 5)
    p.begin_transaction()
    send(p, topic, doomed)
    started = time.monotonic()
    assert lso(bootstrap, topic, [0, 1]) == {0: 0, 1: 0}, "the transaction is open"

    wait_settled(bootstrap, topic, {0: 6, 1: 6}, timeout=30)  # 5 records + the abort marker
    elapsed = time.monotonic() - started
    assert elapsed >= 1.0, f"aborted after {elapsed:.1f}s, before its 2 s timeout could pass"
    assert values_of(read_all(bootstrap, topic, {0: 6, 1: 6}, committed=True)) == {0: [], 1: []}
    assert values_of(read_all(bootstrap, topic, {0: 6, 1: 6}, committed=False)) == doomed
    for q in (0, 1):
        f = raw_fetch_all(bootstrap, topic, q, ISOLATION_READ_COMMITTED)
        (pid,) = {b.producer_id for b in f["batches"] if not is_control(b)}
        assert [(o, t) for (o, t, _) in markers(f["batches"])] == [(5, CONTROL_ABORT)]
        assert f["aborted"] == {(pid, 0)}, f["aborted"]

    with pytest.raises(KafkaException) as info:
        p.commit_transaction(CLIENT_TIMEOUT)
    err = info.value.args[0]
    print(f"commit after the timeout abort: {err!r} fatal={err.fatal()} "
          f"abortable={err.txn_requires_abort()} retriable={err.retriable()}")
    assert not err.retriable() and (err.fatal() or err.txn_requires_abort()), err

    p2 = txn_producer(bootstrap, tid, **{"transaction.timeout.ms": 2000})
    p2.begin_transaction()
    send(p2, topic, {0: [b"after"]})
    p2.commit_transaction(CLIENT_TIMEOUT)
    wait_settled(bootstrap, topic, {0: 8, 1: 6})
    got = read_all(bootstrap, topic, {0: 8, 1: 6}, committed=True)
    assert got == {0: [(6, b"after")], 1: []}


# ---- 4. zombie fencing ------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_second_producer_fences_the_first(broker_factory):
    """Two producers with one transactional.id: the second's init_transactions aborts the first's
    open transaction and fences it; the first's next produce is refused and its commit fails
    with a fatal fencing error; only the second's data is committed."""
    broker = broker_factory(*TXN_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-fence")
    create_topic(bootstrap, topic, 1)
    tid = unique_topic("tid-fence")

    zombie = txn_producer(bootstrap, tid)
    zombie_values = batch_values("zombie", [0], 5)
    zombie.begin_transaction()
    send(zombie, topic, zombie_values)

    fresh = txn_producer(bootstrap, tid)  # fences `zombie`, aborts its transaction (marker at 5)

    late_errors = []
    zombie.produce(topic, value=b"zombie-late", partition=0,
                   on_delivery=lambda err, msg: late_errors.append(err))
    try:
        zombie.flush(CLIENT_TIMEOUT)
    except (KafkaException, SystemError) as raised:
        # The fatal fencing error is raised from the poll that runs the delivery report
        # (confluent-kafka wraps it in a SystemError when it is set during the callback).
        cause = raised if isinstance(raised, KafkaException) else raised.__cause__ or raised.__context__
        late_errors.append(cause.args[0] if isinstance(cause, KafkaException) else raised)
    assert late_errors, "no delivery report for the fenced producer's record"
    assert late_errors[0] is not None, "a fenced producer's record was accepted"
    print(f"fenced producer's record: {late_errors[0]!r}")
    with pytest.raises(KafkaException) as info:
        zombie.commit_transaction(CLIENT_TIMEOUT)
    err = info.value.args[0]
    print(f"zombie commit: {err!r}")
    assert err.code() in FENCED_CODES and err.fatal(), err

    fresh_values = batch_values("fresh", [0], 5)
    fresh.begin_transaction()
    send(fresh, topic, fresh_values)
    fresh.commit_transaction(CLIENT_TIMEOUT)
    ends = {0: 12}  # 5 zombie + abort marker + 5 fresh + commit marker
    wait_settled(bootstrap, topic, ends)
    got = read_all(bootstrap, topic, ends, committed=True)
    assert got == {0: [(6 + i, v) for i, v in enumerate(fresh_values[0])]}
    got = read_all(bootstrap, topic, ends, committed=False)
    assert values_of(got) == {0: zombie_values[0] + fresh_values[0]}, "the late zombie record was written"

    f = raw_fetch_all(bootstrap, topic, 0, ISOLATION_READ_COMMITTED)
    data = [b for b in f["batches"] if not is_control(b)]
    pids = {b.producer_id for b in data}
    assert len(pids) == 1, f"both instances share the producer id of the transactional id: {pids}"
    (pid,) = pids
    zombie_epochs = {b.producer_epoch for b in data if b.base_offset < 5}
    fresh_epochs = {b.producer_epoch for b in data if b.base_offset > 5}
    assert max(zombie_epochs) < min(fresh_epochs), (zombie_epochs, fresh_epochs)
    marks = markers(f["batches"])
    assert [(o, t) for (o, t, _) in marks] == [(5, CONTROL_ABORT), (11, CONTROL_COMMIT)]
    abort_epoch = [b.producer_epoch for b in f["batches"] if b.base_offset == 5][0]
    assert abort_epoch > max(zombie_epochs), "the fencing abort marker carries the bumped epoch"
    assert f["aborted"] == {(pid, 0)}


# ---- 5. consume-transform-produce, exactly once, across kill -9 --------------------------------

class EosApp:
    """A consume-transform-produce application as the librdkafka docs describe it: a group
    consumer (read_committed, no auto commit) and a transactional producer; each batch is one
    transaction carrying the output records and the input offsets. On an abortable error it
    aborts, on a fatal one it makes a new producer with the same transactional.id; either way it
    seeks the consumer back to the group's committed offsets."""

    def __init__(self, bootstrap: str, src: str, dst: str, group: str, tid: str, partitions: int) -> None:
        self.bootstrap, self.src, self.dst, self.group, self.tid = bootstrap, src, dst, group, tid
        self.partitions = partitions
        self.committed = {p: 0 for p in range(partitions)}  # input offsets our commits covered
        self.log: List[str] = []
        self.commits = self.aborts = self.new_producers = self.rewinds = 0
        self.t0 = time.monotonic()
        self.producer = self._new_producer()
        self.consumer = self._new_consumer()

    def note(self, what: str) -> None:
        line = f"{time.monotonic() - self.t0:7.2f}s {what}"
        self.log.append(line)
        print(line)

    def _new_consumer(self) -> Consumer:
        c = Consumer(base_conf(self.bootstrap, **{
            **NO_REBOOTSTRAP,
            "group.id": self.group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
            "fetch.wait.max.ms": 100,
            "reconnect.backoff.max.ms": 500,
            "retry.backoff.ms": 100,
        }))
        c.subscribe([self.src])
        return c

    def _new_producer(self) -> Producer:
        self.new_producers += 1
        p = Producer(txn_conf(self.bootstrap, self.tid, **NO_REBOOTSTRAP,
                              **{"transaction.timeout.ms": 10000}))
        deadline = time.monotonic() + 60
        while True:
            try:
                p.init_transactions(15)
                return p
            except KafkaException as e:
                err = e.args[0]
                self.note(f"init_transactions: {err!r}")
                # Retriable (broker restarting, coordinator loading): call again on the same
                # instance, as librdkafka documents. Anything else is a failure of the test.
                if not err.retriable() or err.fatal() or time.monotonic() > deadline:
                    raise

    def _retrying(self, fn, what: str):
        deadline = time.monotonic() + 45
        while True:
            try:
                return fn()
            except KafkaException as e:
                err = e.args[0]
                if err.retriable() and not err.fatal() and not err.txn_requires_abort() \
                        and time.monotonic() < deadline:
                    self.note(f"{what}: {err!r}, retrying")
                    continue
                raise

    def step(self) -> bool:
        """One batch: consume, and if anything came, one transaction. True if it committed."""
        batch = []
        for m in self.consumer.consume(num_messages=50, timeout=0.5):
            err = m.error()
            if err is not None:
                self.note(f"consume: {err!r}")
                if err.fatal():
                    self.consumer.close()
                    self.consumer = self._new_consumer()
                    return False
                continue
            batch.append(m)
        if not batch:
            return False
        expect = {}
        for m in batch:
            expect[m.partition()] = max(expect.get(m.partition(), -1), m.offset() + 1)
        try:
            self.producer.begin_transaction()
            for m in batch:
                while True:
                    try:
                        self.producer.produce(self.dst, key=m.key(), value=b"out-" + m.value(),
                                              partition=m.partition())
                        break
                    except BufferError:
                        self.producer.poll(0.05)
            positions = self.consumer.position([TopicPartition(self.src, p) for p in sorted(expect)])
            assert {tp.partition: tp.offset for tp in positions} == expect, \
                f"consumer positions {positions} after the batch, want {expect}"
            self._retrying(lambda: self.producer.send_offsets_to_transaction(
                positions, self.consumer.consumer_group_metadata(), 15), "send_offsets_to_transaction")
            self._retrying(lambda: self.producer.commit_transaction(15), "commit_transaction")
        except KafkaException as e:
            self._recover(e.args[0])
            return False
        self.commits += 1
        self.committed.update(expect)
        return True

    def _recover(self, err: KafkaError) -> None:
        self.note(f"transaction failed: {err!r} fatal={err.fatal()} abortable={err.txn_requires_abort()}")
        replace = err.fatal()
        if not replace:
            try:
                self._retrying(lambda: self.producer.abort_transaction(15), "abort_transaction")
                self.aborts += 1
            except KafkaException as e2:
                self.note(f"abort_transaction: {e2.args[0]!r}; replacing the producer")
                replace = True
        if replace:
            old, self.producer = self.producer, None
            try:
                old.purge(in_queue=True, in_flight=True, blocking=False)
            except KafkaException:
                pass
            del old
            self.producer = self._new_producer()
        self._rewind()

    def _rewind(self) -> None:
        """Seek every assigned partition back to the group's committed offset."""
        self.rewinds += 1
        deadline = time.monotonic() + 45
        while True:
            assignment = self.consumer.assignment()
            if not assignment:
                return  # a new assignment starts from the committed offsets anyway
            try:
                committed = self.consumer.committed(assignment, timeout=10)
                failed = [tp for tp in committed if tp.error is not None]
                if failed:
                    raise KafkaException(failed[0].error)
                for tp in committed:
                    offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                    self.consumer.seek(TopicPartition(self.src, tp.partition, offset))
                    self.committed[tp.partition] = max(tp.offset, 0)
                self.note(f"rewound to {({tp.partition: tp.offset for tp in committed})}")
                return
            except KafkaException as e:
                self.note(f"rewind: {e.args[0]!r}")
                if time.monotonic() > deadline:
                    raise

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception as e:  # noqa: BLE001 - reported, not fatal for the verdict
            self.note(f"consumer close: {e!r}")


# With its only broker down, librdkafka (2.10+) re-bootstraps and decommissions the broker it
# knew; send_offsets_to_transaction() can then wait forever for a group coordinator it no
# longer tracks (librdkafka issues #5511 and #5456, independent of the broker). A one-node
# application keeps its broker instead.
NO_REBOOTSTRAP = {"metadata.recovery.strategy": "none"}

_lasting_queue: "queue.Queue" = queue.Queue()
_lasting_thread: Optional[threading.Thread] = None


def _on_lasting_thread(work):
    """Runs `work` on one daemon thread that lives as long as the test process and returns its
    result (or raises its exception)."""
    global _lasting_thread
    if _lasting_thread is None:
        def serve():
            while True:
                job, reply = _lasting_queue.get()
                try:
                    reply.put((True, job()))
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    reply.put((False, e))
        _lasting_thread = threading.Thread(target=serve, daemon=True, name="broker-starter")
        _lasting_thread.start()
    reply: "queue.Queue" = queue.Queue()
    _lasting_queue.put((work, reply))
    ok, value = reply.get()
    if not ok:
        raise value
    return value


@pytest.mark.timeout(120)
def test_consume_transform_produce_exactly_once_across_kill9(broker_factory):
    """2,000 input records through a transactional consume-transform-produce loop while the
    broker is killed (kill -9) and restarted three times at random points of random batches.
    The output read with read_committed holds every transformed input exactly once, in input
    order per partition, and the group's committed offsets are the input's end."""
    seed = int(os.environ.get("RIPTIDE_TXN_SEED", random.randrange(1 << 30)))
    print(f"seed {seed} (rerun with RIPTIDE_TXN_SEED={seed})")
    rng = random.Random(seed)
    broker = broker_factory(*TXN_ARGS, *GROUP_ARGS)
    bootstrap = broker.bootstrap
    partitions, total = 2, 2000
    src, dst = unique_topic("eos-in"), unique_topic("eos-out")
    group, tid = unique_topic("eos-group"), unique_topic("eos-tid")
    create_topic(bootstrap, src, partitions)
    create_topic(bootstrap, dst, partitions)
    inputs = [b"in-%05d" % i for i in range(total)]
    produce(bootstrap, src, [{"value": v, "key": v, "partition": i % partitions} for i, v in enumerate(inputs)])
    ends = {p: total // partitions for p in range(partitions)}

    kill_after = sorted(rng.sample(range(2, 25), 3))  # after this many commits
    delays = [rng.uniform(0.0, 0.03) for _ in kill_after]  # into the next batch
    print(f"kill -9 after commits {kill_after}, {[round(d * 1000, 1) for d in delays]} ms into the batch")

    kill_errors: List[BaseException] = []

    def kill_and_restart(delay: float) -> None:
        try:
            time.sleep(delay)  # places the kill inside the batch; not a synchronisation
            broker.kill9()
            # Started from a thread that outlives the test: the broker dies with the thread
            # that started it (PR_SET_PDEATHSIG), and this one ends right away.
            _on_lasting_thread(broker.start)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            kill_errors.append(e)

    app = EosApp(bootstrap, src, dst, group, tid, partitions)
    killer: Optional[threading.Thread] = None
    kills = 0
    deadline = time.monotonic() + 95
    try:
        while app.committed != ends:
            assert not kill_errors, f"restart failed: {kill_errors[0]!r}"
            assert time.monotonic() < deadline, (
                f"no exactly-once run within 95 s: committed {app.committed} of {ends}, kills {kills}, "
                f"commits {app.commits}; last events:\n" + "\n".join(app.log[-25:]))
            # At least 40 commits are needed (50 records a batch at most), so every kill point
            # (after 2..24 commits) is reached; one kill at a time.
            if kills < len(kill_after) and app.commits >= kill_after[kills] and \
                    (killer is None or not killer.is_alive()):
                app.note(f"kill -9 #{kills + 1} in {delays[kills] * 1000:.1f} ms")
                killer = threading.Thread(target=kill_and_restart, args=(delays[kills],), daemon=True)
                killer.start()
                kills += 1
            app.step()
    finally:
        if killer is not None:
            killer.join(60)
        app.close()
    assert not kill_errors, f"restart failed: {kill_errors[0]!r}"
    assert broker.alive()
    print(f"commits {app.commits}, aborts {app.aborts}, producers {app.new_producers}, "
          f"rewinds {app.rewinds}, kills {kills}")
    assert kills == 3, f"only {kills} kills happened (the input ran out after {app.commits} commits)"

    def output_stable():
        end, stable = hw(bootstrap, dst, range(partitions)), lso(bootstrap, dst, range(partitions))
        return end if end == stable else None

    out_end = wait_until(output_stable, 30, "no open transaction left on the output (LSO = high watermark)")
    got = read_all(bootstrap, dst, out_end, committed=True, timeout=60)
    out = values_of(got)
    counts = collections.Counter(v for vs in out.values() for v in vs)
    want = [b"out-" + v for v in inputs]
    duplicates = sorted(v for v, n in counts.items() if n > 1)
    missing = sorted(set(want) - set(counts))
    extra = sorted(set(counts) - set(want))
    assert not duplicates and not missing and not extra, (
        f"seed {seed}: {len(duplicates)} duplicated (e.g. {duplicates[:5]}), {len(missing)} missing "
        f"(e.g. {missing[:5]}), {len(extra)} unexpected (e.g. {extra[:5]})")
    for p in range(partitions):
        assert out[p] == [b"out-" + v for i, v in enumerate(inputs) if i % partitions == p], \
            f"output partition {p} is not in input order"

    probe = Consumer(base_conf(bootstrap, **{"group.id": group, "enable.auto.commit": False,
                                             "isolation.level": "read_committed"}))
    try:
        committed = probe.committed([TopicPartition(src, p) for p in range(partitions)], timeout=15)
    finally:
        probe.close()
    assert {tp.partition: tp.offset for tp in committed} == ends


# ---- 6. kafka-python ------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_kafka_python_commit_and_abort(broker_factory):
    """kafka-python's transactional producer: a committed, an aborted and another committed
    transaction; its read_committed consumer returns only the committed records, reaches the
    high watermark (past the markers), and end_offsets (LSO) equals the high watermark."""
    from kafka import KafkaConsumer, KafkaProducer
    from kafka import TopicPartition as KTP

    broker = broker_factory(*TXN_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-kpy")
    create_topic(bootstrap, topic, 2)
    producer = KafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique_topic("tid-kpy"),
                             linger_ms=5, max_block_ms=20000, request_timeout_ms=15000,
                             client_id="riptide-it-kpy")
    try:
        producer.init_transactions()
        batches = {name: batch_values(name, [0, 1], n) for name, n in (("k1", 20), ("k2", 7), ("k3", 3))}
        offsets = {}
        for name, vals in batches.items():
            producer.begin_transaction()
            futures = [(q, producer.send(topic, value=v, partition=q)) for q, vs in vals.items() for v in vs]
            producer.flush(timeout=CLIENT_TIMEOUT)
            offsets[name] = {q: [f.get(timeout=CLIENT_TIMEOUT).offset for (qq, f) in futures if qq == q]
                             for q in (0, 1)}
            if name == "k2":
                producer.abort_transaction()
            else:
                producer.commit_transaction()
    finally:
        producer.close(timeout=10)
    assert offsets == {"k1": {q: list(range(20)) for q in (0, 1)},
                       "k2": {q: list(range(21, 28)) for q in (0, 1)},
                       "k3": {q: list(range(29, 32)) for q in (0, 1)}}
    ends = {0: 33, 1: 33}
    wait_settled(bootstrap, topic, ends)

    def read(isolation: str) -> dict:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation,
                                 enable_auto_commit=False, auto_offset_reset="earliest",
                                 client_id="riptide-it-kpy", request_timeout_ms=15000)
        tps = [KTP(topic, q) for q in (0, 1)]
        try:
            consumer.assign(tps)
            consumer.seek_to_beginning()
            got = {0: [], 1: []}

            def done():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    got[tp.partition].extend((r.offset, r.value) for r in records)
                return all(consumer.position(tp) >= ends[tp.partition] for tp in tps)

            wait_until(done, 30, f"kafka-python {isolation} consumer at {ends}", interval=0)
            assert {tp.partition: consumer.position(tp) for tp in tps} == ends
            end_offsets = consumer.end_offsets(tps)
            assert {tp.partition: o for tp, o in end_offsets.items()} == ends
            return got
        finally:
            consumer.close()

    committed = read("read_committed")
    assert values_of(committed) == {q: batches["k1"][q] + batches["k3"][q] for q in (0, 1)}
    assert offsets_of(committed) == {q: list(range(20)) + list(range(29, 32)) for q in (0, 1)}
    everything = read("read_uncommitted")
    assert values_of(everything) == {q: batches["k1"][q] + batches["k2"][q] + batches["k3"][q] for q in (0, 1)}


# ---- 7. InitProducerId: timeouts and epochs ------------------------------------------------------

@pytest.mark.timeout(60)
def test_transaction_timeout_above_the_maximum_is_refused(broker):
    """transaction.timeout.ms above transaction.max.timeout.ms (default 900000):
    init_transactions fails with INVALID_TRANSACTION_TIMEOUT."""
    p = Producer(txn_conf(broker.bootstrap, unique_topic("tid-long"), **{"transaction.timeout.ms": 1000000}))
    with pytest.raises(KafkaException) as info:
        p.init_transactions(CLIENT_TIMEOUT)
    err = info.value.args[0]
    assert err.code() == KafkaError.INVALID_TRANSACTION_TIMEOUT, err


@pytest.mark.timeout(60)
def test_init_producer_id_on_the_wire(broker):
    """Raw FindCoordinator (key type 1, v1 and v4) and InitProducerId: the coordinator is this
    broker; timeouts of 0 and of 900001 ms are refused with INVALID_TRANSACTION_TIMEOUT; the
    first InitProducerId of a transactional id gets epoch 0, the next one the same producer id
    with epoch 1; with the producer id and epoch (v4, KIP-360) the epoch is bumped, a retry of
    that call is answered with the same epoch, and a stale epoch or another producer id is
    PRODUCER_FENCED."""
    tid = unique_topic("tid-wire")
    with kw.KafkaConnection(broker.host, broker.port, timeout=15) as conn:
        md = conn.metadata(kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.METADATA, 1, 12), [])
        (me,) = md["brokers"]
        for version in (1, 4):
            c = until_no_coordinator_error(lambda: find_coordinator_raw(conn, tid, 1, version),
                                           f"FindCoordinator v{version} for {tid}")
            assert c["error_code"] == E_NONE, c
            assert (c["node_id"], c["host"], c["port"]) == (me["node_id"], broker.host, broker.port), (c, me)

        for timeout_ms in (0, 900001):
            r = until_no_coordinator_error(lambda: init_producer_id_raw(conn, tid, timeout_ms, version=1),
                                           f"InitProducerId v1 with a {timeout_ms} ms timeout")
            assert r == {"error_code": E_INVALID_TRANSACTION_TIMEOUT, "producer_id": -1, "producer_epoch": -1}, \
                (timeout_ms, r)

        first = until_no_coordinator_error(lambda: init_producer_id_raw(conn, tid, 900000, version=1),
                                           "InitProducerId v1")
        assert first["error_code"] == E_NONE and first["producer_id"] >= 0 and first["producer_epoch"] == 0, first
        pid = first["producer_id"]
        second = until_no_coordinator_error(lambda: init_producer_id_raw(conn, tid, 60000, version=1),
                                            "InitProducerId v1 again")
        assert second == {"error_code": E_NONE, "producer_id": pid, "producer_epoch": 1}, second

        bumped = until_no_coordinator_error(
            lambda: init_producer_id_raw(conn, tid, 60000, version=4, producer_id=pid, producer_epoch=1),
            "InitProducerId v4 with the current epoch")
        assert bumped == {"error_code": E_NONE, "producer_id": pid, "producer_epoch": 2}, bumped
        retry = init_producer_id_raw(conn, tid, 60000, version=4, producer_id=pid, producer_epoch=1)
        assert retry == {"error_code": E_NONE, "producer_id": pid, "producer_epoch": 2}, \
            f"a retried epoch bump is answered with the epoch it gave: {retry}"
        stale = init_producer_id_raw(conn, tid, 60000, version=4, producer_id=pid, producer_epoch=0)
        assert stale["error_code"] == E_PRODUCER_FENCED, stale
        other = init_producer_id_raw(conn, tid, 60000, version=4, producer_id=pid + 1000, producer_epoch=2)
        assert other["error_code"] == E_PRODUCER_FENCED, other

        # An idempotent producer (no transactional id) still gets a fresh id, epoch 0.
        idem = init_producer_id_raw(conn, None, 60000, version=1)
        assert idem["error_code"] == E_NONE and idem["producer_epoch"] == 0 and idem["producer_id"] not in (-1, pid)


# ---- 8. DescribeTransactions / ListTransactions / DescribeProducers ------------------------------

@pytest.mark.timeout(60)
def test_describe_and_list_transactions(broker_factory):
    """kafka-python's admin client (confluent-kafka 2.16.1 has no list/describe_transactions):
    an open transaction is Ongoing with its partitions and timeout, listed (also when filtered by
    state and producer id), and DescribeProducers shows where it started on each partition; after
    the commit it is CompleteCommit without partitions and no longer Ongoing. An unknown
    transactional id is TRANSACTIONAL_ID_NOT_FOUND."""
    import kafka.errors as Errors
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTP

    broker = broker_factory(*TXN_ARGS)
    bootstrap = broker.bootstrap
    topic = unique_topic("txn-admin")
    create_topic(bootstrap, topic, 2)
    produce(bootstrap, topic, [{"value": b"before-%d" % i, "partition": 0} for i in range(4)])
    tid = unique_topic("tid-admin")
    p = txn_producer(bootstrap, tid, **{"transaction.timeout.ms": 45000})
    p.begin_transaction()
    before = int(time.time() * 1000)
    send(p, topic, batch_values("open", [0, 1], 3))

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="riptide-it-admin", request_timeout_ms=15000)
    try:
        desc = admin.describe_transactions([tid])[tid]
        assert desc.state.value == "Ongoing", desc
        assert desc.topic_partitions == {KTP(topic, 0), KTP(topic, 1)}, desc
        assert desc.transaction_timeout_ms == 45000, desc
        assert desc.producer_id >= 0 and desc.producer_epoch >= 0, desc
        assert before - 1000 <= desc.transaction_start_time_ms <= int(time.time() * 1000) + 1000, \
            f"start time {desc.transaction_start_time_ms}, begun at about {before}"

        def listed(**filters):
            return [t for ts in admin.list_transactions(**filters).values() for t in ts if t.transactional_id == tid]

        (row,) = listed()
        assert (row.producer_id, row.state.value) == (desc.producer_id, "Ongoing"), row
        assert len(listed(state_filters=["Ongoing"])) == 1
        assert listed(state_filters=["CompleteCommit"]) == []
        by_pid = [t for ts in admin.list_transactions(producer_id_filters=[desc.producer_id]).values() for t in ts]
        assert [t.transactional_id for t in by_pid] == [tid], by_pid

        producers = admin.describe_producers([KTP(topic, 0), KTP(topic, 1)])
        for q, start in ((0, 4), (1, 0)):
            mine = [s for s in producers[KTP(topic, q)].active_producers if s.producer_id == desc.producer_id]
            assert len(mine) == 1, producers
            assert mine[0].current_transaction_start_offset == start, (q, mine)
            assert mine[0].producer_epoch == desc.producer_epoch, (q, mine)

        p.commit_transaction(CLIENT_TIMEOUT)
        done = wait_until(lambda: (lambda d: d if d.state.value == "CompleteCommit" else None)(
            admin.describe_transactions([tid])[tid]), SETTLE_TIMEOUT, f"{tid} CompleteCommit")
        assert done.topic_partitions == set() and done.producer_id == desc.producer_id, done
        assert listed(state_filters=["Ongoing"]) == []
        wait_settled(bootstrap, topic, {0: 8, 1: 4})
        producers = admin.describe_producers([KTP(topic, 0)])
        mine = [s for s in producers[KTP(topic, 0)].active_producers if s.producer_id == desc.producer_id]
        assert len(mine) == 1 and mine[0].current_transaction_start_offset == -1, mine

        with pytest.raises(Errors.TransactionalIdNotFoundError):
            admin.describe_transactions([unique_topic("tid-unknown")])
    finally:
        admin.close()
