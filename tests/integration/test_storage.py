"""Storage engine behaviour seen by clients: retention by size and time, DeleteRecords (log
start offset, persisted), offsets_for_times and max timestamp through the time index, log
compaction, and disk faults (disk full, deleted data directory).
"""

import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import OffsetSpec

from helpers import (admin_client, base_conf, consume_partitions, consumer, create_topic,
                     produce, unique_topic, wait_until, watermarks)

FAST_MAINTENANCE = ("--retention-check-interval-ms", "200", "--compaction-interval-ms", "200",
                    "--recovery-checkpoint-interval-ms", "200", "--storage-retry-interval-ms",
                    "200")


def _error_code(future):
    """The Kafka error code a DeleteRecords future failed with (None if it succeeded)."""
    try:
        result = future.result(30)
    except KafkaException as error:
        return error.args[0].code()
    # Newer clients report per-partition errors on the result.
    error = getattr(result, "error", None)
    return error.code() if error else None


def _low_watermark(bootstrap, topic, partition=0):
    return watermarks(bootstrap, topic, partition)[0]


@pytest.mark.timeout(120)
def test_retention_bytes_deletes_oldest_segments(broker_factory):
    broker = broker_factory(*FAST_MAINTENANCE)
    topic = unique_topic("ret-bytes")
    create_topic(broker.bootstrap, topic, 1, config={
        "segment.bytes": "65536", "retention.bytes": "300000", "retention.ms": "-1"})
    produce(broker.bootstrap, topic, [{"value": b"%06d" % i + b"v" * 1000} for i in range(3000)],
            conf={"batch.size": 16384})
    def settled():
        low = _low_watermark(broker.bootstrap, topic)
        time.sleep(0.5)  # two retention passes apart
        return low if low > 0 and _low_watermark(broker.bootstrap, topic) == low else None

    low = wait_until(settled, 30, "retention to delete down to retention.bytes")
    # What is left is at least retention.bytes, and not much more (one segment plus a batch).
    remaining_bytes = (3000 - low) * 1006
    assert 300000 <= remaining_bytes < 300000 + 65536 + 2 * 16384, remaining_bytes
    got = consume_partitions(broker.bootstrap, topic, [0], timeout=60)[0]
    assert [m.offset for m in got] == list(range(low, 3000))
    # Deleted segments are gone from disk.
    sizes = sum(p.stat().st_size for p in broker.data_dir.rglob(f"{topic}-0/*.log"))
    assert sizes < 3000 * 1070


@pytest.mark.timeout(120)
def test_retention_ms_deletes_everything_old_even_the_active_segment(broker_factory):
    broker = broker_factory(*FAST_MAINTENANCE)
    topic = unique_topic("ret-ms")
    create_topic(broker.bootstrap, topic, 1, config={"retention.ms": "60000"})
    old = int(time.time() * 1000) - 3_600_000
    produce(broker.bootstrap, topic, [{"value": b"old%d" % i, "timestamp": old}
                                      for i in range(500)])
    # An hour old with a minute of retention: the active segment rolls and goes too.
    wait_until(lambda: _low_watermark(broker.bootstrap, topic) == 500, 20,
               "time retention to delete every record")
    assert watermarks(broker.bootstrap, topic, 0) == (500, 500)
    # New records continue at the same offsets, and survive a restart with the log start.
    reports = produce(broker.bootstrap, topic, [{"value": b"new%d" % i} for i in range(10)])
    assert sorted(r.offset for r in reports) == list(range(500, 510))
    broker.restart()
    assert watermarks(broker.bootstrap, topic, 0) == (500, 510)


