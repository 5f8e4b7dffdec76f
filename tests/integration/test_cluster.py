"""Multi-node clusters: a controller quorum of 3 voters (each also a broker), RF=1 partitions
spread over the nodes, clients routed to whichever node leads what they need.

Every test builds its own cluster with fast timings (heartbeat 500 ms, session 4 s, election
1 s, one core per node) and waits on conditions with deadlines (cluster.wait_for), never on
fixed sleeps.
"""

from __future__ import annotations

import collections
import json
import math
import subprocess
import time
import uuid

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import NewTopic

import kafka_wire as kw
from cluster import Cluster, create_topics_raw
from groups_support import GroupWire, group_consumer
from helpers import admin_client, consume_partitions, produce, unique_topic

KCAT_COMMON = ["-X", "broker.address.family=v4"]
E_LEADER_NOT_AVAILABLE = 5
E_NOT_LEADER_OR_FOLLOWER = 6
E_REQUEST_TIMED_OUT = 7
E_NOT_COORDINATOR = 16
E_NOT_CONTROLLER = 41
E_TOPIC_ALREADY_EXISTS = 36


# ---- helpers ----------------------------------------------------------------------------------

def topic_leaders(node, topic: str) -> dict:
    """{partition: leader} of `topic` in `node`'s Metadata, or {} if it does not know it
    (partitions without a leader map to -1)."""
    md = node.metadata([topic])
    for t in md["topics"]:
        if t["name"] == topic and t["error_code"] == 0:
            return {p["partition_index"]: p["leader_id"] for p in t["partitions"]}
    return {}


def wait_topic_everywhere(cluster: Cluster, topic: str, partitions: int, nodes=None,
                          timeout: float = 30.0) -> dict:
    """Wait until every given (default: live) node's Metadata has `topic` with `partitions`
    partitions, each with a leader, and all nodes agree on the leaders. Returns them."""
    chosen = cluster.live() if nodes is None else [cluster.node(n) for n in nodes]

    def agreed():
        views = [topic_leaders(n, topic) for n in chosen]
        first = views[0]
        if len(first) != partitions or any(l < 0 for l in first.values()):
            return None
        return first if all(v == first for v in views) else None
    return cluster.wait_for(agreed, timeout, f"topic {topic} ({partitions} partitions, all led) on "
                                             f"nodes {[n.node_id for n in chosen]}")


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30.0) -> None:
    """CreateTopics through confluent-kafka's AdminClient; raises KafkaException on failure."""
    admin = admin_client(bootstrap)
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                  request_timeout=timeout, operation_timeout=timeout)
    futures[name].result(timeout + 10)


def create_topic_retrying(cluster: Cluster, bootstrap: str, name: str, partitions: int,
                          timeout: float = 30.0) -> None:
    """CreateTopics until it succeeds (retriable errors while a controller is being elected);
    TOPIC_ALREADY_EXISTS on a retry means an earlier attempt went through."""
    attempts = []

    def attempt():
        try:
            create_topic(bootstrap, name, partitions, timeout=10)
            return True
        except KafkaException as e:
            err = e.args[0]
            if attempts and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                return True
            attempts.append(err)
            raise
    cluster.wait_for(attempt, timeout, f"CreateTopics {name} to succeed via {bootstrap}", interval=0.2)


def messages_for(topic_tag: str, n: int, partitions: int) -> list:
    return [{"value": b"%s-%06d" % (topic_tag.encode(), i), "key": b"k%d" % i, "partition": i % partitions}
            for i in range(n)]


def percentile(samples, q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def riptide_cli(cluster: Cluster, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(cluster.binary), *args], capture_output=True, timeout=timeout, text=True)


