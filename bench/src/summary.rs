//! The table of a `bench/run.sh` results directory: each workload's headline figure, the
//! baseline measured in the same run (fio on the same disk, or another workload), their ratio,
//! and the goal the figure is held to. Goals are reported, never asserted.

use crate::report::{group_digits, Report};
use anyhow::{Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// One row of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub goal: String,
    /// `PASS`, `MISS` or `-` (no goal / no data).
    pub status: String,
    /// How busy the broker's core was and how long the broker waited for it during the run.
    pub broker_core: String,
}

/// What fio measured, from its JSON output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FioFigures {
    pub write_mb_per_s: f64,
    pub read_mb_per_s: f64,
    pub sync_p50_ms: f64,
    pub sync_p99_ms: f64,
    pub sync_p99_9_ms: f64,
    pub block_size_bytes: u64,
}

pub fn parse_fio(value: &Value) -> Option<FioFigures> {
    let job = value.get("jobs")?.get(0)?;
    let percentile = |path: &Value, key: &str| -> f64 {
        path.get("percentile")
            .and_then(|p| p.get(key))
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            / 1e6
    };
    let sync = job
        .get("sync")
        .and_then(|s| s.get("lat_ns"))
        .cloned()
        .unwrap_or(Value::Null);
    let block_size_bytes = job
        .get("job options")
        .and_then(|o| o.get("bs"))
        .and_then(Value::as_str)
        .and_then(parse_size)
        .unwrap_or(0);
    Some(FioFigures {
        write_mb_per_s: job["write"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        read_mb_per_s: job["read"]["bw_bytes"].as_f64().unwrap_or(0.0) / 1e6,
        sync_p50_ms: percentile(&sync, "50.000000"),
        sync_p99_ms: percentile(&sync, "99.000000"),
        sync_p99_9_ms: percentile(&sync, "99.900000"),
        block_size_bytes,
    })
}

/// `64k`, `1m`, `4096` -> bytes.
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, multiplier) = match text.chars().last()? {
        'k' => (&text[..text.len() - 1], 1024),
        'm' => (&text[..text.len() - 1], 1024 * 1024),
        'g' => (&text[..text.len() - 1], 1024 * 1024 * 1024),
        _ => (&text[..], 1),
    };
    digits.parse::<u64>().ok().map(|n| n * multiplier)
}

/// What `load_dir` found in a results directory.
pub struct Loaded {
    /// Reports by label (`W1`, ...).
    pub reports: BTreeMap<String, Report>,
    /// fio baselines by kind (`write`, `fdatasync`, `read`).
    pub fio: BTreeMap<String, FioFigures>,
    /// `{on_cpu_pct, runqueue_wait_pct}` of the broker per workload id (`W1`, ...).
    pub sched: BTreeMap<String, Value>,
    /// Density figures per workload id (`W7`): `<id>-density.json` (broker footprint before
    /// and after creating the topic, per partition) and `<id>-create.json` (creation times)
    /// merged, the latter under `create`.
    pub density: BTreeMap<String, Value>,
}

