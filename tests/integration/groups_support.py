"""Helpers for the consumer-group tests (test_groups*.py): broker flags with small group timings,
consumers with small timeouts, polling several consumers until a condition holds, and raw wire
encoders for the group APIs (to check exact error codes).

Everything waits on conditions (with a deadline), never on fixed sleeps.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

import kafka_wire as kw
from helpers import base_conf

# Broker flags for fast group tests: no initial rebalance delay, small KIP-848 timings, few
# __consumer_offsets partitions (so a broker starts and creates it quickly), 1 s minimum session.
GROUP_BROKER_ARGS = (
    "--group-initial-rebalance-delay-ms", "0",
    "--group-min-session-timeout-ms", "1000",
    "--offsets-topic-num-partitions", "8",
    "--group-consumer-heartbeat-interval-ms", "300",
    "--group-consumer-session-timeout-ms", "6000",
)

SESSION_TIMEOUT_MS = 6000
# Commit errors a member may see while its group rebalances; it keeps going.
RETRIABLE_COMMIT_ERRORS = {KafkaError.REBALANCE_IN_PROGRESS, KafkaError.ILLEGAL_GENERATION,
                           KafkaError.UNKNOWN_MEMBER_ID, KafkaError._ASSIGNMENT_LOST,
                           KafkaError.STALE_MEMBER_EPOCH}
HEARTBEAT_INTERVAL_MS = 500


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def group_consumer(bootstrap: str, group: str, **extra) -> Consumer:
    """A librdkafka group consumer with small timeouts; classic protocol unless overridden."""
    conf = {
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": SESSION_TIMEOUT_MS,
        "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS,
        "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 1000,
    }
    if extra.get("group.protocol") == "consumer":
        # Session and heartbeat are the broker's business with KIP-848.
        conf.pop("session.timeout.ms")
        conf.pop("heartbeat.interval.ms")
    conf.update(extra)
    return Consumer(base_conf(bootstrap, **conf))


class Tracked:
    """A consumer polled by its own thread (as applications run consumers), with what it
    received and its rebalance callbacks. One thread per consumer matters: a synchronous commit
    may wait behind the member's own JoinGroup (responses come in request order on a
    connection, as with Kafka); polling every consumer from one thread would then starve the
    others of the poll() they need to rejoin."""

    def __init__(self, consumer: Consumer, name: str, commit_each: bool = True) -> None:
        self.consumer = consumer
        self.name = name
        self.commit_each = commit_each
        self.received: List[tuple] = []  # (partition, offset, value)
        self.assigns: List[List[int]] = []
        self.revokes: List[List[int]] = []
        self.errors: List[KafkaError] = []
        self.commit_errors: List[int] = []
        self.closed = False
        self._assignment: List[int] = []
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.failure: Optional[BaseException] = None

    def on_assign(self, consumer, partitions):
        self.assigns.append(sorted(p.partition for p in partitions))

    def on_revoke(self, consumer, partitions):
        self.revokes.append(sorted(p.partition for p in partitions))

    def subscribe(self, topics: Sequence[str]) -> "Tracked":
        self.consumer.subscribe(list(topics), on_assign=self.on_assign, on_revoke=self.on_revoke)
        self._thread = threading.Thread(target=self._run, name=f"consumer-{self.name}", daemon=True)
        self._thread.start()
        return self

    def assignment(self) -> List[int]:
        """The assignment as of the last poll (read by the polling thread)."""
        return [] if self.closed else list(self._assignment)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._poll_once(0.05)
                self._assignment = sorted(tp.partition for tp in self.consumer.assignment())
        except BaseException as e:  # reported through check()
            self.failure = e
        finally:
            self.consumer.close()

    def _poll_once(self, timeout: float) -> None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() != KafkaError._PARTITION_EOF:
                self.errors.append(msg.error())
            return
        self.received.append((msg.partition(), msg.offset(), msg.value()))
        if self.commit_each:
            try:
                self.consumer.commit(message=msg, asynchronous=False)
            except KafkaException as e:
                # Retriable during a rebalance (REBALANCE_IN_PROGRESS): a later commit covers
                # it, or the message is delivered again (at least once).
                code = e.args[0].code()
                if code not in RETRIABLE_COMMIT_ERRORS:
                    raise
                self.commit_errors.append(code)

    def check(self) -> None:
        if self.failure is not None:
            raise AssertionError(f"consumer {self.name} failed: {self.failure!r}")

    def close(self) -> None:
        """Stops polling and closes the consumer (leaving the group), on its own thread."""
        if self.closed:
            return
        self.closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
            assert not self._thread.is_alive(), f"consumer {self.name} did not close"
        else:
            self.consumer.close()


def poll_until(members: Iterable[Tracked], predicate: Callable[[], bool], timeout: float,
               what: str) -> None:
    """Waits (the members poll on their own threads) until `predicate()` holds; fails after
    `timeout` s."""
    members = list(members)
    deadline = time.monotonic() + timeout
    while True:
        for m in members:
            m.check()
        if predicate():
            return
        if time.monotonic() > deadline:
            state = {m.name: (m.assignment() if not m.closed else "closed", len(m.received),
                              [str(e) for e in m.errors[-3:]]) for m in members}
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {state}")
        time.sleep(0.02)  # poll interval of the condition, not a synchronisation sleep


def owned_exactly_once(members: Sequence[Tracked], partitions: int) -> bool:
    """True when the open members' assignments cover every partition exactly once."""
    owned = [p for m in members if not m.closed for p in m.assignment()]
    return sorted(owned) == list(range(partitions))


