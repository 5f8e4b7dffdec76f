"""Brokers talking to each other over a secured listener (`--inter-broker-listener-name`), and
clients told other brokers' addresses on the listener they connected on.

Three nodes with three listeners each: PLAINTEXT, INTERNAL (SSL or SASL_SSL, the inter-broker
listener) and EXTERNAL (SASL_SSL, for clients). Replication is proven by acks=all writes on a
topic of replication factor 3 with the full ISR afterwards: a follower in the ISR has fetched up
to the high watermark, and the followers can only have fetched over the INTERNAL listener (they
dial no other, and with the authorizer on an unauthenticated fetch would be refused).
"""

import json
import os
import socket
import ssl
import struct
import subprocess

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

from helpers import base_conf, unique_topic, wait_until
from tls_pki import Pki

BROKER_CN = "riptide-broker"
BROKER_PRINCIPAL = f"User:CN={BROKER_CN},O=Riptide Tests"
ADMIN_PASSWORD = "admin-secret"
BROKER_PASSWORD = "broker-secret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki-inter-broker"))


def secured_cluster(cluster_factory, pki, internal_protocol, common_args, cert_names=None):
    """Three voters, listeners PLAINTEXT (first, for the harness's readiness probes), INTERNAL
    (`internal_protocol`, the inter-broker listener) and EXTERNAL (SASL_SSL); not started."""
    names = cert_names or ("localhost", "127.0.0.1")
    _, _, cert, key = pki.broker_certificate(BROKER_CN, names)
    cluster = cluster_factory(voters=3, extra_args=[
        "--listener-security-protocol-map", f"INTERNAL:{internal_protocol},EXTERNAL:SASL_SSL",
        "--inter-broker-listener-name", "INTERNAL",
        "--ssl-certificate-location", str(cert), "--ssl-key-location", str(key),
        "--ssl-ca-location", str(pki.ca), "--ssl-client-auth", "requested",
        "--replica-fetch-wait-max-ms", "200", *common_args])
    for node in cluster:
        node.internal_port, node.external_port = cluster._take_ports(2)
        node.proc.extra_args += [
            "--listeners", f"PLAINTEXT://127.0.0.1:{node.kafka_port},"
                           f"INTERNAL://127.0.0.1:{node.internal_port},"
                           f"EXTERNAL://127.0.0.1:{node.external_port}"]
    cluster.broker_cert, cluster.broker_key = cert, key
    return cluster


def external_conf(cluster, pki, **extra):
    bootstrap = ",".join(f"127.0.0.1:{n.external_port}" for n in cluster)
    return base_conf(bootstrap, **{
        "security.protocol": "SASL_SSL", "ssl.ca.location": str(pki.ca),
        "sasl.mechanism": "SCRAM-SHA-256", "sasl.username": "admin",
        "sasl.password": ADMIN_PASSWORD, **extra})


def create_scram_user(admin, user, password):
    upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 4096), password.encode())
               for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)


def broker_ports(admin):
    return {b.id: b.port for b in admin.list_topics(timeout=20).brokers.values()}


def full_isr(admin, topic):
    partition = admin.list_topics(topic, timeout=20).topics[topic].partitions[0]
    return sorted(partition.isrs) == [1, 2, 3] and partition.leader in (1, 2, 3)


def produce_acks_all(conf, topic, values):
    delivered, errors = [], []
    producer = Producer({**conf, "acks": "all", "message.timeout.ms": 60000})
    for value in values:
        producer.produce(topic, value=value, partition=0,
                         on_delivery=lambda e, m: (errors if e else delivered).append(e or m.offset()))
    producer.flush(90)
    return delivered, errors


