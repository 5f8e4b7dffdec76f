"""Runs the Node.js client scripts in tests/integration/node (KafkaJS, @platformatic/kafka) and
checks what they print. Shared by test_kafkajs.py and test_platformatic.py.

A script prints one JSON line on stdout (its result) and logs on stderr; the checks here hold
the assertions, so both clients are held to the same ones. The transaction checks also read the
log over raw Fetch / ListOffsets (test_transactions.py's helpers): markers, aborted ranges, LSO."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Callable, Optional

import pytest

import kafka_wire as kw
# Raw-protocol transaction helpers (ListOffsets and Fetch with isolation levels, control batches,
# aborted transactions) and the broker flags of the Python transaction tests.
import test_transactions as tt
from helpers import murmur2

NODE_DIR = Path(__file__).resolve().parent / "node"
PARTITIONS = 3
GZIP = 1


def node_binary(package: str, min_version: tuple = (14, 0)) -> str:
    """The `node` to run the scripts with; fails the test when node or the package is missing."""
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not installed (scripts/setup-test-deps installs Debian's nodejs)", pytrace=False)
    if not (NODE_DIR / "node_modules" / package / "package.json").exists():
        pytest.fail(f"{package} is not installed in {NODE_DIR}/node_modules: run scripts/setup-test-deps",
                    pytrace=False)
    out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    version = tuple(int(x) for x in out.lstrip("v").split(".")[:2])
    if version < min_version:
        pytest.fail(f"{package} needs node >= {'.'.join(map(str, min_version))}, found {out}", pytrace=False)
    return node


def run_node(node: str, script: str, scenario: str, bootstrap: str, timeout: float = 240, **args) -> dict:
    """Run `node SCRIPT SCENARIO --bootstrap ... --k v ...`; return its JSON result (asserting ok)."""
    cmd = [node, str(NODE_DIR / script), scenario, "--bootstrap", bootstrap]
    for k, v in args.items():
        cmd += [f"--{k}", str(v)]
    env = dict(os.environ, NODE_ENV="test", KAFKAJS_NO_PARTITIONER_WARNING="1")
    try:
        proc = subprocess.run(cmd, cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:  # run() killed the script
        err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"{script} {scenario} did not finish within {timeout}s\n--- stderr ---\n"
                             f"{err[-4000:]}") from None
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    stderr_tail = proc.stderr[-4000:]
    assert lines, f"{script} {scenario} printed nothing (exit {proc.returncode})\n--- stderr ---\n{stderr_tail}"
    try:
        result = json.loads(lines[-1])
    except ValueError:
        raise AssertionError(f"{script} {scenario}: last stdout line is not JSON: {lines[-1][:500]!r}\n"
                             f"--- stderr ---\n{stderr_tail}") from None
    assert result.get("ok") and proc.returncode == 0, (
        f"{script} {scenario} failed (exit {proc.returncode}): {result.get('error')}\n"
        f"{json.dumps(result.get('detail'), indent=1)[:6000]}\n--- stderr ---\n{stderr_tail}")
    return result


def error_ids(detail) -> set:
    """Every Kafka error id (apiId / type) named anywhere in an error summary."""
    found = set()
    if isinstance(detail, dict):
        for k in ("apiId", "type"):
            if isinstance(detail.get(k), str):
                found.add(detail[k])
        for v in detail.values():
            found |= error_ids(v)
    elif isinstance(detail, list):
        for v in detail:
            found |= error_ids(v)
    return found


# ---- what the scripts produce (mirrors node/common.js) ------------------------------------------

KEYS = 97


def message(i: int, tag: str) -> tuple:
    key = f"key-{i % KEYS}"
    return key, f"{key}|{i // KEYS}|{i}|{tag}"


def java_partition(key: str, partitions: int = PARTITIONS) -> int:
    """Kafka's Java client / KafkaJS DefaultPartitioner: positive murmur2 modulo partitions."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def unsigned_murmur2_partition(key: str, partitions: int = PARTITIONS) -> int:
    """@platformatic/kafka's default partitioner: unsigned murmur2 modulo partitions."""
    return murmur2(key.encode()) % partitions


def high_watermarks(result: dict) -> dict:
    return {int(p): v["high"] for p, v in result["end"].items()}


# ---- checks ----------------------------------------------------------------------------------------

