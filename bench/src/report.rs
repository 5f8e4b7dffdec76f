//! What a run reports: the per-second lines, the final summary, the JSON document and the
//! HdrHistogram percentile-distribution (`.hgrm`) files.
//!
//! Units: latencies in milliseconds, throughput in messages per second and MB/s with
//! MB = 10^6 bytes. Produce bytes are record payload (value + key); consume bytes are record
//! batch bytes as stored (headers included).

use crate::hist::{LatencyHistogram, LatencySummary};
use crate::host::HostFacts;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Bumped when a field changes meaning or disappears (adding fields keeps the version).
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool: String,
    pub label: Option<String>,
    /// `produce`, `consume` or `e2e`.
    pub command: String,
    pub argv: Vec<String>,
    pub parameters: Parameters,
    pub git_revision: String,
    pub host: HostFacts,
    pub started_at_unix_s: f64,
    /// Length of the measurement window (after warm-up).
    pub measured_duration_s: f64,
    pub produce: Option<ProduceResult>,
    pub consume: Option<ConsumeResult>,
    pub e2e: Option<E2eResult>,
    /// One point per second of the run, warm-up included (and marked).
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parameters {
    pub client: String,
    pub bootstrap: String,
    pub topic: String,
    pub partitions: usize,
    pub producers: usize,
    pub consumers: usize,
    pub message_size_bytes: usize,
    pub keys: String,
    pub batch_size_bytes: usize,
    /// Records in a full batch of the template.
    pub records_per_batch: usize,
    pub linger_ms: f64,
    pub acks: String,
    pub compression: String,
    /// 0 = as fast as possible.
    pub rate_msgs_per_s: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub cores: Option<String>,
    pub max_in_flight_requests: usize,
    pub max_request_size_bytes: usize,
    pub produce_api_version: Option<i16>,
    pub fetch_api_version: Option<i16>,
    pub topic_configs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceResult {
    /// Acknowledged messages of the window.
    pub msgs: u64,
    pub bytes: u64,
    /// Messages in batches the broker rejected, or lost with a connection.
    pub errors: u64,
    /// Messages still unacknowledged after the drain (counted in the latencies as a lower bound).
    pub timed_out_msgs: u64,
    /// Of those, messages never sent because the client was backlogged.
    pub unsent_msgs: u64,
    pub requests: u64,
    pub throughput_msgs_per_s: f64,
    pub throughput_mb_per_s: f64,
    pub target_rate_msgs_per_s: Option<f64>,
    /// Messages handed to requests per second of the window.
    pub achieved_rate_msgs_per_s: f64,
    /// How far the acknowledged rate fell short of the target, in percent (0 = on target).
    pub rate_shortfall_pct: Option<f64>,
    pub max_schedule_lag_ms: f64,
    /// Send -> ack; `None` with acks=0.
    pub latency: Option<LatencySummary>,
    /// What latencies are measured from.
    pub latency_origin: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumeResult {
    pub msgs: u64,
    pub bytes: u64,
    pub errors: u64,
    pub fetches: u64,
    pub throughput_msgs_per_s: f64,
    pub throughput_mb_per_s: f64,
    pub fetch_latency: LatencySummary,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct E2eResult {
    /// Producer timestamp -> consumer receipt, same host clock (CLOCK_MONOTONIC).
    pub latency: LatencySummary,
    /// Acknowledged messages of the window never seen by a consumer.
    pub missing_msgs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct TimelinePoint {
    pub second: u64,
    pub warmup: bool,
    pub produce_msgs_per_s: f64,
    pub produce_mb_per_s: f64,
    pub produce_p50_ms: f64,
    pub produce_p99_ms: f64,
    pub produce_p99_9_ms: f64,
    pub produce_max_ms: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mb_per_s: f64,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    pub e2e_p99_9_ms: f64,
    pub e2e_max_ms: f64,
    pub errors: u64,
}

pub fn mb(bytes: f64) -> f64 {
    bytes / 1e6
}

/// One progress line per second.
pub fn format_progress(
    point: &TimelinePoint,
    total_s: u64,
    produces: bool,
    consumes: bool,
    e2e: bool,
) -> String {
    let mut line = format!(
        "[{:>4}s/{}s{}]",
        point.second,
        total_s,
        if point.warmup { " warmup" } else { "" }
    );
    if produces {
        line += &format!(
            " produce {:>11} msg/s {:>8.1} MB/s  p50 {} p99 {} p99.9 {} max {} ms",
            group_digits(point.produce_msgs_per_s.round() as u64),
            point.produce_mb_per_s,
            short_ms(point.produce_p50_ms),
            short_ms(point.produce_p99_ms),
            short_ms(point.produce_p99_9_ms),
            short_ms(point.produce_max_ms),
        );
    }
    if consumes {
        if produces {
            line += " |";
        }
        line += &format!(
            " consume {:>11} msg/s {:>8.1} MB/s",
            group_digits(point.consume_msgs_per_s.round() as u64),
            point.consume_mb_per_s
        );
    }
    if e2e {
        line += &format!(
            " | e2e p50 {} p99 {} p99.9 {} max {} ms",
            short_ms(point.e2e_p50_ms),
            short_ms(point.e2e_p99_ms),
            short_ms(point.e2e_p99_9_ms),
            short_ms(point.e2e_max_ms),
        );
    }
    if point.errors > 0 {
        line += &format!(" | errors {}", point.errors);
    }
    line
}

fn short_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

pub fn group_digits(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::new();
    for (index, ch) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The end-of-run summary, for people.
pub fn format_summary(report: &Report) -> String {
    let mut out = String::new();
    let p = &report.parameters;
    out += &format!(
        "\n== riptide-bench {}{} — {} s measured after {} s warm-up ==\n",
        report.command,
        report
            .label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default(),
        round2(report.measured_duration_s),
        p.warmup_s
    );
    out += &format!(
        "topic {} × {} partitions, {} B messages, keys {}, batch {} B ({} records), linger {} ms, \
         acks {}, compression {}, rate {}, client {}\n",
        p.topic,
        p.partitions,
        p.message_size_bytes,
        p.keys,
        p.batch_size_bytes,
        p.records_per_batch,
        p.linger_ms,
        p.acks,
        p.compression,
        if p.rate_msgs_per_s > 0.0 {
            format!("{} msg/s", group_digits(p.rate_msgs_per_s as u64))
        } else {
            "max".to_string()
        },
        p.client
    );
    let header = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "latency ms", "p50", "p90", "p99", "p99.9", "p99.99", "max", "mean"
    );
    let row = |name: &str, s: &LatencySummary| {
        format!(
            "{:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}\n",
            name, s.p50_ms, s.p90_ms, s.p99_ms, s.p99_9_ms, s.p99_99_ms, s.max_ms, s.mean_ms
        )
    };
    if let Some(produce) = &report.produce {
        out += &format!(
            "produce: {} msg/s, {:.1} MB/s; {} msgs, {} bytes, {} requests, {} errors, {} timed out ({} never sent)\n",
            group_digits(produce.throughput_msgs_per_s.round() as u64),
            produce.throughput_mb_per_s,
            group_digits(produce.msgs),
            group_digits(produce.bytes),
            group_digits(produce.requests),
            produce.errors,
            produce.timed_out_msgs,
            produce.unsent_msgs,
        );
        if let (Some(target), Some(shortfall)) =
            (produce.target_rate_msgs_per_s, produce.rate_shortfall_pct)
        {
            out += &format!(
                "  target {} msg/s, sent {} msg/s, acked {} msg/s: {}; max lag behind schedule {:.3} ms\n",
                group_digits(target as u64),
                group_digits(produce.achieved_rate_msgs_per_s.round() as u64),
                group_digits(produce.throughput_msgs_per_s.round() as u64),
                if shortfall > 0.05 {
                    format!("{shortfall:.2}% SHORT of target")
                } else {
                    "on target".to_string()
                },
                produce.max_schedule_lag_ms
            );
        }
    }
    if let Some(consume) = &report.consume {
        out += &format!(
            "consume: {} msg/s, {:.1} MB/s; {} msgs, {} bytes, {} fetches, {} errors\n",
            group_digits(consume.throughput_msgs_per_s.round() as u64),
            consume.throughput_mb_per_s,
            group_digits(consume.msgs),
            group_digits(consume.bytes),
            consume.fetches,
            consume.errors
        );
    }
    out += &header;
    out.push('\n');
    if let Some(latency) = report.produce.as_ref().and_then(|p| p.latency.as_ref()) {
        out += &row("produce", latency);
    }
    if let Some(e2e) = &report.e2e {
        out += &row("e2e", &e2e.latency);
    }
    if let Some(consume) = &report.consume {
        out += &row("fetch", &consume.fetch_latency);
    }
    if let Some(produce) = &report.produce {
        if produce.latency.is_some() {
            out += &format!(
                "(produce latency measured from {})\n",
                produce.latency_origin
            );
        }
    }
    if let Some(e2e) = &report.e2e {
        out += &format!(
            "(e2e: {} samples, {} acknowledged messages not seen by a consumer)\n",
            e2e.latency.count, e2e.missing_msgs
        );
    }
    out
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub fn write_json(report: &Report, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Checks that a JSON document has the fields and types of a [`Report`] (used by tests and by
/// anyone post-processing results).
pub fn check_schema(value: &serde_json::Value) -> Result<()> {
    use serde_json::Value;
    let object = value.as_object().context("report is not an object")?;
    for key in [
        "schema_version",
        "tool",
        "command",
        "argv",
        "parameters",
        "git_revision",
        "host",
        "started_at_unix_s",
        "measured_duration_s",
        "produce",
        "consume",
        "e2e",
        "timeline",
    ] {
        if !object.contains_key(key) {
            bail!("missing key {key}");
        }
    }
    if object["schema_version"] != SCHEMA_VERSION {
        bail!("unexpected schema_version {}", object["schema_version"]);
    }
    for key in ["cpu_model", "cpu_count", "kernel", "allowed_cpus"] {
        if object["host"].get(key).is_none() {
            bail!("host.{key} missing");
        }
    }
    for key in [
        "message_size_bytes",
        "batch_size_bytes",
        "acks",
        "rate_msgs_per_s",
        "duration_s",
        "warmup_s",
        "partitions",
        "compression",
        "keys",
    ] {
        if object["parameters"].get(key).is_none() {
            bail!("parameters.{key} missing");
        }
    }
    let check_latency = |value: &Value, at: &str| -> Result<()> {
        for key in [
            "count",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "p99_9_ms",
            "p99_99_ms",
            "max_ms",
            "mean_ms",
        ] {
            if !value.get(key).is_some_and(Value::is_number) {
                bail!("{at}.{key} missing or not a number");
            }
        }
        Ok(())
    };
    if let Some(produce) = object["produce"].as_object() {
        for key in [
            "msgs",
            "bytes",
            "errors",
            "throughput_msgs_per_s",
            "throughput_mb_per_s",
            "rate_shortfall_pct",
            "timed_out_msgs",
        ] {
            if !produce.contains_key(key) {
                bail!("produce.{key} missing");
            }
        }
        if !produce["latency"].is_null() {
            check_latency(&produce["latency"], "produce.latency")?;
        }
    }
    if let Some(consume) = object["consume"].as_object() {
        for key in [
            "msgs",
            "bytes",
            "errors",
            "throughput_msgs_per_s",
            "throughput_mb_per_s",
        ] {
            if !consume.contains_key(key) {
                bail!("consume.{key} missing");
            }
        }
        check_latency(&consume["fetch_latency"], "consume.fetch_latency")?;
    }
    if let Some(e2e) = object["e2e"].as_object() {
        check_latency(&e2e["latency"], "e2e.latency")?;
    }
    let timeline = object["timeline"]
        .as_array()
        .context("timeline is not an array")?;
    for point in timeline {
        for key in [
            "second",
            "warmup",
            "produce_msgs_per_s",
            "produce_p99_ms",
            "errors",
        ] {
            if point.get(key).is_none() {
                bail!("timeline point without {key}");
            }
        }
    }
    Ok(())
}

/// Writes `histogram` in HdrHistogram's percentile-distribution format (values in ms, five
/// ticks per half-distance), which HdrHistogram's plotter and other tools read.
pub fn write_hgrm(histogram: &LatencyHistogram, out: &mut impl Write) -> std::io::Result<()> {
    const SCALE_NS_PER_MS: f64 = 1e6;
    let h = histogram.inner();
    writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    )?;
    let mut total = 0u64;
    if !h.is_empty() {
        for step in h.iter_quantiles(5) {
            total += step.count_since_last_iteration();
            let value = step.value_iterated_to() as f64 / SCALE_NS_PER_MS;
            let quantile = step.quantile_iterated_to();
            if quantile < 1.0 {
                writeln!(
                    out,
                    "{value:12.3} {quantile:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - quantile)
                )?;
            } else {
                writeln!(out, "{value:12.3} {quantile:2.12} {total:10}")?;
            }
        }
    }
    let (mean, stddev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (
            h.mean() / SCALE_NS_PER_MS,
            h.stdev() / SCALE_NS_PER_MS,
            h.max() as f64 / SCALE_NS_PER_MS,
        )
    };
    writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stddev:12.3}]"
    )?;
    writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    )?;
    // Sub-buckets per bucket: the power of two that resolves the significant digits.
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets
    )?;
    Ok(())
}

pub fn write_hgrm_file(histogram: &LatencyHistogram, path: &Path) -> Result<()> {
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    write_hgrm(histogram, &mut file)?;
    file.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_has_the_hdrhistogram_layout() {
        let mut h = LatencyHistogram::new();
        for us in 1..=1000u64 {
            h.record_ns(us * 1_000);
        }
        let mut out = Vec::new();
        write_hgrm(&h, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First data line: the minimum at percentile 0.
        let first: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(first[0], "0.001");
        assert_eq!(first[1], "0.000000000000");
        assert_eq!(first[2], "1");
        assert_eq!(first[3], "1.00");
        // Last data line: 100% with the total count and no 1/(1-p) column.
        let data: Vec<&&str> = lines.iter().filter(|l| !l.starts_with('#')).collect();
        let last: Vec<&str> = data.last().unwrap().split_whitespace().collect();
        assert_eq!(last.len(), 3, "{last:?}");
        assert_eq!(last[1], "1.000000000000");
        assert_eq!(last[2], "1000");
        assert!((last[0].parse::<f64>().unwrap() - 1.0).abs() < 0.001);
        // Percentiles and counts never decrease.
        let mut previous = (0.0f64, 0u64);
        for line in data.iter().skip(2) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let percentile: f64 = fields[1].parse().unwrap();
            let count: u64 = fields[2].parse().unwrap();
            assert!(percentile >= previous.0 && count >= previous.1, "{line}");
            previous = (percentile, count);
        }
        assert!(
            text.contains("#[Mean    =        0.501, StdDeviation   =        0.289]"),
            "{text}"
        );
        assert!(
            text.contains("#[Max     =        1.000, Total count    =         1000]"),
            "{text}"
        );
        assert!(text.contains("SubBuckets     =         2048]"), "{text}");
    }

    #[test]
    fn progress_and_digits() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(100), "100");
        let line = format_progress(
            &TimelinePoint {
                second: 3,
                warmup: true,
                produce_msgs_per_s: 1_500_000.0,
                produce_mb_per_s: 150.0,
                produce_p99_ms: 1.25,
                ..TimelinePoint::default()
            },
            12,
            true,
            false,
            false,
        );
        assert!(
            line.starts_with("[   3s/12s warmup] produce   1,500,000 msg/s"),
            "{line}"
        );
        assert!(line.contains("p99 1.250"), "{line}");
    }
}
