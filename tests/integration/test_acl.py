"""Kafka ACLs with the authorizer on: a broker with a PLAINTEXT and a SASL_PLAINTEXT listener,
SCRAM users admin (a super user) and alice. CreateAcls/DescribeAcls/DeleteAcls round trip with
confluent-kafka's AdminClient; alice without ACLs sees no topics and cannot produce; a grant and
a revocation apply to the same live producer; a consumer without READ on its group gets
GROUP_AUTHORIZATION_FAILED; DENY beats ALLOW; PREFIXED patterns; a denied transactional id;
`riptide acl add|list|remove`; SECURITY_DISABLED without the authorizer.
"""

import json
import subprocess

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType,
                                   NewTopic, ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialUpsertion, AdminClient)

import kafka_wire as kw
from helpers import admin_client, base_conf, unique_topic, wait_until
from riptide_broker import free_port

PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret"}


@pytest.fixture
def acl_broker(broker_factory):
    """Users are created while the authorizer is off (as Kafka bootstraps SCRAM users before
    ACLs exist), then the broker restarts with the authorizer on and User:admin as super user."""
    broker = broker_factory(start=False)
    broker.sasl_port = free_port()
    broker.extra_args += ["--listeners",
                          f"PLAINTEXT://{broker.bootstrap},SASL_PLAINTEXT://127.0.0.1:{broker.sasl_port}"]
    broker.start()
    upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                            password.encode())
               for user, password in PASSWORDS.items()]
    admin = admin_client(broker.bootstrap)  # kept alive until the futures resolve
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)
    broker.stop()
    broker.extra_args += ["--authorizer-enabled", "true", "--super-users", "User:admin"]
    broker.start()
    return broker


def sasl_conf(broker, user, **extra):
    return base_conf(f"127.0.0.1:{broker.sasl_port}", **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": user, "sasl.password": PASSWORDS[user], **extra})


def admin_of(broker, user="admin"):
    return AdminClient(sasl_conf(broker, user))


def create_topics(admin, *names):
    for future in admin.create_topics([NewTopic(n, 1, 1) for n in names]).values():
        future.result(30)


def allow(principal, operation, name, restype=ResourceType.TOPIC, pattern=ResourcePatternType.LITERAL,
          permission=AclPermissionType.ALLOW):
    return AclBinding(restype, name, pattern, principal, "*", operation, permission)


def grant(admin, *bindings):
    for future in admin.create_acls(list(bindings)).values():
        assert future.result(30) is None


def revoke(admin, *bindings):
    """Deletes exactly these bindings; returns what the broker removed."""
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host,
                                b.operation, b.permission_type) for b in bindings]
    removed = []
    for future in admin.delete_acls(filters).values():
        removed += future.result(30)
    return removed


def produce_one(producer, topic, value=b"v"):
    """Produces one message, flushes, and returns the delivery error (None on success)."""
    outcome = []
    producer.produce(topic, value=value, partition=0, on_delivery=lambda err, msg: outcome.append(err))
    producer.flush(30)
    assert outcome, "no delivery report"
    return outcome[0]


def describe_all_with_kafka_python(bootstrap, **conf):
    """DescribeAcls of every binding through kafka-python, which raises the response's error."""
    from kafka.admin import (ACLFilter, ACLOperation, ACLPermissionType, ACLResourcePatternType,
                             KafkaAdminClient, ResourcePatternFilter)
    from kafka.admin import ResourceType as KpResourceType
    client = KafkaAdminClient(bootstrap_servers=bootstrap, **conf)
    try:
        return client.describe_acls(ACLFilter(
            principal=None, host=None, operation=ACLOperation.ANY, permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(KpResourceType.ANY, None, ACLResourcePatternType.ANY)))
    finally:
        client.close()


def consume_until(consumer, value, timeout_s, what):
    """Polls until a record with `value` arrives (error events are skipped)."""
    got = []
    wait_until(lambda: got.extend(m.value() for m in consumer.consume(10, 0.5) if not m.error())
               or value in got, timeout_s, what)


def error_code(err):
    return err.code() if err is not None else None


