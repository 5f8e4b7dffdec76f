"""TLS listeners (SSL, SASL_SSL) beside a PLAINTEXT one, with certificates made per test session:
confluent-kafka, kcat, kafka-python and KafkaJS produce and consume over TLS (SASL_SSL with PLAIN
and SCRAM); cold reads (after a restart) come through TLS intact; an untrusted broker certificate,
an untrusted or expired client certificate, a missing client certificate where one is required
and a wrong password each fail with no data; a replaced certificate is served to new connections
without a restart (file change, and SIGHUP).
"""

import hashlib
import re
import signal
import socket
import ssl
import subprocess
import urllib.request

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

from helpers import admin_client, base_conf, create_topic, unique_topic, wait_until
from riptide_broker import free_port
from tls_pki import Pki

PASSWORD = "carol-secret"
KCAT_COMMON = ["-X", "broker.address.family=v4"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


def tls_broker_args(broker, pki, client_auth="requested", reload_ms=200):
    broker.ssl_port, broker.sasl_ssl_port = free_port(), free_port()
    # The broker reads its own copies, so a test can replace them.
    cert, key = broker.workdir / f"{broker.name}.crt", broker.workdir / f"{broker.name}.key"
    broker.workdir.mkdir(parents=True, exist_ok=True)
    cert.write_bytes(pki.server_crt.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    broker.cert_path, broker.key_path = cert, key
    broker.extra_args += [
        "--listeners", f"PLAINTEXT://{broker.bootstrap},SSL://127.0.0.1:{broker.ssl_port},"
                       f"SASL_SSL://127.0.0.1:{broker.sasl_ssl_port}",
        "--ssl-certificate-location", str(cert), "--ssl-key-location", str(key),
        "--ssl-ca-location", str(pki.ca), "--ssl-client-auth", client_auth,
        "--ssl-reload-check-interval-ms", str(reload_ms)]


@pytest.fixture
def tls_broker(broker_factory, pki):
    broker = broker_factory(start=False)
    tls_broker_args(broker, pki)
    broker.start()
    admin = admin_client(broker.bootstrap)
    upserts = [UserScramCredentialUpsertion("carol", ScramCredentialInfo(mechanism, 4096), PASSWORD.encode())
               for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for future in admin.alter_user_scram_credentials(upserts).values():
        future.result(30)
    return broker


def ssl_conf(broker, pki, cert=None, key=None, ca=None, **extra):
    conf = {"security.protocol": "SSL", "ssl.ca.location": str(ca or pki.ca)}
    if cert:
        conf.update({"ssl.certificate.location": str(cert), "ssl.key.location": str(key)})
    return base_conf(f"127.0.0.1:{broker.ssl_port}", **conf, **extra)


def sasl_ssl_conf(broker, pki, mechanism, user="carol", password=PASSWORD, **extra):
    return base_conf(f"127.0.0.1:{broker.sasl_ssl_port}", **{
        "security.protocol": "SASL_SSL", "ssl.ca.location": str(pki.ca), "sasl.mechanism": mechanism,
        "sasl.username": user, "sasl.password": password, **extra})


def produce_all(conf, topic, values):
    delivered, errors = [], []
    p = Producer({**conf, "acks": "all"})
    for v in values:
        p.produce(topic, value=v, partition=0,
                  on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg.offset()))
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    return sorted(delivered)


def consume_all(conf, topic, count, timeout=60):
    c = Consumer({**conf, "group.id": unique_topic("g"), "enable.auto.commit": False})
    got = []
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        wait_until(lambda: got.extend(m.value() for m in c.consume(1000, 0.5) if not m.error())
                   or len(got) >= count, timeout, f"{count} messages over TLS")
    finally:
        c.close()
    return got


def metric(broker, name, **labels):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s\{([^}]*)\} (\S+)$" % name, line)
        if m and all(f'{k}="{v}"' in m.group(1) for k, v in labels.items()):
            total += float(m.group(2))
    return total


def served_certificate_cn(port, ca):
    context = ssl.create_default_context(cafile=str(ca))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            subject = dict(item[0] for item in tls.getpeercert()["subject"])
            return subject["commonName"]


# ---- tests ------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_confluent_over_ssl_with_a_client_certificate_and_cold_reads(tls_broker, pki):
    topic = unique_topic("ssl")
    create_topic(tls_broker.bootstrap, topic, 1)
    values = [b"ssl-%06d-" % i + b"x" * 1000 for i in range(3000)]
    conf = ssl_conf(tls_broker, pki, pki.client_crt, pki.client_key)
    assert produce_all(conf, topic, values) == list(range(len(values)))
    assert consume_all(conf, topic, len(values)) == values
    # After a restart nothing is cached: reads come from the segments, through TLS.
    tls_broker.restart()
    c = Consumer({**conf, "group.id": unique_topic("g")})
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        wait_until(lambda: got.extend(m.value() for m in c.consume(1000, 0.5) if not m.error())
                   or len(got) >= len(values), 60, "cold reads over TLS")
        assert hashlib.sha256(b"".join(got)).digest() == hashlib.sha256(b"".join(values)).digest()
        assert metric(tls_broker, "riptide_tls_connections", mode="user") >= 1
    finally:
        c.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_confluent_over_sasl_ssl(tls_broker, pki, mechanism):
    topic = unique_topic("sasl-ssl")
    create_topic(tls_broker.bootstrap, topic, 1)
    values = [b"m%d" % i for i in range(50)]
    conf = sasl_ssl_conf(tls_broker, pki, mechanism)
    produce_all(conf, topic, values)
    assert consume_all(conf, topic, len(values)) == values


@pytest.mark.timeout(60)
def test_wrong_password_over_sasl_ssl_is_refused(tls_broker, pki):
    topic = unique_topic("sasl-ssl-denied")
    create_topic(tls_broker.bootstrap, topic, 1)
    auth_errors = []
    p = Producer(sasl_ssl_conf(tls_broker, pki, "SCRAM-SHA-256", password="wrong", **{
        "error_cb": lambda e: auth_errors.append(e) if e.code() == KafkaError._AUTHENTICATION else None,
        "message.timeout.ms": 3000}))
    p.produce(topic, value=b"never", partition=0)
    p.flush(10)
    assert auth_errors, "no authentication error for a wrong password"
    assert consume_all(base_conf(tls_broker.bootstrap), topic, 0, timeout=1) == []


def handshake_refused(conf, what):
    """A client whose TLS handshake fails gets no metadata (librdkafka retries and reports an
    SSL error)."""
    p = Producer({**conf, "socket.timeout.ms": 3000, "reconnect.backoff.max.ms": 500})
    try:
        with pytest.raises(Exception) as refused:
            p.list_topics(timeout=3)
        assert "Timed out" in str(refused.value) or "TRANSPORT" in str(refused.value), \
            f"{what}: {refused.value}"
    finally:
        p.flush(0)


@pytest.mark.timeout(120)
def test_untrusted_and_expired_certificates_are_refused(tls_broker, pki):
    failed_before = metric(tls_broker, "riptide_connections_closed_total", reason="tls_handshake_failed")
    # The client does not trust the broker's CA.
    handshake_refused(ssl_conf(tls_broker, pki, ca=pki.other_ca), "an untrusted broker certificate")
    # The client's certificate has expired.
    handshake_refused(ssl_conf(tls_broker, pki, pki.expired_crt, pki.expired_key), "an expired certificate")
    wait_until(lambda: metric(tls_broker, "riptide_connections_closed_total", reason="tls_handshake_failed")
               >= failed_before + 2, 30, "handshake failures counted")
    assert "TLS handshake failed" in tls_broker.log_text()


@pytest.mark.timeout(120)
def test_required_client_certificate(broker_factory, pki):
    broker = broker_factory(start=False)
    tls_broker_args(broker, pki, client_auth="required")
    broker.start()
    topic = unique_topic("mtls")
    create_topic(broker.bootstrap, topic, 1)
    handshake_refused(ssl_conf(broker, pki), "no client certificate")
    # OpenSSL offers no certificate the broker's CA list does not name, so a certificate from
    # another CA is refused here as a missing one; the broker's own check is a unit test.
    handshake_refused(ssl_conf(broker, pki, pki.stranger_crt, pki.stranger_key), "a stranger's certificate")
    conf = ssl_conf(broker, pki, pki.client_crt, pki.client_key)
    produce_all(conf, topic, [b"a", b"b"])
    assert consume_all(conf, topic, 2) == [b"a", b"b"]


@pytest.mark.timeout(120)
def test_certificate_is_reloaded_on_file_change_and_on_sighup(broker_factory, pki):
    # One shard: each shard reloads on its own, and a connection may land on either, so with
    # two a shard could skip a pair that was replaced again before its next check.
    broker = broker_factory(start=False, cores=1)
    tls_broker_args(broker, pki, reload_ms=300)
    broker.start()
    assert served_certificate_cn(broker.ssl_port, pki.ca) == "broker-1"
    _, _, crt, key = pki.server_certificate("broker-2")
    broker.key_path.write_bytes(key.read_bytes())
    broker.cert_path.write_bytes(crt.read_bytes())
    wait_until(lambda: served_certificate_cn(broker.ssl_port, pki.ca) == "broker-2", 30,
               "the replaced certificate served")
    # A broken replacement keeps the previous certificate in service. (Replacing the pair one file
    # at a time may already have logged a mismatch: count the reports.)
    reports = broker.log_text().count("TLS certificates not reloaded")
    broker.cert_path.write_text("not a certificate\n")
    wait_until(lambda: broker.log_text().count("TLS certificates not reloaded") > reports, 30,
               "the broken file reported")
    assert served_certificate_cn(broker.ssl_port, pki.ca) == "broker-2"
    # SIGHUP reloads at once (the files are back to a good pair).
    _, _, crt, key = pki.server_certificate("broker-3")
    broker.key_path.write_bytes(key.read_bytes())
    broker.cert_path.write_bytes(crt.read_bytes())
    broker.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: served_certificate_cn(broker.ssl_port, pki.ca) == "broker-3", 30,
               "the certificate reloaded on SIGHUP")
    assert broker.alive()


