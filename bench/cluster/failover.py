#!/usr/bin/env python3
"""Leader failover times of a 3-node Riptide cluster (one core per node) on this machine.

    .venv/bin/python bench/cluster/failover.py [--rounds 5] [--session-ms 4000]

Each round: an RF=3 topic's leader is stopped (SIGTERM: controlled shutdown) or killed
(kill -9), and the script times, from the signal, (a) until the other nodes' Metadata names a
new leader and (b) until an acks=all produce to it succeeds; then restarts the node and waits
for the full ISR. kill -9 is bounded below by the broker session timeout (the controller only
learns of the death when the session expires); SIGTERM needs no timeout.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from cluster import Cluster  # noqa: E402
import test_replication as tr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--session-ms", type=int, default=4000)
    parser.add_argument("--binary", default=str(ROOT / "target" / "release" / "riptide"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="riptide-failover-") as work:
        cluster = Cluster(Path(work), Path(args.binary), voters=3, session_ms=args.session_ms,
                          extra_args=tr.REPLICATION_ARGS)
        try:
            cluster.start()
            cluster.wait_formed()
            topic = "failover-bench"
            tr.create_replicated_topic(cluster[1].bootstrap, topic, 1)
            tr.wait_isr(cluster, topic, 1, [1, 2, 3])
            results = {"sigterm": [], "kill9": []}
            for round_ in range(args.rounds):
                for how in ("sigterm", "kill9"):
                    leader, _, _ = tr.live_leader(cluster, topic)
                    t0 = time.monotonic()
                    if how == "kill9":
                        cluster.kill9(leader)
                    else:
                        cluster.stop(leader)
                    new, _, _ = tr.live_leader(cluster, topic, not_on=[leader], timeout=120)
                    elected = time.monotonic() - t0
                    cluster.wait_for(lambda: tr.raw_produce(cluster[new], topic, 0, [b"x"], -1)["error_code"] == 0,
                                     60, "an acks=all produce on the new leader", interval=0.005)
                    writable = time.monotonic() - t0
                    results[how].append((elected, writable))
                    print(f"round {round_} {how}: new leader {new} after {elected * 1000:.0f} ms, "
                          f"acks=all accepted after {writable * 1000:.0f} ms", flush=True)
                    cluster.restart(leader)
                    tr.wait_isr(cluster, topic, 1, [1, 2, 3], timeout=60)
            for how, samples in results.items():
                elected = [e for e, _ in samples]
                writable = [w for _, w in samples]
                print(f"{how}: new leader median {statistics.median(elected) * 1000:.0f} ms "
                      f"(max {max(elected) * 1000:.0f}), writable median "
                      f"{statistics.median(writable) * 1000:.0f} ms (max {max(writable) * 1000:.0f}); "
                      f"session timeout {args.session_ms} ms")
        finally:
            cluster.stop_all()


if __name__ == "__main__":
    main()
