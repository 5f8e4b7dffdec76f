"""Durability across restarts: clean (SIGTERM) and crash (kill -9).

An acknowledged (acks=all, delivery-report-confirmed) message must be present after a restart,
exactly once, at the offset it was acknowledged at, in production order.
"""

import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource, ResourceType

from helpers import (admin_client, base_conf, consume_partitions, create_topic, produce,
                     unique_topic, wait_for_topic, watermarks)


def _msgs(prefix, n, partitions):
    return [{"value": b"%s-%07d" % (prefix, i), "key": b"%d" % i, "partition": i % partitions}
            for i in range(n)]


@pytest.mark.timeout(300)
def test_sigterm_restart_keeps_everything(broker):
    topic = unique_topic("persist")
    partitions = 4
    create_topic(broker.bootstrap, topic, partitions, config={"retention.ms": "86400000"})
    first = _msgs(b"a", 20000, partitions)
    reports = produce(broker.bootstrap, topic, first, conf={"acks": "all"})
    acked = {(r.partition, r.offset): r.value for r in reports}

    broker.restart()  # SIGTERM, asserts exit code 0, same port and data dir
    wait_for_topic(broker.bootstrap, topic, partitions)

    got = consume_partitions(broker.bootstrap, topic, range(partitions), timeout=120)
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    assert stored == acked

    # The topic config survived too.
    admin = admin_client(broker.bootstrap)
    res = admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
    cfg = list(res.values())[0].result(30)
    assert cfg["retention.ms"].value == "86400000"

    # Appends continue after the recovered end, with no gap and no overwrite.
    hw_before = {p: watermarks(broker.bootstrap, topic, p)[1] for p in range(partitions)}
    second = produce(broker.bootstrap, topic, _msgs(b"b", 1000, partitions), conf={"acks": "all"})
    for p in range(partitions):
        offs = sorted(r.offset for r in second if r.partition == p)
        assert offs == list(range(hw_before[p], hw_before[p] + len(offs))), p

    # And a second clean restart keeps both rounds.
    broker.restart()
    got = consume_partitions(broker.bootstrap, topic, range(partitions), timeout=120)
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    acked.update({(r.partition, r.offset): r.value for r in second})
    assert stored == acked


def _produce_until_killed(broker, topic, prefix, start_seq, kill_after, partitions):
    """Produce continuously with acks=all; once `kill_after` deliveries are confirmed (and more
    are in flight) kill -9 the broker. Returns {(partition, offset): value} of confirmed messages
    and the number of messages handed to the producer."""
    acked = {}
    errors = []

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()
        else:
            errors.append(err)

    p = Producer(base_conf(broker.bootstrap, **{
        "acks": "all", "linger.ms": 2, "enable.idempotence": False,
        "max.in.flight.requests.per.connection": 1,  # keep production order = log order
        "message.timeout.ms": 60000, "queue.buffering.max.messages": 100000}))
    sent = 0
    deadline = time.monotonic() + 120
    killed = False
    while not killed:
        assert time.monotonic() < deadline, f"only {len(acked)} deliveries confirmed in 120 s"
        for _ in range(200):
            i = start_seq + sent
            try:
                p.produce(topic, value=b"%s-%08d" % (prefix, i), partition=i % partitions,
                          on_delivery=on_delivery)
                sent += 1
            except BufferError:
                break
        p.poll(0.001)
        if len(acked) >= kill_after and len(p) > 0:
            broker.kill9()
            killed = True
    # Drop everything still queued or in flight: those were never acknowledged.
    p.purge(in_queue=True, in_flight=True, blocking=True)
    p.flush(10)
    return dict(acked), sent


def _check_log(got, acked_all, prefix_order):
    """Every acknowledged value sits at its acknowledged offset, once; per partition the values
    appear in production order; no value appears twice."""
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    missing = {k: v for k, v in acked_all.items() if stored.get(k) != v}
    assert not missing, (f"{len(missing)} acknowledged messages missing or moved, e.g. "
                         f"{sorted(missing.items())[:5]}; stored there: "
                         f"{[stored.get(k) for k in sorted(missing)[:5]]}")
    values = [v for v in stored.values()]
    assert len(values) == len(set(values)), "a message is stored twice"
    for p, ms in got.items():
        assert [m.offset for m in ms] == list(range(len(ms))), f"partition {p}: offsets not contiguous"
        seq = [(prefix_order.index(m.value.split(b"-")[0]), int(m.value.split(b"-")[1])) for m in ms]
        assert seq == sorted(seq), f"partition {p}: messages out of production order"


@pytest.mark.timeout(400)
def test_kill9_keeps_every_acknowledged_message(broker):
    topic = unique_topic("crash")
    partitions = 2
    create_topic(broker.bootstrap, topic, partitions)

    acked1, sent1 = _produce_until_killed(broker, topic, b"r1", 0, 20000, partitions)
    assert not broker.alive()
    broker.start()
    wait_for_topic(broker.bootstrap, topic, partitions)
    got = consume_partitions(broker.bootstrap, topic, range(partitions), timeout=120)
    _check_log(got, acked1, [b"r1"])
    stored_after_first = sum(len(ms) for ms in got.values())
    assert stored_after_first <= sent1

    # Second round on the recovered log: appends continue at the recovered end; crash again.
    hw = {p: len(got[p]) for p in range(partitions)}
    acked2, sent2 = _produce_until_killed(broker, topic, b"r2", 0, 10000, partitions)
    for p in range(partitions):
        offs = sorted(o for (pp, o) in acked2 if pp == p)
        assert offs and offs[0] == hw[p], f"partition {p}: first offset after recovery {offs[:1]}, end was {hw[p]}"
    broker.start()
    got = consume_partitions(broker.bootstrap, topic, range(partitions), timeout=120)
    _check_log(got, {**acked1, **acked2}, [b"r1", b"r2"])

    # A clean stop now still works (exit 0) and keeps the same content.
    before = {p: [m.value for m in ms] for p, ms in got.items()}
    broker.restart()
    got = consume_partitions(broker.bootstrap, topic, range(partitions), timeout=120)
    assert {p: [m.value for m in ms] for p, ms in got.items()} == before


@pytest.mark.timeout(200)
def test_kill9_after_flush(broker):
    """Everything acknowledged before an idle crash survives (no pending batch at kill time)."""
    topic = unique_topic("crash-idle")
    create_topic(broker.bootstrap, topic, 3)
    reports = produce(broker.bootstrap, topic, _msgs(b"c", 3000, 3), conf={"acks": "all"})
    broker.restart(hard=True)
    got = consume_partitions(broker.bootstrap, topic, range(3), timeout=60)
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    assert stored == {(r.partition, r.offset): r.value for r in reports}


@pytest.mark.timeout(200)
def test_auto_created_topic_survives_restart(broker):
    topic = unique_topic("auto-persist")
    reports = produce(broker.bootstrap, topic, [{"value": b"v%d" % i} for i in range(100)])
    broker.restart()
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 100}, timeout=60)[0]
    assert [m.value for m in got] == [r.value for r in sorted(reports, key=lambda r: r.offset)]