@pytest.mark.timeout(120)
def test_kcat_over_ssl_and_sasl_ssl(tls_broker, pki, kcat_bin, tmp_path):
    for label, args in [
        ("ssl", ["-b", f"127.0.0.1:{tls_broker.ssl_port}", "-X", "security.protocol=SSL",
                 "-X", f"ssl.ca.location={pki.ca}", "-X", f"ssl.certificate.location={pki.client_crt}",
                 "-X", f"ssl.key.location={pki.client_key}"]),
        ("sasl_ssl", ["-b", f"127.0.0.1:{tls_broker.sasl_ssl_port}", "-X", "security.protocol=SASL_SSL",
                      "-X", f"ssl.ca.location={pki.ca}", "-X", "sasl.mechanisms=SCRAM-SHA-512",
                      "-X", "sasl.username=carol", "-X", f"sasl.password={PASSWORD}"]),
    ]:
        topic = unique_topic(f"kcat-{label}")
        create_topic(tls_broker.bootstrap, topic, 1)
        lines = [f"{label}-{i}" for i in range(200)]
        source = tmp_path / f"{label}.txt"
        source.write_text("\n".join(lines) + "\n")
        prod = subprocess.run([kcat_bin, "-P", *args, *KCAT_COMMON, "-t", topic, "-p", "0", "-l", str(source)],
                              capture_output=True, timeout=60)
        assert prod.returncode == 0, prod.stderr.decode()[-2000:]
        cons = subprocess.run([kcat_bin, "-C", *args, *KCAT_COMMON, "-t", topic, "-p", "0", "-o", "beginning",
                               "-e", "-q"], capture_output=True, timeout=60)
        assert cons.returncode == 0, cons.stderr.decode()[-2000:]
        assert cons.stdout.decode().splitlines() == lines


