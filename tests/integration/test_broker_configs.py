"""Dynamic broker configs, as Kafka has them: AlterConfigs / IncrementalAlterConfigs on BROKER
resources, per broker (its id) and cluster-wide (the empty name); DescribeConfigs with sources
and synonyms; validate_only; Kafka's refusals; values kept across a restart and shared by every
node; and their effect on topics that do not set the key themselves."""

import json
import subprocess

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import (AlterConfigOpType, ConfigEntry, ConfigResource, ConfigSource,
                                   ResourceType)

import kafka_wire as kw
from cluster import wait_for
from helpers import admin_client, create_topic, unique_topic

INVALID_REQUEST = 42
INVALID_CONFIG = 40
MESSAGE_TOO_LARGE = 10
DESCRIBE_CONFIGS = 32

DYNAMIC_BROKER = ConfigSource.DYNAMIC_BROKER_CONFIG.value
DYNAMIC_DEFAULT = ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value
STATIC = ConfigSource.STATIC_BROKER_CONFIG.value
DEFAULT = ConfigSource.DEFAULT_CONFIG.value
TOPIC = ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def describe_raw(bootstrap, resource_type, name, keys=None):
    """DescribeConfigs v1 with include_synonyms over a raw connection: {key: (value, source,
    read_only, [(synonym name, value, source), ...])}, or (error code, message) on error.
    Raw because confluent-kafka keys synonyms by name, and a broker key's synonyms share it."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    w = kw.Writer()
    w.int32(1).int8(resource_type).string(name)
    if keys is None:
        w.int32(-1)
    else:
        w.array(keys, lambda ww, k: ww.string(k))
    w.boolean(True)
    with kw.KafkaConnection(host, int(port)) as conn:
        r = conn.request(DESCRIBE_CONFIGS, 1, w.getvalue())
    r.int32()  # throttle

    def synonym(rr):
        return (rr.string(), rr.string(), rr.int8())

    def config(rr):
        name, value, read_only, source = rr.string(), rr.string(), rr.boolean(), rr.int8()
        rr.boolean()  # sensitive
        return name, (value, source, read_only, rr.array(synonym))

    def result(rr):
        code, message, _, _ = rr.int16(), rr.string(), rr.int8(), rr.string()
        return code, message, dict(rr.array(config))

    [(code, message, configs)] = r.array(result)
    return (code, message) if code else configs


def alter(admin, name, changes, validate_only=False):
    """IncrementalAlterConfigs on BROKER `name`: {key: value} sets, {key: None} deletes."""
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET if v is not None
                           else AlterConfigOpType.DELETE) for k, v in changes.items()]
    resource = ConfigResource(ResourceType.BROKER, name, incremental_configs=entries)
    [future] = admin.incremental_alter_configs([resource], validate_only=validate_only,
                                               request_timeout=30).values()
    return future.result(30)


def alter_raw(bootstrap, name, changes, validate_only=False, resource_type=4, op=None):
    """IncrementalAlterConfigs v0 on BROKER `name` over a raw connection (confluent-kafka
    refuses the empty name of the cluster-wide default): (error code, message). `op` forces
    one operation for every change (else SET, or DELETE for None)."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    w = kw.Writer().int32(1).int8(resource_type).string(name)
    w.array(list(changes.items()),
            lambda ww, kv: ww.string(kv[0]).int8(
                op if op is not None else 0 if kv[1] is not None else 1).string(kv[1]))
    w.boolean(validate_only)
    with kw.KafkaConnection(host, int(port)) as conn:
        r = conn.request(44, 0, w.getvalue())
    r.int32()  # throttle
    [(code, message)] = r.array(lambda rr: (rr.int16(), rr.string(), rr.int8(), rr.string())[:2])
    return code, message


def alter_default(bootstrap, changes):
    assert alter_raw(bootstrap, "", changes) == (0, None)


