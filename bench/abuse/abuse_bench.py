#!/usr/bin/env python3
"""Abusive clients against one Riptide broker, and what they cost a well-behaved client.

    .venv/bin/python bench/abuse/abuse_bench.py [--quick] [--out FILE.json]

Starts one broker (`riptide serve --cores 1`, binary /tmp/abuse-riptide unless `--binary`) with
small client time limits (idle 5 s, request read timeout 3 s, response write timeout 3 s; the
size, memory, in-flight and connection limits at their defaults, passed explicitly;
auto-creation of topics off, so that Metadata naming unknown topics creates none). A *victim*
process (confluent-kafka producer, acks=1, linger.ms=0, Nagle off) sends one 100-byte record
every 2 ms to its own 1-partition topic for the whole run and records each delivery latency
(delivery callback time - send time, CLOCK_MONOTONIC). The phases, one after the other, each
at least `--phase-seconds` (20 s; 8 s with --quick) and longer if a limit needs longer to act:

  0 baseline       nothing else
  1 idle-conns     10,000 TCP connections opened and left silent; the broker must close them
                   after connections-max-idle-ms
  2 slowloris      1,000 connections each sending an ApiVersions frame at 1 byte/s; the broker
                   must close each within 3x request-read-timeout-ms of its first byte
  3 fetch-no-read  50 connections (SO_RCVBUF 4 KiB) each sending one Fetch (max_bytes and
                   partition_max_bytes 50 MiB) of a topic pre-filled with 50 MB, never reading;
                   the broker must close them on response-write-timeout-ms
  4 huge-requests  Metadata v1 naming 100,000 topics (repeated), and requests whose array
                   count (or string/bytes length) is 2^31-1 with nothing after it; each must be
                   answered or its connection closed, and the broker must live
  5 memory-hog     (beyond the brief) 3 connections whose frame-size prefixes add up to
                   max-request-memory-per-shard-bytes, sending nothing more, reconnecting at once
                   when closed

Every 200 ms: the broker's VmRSS, its CPU time (utime+stime) and its /metrics
(riptide_connections, riptide_connections_closed_total by reason). Per phase: victim
p50/p99/p99.9/max (nearest rank over records *sent* in the phase) and p99 vs the baseline's,
broker max RSS, CPU seconds, closures by reason, and what the attack saw. The broker must be
alive after every phase (if it died, the failure and its log tail are reported and a new broker
is started on the same ports and data dir for the remaining phases). Exit status 1 if the
broker died or a limit did not act in time, else 0.

Everything shares the host's CPUs: the broker's shard (pinned by the broker), the victim
process and this script's attack loops (unpinned; this process lowers its priority by nice 10
once the broker and the victim are started, as a remote attacker would not take the broker's
CPU). CPU seconds of the broker, the clients and the rest of the host are reported per phase:
a busy host shows there.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from array import array
from pathlib import Path
from typing import Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BINARY = Path("/tmp/abuse-riptide")
VICTIM_TOPIC = "abuse-victim"
FILL_TOPIC = "abuse-fill"
VICTIM_INTERVAL_S = 0.002
VICTIM_RECORD_BYTES = 100
SAMPLE_INTERVAL_S = 0.2
MiB = 1024 * 1024

# Broker limits of the run (the last four are Riptide's defaults, passed explicitly).
LIMITS = {
    "connections-max-idle-ms": 5000,
    "request-read-timeout-ms": 3000,
    "response-write-timeout-ms": 3000,
    "max-connections-per-shard": 65536,
    "max-request-size-bytes": 100 * MiB,
    "max-request-memory-per-shard-bytes": 256 * MiB,
    "max-in-flight-requests-per-connection": 128,
}
CLOSE_REASONS = ("idle", "request_timeout", "response_timeout", "over_limit")
INT32_MAX = 2**31 - 1
WARN_P99_RATIO = 10.0
ATTACKER_NICE = 10


# ---- small helpers ----------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(sorted_values, q: float):
    n = len(sorted_values)
    if n == 0:
        return None
    return sorted_values[min(max(1, math.ceil(q * n)), n) - 1]


def latency_summary(lat_ns) -> dict:
    s = sorted(lat_ns)
    out = {"count": len(s)}
    for name, q in (("p50", 0.50), ("p99", 0.99), ("p99.9", 0.999)):
        v = percentile(s, q)
        out[name] = None if v is None else v / 1e6
    out["max"] = s[-1] / 1e6 if s else None
    return out


def proc_cpu_seconds(pid: int) -> Optional[float]:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def proc_rss_kib(pid: int) -> Optional[int]:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def host_busy_cpu_seconds() -> Optional[float]:
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None


def git_commit() -> Optional[str]:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def fmt(v, digits=2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def dist(values) -> Optional[dict]:
    """min/median/max of a list of seconds."""
    if not values:
        return None
    s = sorted(values)
    return {"min": s[0], "median": s[len(s) // 2], "max": s[-1]}


# ---- Kafka frames by hand ---------------------------------------------------------------------

def kstr(s: bytes) -> bytes:
    return struct.pack(">h", len(s)) + s


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def frame(api_key: int, version: int, corr: int, body: bytes, client_id: bytes = b"abuse",
          flexible: bool = False) -> bytes:
    """A request frame: size, header v1 (v2 with its empty tagged fields if flexible), body."""
    header = struct.pack(">hhi", api_key, version, corr) + kstr(client_id)
    if flexible:
        header += b"\x00"
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def metadata_v1_names(n: int) -> bytes:
    names = b"".join(kstr(b"abuse-missing-%07d" % i) for i in range(n))
    return frame(3, 1, 1, struct.pack(">i", n) + names)


def fetch_v4(topic: bytes, max_bytes: int, corr: int = 1) -> bytes:
    body = struct.pack(">iiiib", -1, 0, 1, max_bytes, 0)           # replica, wait, min, max, iso
    body += struct.pack(">i", 1) + kstr(topic) + struct.pack(">i", 1)
    body += struct.pack(">iqi", 0, 0, max_bytes)                     # partition, offset, max
    return frame(1, 4, corr, body)


def huge_count_probes() -> List[Tuple[str, bytes]]:
    """Requests whose array count (or string / bytes length) is 2^31-1, with nothing after."""
    M = struct.pack(">i", INT32_MAX)
    topic = kstr(VICTIM_TOPIC.encode())
    produce_head = struct.pack(">hhi", -1, 1, 1000)   # null transactional id, acks, timeout
    return [
        ("Metadata v1 topics=2^31-1", frame(3, 1, 2, M)),
        ("Metadata v9 (compact) topics=2^31-1", frame(3, 9, 3, uvarint(INT32_MAX + 1), flexible=True)),
        ("Metadata v1 name length=32767", frame(3, 1, 4, struct.pack(">i", 1) + struct.pack(">h", 32767))),
        ("Produce v3 topics=2^31-1", frame(0, 3, 5, produce_head + M)),
        ("Produce v3 partitions=2^31-1", frame(0, 3, 6, produce_head + struct.pack(">i", 1) + topic + M)),
        ("Produce v3 records length=2^31-1",
         frame(0, 3, 7, produce_head + struct.pack(">i", 1) + topic + struct.pack(">ii", 1, 0) + M)),
        ("Fetch v4 topics=2^31-1", frame(1, 4, 8, struct.pack(">iiiib", -1, 0, 1, MiB, 0) + M)),
        ("Fetch v12 (compact) topics=2^31-1",
         frame(1, 12, 9, struct.pack(">iiiibii", -1, 0, 1, MiB, 0, 0, -1) + uvarint(INT32_MAX + 1),
               flexible=True)),
        ("ListOffsets v1 topics=2^31-1", frame(2, 1, 10, struct.pack(">i", -1) + M)),
        ("CreateTopics v2 topics=2^31-1", frame(19, 2, 11, M)),
        ("OffsetCommit v2 topics=2^31-1",
         frame(8, 2, 12, kstr(b"g") + struct.pack(">i", -1) + kstr(b"") + struct.pack(">q", -1) + M)),
    ]


def read_response(sock: socket.socket, timeout: float) -> Tuple[str, int]:
    """('answered', size) after one whole response frame, ('closed', bytes) on EOF / reset,
    ('no reaction', bytes) after `timeout`."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    need = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "no reaction", len(buf)
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return "no reaction", len(buf)
        except OSError:
            return "closed", len(buf)
        if not chunk:
            return "closed", len(buf)
        buf += chunk
        if need is None and len(buf) >= 4:
            need = 4 + struct.unpack(">i", bytes(buf[:4]))[0]
        if need is not None and len(buf) >= need:
            return "answered", need