def consume_values(conf, topic, count):
    consumer = Consumer({**conf, "group.id": unique_topic("g"), "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values = []

    def more():
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            values.append(message.value())
        return len(values) >= count
    try:
        wait_until(more, 60, f"{count} records over the EXTERNAL listener")
    finally:
        consumer.close()
    return values


def controller_refuses(node, pki):
    """Opens a TLS connection to the node's controller listener with a client certificate from
    the cluster's CA that is not a broker's, sends a registration call, and returns whether the
    node closed the connection without an answer."""
    _, _, cert, key = pki.client_certificate("mallory")
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(cert), str(key))
    with socket.create_connection(("127.0.0.1", node.controller_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            body = b'"DescribeQuorum"'
            try:
                tls.sendall(struct.pack(">I", len(body) + 1) + bytes([2]) + body)
                return tls.recv(1) == b""
            except (ConnectionError, ssl.SSLError):
                return True


@pytest.mark.timeout(240)
def test_brokers_replicate_over_an_ssl_listener_as_their_certificate(cluster_factory, pki):
    """INTERNAL is SSL; brokers present their certificate, whose subject is the only super user
    besides the SCRAM user `admin`, and the authorizer is on: a fetch from a follower that did not
    come over INTERNAL with the certificate would fail CLUSTER_ACTION. The controller listener is
    SSL too, with certificates on both ends: the quorum forms, and a certificate of the same CA
    without CLUSTER_ACTION is turned away. Metadata answers on each listener with that listener's
    ports of all three brokers."""
    cluster = secured_cluster(cluster_factory, pki, "SSL", [
        "--authorizer-enabled", "true", "--super-users", f"{BROKER_PRINCIPAL};User:admin",
        "--controller-listener-security-protocol", "SSL"])
    cluster.start()
    cluster.wait_formed()
    assert controller_refuses(cluster.voters[0], pki)
    wait_until(lambda: "lacks CLUSTER_ACTION" in cluster.voters[0].log_tail(400), 20,
               "the refused controller connection in the node's log")
    # The broker certificate is a super user: it bootstraps the SCRAM user clients log in as.
    internal = base_conf(",".join(f"127.0.0.1:{n.internal_port}" for n in cluster), **{
        "security.protocol": "SSL", "ssl.ca.location": str(pki.ca),
        "ssl.certificate.location": str(cluster.broker_cert),
        "ssl.key.location": str(cluster.broker_key)})
    create_scram_user(AdminClient(internal), "admin", ADMIN_PASSWORD)

    admin = AdminClient(external_conf(cluster, pki))
    wait_until(lambda: broker_ports(admin) == {n.node_id: n.external_port for n in cluster}, 30,
               "EXTERNAL ports of all three brokers in Metadata over EXTERNAL")
    assert broker_ports(AdminClient(internal)) == {n.node_id: n.internal_port for n in cluster}
    plain = cluster.voters[0].metadata()
    assert {b["node_id"]: b["port"] for b in plain["brokers"]} == \
        {n.node_id: n.kafka_port for n in cluster}

    # The admin CLI over SASL_SSL as `admin` (password from the environment): an ACL for alice,
    # listed back; the same command without the login is refused.
    topic = unique_topic("inter-broker-ssl")
    cli_env = {**os.environ, "RIPTIDE_SASL_PASSWORD": ADMIN_PASSWORD}
    secure = ["-b", f"127.0.0.1:{cluster.voters[1].external_port}", "--format", "json",
              "--security-protocol", "SASL_SSL", "--sasl-mechanism", "SCRAM-SHA-512",
              "--sasl-username", "admin", "--ssl-ca-location", str(pki.ca)]
    binary = str(cluster.binary)
    added = subprocess.run([binary, "acl", "add", "--allow-principal", "User:alice", "--operation",
                            "read", "--topic", topic, *secure],
                           capture_output=True, text=True, timeout=60, env=cli_env)
    assert added.returncode == 0, added.stderr
    listed = subprocess.run([binary, "acl", "list", "--topic", topic, *secure],
                            capture_output=True, text=True, timeout=60, env=cli_env)
    assert listed.returncode == 0, listed.stderr
    assert [(a["principal"], a["operation"]) for a in json.loads(listed.stdout)["acls"]] == \
        [("User:alice", "READ")]
    wrong = subprocess.run([binary, "acl", "list", *secure], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "RIPTIDE_SASL_PASSWORD": "wrong"})
    assert wrong.returncode == 1 and "SASL" in wrong.stderr, wrong.stderr

    admin.create_topics([NewTopic(topic, 1, 3)])[topic].result(40)
    values = [f"record-{i}".encode() for i in range(300)]
    delivered, errors = produce_acks_all(external_conf(cluster, pki), topic, values)
    assert errors == [] and sorted(delivered) == list(range(300))
    wait_until(lambda: full_isr(admin, topic), 60, "all three replicas in the ISR")
    assert consume_values(external_conf(cluster, pki), topic, 300) == values


@pytest.mark.timeout(240)
def test_brokers_log_in_with_scram_over_sasl_ssl_without_hostname_checks(cluster_factory, pki):
    """INTERNAL is SASL_SSL: brokers log in as `broker` with SCRAM-SHA-512 before fetching. Their
    certificate names no host they are dialled at, so the TLS handshake between them holds only
    with `--ssl-endpoint-identification-algorithm ""` (the chain is still checked). Until the
    `broker` user exists the followers cannot log in; once it does, they catch up."""
    cluster = secured_cluster(cluster_factory, pki, "SASL_SSL", [
        "--inter-broker-sasl-mechanism", "SCRAM-SHA-512",
        "--inter-broker-sasl-username", "broker",
        "--inter-broker-sasl-password", BROKER_PASSWORD,
        "--ssl-endpoint-identification-algorithm", "",
        "--replica-lag-time-max-ms", "3000"], cert_names=("broker.invalid",))
    cluster.start()
    cluster.wait_formed()
    plain = AdminClient(base_conf(cluster.bootstrap()))
    topic = unique_topic("inter-broker-sasl")
    plain.create_topics([NewTopic(topic, 1, 3)])[topic].result(40)
    # Without the broker user, followers are refused at login and drop out of the ISR.
    wait_until(lambda: len(plain.list_topics(topic, timeout=20).topics[topic].partitions[0].isrs) == 1,
               60, "the ISR shrunk to the leader while followers cannot log in")
    create_scram_user(plain, "broker", BROKER_PASSWORD)
    create_scram_user(plain, "admin", ADMIN_PASSWORD)
    wait_until(lambda: full_isr(plain, topic), 60, "followers logged in and back in the ISR")
    values = [f"sasl-{i}".encode() for i in range(200)]
    delivered, errors = produce_acks_all(base_conf(cluster.bootstrap()), topic, values)
    assert errors == [] and sorted(delivered) == list(range(200))
    wait_until(lambda: full_isr(plain, topic), 60, "all three replicas in the ISR after the writes")
    follower_logs = "\n".join(node.log_tail(2000) for node in cluster)
    assert "SASL login refused" in follower_logs
