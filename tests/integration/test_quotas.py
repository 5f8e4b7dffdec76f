"""Client quotas (KIP-546 DescribeClientQuotas / AlterClientQuotas, Kafka's ClientQuotaManager).

Neither confluent-kafka nor kafka-python has the client quota admin calls, so the APIs are
spoken over the raw wire (v0 and v1, encoded here independently of the broker's codec) and
through `riptide quota`. Quotas survive a restart; validate_only writes nothing; bad keys and
values fail their entry with Kafka's INVALID_REQUEST messages. A producer and a consumer under
a 100 KB/s quota are measurably throttled (observed rate near the quota, throttle times
reported to the client and counted in /metrics) while a client-id without a quota, in the same
run, is not.

The brokers run with `--quota-window-num 3`: Kafka's rate counts a young window as
`num - 1` full samples, which lets a new client send `num - 1` seconds of quota at once; three
samples keep that first burst (200 KB) small next to the 2 MB the tests move.
"""

import json
import re
import struct
import subprocess
import threading
import time
import urllib.request

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

import kafka_wire as kw
from helpers import base_conf, create_topic, unique_topic, wait_until

QUOTA_BYTES_PER_S = 100 * 1024
PAYLOAD_BYTES = 2 * 1024 * 1024
MESSAGE_BYTES = 10 * 1024
WINDOW_ARGS = ("--quota-window-num", "3", "--quota-window-size-ms", "1000")

USER, CLIENT_ID = "user", "client-id"


# -- wire encoding of the two APIs ---------------------------------------------------------------

def encode_alter(version, entries, validate_only=False):
    """entries: [([(entity_type, name_or_None)], [(key, value_or_None_to_remove)])]"""
    flexible = version >= 1
    w = kw.Writer()

    def entity_part(ww, part):
        ww.string(part[0], compact=flexible)
        ww.string(part[1], compact=flexible)
        if flexible:
            ww.tagged_fields()

    def op(ww, item):
        key, value = item
        ww.string(key, compact=flexible)
        ww.raw(struct.pack(">d", 0.0 if value is None else float(value)))
        ww.boolean(value is None)
        if flexible:
            ww.tagged_fields()

    def entry(ww, item):
        ww.array(item[0], entity_part, compact=flexible)
        ww.array(item[1], op, compact=flexible)
        if flexible:
            ww.tagged_fields()

    w.array(entries, entry, compact=flexible)
    w.boolean(validate_only)
    if flexible:
        w.tagged_fields()
    return w.getvalue()


def read_entity_part(rr, flexible):
    """One (entity_type, entity_name) of an answer's entity."""
    part = (rr.string(compact=flexible), rr.string(compact=flexible))
    if flexible:
        rr.tagged_fields()
    return part


def decode_alter(r, version):
    flexible = version >= 1

    def entity_part(rr):
        return read_entity_part(rr, flexible)

    def entry(rr):
        out = {"error_code": rr.int16(), "error_message": rr.string(compact=flexible),
               "entity": rr.array(entity_part, compact=flexible)}
        if flexible:
            rr.tagged_fields()
        return out

    out = {"throttle_time_ms": r.int32(), "entries": r.array(entry, compact=flexible)}
    if flexible:
        r.tagged_fields()
    return out


def encode_describe(version, components, strict=False):
    """components: [(entity_type, match_type, match_or_None)]"""
    flexible = version >= 1
    w = kw.Writer()

    def component(ww, item):
        ww.string(item[0], compact=flexible)
        ww.int8(item[1])
        ww.string(item[2], compact=flexible)
        if flexible:
            ww.tagged_fields()

    w.array(components, component, compact=flexible)
    w.boolean(strict)
    if flexible:
        w.tagged_fields()
    return w.getvalue()


def decode_describe(r, version):
    flexible = version >= 1

    def entity_part(rr):
        return read_entity_part(rr, flexible)

    def value(rr):
        item = (rr.string(compact=flexible), struct.unpack(">d", bytes(rr.raw(8)))[0])
        if flexible:
            rr.tagged_fields()
        return item

    def entry(rr):
        out = (tuple(sorted(rr.array(entity_part, compact=flexible))),
               dict(rr.array(value, compact=flexible)))
        if flexible:
            rr.tagged_fields()
        return out

    out = {"throttle_time_ms": r.int32(), "error_code": r.int16(),
           "error_message": r.string(compact=flexible)}
    entries = r.array(entry, compact=flexible)
    out["entries"] = None if entries is None else dict(entries)
    if flexible:
        r.tagged_fields()
    return out


