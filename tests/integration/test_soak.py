"""The soak run (bench/soak/soak.py), shortened: every workload of the mixed load (producers,
a tailing group, groups joining and leaving, topic churn, retention and compaction) runs
against the real broker without an error, and the report is written."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_soak_runs_every_workload_without_errors(riptide_bin, data_root, tmp_path):
    out = tmp_path / "soak"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench/soak/soak.py"), "--duration-s", "30",
         "--sample-s", "3", "--rate", "500", "--no-flat-check", "--binary", str(riptide_bin),
         "--out", str(out), "--work-dir", str(data_root / "soak")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not report["broker_died"] and report["errors"] == 0
    totals = report["totals"]
    assert totals["produce"]["acked"] > 0 and totals["compact"]["acked"] > 0
    assert totals["tail"]["consumed"] > 0
    assert totals["admin"]["cycles"] > 0
    # A churn cycle joins a two-member group (initial rebalance delay included).
    assert totals["churn"]["cycles"] > 0
    assert (out / "samples.csv").read_text().count("\n") >= 6
