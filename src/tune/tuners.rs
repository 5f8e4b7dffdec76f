//! The tuners: each reads its settings under the host root and returns findings (current vs
//! recommended, why, and the changes `--apply` would make).

use super::apply::{Change, ChangeKind};
use super::profile::{satisfies, target_value, CheckMode, LoadedProfile};
use super::{Finding, Host, Status};
use std::collections::BTreeSet;
use std::path::Path;

/// Sysctls at run time (/proc/sys), then their installed sysctl.d files.
pub fn sysctls(host: &Host, profile: &LoadedProfile) -> Vec<Finding> {
    let mut findings = Vec::new();
    for entry in profile.sysctls() {
        let target = format!("/proc/sys/{}", entry.key.replace('.', "/"));
        let current = host.read(&target).map(|v| normalize(&v));
        let tuner = tuner_of_sysctl(&entry.key);
        let Some(current_value) = current.clone() else {
            findings.push(Finding::unavailable(
                tuner,
                &entry.key,
                &entry.value,
                &entry.why,
                "this kernel has no such setting",
            ));
            continue;
        };
        let ok = satisfies(&current_value, &entry.value, entry.check);
        let after = target_value(Some(&current_value), &entry.value, entry.check);
        findings.push(Finding {
            tuner,
            setting: entry.key.clone(),
            current,
            recommended: recommended_text(&entry.value, entry.check),
            status: if ok { Status::Ok } else { Status::Off },
            why: entry.why.clone(),
            note: None,
            changes: if ok {
                Vec::new()
            } else {
                vec![Change {
                    target: target.clone(),
                    path: host.path(&target),
                    before: Some(current_value),
                    after,
                    kind: ChangeKind::Knob,
                }]
            },
        });
    }
    for (file, entries) in &profile.sysctl_files {
        let name = Path::new(file)
            .file_name()
            .map_or(file.clone(), |n| n.to_string_lossy().into_owned());
        let target = format!(
            "{}/{name}",
            profile.profile.sysctl.install_dir.trim_end_matches('/')
        );
        let installed = host.read(&target);
        let installed_ok = installed.as_deref().is_some_and(|text| {
            let parsed = super::profile::parse_sysctl_file(file, text).unwrap_or_default();
            entries.iter().all(|entry| {
                parsed
                    .iter()
                    .rev()
                    .find(|p| p.key == entry.key)
                    .is_some_and(|p| satisfies(&p.value, &entry.value, entry.check))
            })
        });
        // The installed values are what apply sets at run time: never below what the host has.
        let mut content = format!(
            "# Installed by `riptide tune --apply` from {} ({file}).\n# Edit the profile and re-run the tuner rather than this file.\n",
            profile.source
        );
        for entry in entries {
            let runtime = host.read(&format!("/proc/sys/{}", entry.key.replace('.', "/")));
            let value = target_value(
                runtime.map(|v| normalize(&v)).as_deref(),
                &entry.value,
                entry.check,
            );
            content.push_str(&format!(
                "\n# why: {}\n# check: {}\n{} = {value}\n",
                entry.why,
                check_name(entry.check),
                entry.key
            ));
        }
        findings.push(Finding {
            tuner: "sysctl",
            setting: target.clone(),
            current: Some(
                if installed.is_some() {
                    "installed"
                } else {
                    "missing"
                }
                .to_string(),
            ),
            recommended: "installed".into(),
            status: if installed_ok {
                Status::Ok
            } else {
                Status::Off
            },
            why: "the settings above survive a reboot only in /etc/sysctl.d".into(),
            note: (installed.is_some() && !installed_ok)
                .then(|| "installed file has other values".to_string()),
            changes: if installed_ok {
                Vec::new()
            } else {
                vec![file_change(host, &target, installed, content)]
            },
        });
    }
    findings
}

fn check_name(mode: CheckMode) -> &'static str {
    match mode {
        CheckMode::Exact => "exact",
        CheckMode::AtLeast => "at-least",
        CheckMode::AtMost => "at-most",
    }
}

fn recommended_text(value: &str, mode: CheckMode) -> String {
    match mode {
        CheckMode::Exact => value.to_string(),
        CheckMode::AtLeast => format!(">= {value}"),
        CheckMode::AtMost => format!("<= {value}"),
    }
}