def refusal(admin, name, changes, legacy=False):
    with pytest.raises(KafkaException) as caught:
        if legacy:
            resource = ConfigResource(ResourceType.BROKER, name, set_config=changes)
            [future] = admin.alter_configs([resource], request_timeout=30).values()
            future.result(30)
        else:
            alter(admin, name, changes)
    error = caught.value.args[0]
    return error.code(), error.str()


def produce_raw(bootstrap, topic, size):
    host, port = bootstrap.rsplit(":", 1)
    batch = kw.build_record_batch([b"x" * size])
    with kw.KafkaConnection(host, int(port), timeout=30) as c:
        response = c.produce(9, [(topic, [(0, batch)])], acks=1)
    return kw.produce_partition_results(response)[(topic, 0)]["error_code"]


@pytest.mark.timeout(180)
def test_dynamic_broker_configs(broker):
    admin = admin_client(broker.bootstrap)
    # Before anything is set: defaults, dynamic keys writable, static ones read-only.
    before = describe_raw(broker.bootstrap, 4, "0")
    assert before["log.retention.ms"][:3] == ("604800000", DEFAULT, False)
    assert before["broker.id"][:3] == ("0", STATIC, True)
    assert before["log.dirs"][2] is True
    assert describe_raw(broker.bootstrap, 4, "") == {}, "nothing set cluster-wide yet"

    alter(admin, "0", {"log.retention.ms": "3600000",
                       "sasl.kerberos.min.time.before.relogin": "58000"})
    alter_default(broker.bootstrap, {"log.retention.ms": "7200000", "message.max.bytes": "2048"})

    mine = describe_raw(broker.bootstrap, 4, "0")
    value, source, read_only, synonyms = mine["log.retention.ms"]
    assert (value, source, read_only) == ("3600000", DYNAMIC_BROKER, False)
    assert synonyms == [("log.retention.ms", "3600000", DYNAMIC_BROKER),
                        ("log.retention.ms", "7200000", DYNAMIC_DEFAULT),
                        ("log.retention.ms", "604800000", DEFAULT)]
    assert mine["message.max.bytes"][:2] == ("2048", DYNAMIC_DEFAULT)
    assert mine["sasl.kerberos.min.time.before.relogin"][:2] == ("58000", DYNAMIC_BROKER)
    cluster_wide = describe_raw(broker.bootstrap, 4, "")
    assert {k: v[:2] for k, v in cluster_wide.items()} == {
        "log.retention.ms": ("7200000", DYNAMIC_DEFAULT),
        "message.max.bytes": ("2048", DYNAMIC_DEFAULT)}
    # confluent-kafka reads the same.
    [future] = admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")]).values()
    entry = future.result(30)["log.retention.ms"]
    assert (entry.value, entry.source) == ("3600000", DYNAMIC_BROKER)

    # Topics without their own value take the dynamic defaults, with the broker key as synonym.
    plain, own = unique_topic("dyn-plain"), unique_topic("dyn-own")
    create_topic(broker.bootstrap, plain, 1)
    create_topic(broker.bootstrap, own, 1, config={"max.message.bytes": "1000000"})
    topic_view = describe_raw(broker.bootstrap, 2, plain, ["retention.ms", "max.message.bytes"])
    assert topic_view["retention.ms"][:2] == ("3600000", DYNAMIC_BROKER)
    assert topic_view["retention.ms"][3][0] == ("log.retention.ms", "3600000", DYNAMIC_BROKER)
    assert topic_view["max.message.bytes"][:2] == ("2048", DYNAMIC_DEFAULT)
    own_view = describe_raw(broker.bootstrap, 2, own, ["max.message.bytes"])
    assert own_view["max.message.bytes"][3][:2] == [("max.message.bytes", "1000000", TOPIC),
                                                    ("message.max.bytes", "2048", DYNAMIC_DEFAULT)]
    # ... and the broker enforces it: a 4 KiB batch is too large there, not on the other topic.
    assert produce_raw(broker.bootstrap, plain, 4096) == MESSAGE_TOO_LARGE
    assert produce_raw(broker.bootstrap, own, 4096) == 0
    assert produce_raw(broker.bootstrap, plain, 100) == 0

    # validate_only checks without applying.
    alter(admin, "0", {"log.retention.ms": "1000"}, validate_only=True)
    assert describe_raw(broker.bootstrap, 4, "0")["log.retention.ms"][0] == "3600000"
    with pytest.raises(KafkaException, match="log.dirs"):
        alter(admin, "0", {"log.dirs": "/tmp/x"}, validate_only=True)

    # Kafka's refusals (INVALID_REQUEST for all but list operations on a non-list key).
    code, message = refusal(admin, "0", {"log.dirs": "/tmp/x", "num.io.threads": "4"})
    assert code == INVALID_REQUEST and "Cannot update these configs dynamically" in message \
        and "log.dirs" in message
    code, message = refusal(admin, "0", {"no.such.config": "1"})
    assert code == INVALID_REQUEST and "no.such.config" in message
    code, message = refusal(admin, "0", {"log.retention.ms": "soon"})
    assert code == INVALID_REQUEST and "log.retention.ms" in message
    code, message = alter_raw(broker.bootstrap, "", {"sasl.kerberos.min.time.before.relogin": "1"})
    assert code == INVALID_REQUEST and "default cluster level" in message
    code, message = refusal(admin, "0", {"log.dirs": "/tmp/x"}, legacy=True)
    assert code == INVALID_REQUEST and "log.dirs" in message
    assert describe_raw(broker.bootstrap, 4, "7")[0] == INVALID_REQUEST
    # Another broker's id (clients send a broker's resource to that broker).
    assert alter_raw(broker.bootstrap, "7", {"log.retention.ms": "1"}) == \
        (INVALID_REQUEST, "Unexpected broker id, expected 0, but received 7")
    assert alter_raw(broker.bootstrap, "", {"log.retention.ms": "1"}, validate_only=True) == (0, None)
    after = describe_raw(broker.bootstrap, 4, "0")
    assert after["log.retention.ms"][0] == "3600000" and after["num.io.threads"][0] == "8"

    # DELETE falls back to the cluster-wide value; the legacy AlterConfigs replaces the set.
    alter(admin, "0", {"log.retention.ms": None})
    assert describe_raw(broker.bootstrap, 4, "0")["log.retention.ms"][:2] == \
        ("7200000", DYNAMIC_DEFAULT)
    resource = ConfigResource(ResourceType.BROKER, "0", set_config={"num.io.threads": "4"})
    [future] = admin.alter_configs([resource], request_timeout=30).values()
    future.result(30)
    replaced = describe_raw(broker.bootstrap, 4, "0")
    assert replaced["num.io.threads"][:2] == ("4", DYNAMIC_BROKER)
    assert replaced["sasl.kerberos.min.time.before.relogin"][:2] == ("60000", DEFAULT)

    # Kept across a restart (the metadata log), and still in force.
    broker.restart()
    kept = describe_raw(broker.bootstrap, 4, "0")
    assert kept["num.io.threads"][:2] == ("4", DYNAMIC_BROKER)
    assert kept["message.max.bytes"][:2] == ("2048", DYNAMIC_DEFAULT)
    assert kept["log.retention.ms"][:2] == ("7200000", DYNAMIC_DEFAULT)
    wait_for(lambda: produce_raw(broker.bootstrap, plain, 100) == 0, 30, "the topic after restart")
    assert produce_raw(broker.bootstrap, plain, 4096) == MESSAGE_TOO_LARGE

    # The admin CLI shows and sets them too.
    def cli(*args):
        out = subprocess.run([str(broker.binary), "cluster", "config", "-b", broker.bootstrap,
                              "--format", "json", *args], capture_output=True, text=True,
                             timeout=30)
        return out.returncode, out.stdout + out.stderr
    code, out = cli("--broker", "0", "--set", "log.cleaner.threads=2")
    assert code == 0, out
    assert json.loads(out)["configs"]["log.cleaner.threads"] == \
        {"value": "2", "source": "DYNAMIC_BROKER_CONFIG"}
    code, out = cli("--set", "log.dirs=/x")
    assert code != 0 and "log.dirs" in out

    # Removing the cluster-wide value lifts the limit at once.
    alter_default(broker.bootstrap, {"message.max.bytes": None})
    assert produce_raw(broker.bootstrap, plain, 4096) == 0


