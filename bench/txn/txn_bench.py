#!/usr/bin/env python3
"""Cost of Kafka transactions on one Riptide broker, against an idempotent producer, same run.

    .venv/bin/python bench/txn/txn_bench.py [--seconds 15] [--warmup 2] [--json out.json]
    .venv/bin/python bench/txn/txn_bench.py --bootstrap HOST:PORT   # external broker, none started
    .venv/bin/python bench/txn/txn_bench.py --rate 20000            # fixed rate instead of max

Starts one fresh broker (`riptide serve --cores 1`, from a copy of target/release/riptide at
/tmp/txnbench-riptide-bin unless `--binary` names another binary) and runs three modes one
after the other, each on its own new 6-partition topic, with 1 KiB records sent round-robin
over the 6 partitions by one confluent-kafka (librdkafka) producer as fast as it can:

  baseline   idempotent, non-transactional producer, acks=all, linger.ms=5
  txn-100ms  transactional producer; each transaction is open for 100 ms, then committed
  txn-1000   transactional producer; a commit after every 1,000 records

Each mode runs `--warmup` + `--seconds` seconds; only records produced after the warm-up count.
The producer's queue is bounded (`--queue-records`, 10,000 = 10 MB) so that client-side queueing
stays bounded at max rate; the producer loop is one Python thread, so at max rate it is often
the bottleneck (the report says how long it waited for room in its queue, i.e. for the broker).
A transactional producer stops producing while it commits (flush() + commit_transaction() are
synchronous), as a consume-transform-produce loop does.
While the producer runs, a consumer process (assign(), isolation.level=read_committed for all
three modes, so a baseline record counts once it is below the high watermark) reads the topic;
end-to-end latency = the producer's CLOCK_MONOTONIC stamp in the first 8 bytes of the value ->
the moment poll() handed the record to the consumer process (same host, same clock).

Per mode: records/s and MB/s (10^6 bytes of record value) of records acknowledged (baseline) or
committed (transactional modes); commit latency p50/p99/max = flush() + commit_transaction()
(what an application waits for) and its EndTxn part alone (commit_transaction() after the
flush); end-to-end p50/p99/p99.9/max; CPU seconds of the broker, producer and consumer
processes and of everything else on the host (a noisy run shows there); and, when the script started the broker, the broker's own mean request latency per
API from its /metrics (Produce, AddPartitionsToTxn, EndTxn) and its file writes per second.
Transactional throughput is also given as a ratio of the baseline's in the same run.

Producer, consumer and broker share the host's cores (the broker's one shard is pinned by the
broker; the two client processes are not pinned). Percentiles are nearest-rank over all samples.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from array import array
from pathlib import Path
from typing import Dict, List, Optional

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka import version as ck_version, libversion as rdk_version
from confluent_kafka.admin import AdminClient, NewTopic

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE_BINARY = ROOT / "target" / "release" / "riptide"
BINARY_COPY = Path("/tmp/txnbench-riptide-bin")
PARTITIONS = 6
RECORD_BYTES = 1024
STAMP_BYTES = 8
CLIENT_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 20.0
# APIs whose broker-side latency the report shows (names as in riptide's /metrics `api` label).
BROKER_APIS = ("Produce", "AddPartitionsToTxn", "EndTxn", "InitProducerId", "FindCoordinator",
               "Fetch")

MODES = [
    # name, transactional, commit every N ms, commit every N records
    ("baseline", False, None, None),
    ("txn-100ms", True, 100, None),
    ("txn-1000", True, None, 1000),
]


# ---- small helpers ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values, q: float):
    """Nearest-rank percentile of an ascending sequence (q in 0..1); None when empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(q * n))
    return sorted_values[min(rank, n) - 1]