@pytest.mark.timeout(120)
def test_delete_records_moves_log_start_and_persists(broker_factory):
    broker = broker_factory(*FAST_MAINTENANCE)
    topic = unique_topic("delrec")
    create_topic(broker.bootstrap, topic, 2, config={"segment.bytes": "65536"})
    produce(broker.bootstrap, topic, [{"value": b"x" * 500, "partition": i % 2}
                                      for i in range(2000)], conf={"batch.size": 16384})
    admin = admin_client(broker.bootstrap)
    futures = admin.delete_records([TopicPartition(topic, 0, 700),
                                    TopicPartition(topic, 1, -1)])  # -1: high watermark
    results = {tp.partition: f.result(30) for tp, f in futures.items()}
    assert results[0].low_watermark == 700
    assert results[1].low_watermark == 1000
    assert watermarks(broker.bootstrap, topic, 0) == (700, 1000)
    # Beyond the high watermark: OFFSET_OUT_OF_RANGE.
    futures = admin.delete_records([TopicPartition(topic, 0, 5000)])
    assert _error_code(list(futures.values())[0]) == KafkaError.OFFSET_OUT_OF_RANGE
    # Reading from the start now starts at 700; the log start survives a crash.
    got = consume_partitions(broker.bootstrap, topic, [0], timeout=60)[0]
    assert got[0].offset == 700 and len(got) == 300
    broker.restart(hard=True)
    assert watermarks(broker.bootstrap, topic, 0) == (700, 1000)
    assert watermarks(broker.bootstrap, topic, 1) == (1000, 1000)
    # Whole segments below the log start were deleted.
    first = min(int(p.stem) for p in broker.data_dir.glob(f"{topic}-0/*.log"))
    assert 0 < first <= 700


@pytest.mark.timeout(120)
def test_offsets_for_times_and_max_timestamp_use_the_time_index(broker_factory):
    broker = broker_factory()
    topic = unique_topic("times")
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": "65536"})
    base = 1_700_000_000_000
    # Timestamps rise 10 ms per record, with one far-future record in the middle.
    messages = [{"value": b"v" * 300, "timestamp": base + 10 * i} for i in range(3000)]
    messages[1234]["timestamp"] = base + 10_000_000
    produce(broker.bootstrap, topic, messages, conf={"linger.ms": 20, "batch.size": 16384})
    c = consumer(broker.bootstrap)
    try:
        for i in [0, 1, 17, 999, 1233, 1234, 1235, 2500, 2999]:
            [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 10 * i)], timeout=10)
            # The first record (by offset) at or after the timestamp: the far-future one once
            # the timestamp passes its position.
            assert tp.offset == min(i, 1234), (i, tp.offset)
        # Between two records: the next one.
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 10 * 500 + 3)], timeout=10)
        assert tp.offset == 501
        # Past everything except the far-future record.
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 10 * 3000)], timeout=10)
        assert tp.offset == 1234
        [tp] = c.offsets_for_times([TopicPartition(topic, 0, base + 20_000_000)], timeout=10)
        assert tp.offset == -1
    finally:
        c.close()
    admin = admin_client(broker.bootstrap)
    futures = admin.list_offsets({TopicPartition(topic, 0): OffsetSpec.max_timestamp()})
    info = list(futures.values())[0].result(30)
    assert info.offset == 1234 and info.timestamp == base + 10_000_000


@pytest.mark.timeout(180)
def test_compaction_keeps_latest_value_per_key(broker_factory):
    broker = broker_factory(*FAST_MAINTENANCE)
    topic = unique_topic("compact")
    create_topic(broker.bootstrap, topic, 1, config={
        "cleanup.policy": "compact", "segment.bytes": "65536", "min.compaction.lag.ms": "0",
        "delete.retention.ms": "0"})
    latest = {}
    messages = []
    for round_no in range(40):
        for k in range(50):
            key = b"key-%03d" % k
            tombstone = round_no == 39 and k % 5 == 0
            value = None if tombstone else b"%03d-" % round_no + b"v" * 400
            messages.append({"key": key, "value": value})
    reports = produce(broker.bootstrap, topic, messages, conf={"batch.size": 16384})
    for r in sorted(reports, key=lambda r: r.offset):
        latest[r.key] = (r.offset, r.value)
    # A few more records so the keyed data lies in sealed segments.
    produce(broker.bootstrap, topic, [{"key": b"filler-%d" % i, "value": b"f" * 400}
                                      for i in range(300)], conf={"batch.size": 16384})
    end = watermarks(broker.bootstrap, topic, 0)[1]

    live = len([v for v in latest.values() if v[1] is not None])

    def compacted():
        keyed = [m for m in _read_all(broker.bootstrap, topic, end) if m.key().startswith(b"key-")]
        return keyed if len(keyed) == live else None

    keyed = wait_until(compacted, 60, "compaction to keep one record per key", interval=0.5)
    want = sorted((off, key, val) for key, (off, val) in latest.items() if val is not None)
    assert sorted((m.offset(), m.key(), m.value()) for m in keyed) == want
    # Offsets preserved and increasing; the end did not move.
    assert [m.offset() for m in keyed] == sorted(m.offset() for m in keyed)
    assert watermarks(broker.bootstrap, topic, 0)[1] == end
    # DeleteRecords is refused on a compact-only topic (POLICY_VIOLATION).
    admin = admin_client(broker.bootstrap)  # keep it alive until the future resolves
    futures = admin.delete_records([TopicPartition(topic, 0, 10)])
    assert _error_code(list(futures.values())[0]) == KafkaError.POLICY_VIOLATION
    # Survives a crash and restart.
    broker.restart(hard=True)
    msgs = _read_all(broker.bootstrap, topic, end)
    assert sorted((m.offset(), m.key(), m.value()) for m in msgs
                  if m.key().startswith(b"key-")) == want


