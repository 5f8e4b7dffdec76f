//! `riptide tune`: check and apply the host settings a dedicated broker server wants, from a
//! profile in `tuning/` (compiled in, or `--profile`), covering what `rpk redpanda tune` covers
//! where it applies to Riptide:
//!
//! | tuner | settings |
//! | --- | --- |
//! | net | somaxconn, tcp_max_syn_backlog, rmem/wmem limits, tcp_rmem/tcp_wmem, busy_poll/busy_read, rps_sock_flow_entries |
//! | irq | NIC queue interrupts on CPUs that run no shard; irqbalance warning |
//! | cpu | frequency governor `performance` |
//! | disk | scheduler `none` and nomerges `2` on the data directory's device, kept by a udev rule |
//! | aio, io_uring, swappiness | fs.aio-max-nr, kernel.io_uring_disabled = 0, vm.swappiness |
//! | transparent_hugepages | `madvise` |
//! | clocksource | a vDSO clock (tsc, kvm-clock, arch_sys_counter) |
//! | limits | memlock and nofile (limits.d for login shells; the unit sets its own) |
//! | sysctl | the sysctl.d file that keeps the sysctls across reboots |
//! | data_dir | filesystem type, O_DIRECT support, free space (report only) |
//!
//! `--check` (default) prints each setting, current vs recommended, with one line on why it
//! matters, and exits 1 if any recommended setting is off (or a data-directory check fails).
//! `--dry-run` prints what `--apply` would change. `--apply` changes them all or nothing: every
//! target is checked writable first (read-only /proc/sys in a container, no root: nothing is
//! changed and each blocked setting is listed); a write that still fails rolls back the ones
//! made. Applying twice changes nothing the second time.
//!
//! Exit codes: 0 all as recommended (or applied); 1 something is off, blocked or failed;
//! 2 the tuner could not run (unreadable profile or config).
//!
//! `--root DIR` reads and writes `/proc`, `/sys` and `/etc` under DIR instead of `/` (tests use
//! a fixture tree; it also renders a tuned tree for inspection). The data directory is always
//! the real path given.

mod apply;
mod datadir;
pub mod iotune;
mod profile;
mod tuners;

pub use apply::{Blocked, Change, ChangeKind};
pub use profile::LoadedProfile;

use crate::admin_cli::output::{Format, Table};
use clap::Args;
use serde_json::json;
use std::path::{Path, PathBuf};

/// Where `/proc`, `/sys` and `/etc` are: `/` on a real host, a fixture tree in tests.
#[derive(Debug, Clone)]
pub struct Host {
    root: PathBuf,
}

impl Host {
    pub fn new(root: impl Into<PathBuf>) -> Host {
        Host { root: root.into() }
    }

    /// `absolute` (`/proc/sys/...`) under the root.
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// Content of a file with trailing whitespace removed; `None` if unreadable.
    pub fn read(&self, absolute: &str) -> Option<String> {
        self.read_exact(absolute)
            .map(|text| text.trim_end().to_string())
    }

    /// Content of a file as is.
    pub fn read_exact(&self, absolute: &str) -> Option<String> {
        std::fs::read_to_string(self.path(absolute)).ok()
    }

    /// Names in a directory (empty if it is missing).
    pub fn list(&self, absolute: &str) -> Vec<String> {
        std::fs::read_dir(self.path(absolute))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a process with this `comm` runs (scans `/proc/<pid>/comm`).
    pub fn process_running(&self, comm: &str) -> bool {
        self.list("/proc")
            .iter()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
            .any(|pid| self.read(&format!("/proc/{pid}/comm")).as_deref() == Some(comm))
    }

    /// A hint that this is a container, where kernel settings belong to the host.
    pub fn container_hint(&self) -> Option<String> {
        if self.path("/.dockerenv").exists() {
            return Some("/.dockerenv exists".into());
        }
        if self.path("/run/.containerenv").exists() {
            return Some("/run/.containerenv exists".into());
        }
        if self.root == Path::new("/") {
            if let Ok(kind) = std::env::var("container") {
                return Some(format!("container={kind}"));
            }
        }
        None
    }
}

/// The state of one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// As recommended.
    Ok,
    /// Differs from the recommendation (`--apply` changes it when it lists changes).
    Off,
    /// Worth a look; does not fail the check.
    Warn,
    /// The host has no such setting (no cpufreq in a VM, …): nothing to do.
    Unavailable,
    /// A report-only check failed (data directory).
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Off => "OFF",
            Status::Warn => "warn",
            Status::Unavailable => "n/a",
            Status::Fail => "FAIL",
        }
    }

    /// Counts against `--check`.
    fn is_problem(self) -> bool {
        matches!(self, Status::Off | Status::Fail)
    }
}