def connect(broker, client_id="quota-admin"):
    return kw.KafkaConnection(broker.host, broker.port, client_id=client_id)


def alter(broker, entries, version=1, validate_only=False):
    with connect(broker) as conn:
        r = conn.request(kw.ApiKey.ALTER_CLIENT_QUOTAS, version,
                         encode_alter(version, entries, validate_only))
        return decode_alter(r, version)


def describe(broker, components=(), strict=False, version=1):
    with connect(broker) as conn:
        r = conn.request(kw.ApiKey.DESCRIBE_CLIENT_QUOTAS, version,
                         encode_describe(version, list(components), strict))
        return decode_describe(r, version)


def ok(response):
    assert [(e["error_code"], e["error_message"]) for e in response["entries"]] == \
        [(0, None)] * len(response["entries"]), response
    return response


EXACT, DEFAULT, SPECIFIED = 0, 1, 2


def metric_total(broker, name, **labels):
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- admin API ----------------------------------------------------------------------------------

def test_alter_describe_validate_only_errors_and_restart(broker_factory):
    broker = broker_factory(*WINDOW_ARGS)
    with connect(broker) as conn:
        keys = conn.api_versions(0)["api_keys"]
    for key in (kw.ApiKey.DESCRIBE_CLIENT_QUOTAS, kw.ApiKey.ALTER_CLIENT_QUOTAS):
        assert keys[key] == (0, 1)

    alice = [(USER, "alice")]
    alice_default_client = [(USER, "alice"), (CLIENT_ID, None)]
    default_client = [(CLIENT_ID, None)]
    ok(alter(broker, [(alice, [("producer_byte_rate", 1024)]),
                      (alice_default_client, [("consumer_byte_rate", 2048),
                                              ("request_percentage", 12.5)])]))
    # v0 speaks the same: the default client-id entity through a null name.
    ok(alter(broker, [(default_client, [("controller_mutation_rate", 3.5)])], version=0))

    expected = {
        ((USER, "alice"),): {"producer_byte_rate": 1024.0},
        ((CLIENT_ID, None), (USER, "alice")): {"consumer_byte_rate": 2048.0,
                                                "request_percentage": 12.5},
        ((CLIENT_ID, None),): {"controller_mutation_rate": 3.5},
    }
    for version in (0, 1):
        everything = describe(broker, version=version)
        assert (everything["error_code"], everything["entries"]) == (0, expected)
    exact_alice = describe(broker, [(USER, EXACT, "alice")])["entries"]
    assert set(exact_alice) == {((USER, "alice"),), ((CLIENT_ID, None), (USER, "alice"))}
    assert set(describe(broker, [(USER, EXACT, "alice")], strict=True)["entries"]) == \
        {((USER, "alice"),)}
    assert set(describe(broker, [(CLIENT_ID, DEFAULT, None)])["entries"]) == \
        {((CLIENT_ID, None), (USER, "alice")), ((CLIENT_ID, None),)}
    assert set(describe(broker, [(CLIENT_ID, SPECIFIED, None)], strict=True)["entries"]) == \
        {((CLIENT_ID, None),)}
    assert describe(broker, [(USER, EXACT, "bob")])["entries"] == {}

    # validate_only checks and writes nothing.
    ok(alter(broker, [([(USER, "carol")], [("producer_byte_rate", 5000)])], validate_only=True))
    assert describe(broker, [(USER, EXACT, "carol")])["entries"] == {}

    # A bad entry fails alone, with Kafka's message; the good entry beside it applies.
    mixed = alter(broker, [([(USER, "dave")], [("producer_byte_rate", 777)]),
                           ([(USER, "erin")], [("producer_byte_rate", 1), ("bogus_rate", 5)]),
                           ([(USER, "erin")], [("producer_byte_rate", 10.5)]),
                           ([(USER, "erin")], [("consumer_byte_rate", 0)]),
                           ([(USER, "")], [("producer_byte_rate", 1)]),
                           ([("group", "g")], [("producer_byte_rate", 1)]),
                           ([(USER, "a"), (USER, "b")], [("producer_byte_rate", 1)])])
    results = [(e["error_code"], e["error_message"]) for e in mixed["entries"]]
    assert results == [
        (0, None),
        (kw.Err.INVALID_REQUEST, "Invalid configuration key bogus_rate"),
        (kw.Err.INVALID_REQUEST, "producer_byte_rate cannot be a fractional value."),
        (kw.Err.INVALID_REQUEST, "Quota consumer_byte_rate must be greater than 0"),
        (kw.Err.INVALID_REQUEST, "Empty user not supported"),
        (kw.Err.INVALID_REQUEST, "Unhandled client quota entity type: group"),
        (kw.Err.INVALID_REQUEST, "duplicate entity entry user"),
    ], mixed
    assert mixed["entries"][1]["entity"] == [(USER, "erin")]
    assert describe(broker, [(USER, EXACT, "dave")])["entries"] == \
        {((USER, "dave"),): {"producer_byte_rate": 777.0}}
    assert describe(broker, [(USER, EXACT, "erin")])["entries"] == {}
    bad_filter = describe(broker, [(USER, EXACT, None)])
    assert (bad_filter["error_code"], bad_filter["entries"]) == (kw.Err.INVALID_REQUEST, None)
    assert bad_filter["error_message"] == \
        "Request specified MATCH_TYPE_EXACT, but set match string to null."

    # Removing a key; removing the last key of an entity removes the entity.
    ok(alter(broker, [([(USER, "dave")], [("producer_byte_rate", None)]),
                      (alice_default_client, [("request_percentage", None)])]))
    expected[((CLIENT_ID, None), (USER, "alice"))].pop("request_percentage")
    assert describe(broker)["entries"] == expected

    # The metadata log keeps them.
    broker.restart()
    assert describe(broker)["entries"] == expected

    # `riptide quota` alters and describes over the same APIs.
    def cli(*args, check=True):
        done = subprocess.run([str(broker.binary), "quota", *args, "-b", broker.bootstrap,
                               "--format", "json"], capture_output=True, text=True, timeout=60)
        if check:
            assert done.returncode == 0, done.stderr
        return done

    cli("alter", "--client-id", "cli-app", "--add-config",
        "producer_byte_rate=4096,consumer_byte_rate=8192")
    described = json.loads(cli("describe", "--client-id", "cli-app").stdout)
    assert described == {"quotas": [{"entity": {CLIENT_ID: "cli-app"},
                                      "values": {"consumer_byte_rate": 8192.0,
                                                 "producer_byte_rate": 4096.0}}]}
    cli("alter", "--client-id", "cli-app", "--delete-config", "consumer_byte_rate")
    cli("alter", "--user-default", "--add-config", "producer_byte_rate=1", "--validate-only")
    assert describe(broker, [(USER, DEFAULT, None)])["entries"] == {}
    refused = cli("alter", "--client-id", "x", "--add-config", "bogus=1", check=False)
    assert refused.returncode != 0 and "Invalid configuration key bogus" in refused.stderr
    assert describe(broker, [(CLIENT_ID, EXACT, "cli-app")])["entries"] == \
        {((CLIENT_ID, "cli-app"),): {"producer_byte_rate": 4096.0}}