def _read_all(bootstrap, topic, end, timeout=30.0):
    """Every record of partition 0 from offset 0 until the one before `end` (offsets may have
    gaps after compaction)."""
    c = consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        msgs = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs.extend(m for m in c.consume(num_messages=10000, timeout=0.5) if not m.error())
            if msgs and msgs[-1].offset() >= end - 1:
                break
        return msgs
    finally:
        c.close()


def _can_loop_mount():
    return os.geteuid() == 0 and shutil.which("mkfs.ext4") and shutil.which("mount")


@pytest.fixture
def small_disk(tmp_path_factory):
    """A 96 MiB ext4 file system on a loop device (root only)."""
    if not _can_loop_mount():
        pytest.skip("needs root with mkfs.ext4 and loop devices")
    root = Path(__file__).resolve().parents[2] / "target" / "it-loop" / uuid.uuid4().hex[:8]
    root.mkdir(parents=True)
    image = root / "disk.img"
    mount = root / "mnt"
    mount.mkdir()
    subprocess.run(["truncate", "-s", "96M", str(image)], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    result = subprocess.run(["mount", "-o", "loop", str(image), str(mount)], capture_output=True)
    if result.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"cannot loop-mount: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(root, ignore_errors=True)


def _fill(path: Path, leave_bytes: int) -> Path:
    """Creates a filler file that leaves about `leave_bytes` free."""
    filler = path / "filler"
    free = shutil.disk_usage(path).free
    with open(filler, "wb") as f:
        f.truncate(0)
    subprocess.run(["fallocate", "-l", str(max(free - leave_bytes, 4096)), str(filler)], check=True)
    return filler


@pytest.mark.timeout(180)
def test_disk_full_answers_storage_error_and_recovers_when_space_returns(broker_factory,
                                                                         small_disk):
    broker = broker_factory(*FAST_MAINTENANCE, name="full", start=False)
    broker.data_dir = small_disk / "data"
    broker.start()
    topic = unique_topic("full")
    create_topic(broker.bootstrap, topic, 1, config={"segment.bytes": "8388608"})
    filler = _fill(small_disk, 6 * 1024 * 1024)
    acked, failed = {}, []

    def on_delivery(err, msg):
        if err is None:
            acked[msg.offset()] = msg.value()
        else:
            failed.append(err)

    p = Producer(base_conf(broker.bootstrap, **{
        "acks": "all", "linger.ms": 5, "retries": 0, "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1, "message.timeout.ms": 20000}))
    seq = 0
    deadline = time.monotonic() + 60
    while not failed:
        assert time.monotonic() < deadline, "the disk never filled up"
        for _ in range(100):
            try:
                p.produce(topic, value=b"%08d-" % seq + b"z" * 4000, partition=0,
                          on_delivery=on_delivery)
                seq += 1
            except BufferError:
                break
        p.poll(0.01)
    p.flush(30)
    assert any("KAFKA_STORAGE_ERROR" in str(e) or "storage" in str(e).lower() for e in failed), \
        failed[:3]
    # The broker keeps serving: metadata and reads of what was acknowledged.
    broker.ensure_alive()
    got = consume_partitions(broker.bootstrap, topic, [0], timeout=60)[0]
    stored = {m.offset: m.value for m in got}
    assert all(stored.get(o) == v for o, v in acked.items()), "acknowledged data lost"
    # Space returns: produce works again without a restart, at the next offset.
    filler.unlink()
    end = watermarks(broker.bootstrap, topic, 0)[1]

    def produce_ok():
        r = produce(broker.bootstrap, topic, [{"value": b"after", "partition": 0}],
                    conf={"retries": 0, "message.timeout.ms": 5000})
        return r

    reports = wait_until(lambda: _try(produce_ok), 30, "produce to work after space returns",
                         interval=0.5)
    assert reports[0].offset == end
    broker.restart()
    got = consume_partitions(broker.bootstrap, topic, [0], timeout=60)[0]
    stored = {m.offset: m.value for m in got}
    assert all(stored.get(o) == v for o, v in acked.items())
    assert stored[end] == b"after"


def _try(fn):
    try:
        return fn()
    except AssertionError:
        return None


@pytest.mark.timeout(120)
def test_deleted_partition_directory_fails_only_that_partition(broker_factory):
    broker = broker_factory(*FAST_MAINTENANCE)
    doomed, healthy = unique_topic("doomed"), unique_topic("healthy")
    create_topic(broker.bootstrap, doomed, 1)
    create_topic(broker.bootstrap, healthy, 1)
    produce(broker.bootstrap, doomed, [{"value": b"a"}] * 10)
    # The broker may still be rewriting a checkpoint in that directory (tmp file + rename), which
    # can vanish under rmtree; retry until the directory is gone.
    doomed_dir = broker.data_dir / f"{doomed}-0"

    def removed():
        try:
            shutil.rmtree(doomed_dir)
        except FileNotFoundError:
            pass
        return not doomed_dir.exists()

    wait_until(removed, 10, "the partition directory to be deleted", interval=0.05)

    def refused():
        try:
            produce(broker.bootstrap, doomed, [{"value": b"b"}],
                    conf={"retries": 0, "message.timeout.ms": 3000})
            return None
        except AssertionError as error:
            return "KAFKA_STORAGE_ERROR" in str(error) or "storage" in str(error).lower()

    assert wait_until(refused, 20, "produce to the deleted partition to fail")
    # The rest of the broker keeps serving.
    reports = produce(broker.bootstrap, healthy, [{"value": b"ok"}] * 5)
    assert len(reports) == 5
    assert len(consume_partitions(broker.bootstrap, healthy, [0], timeout=30)[0]) == 5


def _metric_sum(broker, name):
    """Sum over shards of a `riptide_<name>` counter scraped from the admin listener."""
    import urllib.request
    assert broker.admin_port, "the broker has no admin listener"
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(f"riptide_{name}{{") or line.startswith(f"riptide_{name} "):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(120)
@pytest.mark.parametrize("acks", ["1", "all"])
def test_sync_policy_fdatasyncs_before_every_answer(broker_factory, acks):
    """Under flush.messages=1 every produce request gets an fdatasync (for acks=1 as for
    acks=all); the default policy leaves syncing to the checkpoint interval. One message per
    request, each awaited, so no fdatasync can be shared between two requests."""
    broker = broker_factory()
    synced_topic = unique_topic("sync")
    lazy_topic = unique_topic("lazy")
    create_topic(broker.bootstrap, synced_topic, 1, config={"flush.messages": "1"})
    create_topic(broker.bootstrap, lazy_topic, 1)
    requests = 40

    def produce_one_by_one(topic):
        producer = Producer(base_conf(broker.bootstrap, acks=acks, **{"linger.ms": 0}))
        for i in range(requests):
            producer.produce(topic, value=b"v%d" % i)
            assert producer.flush(30) == 0

    before = _metric_sum(broker, "fsyncs_total")
    produce_one_by_one(synced_topic)
    synced = _metric_sum(broker, "fsyncs_total") - before
    assert synced >= requests, f"{synced} fdatasyncs for {requests} sync-policy produces"

    before = _metric_sum(broker, "fsyncs_total")
    started = time.monotonic()
    produce_one_by_one(lazy_topic)
    lazy = _metric_sum(broker, "fsyncs_total") - before
    # Only the recovery checkpoints (every 5 s per partition with new data) sync here.
    checkpoints_bound = 2 * (int(time.monotonic() - started) // 5 + 2)
    assert lazy <= checkpoints_bound, f"{lazy} fdatasyncs for {requests} default-policy produces"

    # The tail is served from the batch cache.
    hits_before = _metric_sum(broker, "batch_cache_hits_total")
    got = consume_partitions(broker.bootstrap, synced_topic, [0], expected={0: requests})
    assert [m.value for m in got[0]] == [b"v%d" % i for i in range(requests)]
    assert _metric_sum(broker, "batch_cache_hits_total") > hits_before
