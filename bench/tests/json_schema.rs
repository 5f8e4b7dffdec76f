//! The JSON report: every documented field is present, typed, and survives a round trip.

use clap::Parser;
use riptide_bench::cli::{Cli, Mode};
use riptide_bench::engine::Stats;
use riptide_bench::hist::Window;
use riptide_bench::report::{check_schema, Report, TimelinePoint};
use riptide_bench::run::{build_report, Outcome};

fn outcome(rate_msgs_per_s: f64) -> Outcome {
    let mut stats = Stats::default();
    for us in 1..=1000u64 {
        stats.produce.record_ns(us * 1_000);
        stats.e2e.record_ns(us * 2_000);
        stats.fetch.record_ns(us * 500);
    }
    stats.counters.produced_msgs = 9_000;
    stats.counters.produced_bytes = 9_000 * 100;
    stats.counters.sent_msgs = 9_500;
    stats.counters.consumed_msgs = 8_990;
    stats.counters.consumed_bytes = 1_000_000;
    stats.counters.e2e_msgs = 8_990;
    let _ = rate_msgs_per_s;
    Outcome {
        stats,
        timeline: vec![
            TimelinePoint {
                second: 1,
                warmup: true,
                ..TimelinePoint::default()
            },
            TimelinePoint {
                second: 2,
                produce_msgs_per_s: 9_000.0,
                ..TimelinePoint::default()
            },
        ],
        layout_partitions: 3,
        records_per_batch: 148,
        produce_version: Some(8),
        fetch_version: Some(12),
        window: Window {
            start_ns: 0,
            warmup_end_ns: 1_000_000_000,
            end_ns: 2_000_000_000,
        },
    }
}

fn report_for(argv: &[&str]) -> Report {
    let cli = Cli::parse_from(argv);
    let args = cli.command.args().unwrap().clone();
    let mode = cli.command.mode().unwrap();
    build_report(
        mode,
        &args,
        argv.iter().map(|s| s.to_string()).collect(),
        1_700_000_000.0,
        &outcome(args.rate_msgs_per_s),
    )
}

#[test]
fn e2e_report_has_every_section() {
    let report = report_for(&[
        "riptide-bench",
        "e2e",
        "--rate",
        "10000",
        "--message-size",
        "100",
        "--label",
        "W4",
    ]);
    let value = serde_json::to_value(&report).unwrap();
    check_schema(&value).unwrap();
    assert_eq!(value["command"], "e2e");
    assert_eq!(value["label"], "W4");
    assert_eq!(value["parameters"]["partitions"], 3);
    assert_eq!(value["parameters"]["acks"], "1");
    assert_eq!(value["parameters"]["produce_api_version"], 8);
    // 9,000 acked of a 10,000 msg/s target over one measured second: 10% short.
    let produce = &value["produce"];
    assert_eq!(produce["throughput_msgs_per_s"], 9_000.0);
    assert!((produce["rate_shortfall_pct"].as_f64().unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(produce["achieved_rate_msgs_per_s"], 9_500.0);
    assert!((produce["throughput_mb_per_s"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(produce["latency"]["count"], 1000);
    assert!((produce["latency"]["p50_ms"].as_f64().unwrap() - 0.5).abs() < 0.001);
    assert_eq!(value["e2e"]["missing_msgs"], 10);
    assert!((value["e2e"]["latency"]["max_ms"].as_f64().unwrap() - 2.0).abs() < 0.002);
    assert!(value["host"]["cpu_count"].as_u64().unwrap() >= 1);
    assert_eq!(value["timeline"].as_array().unwrap().len(), 2);
    // Round trip through text.
    let text = serde_json::to_string_pretty(&report).unwrap();
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back.parameters.rate_msgs_per_s, 10_000.0);
}

#[test]
fn produce_only_and_acks_zero_reports() {
    let report = report_for(&["riptide-bench", "produce", "--acks", "0"]);
    let value = serde_json::to_value(&report).unwrap();
    check_schema(&value).unwrap();
    assert!(value["consume"].is_null());
    assert!(value["e2e"].is_null());
    assert!(
        value["produce"]["latency"].is_null(),
        "acks=0 has no produce latency"
    );
    assert!(
        value["produce"]["rate_shortfall_pct"].is_null(),
        "no target in max-rate mode"
    );
}

#[test]
fn schema_check_rejects_missing_fields() {
    let report = report_for(&["riptide-bench", "consume"]);
    let mut value = serde_json::to_value(&report).unwrap();
    check_schema(&value).unwrap();
    value["consume"]
        .as_object_mut()
        .unwrap()
        .remove("throughput_mb_per_s");
    assert!(check_schema(&value).is_err());
    let mut value = serde_json::to_value(&report).unwrap();
    value.as_object_mut().unwrap().remove("host");
    assert!(check_schema(&value).is_err());
    let _ = Mode::Consume;
}