# -- enforcement ------------------------------------------------------------------------------

def test_raw_produce_over_quota_gets_throttle_time_and_a_muted_connection(broker_factory):
    """One 500 KB produce against 100 KB/s with a 3-sample window: rate 500 KB / 2 s, so
    Kafka's throttle is (250 - 100) / 100 × 2 s = 3 s, given in the response; the next request
    on the connection is held back for it."""
    broker = broker_factory(*WINDOW_ARGS)
    topic = unique_topic("quota-raw")
    create_topic(broker.bootstrap, topic)
    ok(alter(broker, [([(CLIENT_ID, "raw-producer")], [("producer_byte_rate", QUOTA_BYTES_PER_S)])]))
    batch = kw.build_record_batch([b"x" * (100 * 1024) for _ in range(5)])
    with connect(broker, client_id="raw-producer") as conn:
        conn.timeout = 30
        conn.sock.settimeout(30)
        first = conn.produce(9, [(topic, [(0, batch)])], acks=1)
        throttle_ms = first["throttle_time_ms"]
        assert 2500 <= throttle_ms <= 3500, first
        started = time.monotonic()
        conn.api_versions(0)
        held_back_s = time.monotonic() - started
        assert held_back_s >= throttle_ms / 1000 - 0.2, (held_back_s, throttle_ms)
    # The same produce from a client-id without a quota is not throttled.
    with connect(broker, client_id="free-producer") as conn:
        assert conn.produce(9, [(topic, [(0, batch)])], acks=1)["throttle_time_ms"] == 0
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="produce") >= 1
    assert metric_total(broker, "riptide_quota_throttle_ms_total", quota="produce") >= throttle_ms