/// Reads the reports (`w*.json`, keyed by their label, e.g. `W1`), fio baselines
/// (`fio-write.json`, `fio-fdatasync.json`, `fio-read.json`) and broker scheduling figures
/// (`<id>-broker-sched.json`) of a results directory.
pub fn load_dir(dir: &Path) -> Result<Loaded> {
    let mut reports = BTreeMap::new();
    let mut fio = BTreeMap::new();
    let mut sched = BTreeMap::new();
    let mut density: BTreeMap<String, Value> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.ends_with(".json") || name.starts_with("summary") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        if let Some(id) = name.strip_suffix("-broker-sched.json") {
            if let Ok(value) = serde_json::from_str::<Value>(&text) {
                sched.insert(id.to_uppercase(), value);
            }
            continue;
        }
        if let Some(id) = name.strip_suffix("-density.json") {
            if let Ok(Value::Object(figures)) = serde_json::from_str::<Value>(&text) {
                let entry = density
                    .entry(id.to_uppercase())
                    .or_insert_with(|| Value::Object(Default::default()));
                entry.as_object_mut().expect("an object").extend(figures);
            }
            continue;
        }
        if let Some(id) = name.strip_suffix("-create.json") {
            if let Ok(times) = serde_json::from_str::<Value>(&text) {
                let entry = density
                    .entry(id.to_uppercase())
                    .or_insert_with(|| Value::Object(Default::default()));
                entry["create"] = times;
            }
            continue;
        }
        if let Some(kind) = name
            .strip_prefix("fio-")
            .and_then(|n| n.strip_suffix(".json"))
        {
            // fio may print warnings before its JSON.
            let start = text.find('{').unwrap_or(0);
            if let Some(figures) = serde_json::from_str::<Value>(&text[start..])
                .ok()
                .as_ref()
                .and_then(parse_fio)
            {
                fio.insert(kind.to_string(), figures);
            }
        } else if let Ok(report) = serde_json::from_str::<Report>(&text) {
            let key = report
                .label
                .clone()
                .unwrap_or_else(|| name.trim_end_matches(".json").to_string())
                .to_uppercase();
            reports.insert(key, report);
        }
    }
    Ok(Loaded {
        reports,
        fio,
        sched,
        density,
    })
}

fn ratio(value: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && value.is_finite()).then(|| value / baseline)
}

fn pct(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0))
}

fn times(ratio: Option<f64>) -> String {
    ratio.map_or("-".to_string(), |r| format!("{r:.1}x"))
}

fn status(ok: Option<bool>) -> String {
    match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "-",
    }
    .to_string()
}

fn msgs(value: f64) -> String {
    format!("{} msg/s", group_digits(value.round() as u64))
}

