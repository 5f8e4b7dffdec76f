"""SASL on a SASL_PLAINTEXT listener beside a PLAINTEXT one: users created with
AlterUserScramCredentials (the client salts the password; the broker keeps only derived keys),
confluent-kafka producing and consuming with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512, kafka-python
with SCRAM; a wrong password and an unknown user get an authentication error and no data; a
request before authentication closes the connection; Metadata on each listener advertises that
listener's address.
"""

import socket
import struct

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import (ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

import kafka_wire as kw
from helpers import admin_client, base_conf, create_topic, unique_topic, wait_until
from riptide_broker import free_port

PASSWORDS = {"alice": "alice-secret", "bob": "bob-secret"}


def start_sasl_broker(broker_factory, *extra_args):
    broker = broker_factory(start=False)
    broker.sasl_port = free_port()
    broker.extra_args += ["--listeners",
                          f"PLAINTEXT://{broker.bootstrap},SASL_PLAINTEXT://127.0.0.1:{broker.sasl_port}",
                          *extra_args]
    broker.start()
    admin = admin_client(broker.bootstrap)
    upserts = [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, 4096), password.encode())
               for user, password in PASSWORDS.items()
               for mechanism in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    for user, future in admin.alter_user_scram_credentials(upserts).items():
        future.result(30)
    return broker


@pytest.fixture
def sasl_broker(broker_factory):
    return start_sasl_broker(broker_factory)


def sasl_conf(broker, mechanism, user, password, **extra):
    return base_conf(f"127.0.0.1:{broker.sasl_port}", **{
        "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism,
        "sasl.username": user, "sasl.password": password, **extra})


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_produce_and_consume_over_sasl(sasl_broker, mechanism):
    topic = unique_topic("sasl")
    create_topic(sasl_broker.bootstrap, topic, 1)
    delivered, errors = [], []
    p = Producer(sasl_conf(sasl_broker, mechanism, "alice", PASSWORDS["alice"], **{"acks": "all"}))
    for i in range(10):
        p.produce(topic, value=b"m%d" % i, partition=0,
                  on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg.offset()))
    assert p.flush(30) == 0
    assert not errors and sorted(delivered) == list(range(10))
    c = Consumer(sasl_conf(sasl_broker, mechanism, "bob", PASSWORDS["bob"],
                           **{"group.id": unique_topic("g"), "enable.auto.commit": False}))
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        wait_until(lambda: got.extend(m.value() for m in c.consume(10, 0.5) if not m.error())
                   or len(got) >= 10, 30, "ten messages over SASL")
        assert got == [b"m%d" % i for i in range(10)]
    finally:
        c.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mechanism,user,password", [
    ("PLAIN", "alice", "wrong"), ("SCRAM-SHA-256", "alice", "wrong"),
    ("SCRAM-SHA-512", "mallory", "x")])
def test_bad_credentials_get_an_authentication_error_and_no_data(sasl_broker, mechanism, user, password):
    topic = unique_topic("sasl-denied")
    create_topic(sasl_broker.bootstrap, topic, 1)
    auth_errors = []
    p = Producer(sasl_conf(sasl_broker, mechanism, user, password, **{
        "error_cb": lambda e: auth_errors.append(e) if e.code() == KafkaError._AUTHENTICATION else None,
        "message.timeout.ms": 3000}))
    results = []
    p.produce(topic, value=b"nope", partition=0, on_delivery=lambda err, msg: results.append(err))
    wait_until(lambda: p.poll(0.2) is not None and bool(auth_errors) or bool(auth_errors), 20,
               "an authentication error")
    p.flush(10)
    assert results and results[0] is not None, "a message was delivered without authenticating"
    # Nothing reached the log.
    c = Consumer(base_conf(sasl_broker.bootstrap, **{"group.id": unique_topic("g")}))
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.close()
    assert high == 0
    assert "SASL authentication failed" in sasl_broker.log_text()


