"""Bounded waits on clients: idle connections (`connections_max_idle_ms`), frames that arrive too
slowly (`request_read_timeout_ms`, slowloris), clients that never read their responses
(`response_write_timeout_ms`), and the connection caps (`max_connections_per_shard`,
`max_connections_per_ip` and its overrides). Each case checks the offending connection is
closed, the closure is counted in `riptide_connections_closed_total{reason=...}`, and a
well-behaved client beside it is served.

Request memory follows the bytes of a frame that arrived, not the size it declared: many slow
frames do not starve other clients, and part-read frames that fill the memory still complete.

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
    """riptide_request_memory_free_bytes{pool=...}, summed over the broker's shards."""
    with urllib.request.urlopen(f"http://127.0.0.1:{broker.admin_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    pattern = re.compile(r'^riptide_request_memory_free_bytes\{[^}]*pool="%s"[^}]*\} (\S+)$' % pool)
    return sum(float(m.group(1)) for m in map(pattern.match, text.splitlines()) if m)


MIB = 1024 * 1024
STEP = 4096  # request_memory_step_bytes' default


@pytest.mark.timeout(180)
def test_slowloris_frames_do_not_starve_other_clients(broker_factory):
    """400 connections declare 64 KiB frames and 8 declare 1 MiB frames, each sending a few bytes
    of the body and no more. Together they declare four times the shard's request memory (small
    and shared), but memory follows the bytes that arrived, not the sizes declared: each holds
    one step, and an honest client's Metadata, produce and fetch round trips complete long before
    the 60 s read timeout would free anything."""
    small_hogs, large_hogs = 400, 8
    broker = broker_factory("--max-request-size-bytes", str(MIB),
                            "--max-request-memory-per-shard-bytes", str(4 * MIB),
                            "--small-request-memory-per-shard-bytes", str(4 * MIB),
                            "--request-read-timeout-ms", "60000", cores=1)
    hogs = []
    try:
        for declared in [64 * 1024] * small_hogs + [MIB] * large_hogs:
            hog = connect(broker)
            hog.send_raw(struct.pack(">i", declared) + b"\x00\x03\x00\x09slow")
            hogs.append(hog)
        held = (small_hogs + large_hogs) * STEP
        total = 8 * MIB

        def hogs_reading():
            free = free_request_memory(broker, "shared") + free_request_memory(broker, "small")
            return free <= total - held

        wait_until(hogs_reading, 60, "every slow frame to be waiting for its body")
        started = time.monotonic()
        with connect(broker) as victim:
            assert victim.metadata(1)["brokers"]
            victim.api_versions(0)
        served(broker)  # librdkafka: metadata, produce, fetch, offsets
        elapsed = time.monotonic() - started
        assert elapsed < 30, f"the honest client took {elapsed:.1f}s: it waited for the slow frames"
        # The honest client's last requests may still be finishing: wait for their memory.
        wait_until(lambda: free_request_memory(broker, "shared")
                   + free_request_memory(broker, "small") == total - held, 30,
                   "the slow frames to hold one step each and no more")
    finally:
        for hog in hogs:
            hog.close()
    wait_until(lambda: free_request_memory(broker, "shared") == 4 * MIB
               and free_request_memory(broker, "small") == 4 * MIB, 30, "the slow frames' memory returned")


@pytest.mark.timeout(120)
def test_declared_frames_hold_memory_in_proportion_to_what_arrived(broker_factory):
    """A connection that declares a 2 MiB frame holds one step of request memory while nothing
    of the body has come, and four times what has arrived once some has (256 KiB: 1 MiB); small
    requests of other clients are served from what is left meanwhile."""
    broker = broker_factory("--max-request-size-bytes", str(2 * MIB),
                            "--max-request-memory-per-shard-bytes", str(4 * MIB),
                            "--request-read-timeout-ms", "60000", cores=1)
    hogs = [connect(broker) for _ in range(3)]
    try:
        for hog in hogs:
            hog.send_raw(struct.pack(">i", 2 * MIB))
        wait_until(lambda: free_request_memory(broker, "shared") == 4 * MIB - 3 * STEP, 30,
                   "each declared frame to hold one step")
        for hog in hogs:
            hog.send_raw(b"\x00" * (256 * 1024))
        wait_until(lambda: free_request_memory(broker, "shared") == 4 * MIB - 3 * MIB, 30,
                   "each frame to hold four times the 256 KiB that arrived")
        with connect(broker) as victim:
            assert victim.metadata(1)["brokers"]
        served(broker)
        wait_until(lambda: free_request_memory(broker, "shared") == MIB, 30,
                   "the frames to hold what they held before the other client came")
    finally:
        for hog in hogs:
            hog.close()
    wait_until(lambda: free_request_memory(broker, "shared") == 4 * MIB, 30, "the memory returned")


def large_produce_frame(topic, frame_bytes, corr):
    """A Produce v3 frame of exactly `frame_bytes` (size prefix included): one record whose
    value fills the rest."""
    def frame_for(value_bytes):
        batch = kw.build_record_batch([b"x" * value_bytes])
        body = kw.encode_produce_request(3, 1, 30000, [(topic, [(0, batch)])])
        return kw.encode_request(kw.ApiKey.PRODUCE, 3, corr, body, "big")

    guess = frame_for(frame_bytes)
    value_bytes = frame_bytes - (len(guess) - frame_bytes)
    for _ in range(4):  # varint lengths may shift the overhead by a byte or two
        frame = frame_for(value_bytes)
        if len(frame) == frame_bytes:
            return frame
        value_bytes += frame_bytes - len(frame)
    raise AssertionError("no value size gives the frame size")


@pytest.mark.timeout(120)
def test_part_read_frames_that_fill_the_memory_all_complete(broker_factory):
    """Four 2 MiB produce requests, each sent a quarter of the way first, between them hold the
    shard's whole 4 MiB of request memory while each still needs more. Were each to wait in the
    pool for its next step, none could finish; each waits instead for all the rest of it in the
    reserve of one largest frame, so all four are appended and answered."""
    broker = broker_factory("--max-request-size-bytes", str(2 * MIB),
                            "--max-request-memory-per-shard-bytes", str(4 * MIB),
                            "--max-message-bytes", str(4 * MIB),
                            "--request-read-timeout-ms", "60000", cores=1)
    topic = unique_topic("bigframes")
    create_topic(broker.bootstrap, topic, 1)
    producers = [connect(broker, timeout=60) for _ in range(4)]
    frames = [large_produce_frame(topic, 2 * MIB + 4, corr=7) for _ in producers]
    try:
        for producer, frame in zip(producers, frames):
            producer.send_raw(frame[:4 + 256 * 1024])
        wait_until(lambda: free_request_memory(broker, "shared") == 0, 30,
                   "the part-read frames to hold all the request memory")
        for producer, frame in zip(producers, frames):
            producer.send_raw(frame[4 + 256 * 1024:])
        offsets = []
        for producer in producers:
            resp = kw.decode_produce_response(producer.read_response(kw.ApiKey.PRODUCE, 3, 7), 3)
            part = kw.produce_partition_results(resp)[(topic, 0)]
            assert part["error_code"] == 0, part
            offsets.append(part["base_offset"])
        assert sorted(offsets) == [0, 1, 2, 3]
    finally:
        for producer in producers:
            producer.close()
    wait_until(lambda: free_request_memory(broker, "shared") == 4 * MIB
               and free_request_memory(broker, "finishing") == 2 * MIB, 30, "the memory returned")


def connect_from(broker, source_ip, timeout=10.0):
    """A connection from `source_ip` (any 127.0.0.0/8 address reaches a loopback listener)."""
    conn = kw.KafkaConnection.__new__(kw.KafkaConnection)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source_ip, 0))
    sock.settimeout(timeout)
    sock.connect((broker.host, broker.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.sock, conn.timeout, conn.client_id, conn._corr = sock, timeout, "per-ip-test", 0
    return conn


def is_served(conn):
    """True if the connection answers, False if the broker closed it (a timeout raises)."""
    try:
        conn.api_versions(0)
        return True
    except (kw.ConnectionClosed, ConnectionResetError, BrokenPipeError):
        return False


@pytest.mark.timeout(120)
def test_connections_per_ip_are_limited_over_all_shards(broker_factory):
    """max_connections_per_ip=2 with 127.0.0.2 allowed 4, on two shards (connections land on
    either): of 6 connections from 127.0.0.1 two are served and four closed at once; of 6 from
    127.0.0.2, four. When one closes, its address may connect again."""
    broker = broker_factory("--max-connections-per-ip", "2",
                            "--max-connections-per-ip-overrides", "127.0.0.2:4", cores=2)
    for source_ip, limit in (("127.0.0.1", 2), ("127.0.0.2", 4)):
        conns = [connect_from(broker, source_ip) for _ in range(6)]
        served_ones = [c for c in conns if is_served(c)]
        assert len(served_ones) == limit, f"{source_ip}: {len(served_ones)} served, limit {limit}"
        for c in conns:
            if c not in served_ones:
                c.close()
        conns = served_ones
        if source_ip == "127.0.0.1":
            conns.pop().close()

            def one_more_is_served():
                c = connect_from(broker, source_ip)
                if is_served(c):
                    conns.append(c)
                    return True
                c.close()
                return False

            wait_until(one_more_is_served, 20, "a connection to be served once one closed",
                       interval=0.1)
            extra = connect_from(broker, source_ip)
            assert not is_served(extra), "a third connection from 127.0.0.1 was served"
            extra.close()
        for c in conns:
            c.api_versions(0)
            c.close()
    assert closed_by_broker(broker, "over_ip_limit") >= 4 + 2 + 1
    served(broker)