# ---- tests ------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_three_voters_elect_one_controller_and_share_metadata(cluster_factory):
    cluster = cluster_factory(voters=3).start()
    leader = cluster.wait_formed()
    healths = cluster.healths()
    assert set(healths) == {1, 2, 3}

    # One active controller that every node names; every node is a voter of the same term.
    assert [i for i, h in healths.items() if h["controller"]["is_active"]] == [leader]
    for node_id, h in healths.items():
        c = h["controller"]
        assert h["node_id"] == node_id
        assert c["is_voter"] is True, h
        assert c["active_controller_id"] == leader, h
        assert c["term"] >= 1, h
    assert len({h["controller"]["term"] for h in healths.values()}) == 1, healths

    # One cluster id, the same registered, unfenced brokers everywhere.
    cluster_ids = {h["metadata"]["cluster_id"] for h in healths.values()}
    assert len(cluster_ids) == 1 and next(iter(cluster_ids)), cluster_ids
    cluster_id = next(iter(cluster_ids))
    for h in healths.values():
        assert sorted(h["all_nodes"]) == [1, 2, 3], h
        assert h["nodes_down"] == [], h
        assert h["leaderless_partitions"] == [], h
        brokers = {b["node_id"]: b for b in h["metadata"]["brokers"]}
        assert set(brokers) == {1, 2, 3}
        for n in cluster:
            assert (brokers[n.node_id]["host"], brokers[n.node_id]["port"]) == (n.host, n.kafka_port)
            assert brokers[n.node_id]["fenced"] is False

    # Kafka Metadata from every node: all 3 brokers at their advertised addresses, the cluster
    # id, and a controller id that is one of the live brokers (controllers are not reachable by
    # clients, as in KRaft; admin requests sent to it are forwarded to the active controller).
    want_brokers = {(n.node_id, n.host, n.kafka_port) for n in cluster}
    for n in cluster:
        md = n.metadata()
        assert {(b["node_id"], b["host"], b["port"]) for b in md["brokers"]} == want_brokers, md
        assert md["cluster_id"] == cluster_id
        assert md["controller_id"] in {1, 2, 3}, md