@pytest.mark.timeout(60)
def test_requests_before_authentication_close_and_listeners_advertise_themselves(sasl_broker):
    # Metadata before any SASL exchange: the connection is closed.
    with kw.KafkaConnection("127.0.0.1", sasl_broker.sasl_port) as conn:
        keys = conn.api_versions(0)["api_keys"]  # allowed before authentication
        assert keys[17] == (0, 1) and keys[36] == (0, 2) and keys[50] == (0, 0) and keys[51] == (0, 0)
        conn.send_request(kw.ApiKey.METADATA, 1, kw.encode_metadata_request(1, None, False))
        assert conn.wait_closed(10) == b""
    # A frame larger than the unauthenticated limit is refused at once.
    with kw.KafkaConnection("127.0.0.1", sasl_broker.sasl_port) as conn:
        conn.send_raw(struct.pack(">i", 10 * 1024 * 1024) + b"\0" * 16)
        assert conn.wait_closed(10) == b""
    # Each listener's Metadata names the address of the listener asked.
    with kw.KafkaConnection(sasl_broker.host, sasl_broker.port) as conn:
        (broker,) = conn.metadata(1)["brokers"]
        assert broker["port"] == sasl_broker.port
    from confluent_kafka.admin import AdminClient
    admin_sasl = AdminClient(sasl_conf(sasl_broker, "SCRAM-SHA-256", "alice", PASSWORDS["alice"]))
    md = admin_sasl.list_topics(timeout=20)
    assert [b.port for b in md.brokers.values()] == [sasl_broker.sasl_port]

    # DescribeUserScramCredentials shows mechanisms and iterations; deleting one removes it.
    plain_admin = admin_client(sasl_broker.bootstrap)
    described = plain_admin.describe_user_scram_credentials(["alice"])["alice"].result(30)
    assert sorted(i.mechanism for i in described.scram_credential_infos) == \
        sorted([ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512])
    plain_admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("alice", ScramMechanism.SCRAM_SHA_512)])["alice"].result(30)
    described = plain_admin.describe_user_scram_credentials(["alice"])["alice"].result(30)
    assert [i.mechanism for i in described.scram_credential_infos] == [ScramMechanism.SCRAM_SHA_256]


def sasl_handshake_v0(conn, mechanism):
    r = conn.request(17, 0, kw.Writer().string(mechanism).getvalue())
    error_code = r.int16()
    return error_code, r.array(lambda rr: rr.string())


@pytest.mark.timeout(60)
def test_sasl_handshake_v0_takes_raw_tokens(sasl_broker):
    """SaslHandshake v0 (before KIP-152): the SASL tokens follow as raw size-prefixed frames, not
    SaslAuthenticate requests; a failure closes the connection without an answer."""
    with kw.KafkaConnection("127.0.0.1", sasl_broker.sasl_port) as conn:
        assert sasl_handshake_v0(conn, "PLAIN") == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
        token = b"\0alice\0" + PASSWORDS["alice"].encode()
        conn.send_raw(struct.pack(">i", len(token)) + token)
        assert conn.recv_frame() == b""  # PLAIN's empty server reply
        assert conn.metadata(1)["brokers"], "authenticated: Metadata is served"
    with kw.KafkaConnection("127.0.0.1", sasl_broker.sasl_port) as conn:
        assert sasl_handshake_v0(conn, "PLAIN")[0] == 0
        token = b"\0alice\0wrong"
        conn.send_raw(struct.pack(">i", len(token)) + token)
        assert conn.wait_closed(10) == b""


