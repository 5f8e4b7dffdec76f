//! A short real run of the `riptide-bench` binary against a Riptide broker started here.
//!
//! Needs the release broker (`cargo build --release -p riptide`), found at
//! `../target/release/riptide` or through `RIPTIDE_BIN`; without it the test says so and passes.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    port: u16,
    _data: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn broker_binary() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("RIPTIDE_BIN") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/riptide");
    path.exists().then_some(path)
}

fn start_broker() -> Option<Broker> {
    let Some(binary) = broker_binary() else {
        eprintln!(
            "SKIPPED: no broker binary (build it with `cargo build --release -p riptide` or set \
             RIPTIDE_BIN)"
        );
        return None;
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = tempfile::tempdir().unwrap();
    // Newer brokers also serve an admin endpoint on a fixed port; switch it off when supported
    // so that tests never collide with another broker on the host.
    let help = Command::new(&binary)
        .args(["serve", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut command = Command::new(&binary);
    command.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--cores",
        "1",
    ]);
    if help.contains("--admin-listen") {
        command.args(["--admin-listen", ""]);
    }
    let child = command
        .arg("--data-dir")
        .arg(data.path())
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let broker = Broker {
        child,
        port,
        _data: data,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(broker)
}

fn bench(args: &[&str]) -> serde_json::Value {
    let directory = tempfile::tempdir().unwrap();
    let json = directory.path().join("out.json");
    let hgrm = directory.path().join("hgrm");
    let output = Command::new(env!("CARGO_BIN_EXE_riptide-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .arg("--hgrm")
        .arg(&hgrm)
        .arg("--quiet")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "riptide-bench {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("latency ms"), "{stdout}");
    let value: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    riptide_bench::report::check_schema(&value).unwrap();
    let hgrm_files = std::fs::read_dir(&hgrm).unwrap().count();
    assert!(hgrm_files >= 1);
    value
}

#[test]
fn produce_e2e_and_consume_against_a_real_broker() {
    let Some(broker) = start_broker() else {
        return;
    };
    let bootstrap = format!("127.0.0.1:{}", broker.port);

    // Max-rate produce to 2 partitions with keys.
    let produce = bench(&[
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        "bench-test",
        "--create",
        "--partitions",
        "2",
        "--keys",
        "100",
        "--message-size",
        "100",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
    ]);
    let p = &produce["produce"];
    assert!(p["msgs"].as_u64().unwrap() > 1000, "{p}");
    assert_eq!(p["errors"], 0, "{p}");
    assert_eq!(p["timed_out_msgs"], 0, "{p}");
    assert!(p["latency"]["p99_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(produce["parameters"]["partitions"], 2);

    // Fixed-rate end to end: every acknowledged message is seen by the consumer.
    let e2e = bench(&[
        "e2e",
        "--bootstrap",
        &bootstrap,
        "--topic",
        "bench-e2e",
        "--create",
        "--rate",
        "5000",
        "--message-size",
        "64",
        "--acks",
        "all",
        "--duration",
        "1.5",
        "--warmup",
        "0.5",
    ]);
    let p = &e2e["produce"];
    let acked = p["msgs"].as_u64().unwrap();
    assert!(
        (6_000..=8_000).contains(&acked),
        "1.5 s at 5,000 msg/s should ack ~7,500: {p}"
    );
    assert_eq!(e2e["e2e"]["missing_msgs"], 0, "{}", e2e["e2e"]);
    assert_eq!(e2e["e2e"]["latency"]["count"].as_u64().unwrap(), acked);
    assert!(p["rate_shortfall_pct"].as_f64().unwrap() < 5.0, "{p}");

    // Read the first topic back from the start to its end.
    let consume = bench(&[
        "consume",
        "--bootstrap",
        &bootstrap,
        "--topic",
        "bench-test",
        "--until-end",
        "--warmup",
        "0",
        "--duration",
        "30",
    ]);
    let c = &consume["consume"];
    assert!(c["msgs"].as_u64().unwrap() >= produce["produce"]["msgs"].as_u64().unwrap());
    assert_eq!(c["errors"], 0);
    assert!(consume["measured_duration_s"].as_f64().unwrap() < 30.0);
}
