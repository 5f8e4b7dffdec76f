//! scripts/install.sh into a temporary root (`--root`), then `--uninstall` and `--purge`.
//! Nothing outside the temporary root is touched.

mod ops_support;

use ops_support::{temp_dir, BIN};
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

fn install(root: &Path, extra: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(format!("{REPO}/scripts/install.sh"))
        .args(["--root", root.to_str().unwrap(), "--binary", BIN])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "install.sh {extra:?} failed:\n{text}"
    );
    text
}

#[test]
fn install_upgrade_uninstall_purge() {
    let dir = temp_dir("ops-install-");
    let root = dir.path();
    let at = |path: &str| root.join(path.trim_start_matches('/'));
    install(root, &[]);

    let binary = at("/usr/local/bin/riptide");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&binary).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o755);
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("riptide "));

    let unit = std::fs::read_to_string(at("/etc/systemd/system/riptide.service")).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/local/bin/riptide serve --config /etc/riptide/riptide.toml",
        "LimitMEMLOCK=infinity",
        "LimitNOFILE=1048576",
        "Restart=on-failure",
        "WatchdogSec=30s",
        "User=riptide",
    ] {
        assert!(unit.lines().any(|l| l == line), "unit lacks {line}");
    }
    assert!(
        !unit.lines().any(|l| l.starts_with("SystemCallFilter=")),
        "no seccomp allow-list: io_uring"
    );
    assert!(at("/etc/systemd/system/riptide-tune.service").exists());
    let wants = at("/etc/systemd/system/multi-user.target.wants/riptide.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/etc/systemd/system/riptide.service")
    );
    assert!(std::fs::symlink_metadata(at(
        "/etc/systemd/system/multi-user.target.wants/riptide-tune.service"
    ))
    .is_err());

    let config = std::fs::read_to_string(at("/etc/riptide/riptide.toml")).unwrap();
    assert_eq!(
        config,
        std::fs::read_to_string(format!("{REPO}/scripts/riptide.toml")).unwrap()
    );
    assert!(at("/etc/riptide/tuning/production.toml").exists());
    assert!(at("/etc/riptide/tuning/sysctl.d/60-riptide.conf").exists());
    assert!(at("/var/lib/riptide/data").is_dir());
    let passwd = std::fs::read_to_string(at("/etc/passwd")).unwrap();
    assert!(
        passwd.lines().any(|l| l.starts_with("riptide:")),
        "{passwd}"
    );

    // The installed tuner finds the installed profile under the same root.
    let tune = Command::new(&binary)
        .args([
            "tune",
            "--root",
            root.to_str().unwrap(),
            "--data-dir",
            at("/var/lib/riptide/data").to_str().unwrap(),
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&tune.stdout).unwrap();
    assert!(
        report["profile"]
            .as_str()
            .unwrap()
            .ends_with("/etc/riptide/tuning/production.toml"),
        "{report}"
    );

    // Re-install (upgrade): an edited config is kept.
    std::fs::write(at("/etc/riptide/riptide.toml"), "log_level = \"debug\"\n").unwrap();
    let text = install(root, &["--enable-tuner"]);
    assert!(
        text.contains("kept existing /etc/riptide/riptide.toml"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(at("/etc/riptide/riptide.toml")).unwrap(),
        "log_level = \"debug\"\n"
    );
    assert!(std::fs::symlink_metadata(at(
        "/etc/systemd/system/multi-user.target.wants/riptide-tune.service"
    ))
    .is_ok());

    install(root, &["--uninstall"]);
    assert!(!binary.exists());
    assert!(!at("/etc/systemd/system/riptide.service").exists());
    assert!(std::fs::symlink_metadata(&wants).is_err(), "unit disabled");
    assert!(at("/etc/riptide/riptide.toml").exists(), "config kept");
    assert!(at("/var/lib/riptide/data").is_dir(), "data kept");

    install(root, &["--uninstall", "--purge"]);
    assert!(!at("/etc/riptide").exists());
    assert!(!at("/var/lib/riptide").exists());
    let passwd = std::fs::read_to_string(at("/etc/passwd")).unwrap_or_default();
    assert!(
        !passwd.lines().any(|l| l.starts_with("riptide:")),
        "{passwd}"
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not installed: skipped");
        return;
    };
    assert!(version.status.success());
    let dir = temp_dir("ops-unit-");
    let unit = std::fs::read_to_string(format!("{REPO}/scripts/riptide.service")).unwrap();
    let path = dir.path().join("riptide.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/riptide", BIN)).unwrap();
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("riptide.service")
                && !l.contains("sysinit.target")
                && !l.contains("Documentation")
        })
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{text}");
}
