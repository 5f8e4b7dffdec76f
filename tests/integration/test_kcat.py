"""kcat (Debian's, librdkafka 2.0.2): a million messages in and out, byte for byte."""

import hashlib
import json
import subprocess

import pytest

from helpers import unique_topic

N_MESSAGES = 1_000_000

KCAT_COMMON = ["-X", "broker.address.family=v4"]


def _generate(path, n):
    """n newline-separated messages: a sequence number plus deterministic variable-length filler."""
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    h = hashlib.sha256()
    with open(path, "wb") as f:
        chunk = []
        for i in range(n):
            fill_len = 20 + (i * 7919) % 80
            start = (i * 31) % len(alphabet)
            fill = (alphabet[start:] + alphabet)[:fill_len]
            line = b"%07d:" % i + fill + b"\n"
            chunk.append(line)
            if len(chunk) == 10000:
                data = b"".join(chunk)
                f.write(data)
                h.update(data)
                chunk = []
        data = b"".join(chunk)
        f.write(data)
        h.update(data)
    return h.hexdigest()


def _run(cmd, timeout, **kwargs):
    return subprocess.run(cmd, timeout=timeout, **kwargs)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kcat_million_messages_roundtrip(broker, kcat_bin, tmp_path):
    topic = unique_topic("kcat")
    src = tmp_path / "messages.txt"
    want_sha = _generate(src, N_MESSAGES)

    # Produce from the file; the topic is auto-created by the producer's metadata request.
    prod = _run([kcat_bin, "-P", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-l", str(src),
                 *KCAT_COMMON, "-X", "linger.ms=20", "-X", "queue.buffering.max.messages=500000",
                 "-X", "message.timeout.ms=120000"],
                timeout=600, capture_output=True)
    assert prod.returncode == 0, f"kcat producer exit {prod.returncode}: {prod.stderr.decode()[-3000:]}"
    assert b"Delivery failed" not in prod.stderr, prod.stderr.decode()[-3000:]
    assert broker.alive()

    # Metadata as kcat sees it (JSON).
    meta = _run([kcat_bin, "-L", "-J", "-b", broker.bootstrap, "-t", topic, *KCAT_COMMON],
                timeout=60, capture_output=True)
    assert meta.returncode == 0, meta.stderr.decode()
    md = json.loads(meta.stdout)
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic in topics, md
    assert len(topics[topic]["partitions"]) == 1, topics[topic]
    assert topics[topic]["partitions"][0]["leader"] in {b["id"] for b in md["brokers"]}, md

    # Consume back from the beginning in assign mode (no group), exit at the end of the partition.
    out = tmp_path / "consumed.txt"
    with open(out, "wb") as f:
        cons = _run([kcat_bin, "-C", "-b", broker.bootstrap, "-t", topic, "-p", "0", "-o", "beginning",
                     "-e", "-q", "-f", "%s\n", "-c", str(N_MESSAGES + 10), *KCAT_COMMON],
                    timeout=600, stdout=f, stderr=subprocess.PIPE)
    assert cons.returncode == 0, f"kcat consumer exit {cons.returncode}: {cons.stderr.decode()[-3000:]}"

    with open(out, "rb") as f:
        got = f.read()
    lines = got.count(b"\n")
    assert lines == N_MESSAGES, f"consumed {lines} messages, produced {N_MESSAGES}"
    got_sha = hashlib.sha256(got).hexdigest()
    if got_sha != want_sha:
        with open(src, "rb") as f:
            want_lines = f.read().split(b"\n")
        got_lines = got.split(b"\n")
        first = next(i for i, (a, b) in enumerate(zip(want_lines, got_lines)) if a != b)
        pytest.fail(f"content differs first at message {first}: produced {want_lines[first]!r}, "
                    f"consumed {got_lines[first]!r}")