@pytest.mark.timeout(120)
def test_kafka_python_over_sasl_ssl_with_scram(tls_broker, pki):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition as KTP
    topic = unique_topic("kp-sasl-ssl")
    create_topic(tls_broker.bootstrap, topic, 1)
    common = dict(bootstrap_servers=f"127.0.0.1:{tls_broker.sasl_ssl_port}", security_protocol="SASL_SSL",
                  ssl_cafile=str(pki.ca), sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="carol",
                  sasl_plain_password=PASSWORD)
    producer = KafkaProducer(acks="all", **common)
    for i in range(100):
        producer.send(topic, value=b"kp-%d" % i, partition=0)
    producer.flush(30)
    producer.close()
    consumer = KafkaConsumer(consumer_timeout_ms=1000, **common)
    try:
        consumer.assign([KTP(topic, 0)])
        consumer.seek_to_beginning()
        got = []
        wait_until(lambda: got.extend(m.value for m in consumer) or len(got) >= 100, 60, "100 messages")
        assert got == [b"kp-%d" % i for i in range(100)]
    finally:
        consumer.close()


@pytest.mark.timeout(300)
def test_kafkajs_over_sasl_ssl_with_scram(tls_broker, pki):
    from node_clients import check_roundtrip, java_partition, node_binary, run_node
    node = node_binary("kafkajs")
    count = 2000
    result = run_node(node, "kafkajs_check.js", "roundtrip", f"127.0.0.1:{tls_broker.sasl_ssl_port}",
                      topic=unique_topic("kjs-tls"), group=unique_topic("kjs-g"), count=count,
                      ca=pki.ca, mechanism="scram-sha-256", username="carol", password=PASSWORD)
    check_roundtrip(result, count, java_partition)


