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
E_REQUEST_TIMED_OUT = 7
E_FENCED_LEADER_EPOCH = 74
E_UNKNOWN_LEADER_EPOCH = 75
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
        resp = conn.produce(7, [(topic, [(partition, batch)])], acks=acks, timeout_ms=timeout_ms)
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
    # Followers fetch in incremental sessions (KIP-227): every leader answered some.
    for node in cluster:
        assert incremental_fetches(node) > 0, f"node {node.node_id} served no incremental fetch"
    got = consume_partitions(cluster[2].bootstrap, topic, range(partitions),
                             expected=dict(collections.Counter(r.partition for r in reports)), timeout=60)
    assert {(p, m.offset): m.value for p, ms in got.items() for m in ms} == acked
    assert wait_isr(cluster, topic, partitions, [1, 2, 3])

    # The admin CLI creates replicated topics, and CreateTopics reports the replication factor.
    import json
    import subprocess
    out = subprocess.run([str(cluster.binary), "topic", "create", topic + "-cli", "-p", "2", "-r", "3",
                          "-b", cluster[3].bootstrap, "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout)
    assert (created["partitions"], created["replicas"]) == (2, 3), created
    wait_isr(cluster, topic + "-cli", 2, [1, 2, 3])


def incremental_fetches(node) -> float:
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{node.admin_port}/metrics", timeout=10) as r:
        lines = r.read().decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("riptide_incremental_fetches_total{"))


def latest_offset(node, topic: str, partition: int) -> tuple:
    """(error_code, offset) of ListOffsets latest on `node` (v4: no isolation subtleties)."""
    with kw.KafkaConnection(node.host, node.kafka_port, timeout=10) as conn:
        resp = conn.list_offsets(4, [(topic, [(partition, kw.LATEST_TIMESTAMP)])])
    (p,) = resp["topics"][0]["partitions"]
    return p["error_code"], p["offset"]


def live_leader(cluster: Cluster, topic: str, not_on=(), timeout: float = 60.0) -> tuple:
    """Waits until the live nodes agree on a leader of partition 0 outside `not_on`; returns
    (leader, leader_epoch, isr)."""
    def agreed():
        views = [partition_states(n, topic).get(0) for n in cluster.live()]
        first = views[0]
        if first is None or any(v != first for v in views):
            return None
        leader, epoch, _, isr = first
        return (leader, epoch, isr) if leader >= 0 and leader not in not_on else None
    return cluster.wait_for(agreed, timeout, f"a leader of {topic}-0 outside {list(not_on)}")


class BackgroundProducer:
    """An idempotent acks=all producer sending numbered values from a thread until stopped;
    keeps every delivery report."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        import threading
        from confluent_kafka import Producer
        from helpers import base_conf
        self.topic = topic
        self.acked: list = []
        self.failed: list = []
        self.sent = 0
        self._stop = threading.Event()
        self._producer = Producer(base_conf(bootstrap, **{
            "acks": "all", "enable.idempotence": True, "linger.ms": 2,
            "message.timeout.ms": 120000, "retry.backoff.ms": 50}))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _report(self, err, msg) -> None:
        (self.failed if err is not None else self.acked).append((err, msg.offset(), msg.value()))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._producer.produce(self.topic, value=f"v{self.sent}".encode(), partition=0,
                                       on_delivery=self._report)
                self.sent += 1
            except BufferError:
                pass
            self._producer.poll(0.002)

    def wait_acked(self, count: int, cluster: Cluster, timeout: float = 60.0) -> None:
        cluster.wait_for(lambda: len(self.acked) >= count, timeout, f"{count} acknowledged messages")

    def finish(self, timeout: float = 120.0) -> None:
        self._stop.set()
        self._thread.join(10)
        left = self._producer.flush(timeout)
        assert left == 0, f"{left} messages undelivered"


@pytest.mark.timeout(300)
def test_killed_leaders_are_replaced_from_the_isr_without_losing_acked_records(cluster_factory):
    cluster = cluster_factory(voters=3, extra_args=REPLICATION_ARGS).start()
    cluster.wait_formed()
    topic = unique_topic("failover")
    create_replicated_topic(cluster[1].bootstrap, topic, 1, config={"min.insync.replicas": "2"})
    wait_isr(cluster, topic, 1, [1, 2, 3])
    producer = BackgroundProducer(cluster.bootstrap(), topic)
    epochs = []
    try:
        for round_ in range(2):
            leader, epoch, _ = live_leader(cluster, topic)
            epochs.append(epoch)
            producer.wait_acked(len(producer.acked) + 300, cluster)
            cluster.kill9(leader)
            # The controller fences it after its session and elects another ISR member.
            new_leader, new_epoch, isr = live_leader(cluster, topic, not_on=[leader])
            assert new_epoch > epoch and leader not in isr, (new_leader, new_epoch, isr)
            producer.wait_acked(len(producer.acked) + 300, cluster)
            cluster.restart(leader)
            wait_isr(cluster, topic, 1, [1, 2, 3], timeout=60)
        producer.wait_acked(len(producer.acked) + 100, cluster)
    finally:
        producer.finish()
    assert not producer.failed, producer.failed[:5]
    acked = {value: offset for _, offset, value in producer.acked}
    assert len(acked) == len(producer.acked), "an offset was acknowledged twice"

    # Every acknowledged record is there, once, at its offset; nothing else is (idempotence).
    _, end = latest_offset(cluster[live_leader(cluster, topic)[0]], topic, 0)
    got = consume_partitions(cluster.bootstrap(), topic, [0], expected={0: end}, timeout=60)
    stored = {m.value: m.offset for m in got[0]}
    assert len(stored) == len(got[0]), "a value is stored twice"
    assert {v: stored.get(v) for v in acked} == acked
    assert sorted(stored.values()) == list(range(end))

    # Replicas converge byte for byte; OffsetForLeaderEpoch names where each epoch ended.
    leader = live_leader(cluster, topic)[0]
    cluster.wait_for(lambda: all(segment_batches(n, topic, 0) == segment_batches(cluster[leader], topic, 0)
                                 for n in cluster), 30, "identical replicas")
    batches = kw.parse_record_batches(b"".join(segment_batches(cluster[leader], topic, 0)),
                                      decode_records=False)
    first_of_epoch = {}
    for b in batches:
        first_of_epoch.setdefault(b.partition_leader_epoch, b.base_offset)
    written_epochs = sorted(first_of_epoch)
    assert len(written_epochs) >= 2, first_of_epoch
    _, current_epoch, _ = live_leader(cluster, topic)
    for older, newer in zip(written_epochs, written_epochs[1:]):
        answer = offset_for_leader_epoch(cluster[leader], topic, 0, older, current_epoch)
        assert answer == {"error_code": 0, "partition": 0, "leader_epoch": older,
                          "end_offset": first_of_epoch[newer]}, answer
    latest = offset_for_leader_epoch(cluster[leader], topic, 0, current_epoch, current_epoch)
    assert (latest["error_code"], latest["end_offset"]) == (0, end)
    assert offset_for_leader_epoch(cluster[leader], topic, 0, 0, current_epoch - 1)["error_code"] \
        == E_FENCED_LEADER_EPOCH
    assert offset_for_leader_epoch(cluster[leader], topic, 0, 0, current_epoch + 1)["error_code"] \
        == E_UNKNOWN_LEADER_EPOCH
    follower = next(n for n in cluster if n.node_id != leader)
    assert offset_for_leader_epoch(follower, topic, 0, 0)["error_code"] == E_NOT_LEADER_OR_FOLLOWER


@pytest.mark.timeout(240)
def test_acks_all_refused_below_min_insync_and_lagging_follower_rejoins(cluster_factory):
    import os
    import signal
    cluster = cluster_factory(voters=3, extra_args=REPLICATION_ARGS).start()
    cluster.wait_formed()
    topic = unique_topic("minisr")
    create_replicated_topic(cluster[1].bootstrap, topic, 1, config={"min.insync.replicas": "3"})
    leader = wait_isr(cluster, topic, 1, [1, 2, 3])[0][0]
    assert raw_produce(cluster[leader], topic, 0, [b"a"], acks=-1)["error_code"] == 0
    follower = next(n for n in cluster if n.node_id != leader)

    # A frozen follower stops fetching: after replica.lag.time.max.ms the leader drops it from
    # the ISR through the controller (and the controller fences it when its session ends).
    os.kill(follower.proc.proc.pid, signal.SIGSTOP)
    try:
        shrunk = sorted(n.node_id for n in cluster if n is not follower)
        wait_isr(cluster, topic, 1, shrunk, nodes=shrunk, timeout=60)
        refused = raw_produce(cluster[leader], topic, 0, [b"b"], acks=-1)
        assert refused["error_code"] == E_NOT_ENOUGH_REPLICAS, refused
        assert raw_produce(cluster[leader], topic, 0, [b"c"], acks=1)["error_code"] == 0
    finally:
        os.kill(follower.proc.proc.pid, signal.SIGCONT)

    # Thawed, it catches up and rejoins; acks=all works again and every replica has it all.
    wait_isr(cluster, topic, 1, [1, 2, 3], timeout=60)
    assert raw_produce(cluster[leader], topic, 0, [b"d"], acks=-1)["error_code"] == 0
    cluster.wait_for(lambda: all(segment_batches(n, topic, 0) == segment_batches(cluster[leader], topic, 0)
                                 for n in cluster), 30, "identical replicas")
    got = consume_partitions(follower.bootstrap, topic, [0], expected={0: 3}, timeout=30)
    assert [m.value for m in got[0]] == [b"a", b"c", b"d"]


@pytest.mark.timeout(240)
def test_consumers_stop_at_the_high_watermark_until_followers_have_the_records(cluster_factory):
    import os
    import signal
    # Frozen followers stay in the ISR (30 s lag allowed; sessions outlast the freeze).
    cluster = cluster_factory(voters=3, session_ms=8000, extra_args=[
        "--replica-lag-time-max-ms", "30000", "--replica-fetch-wait-max-ms", "200"]).start()
    cluster.wait_formed()
    topic = unique_topic("hw")
    create_replicated_topic(cluster[1].bootstrap, topic, 1)
    leader = cluster[wait_isr(cluster, topic, 1, [1, 2, 3])[0][0]]
    first = [f"committed-{i}".encode() for i in range(5)]
    assert raw_produce(leader, topic, 0, first, acks=-1)["error_code"] == 0
    cluster.wait_for(lambda: latest_offset(leader, topic, 0) == (0, 5), 10, "HW 5")
    followers = [n for n in cluster if n is not leader]

    for n in followers:
        os.kill(n.proc.proc.pid, signal.SIGSTOP)
    try:
        tail = [f"uncommitted-{i}".encode() for i in range(3)]
        assert raw_produce(leader, topic, 0, tail, acks=1)["error_code"] == 0
        # Written on the leader, on no follower yet: neither ListOffsets nor Fetch shows it,
        # and an acks=all produce is not acknowledged.
        assert latest_offset(leader, topic, 0) == (0, 5)
        assert fetch_from(leader, topic, 5) == (0, 5, [])
        timed_out = raw_produce(leader, topic, 0, [b"never-acked"], acks=-1, timeout_ms=500)
        assert timed_out["error_code"] == E_REQUEST_TIMED_OUT, timed_out
    finally:
        for n in followers:
            os.kill(n.proc.proc.pid, signal.SIGCONT)
    cluster.wait_for(lambda: latest_offset(leader, topic, 0) == (0, 9), 30, "HW 9 once followers fetch")
    _, hw, values = fetch_from(leader, topic, 0)
    assert hw == 9 and values == first + tail + [b"never-acked"]


def fetch_from(node, topic: str, offset: int) -> tuple:
    """(error, high watermark, values) of one consumer Fetch v11 of partition 0 at `offset`."""
    with kw.KafkaConnection(node.host, node.kafka_port, timeout=10) as conn:
        fetched = conn.fetch(11, [(topic, [(0, offset, 1 << 20)])], max_wait_ms=100)
    (p,) = fetched["topics"][0]["partitions"]
    values = [value for b in kw.parse_record_batches(p["records"] or b"")
              for (record_offset, _, _, value, _) in b.records if record_offset >= offset]
    return p["error_code"], p["high_watermark"], values


# ---- a network partition: the isolated leader's unreplicated tail is cut -----------------------

from test_cluster_partition import net  # noqa: E402,F401  (the namespaces fixture)

HERE = Path(__file__).resolve().parent


def in_netns(node, expression: str):
    """Evaluates `expression` (a call of this module's helpers on `N`, a stand-in for `node`)
    inside the node's network namespace, where its Kafka port is reachable; returns its value
    (through JSON)."""
    import json
    import subprocess
    import sys
    script = (f"import sys, json; sys.path.insert(0, {str(HERE)!r})\n"
              "import test_replication as tr, kafka_wire as kw\n"
              f"class N:\n    host = {node.address!r}\n    kafka_port = {node.kafka_port}\n"
              "    @staticmethod\n"
              "    def metadata(topics):\n"
              "        with kw.KafkaConnection(N.host, N.kafka_port, timeout=10) as conn:\n"
              "            return conn.metadata(12, topics, False)\n"
              f"print(json.dumps({expression}, default=lambda b: b.decode()))\n")
    out = subprocess.run(["ip", "netns", "exec", node.netns, sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise OSError(f"in {node.netns}: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


@pytest.mark.timeout(240)
def test_partitioned_leader_loses_its_unreplicated_tail_and_rejoins(net, cluster_factory):
    cluster = cluster_factory(voters=3, netns=net.nodes, extra_args=REPLICATION_ARGS).start()
    cluster.wait_converged()
    topic = unique_topic("split")
    some = cluster[1]
    r = in_netns(some, f"tr.create_replicated_topic(f'{{N.host}}:{{N.kafka_port}}', {topic!r}, 1)")
    assert r is None

    def states(node):
        return {int(k): v for k, v in in_netns(node, f"tr.partition_states(N, {topic!r})").items()}

    def agreed(nodes, want_isr, not_on=()):
        views = [states(n).get(0) for n in nodes]
        first = views[0]
        if first is None or any(v != first for v in views):
            return None
        leader, _, _, isr = first
        return first if leader >= 0 and leader not in not_on and isr == want_isr else None
    old_leader, old_epoch, _, _ = cluster.wait_for(lambda: agreed(list(cluster), [1, 2, 3]), 30, "ISR 1,2,3")
    first = [f"committed-{i}" for i in range(5)]
    acks_all = in_netns(cluster[old_leader], f"tr.raw_produce(N, {topic!r}, 0, [v.encode() for v in {first!r}], -1)")
    assert acks_all["error_code"] == 0, acks_all
    cluster.wait_for(lambda: all(segment_batches(n, topic, 0) == segment_batches(cluster[old_leader], topic, 0)
                                 for n in cluster), 30, "replicas before the partition")

    # Cut off, the old leader still takes acks=1 writes no follower will ever fetch; acks=all
    # is not acknowledged there.
    net.isolate(old_leader)
    tail = [f"lost-{i}" for i in range(3)]
    acks_one = in_netns(cluster[old_leader], f"tr.raw_produce(N, {topic!r}, 0, [v.encode() for v in {tail!r}], 1)")
    assert acks_one["error_code"] == 0, acks_one
    stuck = in_netns(cluster[old_leader], f"tr.raw_produce(N, {topic!r}, 0, [b'not-acked'], -1, 500)")
    assert stuck["error_code"] != 0, stuck

    # The majority fences it and elects a follower in a new epoch, which takes new writes.
    majority = [n for n in cluster if n.node_id != old_leader]
    new_state = cluster.wait_for(lambda: agreed(majority, sorted(n.node_id for n in majority),
                                                not_on=[old_leader]),
                                 cluster.session_ms / 1000 + 30, "a new leader in the majority")
    new_leader, new_epoch = new_state[0], new_state[1]
    assert new_epoch > old_epoch
    later = [f"after-{i}" for i in range(4)]
    acks_all = in_netns(cluster[new_leader], f"tr.raw_produce(N, {topic!r}, 0, [v.encode() for v in {later!r}], -1)")
    assert acks_all["error_code"] == 0, acks_all

    # Healed, the old leader follows, cuts its divergent tail (OffsetForLeaderEpoch) and
    # catches up; every replica ends byte-identical, without the lost records.
    net.heal(old_leader)
    cluster.wait_for(lambda: agreed(list(cluster), [1, 2, 3]), 60, "ISR 1,2,3 after healing")
    reference = segment_batches(cluster[new_leader], topic, 0)
    cluster.wait_for(lambda: all(segment_batches(n, topic, 0) == reference for n in cluster), 30,
                     "identical replicas after healing")
    assert "truncated divergent tail" in cluster[old_leader].log_tail(2000)
    _, hw, values = in_netns(cluster[new_leader], f"tr.fetch_from(N, {topic!r}, 0)")
    assert hw == 9 and values == first + later, (hw, values)


@pytest.mark.timeout(240)
def test_unclean_leader_election_only_where_enabled(cluster_factory):
    # Voters 1-3 keep the controller quorum; the replicas live on broker-only nodes 4 and 5.
    cluster = cluster_factory(voters=3, brokers=2, extra_args=REPLICATION_ARGS).start()
    cluster.wait_formed()
    unclean, clean = unique_topic("unclean"), unique_topic("clean")
    admin = admin_client(cluster[1].bootstrap)
    futures = admin.create_topics([
        NewTopic(unclean, num_partitions=1, replica_assignment=[[4, 5]], config={"unclean.leader.election.enable": "true"}),
        NewTopic(clean, num_partitions=1, replica_assignment=[[4, 5]])])
    for f in futures.values():
        f.result(40)
    for topic in (unclean, clean):
        wait_isr(cluster, topic, 1, [4, 5])
        assert raw_produce(cluster[4], topic, 0, [b"both"], acks=-1)["error_code"] == 0

    # 5 stops (leaves the ISR); 4 takes a write only it holds, then dies.
    cluster.stop(5)
    for topic in (unclean, clean):
        wait_isr(cluster, topic, 1, [4])
        assert raw_produce(cluster[4], topic, 0, [b"only-on-4"], acks=1)["error_code"] == 0
    cluster.kill9(4)
    cluster.wait_for(lambda: all(partition_states(cluster[1], t).get(0, (0,))[0] == -1 for t in (unclean, clean)),
                     cluster.session_ms / 1000 + 30, "both partitions leaderless")

    # 5 returns: it leads the unclean topic alone (without 4's last write); the clean one stays
    # leaderless until a member of its ISR is back.
    cluster.restart(5)
    leader, _, _, isr = wait_isr(cluster, unclean, 1, [5])[0]
    assert leader == 5
    assert partition_states(cluster[1], clean)[0][0] == -1
    assert raw_produce(cluster[5], unclean, 0, [b"after"], acks=-1)["error_code"] == 0

    # 4 returns: the clean topic is led again with nothing lost; in the unclean one, 4 cuts
    # the write 5 never had and follows.
    cluster.restart(4)
    assert wait_isr(cluster, clean, 1, [4, 5], timeout=60)[0][0] == 4
    wait_isr(cluster, unclean, 1, [4, 5], timeout=60)
    cluster.wait_for(lambda: segment_batches(cluster[4], unclean, 0) == segment_batches(cluster[5], unclean, 0),
                     30, "identical replicas of the unclean topic")
    assert fetch_from(cluster[5], unclean, 0)[2] == [b"both", b"after"]
    clean_leader = cluster[partition_states(cluster[1], clean)[0][0]]
    assert fetch_from(clean_leader, clean, 0)[2] == [b"both", b"only-on-4"]


@pytest.mark.timeout(240)
def test_committed_offsets_survive_the_coordinator_node_dying(cluster_factory):
    from confluent_kafka import TopicPartition
    from groups_support import GroupWire, group_consumer
    cluster = cluster_factory(voters=3, extra_args=REPLICATION_ARGS + [
        "--default-replication-factor", "3", "--offsets-topic-num-partitions", "3",
        "--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "1000"]).start()
    cluster.wait_formed()
    topic = unique_topic("grp")
    create_replicated_topic(cluster[1].bootstrap, topic, 2)
    wait_isr(cluster, topic, 2, [1, 2, 3])
    reports = produce(cluster[1].bootstrap, topic,
                      [{"value": f"m{i}".encode(), "partition": i % 2} for i in range(200)])
    assert len(reports) == 200
    group = f"g-{unique_topic('x')}"

    def coordinator_of():
        wire = GroupWire(cluster.live()[0].host, cluster.live()[0].kafka_port)
        try:
            (c,) = wire.find_coordinator([group])
        finally:
            wire.close()
        return c["node_id"] if c["error"] == 0 else None
    first_coordinator = cluster.wait_for(coordinator_of, 30, "a coordinator")
    wait_isr(cluster, "__consumer_offsets", 3, [1, 2, 3])

    consumer = group_consumer(cluster[1].bootstrap, group)
    consumer.subscribe([topic])
    try:
        got = 0
        while got < 60:
            for m in consumer.consume(num_messages=60 - got, timeout=0.5):
                assert not m.error(), m.error()
                got += 1
        consumer.commit(asynchronous=False)
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in range(2)], timeout=30)}
    finally:
        consumer.close()
    assert sum(o for o in committed.values() if o > 0) == 60, committed

    # The coordinator's node dies; its __consumer_offsets partition moves to an ISR member,
    # which loads the replicated group state.
    cluster.kill9(first_coordinator)
    cluster.wait_for(lambda: coordinator_of() not in (None, first_coordinator),
                     cluster.session_ms / 1000 + 30, "a new coordinator")

    def committed_now():
        probe = group_consumer(cluster.bootstrap(cluster.live()), group)
        try:
            return {tp.partition: tp.offset for tp in probe.committed(
                [TopicPartition(topic, p) for p in range(2)], timeout=10)}
        finally:
            probe.close()
    assert cluster.wait_for(lambda: committed_now() == committed or None, 30,
                            "the committed offsets from the new coordinator")
    cluster.restart(first_coordinator)
