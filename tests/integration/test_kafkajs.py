"""KafkaJS (pure JavaScript client, node/kafkajs_check.js) against the real broker: admin
(create / list / describe / describe configs / delete), 10,000 keyed messages with acks=-1 and
gzip through a consumer group, committed offsets surviving a consumer restart, idempotent
producers, transactions (commit / abort / commit, read_committed and read_uncommitted consumers,
consume-transform-produce with sendOffsets). The node script does the client work and prints
JSON; the checks are in node_clients.py."""

import pytest

from helpers import unique_topic
from node_clients import (GZIP, PARTITIONS, TXN_BROKER_ARGS, check_admin_metadata, check_idempotent, check_resume,
                          check_roundtrip, check_txn_commit_abort_commit, check_txn_consume_transform_produce,
                          java_partition, node_binary, run_node, stored_batches)

SCRIPT = "kafkajs_check.js"


@pytest.fixture(scope="module")
def node():
    return node_binary("kafkajs")


@pytest.mark.timeout(300)
def test_kafkajs_admin(broker, node):
    topic = unique_topic("kjs-admin")
    r = run_node(node, SCRIPT, "admin", broker.bootstrap, topic=topic)
    assert r["version"] == "2.2.4"
    brokers = r["cluster"]["brokers"]
    assert [(b["host"], b["port"]) for b in brokers] == [(broker.host, broker.port)], brokers
    assert r["cluster"]["controller"] == brokers[0]["nodeId"]
    assert r["created"] is True
    assert r["createdAgain"] is False, "a second CreateTopics must answer TOPIC_ALREADY_EXISTS"
    assert r["listed"] is True
    (md,) = r["metadata"]
    assert md["name"] == topic
    assert all(p["errorCode"] == 0 for p in md["partitions"]), md
    check_admin_metadata(md["partitions"], [brokers[0]["nodeId"]])
    (cfg,) = r["configs"]
    assert cfg["errorCode"] == 0 and cfg["name"] == topic
    assert cfg["entries"]["retention.ms"] == "3600000", cfg
    assert cfg["entries"]["cleanup.policy"] == "delete", cfg
    assert r["offsets"] == {str(p): {"low": 0, "high": 0} for p in range(PARTITIONS)}
    assert r["goneAfterDelete"] is True


@pytest.mark.timeout(300)
def test_kafkajs_gzip_roundtrip_with_consumer_group(broker, node):
    topic, group = unique_topic("kjs-rt"), unique_topic("kjs-rt-group")
    count = 10000
    r = run_node(node, SCRIPT, "roundtrip", broker.bootstrap, topic=topic, group=group, count=count)
    print(f"kafkajs: produced {count} in {r['produce_ms']} ms, consumed in {r['consume_ms']} ms")
    # KafkaJS's DefaultPartitioner is the Java client's murmur2 partitioner.
    hw = check_roundtrip(r, count, java_partition)
    assert r["joins"], "the consumer never joined its group"
    assert all(j["assignment"] == {topic: list(range(PARTITIONS))} for j in r["joins"]), r["joins"]
    assert r["group"] == [{"groupId": group, "state": "Stable", "protocolType": "consumer",
                           "protocol": "RoundRobinAssigner", "members": 1}], r["group"]
    # The broker stores KafkaJS's gzip batches as they came.
    for p in range(PARTITIONS):
        batches = stored_batches(broker, topic, p)
        assert sum(b.record_count for b in batches) == hw[p]
        assert all(b.crc_ok for b in batches)
        assert {b.compression for b in batches} == {GZIP}, f"partition {p}: codecs {[b.compression for b in batches]}"


@pytest.mark.timeout(300)
def test_kafkajs_committed_offsets_survive_consumer_restart(broker, node):
    topic, group = unique_topic("kjs-resume"), unique_topic("kjs-resume-group")
    r = run_node(node, SCRIPT, "resume", broker.bootstrap, topic=topic, group=group, count=3000)
    check_resume(r, 3000)


@pytest.mark.timeout(300)
def test_kafkajs_idempotent_producer(broker, node):
    topic, group = unique_topic("kjs-idem"), unique_topic("kjs-idem-group")
    r = run_node(node, SCRIPT, "idempotent", broker.bootstrap, topic=topic, group=group, count=5000)
    pids = check_idempotent(r, broker, topic)
    # KafkaJS decodes the same batch headers: producer id per record, sequence = offset for the
    # first producer (it started every partition at sequence 0 on an empty topic).
    for row in r["consumed"]:
        p, off, _key, value, pid, epoch, seq = row
        producer = 0 if int(value.split("|")[2]) < r["count"] else 1
        assert (pid, epoch) == (pids[producer], 0), row
        if producer == 0:
            assert seq == off, row


@pytest.mark.timeout(300)
def test_kafkajs_transactions(broker_factory, node):
    """KafkaJS's transactional producer (idempotent, maxInFlightRequests 1): a committed, an
    aborted and a committed transaction over 3 partitions, read by a read_committed consumer
    (exactly the committed records, past the markers) and a read_uncommitted one (every record);
    then consume-transform-produce: a read_committed group consumer's batches become
    transactions with sendOffsets, the group's committed offsets end at the input's end and the
    output holds each transformed record once."""
    broker = broker_factory(*TXN_BROKER_ARGS)
    topic, group = unique_topic("kjs-txn"), unique_topic("kjs-txn-group")
    r = run_node(node, SCRIPT, "txn", broker.bootstrap, topic=topic, group=group, count=300)
    print(f"kafkajs: transactions {[(ph['tag'], ph['outcome'], ph['ms']) for ph in r['basic']['phases']]} ms; "
          f"consume-transform-produce: {len(r['ctp']['txns'])} transactions in {r['ctp']['transform_ms']} ms, "
          f"group offsets visible after {r['ctp']['committed_polls']} polls")
    check_txn_commit_abort_commit(r, broker, topic)
    # KafkaJS's DefaultPartitioner placed the input; each transaction wrote its batch's partition.
    check_txn_consume_transform_produce(r, broker, topic, java_partition)
    assert all(len(t["ranges"]) == 1 for t in r["ctp"]["txns"]), "one input partition per fetched batch"