fn tuner_of_sysctl(key: &str) -> &'static str {
    if key.starts_with("net.") {
        "net"
    } else if key == "fs.aio-max-nr" {
        "aio"
    } else if key == "vm.swappiness" {
        "swappiness"
    } else if key == "kernel.io_uring_disabled" {
        "io_uring"
    } else {
        "sysctl"
    }
}

fn normalize(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn file_change(host: &Host, target: &str, before: Option<String>, after: String) -> Change {
    Change {
        target: target.to_string(),
        path: host.path(target),
        before,
        after,
        kind: ChangeKind::File,
    }
}

/// The selected entry of a sysfs choice file: `always [madvise] never` → `madvise`.
pub fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = text[start..].find(']')? + start;
    Some(text[start + 1..end].to_string())
}

/// The selected entry of a choice file; a file holding a single word (what a fixture tree
/// keeps after a write) selects that word.
fn selected(text: &str) -> Option<String> {
    let offered = choices(text);
    bracketed(text).or_else(|| (offered.len() == 1).then(|| offered[0].clone()))
}

fn choices(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|c| c.trim_start_matches('[').trim_end_matches(']').to_string())
        .collect()
}

/// CPU frequency governor of every policy.
pub fn cpu(host: &Host, profile: &LoadedProfile) -> Vec<Finding> {
    let wanted = &profile.profile.cpu.governor;
    let why =
        "a lower clock between bursts adds wake-up latency to every request; pin it at full speed";
    let mut files: Vec<String> = host
        .list("/sys/devices/system/cpu/cpufreq")
        .into_iter()
        .filter(|n| n.starts_with("policy"))
        .map(|n| format!("/sys/devices/system/cpu/cpufreq/{n}/scaling_governor"))
        .filter(|f| host.path(f).exists())
        .collect();
    if files.is_empty() {
        files = host
            .list("/sys/devices/system/cpu")
            .into_iter()
            .filter(|n| {
                n.strip_prefix("cpu")
                    .is_some_and(|rest| rest.parse::<u32>().is_ok())
            })
            .map(|n| format!("/sys/devices/system/cpu/{n}/cpufreq/scaling_governor"))
            .filter(|f| host.path(f).exists())
            .collect();
    }
    files.sort();
    if files.is_empty() {
        return vec![Finding::unavailable(
            "cpu",
            "scaling_governor",
            wanted,
            why,
            "no cpufreq on this host (typical of VMs): nothing to set",
        )];
    }
    let mut current = BTreeSet::new();
    let mut changes = Vec::new();
    let mut unsupported = false;
    for file in &files {
        let governor = host.read(file).unwrap_or_default().trim().to_string();
        let available = host.read(&file.replace("scaling_governor", "scaling_available_governors"));
        if available
            .as_deref()
            .is_some_and(|a| !choices(a).contains(wanted))
        {
            unsupported = true;
        }
        if &governor != wanted {
            changes.push(Change {
                target: file.clone(),
                path: host.path(file),
                before: Some(governor.clone()),
                after: wanted.clone(),
                kind: ChangeKind::Knob,
            });
        }
        current.insert(governor);
    }
    if unsupported {
        return vec![Finding::unavailable(
            "cpu",
            "scaling_governor",
            wanted,
            why,
            &format!("the cpufreq driver does not offer {wanted}"),
        )];
    }
    vec![Finding {
        tuner: "cpu",
        setting: format!("scaling_governor ({} policies)", files.len()),
        current: Some(current.into_iter().collect::<Vec<_>>().join(",")),
        recommended: wanted.clone(),
        status: if changes.is_empty() {
            Status::Ok
        } else {
            Status::Off
        },
        why: why.into(),
        note: None,
        changes,
    }]
}

/// The block device (whole disk) holding `data_dir`, as named in /sys/block.
pub fn data_device(host: &Host, data_dir: &Path, device: Option<&str>) -> Result<String, String> {
    if let Some(device) = device {
        return Ok(device.to_string());
    }
    let existing = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let stat = nix::sys::stat::stat(existing)
        .map_err(|e| format!("cannot stat {}: {e}", existing.display()))?;
    let (major, minor) = (libc::major(stat.st_dev), libc::minor(stat.st_dev));
    if major == 0 {
        return Err(format!(
            "{} is not on a block device (tmpfs, overlay or btrfs subvolume?): give --device",
            existing.display()
        ));
    }
    let link = host.path(&format!("/sys/dev/block/{major}:{minor}"));
    let resolved = std::fs::canonicalize(&link).map_err(|e| format!("{}: {e}", link.display()))?;
    let disk = if resolved.join("partition").exists() {
        resolved.parent().map(Path::to_path_buf).unwrap_or(resolved)
    } else {
        resolved
    };
    disk.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| "cannot name the device".to_string())
}