/// One setting: current vs recommended, why, and what `--apply` would write.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Finding {
    pub tuner: &'static str,
    pub setting: String,
    pub current: Option<String>,
    pub recommended: String,
    pub status: Status,
    pub why: String,
    pub note: Option<String>,
    pub changes: Vec<Change>,
}

impl Finding {
    fn unavailable(
        tuner: &'static str,
        setting: &str,
        recommended: &str,
        why: &str,
        note: &str,
    ) -> Finding {
        Finding {
            tuner,
            setting: setting.to_string(),
            current: None,
            recommended: recommended.to_string(),
            status: Status::Unavailable,
            why: why.to_string(),
            note: Some(note.to_string()),
            changes: Vec::new(),
        }
    }
}

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("mode").args(["check", "apply", "dry_run"])))]
pub struct TuneArgs {
    /// Report current vs recommended; exit 1 if any recommended setting is off (default).
    #[arg(long)]
    pub check: bool,
    /// Change the settings that are off (all or nothing), then report.
    #[arg(long)]
    pub apply: bool,
    /// Show what --apply would change, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Host root holding proc/, sys/ and etc/ (a fixture tree in tests) [default: /].
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Tuning profile [default: ROOT/etc/riptide/tuning/production.toml if present, else built in].
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Broker config file, for data_dir and cores.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Data directory to check [default: from --config, else ./riptide-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Shards the broker runs (the first N CPUs); NIC interrupts go to the others
    /// [default: from --config, else every CPU].
    #[arg(long)]
    pub cores: Option<usize>,
    /// Block device of the data directory, as in /sys/block [default: found from the data dir].
    #[arg(long)]
    pub device: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// Every finding for this host and profile.
pub fn findings(
    host: &Host,
    profile: &LoadedProfile,
    data_dir: &Path,
    cores: Option<usize>,
    device: Option<&str>,
) -> Vec<Finding> {
    let mut all = tuners::sysctls(host, profile);
    all.extend(tuners::irq(host, profile, cores));
    all.extend(tuners::cpu(host, profile));
    all.extend(tuners::disk(
        host,
        profile,
        tuners::data_device(host, data_dir, device),
    ));
    all.extend(tuners::memory(host, profile));
    all.extend(tuners::clock(host, profile));
    all.extend(tuners::limits(host, profile));
    all.extend(datadir::check(data_dir, &profile.profile.data_dir));
    all
}

/// The changes of every finding that is off, each target once, knobs before files.
pub fn planned_changes(findings: &[Finding]) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    for finding in findings.iter().filter(|f| f.status == Status::Off) {
        for change in &finding.changes {
            if !changes.iter().any(|c| c.target == change.target) {
                changes.push(change.clone());
            }
        }
    }
    changes.sort_by_key(|c| c.kind == ChangeKind::File);
    changes
}

/// `riptide tune`; returns the exit code.
pub fn run(args: TuneArgs) -> i32 {
    match run_inner(&args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("riptide tune: {error:#}");
            2
        }
    }
}

