"""Network partition of the controller quorum, with real network isolation.

Three voters, each in its own network namespace, on 10.77.0.1-3 (a /24 on veth pairs whose
other ends sit on a bridge in a fourth, parent namespace). Isolating a node = taking its bridge
port down (the cable pulled); healing = bringing it up again. All traffic stays inside the
namespaces this test creates; they are deleted at teardown, also after failures.

Needs root and `ip netns`; skipped cleanly where namespaces cannot be created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

SUBNET = "10.77.0"
ELECTION_BOUND_S = 30.0


def _ip(*args, check=True) -> subprocess.CompletedProcess:
    out = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and out.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {out.stderr.strip()}")
    return out


class Net:
    """Namespaces n1..nN (one per node) plus a bridge namespace, wired as a star."""

    def __init__(self, size: int) -> None:
        tag = f"rt{os.getpid() % 100000}{uuid.uuid4().hex[:4]}"
        self.bridge_ns = f"{tag}-br"
        self.nodes = {i: (f"{tag}-n{i}", f"{SUBNET}.{i}") for i in range(1, size + 1)}
        self.created: list = []

    def port(self, node_id: int) -> str:
        return f"p{node_id}"  # the node's veth end on the bridge (in the bridge namespace)

    def build(self) -> None:
        _ip("netns", "add", self.bridge_ns)
        self.created.append(self.bridge_ns)
        br = self.bridge_ns
        _ip("-n", br, "link", "set", "lo", "up")
        _ip("-n", br, "link", "add", "br0", "type", "bridge")
        _ip("-n", br, "link", "set", "br0", "up")
        for node_id, (ns, address) in self.nodes.items():
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", self.port(node_id),
                "netns", br)
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", br, "link", "set", self.port(node_id), "master", "br0")
            _ip("-n", br, "link", "set", self.port(node_id), "up")

    def isolate(self, node_id: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self.port(node_id), "down")

    def heal(self, node_id: int) -> None:
        _ip("-n", self.bridge_ns, "link", "set", self.port(node_id), "up")

    def destroy(self) -> None:
        for ns in reversed(self.created):
            _ip("netns", "del", ns, check=False)
        self.created.clear()


@pytest.fixture
def net():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (ip) is not installed")
    probe = f"rtprobe{os.getpid() % 100000}"
    out = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot create network namespaces here: {out.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    n = Net(3)
    try:
        n.build()
    except Exception:
        n.destroy()
        raise
    yield n
    n.destroy()


def _cli_in(cluster, node, *args, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """`riptide ARGS` run inside `node`'s namespace (the only place its Kafka port is reachable)."""
    return subprocess.run(["ip", "netns", "exec", node.netns, str(cluster.binary), *args],
                          capture_output=True, text=True, timeout=timeout)


# `net` comes first: its teardown (deleting the namespaces) runs after the cluster's (stopping
# the nodes).
@pytest.mark.timeout(240)
def test_isolated_active_controller_is_replaced_and_rejoins(net, cluster_factory):
    cluster = cluster_factory(voters=3, netns=net.nodes,
                              extra_args=["--controller-request-timeout-ms", "3000"]).start()
    before = cluster.wait_converged()
    old = before["leader"]
    majority = [n for n in cluster.voters if n.node_id != old]
    isolated = cluster[old]

    # A topic everyone has before the partition.
    r = _cli_in(cluster, majority[0], "topic", "create", "before-partition", "-p", "3",
                "-b", majority[0].bootstrap)
    assert r.returncode == 0, r.stderr
    cluster.wait_converged()

    t0 = time.monotonic()
    net.isolate(old)

    # The majority elects a new active controller among itself.
    new = cluster.wait_for(lambda: cluster.active_controller(majority), ELECTION_BOUND_S,
                           f"the majority {[n.node_id for n in majority]} to elect a new active "
                           f"controller after isolating {old}")
    elected_after = time.monotonic() - t0
    assert new != old
    print(f"isolated node {old}: node {new} active after {elected_after * 1000:.0f} ms")

    # The isolated node stops acting as the active controller (it cannot reach a quorum).
    cluster.wait_for(lambda: not isolated.health()["controller"]["is_active"], ELECTION_BOUND_S,
                     f"isolated node {old} to step down as active controller")

    # The majority keeps working: it fences the isolated broker once its session expires and
    # takes a new topic; the isolated node cannot create one.
    cluster.wait_for(lambda: all(old in n.health()["nodes_down"] for n in majority),
                     cluster.session_ms / 1000 + 15, f"the majority to fence node {old}")
    r = _cli_in(cluster, majority[1], "topic", "create", "during-partition", "-p", "2",
                "-b", majority[1].bootstrap)
    assert r.returncode == 0, r.stderr
    r = _cli_in(cluster, isolated, "topic", "create", "on-isolated-node", "-p", "1",
                "-b", isolated.bootstrap, "--timeout-ms", "20000")
    assert r.returncode != 0, f"CreateTopics on the isolated node succeeded: {r.stdout}"
    majority_state = cluster.wait_converged(nodes=majority)
    assert isolated.health()["metadata"]["image_digest"] != majority_state["image_digest"]

    # Heal: the isolated node catches up, registers again and everyone applies the same image.
    net.heal(old)
    after = cluster.wait_converged(timeout=60)
    assert after["applied_offset"] > majority_state["applied_offset"]  # its re-registration at least
    for n in cluster:
        h = n.health()
        assert h["topics"] == 2, h  # before-partition, during-partition; nothing from the isolated node
        assert h["nodes_down"] == [], h
        assert h["leaderless_partitions"] == [], h
    r = _cli_in(cluster, isolated, "topic", "list", "-b", isolated.bootstrap, "--format", "json")
    assert r.returncode == 0, r.stderr
    assert "during-partition" in r.stdout and "on-isolated-node" not in r.stdout, r.stdout