def open_connections(n: int, port: int, rcvbuf: Optional[int] = None, max_pending: int = 256,
                     timeout_s: float = 60.0) -> Tuple[List[socket.socket], int, str]:
    """Opens up to n TCP connections with non-blocking connects (at most max_pending at once).
    Returns the connected sockets (non-blocking), failures, and the first error seen."""
    sel = selectors.DefaultSelector()
    opened: List[socket.socket] = []
    failed = 0
    first_error = ""
    started = 0
    pending = 0
    deadline = time.monotonic() + timeout_s
    while (started < n or pending) and time.monotonic() < deadline:
        while started < n and pending < max_pending:
            started += 1
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            except OSError as e:
                failed += 1
                first_error = first_error or f"socket(): {e}"
                started = n  # out of descriptors: stop opening
                break
            s.setblocking(False)
            if rcvbuf:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            err = s.connect_ex(("127.0.0.1", port))
            if err == 0:
                opened.append(s)
            elif err == errno.EINPROGRESS:
                sel.register(s, selectors.EVENT_WRITE)
                pending += 1
            else:
                failed += 1
                first_error = first_error or f"connect: {os.strerror(err)}"
                s.close()
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            sel.unregister(s)
            pending -= 1
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                opened.append(s)
            else:
                failed += 1
                first_error = first_error or f"connect: {os.strerror(err)}"
                s.close()
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        failed += 1
        first_error = first_error or "connect timed out"
    sel.close()
    return opened, failed, first_error


# ---- the broker -------------------------------------------------------------------------------

def _broker_preexec() -> None:
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG: die with us
    except Exception:
        pass


