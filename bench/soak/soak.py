#!/usr/bin/env python3
"""An hour (or any time) of mixed load on one Riptide broker, to show that memory, file
descriptors and latency stay flat.

    .venv/bin/python bench/soak/soak.py [--duration-s 3600] [--sample-s 10] [--out DIR]

Starts one broker (`riptide serve --cores 1`; `--binary`, default target/release/riptide) with
retention checked every 5 s and compaction every 5 s and no topic auto-creation, then runs, each
in its own process:

  produce   acks=all records (1 KiB, keyed) at `--rate` per second to `soak-main` (6 partitions,
            segment.bytes 4 MiB, retention.bytes 16 MiB per partition: retention deletes
            segments all the time); each delivery's latency is recorded
  compact   records over 5,000 keys at a fifth of the rate to `soak-compacted`
            (cleanup.policy=compact, segment.ms 10 s, min.cleanable.dirty.ratio 0.1)
  tail      one consumer group tailing `soak-main`: counts records, checks every partition's
            offsets only move forward, records end-to-end latency (now - record timestamp)
  churn     consumer groups joining and leaving: two members of `soak-churn-N` subscribe, poll
            until both are assigned and records arrive, commit, and leave one after the other
  admin     topic churn: create a topic, produce to it, DescribeConfigs, IncrementalAlterConfigs,
            ListGroups, DeleteTopics, again and again

Every `--sample-s`: the broker's RSS, open file descriptors, threads, CPU seconds and data
directory size, and per workload its counts and errors. The report (stdout and DIR/report.json,
DIR/samples.csv) compares the last third of the run with the first third after warm-up (the
first 10 %): RSS may grow by at most 25 % or 32 MiB, open files by at most 32, the median of
per-sample produce p99 by at most 2x (+ 2 ms). Exit status 1 if the broker died, a workload saw
an error that Kafka clients do not retry, or (unless --no-flat-check) something was not flat.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAIN_TOPIC = "soak-main"
COMPACTED_TOPIC = "soak-compacted"
RECORD_BYTES = 1024
COMPACTED_KEYS = 5000
WARMUP_FRACTION = 0.1
RSS_GROWTH_RATIO = 1.25
RSS_GROWTH_SLACK_KIB = 32 * 1024
FD_GROWTH_SLACK = 32
P99_GROWTH_RATIO = 2.0
P99_GROWTH_SLACK_MS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values, q: float):
    if not sorted_values:
        return None
    rank = max(0, min(len(sorted_values) - 1, int(q * len(sorted_values) + 0.999999) - 1))
    return sorted_values[rank]


# ---------------------------------------------------------------------------------------------
# The broker


class Broker:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.port = free_port()
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.command = [
            str(binary), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
            "--cores", "1", "--admin-listen", f"127.0.0.1:{self.admin_port}",
            "--retention-check-interval-ms", "5000", "--compaction-interval-ms", "5000",
            # Deleted topics stay deleted (a client asking for one must not bring it back).
            "--auto-create-topics", "false",
        ]
        self.proc = None

    def start(self, timeout_s: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                url = f"http://127.0.0.1:{self.admin_port}/v1/status/ready"
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"broker not ready in {timeout_s} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample(self) -> dict:
        pid = self.proc.pid
        out = {"rss_kib": None, "fds": None, "threads": None, "cpu_s": None}
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out["rss_kib"] = int(line.split()[1])
                elif line.startswith("Threads:"):
                    out["threads"] = int(line.split()[1])
            out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            out["cpu_s"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            pass
        out["data_bytes"] = directory_bytes(self.data_dir)
        return out

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def directory_bytes(path: Path) -> int:
    """Allocated bytes under `path` (as du counts them)."""
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                total += os.stat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total


# ---------------------------------------------------------------------------------------------
# Workloads: each runs in its own process and reports a dict per sample period on `reports`.


def report_loop(name, reports, stop, sample_s, state, step):
    """Calls `step()` until `stop` is set (or the run's process is gone), sending `state` (then
    reset) every `sample_s`."""
    parent_pid = os.getppid()
    next_report = time.monotonic() + sample_s
    while not stop.is_set() and os.getppid() == parent_pid:
        step()
        if time.monotonic() >= next_report:
            reports.put((name, dict(state)))
            for key, value in state.items():
                state[key] = [] if isinstance(value, list) else 0
            next_report += sample_s
    reports.put((name, dict(state)))


def consumer_error(error) -> bool:
    """Any consumer error but the end-of-partition notice."""
    from confluent_kafka import KafkaError

    return error is not None and error.code() != KafkaError._PARTITION_EOF


def produce_worker(bootstrap, topic, rate, keys, reports, stop, sample_s, name):
    from confluent_kafka import Producer

    producer = Producer({
        "bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 1,
        "enable.idempotence": True, "socket.nagle.disable": True,
    })
    state = {"sent": 0, "acked": 0, "errors": 0, "latencies_ms": []}
    value = b"v" * RECORD_BYTES
    interval_s = 1.0 / rate
    next_send = time.monotonic()
    sequence = 0

    def delivered(sent_at):
        def callback(error, _message):
            if error is not None:
                state["errors"] += 1
                print(f"{name}: delivery failed: {error}", file=sys.stderr, flush=True)
                return
            state["acked"] += 1
            state["latencies_ms"].append((time.monotonic() - sent_at) * 1000.0)
        return callback

    def step():
        nonlocal next_send, sequence
        now = time.monotonic()
        while next_send <= now:
            key = str(sequence % keys).encode()
            producer.produce(topic, value, key=key, on_delivery=delivered(next_send))
            state["sent"] += 1
            sequence += 1
            next_send += interval_s
        producer.poll(max(0.0, min(0.01, next_send - time.monotonic())))

    report_loop(name, reports, stop, sample_s, state, step)
    state.update(acked=0, errors=0)
    undelivered = producer.flush(30)
    reports.put((name, {"acked": state["acked"], "errors": state["errors"] + undelivered}))


def tail_worker(bootstrap, reports, stop, sample_s):
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "soak-tail", "auto.offset.reset": "latest",
        "enable.auto.commit": True, "auto.commit.interval.ms": 1000,
    })
    consumer.subscribe([MAIN_TOPIC])
    state = {"consumed": 0, "errors": 0, "backwards": 0, "e2e_ms": []}
    last_offset = {}

    def step():
        for message in consumer.consume(500, 0.2):
            if message.error():
                if consumer_error(message.error()):
                    state["errors"] += 1
                    print(f"tail: {message.error()}", file=sys.stderr, flush=True)
                continue
            partition, offset = message.partition(), message.offset()
            if offset <= last_offset.get(partition, -1):
                state["backwards"] += 1
            last_offset[partition] = offset
            state["consumed"] += 1
            state["e2e_ms"].append(time.time() * 1000.0 - message.timestamp()[1])

    report_loop("tail", reports, stop, sample_s, state, step)
    consumer.close()


def churn_worker(bootstrap, reports, stop, sample_s):
    from confluent_kafka import Consumer

    state = {"cycles": 0, "errors": 0, "join_ms": []}
    cycle = 0

    def member(group):
        return Consumer({
            "bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        })

    def step():
        nonlocal cycle
        group = f"soak-churn-{cycle % 8}"
        cycle += 1
        members = [member(group), member(group)]
        started = time.monotonic()
        for consumer in members:
            consumer.subscribe([MAIN_TOPIC])
        got = [0, 0]
        deadline = started + 60
        while time.monotonic() < deadline and not stop.is_set():
            for index, consumer in enumerate(members):
                message = consumer.poll(0.1)
                if message is not None and not message.error():
                    got[index] += 1
            if all(got) and all(len(c.assignment()) == 3 for c in members):
                break
        if all(got) and not stop.is_set():
            state["join_ms"].append((time.monotonic() - started) * 1000.0)
            try:
                for consumer in members:
                    consumer.commit(asynchronous=False)
                state["cycles"] += 1
            except Exception as error:
                state["errors"] += 1
                print(f"churn: {group}: commit failed: {error!r}", file=sys.stderr, flush=True)
        elif not stop.is_set():
            state["errors"] += 1
            print(f"churn: {group} not balanced with records in 60 s: {got}", file=sys.stderr,
                  flush=True)
        for consumer in members:
            consumer.close()

    report_loop("churn", reports, stop, sample_s, state, step)


def admin_worker(bootstrap, reports, stop, sample_s):
    from confluent_kafka import Producer
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource, NewTopic)

    admin = AdminClient({"bootstrap.servers": bootstrap})
    state = {"cycles": 0, "errors": 0, "cycle_ms": []}
    cycle = 0

    def step():
        nonlocal cycle
        topic = f"soak-admin-{os.getpid()}-{cycle}"
        cycle += 1
        started = time.monotonic()
        # A producer per topic, as short-lived clients come and go: one long-lived producer
        # would keep asking for every topic it ever wrote to.
        producer = Producer({"bootstrap.servers": bootstrap, "acks": "all",
                             "allow.auto.create.topics": False})
        try:
            admin.create_topics([NewTopic(topic, 3, 1)])[topic].result(30)
            for index in range(100):
                producer.produce(topic, b"x" * 100, key=str(index).encode())
            if producer.flush(30) != 0:
                raise RuntimeError("records not delivered in 30 s")
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            admin.describe_configs([resource])[resource].result(30)
            change = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[
                ConfigEntry("retention.ms", "600000",
                            incremental_operation=AlterConfigOpType.SET)])
            admin.incremental_alter_configs([change])[change].result(30)
            admin.list_consumer_groups().result(30)
            admin.delete_topics([topic])[topic].result(30)
            state["cycles"] += 1
            state["cycle_ms"].append((time.monotonic() - started) * 1000.0)
        except Exception as error:  # any failure of a step is an error of the soak
            state["errors"] += 1
            print(f"admin: {topic}: {error!r}", file=sys.stderr, flush=True)
        stop.wait(1.0)

    report_loop("admin", reports, stop, sample_s, state, step)


# ---------------------------------------------------------------------------------------------
# The run


def create_topics(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(MAIN_TOPIC, 6, 1, config={
            "segment.bytes": str(4 * 1024 * 1024), "retention.bytes": str(16 * 1024 * 1024)}),
        NewTopic(COMPACTED_TOPIC, 3, 1, config={
            "cleanup.policy": "compact", "segment.ms": "10000",
            "min.cleanable.dirty.ratio": "0.1"}),
    ]
    for topic, future in admin.create_topics(topics).items():
        future.result(30)


def drain(reports, totals, timeout_s: float) -> None:
    """Adds the counts of every report waiting on `reports` to `totals`."""
    while True:
        try:
            name, state = reports.get(timeout=timeout_s)
        except queue.Empty:
            return
        for key, value in state.items():
            if not isinstance(value, list):
                totals.setdefault(name, {}).setdefault(key, 0)
                totals[name][key] += value


def summarize(values):
    ordered = sorted(values)
    if not ordered:
        return {"count": 0}
    return {"count": len(ordered), "p50": percentile(ordered, 0.5),
            "p99": percentile(ordered, 0.99), "max": ordered[-1]}


def flatness(samples, duration_s):
    """Compares the last third with the first third after warm-up; returns (checks, ok)."""
    start = [s for s in samples if s["t_s"] >= duration_s * WARMUP_FRACTION]
    third = max(1, len(start) // 3)
    first, last = start[:third], start[-third:]

    def values(window, key):
        return [s[key] for s in window if s.get(key) is not None]

    checks = []

    def check(name, before, after, limit, passed):
        checks.append({"check": name, "first": before, "last": after, "limit": limit,
                       "ok": passed})

    rss_first = statistics.median(values(first, "rss_kib"))
    rss_last = statistics.median(values(last, "rss_kib"))
    rss_limit = max(rss_first * RSS_GROWTH_RATIO, rss_first + RSS_GROWTH_SLACK_KIB)
    check("broker RSS KiB (median)", rss_first, rss_last, rss_limit, rss_last <= rss_limit)
    fds_first = max(values(first, "fds"))
    fds_last = max(values(last, "fds"))
    check("open files (max)", fds_first, fds_last, fds_first + FD_GROWTH_SLACK,
          fds_last <= fds_first + FD_GROWTH_SLACK)
    p99_first = statistics.median(values(first, "produce_p99_ms") or [0.0])
    p99_last = statistics.median(values(last, "produce_p99_ms") or [0.0])
    p99_limit = p99_first * P99_GROWTH_RATIO + P99_GROWTH_SLACK_MS
    check("produce p99 ms (median of samples)", p99_first, p99_last, p99_limit,
          p99_last <= p99_limit)
    return checks, all(c["ok"] for c in checks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=3600)
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--rate", type=int, default=2000, help="records/s to soak-main")
    parser.add_argument("--binary", type=Path, default=ROOT / "target/release/riptide")
    parser.add_argument("--out", type=Path, help="directory for report.json and samples.csv")
    parser.add_argument("--work-dir", type=Path,
                        help="where the broker's data and log go (not a tmpfs: O_DIRECT)")
    parser.add_argument("--no-flat-check", action="store_true",
                        help="report flatness, but fail only on errors (short runs)")
    args = parser.parse_args()

    if args.work_dir:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="riptide-soak-", dir=args.work_dir))
    out = args.out or workdir
    out.mkdir(parents=True, exist_ok=True)
    broker = Broker(args.binary, workdir)
    broker.start()
    create_topics(broker.bootstrap)

    context = mp.get_context("spawn")
    reports = context.Queue()
    stop = context.Event()
    sample_s = args.sample_s
    workers = [
        context.Process(target=produce_worker, args=(
            broker.bootstrap, MAIN_TOPIC, args.rate, 1 << 30, reports, stop, sample_s,
            "produce")),
        context.Process(target=produce_worker, args=(
            broker.bootstrap, COMPACTED_TOPIC, max(1, args.rate // 5), COMPACTED_KEYS, reports,
            stop, sample_s, "compact")),
        context.Process(target=tail_worker, args=(broker.bootstrap, reports, stop, sample_s)),
        context.Process(target=churn_worker, args=(broker.bootstrap, reports, stop, sample_s)),
        context.Process(target=admin_worker, args=(broker.bootstrap, reports, stop, sample_s)),
    ]
    for worker in workers:
        worker.start()

    totals = {}
    samples = []
    started = time.monotonic()
    broker_died = False
    produce_latencies = []
    while time.monotonic() - started < args.duration_s:
        deadline = time.monotonic() + sample_s
        window = {}
        while time.monotonic() < deadline:
            try:
                name, state = reports.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                continue
            merged = window.setdefault(name, {})
            for key, value in state.items():
                merged[key] = merged.get(key, [] if isinstance(value, list) else 0) + value
        if not broker.alive():
            broker_died = True
            break
        sample = {"t_s": round(time.monotonic() - started, 1), **broker.sample()}
        for name, state in window.items():
            for key, value in state.items():
                if isinstance(value, list):
                    summary = summarize(value)
                    if summary["count"]:
                        sample[f"{name}_p99_ms"] = round(summary["p99"], 3)
                    if name == "produce" and key == "latencies_ms":
                        produce_latencies.extend(value)
                else:
                    totals.setdefault(name, {}).setdefault(key, 0)
                    totals[name][key] += value
                    sample[f"{name}_{key}"] = value
        samples.append(sample)
        print(json.dumps(sample), flush=True)

    stop.set()
    # Drain the queue while the workers finish: a process that has put data on a queue does
    # not exit until the data is read.
    join_deadline = time.monotonic() + 90
    while any(worker.is_alive() for worker in workers) and time.monotonic() < join_deadline:
        drain(reports, totals, timeout_s=0.2)
    workers_failed = 0
    for worker in workers:
        if worker.is_alive():
            worker.kill()
            worker.join(5)
        workers_failed += worker.exitcode != 0
    drain(reports, totals, timeout_s=0.5)
    final = broker.sample() if broker.alive() else {}
    broker_died = broker_died or not broker.alive()
    broker.stop()

    checks, flat = flatness(samples, args.duration_s) if len(samples) >= 6 else ([], False)
    errors = workers_failed + sum(t.get("errors", 0) + t.get("backwards", 0)
                                  for t in totals.values())
    report = {
        "duration_s": args.duration_s, "sample_s": sample_s, "rate": args.rate,
        "broker_died": broker_died, "workers_failed": workers_failed, "totals": totals,
        "errors": errors,
        "produce_latency_ms": summarize(produce_latencies), "final": final,
        "flatness": checks, "flat": flat, "command": broker.command,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2))
    keys = sorted({key for sample in samples for key in sample}, key=lambda k: (k != "t_s", k))
    with open(out / "samples.csv", "w") as csv:
        csv.write(",".join(keys) + "\n")
        for sample in samples:
            csv.write(",".join("" if sample.get(k) is None else str(sample[k]) for k in keys)
                      + "\n")
    print(json.dumps({k: report[k] for k in ("broker_died", "errors", "totals",
                                             "produce_latency_ms", "flatness", "flat")},
                     indent=2))
    print(f"report: {out / 'report.json'}  samples: {out / 'samples.csv'}")
    if broker_died:
        print(f"broker died:\n{broker.log_tail()}", file=sys.stderr)
    ok = not broker_died and errors == 0 and (flat or args.no_flat_check)
    if ok and args.out is None:
        shutil.rmtree(workdir / "data", ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