@pytest.mark.timeout(180)
def test_topic_spread_over_nodes_produce_one_bootstrap_consume_confluent_and_kcat(
        cluster_factory, kcat_bin, tmp_path):
    cluster = cluster_factory(voters=3).start()
    topic = unique_topic("spread")
    partitions = 6
    create_topic(cluster[1].bootstrap, topic, partitions)
    leaders = wait_topic_everywhere(cluster, topic, partitions)

    # The leaders are spread over every node, evenly.
    per_node = collections.Counter(leaders.values())
    assert set(per_node) == {1, 2, 3}, leaders
    assert max(per_node.values()) - min(per_node.values()) <= 1, leaders

    # Produce with one node as the only bootstrap: the client finds every leader from Metadata.
    n_messages = 3000
    sent = messages_for(topic, n_messages, partitions)
    reports = produce(cluster[1].bootstrap, topic, sent, conf={"linger.ms": 5})
    acked = {(r.partition, r.offset): r.value for r in reports}
    per_partition = collections.Counter(r.partition for r in reports)
    assert set(per_partition) == set(range(partitions))

    # confluent-kafka Consumer (assign, no group) bootstrapped from another node.
    got = consume_partitions(cluster[2].bootstrap, topic, range(partitions),
                             expected=dict(per_partition), timeout=60)
    stored = {(p, m.offset): m.value for p, ms in got.items() for m in ms}
    assert stored == acked
    from_node = collections.Counter()
    for p, ms in got.items():
        from_node[leaders[p]] += len(ms)
    assert set(from_node) == {1, 2, 3}, from_node

    # kcat from the third node, every partition from the beginning up to its end.
    out = subprocess.run([kcat_bin, "-C", "-b", cluster[3].bootstrap, "-t", topic, "-o", "beginning",
                          "-e", "-q", "-f", "%p %o %s\\n", *KCAT_COMMON],
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()[-3000:]
    kcat_got = {}
    for line in out.stdout.decode().splitlines():
        p, o, value = line.split(" ", 2)
        kcat_got[(int(p), int(o))] = value.encode()
    assert kcat_got == acked, f"kcat read {len(kcat_got)} of {len(acked)} messages"
    kcat_from_node = collections.Counter(leaders[p] for p, _ in kcat_got)
    assert kcat_from_node == from_node


@pytest.mark.timeout(180)
def test_group_with_coordinator_on_another_node_commits_and_resumes(cluster_factory):
    cluster = cluster_factory(voters=3, extra_args=[
        "--offsets-topic-num-partitions", "6",
        "--group-initial-rebalance-delay-ms", "0",
        "--group-min-session-timeout-ms", "1000",
    ]).start()
    bootstrap_node = cluster[1]
    topic = unique_topic("grp")
    partitions = 3
    create_topic(bootstrap_node.bootstrap, topic, partitions)
    wait_topic_everywhere(cluster, topic, partitions)
    n_messages = 300
    reports = produce(bootstrap_node.bootstrap, topic, messages_for(topic, n_messages, partitions))
    acked = {(r.partition, r.offset): r.value for r in reports}

    # FindCoordinator on the bootstrap node (creating __consumer_offsets on first use): pick a
    # group whose coordinator is another node.
    candidates = [f"grp-{uuid.uuid4().hex[:8]}" for _ in range(40)]

    def elsewhere():
        wire = GroupWire(bootstrap_node.host, bootstrap_node.kafka_port)
        try:
            found = wire.find_coordinator(candidates)
        finally:
            wire.close()
        ok = [c for c in found if c["error"] == 0]
        if len(ok) != len(candidates):
            return None
        return [c for c in ok if c["node_id"] != bootstrap_node.node_id]
    others = cluster.wait_for(elsewhere, 30, "FindCoordinator to answer every candidate group")
    group = others[0]["key"]
    coordinator = cluster[others[0]["node_id"]]
    assert (others[0]["host"], others[0]["port"]) == (coordinator.host, coordinator.kafka_port)
    wait_topic_everywhere(cluster, "__consumer_offsets", 6)
    # Every node names the same coordinator.
    for n in cluster:
        wire = GroupWire(n.host, n.kafka_port)
        try:
            (c,) = wire.find_coordinator([group])
        finally:
            wire.close()
        assert (c["error"], c["node_id"]) == (0, coordinator.node_id), (n.node_id, c)

    # A commit sent to the bootstrap node (not the coordinator) is refused with NOT_COORDINATOR.
    wire = GroupWire(bootstrap_node.host, bootstrap_node.kafka_port)
    try:
        codes = wire.commit(group, [(topic, 0, 1, "")])
    finally:
        wire.close()
    assert codes == {(topic, 0): E_NOT_COORDINATOR}, codes

    def consume_some(consumer, want: int, timeout: float = 60.0) -> list:
        got = []
        deadline = time.monotonic() + timeout
        while len(got) < want:
            for m in consumer.consume(num_messages=min(100, want - len(got)), timeout=0.5):
                if m.error():
                    raise KafkaException(m.error())
                got.append((m.partition(), m.offset(), m.value()))
            assert time.monotonic() < deadline, f"consumed {len(got)} of {want} in {timeout}s"
        return got

    # First member: reads part of the topic, commits what it read, leaves.
    first = group_consumer(bootstrap_node.bootstrap, group)
    first.subscribe([topic])
    try:
        part1 = consume_some(first, n_messages // 2)
        first.commit(asynchronous=False)
    finally:
        first.close()
    next_offset = {}
    for p, o, _ in part1:
        next_offset[p] = max(next_offset.get(p, 0), o + 1)

    # The committed offsets are readable from the coordinator through any bootstrap node.
    checker = group_consumer(cluster[3].bootstrap, group)
    try:
        committed = checker.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=30)
        got_committed = {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        checker.close()
    assert got_committed == next_offset

    # Second member resumes exactly after the commits and reads the rest.
    second = group_consumer(bootstrap_node.bootstrap, group)
    second.subscribe([topic])
    try:
        part2 = consume_some(second, n_messages - len(part1))
    finally:
        second.close()
    for p, o, _ in part2:
        assert o >= next_offset.get(p, 0), f"partition {p} offset {o} re-delivered after commit"
    everything = {(p, o): v for p, o, v in part1 + part2}
    assert len(everything) == len(part1) + len(part2), "a message was delivered twice"
    assert everything == acked


@pytest.mark.timeout(180)
def test_broker_only_node_joins_and_hosts_new_partitions(cluster_factory):
    cluster = cluster_factory(voters=3).start()
    cluster.wait_formed()
    extra = cluster.add_broker()  # node 4, --process-roles broker
    assert extra.node_id == 4 and not extra.voter
    leader = cluster.wait_formed()

    h = extra.health()
    assert h["controller"]["is_voter"] is False
    assert h["controller"]["is_active"] is False
    assert h["controller"]["active_controller_id"] == leader
    assert h["metadata"]["cluster_id"] == cluster.health(1)["metadata"]["cluster_id"]
    for n in cluster:
        assert {b["node_id"] for b in n.metadata()["brokers"]} == {1, 2, 3, 4}, n

    # A topic created through the broker-only node (forwarded to the active controller) places
    # partitions on it too.
    topic = unique_topic("b4")
    partitions = 8
    create_topic(extra.bootstrap, topic, partitions)
    leaders = wait_topic_everywhere(cluster, topic, partitions)
    per_node = collections.Counter(leaders.values())
    assert per_node[4] >= 1, leaders
    assert set(per_node) == {1, 2, 3, 4}, leaders
    assert max(per_node.values()) - min(per_node.values()) <= 1, leaders

    # Produce and consume with the broker-only node as the only bootstrap.
    reports = produce(extra.bootstrap, topic, messages_for(topic, 800, partitions))
    acked = {(r.partition, r.offset): r.value for r in reports}
    got = consume_partitions(extra.bootstrap, topic, range(partitions),
                             expected=dict(collections.Counter(r.partition for r in reports)), timeout=60)
    assert {(p, m.offset): m.value for p, ms in got.items() for m in ms} == acked
    assert sum(len(got[p]) for p, l in leaders.items() if l == 4) > 0

    # The quorum lists node 4 as an observer of the metadata log, the voters as voters.
    def quorum_roles():
        out = riptide_cli(cluster, "cluster", "info", "-b", extra.bootstrap, "--format", "json")
        assert out.returncode == 0, out.stderr
        roles = {r["node_id"]: r["role"] for r in json.loads(out.stdout)["quorum"]["replicas"]}
        return roles if roles.get(4) == "observer" else None
    roles = cluster.wait_for(quorum_roles, 20, "node 4 listed as an observer by `riptide cluster info`")
    assert {i: r for i, r in roles.items() if i != 4} == {
        i: ("leader" if i == leader else "follower") for i in (1, 2, 3)}, roles


@pytest.mark.timeout(120)
def test_raw_produce_to_wrong_node_is_not_leader(cluster_factory):
    cluster = cluster_factory(voters=3).start()
    topic = unique_topic("wrong")
    partitions = 3
    create_topic(cluster[1].bootstrap, topic, partitions)
    leaders = wait_topic_everywhere(cluster, topic, partitions)
    batch = kw.build_record_batch([kw.Record(value=b"hello", key=b"k")])
    for p, leader in leaders.items():
        for n in cluster:
            with kw.KafkaConnection(n.host, n.kafka_port) as conn:
                version = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.PRODUCE, 3, 9)
                resp = conn.produce(version, [(topic, [(p, batch)])], acks=-1)
            (result,) = kw.produce_partition_results(resp).values()
            if n.node_id == leader:
                assert result["error_code"] == 0, (p, n.node_id, result)
            else:
                assert result["error_code"] == E_NOT_LEADER_OR_FOLLOWER, (p, leader, n.node_id, result)
    # Exactly one record landed in each partition (the ones sent to the leaders).
    got = consume_partitions(cluster[2].bootstrap, topic, range(partitions),
                             expected={p: 1 for p in range(partitions)}, timeout=30)
    assert {p: [m.value for m in ms] for p, ms in got.items()} == {p: [b"hello"] for p in range(partitions)}

    # A topic created through one node and asked for (with auto-creation allowed) on another
    # before that node's metadata has it: the answer is the topic or a retriable
    # LEADER_NOT_AVAILABLE, never TOPIC_ALREADY_EXISTS (librdkafka fails every queued message
    # on a non-retriable topic error). Repeated, since the window is short.
    answers = collections.Counter()
    for i in range(15):
        name = unique_topic(f"race{i}")
        created = create_topics_raw(cluster[1].host, cluster[1].kafka_port, [(name, 1, 3)])
        assert created[name]["error_code"] == 0, created
        for n in (cluster[2], cluster[3]):
            with kw.KafkaConnection(n.host, n.kafka_port) as conn:
                v = kw.pick_version(conn.api_versions(0)["api_keys"], kw.ApiKey.METADATA, 4, 12)
                (t,) = conn.metadata(v, [name], True)["topics"]
            answers[t["error_code"]] += 1
    assert set(answers) <= {0, E_LEADER_NOT_AVAILABLE}, answers


@pytest.mark.timeout(280)
def test_controller_failover_rounds(cluster_factory, capsys):
    rounds = 20
    cluster = cluster_factory(voters=3).start()
    cluster.wait_converged()
    elections = []
    created = []
    for round_no in range(rounds):
        old = cluster.wait_formed()
        survivors = [n for n in cluster.voters if n.node_id != old]
        t0 = time.monotonic()
        cluster.kill9(old)

        def new_active():
            for n in survivors:
                try:
                    c = n.health(timeout=1)["controller"]
                except OSError:
                    continue
                if c["is_active"]:
                    return n.node_id
            return None
        new = cluster.wait_for(new_active, 30, f"round {round_no}: a new active controller after "
                                               f"kill -9 of {old}", interval=0.02)
        elections.append(time.monotonic() - t0)
        assert new != old

        # The new controller takes changes while the old one is down.
        topic = f"failover-{round_no}-{uuid.uuid4().hex[:6]}"
        create_topic_retrying(cluster, cluster.bootstrap(survivors), topic, 1)
        created.append(topic)

        cluster.restart(old)  # starts the killed node on its data dir
        state = cluster.wait_converged(timeout=60)
        assert state["leader"] in {1, 2, 3}

    # Every node holds every topic created during the rounds.
    for n in cluster:
        names = {t["name"] for t in n.metadata()["topics"] if t["error_code"] == 0}
        assert set(created) <= names, (n.node_id, set(created) - names)
    p50, p99 = percentile(elections, 50), percentile(elections, 99)
    with capsys.disabled():
        print(f"\ncontroller failover over {rounds} rounds (kill -9 -> new active controller seen): "
              f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {max(elections) * 1000:.0f} ms")


@pytest.mark.timeout(180)
def test_quorum_loss_fails_create_topics_retriably_then_recovers(cluster_factory):
    request_timeout_ms = 3000
    cluster = cluster_factory(voters=3, extra_args=[
        "--controller-request-timeout-ms", str(request_timeout_ms)]).start()
    leader = cluster.wait_formed()
    # Keep one follower; kill the active controller and the other follower.
    remaining = next(n for n in cluster.voters if n.node_id != leader)
    down = [n for n in cluster.voters if n is not remaining]
    for n in down:
        cluster.kill9(n)
    cluster.wait_for(lambda: not remaining.health()["controller"]["is_active"]
                     and remaining.health()["controller"]["active_controller_id"] != leader
                     or None, 30, f"node {remaining.node_id} to notice the active controller is gone")

    # Metadata reads still work from the last image.
    assert {b["node_id"] for b in remaining.metadata()["brokers"]} >= {remaining.node_id}

    # Raw CreateTopics: a retriable error within the controller request timeout (plus slack),
    # not a hang.
    name = unique_topic("noquorum")
    t0 = time.monotonic()
    result = create_topics_raw(remaining.host, remaining.kafka_port, [(name, 1, 1)], timeout_ms=30000)
    elapsed = time.monotonic() - t0
    assert result[name]["error_code"] in (E_REQUEST_TIMED_OUT, E_NOT_CONTROLLER), result
    assert elapsed < request_timeout_ms / 1000 + 5, f"CreateTopics answered after {elapsed:.1f}s"

    # confluent-kafka's AdminClient surfaces a retriable error within its request timeout.
    client_timeout = 10.0
    t0 = time.monotonic()
    with pytest.raises(KafkaException) as failed:
        create_topic(remaining.bootstrap, unique_topic("noquorum-admin"), 1, timeout=client_timeout)
    elapsed = time.monotonic() - t0
    code = failed.value.args[0].code()
    assert code in (KafkaError.REQUEST_TIMED_OUT, KafkaError.NOT_CONTROLLER, KafkaError._TIMED_OUT), \
        failed.value
    assert elapsed < client_timeout + 10, f"AdminClient failed after {elapsed:.1f}s"

    # One voter back: a majority again, a controller, and CreateTopics succeeds.
    back = down[0]
    back.start()
    cluster.wait_formed(nodes=[remaining, back])
    name = unique_topic("quorum-back")
    create_topic_retrying(cluster, remaining.bootstrap, name, 2)
    wait_topic_everywhere(cluster, name, 2, nodes=[remaining, back])


def _partition_data_survives_restart(cluster_factory, hard: bool):
    cluster = cluster_factory(voters=3).start()
    leader = cluster.wait_formed()
    topic = unique_topic("restart")
    partitions = 3
    create_topic(cluster[1].bootstrap, topic, partitions)
    leaders = wait_topic_everywhere(cluster, topic, partitions)
    reports = produce(cluster[1].bootstrap, topic, messages_for(topic, 600, partitions))
    acked = {(r.partition, r.offset): r.value for r in reports}

    # Restart a node that is not the active controller (this test is about its data, not about
    # failover).
    victim = next(n for n in cluster.voters if n.node_id != leader)
    others = [n for n in cluster if n is not victim]
    its_partitions = sorted(p for p, l in leaders.items() if l == victim.node_id)
    assert its_partitions, leaders
    if hard:
        victim.kill9()
    else:
        victim.stop()  # SIGTERM: controlled shutdown, exit code 0

    # Down (fenced: at once on SIGTERM, once the session expires after kill -9), its RF=1
    # partitions have no leader; the others keep theirs.
    def leaderless():
        for n in others:
            md = n.metadata([topic])
            (t,) = md["topics"]
            by_index = {p["partition_index"]: p for p in t["partitions"]}
            for p, part in by_index.items():
                if p in its_partitions:
                    if not (part["leader_id"] == -1 and part["error_code"] == E_LEADER_NOT_AVAILABLE):
                        return None
                elif (part["leader_id"], part["error_code"]) != (leaders[p], 0):
                    return None
            h = n.health()
            if victim.node_id not in h["nodes_down"]:
                return None
            listed = {(x["topic"], x["partition"]) for x in h["leaderless_partitions"]}
            if listed != {(topic, p) for p in its_partitions}:
                return None
        return True
    cluster.wait_for(leaderless, cluster.session_ms / 1000 + 15,
                     f"partitions {its_partitions} of node {victim.node_id} to be leaderless")

    victim.start()
    cluster.wait_formed()
    assert wait_topic_everywhere(cluster, topic, partitions) == leaders
    for n in cluster:
        h = n.health()
        assert h["leaderless_partitions"] == [] and h["nodes_down"] == [], h
    got = consume_partitions(others[0].bootstrap, topic, range(partitions),
                             expected=dict(collections.Counter(r.partition for r in reports)), timeout=60)
    assert {(p, m.offset): m.value for p, ms in got.items() for m in ms} == acked


@pytest.mark.timeout(120)
def test_sigterm_restart_keeps_data_and_partitions_are_leaderless_meanwhile(cluster_factory):
    _partition_data_survives_restart(cluster_factory, hard=False)


@pytest.mark.timeout(120)
def test_kill9_restart_keeps_data_and_partitions_are_leaderless_after_session_expiry(cluster_factory):
    _partition_data_survives_restart(cluster_factory, hard=True)


@pytest.mark.timeout(120)
def test_cluster_info_lists_voters(cluster_factory):
    cluster = cluster_factory(voters=3).start()
    leader = cluster.wait_formed()
    cluster_id = cluster.health(1)["metadata"]["cluster_id"]

    out = riptide_cli(cluster, "cluster", "info", "-b", cluster[2].bootstrap, "--format", "json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["cluster_id"] == cluster_id
    assert {b["node_id"] for b in info["brokers"]} == {1, 2, 3}
    quorum = info["quorum"]
    assert quorum["leader_id"] == leader, quorum
    assert quorum["term"] == cluster.health(leader)["controller"]["term"]
    roles = {r["node_id"]: r["role"] for r in quorum["replicas"]}
    assert roles == {i: ("leader" if i == leader else "follower") for i in (1, 2, 3)}, quorum

    # The table form names every voter in the quorum section.
    out = riptide_cli(cluster, "cluster", "info", "-b", cluster.bootstrap())
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "CONTROLLER QUORUM" in text, text
    section = text.split("CONTROLLER QUORUM", 1)[1]
    rows = [line.split() for line in section.splitlines()[2:] if line.strip()]
    assert {(int(r[0]), r[1]) for r in rows} == {
        (i, "leader" if i == leader else "follower") for i in (1, 2, 3)}, text
    assert cluster_id in text
