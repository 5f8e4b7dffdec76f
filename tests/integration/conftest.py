"""Fixtures that run the real broker binary.

* `broker`          a fresh broker (2 shards) on a free port with its own data dir.
* `broker_factory`  start more / differently configured brokers: broker_factory("--num-partitions", "3"),
                    broker_factory(config={...}) (TOML via --config), broker_factory(start=False).
* `cluster_factory` a multi-node cluster (cluster.py): cluster_factory(voters=3, brokers=1,
                    extra_args=[...]) builds it (not started); `.start()` starts every node and
                    waits until the cluster formed.

Every broker (and cluster node) a test started is stopped at teardown with SIGTERM, and the teardown asserts it
exited with code 0 within 10 s. A failing test (or teardown) gets each broker's log attached to
its report. Data dirs are removed after passing tests (unless RIPTIDE_KEEP_DATA=1) and kept
after failures.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from riptide_broker import BrokerError, BrokerProcess, default_binary  # noqa: E402


def _fs_type(path: Path) -> str:
    """File system type of the mount holding `path` (from /proc/mounts)."""
    best, fstype = "", ""
    try:
        path = path.resolve()
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3:
                    mnt = parts[1]
                    if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                        best, fstype = mnt, parts[2]
    except OSError:
        pass
    return fstype


@pytest.fixture(scope="session")
def riptide_bin() -> Path:
    binary = default_binary()
    if not binary.exists():
        if os.environ.get("RIPTIDE_BIN"):
            pytest.fail(f"RIPTIDE_BIN={binary} does not exist", pytrace=False)
        pytest.skip("no broker binary: run `cargo build --release --bins` or set RIPTIDE_BIN")
    return binary


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Where broker data dirs live. The broker writes with O_DIRECT, which tmpfs refuses, so
    fall back to target/ in the repository when the temp dir is a tmpfs."""
    env = os.environ.get("RIPTIDE_TEST_DATA_ROOT")
    if env:
        root = Path(env)
    else:
        root = tmp_path_factory.getbasetemp()
        if _fs_type(root) in ("tmpfs", "ramfs"):
            root = Path(__file__).resolve().parents[2] / "target" / "it-data" / str(os.getpid())
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.failed:
        for c in getattr(item, "_riptide_clusters", []):
            rep.sections.append((f"riptide cluster ({rep.when})", c.describe()))
        for b in getattr(item, "_riptide_brokers", []):
            rep.sections.append((f"riptide log: {b.name} ({rep.when})", b.log_tail(150)))


@pytest.fixture
def broker_factory(request, riptide_bin, data_root):
    brokers: list = []
    request.node._riptide_brokers = brokers
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:80]
    workdir = data_root / f"{safe}-{os.getpid()}-{id(request.node):x}"

    def make(*extra_args, name=None, config=None, start=True, **kwargs) -> BrokerProcess:
        b = BrokerProcess(workdir, name=name or f"broker{len(brokers)}", binary=riptide_bin,
                          extra_args=[str(a) for a in extra_args], config=config, **kwargs)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield make

    errors = []
    for b in brokers:
        if b.alive():
            try:
                b.stop()  # SIGTERM; asserts exit code 0 within 10 s
            except BrokerError as e:
                errors.append(str(e))
    if errors:
        pytest.fail("broker did not shut down cleanly:\n" + "\n".join(errors), pytrace=False)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and os.environ.get("RIPTIDE_KEEP_DATA") != "1":
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    return broker_factory()


@pytest.fixture(scope="session")
def kcat_bin() -> str:
    path = shutil.which("kcat")
    if not path:
        pytest.fail("kcat is not installed (scripts/setup-test-deps installs it)", pytrace=False)
    return path


@pytest.fixture
def cluster_factory(request, riptide_bin, data_root):
    """Build clusters (cluster.Cluster) whose nodes the test's report and teardown know about.

    Teardown SIGTERMs every live node at once and asserts each exits with code 0 (nodes the
    test killed or stopped itself are left alone)."""
    from cluster import Cluster

    procs = getattr(request.node, "_riptide_brokers", None)
    if procs is None:
        procs = []
        request.node._riptide_brokers = procs
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in request.node.name)[:80]
    clusters: list = []
    request.node._riptide_clusters = clusters

    def make(voters: int = 3, brokers: int = 0, **kwargs) -> Cluster:
        workdir = data_root / f"{safe}-{os.getpid()}-{id(request.node):x}-c{len(clusters)}"
        c = Cluster(workdir, riptide_bin, voters=voters, brokers=brokers,
                    register=procs.append, **kwargs)
        clusters.append(c)
        return c

    yield make

    errors = []
    for c in clusters:
        errors.extend(c.stop_all())
    if errors:
        pytest.fail("cluster node did not shut down cleanly:\n" + "\n".join(errors), pytrace=False)
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.passed and os.environ.get("RIPTIDE_KEEP_DATA") != "1":
        for c in clusters:
            shutil.rmtree(c.workdir, ignore_errors=True)