def check_delivery(rows: list, expected: dict, tag: str, partition_of: Optional[Callable] = None,
                   what: str = "consumer") -> None:
    """`rows` ([partition, offset, key, value, ...] in delivery order) hold exactly the offsets
    `expected` ({partition: range}) once each, in offset order per partition, and each value is the
    message its key and sequence name: keys stay on one partition (`partition_of` when given) and
    arrive in sequence order."""
    seen = set()
    dups = []
    last = {}
    key_partition = {}
    key_seq = {}
    for row in rows:
        p, off, key, value = row[:4]
        if (p, off) in seen:
            dups.append((p, off))
        seen.add((p, off))
        assert off > last.get(p, -1), f"{what}: partition {p} went back from offset {last[p]} to {off}"
        last[p] = off
        vkey, seq, i, vtag = value.split("|")
        assert (vkey, vtag) == (key, tag) and message(int(i), tag) == (key, value), f"{what}: bad message {row}"
        if partition_of is not None:
            assert p == partition_of(key), f"{what}: key {key} on partition {p}, want {partition_of(key)}"
        assert key_partition.setdefault(key, p) == p, f"{what}: key {key} on partitions {key_partition[key]} and {p}"
        if key in key_seq:
            assert int(seq) > key_seq[key], f"{what}: key {key} sequence {seq} after {key_seq[key]}"
        key_seq[key] = int(seq)
    assert not dups, f"{what}: {len(dups)} duplicate deliveries, first {dups[:5]}"
    want = {(p, o) for p, r in expected.items() for o in r}
    missing = sorted(want - seen)
    extra = sorted(seen - want)
    assert not missing and not extra, (f"{what}: {len(missing)} missing (first {missing[:5]}), "
                                       f"{len(extra)} unexpected (first {extra[:5]})")


def check_admin_metadata(partitions: list, node_ids: list) -> None:
    assert [p["partition"] for p in partitions] == list(range(PARTITIONS)), partitions
    for p in partitions:
        assert p["leader"] in node_ids, p
        assert p["replicas"] == [p["leader"]] and p["isr"] == [p["leader"]], p


def check_roundtrip(result: dict, count: int, partition_of: Callable, tag: str = "rt") -> dict:
    hw = high_watermarks(result)
    assert sum(hw.values()) == count, f"high watermarks {hw} do not add up to {count}"
    assert all(err == 0 for _p, err, _o in result["acks"]), [a for a in result["acks"] if a[1] != 0][:5]
    assert result["duplicates"] == 0
    assert len(result["consumed"]) == count, f"consumed {len(result['consumed'])} of {count}"
    check_delivery(result["consumed"], {p: range(h) for p, h in hw.items()}, tag, partition_of)
    assert {int(p): o for p, o in result["committed"].items()} == hw, \
        f"committed offsets {result['committed']} != high watermarks {hw}"
    return hw


def check_resume(result: dict, count: int, tag: str = "rs") -> None:
    hw = high_watermarks(result)
    assert sum(hw.values()) == count, hw
    processed = {int(p): o for p, o in result["processed"].items()}
    stop_at = count // 2
    # The first consumer processed stop_at messages from the start of each partition it got to.
    assert result["first_duplicates"] == 0 and len(result["first"]) == stop_at, len(result["first"])
    check_delivery(result["first"], {p: range(o) for p, o in processed.items()}, tag, what="first consumer")
    assert any(0 < o < hw[p] for p, o in processed.items()), \
        f"the first consumer should stop inside a partition: processed {processed}, end {hw}"
    # What it committed is what the group coordinator returns (-1 / absent: nothing committed).
    committed = {int(p): o for p, o in result["committed_first"].items() if o >= 0}
    assert committed == processed, f"committed {result['committed_first']} != processed {processed}"
    # The second consumer of the group starts exactly there, and the earliest offset elsewhere.
    start = {p: processed.get(p, 0) for p in hw}
    got_first = {int(p): o for p, o in result["second_first_offsets"].items()}
    assert got_first == {p: s for p, s in start.items() if s < hw[p]}, \
        f"second consumer started at {got_first}, committed {start}"
    assert result["second_duplicates"] == 0
    check_delivery(result["second"], {p: range(start[p], hw[p]) for p in hw}, tag, what="second consumer")
    assert {int(p): o for p, o in result["committed_second"].items()} == hw, result["committed_second"]
    # Together: every message once.
    values = [r[3] for r in result["first"]] + [r[3] for r in result["second"]]
    assert sorted(values) == sorted(message(i, tag)[1] for i in range(count))