@pytest.mark.timeout(120)
def test_create_describe_delete_round_trip(acl_broker):
    admin = admin_of(acl_broker)
    topic = unique_topic("acl-rt")
    bindings = [allow("User:alice", AclOperation.READ, topic),
                allow("User:alice", AclOperation.WRITE, "pfx-", pattern=ResourcePatternType.PREFIXED),
                allow("User:bob", AclOperation.READ, "grp", restype=ResourceType.GROUP,
                      permission=AclPermissionType.DENY),
                allow("User:alice", AclOperation.IDEMPOTENT_WRITE, "kafka-cluster",
                      restype=ResourceType.BROKER)]
    grant(admin, *bindings)
    everything = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                  AclOperation.ANY, AclPermissionType.ANY)
    described = admin.describe_acls(everything).result(30)
    assert sorted(map(str, described)) == sorted(map(str, bindings))
    # MATCH finds the bindings that apply to a resource: the literal one, not the prefixed one.
    matched = admin.describe_acls(AclBindingFilter(
        ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None, AclOperation.ANY,
        AclPermissionType.ANY)).result(30)
    assert [b.name for b in matched] == [topic]
    # Creating a binding twice is fine and stores it once.
    grant(admin, bindings[0])
    assert len(admin.describe_acls(everything).result(30)) == 4
    # alice is no super user: CLUSTER_AUTHORIZATION_FAILED for create and describe.
    alice_admin = admin_of(acl_broker, "alice")
    with pytest.raises(KafkaException) as denied:
        for future in alice_admin.create_acls([allow("User:alice", AclOperation.ALL, "*")]).values():
            future.result(30)
    assert denied.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # librdkafka drops DescribeAcls' top-level error (an empty list); kafka-python raises it.
    from kafka.errors import ClusterAuthorizationFailedError
    with pytest.raises(ClusterAuthorizationFailedError):
        describe_all_with_kafka_python(
            f"127.0.0.1:{acl_broker.sasl_port}", security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
            sasl_plain_password=PASSWORDS["alice"])

    removed = revoke(admin, bindings[0], bindings[1])
    assert sorted(map(str, removed)) == sorted(map(str, bindings[:2]))
    left = admin.delete_acls([everything])[everything].result(30)
    assert sorted(map(str, left)) == sorted(map(str, bindings[2:]))
    assert admin.describe_acls(everything).result(30) == []