def summarize_ns(values) -> dict:
    """p50/p99/p99.9/max/mean in ms of nanosecond samples."""
    s = sorted(values)
    out = {"count": len(s)}
    for name, q in (("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)):
        v = percentile(s, q)
        out[name] = None if v is None else v / 1e6
    out["max"] = s[-1] / 1e6 if s else None
    out["mean"] = sum(s) / len(s) / 1e6 if s else None
    return out


def proc_cpu_seconds(pid: int) -> Optional[float]:
    """utime + stime of a process (all its threads), from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def host_busy_cpu_seconds() -> Optional[float]:
    """CPU seconds all processes of the host have been busy (not idle or iowait), /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def host_facts(data_root: str) -> dict:
    facts = {"kernel": platform.release(), "python": platform.python_version(),
             "confluent_kafka": ck_version(), "librdkafka": rdk_version()[0],
             "cpus_online": os.cpu_count(), "allowed_cpus": len(os.sched_getaffinity(0))}
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu"] = next(line.split(":", 1)[1].strip() for line in f
                                if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        facts["load_average"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True,
                             text=True, timeout=10).stdout.splitlines()[1:]
        facts["busy_processes"] = [line.strip() for line in out  # ps: CPU share over lifetime
                                   if float(line.split()[1]) > 5.0
                                   and int(line.split()[0]) != os.getpid()][:10]
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        pass
    try:
        out = subprocess.run(["df", "-PT", data_root], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()
        facts["filesystem"] = " ".join(out[1].split()[:2])
    except (OSError, subprocess.SubprocessError, IndexError):
        pass
    try:
        facts["git_revision"] = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
            text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return facts


# ---- the broker -------------------------------------------------------------------------------

def _broker_preexec() -> None:
    """In the broker child: die with this script; lift the locked-memory limit if allowed."""
    try:
        import ctypes
        import resource
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except Exception:
        pass


class Broker:
    """One `riptide serve --cores 1` on a free port with a fresh data dir; admin endpoint on
    another free port (for /metrics)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.command = [str(binary), "serve", "--cores", "1", "--listen", self.bootstrap,
                        "--data-dir", str(self.data_dir),
                        "--admin-listen", f"127.0.0.1:{self.admin_port}", "--log-level", "warn"]
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_broker_preexec)
        deadline = time.monotonic() + timeout
        admin = None
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if admin is None:  # a TCP probe first: no client errors while it starts
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    admin = AdminClient({"bootstrap.servers": self.bootstrap,
                                         "broker.address.family": "v4"})
                if admin.list_topics(timeout=2).brokers:
                    return
            except (OSError, KafkaException):
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"broker not ready in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)  # poll interval

    def cpu_seconds(self) -> Optional[float]:
        return proc_cpu_seconds(self.proc.pid) if self.proc else None

    def metrics(self) -> Optional[dict]:
        """(metric name, api or '') -> value summed over shards, from /metrics."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                        timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        out: Dict[tuple, float] = {}
        for line in text.splitlines():
            if not line.startswith("riptide_"):
                continue
            try:
                head, value = line.rsplit(" ", 1)
                name, _, labels = head.partition("{")
                api = ""
                if 'api="' in labels:
                    api = labels.split('api="', 1)[1].split('"', 1)[0]
                if "_bucket" in name or "error" in name:
                    continue
                key = (name, api)
                out[key] = out.get(key, 0.0) + float(value)
            except ValueError:
                continue
        return out

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def broker_delta(before: Optional[dict], after: Optional[dict]) -> Optional[dict]:
    if before is None or after is None:
        return None

    def d(name, api=""):
        return after.get((name, api), 0.0) - before.get((name, api), 0.0)

    out = {"apis": {}}
    for api in BROKER_APIS:
        n = d("riptide_requests_total", api)
        if n <= 0:
            continue
        s = d("riptide_request_latency_seconds_sum", api)
        out["apis"][api] = {"requests": int(n), "mean_ms": s / n * 1000}
    out["io_writes"] = int(d("riptide_io_writes_total"))
    out["io_written_bytes"] = int(d("riptide_io_written_bytes_total"))
    out["fsyncs"] = int(d("riptide_fsyncs_total"))
    return out


# ---- the consumer (a separate process) --------------------------------------------------------

def consumer_main(bootstrap: str, topic: str, conn) -> None:
    """Reads `topic` (all partitions, from the beginning, read_committed) until told to stop,
    stamping each consume() batch with CLOCK_MONOTONIC; reports through `conn`."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "client.id": "txnbench-consumer",
        "group.id": "txnbench-" + uuid.uuid4().hex[:8],  # required by the client; no group API used
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    })
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    stamps = array("q")     # producer stamp of each record
    received = array("q")   # consumer clock when it got it
    eof = set()
    ready_sent = False
    stop = None             # (window_start_ns, window_end_ns, expected_records) once told
    drain_deadline = None
    cpu0 = time.process_time()
    monotonic_ns = time.monotonic_ns
    try:
        while True:
            # consume(n, timeout) waits for n messages or the timeout, which would hold
            # records back; poll() returns at the first one, consume(n, 0) adds what is queued.
            first = consumer.poll(0.05)
            msgs = [] if first is None else [first, *consumer.consume(num_messages=5000, timeout=0)]
            now = monotonic_ns()
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(m.partition())
                        continue
                    raise KafkaException(err)
                stamps.append(int.from_bytes(m.value()[:STAMP_BYTES], "little"))
                received.append(now)
            if not ready_sent and len(eof) == PARTITIONS:
                conn.send(("ready",))  # fetching on every partition
                ready_sent = True
            if stop is None and conn.poll():
                stop = conn.recv()
                cpu = time.process_time() - cpu0  # up to the producer's end, like the others
                drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
            if stop is not None and (len(stamps) >= stop[2] or time.monotonic() > drain_deadline):
                break
        start_ns, end_ns, expected = stop
        lat = [r - s for s, r in zip(stamps, received) if start_ns <= s < end_ns]
        third = (end_ns - start_ns) // 3
        first = [r - s for s, r in zip(stamps, received) if start_ns <= s < start_ns + third]
        last = [r - s for s, r in zip(stamps, received) if end_ns - third <= s < end_ns]
        conn.send(("done", {"records_received": len(stamps), "records_expected": expected,
                            "e2e": summarize_ns(lat), "e2e_first_third": summarize_ns(first),
                            "e2e_last_third": summarize_ns(last), "cpu_s": cpu}))
    except Exception as e:  # report, do not hang the parent
        conn.send(("error", repr(e)))
    finally:
        consumer.close()


# ---- one mode ---------------------------------------------------------------------------------

def run_mode(name: str, transactional: bool, every_ms: Optional[int], every_records: Optional[int],
             bootstrap: str, topic: str, args, broker: Optional[Broker]) -> dict:
    ctx = mp.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    cons = ctx.Process(target=consumer_main, args=(bootstrap, topic, child_conn), daemon=True)
    cons.start()

    conf = {
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "client.id": f"txnbench-{name}",
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": args.linger_ms,
        "queue.buffering.max.messages": args.queue_records,
    }
    if transactional:
        conf["transactional.id"] = f"txnbench-{name}-{uuid.uuid4().hex[:8]}"
    errors: List[KafkaError] = []

    def on_delivery(err, _msg):
        if err is not None:
            errors.append(err)

    producer = Producer(conf)
    t = time.monotonic()
    if transactional:
        producer.init_transactions(CLIENT_TIMEOUT_S)
    init_s = time.monotonic() - t
    # The producer connects and learns the partition leaders before the clock starts.
    producer.list_topics(topic, timeout=CLIENT_TIMEOUT_S)

    if not parent_conn.poll(60) or parent_conn.recv()[0] != "ready":
        raise SystemExit(f"{name}: consumer not ready")

    pad = bytes(RECORD_BYTES - STAMP_BYTES)
    produce = producer.produce
    poll = producer.poll
    monotonic_ns = time.monotonic_ns
    start_ns = monotonic_ns()
    window_start = start_ns + int(args.warmup * 1e9)
    window_end = window_start + int(args.seconds * 1e9)
    counted = 0          # records produced in the window (all acked/committed, or the run fails)
    seq = 0
    commit_total: List[int] = []   # flush() + commit_transaction(), ns (window only)
    commit_endtxn: List[int] = []  # commit_transaction() after the flush, ns (window only)
    commits = 0
    commits_in_window = 0
    cpu0 = time.process_time()
    host0 = host_busy_cpu_seconds()
    bcpu0 = broker.cpu_seconds() if broker else None
    bm0 = broker.metrics() if broker else None

    interval_ns = 1e9 / args.rate if args.rate else 0.0
    blocked = [0]  # ns the producer waited for room in its queue (for acks)

    def send_one() -> None:
        nonlocal seq, counted
        if interval_ns:
            # Fixed rate: record `seq` is due at start + seq/rate and carries that intended
            # time, so a record held up (by a commit, a full queue) counts its wait.
            stamp = start_ns + int(seq * interval_ns)
            now = monotonic_ns()
            if stamp > now:
                time.sleep((stamp - now) / 1e9)
        else:
            stamp = monotonic_ns()
        value = stamp.to_bytes(STAMP_BYTES, "little") + pad
        while True:
            try:
                produce(topic, value, partition=seq % PARTITIONS, on_delivery=on_delivery)
                break
            except BufferError:  # queue.buffering.max.messages reached: let acks free it
                t0 = monotonic_ns()
                poll(0.0005)
                blocked[0] += monotonic_ns() - t0
        seq += 1
        if window_start <= stamp < window_end:
            counted += 1

    if not transactional:
        while monotonic_ns() < window_end:
            for _ in range(100):
                send_one()
            poll(0)
        remaining = producer.flush(CLIENT_TIMEOUT_S)
        if remaining:
            raise SystemExit(f"{name}: {remaining} records not acknowledged")
    else:
        while monotonic_ns() < window_end:
            producer.begin_transaction()
            txn_start = monotonic_ns()
            n = 0
            if every_records:
                while n < every_records:
                    send_one()
                    n += 1
                    if n % 100 == 0:
                        poll(0)
            else:
                deadline = txn_start + every_ms * 1_000_000
                while monotonic_ns() < deadline:
                    for _ in range(50):
                        send_one()
                    n += 50
                    poll(0)
            c0 = monotonic_ns()
            remaining = producer.flush(CLIENT_TIMEOUT_S)
            if remaining:
                raise SystemExit(f"{name}: {remaining} records not acknowledged before commit")
            c1 = monotonic_ns()
            producer.commit_transaction(CLIENT_TIMEOUT_S)
            c2 = monotonic_ns()
            commits += 1
            if window_start <= c0 < window_end:
                commit_total.append(c2 - c0)
                commit_endtxn.append(c2 - c1)
                commits_in_window += 1
    end_ns = monotonic_ns()
    cpu = time.process_time() - cpu0
    host1 = host_busy_cpu_seconds()
    bcpu = (broker.cpu_seconds() - bcpu0) if broker and bcpu0 is not None else None
    bm1 = broker.metrics() if broker else None
    if errors:
        raise SystemExit(f"{name}: {len(errors)} delivery errors, first {errors[0]}")

    parent_conn.send((window_start, window_end, seq))
    if not parent_conn.poll(DRAIN_TIMEOUT_S + 30):
        raise SystemExit(f"{name}: no answer from the consumer")
    kind, payload = parent_conn.recv()
    if kind != "done":
        raise SystemExit(f"{name}: consumer failed: {payload}")
    cons.join(10)
    producer = None  # closes the client

    elapsed = (end_ns - start_ns) / 1e9
    result = {
        "mode": name,
        "transactional": transactional,
        "commit_every_ms": every_ms,
        "commit_every_records": every_records,
        "init_transactions_s": init_s if transactional else None,
        "records_total": seq,
        "records_in_window": counted,
        "window_s": args.seconds,
        "elapsed_s": elapsed,
        "records_per_s": counted / args.seconds,
        "mb_per_s": counted * RECORD_BYTES / args.seconds / 1e6,
        "commits": commits,
        "commits_in_window": commits_in_window,
        "records_per_commit": (seq / commits) if commits else None,
        "commit": summarize_ns(commit_total) if transactional else None,
        "commit_endtxn": summarize_ns(commit_endtxn) if transactional else None,
        "e2e": payload["e2e"],
        # A steady state has similar figures in both thirds; a growing p50 means a queue
        # (client, broker or consumer) kept growing during the window.
        "e2e_first_third": payload["e2e_first_third"],
        "e2e_last_third": payload["e2e_last_third"],
        "consumer_records_received": payload["records_received"],
        # Time the producer loop waited for room in its full queue (i.e. for the broker) and
        # spent in flush() + commit_transaction(); the rest it was producing (its own CPU).
        "producer_queue_full_s": blocked[0] / 1e9,
        "producer_committing_s": (sum(commit_total) / 1e9) if transactional else 0.0,
        "cpu_s": {"producer": cpu, "consumer": payload["cpu_s"], "broker": bcpu,
                  "host_busy": (host1 - host0) if host0 is not None and host1 is not None else None},
        "broker": broker_delta(bm0, bm1),
    }
    c = result["cpu_s"]
    if c["host_busy"] is not None and c["broker"] is not None:
        # Everything else that ran on the host meanwhile (approximate: the consumer's CPU time
        # starts when it subscribes, a little before the producer). A large figure = a noisy run.
        c["others"] = max(0.0, c["host_busy"] - c["broker"] - c["producer"] - c["consumer"])
    if payload["records_received"] != seq:
        result["warning"] = (f"consumer received {payload['records_received']} records, "
                             f"producer committed {seq}")
    return result


# ---- report -----------------------------------------------------------------------------------

def fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def table(results: List[dict]) -> str:
    base = results[0]["records_per_s"] if results and results[0]["mode"] == "baseline" else None
    rows = ["| mode | records/s | MB/s | vs baseline | commits | commit p50 / p99 / max (ms) "
            "| EndTxn part p50 / p99 / max (ms) | e2e p50 / p99 / p99.9 (ms) "
            "| CPU s broker / producer / consumer / others |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |"]
    for r in results:
        ratio = f"{r['records_per_s'] / base:.2f}x" if base else "-"
        c, ce, e, cpu = r["commit"], r["commit_endtxn"], r["e2e"], r["cpu_s"]
        commit = (f"{fmt(c['p50'])} / {fmt(c['p99'])} / {fmt(c['max'])}" if c else "-")
        endtxn = (f"{fmt(ce['p50'])} / {fmt(ce['p99'])} / {fmt(ce['max'])}" if ce else "-")
        rows.append(
            f"| {r['mode']} | {r['records_per_s']:,.0f} | {r['mb_per_s']:.1f} | {ratio} "
            f"| {r['commits_in_window'] if r['transactional'] else '-'} | {commit} | {endtxn} "
            f"| {fmt(e['p50'])} / {fmt(e['p99'])} / {fmt(e['p99.9'])} "
            f"| {fmt(cpu['broker'], 1)} / {fmt(cpu['producer'], 1)} / {fmt(cpu['consumer'], 1)} "
            f"/ {fmt(cpu.get('others'), 1)} |")
    return "\n".join(rows)


def broker_table(results: List[dict]) -> Optional[str]:
    if not any(r.get("broker") for r in results):
        return None
    rows = ["| mode | Produce mean (ms) | AddPartitionsToTxn (n, mean ms) | EndTxn (n, mean ms) "
            "| broker file writes/s |",
            "| --- | ---: | --- | --- | ---: |"]
    for r in results:
        b = r.get("broker") or {"apis": {}}
        apis = b["apis"]

        def nm(api):
            a = apis.get(api)
            return f"{a['requests']:,}, {a['mean_ms']:.2f}" if a else "-"

        prod = apis.get("Produce")
        rows.append(f"| {r['mode']} | {fmt(prod['mean_ms']) if prod else '-'} | {nm('AddPartitionsToTxn')} "
                    f"| {nm('EndTxn')} | {fmt(b['io_writes'] / r['elapsed_s'], 0) if 'io_writes' in b else '-'} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured seconds per mode")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before them")
    parser.add_argument("--binary", help="broker binary to run as is (default: a copy of "
                        f"{DEFAULT_SOURCE_BINARY} at {BINARY_COPY})")
    parser.add_argument("--bootstrap", help="use this running broker; none is started")
    parser.add_argument("--data-root", default=tempfile.gettempdir(),
                        help="parent of the broker's temporary data dir")
    parser.add_argument("--linger-ms", type=int, default=5)
    parser.add_argument("--queue-records", type=int, default=10000,
                        help="producer queue.buffering.max.messages (bounds client-side queueing)")
    parser.add_argument("--rate", type=float, default=0,
                        help="records/s per mode, 0 = as fast as possible (default); with a rate "
                             "the value carries each record's intended send time")
    parser.add_argument("--modes", default=",".join(m[0] for m in MODES),
                        help="comma-separated subset of " + ",".join(m[0] for m in MODES))
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()

    wanted = args.modes.split(",")
    modes = [m for m in MODES if m[0] in wanted]
    facts = host_facts(args.data_root)
    print(f"host: {facts.get('cpu')}, {facts.get('allowed_cpus')} cpus, load {facts.get('load_average')}, "
          f"confluent-kafka {facts['confluent_kafka']} / librdkafka {facts['librdkafka']}", flush=True)
    for line in facts.get("busy_processes", []):
        print(f"  busy at start: {line}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="txnbench-", dir=args.data_root))
    broker: Optional[Broker] = None
    results: List[dict] = []
    t_run = time.monotonic()
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            binary_desc = None
        else:
            if args.binary:
                binary = Path(args.binary)
            else:
                shutil.copy2(DEFAULT_SOURCE_BINARY, BINARY_COPY)
                binary = BINARY_COPY
            binary_desc = {"path": str(binary),
                           "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                  time.gmtime(binary.stat().st_mtime))}
            broker = Broker(binary, workdir)
            broker.start()
            bootstrap = broker.bootstrap
            print(f"broker: {' '.join(broker.command)}", flush=True)
        admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
        run_id = uuid.uuid4().hex[:6]
        topics = {m[0]: f"txnbench-{run_id}-{m[0]}" for m in modes}
        for topic, fut in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics.values()],
                                              operation_timeout=30).items():
            fut.result(60)
        deadline = time.monotonic() + 30
        while True:  # every partition has a leader
            md = admin.list_topics(timeout=5).topics
            if all(t in md and len(md[t].partitions) == PARTITIONS and
                   all(p.leader >= 0 for p in md[t].partitions.values()) for t in topics.values()):
                break
            if time.monotonic() > deadline:
                raise SystemExit("topics did not get leaders")
            time.sleep(0.05)  # poll interval
        del admin  # no client left connected when the broker stops
        for name, transactional, every_ms, every_records in modes:
            print(f"{name}: {args.warmup:g} s warm-up + {args.seconds:g} s ...", flush=True)
            r = run_mode(name, transactional, every_ms, every_records, bootstrap, topics[name],
                         args, broker)
            results.append(r)
            e = r["e2e"]
            extra = ""
            if r["init_transactions_s"] is not None:
                print(f"  init_transactions() took {r['init_transactions_s'] * 1000:.0f} ms", flush=True)
            if r["commit"]:
                extra = (f", {r['commits_in_window']} commits ({r['records_per_commit']:.0f} records each), "
                         f"commit p50 {fmt(r['commit']['p50'])} ms p99 {fmt(r['commit']['p99'])} ms")
            print(f"  producer waited {r['producer_queue_full_s']:.1f} s of {r['elapsed_s']:.1f} s on a "
                  f"full queue; {r['producer_committing_s']:.1f} s of the {args.seconds:g} s window in "
                  f"flush+commit", flush=True)
            print(f"  {r['records_per_s']:,.0f} records/s, {r['mb_per_s']:.1f} MB/s{extra}, "
                  f"e2e p50 {fmt(e['p50'])} ms p99 {fmt(e['p99'])} ms (p50 first/last third of the "
                  f"window {fmt(r['e2e_first_third']['p50'])} / {fmt(r['e2e_last_third']['p50'])} ms); "
                  f"received {r['consumer_records_received']:,} of {r['records_total']:,}", flush=True)
            if "warning" in r:
                print(f"  WARNING: {r['warning']}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    total_s = time.monotonic() - t_run
    print()
    print(f"{PARTITIONS} partitions, {RECORD_BYTES} B records, acks=all, "
          f"linger.ms={args.linger_ms}, queue.buffering.max.messages={args.queue_records}, "
          f"{'max rate' if not args.rate else f'{args.rate:,.0f} records/s'}, "
          f"{args.seconds:g} s measured per mode after {args.warmup:g} s warm-up; "
          f"e2e by a read_committed consumer; run took {total_s:.0f} s")
    print()
    print(table(results))
    bt = broker_table(results)
    if bt:
        print()
        print("Broker side (its /metrics, over the whole mode incl. warm-up):")
        print()
        print(bt)
    if args.json:
        doc = {"schema": "riptide-txn-bench/1", "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "params": {"seconds": args.seconds, "warmup": args.warmup, "partitions": PARTITIONS,
                          "record_bytes": RECORD_BYTES, "linger_ms": args.linger_ms,
                          "queue_records": args.queue_records, "rate": args.rate,
                          "bootstrap": args.bootstrap,
                          "broker_binary": binary_desc,
                          "broker_command": broker.command if broker else None},
               "host": facts, "run_seconds": total_s, "results": results}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