/// Scheduler and request merging of the data device, and the udev rule that keeps them.
pub fn disk(host: &Host, profile: &LoadedProfile, device: Result<String, String>) -> Vec<Finding> {
    let section = &profile.profile.disk;
    let why_scheduler =
        "the broker orders its own I/O (io_uring, O_DIRECT): a kernel scheduler only adds latency";
    let why_nomerges =
        "aligned O_DIRECT writes are already large: merging only costs CPU on the submit path";
    let device = match device {
        Ok(device) => device,
        Err(reason) => {
            return vec![
                Finding::unavailable(
                    "disk",
                    "queue/scheduler",
                    &section.schedulers.join(" or "),
                    why_scheduler,
                    &reason,
                ),
                Finding::unavailable(
                    "disk",
                    "queue/nomerges",
                    &section.nomerges.to_string(),
                    why_nomerges,
                    &reason,
                ),
            ];
        }
    };
    let scheduler_file = format!("/sys/block/{device}/queue/scheduler");
    let nomerges_file = format!("/sys/block/{device}/queue/nomerges");
    let mut findings = Vec::new();
    let mut chosen_scheduler = None;
    match host.read(&scheduler_file) {
        None => findings.push(Finding::unavailable(
            "disk",
            &scheduler_file,
            &section.schedulers.join(" or "),
            why_scheduler,
            "no such device queue",
        )),
        Some(text) => {
            let offered = choices(&text);
            let current = selected(&text);
            match section.schedulers.iter().find(|s| offered.contains(s)) {
                None => findings.push(Finding::unavailable(
                    "disk",
                    &scheduler_file,
                    &section.schedulers.join(" or "),
                    why_scheduler,
                    &format!("the kernel offers only {}", offered.join(", ")),
                )),
                Some(wanted) => {
                    chosen_scheduler = Some(wanted.clone());
                    let ok = current.as_deref() == Some(wanted);
                    findings.push(Finding {
                        tuner: "disk",
                        setting: scheduler_file.clone(),
                        current: current.clone(),
                        recommended: wanted.clone(),
                        status: if ok { Status::Ok } else { Status::Off },
                        why: why_scheduler.into(),
                        note: None,
                        changes: if ok {
                            Vec::new()
                        } else {
                            vec![Change {
                                target: scheduler_file.clone(),
                                path: host.path(&scheduler_file),
                                before: current,
                                after: wanted.clone(),
                                kind: ChangeKind::Knob,
                            }]
                        },
                    });
                }
            }
        }
    }
    let wanted_nomerges = section.nomerges.to_string();
    match host.read(&nomerges_file) {
        None => findings.push(Finding::unavailable(
            "disk",
            &nomerges_file,
            &wanted_nomerges,
            why_nomerges,
            "no such device queue",
        )),
        Some(text) => {
            let current = text.trim().to_string();
            let ok = current == wanted_nomerges;
            findings.push(Finding {
                tuner: "disk",
                setting: nomerges_file.clone(),
                current: Some(current.clone()),
                recommended: wanted_nomerges.clone(),
                status: if ok { Status::Ok } else { Status::Off },
                why: why_nomerges.into(),
                note: None,
                changes: if ok {
                    Vec::new()
                } else {
                    vec![Change {
                        target: nomerges_file.clone(),
                        path: host.path(&nomerges_file),
                        before: Some(current),
                        after: wanted_nomerges.clone(),
                        kind: ChangeKind::Knob,
                    }]
                },
            });
        }
    }
    if let Some(scheduler) = chosen_scheduler {
        let name = Path::new(&section.udev_rule)
            .file_name()
            .map_or("60-riptide-disk.rules".into(), |n| {
                n.to_string_lossy().into_owned()
            });
        let target = format!("{}/{name}", section.udev_dir.trim_end_matches('/'));
        let content = profile
            .udev_template
            .replace("{device}", &device)
            .replace("{scheduler}", &scheduler)
            .replace("{nomerges}", &wanted_nomerges);
        let installed = host.read_exact(&target);
        let ok = installed.as_deref() == Some(content.as_str());
        findings.push(Finding {
            tuner: "disk",
            setting: target.clone(),
            current: Some(
                match &installed {
                    None => "missing",
                    Some(_) if ok => "installed",
                    Some(_) => "differs",
                }
                .to_string(),
            ),
            recommended: "installed".into(),
            status: if ok { Status::Ok } else { Status::Off },
            why: "sysfs queue settings are lost at reboot: a udev rule sets them again".into(),
            note: None,
            changes: if ok {
                Vec::new()
            } else {
                vec![file_change(host, &target, installed, content)]
            },
        });
    }
    findings
}

