"""Groups across a broker kill -9 while their consumers keep running, restarted with fewer cores
so every `__consumer_offsets` partition (and with it every coordinator) moves to another shard.
Classic members come back as they were (their group metadata is persisted) and go on; KIP-848
members are told to rejoin and get their partitions again. Nothing committed is lost and every
message is consumed.
"""

from __future__ import annotations

import pytest

from groups_support import (GROUP_BROKER_ARGS, Tracked, balanced, committed, group_consumer,
                            poll_until, unique, values_received)
from helpers import create_topic, produce

PARTITIONS = 4


def fill(bootstrap: str, topic: str, start: int, count: int) -> set:
    values = [f"v{i}".encode() for i in range(start, start + count)]
    produce(bootstrap, topic, [{"value": v, "partition": i % PARTITIONS} for i, v in enumerate(values)])
    return set(values)


@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_group_survives_kill_and_coordinator_move(broker_factory, protocol):
    broker = broker_factory(*GROUP_BROKER_ARGS, cores=2)
    topic, group = unique("gr"), unique("g")
    create_topic(broker.bootstrap, topic, PARTITIONS)
    first = fill(broker.bootstrap, topic, 0, 40)
    conf = {"group.protocol": protocol, "reconnect.backoff.max.ms": 200}
    members = [Tracked(group_consumer(broker.bootstrap, group, **conf), f"c{i}").subscribe([topic])
               for i in range(2)]
    try:
        poll_until(members, lambda: balanced(members, PARTITIONS) and values_received(members) >= first, 30,
                   "two members consuming")
        generation_assigns = [len(m.assigns) for m in members]

        broker.cores = 1  # every partition of shard 1 moves to shard 0
        broker.restart(hard=True)
        second = fill(broker.bootstrap, topic, 40, 40)
        poll_until(members, lambda: values_received(members) >= first | second, 60,
                   "consumption to go on after kill -9 and the move")
        poll_until(members, lambda: balanced(members, PARTITIONS), 30, "partitions owned once")
        if protocol == "classic":
            # The coordinator restored the group: the members kept their generation.
            assert [len(m.assigns) for m in members] == generation_assigns
    finally:
        for m in members:
            m.close()
    probe = group_consumer(broker.bootstrap, group)
    assert committed(probe, topic, PARTITIONS) == {p: 20 for p in range(PARTITIONS)}
    probe.close()
