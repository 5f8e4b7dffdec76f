"""Crash test: produce with acks=all under the sync flush policy, kill -9 the broker at random
points, restart it, and check that every acknowledged record is present exactly once, at its
acknowledged offset, in production order, with no gap in the offsets.

CI runs RIPTIDE_CRASH_ROUNDS rounds (default 20). The soak runs many more, with more data per
round: RIPTIDE_CRASH_SOAK=1 (default 300 rounds; RIPTIDE_CRASH_ROUNDS overrides). The random
schedule is reproducible with RIPTIDE_CRASH_SEED (printed on failure).

The topic uses small segments (rolls during the test) and the broker a short checkpoint
interval, so kills land before, during and after segment rolls and checkpoints, and recovery
runs both from a checkpoint and from index files.
"""

import os
import random
import time

import pytest
from confluent_kafka import Producer

from helpers import base_conf, consume_partitions, create_topic, unique_topic

SOAK = os.environ.get("RIPTIDE_CRASH_SOAK", "0") == "1"
ROUNDS = int(os.environ.get("RIPTIDE_CRASH_ROUNDS", "300" if SOAK else "20"))
SEED = int(os.environ.get("RIPTIDE_CRASH_SEED", str(random.randrange(1 << 30))))
PARTITIONS = 2
# Upper bound of one round's production before the kill, in seconds.
ROUND_MAX_S = 3.0 if SOAK else 1.2
# Per-round timeout budget: restart + produce + consume everything so far.
ROUND_BUDGET_S = 25


def _produce_until_killed(broker, topic, round_no, rng):
    """Produces continuously with acks=all and kills -9 the broker at a random moment (while
    requests are in flight). Returns {(partition, offset): value} of acknowledged records."""
    acked = {}

    def on_delivery(err, msg):
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()

    producer = Producer(base_conf(broker.bootstrap, **{
        "acks": "all",
        "enable.idempotence": False,
        # One request in flight and no retries: production order is log order, and no
        # record is written twice by a retry (the test checks exactly-once).
        "max.in.flight.requests.per.connection": 1,
        "retries": 0,
        "linger.ms": rng.choice([0, 1, 5]),
        "batch.num.messages": rng.choice([1, 50, 1000]),
        "message.timeout.ms": 30000,
        "queue.buffering.max.messages": 100000,
    }))
    kill_at = time.monotonic() + rng.uniform(0.02, ROUND_MAX_S)
    # Sometimes wait for the first acknowledgement, sometimes kill before any.
    need_ack = rng.random() < 0.8
    deadline = time.monotonic() + 20
    value_size = rng.choice([10, 100, 2000])
    seq = 0
    while True:
        now = time.monotonic()
        assert now < deadline, f"round {round_no}: no acknowledgement within 20 s"
        if now >= kill_at and (acked or not need_ack):
            broker.kill9()
            break
        for _ in range(50):
            value = b"r%04d-%08d-" % (round_no, seq) + b"x" * value_size
            try:
                producer.produce(topic, value=value, partition=seq % PARTITIONS,
                                 on_delivery=on_delivery)
                seq += 1
            except BufferError:
                break
        producer.poll(0.001)
    # Whatever was still queued or in flight was never acknowledged.
    producer.purge(in_queue=True, in_flight=True, blocking=True)
    producer.flush(10)
    return acked, seq


def _check(got, acked_all):
    """Every acknowledged value at its offset, each value once, offsets without gaps, and per
    partition the values in production order."""
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    missing = {k: v for k, v in acked_all.items() if stored.get(k) != v}
    assert not missing, (f"{len(missing)} acknowledged records missing or moved, e.g. "
                         f"{sorted(missing)[:5]}")
    values = list(stored.values())
    assert len(values) == len(set(values)), "a record is stored twice"
    for p, ms in got.items():
        offsets = [m.offset for m in ms]
        assert offsets == list(range(len(ms))), f"partition {p}: offsets not contiguous"
        parts = [m.value.split(b"-") for m in ms]
        order = [(int(part[0][1:]), int(part[1])) for part in parts]
        assert order == sorted(order), f"partition {p}: records out of production order"


@pytest.mark.timeout(120 + ROUNDS * ROUND_BUDGET_S)
def test_kill9_rounds_keep_every_acknowledged_record(broker_factory):
    rng = random.Random(SEED)
    print(f"crash test: {ROUNDS} rounds, seed {SEED} (RIPTIDE_CRASH_SEED to replay)")
    broker = broker_factory("--recovery-checkpoint-interval-ms", "200")
    topic = unique_topic("crash")
    create_topic(broker.bootstrap, topic, PARTITIONS, config={
        "flush.messages": "1",        # the sync policy: acks=all waits for fdatasync
        "segment.bytes": "262144",    # rolls every few hundred KiB
    })
    acked_all = {}
    restart_seconds = []
    for round_no in range(ROUNDS):
        acked, sent = _produce_until_killed(broker, topic, round_no, rng)
        assert not broker.alive()
        for key in acked:
            assert key not in acked_all, f"offset {key} acknowledged twice"
        acked_all.update(acked)
        started = time.monotonic()
        broker.start()
        restart_seconds.append(time.monotonic() - started)
        got = consume_partitions(broker.bootstrap, topic, range(PARTITIONS), timeout=60)
        try:
            _check(got, acked_all)
        except AssertionError as error:
            raise AssertionError(f"round {round_no} (seed {SEED}): {error}") from None
        stored = sum(len(ms) for ms in got.values())
        assert stored >= len(acked_all)
    print(f"restart times: max {max(restart_seconds):.2f} s, "
          f"mean {sum(restart_seconds) / len(restart_seconds):.2f} s; "
          f"{len(acked_all)} acknowledged records")


@pytest.mark.timeout(200)
def test_broker_default_sync_policy_survives_kill9(broker_factory):
    """The broker-wide default (`--flush-messages 1`) is the sync policy for topics that do not
    set flush.messages; acknowledged records survive a kill -9 taken right after the acks."""
    broker = broker_factory("--flush-messages", "1")
    topic = unique_topic("crash-default")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    acked = {}

    def on_delivery(err, msg):
        assert err is None, err
        acked[(msg.partition(), msg.offset())] = msg.value()

    producer = Producer(base_conf(broker.bootstrap, **{"acks": "all", "linger.ms": 1}))
    for seq in range(5000):
        producer.produce(topic, value=b"r0000-%08d" % seq, partition=seq % PARTITIONS,
                         on_delivery=on_delivery)
        if seq % 500 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    broker.kill9()
    broker.start()
    got = consume_partitions(broker.bootstrap, topic, range(PARTITIONS), timeout=60)
    _check(got, acked)
    assert sum(len(ms) for ms in got.values()) == 5000
