"""Bounded waits on clients: idle connections (`connections_max_idle_ms`), frames that arrive too
slowly (`request_read_timeout_ms`, slowloris), clients that never read their responses
(`response_write_timeout_ms`), and the connection cap (`max_connections_per_shard`). Each case
checks the offending connection is closed, the closure is counted in
`riptide_connections_closed_total{reason=...}`, and a well-behaved client beside it is served.

The limits are set to about a second so the tests are quick; every wait is on a condition with a
deadline. Where a test shows a connection is *not* closed early, it does so by keeping it busy
past the limit and checking it still answers.
"""

import re
import socket
import struct
import time
import urllib.request

import pytest

import kafka_wire as kw
from helpers import consume_partitions, create_topic, produce, unique_topic, wait_until

LIMIT_MS = 1000
FETCH_VERSION = 4


def connect(broker, timeout=10.0, rcvbuf=None):
    conn = kw.KafkaConnection.__new__(kw.KafkaConnection)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Before connect, so the window the broker sees stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((broker.host, broker.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock, conn.timeout, conn.client_id, conn._corr = sock, timeout, "limits-test", 0
    return conn


def closed_by_broker(broker, reason):
    """riptide_connections_closed_total{reason=...}, summed over shards."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = re.compile(r'^riptide_connections_closed_total\{[^}]*reason="%s"[^}]*\} (\S+)$' % reason)
    return sum(float(m.group(1)) for m in map(pattern.match, text.splitlines()) if m)


def served(broker):
    """A librdkafka producer and consumer round trip works."""
    broker.ensure_alive()
    topic = unique_topic("beside")
    produce(broker.bootstrap, topic, [{"value": b"v%d" % i, "partition": 0} for i in range(5)])
    got = consume_partitions(broker.bootstrap, topic, [0], expected={0: 5}, timeout=30)[0]
    assert [m.value for m in got] == [b"v%d" % i for i in range(5)]


@pytest.mark.timeout(90)
def test_idle_connections_are_closed_busy_ones_kept(broker_factory):
    """A connection that sends nothing is closed after connections_max_idle_ms; one that keeps
    sending requests, and one whose only request is still in flight (a Fetch waiting longer than
    the idle limit), are not."""
    broker = broker_factory("--connections-max-idle-ms", str(LIMIT_MS), cores=1)
    topic = unique_topic("idle")
    create_topic(broker.bootstrap, topic, 1)
    idle = connect(broker)
    chatty = connect(broker)
    waiting = connect(broker)
    opened = time.monotonic()

    # Fetch at the end of an empty partition: the broker holds it for max_wait (2.5 s > limit).
    body = kw.encode_fetch_request(FETCH_VERSION, [(topic, [(0, 0, 1 << 20)])], max_wait_ms=2500)
    corr = waiting.send_request(kw.ApiKey.FETCH, FETCH_VERSION, body)

    def idle_closed():
        chatty.api_versions(0)  # raises if the busy connection was closed
        try:
            idle.sock.settimeout(0.2)
            return idle.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    wait_until(idle_closed, 15, "the idle connection to be closed", interval=0.2)
    elapsed = time.monotonic() - opened
    assert elapsed >= LIMIT_MS / 1000 * 0.9, f"closed after {elapsed:.2f}s, before the idle limit"
    assert closed_by_broker(broker, "idle") >= 1

    # The waiting Fetch is answered after its max_wait, on a connection still open.
    resp = kw.decode_fetch_response(waiting.read_response(kw.ApiKey.FETCH, FETCH_VERSION, corr),
                                    FETCH_VERSION)
    assert resp["topics"][0]["partitions"][0]["error_code"] == 0
    assert time.monotonic() - opened >= 2.0
    waiting.api_versions(0)
    for c in (idle, chatty, waiting):
        c.close()
    served(broker)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sent", ["part of the size", "size and part of the body"])
def test_slow_frames_are_closed(broker_factory, sent):
    """Slowloris: a frame trickling in a byte every 200 ms is cut off request_read_timeout_ms
    after its first byte (or after its memory was granted), while another client is served."""
    broker = broker_factory("--request-read-timeout-ms", str(LIMIT_MS), cores=1)
    frame = kw.encode_request(kw.ApiKey.API_VERSIONS, 0, 1, kw.encode_api_versions_request(0), "slow")
    head = frame[:2] if sent == "part of the size" else frame[:6]
    slow = connect(broker)
    slow.send_raw(head)
    started = time.monotonic()
    trickle = iter(frame[len(head):-1])  # never the last byte

    def closed():
        try:
            slow.sock.sendall(bytes([next(trickle)]))
        except (BrokenPipeError, ConnectionResetError):
            return True
        except StopIteration:
            pytest.fail("the whole frame but one byte went through: the limit did not act")
        slow.sock.settimeout(0.2)
        try:
            return slow.sock.recv(1) == b""
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    served(broker)
    wait_until(closed, 20, "the slow connection to be closed", interval=0.0)
    elapsed = time.monotonic() - started
    assert elapsed >= LIMIT_MS / 1000 * 0.9, f"closed after {elapsed:.2f}s, before the limit"
    assert closed_by_broker(broker, "request_timeout") == 1
    slow.close()
    served(broker)


@pytest.mark.timeout(120)
def test_client_that_never_reads_is_closed(broker_factory):
    """A client that sends Fetch requests for megabytes and never reads the responses has its
    connection closed after response_write_timeout_ms; other clients are served throughout."""
    broker = broker_factory("--response-write-timeout-ms", str(LIMIT_MS), cores=1)
    topic = unique_topic("noread")
    create_topic(broker.bootstrap, topic, 1)
    produce(broker.bootstrap, topic, [{"value": b"x" * 100_000, "partition": 0} for i in range(40)])
    stuck = connect(broker, rcvbuf=4096)
    body = kw.encode_fetch_request(FETCH_VERSION, [(topic, [(0, 0, 8 << 20)])], max_wait_ms=0,
                                   max_bytes=8 << 20)
    for _ in range(8):
        stuck.send_request(kw.ApiKey.FETCH, FETCH_VERSION, body)
    wait_until(lambda: closed_by_broker(broker, "response_timeout") >= 1, 30,
               "the broker to give up on the client that does not read")
    served(broker)
    # What is left for the client ends in a close (EOF or reset), not more data forever.
    stuck.sock.settimeout(10)
    total = 0
    try:
        while True:
            chunk = stuck.sock.recv(1 << 20)
            if not chunk:
                break
            total += len(chunk)
            assert total < 8 * (8 << 20), "the broker kept sending after closing"
    except ConnectionResetError:
        pass
    stuck.close()


@pytest.mark.timeout(90)
def test_connections_over_the_limit_are_refused(broker_factory):
    """With max_connections_per_shard=4 on one shard, a fifth connection is closed at once;
    when one of the four goes, a new one is served."""
    broker = broker_factory("--max-connections-per-shard", "4", cores=1)
    held = [connect(broker) for _ in range(4)]
    for c in held:
        c.api_versions(0)
    extra = connect(broker)
    assert extra.wait_closed(10) == b"", "a connection over the limit was served"
    assert closed_by_broker(broker, "over_limit") >= 1
    extra.close()
    held.pop().close()

    def a_new_one_is_served():
        c = connect(broker)
        try:
            c.api_versions(0)
            return True
        except (kw.ConnectionClosed, OSError):
            return False
        finally:
            c.close()

    wait_until(a_new_one_is_served, 20, "a connection to be served once one closed", interval=0.1)
    for c in held:
        c.api_versions(0)
        c.close()


def free_request_memory(broker, pool):
    """riptide_request_memory_free_bytes{pool=...} of the broker's (one) shard."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = re.compile(r'^riptide_request_memory_free_bytes\{[^}]*pool="%s"[^}]*\} (\S+)$' % pool)
    return sum(float(m.group(1)) for m in map(pattern.match, text.splitlines()) if m)