class Stats:
    """Largest throttle time librdkafka reported in its statistics."""

    def __init__(self):
        self.max_throttle_ms = 0

    def __call__(self, text):
        for broker in json.loads(text).get("brokers", {}).values():
            self.max_throttle_ms = max(self.max_throttle_ms, broker.get("throttle", {}).get("max", 0))


def produce_all(bootstrap, topic, client_id, total_bytes, stats=None, batch_bytes=64 * 1024):
    conf = base_conf(bootstrap, **{"client.id": client_id, "acks": 1, "linger.ms": 5,
                                   "batch.size": batch_bytes, "statistics.interval.ms": 200})
    if stats is not None:
        conf["stats_cb"] = stats
    producer = Producer(conf)
    value = b"q" * MESSAGE_BYTES
    failures = []
    started = time.monotonic()
    for _ in range(total_bytes // MESSAGE_BYTES):
        while True:
            try:
                producer.produce(topic, value, on_delivery=lambda err, _: err and failures.append(err))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(120) == 0
    elapsed = time.monotonic() - started
    producer.poll(0.5)  # a last statistics callback
    assert not failures, failures[:3]
    return total_bytes / elapsed


def test_producer_quota_throttles_its_client_only(broker_factory):
    broker = broker_factory(*WINDOW_ARGS)
    topic = unique_topic("quota-produce")
    create_topic(broker.bootstrap, topic, partitions=2)
    ok(alter(broker, [([(CLIENT_ID, "slow-producer")], [("producer_byte_rate", QUOTA_BYTES_PER_S)])]))

    slow_stats, slow = Stats(), {}
    thread = threading.Thread(target=lambda: slow.update(rate=produce_all(
        broker.bootstrap, topic, "slow-producer", PAYLOAD_BYTES, slow_stats)))
    thread.start()
    try:
        # While the slow client is being throttled, another client-id moves as fast as it can.
        wait_until(lambda: slow_stats.max_throttle_ms > 0, 60, "the slow producer to be throttled")
        fast_stats = Stats()
        fast_rate = produce_all(broker.bootstrap, topic, "fast-producer", PAYLOAD_BYTES, fast_stats)
    finally:
        thread.join(180)
    assert not thread.is_alive()
    rate = slow["rate"]
    print(f"slow producer {rate / 1024:.1f} KiB/s (quota {QUOTA_BYTES_PER_S / 1024:.0f} KiB/s, "
          f"largest throttle {slow_stats.max_throttle_ms} ms); "
          f"fast producer {fast_rate / 1024:.1f} KiB/s")
    assert 0.5 * QUOTA_BYTES_PER_S < rate < 2 * QUOTA_BYTES_PER_S
    assert fast_rate > 4 * QUOTA_BYTES_PER_S
    assert fast_stats.max_throttle_ms == 0
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="produce") > 0
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="fetch") == 0


def consume_all(bootstrap, topic, partitions, client_id, total_messages, stats, **conf):
    consumer = Consumer(base_conf(bootstrap, **{
        "client.id": client_id, "group.id": "quota-" + client_id, "enable.auto.commit": False,
        "fetch.wait.max.ms": 100, "statistics.interval.ms": 200, "stats_cb": stats, **conf}))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    received = 0
    started = time.monotonic()
    try:
        while received < total_messages:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                assert not message.error(), message.error()
                received += 1
            assert time.monotonic() - started < 120, f"consumed {received} of {total_messages}"
        elapsed = time.monotonic() - started
        consumer.poll(0.5)  # a last statistics callback
    finally:
        consumer.close()
    return received * MESSAGE_BYTES / elapsed