def stored_batches(broker, topic: str, partition: int) -> list:
    """Raw Fetch from offset 0 to the high watermark: the batches as stored (kafka_wire.ParsedBatch)."""
    batches = []
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        version = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.FETCH, 4, 11)
        offset = 0
        for _ in range(10000):
            resp = conn.fetch(version, [(topic, [(partition, offset, 4 * 1024 * 1024)])], max_wait_ms=100)
            (p,) = resp["topics"][0]["partitions"]
            assert p["error_code"] == 0, p
            if offset >= p["high_watermark"]:
                return batches
            got = kw.parse_record_batches(p["records"] or b"")
            assert got, f"empty fetch at offset {offset} below high watermark {p['high_watermark']}"
            batches.extend(got)
            offset = got[-1].base_offset + got[-1].last_offset_delta + 1
    raise AssertionError("fetch loop did not reach the high watermark")


def check_idempotent(result: dict, broker, topic: str, tag: str = "idem") -> dict:
    """Every message once at contiguous offsets; the stored batches carry one producer id per
    producer (two producers: two ids), and per (producer, partition) sequences that start at 0 and
    follow each other without gaps or repeats. Returns {producer index: producer id}."""
    count, extra = result["count"], result["extra"]
    total = count + extra
    hw = high_watermarks(result)
    assert sum(hw.values()) == total, f"high watermarks {hw}: something was written twice or lost"
    assert result["duplicates"] == 0
    check_delivery(result["consumed"], {p: range(h) for p, h in hw.items()}, tag)

    pids = {}
    per_producer = defaultdict(list)  # (producer index, partition) -> batches
    for p in range(PARTITIONS):
        for b in stored_batches(broker, topic, p):
            assert b.crc_ok and b.records is not None, b
            indexes = {int(v.decode().split("|")[2]) for (_o, _t, _k, v, _h) in b.records}
            producer = {0 if i < count else 1 for i in indexes}
            assert len(producer) == 1, f"batch at {p}:{b.base_offset} mixes producers"
            (producer,) = producer
            assert b.producer_id >= 0, f"batch at {p}:{b.base_offset} has no producer id"
            assert pids.setdefault(producer, (b.producer_id, b.producer_epoch)) == (b.producer_id, b.producer_epoch), \
                f"producer {producer} wrote with {(b.producer_id, b.producer_epoch)} and {pids[producer]}"
            per_producer[(producer, p)].append(b)
    assert set(pids) == {0, 1}, pids
    assert pids[0][0] != pids[1][0], f"two producers were given the same producer id: {pids}"
    for (producer, p), batches in per_producer.items():
        seq = 0
        for b in batches:
            assert b.base_sequence == seq, (f"producer {producer} partition {p}: batch at offset "
                                            f"{b.base_offset} has base sequence {b.base_sequence}, want {seq}")
            seq += b.record_count
    return {k: v[0] for k, v in pids.items()}


# ---- transactions (the `txn` scenarios) ------------------------------------------------------------

# Brokers for the `txn` scenarios: small internal topics (quick to create), no initial rebalance
# delay for the groups.
TXN_BROKER_ARGS = (*tt.TXN_ARGS, *tt.GROUP_ARGS)

# Mirrors TXN_PHASES in node/common.js: [tag, records per partition, outcome], in this order.
TXN_PHASES = (("c1", 100, "commit"), ("a2", 30, "abort"), ("c3", 10, "commit"))


def txn_value(tag: str, partition: int, i: int) -> str:
    return f"{tag}|p{partition}|{i}"


def _rows_by_partition(rows: list) -> dict:
    """[partition, offset, value, ...] rows -> {partition: [(offset, value)]} in delivery order."""
    out = defaultdict(list)
    for row in rows:
        out[row[0]].append((row[1], row[2]))
    return dict(out)


