"""@platformatic/kafka (pure JavaScript client, node/platformatic_check.js) against the real broker:
admin (create / list / metadata / describe configs / list offsets / delete), 10,000 keyed
messages with acks=-1 through a consumer group, committed offsets surviving a consumer restart,
idempotent producers, transactions (commit / abort / commit, read_committed and read_uncommitted
consumers, consume-transform-produce with addConsumer / addOffset). The node script does the
client work and prints JSON; the checks are in node_clients.py. The package is ESM that the
CommonJS script loads with require(): node >= 20.19."""

import pytest

from helpers import unique_topic
from node_clients import (PARTITIONS, TXN_BROKER_ARGS, check_admin_metadata, check_idempotent, check_resume,
                          check_roundtrip, check_txn_commit_abort_commit, check_txn_consume_transform_produce,
                          error_ids, node_binary, run_node, unsigned_murmur2_partition)

SCRIPT = "platformatic_check.js"


@pytest.fixture(scope="module")
def node():
    return node_binary("@platformatic/kafka", min_version=(20, 19))


@pytest.mark.timeout(300)
def test_platformatic_admin(broker, node):
    topic = unique_topic("plt-admin")
    r = run_node(node, SCRIPT, "admin", broker.bootstrap, topic=topic)
    assert r["version"] == "1.35.0"
    node_ids = r["cluster"]["brokers"]
    assert len(node_ids) == 1 and r["cluster"]["controllerId"] == node_ids[0], r["cluster"]
    (created,) = r["created"]
    assert (created["name"], created["partitions"], created["replicas"]) == (topic, PARTITIONS, 1), created
    assert created["configuration"]["retention.ms"] == "3600000", created["configuration"]
    assert r["createdAgain"]["ok"] is False, r["createdAgain"]
    assert "TOPIC_ALREADY_EXISTS" in error_ids(r["createdAgain"]["error"]), r["createdAgain"]
    assert r["listed"] is True
    md = r["metadata"]
    assert md["partitionsCount"] == PARTITIONS and md["id"] == created["id"], md
    check_admin_metadata(md["partitions"], node_ids)
    (cfg,) = r["configs"]
    assert cfg["name"] == topic
    assert cfg["entries"]["retention.ms"] == "3600000", cfg
    assert cfg["entries"]["cleanup.policy"] == "delete", cfg
    assert r["offsets"] == {str(p): {"high": 0} for p in range(PARTITIONS)}
    assert r["goneAfterDelete"] is True


@pytest.mark.timeout(300)
def test_platformatic_roundtrip_with_consumer_group(broker, node):
    topic, group = unique_topic("plt-rt"), unique_topic("plt-rt-group")
    count = 10000
    r = run_node(node, SCRIPT, "roundtrip", broker.bootstrap, topic=topic, group=group, count=count)
    print(f"@platformatic/kafka: produced {count} in {r['produce_ms']} ms, consumed in {r['consume_ms']} ms")
    # Its default partitioner: unsigned murmur2 modulo the partition count.
    check_roundtrip(r, count, unsigned_murmur2_partition)
    assert r["joins"], "the consumer never joined its group"
    assert all(j["assignments"] == [{"topic": topic, "partitions": list(range(PARTITIONS))}] for j in r["joins"]), \
        r["joins"]
    (g,) = r["group"]
    assert (g["groupId"], g["state"], g["protocolType"], g["members"]) == (group, "STABLE", "consumer", 1), g


@pytest.mark.timeout(300)
def test_platformatic_committed_offsets_survive_consumer_restart(broker, node):
    topic, group = unique_topic("plt-resume"), unique_topic("plt-resume-group")
    r = run_node(node, SCRIPT, "resume", broker.bootstrap, topic=topic, group=group, count=3000)
    check_resume(r, 3000)


@pytest.mark.timeout(300)
def test_platformatic_idempotent_producer(broker, node):
    topic, group = unique_topic("plt-idem"), unique_topic("plt-idem-group")
    r = run_node(node, SCRIPT, "idempotent", broker.bootstrap, topic=topic, group=group, count=5000)
    pids = check_idempotent(r, broker, topic)
    assert [p["producerId"] for p in r["producers"]] == [pids[0], pids[1]], (r["producers"], pids)


@pytest.mark.timeout(300)
def test_platformatic_transactions(broker_factory, node):
    """@platformatic/kafka's transactions (Producer with transactionalId + idempotent,
    beginTransaction / send / commit / abort): a committed, an aborted and a committed transaction
    over 3 partitions, read by a read_committed consumer (exactly the committed records, past the
    markers) and a read_uncommitted one (every record); then consume-transform-produce: records
    of a read_committed group consumer become transactions with addConsumer (AddOffsetsToTxn)
    and addOffset (TxnOffsetCommit), the group's committed offsets end at the input's end and the
    output holds each transformed record once.

    The client's first InitProducerId for a transactional id carries producer id 0 and epoch 0
    (its defaults) rather than -1/-1; Kafka accepts that for an id it has no producer for yet
    (the new id's epoch is -1, so any expected producer is valid) and answers a new producer id
    with epoch 0."""
    broker = broker_factory(*TXN_BROKER_ARGS)
    topic, group = unique_topic("plt-txn"), unique_topic("plt-txn-group")
    r = run_node(node, SCRIPT, "txn", broker.bootstrap, topic=topic, group=group, count=300)
    print(f"@platformatic/kafka: transactions {[(ph['tag'], ph['outcome'], ph['ms']) for ph in r['basic']['phases']]} ms; "
          f"consume-transform-produce: {len(r['ctp']['txns'])} transactions in {r['ctp']['transform_ms']} ms, "
          f"group offsets visible after {r['ctp']['committed_polls']} polls")
    pid = check_txn_commit_abort_commit(r, broker, topic)
    # One InitProducerId for the three transactions: the producer id and epoch on the log.
    assert {(ph["producer"]["producerId"], ph["producer"]["producerEpoch"]) for ph in r["basic"]["phases"]} == {(pid, 0)}, \
        r["basic"]["phases"]
    assert {int(p): o for p, o in r["basic"]["hw"].items()} == {int(p): o for p, o in r["basic"]["lso"].items()}
    check_txn_consume_transform_produce(r, broker, topic, unsigned_murmur2_partition)
