//! Facts about the machine and the code, recorded with every result so that figures can be
//! compared only with figures from comparable runs.

use serde::{Deserialize, Serialize};
use std::process::Command;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostFacts {
    pub hostname: String,
    pub cpu_model: String,
    /// Logical CPUs online.
    pub cpu_count: usize,
    /// CPUs this process may run on (its affinity mask), e.g. `1` under `taskset -c 1`.
    pub allowed_cpus: String,
    pub kernel: String,
    pub os: String,
    pub memory_bytes: u64,
}

pub fn host_facts() -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == "model name").then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    // SAFETY: sysconf with a valid name.
    let cpu_count = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|line| {
            let rest = line.strip_prefix("MemTotal:")?;
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix("PRETTY_NAME=")
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    HostFacts {
        hostname: uname_field(|u| &u.nodename),
        cpu_model,
        cpu_count,
        allowed_cpus: allowed_cpus(),
        kernel: uname_field(|u| &u.release),
        os,
        memory_bytes,
    }
}

fn uname_field(field: impl Fn(&libc::utsname) -> &[libc::c_char; 65]) -> String {
    // SAFETY: utsname is plain data filled by uname.
    unsafe {
        let mut name: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut name) != 0 {
            return "unknown".to_string();
        }
        std::ffi::CStr::from_ptr(field(&name).as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

fn allowed_cpus() -> String {
    // SAFETY: cpu_set_t is plain data; pid 0 = this thread.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return "unknown".to_string();
        }
        set
    };
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect();
    format_cpu_list(&cpus)
}

/// `[0, 1, 2, 5]` -> `0-2,5`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < cpus.len() {
        let start = cpus[index];
        let mut end = start;
        while index + 1 < cpus.len() && cpus[index + 1] == end + 1 {
            index += 1;
            end = cpus[index];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        index += 1;
    }
    parts.join(",")
}

/// The git revision of the working tree this binary was built from (`RIPTIDE_GIT_REV`
/// overrides), with `-dirty` when tracked files differ from it.
pub fn git_revision() -> String {
    if let Ok(revision) = std::env::var("RIPTIDE_GIT_REV") {
        if !revision.is_empty() {
            return revision;
        }
    }
    let directory = env!("CARGO_MANIFEST_DIR");
    let run = |args: &[&str]| -> Option<String> {
        let output = Command::new("git")
            .arg("-C")
            .arg(directory)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(revision) if !revision.is_empty() => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|status| !status.is_empty());
            if dirty {
                format!("{revision}-dirty")
            } else {
                revision
            }
        }
        _ => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_are_compact() {
        assert_eq!(format_cpu_list(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cpu_list(&[1]), "1");
        assert_eq!(format_cpu_list(&[]), "");
    }

    #[test]
    fn host_facts_are_filled() {
        let facts = host_facts();
        assert!(facts.cpu_count >= 1);
        assert!(!facts.kernel.is_empty());
        assert!(!facts.allowed_cpus.is_empty());
    }
}