def test_consumer_quota_throttles_fetch_of_its_client_only(broker_factory):
    broker = broker_factory(*WINDOW_ARGS)
    topic = unique_topic("quota-fetch")
    create_topic(broker.bootstrap, topic, partitions=2)
    # One message per batch, so small fetches are possible (a first batch larger than the
    # fetch size is returned whole, KIP-74).
    produce_all(broker.bootstrap, topic, "loader", PAYLOAD_BYTES, batch_bytes=MESSAGE_BYTES)
    ok(alter(broker, [([(USER, "ANONYMOUS"), (CLIENT_ID, "slow-consumer")],
                       [("consumer_byte_rate", QUOTA_BYTES_PER_S)])]))
    total_messages = PAYLOAD_BYTES // MESSAGE_BYTES

    fast_stats = Stats()
    fast_rate = consume_all(broker.bootstrap, topic, 2, "fast-consumer", total_messages, fast_stats)
    # Kafka answers a fetch that would take the rate over the quota empty, so a response
    # holding most of the window's allowance waits for the window to drain (with 200 KB
    # responses against this 3-sample window, about half the quota gets through). Small
    # fetches, as a consumer with many partitions makes, follow the quota closely.
    slow_stats = Stats()
    rate = consume_all(broker.bootstrap, topic, 2, "slow-consumer", total_messages, slow_stats,
                       **{"max.partition.fetch.bytes": 32 * 1024})
    print(f"slow consumer {rate / 1024:.1f} KiB/s (quota {QUOTA_BYTES_PER_S / 1024:.0f} KiB/s, "
          f"largest throttle {slow_stats.max_throttle_ms} ms); "
          f"fast consumer {fast_rate / 1024:.1f} KiB/s")
    # Record overhead makes the wire bytes a little more than the payload counted here.
    assert 0.5 * QUOTA_BYTES_PER_S < rate < 2 * QUOTA_BYTES_PER_S
    assert slow_stats.max_throttle_ms > 0
    assert fast_rate > 4 * QUOTA_BYTES_PER_S
    assert fast_stats.max_throttle_ms == 0
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="fetch") > 0
    assert metric_total(broker, "riptide_quota_throttle_ms_total", quota="fetch") > 0


def test_authorizer_needs_cluster_alter_configs_and_describe_configs(broker_factory):
    """With the authorizer on and no ACL, User:ANONYMOUS may neither alter nor describe;
    once the cluster is open to everyone (no ACL names it) both go through."""
    broker = broker_factory("--authorizer-enabled", "true")
    refused = alter(broker, [([(USER, "alice")], [("producer_byte_rate", 1024)])])
    assert [(e["error_code"], e["entity"]) for e in refused["entries"]] == \
        [(31, [(USER, "alice")])]  # CLUSTER_AUTHORIZATION_FAILED
    described = describe(broker)
    assert (described["error_code"], described["entries"]) == (31, None)
    broker.stop()
    broker.extra_args += ["--allow-everyone-if-no-acl-found", "true"]
    broker.start()
    ok(alter(broker, [([(USER, "alice")], [("producer_byte_rate", 1024)])]))
    assert describe(broker)["entries"] == {((USER, "alice"),): {"producer_byte_rate": 1024.0}}


def test_request_percentage_holds_back_a_busy_client_only(broker_factory):
    """request_percentage 0.01: a hundredth of a percent of one core, 0.2 ms of the shard's
    time per 2 s window. A client sending Metadata requests back to back soon runs past it and
    waits out throttles (each at most one sample window, as Kafka bounds them); another
    client-id sends the same requests without waiting."""
    broker = broker_factory(*WINDOW_ARGS)
    create_topic(broker.bootstrap, unique_topic("quota-request"), partitions=4)
    ok(alter(broker, [([(CLIENT_ID, "busy-client")], [("request_percentage", 0.01)])]))

    def metadata_round_trips(client_id, count):
        with connect(broker, client_id=client_id) as conn:
            started = time.monotonic()
            for _ in range(count):
                conn.metadata(9)
            return time.monotonic() - started

    free_s = metadata_round_trips("idle-client", 200)
    # Kafka's rate counts a young quota over its whole sample span (window_num - 1 windows), so
    # on a fast machine one round may stay under the bound: rounds repeat until it is passed.
    busy = []

    def held_back():
        busy.append(metadata_round_trips("busy-client", 200))
        return busy[-1] > 1.0 and busy[-1] > 5 * free_s
    wait_until(held_back, 60, "request_percentage to hold busy-client back")
    print(f"200 Metadata requests: {free_s:.2f} s without a quota, {busy[-1]:.2f} s under "
          "request_percentage 0.01")
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="request") > 0
    assert metric_total(broker, "riptide_quota_throttled_responses_total", quota="produce") == 0