/// Builds the rows for the standard workloads W1..W6 (missing ones are skipped).
pub fn rows(loaded: &Loaded) -> Vec<Row> {
    let (reports, fio) = (&loaded.reports, &loaded.fio);
    let mut rows: Vec<Row> = Vec::new();
    let produce_mb = |id: &str| {
        reports
            .get(id)
            .and_then(|r| r.produce.as_ref())
            .map(|p| p.throughput_mb_per_s)
    };
    if let Some(produce) = reports.get("W1").and_then(|r| r.produce.as_ref()) {
        rows.push(Row {
            broker_core: String::new(),
            workload: "W1 max produce, 100 B, acks=1, 1 partition".into(),
            metric: "throughput".into(),
            value: format!(
                "{} ({:.0} MB/s)",
                msgs(produce.throughput_msgs_per_s),
                produce.throughput_mb_per_s
            ),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: ">= 5,000,000 msg/s".into(),
            status: status(Some(produce.throughput_msgs_per_s >= 5e6)),
        });
    }
    if let Some(produce) = reports.get("W2").and_then(|r| r.produce.as_ref()) {
        let baseline = fio.get("write").map(|f| f.write_mb_per_s);
        let r = baseline.and_then(|b| ratio(produce.throughput_mb_per_s, b));
        rows.push(Row {
            broker_core: String::new(),
            workload: "W2 max produce, 1 KiB, acks=1".into(),
            metric: "throughput".into(),
            value: format!(
                "{:.0} MB/s ({})",
                produce.throughput_mb_per_s,
                msgs(produce.throughput_msgs_per_s)
            ),
            baseline: baseline.map_or("-".into(), |b| {
                format!(
                    "fio O_DIRECT write {:.0} MB/s (bs {} KiB)",
                    b,
                    fio["write"].block_size_bytes / 1024
                )
            }),
            ratio: pct(r),
            goal: ">= 80% of baseline".into(),
            status: status(r.map(|r| r >= 0.8)),
        });
    }
    if let Some(report) = reports.get("W3") {
        if let Some(latency) = report.produce.as_ref().and_then(|p| p.latency.as_ref()) {
            let produce = report.produce.as_ref().expect("checked");
            let sync = fio.get("fdatasync");
            let rate_note = format!(
                "at {} ({:.1}% short of target)",
                msgs(produce.throughput_msgs_per_s),
                produce.rate_shortfall_pct.unwrap_or(0.0)
            );
            rows.push(Row {
                broker_core: String::new(),
                workload: "W3 200k msg/s, 1 KiB, acks=all, sync flush".into(),
                metric: "produce p99".into(),
                value: format!("{:.3} ms {rate_note}", latency.p99_ms),
                baseline: sync.map_or("-".into(), |s| {
                    format!("fio write+fdatasync p99 {:.3} ms", s.sync_p99_ms)
                }),
                ratio: times(sync.and_then(|s| ratio(latency.p99_ms, s.sync_p99_ms))),
                goal: "<= 1 ms".into(),
                status: status(Some(
                    latency.p99_ms <= 1.0 && produce.rate_shortfall_pct.unwrap_or(0.0) < 1.0,
                )),
            });
            rows.push(Row {
                broker_core: String::new(),
                workload: "W3".into(),
                metric: "produce p99.9".into(),
                value: format!("{:.3} ms", latency.p99_9_ms),
                baseline: sync.map_or("-".into(), |s| {
                    format!("fio write+fdatasync p99.9 {:.3} ms", s.sync_p99_9_ms)
                }),
                ratio: times(sync.and_then(|s| ratio(latency.p99_9_ms, s.sync_p99_9_ms))),
                goal: "<= 3 ms".into(),
                status: status(Some(
                    latency.p99_9_ms <= 3.0 && produce.rate_shortfall_pct.unwrap_or(0.0) < 1.0,
                )),
            });
        }
    }
    if let Some(report) = reports.get("W4") {
        if let Some(e2e) = &report.e2e {
            let produce = report.produce.as_ref();
            let produce_p99 = produce.and_then(|p| p.latency.as_ref()).map(|l| l.p99_ms);
            rows.push(Row {
                broker_core: String::new(),
                workload: "W4 end-to-end at 200k msg/s, 1 KiB".into(),
                metric: "e2e p99".into(),
                value: format!(
                    "{:.3} ms (p50 {:.3}, p99.9 {:.3}) at {}",
                    e2e.latency.p99_ms,
                    e2e.latency.p50_ms,
                    e2e.latency.p99_9_ms,
                    produce.map_or("-".into(), |p| msgs(p.throughput_msgs_per_s))
                ),
                baseline: produce_p99
                    .map_or("-".into(), |p| format!("produce p99 same run {p:.3} ms")),
                ratio: times(produce_p99.and_then(|p| ratio(e2e.latency.p99_ms, p))),
                goal: "<= 2 ms".into(),
                status: status(Some(
                    e2e.latency.p99_ms <= 2.0
                        && produce.and_then(|p| p.rate_shortfall_pct).unwrap_or(0.0) < 1.0,
                )),
            });
        }
    }
    if let Some(produce) = reports.get("W5").and_then(|r| r.produce.as_ref()) {
        let baseline = produce_mb("W2");
        let r = baseline.and_then(|b| ratio(produce.throughput_mb_per_s, b));
        rows.push(Row {
            broker_core: String::new(),
            workload: "W5 1,000 partitions, 64 connections, 1 KiB".into(),
            metric: "throughput".into(),
            value: format!(
                "{:.0} MB/s ({})",
                produce.throughput_mb_per_s,
                msgs(produce.throughput_msgs_per_s)
            ),
            baseline: baseline.map_or("-".into(), |b| format!("W2 {b:.0} MB/s")),
            ratio: pct(r),
            goal: ">= 70% of W2".into(),
            status: status(r.map(|r| r >= 0.7)),
        });
    }
    if let Some(consume) = reports.get("W6").and_then(|r| r.consume.as_ref()) {
        let baseline = fio.get("read").map(|f| f.read_mb_per_s);
        rows.push(Row {
            broker_core: String::new(),
            workload: "W6 consume cold data (restarted broker, caches dropped)".into(),
            metric: "throughput".into(),
            value: format!(
                "{:.0} MB/s ({})",
                consume.throughput_mb_per_s,
                msgs(consume.throughput_msgs_per_s)
            ),
            baseline: baseline.map_or("-".into(), |b| format!("fio O_DIRECT read {b:.0} MB/s")),
            ratio: pct(baseline.and_then(|b| ratio(consume.throughput_mb_per_s, b))),
            goal: "-".into(),
            status: "-".into(),
        });
    }
    rows.extend(density_rows(loaded, produce_mb("W2")));
    for row in &mut rows {
        let id = row.workload.split_whitespace().next().unwrap_or("");
        row.broker_core = loaded.sched.get(id).map_or("-".into(), |s| {
            format!(
                "busy {:.0}%, waited {:.0}%",
                s["on_cpu_pct"].as_f64().unwrap_or(0.0),
                s["runqueue_wait_pct"].as_f64().unwrap_or(0.0)
            )
        });
    }
    rows
}

