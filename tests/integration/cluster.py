"""A multi-node Riptide cluster for the integration tests, built on BrokerProcess.

    cluster = cluster_factory(voters=3)            # nodes 1..3, each broker + controller
    cluster = cluster_factory(voters=3, brokers=1) # plus node 4, broker only
    cluster.start()                                # all nodes; waits until the cluster formed
    cluster.health(1)                              # node 1's /v1/cluster/health (dict)
    cluster.active_controller()                    # the id every live voter agrees on, or None
    cluster.kill9(2); cluster.restart(2); cluster.wipe(3)
    cluster.wait_for(lambda: ..., 30, "what we wait for")

Each node has its own Kafka, controller and admin (metrics/health) port, picked free at
construction, and its own data dir and log under the test's work dir. Nodes keep their ports
across restarts. The conftest fixture `cluster_factory` registers every node's BrokerProcess
with the test so that failing reports carry each node's log, and stops every live node at
teardown (SIGTERM, exit code 0 expected).

Waiting is always on a condition with a deadline (`wait_for`), never a fixed sleep.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import kafka_wire as kw
from riptide_broker import BrokerError, BrokerProcess

# Fast timings for tests (milliseconds).
HEARTBEAT_MS = 500
SESSION_MS = 4000
ELECTION_MS = 1000

HEALTH_PATH = "/v1/cluster/health"
POLL_INTERVAL_S = 0.05


class ClusterError(AssertionError):
    pass


def free_ports(count: int, taken: Iterable[int] = ()) -> List[int]:
    """`count` distinct TCP ports on 127.0.0.1 that were free a moment ago. All sockets are held
    open until every port is picked, so the kernel cannot hand out the same port twice."""
    socks, ports = [], []
    taken = set(taken)
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            socks.append(s)
            if port not in taken and port not in ports:
                ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def wait_for(condition: Callable[[], object], timeout: float, what: str,
             interval: float = POLL_INTERVAL_S, describe: Optional[Callable[[], str]] = None):
    """Poll `condition` until it returns a truthy value (returned) or `timeout` s pass (fail
    with `what`, the last exception and, if given, `describe()` for context)."""
    deadline = time.monotonic() + timeout
    last_exc: Optional[BaseException] = None
    last_value: object = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last_value = value
        except Exception as e:  # keep polling; report the last error on timeout
            last_exc = e
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout}s waiting for {what}"
            if last_exc is not None:
                msg += f" (last error: {last_exc!r})"
            elif last_value not in (None, False):
                msg += f" (last value: {last_value!r})"
            if describe is not None:
                try:
                    msg += "\n" + describe()
                except Exception as e:  # noqa: BLE001
                    msg += f"\n(could not describe the cluster: {e!r})"
            raise ClusterError(msg)
        time.sleep(interval)  # poll interval, not a synchronisation sleep


def http_get_json(host: str, port: int, path: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
        return json.loads(resp.read())


_NETNS_GET = (
    "import sys, urllib.request\n"
    "with urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])) as r:\n"
    "    sys.stdout.write(r.read().decode())\n"
)


def netns_http_get_json(netns: str, port: int, path: str, timeout: float = 5.0) -> dict:
    """GET http://127.0.0.1:PORT/PATH from inside network namespace `netns` (a node's admin
    endpoint listens on its namespace's loopback)."""
    try:
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c", _NETNS_GET,
                              f"http://127.0.0.1:{port}{path}", str(timeout)],
                             capture_output=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired as e:
        raise OSError(f"GET {path} in {netns} timed out") from e
    if out.returncode != 0:
        raise OSError(f"GET {path} in {netns} failed: {out.stderr.decode(errors='replace')[-500:]}")
    return json.loads(out.stdout)