class Broker:
    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.admin_port = free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "broker.log"
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.command = [str(binary), "serve", "--listen", self.bootstrap,
                        "--data-dir", str(self.data_dir), "--cores", "1",
                        "--admin-listen", f"127.0.0.1:{self.admin_port}",
                        "--auto-create-topics", "false"]
        for k, v in LIMITS.items():
            self.command += [f"--{k}", str(v)]
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== abuse_bench: start #{self.starts}: {' '.join(self.command)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_broker_preexec)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"broker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(
                        f"http://127.0.0.1:{self.admin_port}/v1/status/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"broker not ready in {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def metrics(self) -> Optional[dict]:
        """open connections, accepted, bytes sent and closures by reason, summed over shards."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/metrics",
                                        timeout=2) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        out = {"connections": 0.0, "accepted": 0.0, "bytes_sent": 0.0,
               "closed": {r: 0.0 for r in CLOSE_REASONS},
               "metadata_requests": 0.0, "metadata_latency_s": 0.0}
        for line in text.splitlines():
            if not line.startswith("riptide_"):
                continue
            try:
                head, value = line.rsplit(" ", 1)
                name, _, labels = head.partition("{")
                v = float(value)
            except ValueError:
                continue
            if name == "riptide_connections":
                out["connections"] += v
            elif name == "riptide_connections_accepted_total":
                out["accepted"] += v
            elif name == "riptide_bytes_sent_total":
                out["bytes_sent"] += v
            elif name == "riptide_requests_total" and 'api="Metadata"' in labels:
                out["metadata_requests"] += v
            elif name == "riptide_request_latency_seconds_sum" and 'api="Metadata"' in labels:
                out["metadata_latency_s"] += v
            elif name == "riptide_connections_closed_total" and 'reason="' in labels:
                reason = labels.split('reason="', 1)[1].split('"', 1)[0]
                out["closed"][reason] = out["closed"].get(reason, 0.0) + v
        return out

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_between(self, start: int, end: int) -> List[str]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                return f.read(max(0, end - start)).decode(errors="replace").splitlines()
        except OSError:
            return []

    def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Sampler(threading.Thread):
    """Every 200 ms: (t_ns, RSS KiB, CPU s, alive, metrics) of the broker."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(daemon=True)
        self.broker = broker
        self.samples: List[tuple] = []
        self.halt = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.halt.is_set():
            t = time.monotonic_ns()
            alive = self.broker.alive()
            pid = self.broker.pid
            rss = proc_rss_kib(pid) if alive else None
            cpu = proc_cpu_seconds(pid) if alive else None
            m = self.broker.metrics() if alive else None
            with self.lock:
                self.samples.append((t, rss, cpu, alive, m, pid))
            self.halt.wait(max(0.0, SAMPLE_INTERVAL_S - (time.monotonic_ns() - t) / 1e9))

    def window(self, t0: int, t1: int) -> List[tuple]:
        with self.lock:
            return [s for s in self.samples if t0 <= s[0] <= t1]

    def latest_metrics(self, pid: int) -> Optional[dict]:
        """The last metrics sampled from broker process `pid`."""
        with self.lock:
            for s in reversed(self.samples):
                if s[4] is not None and s[5] == pid:
                    return s[4]
        return None


# ---- the victim (own process, own GIL) --------------------------------------------------------

def victim_main(bootstrap: str, topic: str, conn) -> None:
    from confluent_kafka import Producer
    p = Producer({
        "bootstrap.servers": bootstrap,
        "broker.address.family": "v4",
        "client.id": "abuse-victim",
        "acks": 1,
        "linger.ms": 0,
        "socket.nagle.disable": True,
        "log.connection.close": False,
    })
    sent = array("q")
    lat = array("q")
    failed = array("q")
    monotonic_ns = time.monotonic_ns
    done = threading.Event()
    ready = threading.Event()

    def poller():
        while not done.is_set():
            p.poll(0.05)

    def make_cb(t0):
        def cb(err, _msg):
            now = monotonic_ns()
            if err is None:
                sent.append(t0)
                lat.append(now - t0)
                ready.set()
            else:
                failed.append(t0)
        return cb

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    payload = b"v" * VICTIM_RECORD_BYTES
    interval = int(VICTIM_INTERVAL_S * 1e9)
    next_t = monotonic_ns()
    announced = False
    local_full = 0
    try:
        while True:
            if conn.poll(0):
                conn.recv()
                break
            if ready.is_set() and not announced:
                conn.send(("ready",))
                announced = True
            now = monotonic_ns()
            if next_t > now:
                time.sleep((next_t - now) / 1e9)
            elif now - next_t > 1_000_000_000:  # fell a second behind (host stalled): resync
                next_t = now
            t0 = monotonic_ns()
            try:
                p.produce(topic, payload, callback=make_cb(t0))
            except BufferError:
                local_full += 1
            next_t += interval
        left = p.flush(30)
        done.set()
        th.join(5)
        conn.send(("done", {"sent": sent.tobytes(), "lat": lat.tobytes(),
                            "failed": failed.tobytes(), "undelivered": left,
                            "queue_full": local_full}))
    except Exception as e:
        conn.send(("error", repr(e)))


# ---- phases -----------------------------------------------------------------------------------

class Phase:
    def __init__(self, name: str) -> None:
        self.name = name
        self.t0 = 0
        self.t1 = 0
        self.m0: Optional[dict] = None
        self.m1: Optional[dict] = None
        self.cpu0 = None
        self.cpu1 = None
        self.client_cpu0 = None
        self.client_cpu1 = None
        self.host0 = None
        self.host1 = None
        self.pid0 = 0
        self.log0 = 0
        self.log1 = 0
        self.attack: dict = {}
        self.notes: List[str] = []
        self.failures: List[str] = []


class Run:
    def __init__(self, args, broker: Broker, sampler: Sampler, victim_pid: int) -> None:
        self.args = args
        self.broker = broker
        self.sampler = sampler
        self.victim_pid = victim_pid
        self.phases: List[Phase] = []
        self.deaths: List[dict] = []

    def client_cpu(self) -> float:
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime + (proc_cpu_seconds(self.victim_pid) or 0.0)

    def begin(self, name: str) -> Phase:
        ph = Phase(name)
        ph.m0 = self.broker.metrics()
        ph.cpu0 = proc_cpu_seconds(self.broker.pid)
        ph.pid0 = self.broker.pid
        ph.client_cpu0 = self.client_cpu()
        ph.host0 = host_busy_cpu_seconds()
        ph.log0 = self.broker.log_size()
        ph.t0 = time.monotonic_ns()
        print(f"\n== phase {len(self.phases)} {name}", flush=True)
        self.phases.append(ph)
        return ph

    def wait_until(self, ph: Phase, seconds: float) -> None:
        left = ph.t0 / 1e9 + seconds - time.monotonic()
        if left > 0:
            time.sleep(left)

    def end(self, ph: Phase) -> None:
        ph.t1 = time.monotonic_ns()
        if self.broker.alive() and self.broker.pid == ph.pid0:
            ph.m1 = self.broker.metrics()
            ph.cpu1 = proc_cpu_seconds(self.broker.pid)
        else:
            # The broker died (and was restarted) during the phase: its last sampled counters.
            ph.m1 = self.sampler.latest_metrics(ph.pid0)
            ph.cpu1 = None
        ph.client_cpu1 = self.client_cpu()
        ph.host1 = host_busy_cpu_seconds()
        ph.log1 = self.broker.log_size()
        self.check_alive(ph, "end of phase")

    def check_alive(self, ph: Phase, when: str) -> bool:
        if self.broker.alive():
            return True
        rc = self.broker.proc.returncode
        tail = self.broker.log_tail(40)
        msg = f"broker DIED ({when}, exit status {rc})"
        print(f"!! {msg}\n{tail}", flush=True)
        ph.failures.append(msg)
        self.deaths.append({"phase": ph.name, "when": when, "returncode": rc, "log_tail": tail})
        # Restart on the same ports and data dir so the remaining phases still run.
        self.broker.start()
        ph.notes.append("broker restarted after its death")
        return False

    def closures(self, ph: Phase) -> Dict[str, int]:
        if ph.m0 is None or ph.m1 is None:
            return {}
        return {r: int(ph.m1["closed"].get(r, 0) - ph.m0["closed"].get(r, 0)) for r in CLOSE_REASONS}

    def base_connections(self) -> float:
        m = self.broker.metrics()
        return m["connections"] if m else 0.0

    def wait_connections_at_most(self, level: float, deadline: float) -> Optional[float]:
        """Polls /metrics until riptide_connections <= level; monotonic time it did, or None."""
        while time.monotonic() < deadline:
            m = self.broker.metrics()
            if m is not None and m["connections"] <= level:
                return time.monotonic()
            if not self.broker.alive():
                return None
            time.sleep(0.1)
        return None


def phase_baseline(run: Run) -> None:
    ph = run.begin("baseline")
    run.wait_until(ph, run.args.phase_seconds)
    run.end(ph)


def phase_idle(run: Run) -> None:
    n = run.args.idle_conns
    idle_s = LIMITS["connections-max-idle-ms"] / 1000
    ph = run.begin("idle-conns")
    base = run.base_connections()
    t_open0 = time.monotonic()
    socks, failed, first_error = open_connections(n, run.broker.port)
    t_open1 = time.monotonic()
    opened_at = t_open1  # the last connect completed by then
    print(f"   opened {len(socks)} in {t_open1 - t_open0:.2f} s (failed {failed} {first_error})",
          flush=True)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    # Peak of riptide_connections while they are open, and client-side close times.
    peak = 0.0
    closed_at: Dict[int, float] = {}
    deadline = opened_at + 3 * idle_s
    fallback_at = None
    next_metrics = 0.0
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if not data:
                closed_at[s.fileno()] = time.monotonic()
                sel.unregister(s)
        now = time.monotonic()
        if now >= next_metrics:
            next_metrics = now + 0.2
            m = run.broker.metrics()
            if m is not None:
                peak = max(peak, m["connections"])
                if fallback_at is None and m["connections"] <= base and len(closed_at) == len(socks):
                    fallback_at = now
        if not run.broker.alive() or (fallback_at is not None and len(closed_at) == len(socks)):
            break
    if fallback_at is None:
        fallback_at = run.wait_connections_at_most(base, time.monotonic() + 0.5)
    not_closed = len(socks) - len(closed_at)
    sel.close()
    for s in socks:
        s.close()
    close_s = [t - t_open0 for t in closed_at.values()]
    ph.attack = {
        "connections_requested": n, "opened": len(socks), "open_failed": failed,
        "open_first_error": first_error, "open_seconds": t_open1 - t_open0,
        "connections_metric_before": base, "connections_metric_peak": peak,
        "closed_by_broker": len(closed_at), "not_closed_within_3x_idle": not_closed,
        "close_after_open_start_s": dist(close_s),
        "metric_back_to_before_s_after_last_open":
            None if fallback_at is None else fallback_at - opened_at,
        "rlimit_nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
    }
    ph.notes.append(f"opened {len(socks)}/{n} in {t_open1 - t_open0:.1f} s"
                    + (f" ({failed} failed: {first_error})" if failed else "")
                    + f"; metric peak {int(peak)} open (before {int(base)})")
    if close_s:
        d = dist(close_s)
        ph.notes.append(f"broker closed {len(closed_at)} at {d['min']:.1f}-{d['max']:.1f} s after "
                        f"opening began")
    if fallback_at is not None:
        ph.notes.append(f"riptide_connections back to {int(base)} "
                        f"{fallback_at - opened_at:.1f} s after the last open")
    if not_closed or fallback_at is None:
        ph.failures.append(f"idle limit: {not_closed} of {len(socks)} idle connections still open "
                           f"{3 * idle_s:.0f} s (3x idle) after the last open")
    if peak < base + len(socks) * 0.99 and len(socks):
        ph.notes.append("metric never showed all connections open at once")
    run.check_alive(ph, "after idle connections")
    run.wait_until(ph, run.args.phase_seconds)
    run.end(ph)


def phase_slowloris(run: Run) -> None:
    n = run.args.slowloris
    timeout_s = LIMITS["request-read-timeout-ms"] / 1000
    ph = run.begin("slowloris")
    payload = frame(18, 0, 1, b"", client_id=b"slowloris")  # ApiVersions v0, 23 bytes
    socks, failed, first_error = open_connections(n, run.broker.port)
    sel = selectors.DefaultSelector()
    pos: Dict[socket.socket, int] = {}
    first_byte: Dict[socket.socket, float] = {}
    closed: Dict[socket.socket, float] = {}
    answered = 0
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        pos[s] = 0
    open_set = set(socks)
    next_tick = time.monotonic()
    t_start = next_tick
    deadline = t_start + 3 * timeout_s + 1.5
    completed_frames = 0
    while open_set and time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_tick:
            for s in list(open_set):
                if pos[s] >= len(payload):
                    continue
                try:
                    sent = s.send(payload[pos[s]:pos[s] + 1])
                except OSError:
                    closed[s] = now
                    open_set.discard(s)
                    sel.unregister(s)
                    continue
                if sent and pos[s] == 0:
                    first_byte[s] = now
                pos[s] += sent
                if pos[s] >= len(payload):
                    completed_frames += 1
            next_tick += 1.0
        for key, _ in sel.select(timeout=max(0.0, min(0.1, next_tick - time.monotonic()))):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                answered += 1
                continue
            closed[s] = time.monotonic()
            open_set.discard(s)
            sel.unregister(s)
    sel.close()
    for s in socks:
        s.close()
    close_after = [closed[s] - first_byte[s] for s in closed if s in first_byte]
    late = sum(1 for v in close_after if v > 3 * timeout_s)
    d = dist(close_after)
    ph.attack = {
        "connections_requested": n, "opened": len(socks), "open_failed": failed,
        "open_first_error": first_error, "frame_bytes": len(payload),
        "closed_by_broker": len(closed), "still_open_at_deadline": len(open_set),
        "closed_later_than_3x_timeout": late, "frames_completed": completed_frames,
        "responses_received": answered, "close_after_first_byte_s": d,
        "bytes_sent_before_close": dist([pos[s] for s in closed]),
    }
    ph.notes.append(f"{len(socks)} slowloris ({len(payload)}-byte frame, 1 B/s): {len(closed)} "
                    f"closed by the broker"
                    + (f" {d['min']:.1f}/{d['median']:.1f}/{d['max']:.1f} s (min/med/max) after "
                       f"their first byte" if d else ""))
    if open_set or late:
        ph.failures.append(f"request read timeout: {len(open_set)} slowloris connections still "
                           f"open and {late} closed later than 3x {timeout_s:.0f} s")
    run.check_alive(ph, "after slowloris")
    run.wait_until(ph, run.args.phase_seconds)
    run.end(ph)


def phase_fetch_no_read(run: Run) -> None:
    n = run.args.fetchers
    timeout_s = LIMITS["response-write-timeout-ms"] / 1000
    ph = run.begin("fetch-no-read")
    base = run.base_connections()
    m_before = run.broker.metrics()
    socks, failed, first_error = open_connections(n, run.broker.port, rcvbuf=4096)
    req = fetch_v4(FILL_TOPIC.encode(), 50 * MiB)
    t_sent = time.monotonic()
    for s in socks:
        s.setblocking(True)
        s.sendall(req)
    t_sent_end = time.monotonic()
    deadline = t_sent_end + 3 * timeout_s
    done_at = None
    rt = 0
    while time.monotonic() < deadline + 2:
        m = run.broker.metrics()
        if m is None:
            if not run.broker.alive():
                break
        else:
            rt = int(m["closed"]["response_timeout"] - m_before["closed"]["response_timeout"])
            if rt >= len(socks) and done_at is None:
                done_at = time.monotonic()
                break
        time.sleep(0.1)
    m_after = run.broker.metrics() or m_before
    back = run.wait_connections_at_most(base, time.monotonic() + 1.0)
    for s in socks:
        s.close()
    ph.attack = {
        "connections": len(socks), "open_failed": failed, "request_max_bytes": 50 * MiB,
        "rcvbuf_requested": 4096, "response_timeout_closures": rt,
        "all_closed_after_send_s": None if done_at is None else done_at - t_sent,
        "metric_connections_back_to_before": back is not None,
        "broker_bytes_sent_delta": m_after["bytes_sent"] - m_before["bytes_sent"],
    }
    ph.notes.append(f"{len(socks)} unread 50 MiB fetches: {rt} response_timeout closures"
                    + (f", the last {done_at - t_sent:.1f} s after sending" if done_at else ""))
    if done_at is None or done_at - t_sent > 3 * timeout_s:
        ph.failures.append(f"response write timeout: {rt} of {len(socks)} non-reading fetchers "
                           f"closed within 3x {timeout_s:.0f} s")
    run.check_alive(ph, "after unread fetches")
    run.wait_until(ph, run.args.phase_seconds)
    run.end(ph)


def phase_huge(run: Run) -> None:
    ph = run.begin("huge-requests")
    probes = []
    for name, req in huge_count_probes():
        s = socket.create_connection(("127.0.0.1", run.broker.port), timeout=5)
        t = time.monotonic()
        s.sendall(req)
        outcome, nbytes = read_response(s, 10.0)
        dt = time.monotonic() - t
        s.close()
        time.sleep(0.05)
        alive = run.broker.alive()
        probes.append({"probe": name, "frame_bytes": len(req), "outcome": outcome,
                       "response_bytes": nbytes, "seconds": dt, "broker_alive": alive})
        print(f"   {name}: {outcome} in {dt * 1000:.1f} ms, broker alive: {alive}", flush=True)
        if outcome == "no reaction":
            ph.failures.append(f"{name}: neither answered nor closed within 10 s")
        if not run.check_alive(ph, f"after probe {name!r}"):
            probes[-1]["broker_alive"] = False
    # Metadata v1 naming 100,000 topics, over and over until the phase ends.
    md = metadata_v1_names(run.args.metadata_topics)
    m_md0 = run.broker.metrics()
    md_times = []
    md_outcomes: Dict[str, int] = {}
    md_resp = 0
    end = ph.t0 / 1e9 + run.args.phase_seconds
    while time.monotonic() < end - 0.5 or not md_times:
        try:
            s = socket.create_connection(("127.0.0.1", run.broker.port), timeout=5)
        except OSError as e:
            md_outcomes[f"connect failed: {e}"] = md_outcomes.get(f"connect failed: {e}", 0) + 1
            if not run.check_alive(ph, "during Metadata 100k"):
                continue
            break
        t = time.monotonic()
        s.sendall(md)
        outcome, nbytes = read_response(s, 10.0)
        md_times.append(time.monotonic() - t)
        md_outcomes[outcome] = md_outcomes.get(outcome, 0) + 1
        md_resp = max(md_resp, nbytes)
        s.close()
        if outcome == "no reaction":
            ph.failures.append("Metadata 100k topics: neither answered nor closed within 10 s")
        if not run.check_alive(ph, "after Metadata 100k"):
            break
        time.sleep(run.args.metadata_pause)
    m_md1 = run.broker.metrics()
    broker_md = None
    if m_md0 and m_md1 and m_md1["metadata_requests"] > m_md0["metadata_requests"]:
        n_md = m_md1["metadata_requests"] - m_md0["metadata_requests"]
        broker_md = (m_md1["metadata_latency_s"] - m_md0["metadata_latency_s"]) / n_md
    ph.attack = {"huge_count_probes": probes,
                 "metadata_100k_broker_mean_latency_s": broker_md,
                 "metadata_100k": {"topics": run.args.metadata_topics, "frame_bytes": len(md),
                                   "requests": len(md_times), "outcomes": md_outcomes,
                                   "response_bytes": md_resp, "seconds": dist(md_times)}}
    closed = sum(1 for p in probes if p["outcome"] == "closed")
    answered = sum(1 for p in probes if p["outcome"] == "answered")
    d = dist(md_times)
    ph.notes.append(f"{len(probes)} count/length 2^31-1 probes: {closed} closed, {answered} answered")
    ph.notes.append(f"Metadata v1 x {run.args.metadata_topics:,} topics "
                    f"({len(md) / 1e6:.1f} MB): "
                    + ", ".join(f"{n} {o}" for o, n in md_outcomes.items())
                    + (f", {md_resp / 1e6:.1f} MB answers in {d['median'] * 1000:.0f} ms median, "
                       f"{d['max'] * 1000:.0f} max" if d else "")
                    + (f" (broker-side mean {broker_md * 1000:.0f} ms)" if broker_md else ""))
    run.wait_until(ph, run.args.phase_seconds)
    run.end(ph)


def phase_memory_hog(run: Run) -> None:
    timeout_s = LIMITS["request-read-timeout-ms"] / 1000
    ph = run.begin("memory-hog")
    total = LIMITS["max-request-memory-per-shard-bytes"]
    biggest = LIMITS["max-request-size-bytes"]
    sizes = []
    while total > 0:
        sizes.append(min(biggest, total))
        total -= sizes[-1]
    sel = selectors.DefaultSelector()
    holders: Dict[socket.socket, Tuple[int, float]] = {}
    lifetimes = []
    connects = 0

    def hold(size: int) -> None:
        nonlocal connects
        s = socket.create_connection(("127.0.0.1", run.broker.port), timeout=5)
        s.sendall(struct.pack(">i", size))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        holders[s] = (size, time.monotonic())
        connects += 1

    for size in sizes:
        hold(size)
    end = ph.t0 / 1e9 + run.args.phase_seconds
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=0.1):
            s = key.fileobj
            try:
                data = s.recv(64)
            except OSError:
                data = b""
            if data:
                continue
            size, t = holders.pop(s)
            lifetimes.append(time.monotonic() - t)
            sel.unregister(s)
            s.close()
            if run.broker.alive():
                try:
                    hold(size)
                except OSError:
                    pass
        if not run.broker.alive():
            break
    for s in list(holders):
        s.close()
    sel.close()
    d = dist(lifetimes)
    ph.attack = {"frame_sizes": sizes, "connections_made": connects,
                 "held_seconds": d}
    ph.notes.append(f"{len(sizes)} conns declaring {'+'.join(str(x // MiB) for x in sizes)} MiB "
                    f"frames, renewed {connects - len(sizes)} times"
                    + (f"; each held {d['median']:.1f} s median" if d else ""))
    if d is None or d["max"] > 3 * timeout_s:
        ph.failures.append("request read timeout: memory-holding connections not closed within "
                           f"3x {timeout_s:.0f} s")
    run.end(ph)