@pytest.mark.timeout(120)
def test_invalid_bindings_get_invalid_request(acl_broker):
    """Bindings the client library lets through but Kafka refuses: a cluster resource named
    other than kafka-cluster, a host that is not an IP address."""
    admin = admin_of(acl_broker)
    bad = AclBinding(ResourceType.BROKER, "not-the-cluster", ResourcePatternType.LITERAL, "User:alice",
                     "*", AclOperation.ALTER, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as refused:
        for future in admin.create_acls([bad]).values():
            future.result(30)
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST
    bad_host = AclBinding(ResourceType.TOPIC, "t", ResourcePatternType.LITERAL, "User:alice",
                          "not-an-ip", AclOperation.READ, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as refused:
        for future in admin.create_acls([bad_host]).values():
            future.result(30)
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST


@pytest.mark.timeout(180)
def test_grant_and_revoke_apply_to_a_live_producer(acl_broker):
    admin = admin_of(acl_broker)
    topic = unique_topic("acl-live")
    create_topics(admin, topic)
    # Without ACLs alice sees no topic at all.
    alice_admin = admin_of(acl_broker, "alice")
    assert topic not in alice_admin.list_topics(timeout=20).topics
    assert alice_admin.list_topics(timeout=20).topics == {}
    # Metadata refreshes often so the producer sees each change on its open connection.
    producer = Producer(sasl_conf(acl_broker, "alice", **{
        "topic.metadata.refresh.interval.ms": 300, "message.timeout.ms": 10000, "retries": 0}))
    assert error_code(produce_one(producer, topic)) == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # DESCRIBE only: the topic is visible, the Produce itself is refused per partition.
    describe = allow("User:alice", AclOperation.DESCRIBE, topic)
    grant(admin, describe)
    wait_until(lambda: topic in alice_admin.list_topics(timeout=10).topics, 20, "alice to see the topic")
    wait_until(lambda: error_code(produce_one(producer, topic)) == KafkaError.TOPIC_AUTHORIZATION_FAILED,
               30, "a produce refused with TOPIC_AUTHORIZATION_FAILED")

    write = allow("User:alice", AclOperation.WRITE, topic)
    grant(admin, write)
    wait_until(lambda: produce_one(producer, topic, b"granted") is None, 30,
               "the same producer to write after the grant")

    assert revoke(admin, write)
    wait_until(lambda: error_code(produce_one(producer, topic)) == KafkaError.TOPIC_AUTHORIZATION_FAILED,
               30, "the same producer to be refused after the revocation")
    producer.flush(10)

    # What was written while granted is there, read by the super user.
    consumer = Consumer(sasl_conf(acl_broker, "admin", **{"group.id": unique_topic("g")}))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        consume_until(consumer, b"granted", 30, "the granted message")
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_kip848_member_may_not_subscribe_to_a_topic_it_cannot_describe(acl_broker):
    """ConsumerGroupHeartbeat with a subscribed topic the principal may not DESCRIBE is refused
    with TOPIC_AUTHORIZATION_FAILED (the assignment would reveal the topic); once alice may read
    the topic, the same group consumes it."""
    admin = admin_of(acl_broker)
    topic = unique_topic("acl-kip848")
    group = unique_topic("g848-alice")
    create_topics(admin, topic)
    assert produce_one(Producer(sasl_conf(acl_broker, "admin")), topic, b"hello") is None
    grant(admin, allow("User:alice", AclOperation.READ, group, restype=ResourceType.GROUP))
    conf = {"group.id": group, "group.protocol": "consumer", "auto.offset.reset": "earliest"}
    errors = []
    consumer = Consumer(sasl_conf(acl_broker, "alice", **conf,
                                  error_cb=lambda e: errors.append(e.code())))
    try:
        consumer.subscribe([topic])

        def topic_denied():
            message = consumer.poll(0.5)
            if message is not None and message.error():
                errors.append(message.error().code())
            assert message is None or message.error(), "a record of an undescribable topic"
            return KafkaError.TOPIC_AUTHORIZATION_FAILED in errors
        wait_until(topic_denied, 30, "TOPIC_AUTHORIZATION_FAILED")
    finally:
        consumer.close()

    grant(admin, allow("User:alice", AclOperation.READ, topic))
    consumer = Consumer(sasl_conf(acl_broker, "alice", **conf))
    try:
        consumer.subscribe([topic])
        consume_until(consumer, b"hello", 60, "the group to consume")
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_consumer_without_group_read_gets_group_authorization_failed(acl_broker):
    admin = admin_of(acl_broker)
    topic = unique_topic("acl-group")
    group = unique_topic("g-alice")
    create_topics(admin, topic)
    producer = Producer(sasl_conf(acl_broker, "admin"))
    assert produce_one(producer, topic, b"hello") is None
    grant(admin, allow("User:alice", AclOperation.READ, topic))
    errors = []
    consumer = Consumer(sasl_conf(acl_broker, "alice", **{
        "group.id": group, "auto.offset.reset": "earliest",
        "error_cb": lambda e: errors.append(e.code())}))
    try:
        consumer.subscribe([topic])

        def group_denied():
            message = consumer.poll(0.5)
            if message is not None and message.error():
                errors.append(message.error().code())
            return KafkaError.GROUP_AUTHORIZATION_FAILED in errors
        wait_until(group_denied, 30, "GROUP_AUTHORIZATION_FAILED")
    finally:
        consumer.close()

    # With READ on the group the same group consumes.
    grant(admin, allow("User:alice", AclOperation.READ, group, restype=ResourceType.GROUP))
    consumer = Consumer(sasl_conf(acl_broker, "alice", **{"group.id": group, "auto.offset.reset": "earliest"}))
    try:
        consumer.subscribe([topic])
        consume_until(consumer, b"hello", 60, "the group to consume")
    finally:
        consumer.close()


@pytest.mark.timeout(120)
def test_deny_beats_allow_and_prefixed_patterns(acl_broker):
    admin = admin_of(acl_broker)
    base = unique_topic("acl-pfx")
    allowed, denied, outside = f"{base}-open", f"{base}-closed", unique_topic("acl-other")
    create_topics(admin, allowed, denied, outside)
    grant(admin,
          allow("User:alice", AclOperation.WRITE, f"{base}-", pattern=ResourcePatternType.PREFIXED),
          allow("User:*", AclOperation.WRITE, denied, permission=AclPermissionType.DENY),
          allow("User:alice", AclOperation.DESCRIBE, "*"))
    producer = Producer(sasl_conf(acl_broker, "alice", **{"message.timeout.ms": 10000, "retries": 0}))
    assert produce_one(producer, allowed) is None
    assert error_code(produce_one(producer, denied)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert error_code(produce_one(producer, outside)) == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # The super user passes the DENY.
    super_producer = Producer(sasl_conf(acl_broker, "admin"))
    assert produce_one(super_producer, denied) is None


@pytest.mark.timeout(120)
def test_transactional_id_denied(acl_broker):
    admin = admin_of(acl_broker)
    topic = unique_topic("acl-txn")
    create_topics(admin, topic)
    grant(admin, allow("User:alice", AclOperation.WRITE, topic))
    producer = Producer(sasl_conf(acl_broker, "alice", **{"transactional.id": unique_topic("tx")}))
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(30)
    assert refused.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED

    # With WRITE on the transactional id the transaction commits.
    txn_id = unique_topic("tx-ok")
    grant(admin, allow("User:alice", AclOperation.WRITE, txn_id, restype=ResourceType.TRANSACTIONAL_ID))
    producer = Producer(sasl_conf(acl_broker, "alice", **{"transactional.id": txn_id}))
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"in-txn", partition=0)
    producer.commit_transaction(30)


@pytest.mark.timeout(150)
def test_riptide_acl_cli(acl_broker):
    """The CLI speaks PLAINTEXT: User:ANONYMOUS, refused until the super user grants it ALTER
    and DESCRIBE on the cluster."""
    def cli(*args, ok=True):
        done = subprocess.run([str(acl_broker.binary), "acl", *args, "--format", "json",
                               "-b", acl_broker.bootstrap], capture_output=True, text=True, timeout=60)
        if ok:
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)
        assert done.returncode == 1, done.stdout
        return done.stderr

    topic = unique_topic("acl-cli")
    add = ["add", "--allow-principal", "User:alice", "--operation", "read", "--operation", "describe",
           "--topic", topic]
    assert "uthorization" in cli(*add, ok=False)
    grant(admin_of(acl_broker),
          allow("User:ANONYMOUS", AclOperation.ALTER, "kafka-cluster", restype=ResourceType.BROKER),
          allow("User:ANONYMOUS", AclOperation.DESCRIBE, "kafka-cluster", restype=ResourceType.BROKER))
    added = cli(*add)["added"]
    assert {a["operation"] for a in added} == {"READ", "DESCRIBE"}
    cli("add", "--deny-principal", "User:bob", "--operation", "write", "--topic", "logs-",
        "--resource-pattern-type", "prefixed", "--host", "10.0.0.1")
    listed = cli("list", "--topic", topic)["acls"]
    assert sorted((a["principal"], a["operation"], a["permission"]) for a in listed) == \
        [("User:alice", "DESCRIBE", "ALLOW"), ("User:alice", "READ", "ALLOW")]
    everything = cli("list")["acls"]
    assert {"principal": "User:bob", "host": "10.0.0.1", "resource_type": "TOPIC",
            "resource_name": "logs-", "pattern_type": "PREFIXED", "operation": "WRITE",
            "permission": "DENY"} in everything
    removed = cli("remove", "--topic", topic, "--allow-principal", "User:alice", "--operation", "read")
    assert [(r["operation"], r["resource_name"]) for r in removed["removed"]] == [("READ", topic)]
    assert [a["operation"] for a in cli("list", "--topic", topic)["acls"]] == ["DESCRIBE"]
    # The broker's check stands behind the CLI's: an invalid host is refused either way.
    assert "host" in cli("add", "--allow-principal", "User:x", "--operation", "read", "--topic", topic,
                         "--host", "nowhere", ok=False)


@pytest.mark.timeout(60)
def test_security_disabled_without_authorizer(broker):
    admin = admin_client(broker.bootstrap)
    from kafka.errors import SecurityDisabledError
    with pytest.raises(SecurityDisabledError):
        describe_all_with_kafka_python(broker.bootstrap)
    with pytest.raises(KafkaException) as disabled:
        for future in admin.create_acls([allow("User:alice", AclOperation.READ, "t")]).values():
            future.result(30)
    assert disabled.value.args[0].code() == KafkaError.SECURITY_DISABLED
    # The APIs are advertised.
    with kw.KafkaConnection(broker.host, broker.port) as conn:
        keys = conn.api_versions(0)["api_keys"]
    assert keys[29] == (1, 3) and keys[30] == (1, 3) and keys[31] == (1, 3)


@pytest.mark.timeout(240)
def test_acls_replicate_and_brokers_as_super_users_keep_replicating(cluster_factory):
    """Three nodes with the authorizer on. Brokers fetch from leaders over the PLAINTEXT listener
    as User:ANONYMOUS, which is therefore a super user: acks=all writes to a topic of replication
    factor 3 are answered (the followers' fetches pass CLUSTER_ACTION). An ACL created through one
    node is in every node's metadata image."""
    cluster = cluster_factory(voters=3, extra_args=[
        "--authorizer-enabled", "true", "--super-users", "User:ANONYMOUS",
        "--replica-fetch-wait-max-ms", "200"]).start()
    cluster.wait_formed()
    first = cluster.voters[0]
    admin = admin_client(first.bootstrap)
    topic = unique_topic("acl-rf3")
    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(40)
    producer = Producer(base_conf(cluster.bootstrap(), **{"acks": "all", "message.timeout.ms": 20000}))
    wait_until(lambda: produce_one(producer, topic) is None, 90, "an acks=all write on three replicas")
    grant(admin, allow("User:alice", AclOperation.READ, topic))
    for node in cluster:
        wait_until(lambda: [a.resource_pattern.resource_name
                            for a in describe_all_with_kafka_python(node.bootstrap)[0]] == [topic],
                   30, f"the ACL in node {node.node_id}'s image")