class NetnsBrokerProcess(BrokerProcess):
    """A broker run inside a network namespace (`ip netns exec NS riptide serve ...`; ip execs
    the broker, so signals reach it directly). Kafka and controller listen on the namespace's
    address, the admin endpoint on its loopback; readiness is polled through the namespace."""

    def __init__(self, *args, netns: str, address: str, **kwargs) -> None:
        self.netns = netns
        self.address = address
        super().__init__(*args, **kwargs)

    @property
    def host(self) -> str:
        return self.address

    @property
    def bootstrap(self) -> str:
        return f"{self.address}:{self.port}"

    def command(self) -> list:
        return ["ip", "netns", "exec", self.netns, *super().command()]

    def wait_ready(self, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        last_error: object = None
        port = self.ready_admin_port
        while True:
            if not self.alive():
                rc = self.proc.poll() if self.proc else None
                raise BrokerError(f"{self.name} exited with code {rc} before becoming ready\n"
                                  f"{self.log_tail(80)}")
            try:
                resp = netns_http_get_json(self.netns, port, "/v1/status/ready", timeout=2)
                if resp.get("status") == "ready":
                    return resp
                last_error = resp
            except (OSError, ValueError) as e:
                last_error = e
            if time.monotonic() >= deadline:
                raise BrokerError(f"{self.name} not ready within {timeout}s in {self.netns}: "
                                  f"last error {last_error!r}\n{self.log_tail(80)}")
            time.sleep(0.1)  # poll interval, not a synchronisation sleep


class Node:
    """One cluster member: its BrokerProcess plus its cluster identity and ports."""

    def __init__(self, cluster: "Cluster", node_id: int, voter: bool, kafka_port: int,
                 controller_port: Optional[int], admin_port: int, extra_args: Sequence[str] = (),
                 rack: Optional[str] = None, netns: Optional[str] = None,
                 address: str = "127.0.0.1") -> None:
        self.cluster = cluster
        self.node_id = node_id
        self.voter = voter
        self.kafka_port = kafka_port
        self.controller_port = controller_port
        self.admin_port = admin_port
        self.rack = rack
        self.netns = netns
        self.address = address
        self.node_extra_args = list(extra_args)
        common = dict(name=f"node{node_id}", binary=cluster.binary, extra_args=self._args(),
                      port=kafka_port, cores=cluster.cores, log_level=cluster.log_level)
        if netns is None:
            self.proc = BrokerProcess(cluster.workdir, **common)
        else:
            self.proc = NetnsBrokerProcess(cluster.workdir, netns=netns, address=address, **common)
            self.proc.ready_admin_port = admin_port
        # BrokerProcess would pick an admin port of its own; this node passes its own flag.
        self.proc.admin_port = None

    # -- identity ---------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.address

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def roles(self) -> str:
        return "broker,controller" if self.voter else "broker"

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def data_dir(self) -> Path:
        return self.proc.data_dir

    def _args(self) -> List[str]:
        c = self.cluster
        args = [
            "--node-id", str(self.node_id),
            "--process-roles", self.roles,
            "--controller-quorum-voters", c.voters_string,
            f"--admin-listen=127.0.0.1:{self.admin_port}",
            "--broker-heartbeat-interval-ms", str(c.heartbeat_ms),
            "--broker-session-timeout-ms", str(c.session_ms),
            "--controller-quorum-election-timeout-ms", str(c.election_ms),
        ]
        if self.voter:
            args += ["--controller-listen", f"{self.address}:{self.controller_port}"]
        if self.rack:
            args += ["--rack", self.rack]
        return args + list(c.extra_args) + self.node_extra_args

    def __repr__(self) -> str:
        state = "up" if self.alive() else "down"
        return f"<node {self.node_id} {self.roles} {self.bootstrap} {state}>"

    # -- lifecycle --------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.alive()

    def start(self, wait: bool = True) -> "Node":
        self.proc.start(wait=wait)
        return self

    def stop(self, check: bool = True) -> Optional[int]:
        """SIGTERM; with `check`, assert exit code 0 within the stop timeout."""
        return self.proc.stop(check=check)

    def kill9(self) -> None:
        self.proc.kill9()

    def wipe(self) -> None:
        """Remove this node's data dir (the node must be down)."""
        if self.alive():
            raise ClusterError(f"wipe of running node {self.node_id}")
        import shutil
        shutil.rmtree(self.data_dir, ignore_errors=True)

    # -- probes -----------------------------------------------------------------------------
    def health(self, timeout: float = 5.0) -> dict:
        if self.netns is not None:
            return netns_http_get_json(self.netns, self.admin_port, HEALTH_PATH, timeout)
        return http_get_json("127.0.0.1", self.admin_port, HEALTH_PATH, timeout)

    def metadata(self, topics: Optional[Sequence[str]] = None, version: int = 12) -> dict:
        """Metadata over a raw connection (no auto-creation)."""
        with kw.KafkaConnection(self.host, self.kafka_port, timeout=10) as conn:
            keys = conn.api_versions(0)["api_keys"]
            v = kw.pick_version(keys, kw.ApiKey.METADATA, 4, version)
            return conn.metadata(v, None if topics is None else list(topics), False)

    def log_tail(self, lines: int = 150) -> str:
        return self.proc.log_tail(lines)


class Cluster:
    def __init__(self, workdir: Path, binary: Path, voters: int = 3, brokers: int = 0,
                 extra_args: Sequence[str] = (), cores: int = 1, log_level: str = "info",
                 heartbeat_ms: int = HEARTBEAT_MS, session_ms: int = SESSION_MS,
                 election_ms: int = ELECTION_MS, racks: Optional[Dict[int, str]] = None,
                 netns: Optional[Dict[int, tuple]] = None,
                 register: Optional[Callable[[BrokerProcess], None]] = None) -> None:
        """`netns`: {node_id: (namespace, address)} runs each voter in its own network
        namespace on that address (Kafka 9092, controller 9093, admin 9644 on the namespace's
        loopback); only voters are supported there."""
        if voters < 1:
            raise ValueError("a cluster needs at least one voter")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.binary = Path(binary)
        self.extra_args = [str(a) for a in extra_args]
        self.cores = cores
        self.log_level = log_level
        self.heartbeat_ms = heartbeat_ms
        self.session_ms = session_ms
        self.election_ms = election_ms
        self._register = register
        self._ports: List[int] = []
        self.nodes: Dict[int, Node] = {}
        racks = racks or {}
        self.netns = netns
        if netns is None:
            ports = self._take_ports(3 * voters)
            self._voter_ports = {i + 1: ports[3 * i:3 * i + 3] for i in range(voters)}
            where = {i + 1: (None, "127.0.0.1") for i in range(voters)}
        else:
            if brokers:
                raise ValueError("broker-only nodes are not supported in network namespaces")
            self._voter_ports = {i + 1: [9092, 9093, 9644] for i in range(voters)}
            where = {i + 1: netns[i + 1] for i in range(voters)}
        self.voter_ids = list(self._voter_ports)
        self.voters_string = ",".join(f"{i}@{where[i][1]}:{p[1]}" for i, p in self._voter_ports.items())
        for node_id, (kafka, controller, admin) in self._voter_ports.items():
            ns, address = where[node_id]
            self._add(Node(self, node_id, True, kafka, controller, admin, rack=racks.get(node_id),
                           netns=ns, address=address))
        for _ in range(brokers):
            self.add_broker(rack=racks.get(self.next_node_id()), start=False)

    # -- membership -------------------------------------------------------------------------
    def _take_ports(self, count: int) -> List[int]:
        ports = free_ports(count, self._ports)
        self._ports.extend(ports)
        return ports

    def _add(self, node: Node) -> Node:
        self.nodes[node.node_id] = node
        if self._register is not None:
            self._register(node.proc)
        return node

    def next_node_id(self) -> int:
        return max(self.nodes, default=0) + 1

    def add_broker(self, start: bool = True, rack: Optional[str] = None,
                   extra_args: Sequence[str] = ()) -> Node:
        """A broker-only node (`--process-roles broker`) joining this cluster's quorum."""
        if self.netns is not None:
            raise ValueError("broker-only nodes are not supported in network namespaces")
        kafka, admin = self._take_ports(2)
        node = self._add(Node(self, self.next_node_id(), False, kafka, None, admin,
                              extra_args=extra_args, rack=rack))
        if start:
            node.start()
        return node

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def __iter__(self):
        return iter(self.nodes.values())

    @property
    def voters(self) -> List[Node]:
        return [n for n in self.nodes.values() if n.voter]

    def live(self) -> List[Node]:
        return [n for n in self.nodes.values() if n.alive()]

    def node(self, node: "int | Node") -> Node:
        return node if isinstance(node, Node) else self.nodes[node]

    def bootstrap(self, nodes: Optional[Iterable["int | Node"]] = None) -> str:
        """Bootstrap string of the given nodes (default: all)."""
        chosen = self.nodes.values() if nodes is None else [self.node(n) for n in nodes]
        return ",".join(n.bootstrap for n in chosen)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, wait: bool = True, timeout: float = 60.0) -> "Cluster":
        """Start every node that is down (all at once: voters need each other to elect), then
        wait until each answers Kafka requests and the cluster has formed."""
        starting = [n for n in self.nodes.values() if not n.alive()]
        for n in starting:
            n.start(wait=False)
        if wait:
            for n in starting:
                n.proc.wait_ready(timeout)
            self.wait_formed(timeout=timeout)
        return self

    def stop(self, node: "int | Node", check: bool = True) -> Optional[int]:
        return self.node(node).stop(check=check)

    def kill9(self, node: "int | Node") -> None:
        self.node(node).kill9()

    def restart(self, node: "int | Node", hard: bool = False, wait: bool = True) -> Node:
        """SIGTERM (exit 0 asserted) or, with hard=True, SIGKILL; then start again on the same
        ports and data dir. A node that is down is just started."""
        n = self.node(node)
        if n.alive():
            if hard:
                n.kill9()
            else:
                n.stop()
        return n.start(wait=wait)

    def wipe(self, node: "int | Node") -> None:
        """Stop the node if it runs (SIGTERM) and remove its data dir."""
        n = self.node(node)
        if n.alive():
            n.stop()
        n.wipe()

    def stop_all(self) -> List[str]:
        """SIGTERM every live node, one after the other, and collect the ones that did not
        exit 0. Broker-only nodes go first and the active controller last, so that every
        controlled shutdown but the last still finds a controller quorum."""
        errors: List[str] = []
        live = self.live()
        active: Optional[int] = None
        for n in live:
            try:
                if n.health(timeout=2)["controller"]["is_active"]:
                    active = n.node_id
            except Exception:  # noqa: BLE001  (a node that does not answer is stopped anyway)
                pass
        order = sorted(live, key=lambda n: (n.voter, n.node_id == active, n.node_id))
        for n in order:
            try:
                n.stop()
            except BrokerError as e:
                errors.append(str(e))
        return errors

    # -- probes -----------------------------------------------------------------------------
    def health(self, node: "int | Node", timeout: float = 5.0) -> dict:
        return self.node(node).health(timeout)

    def healths(self, nodes: Optional[Iterable["int | Node"]] = None) -> Dict[int, dict]:
        """Health of the given (default: live) nodes; a node that does not answer is left out."""
        chosen = self.live() if nodes is None else [self.node(n) for n in nodes]
        out = {}
        for n in chosen:
            try:
                out[n.node_id] = n.health()
            except (OSError, urllib.error.URLError, ValueError):
                pass
        return out

    def active_controller(self, nodes: Optional[Iterable["int | Node"]] = None) -> Optional[int]:
        """The active controller every given (default: live) node agrees on: exactly one voter
        reports itself active (LeaderChange applied) and every node names it as the active
        controller. None while they disagree, or some node does not answer."""
        chosen = self.live() if nodes is None else [self.node(n) for n in nodes]
        if not chosen:
            return None
        healths = self.healths(chosen)
        if len(healths) != len(chosen):
            return None
        active = [i for i, h in healths.items() if h["controller"]["is_active"]]
        if len(active) != 1:
            return None
        leader = active[0]
        if any(h["controller"]["active_controller_id"] != leader for h in healths.values()):
            return None
        return leader

    def formed(self, nodes: Optional[Iterable["int | Node"]] = None) -> Optional[int]:
        """True-ish (the active controller id) when the given (default: live) nodes agree on
        one active controller and one cluster id, and every one of them is registered and
        unfenced in every node's image."""
        chosen = self.live() if nodes is None else [self.node(n) for n in nodes]
        leader = self.active_controller(chosen)
        if leader is None:
            return None
        healths = self.healths(chosen)
        if len(healths) != len(chosen):
            return None
        ids = {n.node_id for n in chosen}
        cluster_ids = {h["metadata"]["cluster_id"] for h in healths.values()}
        if len(cluster_ids) != 1 or not next(iter(cluster_ids)):
            return None
        for h in healths.values():
            live = {b["node_id"] for b in h["metadata"]["brokers"] if not b["fenced"]}
            if not ids <= live:
                return None
        return leader

    def wait_formed(self, nodes: Optional[Iterable["int | Node"]] = None, timeout: float = 60.0) -> int:
        chosen = None if nodes is None else [self.node(n) for n in nodes]
        return wait_for(lambda: self.formed(chosen), timeout,
                        "the cluster to form (one active controller, every node registered and unfenced)",
                        describe=self.describe)

    def converged(self, nodes: Optional[Iterable["int | Node"]] = None) -> Optional[dict]:
        """The common metadata state ({applied_offset, image_digest, leader}) when the given
        (default: live) nodes have formed and all applied the same image, else None."""
        chosen = self.live() if nodes is None else [self.node(n) for n in nodes]
        leader = self.formed(chosen)
        if leader is None:
            return None
        healths = self.healths(chosen)
        if len(healths) != len(chosen):
            return None
        states = {(h["metadata"]["applied_offset"], h["metadata"]["image_digest"]) for h in healths.values()}
        if len(states) != 1:
            return None
        offset, digest = next(iter(states))
        return {"applied_offset": offset, "image_digest": digest, "leader": leader}

    def wait_converged(self, nodes: Optional[Iterable["int | Node"]] = None, timeout: float = 60.0) -> dict:
        chosen = None if nodes is None else [self.node(n) for n in nodes]
        return wait_for(lambda: self.converged(chosen), timeout,
                        "every node to apply the same metadata image (applied_offset, image_digest)",
                        describe=self.describe)

    def wait_for(self, condition: Callable[[], object], timeout: float, what: str,
                 interval: float = POLL_INTERVAL_S):
        return wait_for(condition, timeout, what, interval, describe=self.describe)

    def describe(self) -> str:
        """One line per node: process state and the gist of its health (for failure messages)."""
        lines = ["cluster state:"]
        for n in self.nodes.values():
            if not n.alive():
                lines.append(f"  node {n.node_id} ({n.roles}): down")
                continue
            try:
                h = n.health(timeout=2)
            except Exception as e:  # noqa: BLE001
                lines.append(f"  node {n.node_id} ({n.roles}): health unavailable: {e!r}")
                continue
            c, m = h["controller"], h["metadata"]
            brokers = ",".join(f"{b['node_id']}{'(fenced)' if b['fenced'] else ''}" for b in m["brokers"])
            lines.append(
                f"  node {n.node_id} ({n.roles}): active_controller={c['active_controller_id']} "
                f"is_active={c['is_active']} term={c['term']} commit={c['commit_index']} "
                f"applied={m['applied_offset']} digest={m['image_digest']} brokers=[{brokers}] "
                f"leaderless={len(h['leaderless_partitions'])} reasons={h['unhealthy_reasons']}")
        return "\n".join(lines)