@pytest.mark.timeout(120)
def test_small_requests_are_served_while_large_frames_hold_the_request_memory(broker_factory):
    """Connections that declare large frames and send nothing more take the shard's shared
    request memory (and a third waits for it); small requests of other clients go on being
    served from the small-request memory, long before the read timeout frees anything."""
    frame_mib = 2
    broker = broker_factory("--max-request-size-bytes", str(frame_mib * 1024 * 1024),
                            "--max-request-memory-per-shard-bytes", str(2 * frame_mib * 1024 * 1024),
                            "--request-read-timeout-ms", "60000", cores=1)
    hogs = []
    for _ in range(3):
        hog = connect(broker)
        hog.send_raw(struct.pack(">i", frame_mib * 1024 * 1024))
        hogs.append(hog)
    wait_until(lambda: free_request_memory(broker, "shared") == 0, 30, "the hogs to hold the shared memory")
    started = time.monotonic()
    with connect(broker) as victim:
        assert victim.metadata(1)["brokers"]
        victim.api_versions(0)
    # A librdkafka client's whole round trip: metadata, produce, fetch, offsets.
    served(broker)
    assert time.monotonic() - started < 30, "small requests waited for the hogs' read timeout"
    assert free_request_memory(broker, "shared") == 0, "the hogs still hold the shared memory"
    for hog in hogs:
        hog.close()
    wait_until(lambda: free_request_memory(broker, "shared") == 2 * frame_mib * 1024 * 1024, 30,
               "the hogs' memory returned")