fn run_inner(args: &TuneArgs) -> anyhow::Result<i32> {
    let host = Host::new(&args.root);
    let config = match &args.config {
        Some(path) => Some(crate::config::BrokerConfig::from_toml_file(path)?),
        None => None,
    };
    let data_dir = args
        .data_dir
        .clone()
        .or_else(|| config.as_ref().map(|c| c.data_dir.clone()))
        .unwrap_or_else(|| crate::config::BrokerConfig::default().data_dir);
    let cores = args.cores.or_else(|| config.as_ref().and_then(|c| c.cores));
    let profile_path = args.profile.clone().or_else(|| {
        let installed = host.path(profile::INSTALLED_PROFILE);
        installed.exists().then_some(installed)
    });
    let profile = LoadedProfile::load(profile_path.as_deref())?;
    let found = findings(&host, &profile, &data_dir, cores, args.device.as_deref());
    let container = host.container_hint();

    if !args.apply && !args.dry_run {
        let problems = found.iter().filter(|f| f.status.is_problem()).count();
        match args.format {
            Format::Json => print_json(&json!({
                "root": args.root, "profile": profile.source, "container": container,
                "findings": found, "problems": problems,
            })),
            Format::Table => {
                print!("{}", findings_table(&found).render());
                print_footer(&found, container.as_deref());
            }
        }
        return Ok(i32::from(problems > 0));
    }

    let changes = planned_changes(&found);
    if args.dry_run {
        match args.format {
            Format::Json => print_json(
                &json!({ "root": args.root, "profile": profile.source, "changes": changes }),
            ),
            Format::Table => print!("{}", changes_table(&changes, "WOULD CHANGE").render()),
        }
        if changes.is_empty() {
            eprintln!("nothing to change");
        }
        return Ok(0);
    }

    // --apply: all or nothing.
    let blocked = apply::preflight(&changes);
    if !blocked.is_empty() {
        match args.format {
            Format::Json => {
                print_json(&json!({ "changed": [], "blocked": blocked, "container": container }))
            }
            Format::Table => {
                let mut table = Table::new(vec!["SETTING", "CANNOT CHANGE BECAUSE"])
                    .titled("NOTHING CHANGED: these settings cannot be changed here");
                for b in &blocked {
                    table.row(vec![b.target.clone(), b.reason.clone()]);
                }
                print!("{}", table.render());
                if let Some(hint) = &container {
                    println!("this looks like a container ({hint}): run `riptide tune --apply` on the host");
                }
            }
        }
        return Ok(1);
    }
    let applied = apply::apply(&changes);
    if let Some(failure) = &applied.failure {
        match args.format {
            Format::Json => print_json(
                &json!({ "changed": [], "failure": failure, "rollback_failures": applied.rollback_failures }),
            ),
            Format::Table => {
                println!(
                    "NOTHING CHANGED: writing {} failed ({}); every earlier change was rolled back",
                    failure.target, failure.reason
                );
                for b in &applied.rollback_failures {
                    println!(
                        "rollback of {} FAILED: {} (check it by hand)",
                        b.target, b.reason
                    );
                }
            }
        }
        return Ok(1);
    }
    // Verify: read everything again.
    let after = findings(&host, &profile, &data_dir, cores, args.device.as_deref());
    let remaining: Vec<&Finding> = after.iter().filter(|f| f.status.is_problem()).collect();
    match args.format {
        Format::Json => print_json(&json!({ "changed": applied.changed, "remaining": remaining })),
        Format::Table => {
            if applied.changed.is_empty() {
                println!("nothing to change: every setting is as recommended");
            } else {
                print!("{}", changes_table(&applied.changed, "CHANGED").render());
            }
            if !remaining.is_empty() {
                let mut table =
                    findings_table(&remaining.iter().map(|f| (*f).clone()).collect::<Vec<_>>());
                table.title = Some("STILL NOT AS RECOMMENDED".into());
                print!("\n{}", table.render());
            }
        }
    }
    Ok(i32::from(!remaining.is_empty()))
}

fn print_json(value: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

fn findings_table(found: &[Finding]) -> Table {
    let mut table = Table::new(vec![
        "TUNER",
        "SETTING",
        "CURRENT",
        "RECOMMENDED",
        "STATUS",
        "WHY",
    ]);
    for f in found {
        let mut why = f.why.clone();
        if let Some(note) = &f.note {
            why = format!("{why} [{note}]");
        }
        table.row(vec![
            f.tuner.to_string(),
            f.setting.clone(),
            f.current.clone().unwrap_or_else(|| "-".into()),
            f.recommended.clone(),
            f.status.label().to_string(),
            why,
        ]);
    }
    table
}

fn changes_table(changes: &[Change], title: &str) -> Table {
    let mut table = Table::new(vec!["SETTING", "FROM", "TO"]).titled(title);
    for c in changes {
        let (from, to) = match c.kind {
            ChangeKind::Knob => (
                c.before.clone().unwrap_or_else(|| "-".into()),
                c.after.clone(),
            ),
            ChangeKind::File => (
                if c.before.is_some() {
                    "(other content)"
                } else {
                    "(missing)"
                }
                .to_string(),
                format!("(file, {} lines)", c.after.lines().count()),
            ),
        };
        table.row(vec![c.target.clone(), from, to]);
    }
    table
}

fn print_footer(found: &[Finding], container: Option<&str>) {
    let off = found.iter().filter(|f| f.status == Status::Off).count();
    let failed = found.iter().filter(|f| f.status == Status::Fail).count();
    if off + failed == 0 {
        println!("\nall recommended settings are in place");
    } else {
        println!("\n{off} setting(s) off, {failed} check(s) failed; `riptide tune --dry-run` shows the changes, `riptide tune --apply` makes them");
    }
    if let Some(hint) = container {
        println!("this looks like a container ({hint}): kernel settings belong to the host");
    }
}