@pytest.mark.timeout(180)
def test_cluster_wide_default_reaches_every_broker(cluster_factory):
    cluster = cluster_factory(voters=1, brokers=1).start()
    first, second = cluster[1], cluster[2]
    wait_for(lambda: len(first.metadata()["brokers"]) == 2, 30, "both brokers registered")
    topic = unique_topic("dyn-spread")
    admin = admin_client(cluster.bootstrap())
    create_topic(first.bootstrap, topic, 2)
    # Set on node 1 (per-broker values go to their broker: the client sends them there).
    alter_default(first.bootstrap, {"message.max.bytes": "2048"})
    alter(admin, "2", {"log.retention.ms": "3600000"})

    wait_for(lambda: describe_raw(second.bootstrap, 4, "2")["message.max.bytes"][:2]
             == ("2048", DYNAMIC_DEFAULT), 30, "the default on node 2")
    assert describe_raw(second.bootstrap, 4, "2")["log.retention.ms"][:2] == \
        ("3600000", DYNAMIC_BROKER)
    assert describe_raw(first.bootstrap, 4, "1")["log.retention.ms"][:2] == \
        ("604800000", DEFAULT), "node 2's own value is not node 1's"
    # Node 2 enforces the default on the partition it leads.
    led_by_second = [p["partition_index"] for t in second.metadata([topic])["topics"]
                     for p in t["partitions"] if p["leader_id"] == 2]
    assert led_by_second, "placement spreads two partitions over both brokers"
    with kw.KafkaConnection(second.host, second.kafka_port, timeout=30) as c:
        batch = kw.build_record_batch([b"x" * 4096])
        response = c.produce(9, [(topic, [(led_by_second[0], batch)])], acks=1)
    assert kw.produce_partition_results(response)[(topic, led_by_second[0])]["error_code"] == \
        MESSAGE_TOO_LARGE