/// W7: creation time, footprint per partition, and produce throughput against W2.
fn density_rows(loaded: &Loaded, w2_mb_per_s: Option<f64>) -> Vec<Row> {
    let mut rows = Vec::new();
    let produce = loaded.reports.get("W7").and_then(|r| r.produce.as_ref());
    let density = loaded.density.get("W7");
    if produce.is_none() && density.is_none() {
        return rows;
    }
    let partitions = density
        .and_then(|d| d["partitions"].as_u64())
        .or_else(|| {
            loaded
                .reports
                .get("W7")
                .map(|r| r.parameters.partitions as u64)
        })
        .unwrap_or(0);
    let title = format!(
        "W7 {} partitions, 64 connections, 1 KiB",
        group_digits(partitions)
    );
    let row = |metric: &str, value: String, baseline: &str, ratio: String, goal: &str, ok| Row {
        broker_core: String::new(),
        workload: title.clone(),
        metric: metric.into(),
        value,
        baseline: baseline.into(),
        ratio,
        goal: goal.into(),
        status: status(ok),
    };
    if let Some(density) = density {
        if let Some(ready_s) = density["create"]["ready_s"].as_f64() {
            rows.push(row(
                "create until all ready",
                format!(
                    "{ready_s:.1} s (CreateTopics answered {:.1} s, leaders {:.1} s)",
                    density["create"]["answered_s"].as_f64().unwrap_or(0.0),
                    density["create"]["leaders_s"].as_f64().unwrap_or(0.0)
                ),
                "-",
                "-".into(),
                "-",
                None,
            ));
        }
        let per = &density["per_partition_created"];
        if let Some(rss_kib) = per["rss_kib"].as_f64() {
            rows.push(row(
                "broker RSS per partition (created, idle)",
                format!("{rss_kib:.1} KiB"),
                "-",
                "-".into(),
                "<= 64 KiB",
                Some(rss_kib <= 64.0),
            ));
            rows.push(row(
                "disk, fds, files per partition (created, idle)",
                format!(
                    "{:.1} KiB allocated, {:.2} fds, {:.2} files",
                    per["disk_kib"].as_f64().unwrap_or(0.0),
                    per["fds"].as_f64().unwrap_or(0.0),
                    per["files"].as_f64().unwrap_or(0.0)
                ),
                "-",
                "-".into(),
                "-",
                None,
            ));
        }
        let per = &density["per_partition_produced"];
        if let Some(rss_kib) = per["rss_kib"].as_f64() {
            rows.push(row(
                "per partition after the produce run",
                format!(
                    "RSS {rss_kib:.1} KiB, disk {:.1} KiB allocated, {:.2} fds",
                    per["disk_kib"].as_f64().unwrap_or(0.0),
                    per["fds"].as_f64().unwrap_or(0.0)
                ),
                "-",
                "-".into(),
                "-",
                None,
            ));
        }
    }
    if let Some(produce) = produce {
        let r = w2_mb_per_s.and_then(|b| ratio(produce.throughput_mb_per_s, b));
        rows.push(row(
            "throughput",
            format!(
                "{:.0} MB/s ({})",
                produce.throughput_mb_per_s,
                msgs(produce.throughput_msgs_per_s)
            ),
            &w2_mb_per_s.map_or("-".into(), |b| format!("W2 {b:.0} MB/s")),
            pct(r),
            ">= 50% of W2",
            r.map(|r| r >= 0.5),
        ));
    }
    rows
}