@pytest.mark.timeout(120)
def test_client_certificate_subject_is_the_principal_acls_check(broker_factory, pki):
    """On an SSL listener the client certificate's subject is the principal: an ACL naming
    `User:CN=alice-client,O=Riptide Tests` lets that certificate write, and only it."""
    from confluent_kafka.admin import AclBinding, AclOperation, AclPermissionType, ResourcePatternType, ResourceType
    broker = broker_factory(start=False)
    tls_broker_args(broker, pki, client_auth="required")
    # The PLAINTEXT listener administers (User:ANONYMOUS is the super user here).
    broker.extra_args += ["--authorizer-enabled", "true", "--super-users", "User:ANONYMOUS"]
    broker.start()
    topic = unique_topic("mtls-acl")
    create_topic(broker.bootstrap, topic, 1)
    alice = ssl_conf(broker, pki, pki.client_crt, pki.client_key)

    def write(conf):
        results = []
        p = Producer({**conf, "message.timeout.ms": 5000, "retries": 0})
        p.produce(topic, value=b"v", partition=0, on_delivery=lambda err, msg: results.append(err))
        p.flush(15)
        return results[0] if results else "no delivery report"

    refused = write(alice)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    principal = "User:CN=alice-client,O=Riptide Tests"
    admin = admin_client(broker.bootstrap)
    for future in admin.create_acls([AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL,
                                                principal, "*", AclOperation.WRITE,
                                                AclPermissionType.ALLOW)]).values():
        future.result(30)
    wait_until(lambda: write(alice) is None, 30, "the certificate's principal granted WRITE")
    # Another valid certificate from the same CA is another principal: still refused.
    _, _, other_crt, other_key = pki.client_certificate("bob-client")
    refused = write(ssl_conf(broker, pki, other_crt, other_key))
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