def balanced(members: Sequence[Tracked], partitions: int) -> bool:
    open_members = [m for m in members if not m.closed]
    if not owned_exactly_once(open_members, partitions):
        return False
    sizes = [len(m.assignment()) for m in open_members]
    return max(sizes) - min(sizes) <= 1


def values_received(members: Sequence[Tracked]) -> set:
    return {v for m in members for (_, _, v) in m.received}


def committed(consumer: Consumer, topic: str, partitions: int) -> Dict[int, int]:
    tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    return {tp.partition: tp.offset for tp in tps}


# ---- raw wire helpers for the group APIs ----------------------------------------------------

JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP = 11, 12, 13, 14
OFFSET_COMMIT, OFFSET_FETCH, DESCRIBE_GROUPS, LIST_GROUPS = 8, 9, 15, 16
FIND_COORDINATOR, DELETE_GROUPS, OFFSET_DELETE = 10, 42, 47

E_NONE = 0
E_UNKNOWN_TOPIC_OR_PARTITION = 3
E_OFFSET_METADATA_TOO_LARGE = 12
E_COORDINATOR_NOT_AVAILABLE = 15
E_NOT_COORDINATOR = 16
E_ILLEGAL_GENERATION = 22
E_INCONSISTENT_GROUP_PROTOCOL = 23
E_INVALID_GROUP_ID = 24
E_UNKNOWN_MEMBER_ID = 25
E_INVALID_SESSION_TIMEOUT = 26
E_REBALANCE_IN_PROGRESS = 27
E_INVALID_REQUEST = 42
E_NON_EMPTY_GROUP = 68
E_GROUP_ID_NOT_FOUND = 69
E_MEMBER_ID_REQUIRED = 79
E_FENCED_INSTANCE_ID = 82
E_GROUP_SUBSCRIBED_TO_TOPIC = 86
E_UNSTABLE_OFFSET_COMMIT = 88


def consumer_subscription(topics: Sequence[str]) -> bytes:
    """ConsumerProtocolSubscription v0: topics, no user data."""
    w = kw.Writer().int16(0).array(list(topics), lambda ww, t: ww.string(t)).bytes_(None)
    return w.getvalue()


