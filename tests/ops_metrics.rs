//! The admin endpoint of a real broker: /metrics scraped and parsed (Prometheus/OpenMetrics
//! text), /v1/status/ready, /v1/cluster/health.

mod ops_support;

use ops_support::{http_get, ok, riptide, riptide_with_stdin, Broker};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One sample: metric name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (enough of it for these metrics): `# HELP/TYPE/EOF`
/// lines, and `name{label="value",…} value` with escaped quotes and backslashes.
fn parse(body: &str) -> (Vec<Sample>, BTreeMap<String, String>) {
    let mut samples = Vec::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} twice"
            );
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (name_and_labels, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match name_and_labels.split_once('{') {
            None => (name_and_labels.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let mut labels = BTreeMap::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => match chars.next().unwrap() {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key, value);
                }
                (name.to_string(), labels)
            }
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (samples, types)
}

fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && filter
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn count(samples: &[Sample], name: &str) -> usize {
    samples.iter().filter(|s| s.name == name).count()
}

fn wait_ready(broker: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = std::net::TcpStream::connect(broker.admin()) {
            drop(stream);
            if http_get(&broker.admin(), "/v1/status/ready").0 == 200 {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready; log:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_are_scraped_and_parsed() {
    let mut broker = Broker::start(&[], &[]);
    wait_ready(&broker);
    let bootstrap = broker.bootstrap();
    ok(riptide(&[
        "topic",
        "create",
        "metrics-t",
        "-p",
        "2",
        "-b",
        &bootstrap,
    ]));
    ok(riptide_with_stdin(
        &["topic", "produce", "metrics-t", "-p", "0", "-b", &bootstrap],
        "a\nb\nc\nd\ne\n",
    ));
    ok(riptide(&[
        "topic",
        "consume",
        "metrics-t",
        "-p",
        "0",
        "-b",
        &bootstrap,
    ]));

    let (status, body) = http_get(&broker.admin(), "/metrics");
    assert_eq!(status, 200);
    assert_eq!(body.lines().last(), Some("# EOF"));
    let (samples, types) = parse(&body);

    assert_eq!(types["riptide_requests"], "counter");
    assert_eq!(types["riptide_request_latency_seconds"], "histogram");
    assert_eq!(types["riptide_partition_high_watermark"], "gauge");
    assert_eq!(sum(&samples, "riptide_shards", &[]), 2.0);
    assert_eq!(sum(&samples, "riptide_ready", &[]), 1.0);

    // Requests per API, with a latency histogram consistent with the counter.
    for api in [
        "Produce",
        "Fetch",
        "CreateTopics",
        "Metadata",
        "ApiVersions",
        "ListOffsets",
    ] {
        let requests = sum(&samples, "riptide_requests_total", &[("api", api)]);
        assert!(requests >= 1.0, "{api}: {requests}\n{body}");
        let count = sum(
            &samples,
            "riptide_request_latency_seconds_count",
            &[("api", api)],
        );
        assert_eq!(count, requests, "{api} histogram count");
        let infinite = sum(
            &samples,
            "riptide_request_latency_seconds_bucket",
            &[("api", api), ("le", "+Inf")],
        );
        assert_eq!(infinite, requests, "{api} +Inf bucket");
    }
    for shard in ["0", "1"] {
        let mut buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| {
                s.name == "riptide_request_latency_seconds_bucket"
                    && s.labels["shard"] == shard
                    && s.labels["api"] == "ApiVersions"
            })
            .map(|s| {
                (
                    s.labels["le"].parse::<f64>().unwrap_or(f64::INFINITY),
                    s.value,
                )
            })
            .collect();
        buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "cumulative buckets: {buckets:?}"
        );
    }

    // Per shard: connections, bytes, I/O.
    assert_eq!(count(&samples, "riptide_connections"), 2);
    assert!(sum(&samples, "riptide_connections_accepted_total", &[]) >= 3.0);
    assert!(sum(&samples, "riptide_bytes_received_total", &[]) > 0.0);
    assert!(sum(&samples, "riptide_bytes_sent_total", &[]) > 0.0);
    assert!(
        sum(&samples, "riptide_io_writes_total", &[]) >= 1.0,
        "{body}"
    );
    assert!(sum(&samples, "riptide_io_written_bytes_total", &[]) >= 4096.0);
    for name in [
        "riptide_fsyncs_total",
        "riptide_batch_cache_hits_total",
        "riptide_io_queue_depth",
        "riptide_io_in_flight",
    ] {
        assert_eq!(count(&samples, name), 2, "{name} per shard");
    }
    assert_eq!(count(&samples, "riptide_shard_heartbeat_age_seconds"), 2);

    // Per partition.
    let p0 = [("topic", "metrics-t"), ("partition", "0")];
    let p1 = [("topic", "metrics-t"), ("partition", "1")];
    assert_eq!(sum(&samples, "riptide_partition_log_end_offset", &p0), 5.0);
    assert_eq!(sum(&samples, "riptide_partition_high_watermark", &p0), 5.0);
    assert_eq!(
        sum(&samples, "riptide_partition_log_start_offset", &p0),
        0.0
    );
    assert!(sum(&samples, "riptide_partition_size_bytes", &p0) > 0.0);
    assert_eq!(sum(&samples, "riptide_partition_high_watermark", &p1), 0.0);
    assert_eq!(sum(&samples, "riptide_partition_failed", &p0), 0.0);
    // A lone replica leads its partitions, fully in sync.
    assert_eq!(sum(&samples, "riptide_partition_leader", &p0), 1.0);
    assert_eq!(sum(&samples, "riptide_partition_replicas", &p1), 1.0);
    assert_eq!(
        sum(&samples, "riptide_partition_in_sync_replicas", &p1),
        1.0
    );

    // Counters only grow between scrapes.
    let (_, again) = http_get(&broker.admin(), "/metrics");
    let (later, _) = parse(&again);
    assert!(
        sum(&later, "riptide_requests_total", &[]) >= sum(&samples, "riptide_requests_total", &[])
    );

    assert!(broker.stop().success(), "log:\n{}", broker.log());
}

#[test]
fn ready_health_and_unknown_paths() {
    let mut broker = Broker::start(&[], &[]);
    wait_ready(&broker);
    let (status, body) = http_get(&broker.admin(), "/v1/status/ready");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ready"
    );

    ok(riptide(&[
        "topic",
        "create",
        "health-t",
        "-p",
        "3",
        "-b",
        &broker.bootstrap(),
    ]));
    let (status, body) = http_get(&broker.admin(), "/v1/cluster/health");
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["is_healthy"], true, "{health:#}");
    assert_eq!(health["shards"].as_array().unwrap().len(), 2);
    assert_eq!(health["partitions"], 3);
    assert_eq!(health["controller_id"], 0);
    assert_eq!(health["failed_partitions"].as_array().unwrap().len(), 0);

    assert_eq!(http_get(&broker.admin(), "/nope").0, 404);
    assert!(broker.stop().success());
}

#[test]
fn a_taken_admin_port_fails_start_up_clearly() {
    let mut first = Broker::start(&[], &[]);
    let taken = first.admin();
    let mut second = Broker::spawn(&["--admin-listen", &taken], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.child.as_mut().unwrap().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "second broker kept running; log:\n{}",
            second.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    second.child = None;
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("cannot listen on admin_listen") && log.contains(&taken),
        "{log}"
    );
    assert!(first.stop().success());
}