/// The rows as a Markdown table.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| Workload | Metric | Measured | Baseline (same run) | Ratio | Goal | Status | Broker core |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            row.workload,
            row.metric,
            row.value,
            row.baseline,
            row.ratio,
            row.goal,
            row.status,
            row.broker_core
        );
    }
    out
}

/// Summarizes a results directory, writes `summary.md` into it, and returns the text.
pub fn summarize_dir(dir: &Path) -> Result<String> {
    let loaded = load_dir(dir)?;
    if loaded.reports.is_empty() {
        anyhow::bail!("no riptide-bench reports in {}", dir.display());
    }
    let rows = rows(&loaded);
    let any = loaded.reports.values().next().expect("not empty");
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Results {}: git {}, {} ({} CPUs, kernel {}), {}\n",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or(""),
        any.git_revision,
        any.host.cpu_model,
        any.host.cpu_count,
        any.host.kernel,
        any.host.os
    );
    text += &markdown_table(&rows);
    text += "\nMB = 10^6 bytes of record payload (produce) or stored batch bytes (consume). \
             Broker core: share of the run the broker was on its CPU, and share it was runnable \
             but waiting for that CPU (other processes on the core).\n";
    // bench/run.sh with BOOTSTRAP: the broker was not ours, so not restarted or measured.
    if let Ok(host) = std::fs::read_to_string(dir.join("host.txt")) {
        if let Some(line) = host.lines().find(|l| l.starts_with("broker: external")) {
            let _ = writeln!(
                text,
                "\nAgainst an {}: W6 read data the broker already held (not restarted; \
                 cold only where its page cache was dropped).",
                line.trim_start_matches("broker: ")
            );
        }
    }
    std::fs::write(dir.join("summary.md"), &text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fio_json_is_read() {
        let value: Value = serde_json::from_str(
            r#"{"jobs":[{"job options":{"bs":"256k"},
                "write":{"bw_bytes":1500000000},
                "read":{"bw_bytes":0},
                "sync":{"lat_ns":{"percentile":{"50.000000":40000,"99.000000":120000,"99.900000":900000}}}}]}"#,
        )
        .unwrap();
        let figures = parse_fio(&value).unwrap();
        assert_eq!(figures.write_mb_per_s, 1500.0);
        assert_eq!(figures.block_size_bytes, 256 * 1024);
        assert!((figures.sync_p99_ms - 0.12).abs() < 1e-12);
        assert!((figures.sync_p99_9_ms - 0.9).abs() < 1e-12);
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("1m"), Some(1 << 20));
    }

    #[test]
    fn ratios_and_statuses() {
        assert_eq!(pct(ratio(80.0, 100.0)), "80%");
        assert_eq!(pct(ratio(1.0, 0.0)), "-");
        assert_eq!(times(ratio(3.0, 2.0)), "1.5x");
        assert_eq!(status(Some(true)), "PASS");
        assert_eq!(status(None), "-");
        let table = markdown_table(&[Row {
            workload: "W1".into(),
            metric: "m".into(),
            value: "v".into(),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "g".into(),
            status: "MISS".into(),
            broker_core: "busy 50%, waited 10%".into(),
        }]);
        assert!(table.ends_with("| W1 | m | v | - | - | g | MISS | busy 50%, waited 10% |\n"));
    }
}