# ---- raw CreateTopics (v4, non-flexible): exact error codes and timing -----------------------

def encode_create_topics_v4(topics: Sequence[tuple], timeout_ms: int, validate_only: bool = False) -> bytes:
    """topics: [(name, num_partitions, replication_factor)]"""
    w = kw.Writer()

    def topic(ww: kw.Writer, item) -> None:
        name, partitions, factor = item
        ww.string(name).int32(partitions).int16(factor)
        ww.array([], lambda _w, _a: None)  # assignments
        ww.array([], lambda _w, _c: None)  # configs

    w.array(list(topics), topic)
    w.int32(timeout_ms)
    w.boolean(validate_only)
    return w.getvalue()


def create_topics_raw(host: str, port: int, topics: Sequence[tuple], timeout_ms: int = 30000,
                      socket_timeout: float = 60.0) -> Dict[str, dict]:
    """CreateTopics v4 over a raw connection: {name: {error_code, error_message}}."""
    with kw.KafkaConnection(host, port, timeout=socket_timeout) as conn:
        r = conn.request(kw.ApiKey.CREATE_TOPICS, 4, encode_create_topics_v4(topics, timeout_ms))
        r.int32()  # throttle
        out = {}
        for name, code, message in r.array(lambda rr: (rr.string(), rr.int16(), rr.string())):
            out[name] = {"error_code": code, "error_message": message}
        return out