def consumer_assignment(topic: str, partitions: Sequence[int]) -> bytes:
    """ConsumerProtocolAssignment v0."""
    w = kw.Writer().int16(0)
    w.array([topic], lambda ww, t: (ww.string(t), ww.array(list(partitions), lambda w3, p: w3.int32(p))))
    w.bytes_(None)
    return w.getvalue()


class GroupWire:
    """Classic group requests over one raw connection, non-flexible versions (JoinGroup v5,
    SyncGroup v3, Heartbeat v3, LeaveGroup v3, OffsetCommit v7, OffsetFetch v5, DeleteGroups v1,
    OffsetDelete v0) plus flexible FindCoordinator v4, OffsetFetch v7 and ListGroups v4."""

    def __init__(self, host: str, port: int, client_id: str = "riptide-it-raw") -> None:
        self.conn = kw.KafkaConnection(host, port, timeout=30)
        self.conn.client_id = client_id

    def close(self) -> None:
        self.conn.close()

    def _call(self, key: int, version: int, body: bytes, flexible: bool = False) -> kw.Reader:
        corr = self.conn.send_request(key, version, body, header_version=2 if flexible else 1)
        return self.conn.read_response(key, version, corr, header_version=1 if flexible else 0)

    # JoinGroup v5
    def join_send(self, group: str, member_id: str = "", instance_id: Optional[str] = None,
                  topics: Sequence[str] = ("t",), session_ms: int = 6000, rebalance_ms: int = 10000,
                  protocols: Sequence[str] = ("range",)) -> int:
        meta = consumer_subscription(topics)
        w = kw.Writer().string(group).int32(session_ms).int32(rebalance_ms).string(member_id)
        w.string(instance_id).string("consumer")
        w.array(list(protocols), lambda ww, p: (ww.string(p), ww.bytes_(meta)))
        return self.conn.send_request(JOIN_GROUP, 5, w.getvalue(), header_version=1)

    def join_recv(self, corr: int) -> dict:
        r = self.conn.read_response(JOIN_GROUP, 5, corr, header_version=0)
        resp = {"throttle": r.int32(), "error": r.int16(), "generation": r.int32(),
                "protocol": r.string(), "leader": r.string(), "member_id": r.string()}
        resp["members"] = r.array(lambda rr: (rr.string(), rr.string(), rr.bytes_()))
        return resp

    def join(self, group: str, **kwargs) -> dict:
        return self.join_recv(self.join_send(group, **kwargs))

    # SyncGroup v3
    def sync_send(self, group: str, generation: int, member_id: str,
                  assignments: Sequence[tuple] = (), instance_id: Optional[str] = None) -> int:
        w = kw.Writer().string(group).int32(generation).string(member_id).string(instance_id)
        w.array(list(assignments), lambda ww, a: (ww.string(a[0]), ww.bytes_(a[1])))
        return self.conn.send_request(SYNC_GROUP, 3, w.getvalue(), header_version=1)

    def sync_recv(self, corr: int) -> dict:
        r = self.conn.read_response(SYNC_GROUP, 3, corr, header_version=0)
        return {"throttle": r.int32(), "error": r.int16(), "assignment": r.bytes_()}

    def sync(self, group: str, generation: int, member_id: str, **kwargs) -> dict:
        return self.sync_recv(self.sync_send(group, generation, member_id, **kwargs))

    # Heartbeat v3
    def heartbeat(self, group: str, generation: int, member_id: str,
                  instance_id: Optional[str] = None) -> int:
        w = kw.Writer().string(group).int32(generation).string(member_id).string(instance_id)
        r = self._call(HEARTBEAT, 3, w.getvalue())
        r.int32()
        return r.int16()

    # LeaveGroup v3
    def leave(self, group: str, members: Sequence[tuple]) -> dict:
        w = kw.Writer().string(group)
        w.array(list(members), lambda ww, m: (ww.string(m[0]), ww.string(m[1])))
        r = self._call(LEAVE_GROUP, 3, w.getvalue())
        r.int32()
        top = r.int16()
        members = r.array(lambda rr: (rr.string(), rr.string(), rr.int16()))
        return {"error": top, "members": members}

    # OffsetCommit v7: commits = [(topic, partition, offset, metadata)]
    def commit(self, group: str, commits: Sequence[tuple], generation: int = -1,
               member_id: str = "", instance_id: Optional[str] = None) -> Dict[tuple, int]:
        by_topic: Dict[str, list] = {}
        for topic, partition, offset, metadata in commits:
            by_topic.setdefault(topic, []).append((partition, offset, metadata))
        w = kw.Writer().string(group).int32(generation).string(member_id).string(instance_id)

        def topic(ww, item):
            name, parts = item
            ww.string(name)
            ww.array(parts, lambda w3, p: (w3.int32(p[0]), w3.int64(p[1]), w3.int32(-1), w3.string(p[2])))
        w.array(list(by_topic.items()), topic)
        r = self._call(OFFSET_COMMIT, 7, w.getvalue())
        r.int32()
        out = {}
        for name, parts in r.array(lambda rr: (rr.string(), rr.array(lambda r3: (r3.int32(), r3.int16())))):
            for partition, code in parts:
                out[(name, partition)] = code
        return out

    # OffsetFetch v5 (non-flexible) or v7 (flexible, require_stable)
    def fetch(self, group: str, topics: Optional[Sequence[tuple]], require_stable: bool = False,
              version: int = 5) -> dict:
        flexible = version >= 6
        w = kw.Writer().string(group, compact=flexible)

        def topic(ww, item):
            ww.string(item[0], compact=flexible)
            ww.array(list(item[1]), lambda w3, p: w3.int32(p), compact=flexible)
            if flexible:
                ww.tagged_fields()
        w.array(None if topics is None else list(topics), topic, compact=flexible)
        if version >= 7:
            w.boolean(require_stable)
        if flexible:
            w.tagged_fields()
        r = self._call(OFFSET_FETCH, version, w.getvalue(), flexible=flexible)
        r.int32()

        def partition(rr):
            out = (rr.int32(), rr.int64(), rr.int32(), rr.string(compact=flexible), rr.int16())
            if flexible:
                rr.tagged_fields()
            return out

        def topic_out(rr):
            name = rr.string(compact=flexible)
            parts = rr.array(partition, compact=flexible)
            if flexible:
                rr.tagged_fields()
            return name, parts
        topics_out = r.array(topic_out, compact=flexible)
        error = r.int16()
        offsets = {(name, p[0]): {"offset": p[1], "leader_epoch": p[2], "metadata": p[3], "error": p[4]}
                   for name, parts in topics_out for p in parts}
        return {"error": error, "offsets": offsets}

    # OffsetFetch v8 (flexible): several groups at once; groups = [(group, topics or None)]
    def fetch_groups(self, groups: Sequence[tuple], require_stable: bool = False) -> dict:
        def group(ww, item):
            name, topics = item
            ww.string(name, compact=True)

            def topic(w3, t):
                w3.string(t[0], compact=True)
                w3.array(list(t[1]), lambda w4, p: w4.int32(p), compact=True)
                w3.tagged_fields()
            ww.array(None if topics is None else list(topics), topic, compact=True)
            ww.tagged_fields()
        w = kw.Writer().array(list(groups), group, compact=True).boolean(require_stable).tagged_fields()
        r = self._call(OFFSET_FETCH, 8, w.getvalue(), flexible=True)
        r.int32()

        def partition(rr):
            out = (rr.int32(), rr.int64(), rr.int32(), rr.string(compact=True), rr.int16())
            rr.tagged_fields()
            return out

        def topic_out(rr):
            name = rr.string(compact=True)
            parts = rr.array(partition, compact=True)
            rr.tagged_fields()
            return name, parts

        def group_out(rr):
            name = rr.string(compact=True)
            topics = rr.array(topic_out, compact=True)
            error = rr.int16()
            rr.tagged_fields()
            return name, {"error": error, "offsets": {(t, p[0]): p[1] for t, parts in topics for p in parts}}
        return dict(r.array(group_out, compact=True))

    # FindCoordinator v4 (flexible, batched keys)
    def find_coordinator(self, keys: Sequence[str], key_type: int = 0) -> list:
        w = kw.Writer().int8(key_type).array(list(keys), lambda ww, k: ww.string(k, compact=True), compact=True)
        w.tagged_fields()
        r = self._call(FIND_COORDINATOR, 4, w.getvalue(), flexible=True)
        r.int32()

        def coordinator(rr):
            out = {"key": rr.string(compact=True), "node_id": rr.int32(), "host": rr.string(compact=True),
                   "port": rr.int32(), "error": rr.int16(), "message": rr.string(compact=True)}
            rr.tagged_fields()
            return out
        return r.array(coordinator, compact=True)

    # ListGroups v4 (flexible, states filter)
    def list_groups(self, states: Sequence[str] = ()) -> dict:
        w = kw.Writer().array(list(states), lambda ww, s: ww.string(s, compact=True), compact=True)
        w.tagged_fields()
        r = self._call(LIST_GROUPS, 4, w.getvalue(), flexible=True)
        r.int32()
        error = r.int16()

        def group(rr):
            out = (rr.string(compact=True), rr.string(compact=True), rr.string(compact=True))
            rr.tagged_fields()
            return out
        return {"error": error, "groups": {g[0]: {"protocol_type": g[1], "state": g[2]}
                                           for g in r.array(group, compact=True)}}

    # DescribeGroups v4 (non-flexible)
    def describe(self, groups: Sequence[str]) -> list:
        w = kw.Writer().array(list(groups), lambda ww, g: ww.string(g)).boolean(False)
        r = self._call(DESCRIBE_GROUPS, 4, w.getvalue())
        r.int32()

        def member(rr):
            return {"member_id": rr.string(), "instance_id": rr.string(), "client_id": rr.string(),
                    "client_host": rr.string(), "metadata": rr.bytes_(), "assignment": rr.bytes_()}

        def group(rr):
            return {"error": rr.int16(), "group_id": rr.string(), "state": rr.string(),
                    "protocol_type": rr.string(), "protocol": rr.string(),
                    "members": rr.array(member), "authorized_operations": rr.int32()}
        return r.array(group)

    # DeleteGroups v1
    def delete_groups(self, groups: Sequence[str]) -> Dict[str, int]:
        w = kw.Writer().array(list(groups), lambda ww, g: ww.string(g))
        r = self._call(DELETE_GROUPS, 1, w.getvalue())
        r.int32()
        return dict(r.array(lambda rr: (rr.string(), rr.int16())))

    # OffsetDelete v0
    def offset_delete(self, group: str, topics: Sequence[tuple]) -> dict:
        w = kw.Writer().string(group)
        w.array(list(topics), lambda ww, t: (ww.string(t[0]), ww.array(list(t[1]), lambda w3, p: w3.int32(p))))
        r = self._call(OFFSET_DELETE, 0, w.getvalue())
        error = r.int16()
        r.int32()
        parts = {}
        for name, ps in r.array(lambda rr: (rr.string(), rr.array(lambda r3: (r3.int32(), r3.int16())))):
            for partition, code in ps:
                parts[(name, partition)] = code
        return {"error": error, "partitions": parts}


def unpack_assignment(data: bytes) -> Dict[str, List[int]]:
    """ConsumerProtocolAssignment (any version) -> {topic: [partitions]}."""
    r = kw.Reader(data)
    r.int16()
    out = {}
    for name, parts in r.array(lambda rr: (rr.string(), rr.array(lambda r3: r3.int32()))) or []:
        out[name] = parts
    return out