def _stored(broker, topic: str, partition: int) -> dict:
    """The partition as stored, read with raw read_committed Fetch."""
    f = tt.raw_fetch_all(broker.bootstrap, topic, partition, tt.ISOLATION_READ_COMMITTED)
    data = [b for b in f["batches"] if not tt.is_control(b)]
    return {"fetch": f, "markers": tt.markers(f["batches"]),
            "data_offsets": tt.data_offsets(f["batches"]),
            "transactional": all(tt.is_transactional(b) for b in data),
            "pids": {b.producer_id for b in data}}


def check_txn_commit_abort_commit(result: dict, broker, topic: str) -> int:
    """The first part of a `txn` scenario: three transactions over every partition (TXN_PHASES).
    Each send was acknowledged at the offsets the phases leave (records, then one marker per
    transaction); the LSO reached the end; the read_committed consumer got exactly the committed
    records (none of the aborted ones) at their offsets and moved past the markers; the
    read_uncommitted one got every record. On the log: one producer id, markers commit / abort /
    commit, the aborted range reported by read_committed Fetch. Returns the producer id."""
    r = result["basic"]
    parts = range(PARTITIONS)
    assert [(ph["tag"], ph["count"], ph["outcome"]) for ph in r["phases"]] == list(TXN_PHASES), r["phases"]
    first = {}  # tag -> offset of its first record (on every partition)
    start = 0
    for (tag, n, _outcome), ph in zip(TXN_PHASES, r["phases"]):
        assert all(err == 0 for _p, err, _o in ph["acks"]), f"{tag}: {ph['acks']}"
        got = {p: sorted(o for (pp, _e, o) in ph["acks"] if pp == p) for p in parts}
        assert got == {p: [start, start + n // 2] for p in parts}, f"{tag}: base offsets {got}, want {start}, {start + n // 2}"
        first[tag] = start
        start += n + 1
    end = start
    assert {int(p): o for p, o in r["lso"].items()} == {p: end for p in parts}, r["lso"]

    def expected(outcomes: set) -> dict:
        return {p: [(first[tag] + i, txn_value(tag, p, i)) for tag, n, outcome in TXN_PHASES if outcome in outcomes
                    for i in range(n)] for p in parts}

    committed = expected({"commit"})
    everything = expected({"commit", "abort"})
    aborted_values = {v for p in parts for _o, v in everything[p]} - {v for p in parts for _o, v in committed[p]}
    rc, ru = r["read_committed"], r["read_uncommitted"]
    rc_values = {row[2] for row in rc["rows"]}
    assert not rc_values & aborted_values, \
        f"read_committed got {len(rc_values & aborted_values)} aborted records, e.g. {sorted(rc_values & aborted_values)[:3]}"
    assert rc["duplicates"] == 0 and len(rc["rows"]) == sum(len(v) for v in committed.values()), \
        f"read_committed: {len(rc['rows'])} rows, {rc['duplicates']} duplicates"
    assert _rows_by_partition(rc["rows"]) == committed, "read_committed: records or offsets differ"
    assert ru["duplicates"] == 0 and len(ru["rows"]) == sum(len(v) for v in everything.values()), \
        f"read_uncommitted: {len(ru['rows'])} rows, {ru['duplicates']} duplicates"
    assert _rows_by_partition(ru["rows"]) == everything, "read_uncommitted: records or offsets differ"
    for which in (rc, ru):
        assert {int(p): o for p, o in which["positions"].items()} == {p: end for p in parts}, \
            f"consumer positions {which['positions']}, want {end} (past the last commit marker)"

    assert tt.hw(broker.bootstrap, topic, parts) == {p: end for p in parts}
    pids = set()
    for p in parts:
        s = _stored(broker, topic, p)
        assert (s["fetch"]["hw"], s["fetch"]["lso"]) == (end, end), s["fetch"]
        assert s["transactional"], f"partition {p}: data batches without the transactional bit"
        assert len(s["pids"]) == 1, f"partition {p}: producer ids {s['pids']}"
        (pid,) = s["pids"]
        pids.add(pid)
        kinds = {"commit": tt.CONTROL_COMMIT, "abort": tt.CONTROL_ABORT}
        assert s["markers"] == [(first[tag] + n, kinds[outcome], pid) for tag, n, outcome in TXN_PHASES], \
            f"partition {p} markers {s['markers']}"
        assert s["data_offsets"] == [o for o, _v in everything[p]]
        assert s["fetch"]["aborted"] == {(pid, first[tag]) for tag, _n, outcome in TXN_PHASES if outcome == "abort"}, \
            f"partition {p}: aborted transactions {s['fetch']['aborted']}"
    assert len(pids) == 1 and min(pids) >= 0, f"one transactional producer wrote everything: {pids}"
    (pid,) = pids
    for which in (rc, ru):
        for row in which["rows"]:
            if len(row) >= 5:  # the client reported each record's batch: producer id, transactional bit
                assert (row[3], row[4]) == (pid, True), f"record {row}: want producer {pid}, transactional"
    return pid


def check_txn_consume_transform_produce(result: dict, broker, topic: str, partition_of: Callable) -> dict:
    """The second part of a `txn` scenario: `count` keyed records on `<topic>-in` went through
    transactions (output records + sendOffsets + commit). The transactions cover every input
    offset once, in order; the group's committed offsets are the input's end; the output read
    with read_committed holds each transformed record once, in input order per partition, and the
    consumer moved past the last marker; on the log, one commit marker per transaction and
    partition and nothing aborted. Returns the number of transactions per output partition."""
    r = result["ctp"]
    count = r["count"]
    parts = range(PARTITIONS)
    src, dst = f"{topic}-in", f"{topic}-out"
    inp = {int(p): o for p, o in r["input_end"].items()}
    assert sum(inp.values()) == count and set(inp) == set(parts), inp
    covered = {p: 0 for p in parts}
    per_partition = {p: 0 for p in parts}  # transactions that wrote to the partition
    for t in r["txns"]:
        assert t["ranges"], t
        for p, start, nxt in t["ranges"]:
            assert start == covered[p] and nxt > start, \
                f"transaction {t} does not continue partition {p} at {covered[p]}"
            covered[p] = nxt
            per_partition[p] += 1
        assert t["count"] == sum(n - s for _p, s, n in t["ranges"]), t
        assert all(err == 0 for _p, err, _o in t.get("out", [])), t
    assert covered == inp, f"the transactions cover {covered}, the input ends at {inp}"
    assert len(r["txns"]) > PARTITIONS, f"only {len(r['txns'])} transactions: the input should take several"
    assert {int(p): o for p, o in r["committed"].items()} == inp, \
        f"group offsets {r['committed']} != input end {inp}"

    out_end = {p: inp[p] + per_partition[p] for p in parts}
    assert {int(p): o for p, o in r["output_lso"].items()} == out_end, (r["output_lso"], out_end)
    inputs = [message(i, "in")[1] for i in range(count)]
    want = {p: [f"out|{v}" for v in inputs if partition_of(v.split("|")[0]) == p] for p in parts}
    out = r["output"]
    got = {p: [v for _o, v in recs] for p, recs in _rows_by_partition(out["rows"]).items()}
    values = [row[2] for row in out["rows"]]
    dups = sorted(v for v in set(values) if values.count(v) > 1)
    assert not dups and out["duplicates"] == 0, f"output: {len(dups)} values more than once, e.g. {dups[:3]}"
    assert sorted(values) == sorted(f"out|{v}" for v in inputs), \
        f"output: {len(values)} records, want each of the {count} transformed inputs once"
    assert {p: got.get(p, []) for p in parts} == want, "output is not in input order per partition"
    assert {int(p): o for p, o in out["positions"].items()} == out_end, \
        f"output consumer positions {out['positions']}, want {out_end}"

    assert tt.hw(broker.bootstrap, dst, parts) == out_end
    for p in parts:
        s = _stored(broker, dst, p)
        assert (s["fetch"]["hw"], s["fetch"]["lso"]) == (out_end[p], out_end[p]), s["fetch"]
        assert s["transactional"] and len(s["pids"]) == 1, f"output partition {p}: producer ids {s['pids']}"
        assert [kind for _o, kind, _pid in s["markers"]] == [tt.CONTROL_COMMIT] * per_partition[p], \
            f"output partition {p}: markers {s['markers']}, want {per_partition[p]} commits"
        assert not s["fetch"]["aborted"], s["fetch"]["aborted"]
        assert len(s["data_offsets"]) == inp[p]
    # The input was written without transactions: its LSO is its high watermark.
    assert tt.lso(broker.bootstrap, src, parts) == inp
    return per_partition