/// Transparent huge pages.
pub fn memory(host: &Host, profile: &LoadedProfile) -> Vec<Finding> {
    let wanted = &profile.profile.memory.transparent_hugepages;
    let file = "/sys/kernel/mm/transparent_hugepage/enabled";
    let why = "with THP always, khugepaged compaction stalls shard threads at random; madvise keeps huge pages opt-in";
    choice_knob(host, "transparent_hugepages", file, wanted, why)
}

/// A sysfs file that offers choices (`a [b] c`) and should select `wanted`.
fn choice_knob(
    host: &Host,
    tuner: &'static str,
    file: &str,
    wanted: &str,
    why: &str,
) -> Vec<Finding> {
    let Some(text) = host.read(file) else {
        return vec![Finding::unavailable(
            tuner,
            file,
            wanted,
            why,
            "not available on this kernel",
        )];
    };
    if !choices(&text).iter().any(|c| c == wanted) {
        return vec![Finding::unavailable(
            tuner,
            file,
            wanted,
            why,
            &format!("the kernel offers only {}", text.trim()),
        )];
    }
    let current = selected(&text);
    let ok = current.as_deref() == Some(wanted);
    vec![Finding {
        tuner,
        setting: file.to_string(),
        current: current.clone(),
        recommended: wanted.to_string(),
        status: if ok { Status::Ok } else { Status::Off },
        why: why.into(),
        note: None,
        changes: if ok {
            Vec::new()
        } else {
            vec![Change {
                target: file.to_string(),
                path: host.path(file),
                before: current,
                after: wanted.to_string(),
                kind: ChangeKind::Knob,
            }]
        },
    }]
}

/// Clock source.
pub fn clock(host: &Host, profile: &LoadedProfile) -> Vec<Finding> {
    let acceptable = &profile.profile.clock.clocksources;
    let file = "/sys/devices/system/clocksource/clocksource0/current_clocksource";
    let why = "every request reads the clock; hpet/acpi_pm reads are syscalls costing microseconds, tsc-like ones are not";
    let Some(current) = host.read(file).map(|c| c.trim().to_string()) else {
        return vec![Finding::unavailable(
            "clocksource",
            file,
            &acceptable.join(" or "),
            why,
            "not available on this kernel",
        )];
    };
    if acceptable.contains(&current) {
        return vec![Finding {
            tuner: "clocksource",
            setting: file.into(),
            current: Some(current),
            recommended: acceptable.join(" or "),
            status: Status::Ok,
            why: why.into(),
            note: None,
            changes: Vec::new(),
        }];
    }
    let available = host
        .read("/sys/devices/system/clocksource/clocksource0/available_clocksource")
        .unwrap_or_default();
    let offered = choices(&available);
    match acceptable.iter().find(|c| offered.contains(c)) {
        None => vec![Finding::unavailable(
            "clocksource",
            file,
            &acceptable.join(" or "),
            why,
            &format!("only {} available", offered.join(", ")),
        )],
        Some(wanted) => vec![Finding {
            tuner: "clocksource",
            setting: file.into(),
            current: Some(current.clone()),
            recommended: wanted.clone(),
            status: Status::Off,
            why: why.into(),
            note: None,
            changes: vec![Change {
                target: file.into(),
                path: host.path(file),
                before: Some(current),
                after: wanted.clone(),
                kind: ChangeKind::Knob,
            }],
        }],
    }
}

/// Parses a CPU list (`0-3,5`).
pub fn parse_cpu_list(text: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    cpus.extend(a..=b);
                }
            }
            None => {
                if let Ok(cpu) = part.trim().parse() {
                    cpus.insert(cpu);
                }
            }
        }
    }
    cpus
}

/// Formats a CPU set as a list with ranges (`0-3,5`).
pub fn format_cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut parts = Vec::new();
    let mut iter = cpus.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// NIC queue interrupts: on CPUs that run no shard.
