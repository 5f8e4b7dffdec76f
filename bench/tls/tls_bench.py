#!/usr/bin/env python3
"""Produce and cold-fetch throughput, and the broker's CPU per GB, over PLAINTEXT and TLS, in
the same run against the same broker.

    .venv/bin/python bench/tls/tls_bench.py [--megabytes 1024] [--message-bytes 16384] [--out FILE.json]

Starts one broker (`riptide serve --cores 1`, target/release/riptide unless `--binary`) with a
PLAINTEXT and an SSL listener (a CA and a P-256 broker certificate made for the run; TLS 1.3,
no client certificates). For each transport, in turn (PLAINTEXT first, then SSL, then PLAINTEXT
again so a drift of the host shows): a confluent-kafka producer (acks=1, linger.ms=5,
batch.size 1 MiB) writes `--megabytes` of `--message-bytes` records to a fresh 1-partition topic;
then the broker restarts (its batch cache empty: every read comes from the segment files) and a
confluent-kafka consumer reads the topic to its end. Per phase: MB/s (payload bytes over wall
time) and the broker's CPU seconds (utime+stime from /proc) per GB of payload. The ratios
TLS / PLAINTEXT are the figures to read; the client runs on the same host and may be the
limit of the absolute MB/s.

Plaintext cold reads splice page cache to the socket; TLS reads into memory and encrypts in user
space (the kernel's TLS offload needs CONFIG_TLS, which the reported host lacks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from confluent_kafka import Consumer, Producer, TopicPartition  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402

from riptide_broker import free_port  # noqa: E402
from tls_pki import Pki  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Broker:
    def __init__(self, binary: Path, workdir: Path, pki: Pki):
        self.binary, self.workdir, self.pki = binary, workdir, pki
        self.plain_port, self.ssl_port = free_port(), free_port()
        self.proc = None

    def start(self):
        log = open(self.workdir / "broker.log", "a")
        self.proc = subprocess.Popen([
            str(self.binary), "serve", "--cores", "1", "--data-dir", str(self.workdir / "data"),
            "--admin-listen", "",
            "--listeners", f"PLAINTEXT://127.0.0.1:{self.plain_port},SSL://127.0.0.1:{self.ssl_port}",
            "--ssl-certificate-location", str(self.pki.server_crt),
            "--ssl-key-location", str(self.pki.server_key)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                AdminClient({"bootstrap.servers": f"127.0.0.1:{self.plain_port}"}).list_topics(timeout=1)
                return
            except Exception:
                if self.proc.poll() is not None:
                    raise SystemExit(f"broker exited; see {self.workdir / 'broker.log'}")
        raise SystemExit("broker not ready within 60 s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)

    def conf(self, transport: str) -> dict:
        if transport == "PLAINTEXT":
            return {"bootstrap.servers": f"127.0.0.1:{self.plain_port}"}
        return {"bootstrap.servers": f"127.0.0.1:{self.ssl_port}", "security.protocol": "SSL",
                "ssl.ca.location": str(self.pki.ca)}


def produce(broker: Broker, transport: str, topic: str, total_bytes: int, message_bytes: int) -> dict:
    admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{broker.plain_port}"})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    producer = Producer({**broker.conf(transport), "acks": "1", "linger.ms": 5,
                         "batch.size": 1024 * 1024, "queue.buffering.max.kbytes": 256 * 1024,
                         "broker.address.family": "v4"})
    payload = os.urandom(message_bytes)
    count = total_bytes // message_bytes
    cpu0, t0 = cpu_seconds(broker.proc.pid), time.monotonic()
    for _ in range(count):
        while True:
            try:
                producer.produce(topic, payload, partition=0)
                break
            except BufferError:
                producer.poll(0.01)
    assert producer.flush(300) == 0
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(broker.proc.pid) - cpu0
    return phase_figures(count * message_bytes, elapsed, cpu, count)


def consume(broker: Broker, transport: str, topic: str, count: int) -> dict:
    consumer = Consumer({**broker.conf(transport), "group.id": f"bench-{topic}", "enable.auto.commit": False,
                         "fetch.max.bytes": 64 * 1024 * 1024, "max.partition.fetch.bytes": 16 * 1024 * 1024,
                         "broker.address.family": "v4"})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got, size = 0, 0
    cpu0, t0 = cpu_seconds(broker.proc.pid), time.monotonic()
    while got < count:
        for message in consumer.consume(10000, 1.0):
            if message.error():
                raise SystemExit(f"consume error: {message.error()}")
            got += 1
            size += len(message.value())
    elapsed, cpu = time.monotonic() - t0, cpu_seconds(broker.proc.pid) - cpu0
    consumer.close()
    return phase_figures(size, elapsed, cpu, got)


def phase_figures(payload_bytes: int, elapsed_s: float, cpu_s: float, messages: int) -> dict:
    gigabytes = payload_bytes / 1e9
    return {"messages": messages, "payload_bytes": payload_bytes, "seconds": round(elapsed_s, 3),
            "mb_per_s": round(payload_bytes / 1e6 / elapsed_s, 1),
            "broker_cpu_s": round(cpu_s, 3), "broker_cpu_s_per_gb": round(cpu_s / gigabytes, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", type=Path, default=ROOT / "target" / "release" / "riptide")
    parser.add_argument("--megabytes", type=int, default=1024)
    parser.add_argument("--message-bytes", type=int, default=16384)
    parser.add_argument("--out", type=Path, default=Path(f"/tmp/tls-bench-{time.strftime('%Y%m%d-%H%M%S')}.json"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tls-bench-"))
    pki = Pki(workdir)
    broker = Broker(args.binary, workdir, pki)
    broker.start()
    results = []
    try:
        for round_index, transport in enumerate(["PLAINTEXT", "SSL", "PLAINTEXT"]):
            topic = f"tls-bench-{round_index}-{transport.lower()}"
            produced = produce(broker, transport, topic, args.megabytes * 1_000_000, args.message_bytes)
            broker.stop()
            broker.start()  # cold: the next reads come from the segment files
            consumed = consume(broker, transport, topic, produced["messages"])
            results.append({"transport": transport, "produce": produced, "cold_fetch": consumed})
            print(f"{transport:9} produce {produced['mb_per_s']:8.1f} MB/s "
                  f"{produced['broker_cpu_s_per_gb']:6.2f} broker CPU-s/GB | cold fetch "
                  f"{consumed['mb_per_s']:8.1f} MB/s {consumed['broker_cpu_s_per_gb']:6.2f} broker CPU-s/GB",
                  flush=True)
    finally:
        broker.stop()
    plain = [r for r in results if r["transport"] == "PLAINTEXT"]
    tls = next(r for r in results if r["transport"] == "SSL")

    def mean(kind, key):
        return sum(r[kind][key] for r in plain) / len(plain)

    ratios = {f"{kind}_{key}_tls_over_plaintext": round(tls[kind][key] / mean(kind, key), 3)
              for kind in ("produce", "cold_fetch") for key in ("mb_per_s", "broker_cpu_s_per_gb")}
    for name, value in ratios.items():
        print(f"{name}: {value}")
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "host": platform.node(),
               "kernel": platform.release(), "cpus": os.cpu_count(), "results": results, "ratios": ratios}
    args.out.write_text(json.dumps(summary, indent=1))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
