//! `riptide tune` against a fake host root (tests/fixtures/tune-root copied to a temporary
//! directory). Never against `/`: every invocation passes `--root`.

mod ops_support;

use ops_support::{copy_tree, riptide, snapshot, stdout, temp_dir};
use serde_json::Value;
use std::path::{Path, PathBuf};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tune-root");

struct FakeHost {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data_dir: PathBuf,
}

fn fake_host() -> FakeHost {
    let dir = temp_dir("ops-tune-");
    let root = dir.path().join("root");
    copy_tree(Path::new(FIXTURE), &root);
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).unwrap();
    FakeHost {
        _dir: dir,
        root,
        data_dir,
    }
}

impl FakeHost {
    fn tune(&self, mode: &[&str]) -> std::process::Output {
        let mut args = vec![
            "tune",
            "--root",
            self.root.to_str().unwrap(),
            "--data-dir",
            self.data_dir.to_str().unwrap(),
            "--cores",
            "3",
            "--device",
            "vda",
        ];
        args.extend_from_slice(mode);
        riptide(&args)
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).unwrap()
    }

    fn json(&self, mode: &[&str]) -> (i32, Value) {
        let mut args = mode.to_vec();
        args.extend(["--format", "json"]);
        let output = self.tune(&args);
        let value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(&output)));
        (output.status.code().unwrap(), value)
    }
}

fn finding<'a>(report: &'a Value, setting: &str) -> &'a Value {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["setting"].as_str().unwrap().starts_with(setting))
        .unwrap_or_else(|| panic!("no finding {setting} in {report:#}"))
}

#[test]
fn check_reports_current_vs_recommended_and_exits_1() {
    let host = fake_host();
    let before = snapshot(&host.root);
    let (code, report) = host.json(&["--check"]);
    assert_eq!(code, 1, "settings are off: {report:#}");
    let somaxconn = finding(&report, "net.core.somaxconn");
    assert_eq!(somaxconn["current"], "128");
    assert_eq!(somaxconn["recommended"], ">= 4096");
    assert_eq!(somaxconn["status"], "off");
    assert!(!somaxconn["why"].as_str().unwrap().is_empty());
    for (setting, status) in [
        ("net.ipv4.tcp_max_syn_backlog", "off"),
        ("net.core.rps_sock_flow_entries", "unavailable"),
        ("fs.aio-max-nr", "off"),
        ("vm.swappiness", "off"),
        ("kernel.io_uring_disabled", "off"),
        ("scaling_governor", "off"),
        ("/sys/block/vda/queue/scheduler", "off"),
        ("/sys/block/vda/queue/nomerges", "off"),
        ("/sys/kernel/mm/transparent_hugepage/enabled", "off"),
        (
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            "off",
        ),
        ("eth0 IRQs 24,25,26", "off"),
        ("irqbalance", "warn"),
        ("memlock", "off"),
        ("nofile", "off"),
    ] {
        assert_eq!(finding(&report, setting)["status"], status, "{setting}");
    }
    assert_eq!(
        finding(&report, "eth0 IRQs")["recommended"],
        "CPUs 3 (shards on 0-2)"
    );
    assert_eq!(
        finding(&report, "/sys/devices/system/clocksource")["recommended"],
        "tsc"
    );
    // Every finding says why it matters, in one line.
    for f in report["findings"].as_array().unwrap() {
        let why = f["why"].as_str().unwrap();
        assert!(!why.is_empty() && !why.contains('\n'), "{f}");
    }
    // The human table has the same rows.
    let table = stdout(&host.tune(&[]));
    assert!(
        table.contains("net.core.somaxconn")
            && table.contains("OFF")
            && table.contains("accept queue"),
        "{table}"
    );
    assert_eq!(before, snapshot(&host.root), "--check changes nothing");
}

#[test]
fn dry_run_lists_changes_and_changes_nothing() {
    let host = fake_host();
    let before = snapshot(&host.root);
    let (code, report) = host.json(&["--dry-run"]);
    assert_eq!(code, 0);
    let targets: Vec<&str> = report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["target"].as_str().unwrap())
        .collect();
    for target in [
        "/proc/sys/net/core/somaxconn",
        "/proc/irq/25/smp_affinity_list",
        "/sys/block/vda/queue/scheduler",
        "/etc/sysctl.d/60-riptide.conf",
        "/etc/udev/rules.d/60-riptide-disk.rules",
        "/etc/security/limits.d/99-riptide.conf",
    ] {
        assert!(
            targets.contains(&target),
            "{target} missing from {targets:?}"
        );
    }
    assert!(
        !targets.contains(&"/proc/irq/27/smp_affinity_list"),
        "the disk's IRQ is not a NIC queue"
    );
    assert_eq!(before, snapshot(&host.root), "--dry-run changes nothing");
}