@pytest.mark.timeout(60)
def test_kafka_python_scram(sasl_broker):
    from kafka import KafkaConsumer, KafkaProducer
    topic = unique_topic("sasl-kp")
    create_topic(sasl_broker.bootstrap, topic, 1)
    common = dict(bootstrap_servers=f"127.0.0.1:{sasl_broker.sasl_port}", security_protocol="SASL_PLAINTEXT",
                  sasl_mechanism="SCRAM-SHA-512", sasl_plain_username="bob",
                  sasl_plain_password=PASSWORDS["bob"])
    producer = KafkaProducer(**common)
    for i in range(5):
        producer.send(topic, b"kp%d" % i, partition=0).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(**common, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    consumer.assign([__import__("kafka").TopicPartition(topic, 0)])
    got = [m.value for _, m in zip(range(5), consumer)]
    consumer.close()
    assert got == [b"kp%d" % i for i in range(5)]


@pytest.mark.timeout(90)
def test_riptide_user_cli_creates_lists_and_deletes(sasl_broker):
    """`riptide user create` salts the password client-side; the user logs in with SCRAM and
    PLAIN; `riptide user list` shows it; after `riptide user delete` the login fails."""
    import json
    import subprocess

    def cli(*args):
        done = subprocess.run([str(sasl_broker.binary), "user", *args, "--format", "json",
                               "-b", sasl_broker.bootstrap], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    cli("create", "carol", "--password", "carol-secret", "--iterations", "8192")
    listed = {u["user"]: u["mechanisms"] for u in cli("list")["users"]}
    assert listed["carol"] == ["SCRAM-SHA-256 (8192 iterations)", "SCRAM-SHA-512 (8192 iterations)"]
    for mechanism in ("SCRAM-SHA-512", "PLAIN"):
        c = Consumer(sasl_conf(sasl_broker, mechanism, "carol", "carol-secret",
                               **{"group.id": unique_topic("g")}))
        md = c.list_topics(timeout=20)
        assert md.brokers
        c.close()
    cli("delete", "carol")
    assert "carol" not in {u["user"] for u in cli("list")["users"]}
    auth_errors = []
    p = Producer(sasl_conf(sasl_broker, "SCRAM-SHA-256", "carol", "carol-secret", **{
        "error_cb": lambda e: auth_errors.append(e) if e.code() == KafkaError._AUTHENTICATION else None}))
    wait_until(lambda: p.poll(0.2) is not None and bool(auth_errors) or bool(auth_errors), 20,
               "the deleted user's login to fail")


# ---- re-authentication (KIP-368) ----------------------------------------------------------------

REAUTH_MS = 1500


def plain_authenticate_v1(conn, user, password):
    """SaslHandshake v1 + SaslAuthenticate v1 with PLAIN: (error code, session_lifetime_ms)."""
    r = conn.request(17, 1, kw.Writer().string("PLAIN").getvalue())
    assert r.int16() == 0
    token = b"\0" + user.encode() + b"\0" + password.encode()
    r = conn.request(36, 1, kw.Writer().bytes_(token).getvalue())
    error_code, _message, _auth_bytes = r.int16(), r.string(), r.bytes_()
    return error_code, r.int64()


def reauthentications(broker):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("riptide_sasl_reauthentications_total{"))


@pytest.mark.timeout(120)
def test_sessions_expire_and_clients_reauthenticate(broker_factory):
    broker = start_sasl_broker(broker_factory, "--connections-max-reauth-ms", str(REAUTH_MS))
    # A client that does not re-authenticate is cut off at its first request past the lifetime.
    with kw.KafkaConnection("127.0.0.1", broker.sasl_port) as conn:
        import time
        # Taken before the broker starts the session: the cut-off cannot come sooner than this.
        authenticated_at = time.monotonic()
        assert plain_authenticate_v1(conn, "alice", PASSWORDS["alice"]) == (0, REAUTH_MS)

        def cut_off():
            try:
                conn.metadata(1)
                return False
            except (kw.ConnectionClosed, OSError):
                return True
        wait_until(cut_off, 30, "the expired session's connection closed", interval=0.1)
        assert time.monotonic() - authenticated_at >= REAUTH_MS / 1000
    assert "SASL session expired" in broker.log_text()
    # Re-authenticating as someone else is refused and closes the connection.
    with kw.KafkaConnection("127.0.0.1", broker.sasl_port) as conn:
        assert plain_authenticate_v1(conn, "alice", PASSWORDS["alice"])[0] == 0
        r = conn.request(17, 1, kw.Writer().string("PLAIN").getvalue())
        assert r.int16() == 0
        token = b"\0bob\0" + PASSWORDS["bob"].encode()
        r = conn.request(36, 1, kw.Writer().bytes_(token).getvalue())
        assert r.int16() == 58  # SASL_AUTHENTICATION_FAILED
        assert conn.wait_closed(10) == b""
    # librdkafka re-authenticates on its own: a producer keeps delivering across several
    # session lifetimes on the same connection.
    topic = unique_topic("reauth")
    create_topic(broker.bootstrap, topic, 1)
    before = reauthentications(broker)
    delivered, errors = [], []
    p = Producer(sasl_conf(broker, "SCRAM-SHA-256", "alice", PASSWORDS["alice"], **{"acks": "all"}))
    sent = 0

    def keep_producing():
        nonlocal sent
        p.produce(topic, value=b"r%d" % sent, partition=0,
                  on_delivery=lambda err, msg: (errors if err else delivered).append(err or msg.offset()))
        sent += 1
        p.poll(0.05)
        return reauthentications(broker) >= before + 2
    wait_until(keep_producing, 60, "two re-authentications", interval=0.05)
    assert p.flush(30) == 0
    assert not errors, errors[:3]
    assert sorted(delivered) == list(range(sent))