BROKER_LOGGER = 8
DYNAMIC_BROKER_LOGGER = 6
INVALID_REQUEST = 42
INVALID_CONFIG = 40


def legacy_alter_raw(bootstrap, resource_type, name, configs):
    """AlterConfigs v0 over a raw connection: (error code, message)."""
    host, port = bootstrap.split(",")[0].rsplit(":", 1)
    w = kw.Writer().int32(1).int8(resource_type).string(name)
    w.array(list(configs.items()), lambda ww, kv: ww.string(kv[0]).string(kv[1]))
    w.boolean(False)
    with kw.KafkaConnection(host, int(port)) as conn:
        r = conn.request(33, 0, w.getvalue())
    r.int32()  # throttle
    [(code, message)] = r.array(lambda rr: (rr.int16(), rr.string(), rr.int8(), rr.string())[:2])
    return code, message


@pytest.mark.timeout(120)
def test_log_levels_change_at_runtime_as_broker_loggers(broker):
    """Kafka's BROKER_LOGGER resource: every logger's level described (kafka-python and raw),
    SET and DELETE through IncrementalAlterConfigs take effect at once, refusals as Kafka."""
    from kafka.admin import ConfigResource as KpResource, ConfigResourceType, KafkaAdminClient

    b = broker.bootstrap

    def levels():
        return {name: (value, source, read_only)
                for name, (value, source, read_only, _) in
                describe_raw(b, BROKER_LOGGER, "0").items()}

    def accepted_lines():
        return broker.log_text().count("connection accepted")

    before = levels()
    assert before["root"] == ("INFO", DYNAMIC_BROKER_LOGGER, False), before
    assert before["riptide::net"][0] == "INFO" and "riptide::cluster" in before

    # A real client describes the resource too.
    admin = KafkaAdminClient(bootstrap_servers=b, request_timeout_ms=30000)
    try:
        described = admin.describe_configs([KpResource(ConfigResourceType.BROKER_LOGGER, "0")])
        assert "riptide::net" in repr(described) and "INFO" in repr(described), described
    finally:
        admin.close()

    # Connection accepts log at DEBUG in riptide::net: none at INFO.
    quiet = accepted_lines()
    describe_raw(b, BROKER_LOGGER, "0")
    assert accepted_lines() == quiet
    assert alter_raw(b, "0", {"riptide::net": "DEBUG"}, resource_type=BROKER_LOGGER) == (0, None)
    assert levels()["riptide::net"] == ("DEBUG", DYNAMIC_BROKER_LOGGER, False)
    describe_raw(b, BROKER_LOGGER, "0")
    wait_for(lambda: accepted_lines() > quiet, timeout=30,
             what="a DEBUG line of riptide::net after its level was set")

    # DELETE: the logger inherits root's level again.
    assert alter_raw(b, "0", {"riptide::net": None}, resource_type=BROKER_LOGGER) == (0, None)
    assert levels()["riptide::net"][0] == "INFO"
    quiet = accepted_lines()
    describe_raw(b, BROKER_LOGGER, "0")  # answered: its accept line would be written by now
    assert accepted_lines() == quiet

    # validate_only changes nothing.
    assert alter_raw(b, "0", {"riptide::api": "TRACE"}, validate_only=True,
                     resource_type=BROKER_LOGGER) == (0, None)
    assert levels()["riptide::api"][0] == "INFO"

    # Kafka's refusals; none of them changes a level.
    def refused(changes, **kwargs):
        code, message = alter_raw(b, "0", changes, resource_type=BROKER_LOGGER, **kwargs)
        return code, message

    assert refused({"root": None}) == (
        INVALID_REQUEST, "Removing the log level of the root logger is not allowed")
    code, message = refused({"riptide::api": "VERBOSE"})
    assert code == INVALID_CONFIG and "Valid log levels are OFF, FATAL, ERROR" in message
    assert refused({"riptide::api": "debug"})[0] == INVALID_CONFIG  # Kafka's names only
    assert refused({"kafka.server.ReplicaManager": "INFO"}) == (
        INVALID_CONFIG, "Logger kafka.server.ReplicaManager does not exist!")
    code, message = refused({"riptide::api": "DEBUG"}, op=2)
    assert code == INVALID_REQUEST and "APPEND" in message
    # All or nothing: a good change next to a bad one is not applied.
    assert refused({"riptide::group": "DEBUG", "riptide::nowhere": "DEBUG"})[0] == INVALID_CONFIG
    assert levels()["riptide::group"][0] == "INFO"
    assert alter_raw(b, "7", {"root": "WARN"}, resource_type=BROKER_LOGGER) == (
        INVALID_REQUEST, "Unexpected broker id, expected 0, but received 7")
    assert alter_raw(b, "", {"root": "WARN"}, resource_type=BROKER_LOGGER) == (
        INVALID_REQUEST, "Broker id must not be empty")
    code, _ = legacy_alter_raw(b, BROKER_LOGGER, "0", {"root": "WARN"})
    assert code == INVALID_REQUEST
    assert levels()["root"][0] == "INFO"

    # Root's level moves every logger without one of its own.
    assert alter_raw(b, "0", {"root": "WARN", "riptide::txn": "FATAL"},
                     resource_type=BROKER_LOGGER) == (0, None)
    after = levels()
    assert after["root"][0] == "WARN" and after["riptide::api"][0] == "WARN"
    assert after["riptide::txn"][0] == "FATAL"