# ---- setup and report -------------------------------------------------------------------------

def create_topics_and_fill(bootstrap: str, fill_bytes: int) -> dict:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    for _, fut in admin.create_topics([NewTopic(VICTIM_TOPIC, 1, 1), NewTopic(FILL_TOPIC, 1, 1)],
                                      operation_timeout=30).items():
        fut.result(60)
    deadline = time.monotonic() + 30
    while True:
        md = admin.list_topics(timeout=5).topics
        if all(t in md and md[t].partitions and md[t].partitions[0].leader >= 0
               for t in (VICTIM_TOPIC, FILL_TOPIC)):
            break
        if time.monotonic() > deadline:
            raise SystemExit("topics have no leader after 30 s")
        time.sleep(0.1)
    p = Producer({"bootstrap.servers": bootstrap, "broker.address.family": "v4", "acks": 1,
                  "linger.ms": 20, "batch.size": 1000000, "client.id": "abuse-fill"})
    value = os.urandom(10000)
    n = fill_bytes // len(value)
    t = time.monotonic()
    errors = []
    for i in range(n):
        while True:
            try:
                p.produce(FILL_TOPIC, value, callback=lambda e, m: errors.append(e) if e else None)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(60)
    if errors or left:
        raise SystemExit(f"pre-fill failed: {errors[:3]} {left} left")
    return {"records": n, "bytes": n * len(value), "seconds": time.monotonic() - t}