pub fn irq(host: &Host, profile: &LoadedProfile, shard_cores: Option<usize>) -> Vec<Finding> {
    if !profile.profile.irq.enabled {
        return Vec::new();
    }
    let why = "a NIC interrupt on a shard's core preempts that shard mid-request: steer them to cores without shards";
    let online = parse_cpu_list(
        &host
            .read("/sys/devices/system/cpu/online")
            .unwrap_or_default(),
    );
    if online.is_empty() {
        return vec![Finding::unavailable(
            "irq",
            "NIC IRQ affinity",
            "CPUs without shards",
            why,
            "cannot read the online CPUs",
        )];
    }
    let shard_count = shard_cores.unwrap_or(online.len()).min(online.len());
    let shard_cpus: BTreeSet<usize> = online.iter().copied().take(shard_count).collect();
    let irq_cpus: BTreeSet<usize> = online.difference(&shard_cpus).copied().collect();
    let mut findings = Vec::new();
    if host.process_running("irqbalance") {
        findings.push(Finding {
            tuner: "irq",
            setting: "irqbalance".into(),
            current: Some("running".into()),
            recommended: "stopped, or IRQBALANCE_BANNED_CPULIST=<shard CPUs>".into(),
            status: Status::Warn,
            why: "irqbalance moves interrupts back onto shard cores after the tuner placed them"
                .into(),
            note: Some(format!(
                "set IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance, or stop it",
                format_cpu_list(&shard_cpus)
            )),
            changes: Vec::new(),
        });
    }
    let interrupts = host.read("/proc/interrupts").unwrap_or_default();
    for nic in host.list("/sys/class/net") {
        if nic == "lo" || !host.path(&format!("/sys/class/net/{nic}/device")).exists() {
            continue;
        }
        let irqs = nic_irqs(host, &nic, &interrupts);
        if irqs.is_empty() {
            continue;
        }
        let setting = format!(
            "{nic} IRQs {}",
            irqs.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        if irq_cpus.is_empty() {
            findings.push(Finding::unavailable("irq", &setting, "CPUs without shards", why, &format!(
                "every CPU runs a shard: start the broker with --cores {} (or fewer) to free a core for interrupts",
                online.len().saturating_sub(1).max(1)
            )));
            continue;
        }
        let wanted = format_cpu_list(&irq_cpus);
        let mut current = Vec::new();
        let mut changes = Vec::new();
        for irq in &irqs {
            let file = format!("/proc/irq/{irq}/smp_affinity_list");
            let Some(value) = host.read(&file) else {
                continue;
            };
            let value = value.trim().to_string();
            current.push(format!("{irq}:{value}"));
            if !parse_cpu_list(&value).is_subset(&irq_cpus) {
                changes.push(Change {
                    target: file.clone(),
                    path: host.path(&file),
                    before: Some(value),
                    after: wanted.clone(),
                    kind: ChangeKind::Knob,
                });
            }
        }
        findings.push(Finding {
            tuner: "irq",
            setting,
            current: Some(current.join(" ")),
            recommended: format!("CPUs {wanted} (shards on {})", format_cpu_list(&shard_cpus)),
            status: if changes.is_empty() {
                Status::Ok
            } else {
                Status::Off
            },
            why: why.into(),
            note: None,
            changes,
        });
    }
    findings
}

/// IRQ numbers of a NIC: its (or its parent device's) MSI vectors, and /proc/interrupts
/// lines naming it or its device (`virtio0-input.0`, `eth0-TxRx-3`).
fn nic_irqs(host: &Host, nic: &str, interrupts: &str) -> BTreeSet<u32> {
    let mut irqs = BTreeSet::new();
    for dir in [
        format!("/sys/class/net/{nic}/device/msi_irqs"),
        format!("/sys/class/net/{nic}/device/../msi_irqs"),
    ] {
        irqs.extend(host.list(&dir).iter().filter_map(|n| n.parse::<u32>().ok()));
    }
    let device_name = std::fs::read_link(host.path(&format!("/sys/class/net/{nic}/device")))
        .ok()
        .and_then(|link| link.file_name().map(|n| n.to_string_lossy().into_owned()));
    for line in interrupts.lines() {
        let Some((number, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(number) = number.parse::<u32>() else {
            continue;
        };
        let names = rest.split_whitespace().last().unwrap_or("");
        let matches = |name: &str| names == name || names.starts_with(&format!("{name}-"));
        if matches(nic) || device_name.as_deref().is_some_and(matches) {
            irqs.insert(number);
        }
    }
    irqs.retain(|irq| {
        host.path(&format!("/proc/irq/{irq}/smp_affinity_list"))
            .exists()
    });
    irqs
}

/// `(soft, hard)` of a line of /proc/self/limits (`u64::MAX` = unlimited).
pub fn parse_limit(limits: &str, name: &str) -> Option<(u64, u64)> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let mut fields = line[name.len()..].split_whitespace();
    let parse = |v: &str| {
        if v == "unlimited" {
            Some(u64::MAX)
        } else {
            v.parse().ok()
        }
    };
    Some((parse(fields.next()?)?, parse(fields.next()?)?))
}

fn limit_text(value: u64, bytes: bool) -> String {
    if value == u64::MAX {
        "unlimited".into()
    } else if bytes {
        super::datadir::human_bytes(value)
    } else {
        value.to_string()
    }
}

/// Locked memory and open files limits.
pub fn limits(host: &Host, profile: &LoadedProfile) -> Vec<Finding> {
    let section = &profile.profile.limits;
    let memlock_wanted = match &section.memlock {
        toml::Value::String(s) if s == "unlimited" => u64::MAX,
        toml::Value::Integer(n) => *n as u64,
        other => {
            return vec![Finding::unavailable(
                "limits",
                "memlock",
                &other.to_string(),
                "",
                "profile: memlock must be a number of bytes or \"unlimited\"",
            )]
        }
    };
    let name = Path::new(&section.file)
        .file_name()
        .map_or("99-riptide.conf".into(), |n| {
            n.to_string_lossy().into_owned()
        });
    let target = format!("{}/{name}", section.install_dir.trim_end_matches('/'));
    let installed = host.read_exact(&target);
    let file_ok = installed.as_deref() == Some(profile.limits_file.as_str());
    let limits = host.read("/proc/self/limits").unwrap_or_default();
    let mut findings = Vec::new();
    for (setting, line, wanted, bytes, why) in [
        ("memlock", "Max locked memory", memlock_wanted, true, "each shard locks 3 x io_memory for io_uring buffers; below 512 KiB the executor will not start"),
        ("nofile", "Max open files", section.nofile, false, "every connection and every open segment, index and checkpoint is a file descriptor"),
    ] {
        let current = parse_limit(&limits, line);
        let enough = current.is_some_and(|(soft, _)| soft >= wanted);
        let status = if enough || file_ok { Status::Ok } else { Status::Off };
        let note = match (enough, file_ok) {
            (false, true) => Some(format!("set for new login sessions by {target}; the systemd unit sets its own")),
            (false, false) => Some("the systemd unit sets LimitMEMLOCK/LimitNOFILE; this covers login shells".into()),
            _ => None,
        };
        findings.push(Finding {
            tuner: "limits",
            setting: setting.into(),
            current: current.map(|(soft, hard)| format!("soft {} hard {}", limit_text(soft, bytes), limit_text(hard, bytes))),
            recommended: format!(">= {}", limit_text(wanted, bytes)),
            status,
            why: why.into(),
            note,
            changes: if status == Status::Ok { Vec::new() } else {
                vec![file_change(host, &target, installed.clone(), profile.limits_file.clone())]
            },
        });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        let cpus = parse_cpu_list("0-3,5,7-8\n");
        assert_eq!(
            cpus.iter().copied().collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 5, 7, 8]
        );
        assert_eq!(format_cpu_list(&cpus), "0-3,5,7-8");
        assert_eq!(format_cpu_list(&parse_cpu_list("3")), "3");
    }

    #[test]
    fn choice_files() {
        assert_eq!(bracketed("always [madvise] never"), Some("madvise".into()));
        assert_eq!(bracketed("none"), None);
        assert_eq!(selected("none"), Some("none".into()));
        assert_eq!(selected("a b"), None);
        assert_eq!(
            choices("[mq-deadline] kyber none"),
            vec!["mq-deadline", "kyber", "none"]
        );
    }

    #[test]
    fn limits_lines() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\nMax locked memory         unlimited            unlimited            bytes\n";
        assert_eq!(parse_limit(text, "Max open files"), Some((1024, 524288)));
        assert_eq!(
            parse_limit(text, "Max locked memory"),
            Some((u64::MAX, u64::MAX))
        );
        assert_eq!(parse_limit(text, "Max processes"), None);
    }
}