#[test]
fn apply_fixes_everything_then_check_passes_and_apply_is_idempotent() {
    let host = fake_host();
    let output = host.tune(&["--apply"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout(&output).contains("CHANGED"));
    assert_eq!(host.read("/proc/sys/net/core/somaxconn"), "4096\n");
    // at-least never lowers a field the host had higher (tcp_rmem's default 131072 > 87380).
    assert_eq!(
        host.read("/proc/sys/net/ipv4/tcp_rmem"),
        "4096 131072 16777216\n"
    );
    assert_eq!(host.read("/proc/sys/vm/swappiness"), "1\n");
    assert_eq!(host.read("/proc/sys/fs/aio-max-nr"), "1048576\n");
    assert_eq!(host.read("/proc/sys/kernel/io_uring_disabled"), "0\n");
    for irq in [24, 25, 26] {
        assert_eq!(
            host.read(&format!("/proc/irq/{irq}/smp_affinity_list")),
            "3\n"
        );
    }
    assert_eq!(host.read("/proc/irq/27/smp_affinity_list"), "0-3\n");
    assert_eq!(
        host.read("/sys/devices/system/cpu/cpufreq/policy2/scaling_governor"),
        "performance\n"
    );
    assert_eq!(host.read("/sys/block/vda/queue/scheduler"), "none\n");
    assert_eq!(host.read("/sys/block/vda/queue/nomerges"), "2\n");
    assert_eq!(
        host.read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "madvise\n"
    );
    assert_eq!(
        host.read("/sys/devices/system/clocksource/clocksource0/current_clocksource"),
        "tsc\n"
    );
    let sysctl = host.read("/etc/sysctl.d/60-riptide.conf");
    assert!(sysctl.contains("net.core.somaxconn = 4096\n"), "{sysctl}");
    assert!(
        sysctl.contains("net.ipv4.tcp_rmem = 4096 131072 16777216\n"),
        "{sysctl}"
    );
    assert!(host
        .read("/etc/udev/rules.d/60-riptide-disk.rules")
        .contains("KERNEL==\"vda\", ATTR{queue/scheduler}=\"none\""));
    assert!(host
        .read("/etc/security/limits.d/99-riptide.conf")
        .contains("memlock unlimited"));

    let (code, report) = host.json(&["--check"]);
    assert_eq!(code, 0, "after --apply the check passes: {report:#}");
    assert_eq!(report["problems"], 0);

    let after_first = snapshot(&host.root);
    let again = host.tune(&["--apply"]);
    assert_eq!(again.status.code(), Some(0));
    assert!(
        stdout(&again).contains("nothing to change"),
        "{}",
        stdout(&again)
    );
    assert_eq!(
        after_first,
        snapshot(&host.root),
        "a second --apply changes nothing"
    );
}

#[test]
fn a_setting_that_cannot_be_written_blocks_the_whole_apply() {
    let host = fake_host();
    // A directory where the sysctl.d file must go: its write cannot succeed, even as root.
    std::fs::create_dir_all(host.root.join("etc/sysctl.d/60-riptide.conf")).unwrap();
    let before = snapshot(&host.root);
    let output = host.tune(&["--apply"]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("NOTHING CHANGED"), "{text}");
    assert!(
        text.contains("/etc/sysctl.d/60-riptide.conf") && text.contains("is a directory"),
        "{text}"
    );
    assert_eq!(before, snapshot(&host.root), "nothing was half-applied");

    let (code, report) = host.json(&["--apply"]);
    assert_eq!(code, 1);
    assert_eq!(
        report["blocked"][0]["target"],
        "/etc/sysctl.d/60-riptide.conf"
    );
    assert_eq!(report["changed"].as_array().unwrap().len(), 0);
}

#[test]
fn without_permission_nothing_changes() {
    if unsafe { libc::geteuid() } == 0 {
        // Root writes through file modes; the directory case above covers the same path.
        return;
    }
    let host = fake_host();
    let knob = host.root.join("proc/sys/vm/swappiness");
    let mut permissions = std::fs::metadata(&knob).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o444);
    std::fs::set_permissions(&knob, permissions).unwrap();
    let before = snapshot(&host.root);
    let output = host.tune(&["--apply"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("permission denied"),
        "{}",
        stdout(&output)
    );
    assert_eq!(before, snapshot(&host.root));
}

#[test]
fn a_container_hint_is_reported() {
    let host = fake_host();
    std::fs::write(host.root.join(".dockerenv"), "").unwrap();
    let (_, report) = host.json(&["--check"]);
    assert_eq!(report["container"], "/.dockerenv exists");
}

#[test]
fn iotune_writes_io_config_the_broker_can_load() {
    let dir = temp_dir("ops-iotune-");
    let output = riptide(&[
        "iotune",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--file-size-bytes",
        "4194304",
        "--duration-ms",
        "20",
        "--format",
        "json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let loaded = riptide::tune::iotune::IoConfig::load(dir.path())
        .unwrap()
        .expect("io-config.toml written");
    assert_eq!(
        printed["recommended"]["write_queue_depth"],
        loaded.recommended.write_queue_depth
    );
    assert!(loaded.write.bandwidth_bytes_per_sec > 0);
    assert_eq!(loaded.write.runs.len(), 8);
    assert!(loaded.fdatasync.samples >= 1);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("io-config.toml")],
        "test files removed"
    );
}
