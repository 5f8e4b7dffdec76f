"""ISR replication on a 3-node cluster (one core per node): followers fetch from the leader and
hold byte-identical batches, the high watermark bounds what consumers see, acks=all waits for
the ISR and honours min.insync.replicas, a killed leader is replaced from the ISR without losing
an acknowledged record, and OffsetForLeaderEpoch answers followers and clients.

Every wait is on a condition with a deadline (cluster.wait_for), never a fixed sleep.
"""

from __future__ import annotations

import collections
import struct
from pathlib import Path

import pytest
from confluent_kafka.admin import NewTopic

import kafka_wire as kw
from cluster import Cluster
from helpers import admin_client, consume_partitions, produce, unique_topic

E_NOT_LEADER_OR_FOLLOWER = 6
E_NOT_ENOUGH_REPLICAS = 19
E_FENCED_LEADER_EPOCH = 74
E_UNKNOWN_LEADER_EPOCH = 76
API_OFFSET_FOR_LEADER_EPOCH = 23

# Followers leave the ISR after this long without catching up (fast, for the tests).
LAG_MAX_MS = 2000
REPLICATION_ARGS = ["--replica-lag-time-max-ms", str(LAG_MAX_MS), "--replica-fetch-wait-max-ms", "200"]


def create_replicated_topic(bootstrap: str, name: str, partitions: int, replication_factor: int = 3,
                            config: dict | None = None, timeout: float = 30.0) -> None:
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions,
                                            replication_factor=replication_factor,
                                            config=config or {})],
                                  request_timeout=timeout, operation_timeout=timeout)
    futures[name].result(timeout + 10)


def partition_states(node, topic: str) -> dict:
    """{partition: (leader, leader_epoch, replicas, isr)} in `node`'s Metadata ({} if unknown)."""
    md = node.metadata([topic])
    for t in md["topics"]:
        if t["name"] == topic and t["error_code"] == 0:
            return {p["partition_index"]: (p["leader_id"], p["leader_epoch"],
                                           sorted(p["replica_nodes"]), sorted(p["isr_nodes"]))
                    for p in t["partitions"]}
    return {}


def wait_isr(cluster: Cluster, topic: str, partitions: int, want_isr, nodes=None,
             timeout: float = 30.0) -> dict:
    """Waits until every given (default: live) node reports `want_isr` (a sorted list, or a
    predicate on it) for every partition, with one leader all agree on. Returns the states."""
    chosen = cluster.live() if nodes is None else [cluster.node(n) for n in nodes]

    def agreed():
        views = [partition_states(n, topic) for n in chosen]
        first = views[0]
        if len(first) != partitions or any(v != first for v in views):
            return None
        for leader, _, _, isr in first.values():
            ok = want_isr(isr) if callable(want_isr) else isr == want_isr
            if leader < 0 or not ok:
                return None
        return first
    return cluster.wait_for(agreed, timeout, f"ISR {want_isr} of {topic} on {[n.node_id for n in chosen]}")


def segment_batches(node, topic: str, partition: int) -> list:
    """The raw record batches in the node's segment files of the partition, in offset order
    (each file read up to its first zero-length position: active segments are preallocated)."""
    directory = Path(node.data_dir) / f"{topic}-{partition}"
    batches = []
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        position = 0
        while position + 12 <= len(data):
            (length,) = struct.unpack_from(">i", data, position + 8)
            if length <= 0 or position + 12 + length > len(data):
                break
            batches.append(data[position:position + 12 + length])
            position += 12 + length
    return batches


def offset_for_leader_epoch(node, topic: str, partition: int, leader_epoch: int,
                            current_leader_epoch: int = -1) -> dict:
    """A raw OffsetForLeaderEpoch v4 (flexible) as a client sends it (replica id -1)."""
    w = kw.Writer()
    w.int32(-1)  # replica_id
    w.uvarint(2)  # one topic (compact array)
    w.string(topic, compact=True)
    w.uvarint(2)  # one partition
    w.int32(partition).int32(current_leader_epoch).int32(leader_epoch)
    w.uvarint(0)  # partition tags
    w.uvarint(0)  # topic tags
    w.uvarint(0)  # request tags
    with kw.KafkaConnection(node.host, node.kafka_port, timeout=10) as conn:
        r = conn.request(API_OFFSET_FOR_LEADER_EPOCH, 4, w.getvalue())
        r.int32()  # throttle_time_ms
        assert r.uvarint() - 1 == 1
        assert r.string(compact=True) == topic
        assert r.uvarint() - 1 == 1
        return {"error_code": r.int16(), "partition": r.int32(), "leader_epoch": r.int32(),
                "end_offset": r.int64()}


def raw_produce(node, topic: str, partition: int, values, acks: int, timeout_ms: int = 5000) -> dict:
    batch = kw.build_record_batch([kw.Record(value=v) for v in values])
    with kw.KafkaConnection(node.host, node.kafka_port, timeout=timeout_ms / 1000 + 10) as conn:
        resp = conn.produce(7, acks, timeout_ms, [(topic, [(partition, batch)])])
    return kw.produce_partition_results(resp)[(topic, partition)]


@pytest.mark.timeout(180)
def test_rf3_followers_hold_identical_batches_and_isr_is_full(cluster_factory):
    cluster = cluster_factory(voters=3, extra_args=REPLICATION_ARGS).start()
    cluster.wait_formed()
    topic = unique_topic("rf3")
    partitions = 3
    create_replicated_topic(cluster[1].bootstrap, topic, partitions)
    states = wait_isr(cluster, topic, partitions, [1, 2, 3])
    leaders = {p: s[0] for p, s in states.items()}
    assert set(leaders.values()) == {1, 2, 3}, leaders  # leadership spread over the nodes

    n_messages = 3000
    sent = [{"value": f"{topic}-{i}".encode(), "partition": i % partitions} for i in range(n_messages)]
    reports = produce(cluster[1].bootstrap, topic, sent, conf={"linger.ms": 5, "acks": "all"})
    acked = {(r.partition, r.offset): r.value for r in reports}

    # Every replica holds the leader's batches byte for byte (offsets, epochs, CRCs as written).
    def identical():
        for p in range(partitions):
            reference = segment_batches(cluster[leaders[p]], topic, p)
            if sum(1 for _ in reference) == 0:
                return False
            for n in cluster:
                if segment_batches(n, topic, p) != reference:
                    return False
        return True
    cluster.wait_for(identical, 30, "followers' segments to equal the leader's")
    got = consume_partitions(cluster[2].bootstrap, topic, range(partitions),
                             expected=dict(collections.Counter(r.partition for r in reports)), timeout=60)
    assert {(p, m.offset): m.value for p, ms in got.items() for m in ms} == acked
    assert wait_isr(cluster, topic, partitions, [1, 2, 3])