def summarize(run: Run, victim: dict) -> dict:
    sent = array("q")
    sent.frombytes(victim["sent"])
    lat = array("q")
    lat.frombytes(victim["lat"])
    failed = array("q")
    failed.frombytes(victim["failed"])
    rows = []
    base_p99 = None
    for i, ph in enumerate(run.phases):
        pairs = [(s, l) for s, l in zip(sent, lat) if ph.t0 <= s < ph.t1]
        lats = [l for _, l in pairs]
        errs = sum(1 for s in failed if ph.t0 <= s < ph.t1)
        v = latency_summary(lats)
        v["failed"] = errs
        # Per second of the phase (by send time): records, p99 and max latency, ms.
        buckets: Dict[int, List[int]] = {}
        for s, l in pairs:
            buckets.setdefault(int((s - ph.t0) // 1_000_000_000), []).append(l)
        timeline = []
        for sec in sorted(buckets):
            b = sorted(buckets[sec])
            timeline.append({"second": sec, "records": len(b),
                             "p99_ms": percentile(b, 0.99) / 1e6, "max_ms": b[-1] / 1e6})
        if i == 0:
            base_p99 = v["p99"]
        samples = run.sampler.window(ph.t0, ph.t1)
        rss = [s[1] for s in samples if s[1] is not None]
        cpu = None if ph.cpu0 is None or ph.cpu1 is None else ph.cpu1 - ph.cpu0
        row = {
            "phase": f"{i} {ph.name}",
            "seconds": (ph.t1 - ph.t0) / 1e9,
            "victim": v,
            "victim_p99_vs_baseline": (v["p99"] / base_p99) if v["p99"] and base_p99 else None,
            "broker_max_rss_mib": max(rss) / 1024 if rss else None,
            "broker_rss_start_end_mib": [rss[0] / 1024, rss[-1] / 1024] if rss else None,
            "broker_cpu_s": cpu,
            "client_cpu_s": ph.client_cpu1 - ph.client_cpu0,
            "host_busy_cpu_s": (ph.host1 - ph.host0) if ph.host0 is not None and ph.host1 is not None else None,
            "closures": run.closures(ph),
            "attack": ph.attack,
            "notes": ph.notes,
            "failures": ph.failures,
            "broker_log_bytes": ph.log1 - ph.log0,
            "broker_log_warnings": warn_summary(run.broker.log_between(ph.log0, ph.log1)),
            "victim_timeline": timeline,
        }
        if errs:
            row["notes"] = row["notes"] + [f"victim: {errs} deliveries failed"]
        if timeline and base_p99 and i > 0:
            worst = max(timeline, key=lambda b: b["max_ms"])
            slow = [b["second"] for b in timeline if b["p99_ms"] > 3 * base_p99]
            if slow:
                row["notes"] = row["notes"] + [
                    f"victim p99 > 3x baseline in {len(slow)} of {len(timeline)} s "
                    f"(seconds {compress(slow)}); worst second {worst['second']} "
                    f"(max {worst['max_ms']:.0f} ms)"]
        if row["broker_log_bytes"] > 100_000:
            row["notes"] = row["notes"] + [f"broker log +{row['broker_log_bytes'] / 1e6:.1f} MB"]
        bcpu = row["broker_cpu_s"] or 0.0
        if row["host_busy_cpu_s"] is not None:
            row["others_cpu_s"] = row["host_busy_cpu_s"] - bcpu - row["client_cpu_s"]
        rows.append(row)
    return {"phases": rows, "victim_undelivered": victim["undelivered"],
            "victim_queue_full": victim["queue_full"]}


def compress(seconds: List[int]) -> str:
    """[0,1,2,5,7,8] -> '0-2,5,7-8'."""
    out = []
    for s in seconds:
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in out)


def warn_summary(lines: List[str]) -> Dict[str, int]:
    """Counts of the broker's WARN/ERROR messages (peer and numbers stripped)."""
    out: Dict[str, int] = {}
    for line in lines:
        if " WARN " not in line and " ERROR " not in line:
            continue
        msg = line.split(": ", 1)[-1]
        msg = msg.split(" peer=")[0].split(" size=")[0]
        msg = "".join("#" if c.isdigit() else c for c in msg)[:160]
        out[msg] = out.get(msg, 0) + 1
    return out


def print_table(report: dict) -> str:
    head = ("| phase | victim p50 ms | p99 ms | p99.9 ms | max ms | p99 vs baseline | "
            "broker max RSS MiB | broker CPU s | closures by reason | notes |")
    lines = [head, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for r in report["phases"]:
        v = r["victim"]
        clos = ", ".join(f"{k} {n}" for k, n in r["closures"].items() if n) or "-"
        notes = "; ".join(r["notes"] + [f"FAIL: {f}" for f in r["failures"]])
        ratio = r["victim_p99_vs_baseline"]
        lines.append(f"| {r['phase']} | {fmt(v['p50'])} | {fmt(v['p99'])} | {fmt(v['p99.9'])} | "
                     f"{fmt(v['max'])} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{fmt(r['broker_max_rss_mib'], 1)} | {fmt(r['broker_cpu_s'], 2)} | {clos} | "
                     f"{notes} |")
    return "\n".join(lines)


def default_out() -> Path:
    # bench/results/ holds no committed results (only git-ignored run directories), so results
    # of this script go to /tmp unless --out says otherwise.
    return Path(f"/tmp/abuse-{time.strftime('%Y%m%d-%H%M%S')}.json")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 s phases instead of 20 s")
    parser.add_argument("--phase-seconds", type=float, help="minimum length of each phase")
    parser.add_argument("--binary", default=str(DEFAULT_BINARY))
    parser.add_argument("--out", help="JSON report (default /tmp/abuse-<timestamp>.json)")
    parser.add_argument("--idle-conns", type=int, default=10000)
    parser.add_argument("--slowloris", type=int, default=1000)
    parser.add_argument("--fetchers", type=int, default=50)
    parser.add_argument("--fill-bytes", type=int, default=50 * 1000 * 1000)
    parser.add_argument("--metadata-topics", type=int, default=100000)
    parser.add_argument("--metadata-pause", type=float, default=0.5,
                        help="seconds between the Metadata 100k requests of phase 4")
    parser.add_argument("--keep", action="store_true", help="keep the broker's data dir")
    args = parser.parse_args()
    if args.phase_seconds is None:
        args.phase_seconds = 8.0 if args.quick else 20.0
    out_path = Path(args.out) if args.out else default_out()

    # Descriptors: the idle connections here, and as many in the broker (which inherits this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle_conns + 2000
    new_soft = want if hard == resource.RLIM_INFINITY else min(max(soft, want), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, new_soft), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        print(f"note: RLIMIT_NOFILE hard limit {hard} < {want}: fewer idle connections will open",
              flush=True)

    binary = Path(args.binary)
    if not binary.exists():
        raise SystemExit(f"{binary} missing: cp target/release/riptide {binary}")
    workdir = Path(tempfile.mkdtemp(prefix="abuse-bench-", dir="/tmp"))
    broker = Broker(binary, workdir)
    commit = git_commit()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    print(f"abuse bench {started}, commit {commit}, phases >= {args.phase_seconds:.0f} s", flush=True)
    print("limits: " + ", ".join(f"{k}={v}" for k, v in LIMITS.items()) + ", auto-create-topics=false",
          flush=True)
    t_run = time.monotonic()
    broker.start()
    print(f"broker: {' '.join(broker.command)}\nbroker log: {broker.log_path}", flush=True)
    ctx = mp.get_context("spawn")
    victim_conn, child_conn = ctx.Pipe()
    victim = None
    sampler = None
    report: dict = {}
    exit_code = 0
    try:
        fill = create_topics_and_fill(broker.bootstrap, args.fill_bytes)
        print(f"pre-filled {FILL_TOPIC}: {fill['bytes'] / 1e6:.0f} MB in {fill['seconds']:.1f} s",
              flush=True)
        victim = ctx.Process(target=victim_main, args=(broker.bootstrap, VICTIM_TOPIC, child_conn),
                             daemon=True)
        victim.start()
        if not victim_conn.poll(60):
            raise SystemExit("victim producer not ready in 60 s")
        msg = victim_conn.recv()
        if msg[0] != "ready":
            raise SystemExit(f"victim: {msg}")
        # The attacks run in this process below the broker's and the victim's priority: a real
        # attacker's CPU is not the broker's host's, and this host has two cores for everything.
        os.nice(ATTACKER_NICE)
        time.sleep(2.0)  # warm-up, not measured
        sampler = Sampler(broker)
        sampler.start()
        run = Run(args, broker, sampler, victim.pid)
        for phase in (phase_baseline, phase_idle, phase_slowloris, phase_fetch_no_read,
                      phase_huge, phase_memory_hog):
            phase(run)
            time.sleep(0.5)
        time.sleep(3.0)  # settle: does the broker give memory back?
        rss_after = proc_rss_kib(broker.pid) if broker.alive() else None
        victim_conn.send("stop")
        if not victim_conn.poll(60):
            raise SystemExit("victim did not report")
        msg = victim_conn.recv()
        if msg[0] != "done":
            raise SystemExit(f"victim: {msg}")
        sampler.halt.set()
        sampler.join(5)
        report = summarize(run, msg[1])
        failures = [f"{r['phase']}: {f}" for r in report["phases"] for f in r["failures"]]
        # Not limit failures, but what the victim paid: p99 above 10x the baseline's.
        warnings = [f"{r['phase']}: victim p99 {r['victim']['p99']:.1f} ms = "
                    f"{r['victim_p99_vs_baseline']:.1f}x baseline (max {r['victim']['max']:.0f} ms)"
                    for r in report["phases"][1:]
                    if (r["victim_p99_vs_baseline"] or 0) > WARN_P99_RATIO]
        report.update({
            "schema": "riptide-abuse-bench/1", "started": started, "commit": commit,
            "command": " ".join([".venv/bin/python", "bench/abuse/abuse_bench.py"] + sys.argv[1:]),
            "quick": args.quick, "phase_seconds": args.phase_seconds,
            "broker_command": broker.command, "limits": LIMITS, "broker_starts": broker.starts,
            "deaths": run.deaths, "failures": failures, "ok": not failures,
            "warnings": warnings,
            "victim": {"interval_ms": VICTIM_INTERVAL_S * 1000, "record_bytes": VICTIM_RECORD_BYTES,
                       "config": "acks=1 linger.ms=0 socket.nagle.disable=true"},
            "fill": fill, "wall_seconds": time.monotonic() - t_run,
            "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                     "loadavg": open("/proc/loadavg").read().split()[:3]},
            "broker_log": str(broker.log_path),
            "broker_rss_mib_3s_after_last_phase": None if rss_after is None else rss_after / 1024,
        })
        table = print_table(report)
        report["table_markdown"] = table
        print("\n" + table, flush=True)
        print(f"\nvictim: undelivered at the end {report['victim_undelivered']}, "
              f"local queue full {report['victim_queue_full']}; broker RSS 3 s after the last "
              f"phase: {fmt(report['broker_rss_mib_3s_after_last_phase'], 1)} MiB", flush=True)
        print("CPU seconds per phase, broker / clients (victim + this script) / rest of the host: "
              + "; ".join(f"{r['phase']} {fmt(r['broker_cpu_s'], 1)}/{fmt(r['client_cpu_s'], 1)}/"
                          f"{fmt(r.get('others_cpu_s'), 1)}" for r in report["phases"]), flush=True)
        for r in report["phases"]:
            if r["broker_log_warnings"]:
                print(f"broker WARN/ERROR in {r['phase']}: " +
                      "; ".join(f"{n}x {m}" for m, n in r["broker_log_warnings"].items()), flush=True)
        if warnings:
            print(f"\nWARNINGS (victim p99 > {WARN_P99_RATIO}x baseline):\n  " + "\n  ".join(warnings),
                  flush=True)
        if failures:
            exit_code = 1
            print("\nFAILURES:\n  " + "\n  ".join(failures), flush=True)
            for d in run.deaths:
                print(f"\nbroker death in {d['phase']} ({d['when']}), log tail:\n{d['log_tail']}")
        else:
            print("\nOK: the broker survived every phase and every limit acted in time", flush=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2, default=str))
        print(f"JSON: {out_path}  ({report['wall_seconds']:.0f} s)", flush=True)
    finally:
        if sampler is not None:
            sampler.halt.set()
        if victim is not None and victim.is_alive():
            victim.terminate()
        broker.stop()
        if not args.keep:
            shutil.rmtree(broker.data_dir, ignore_errors=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
