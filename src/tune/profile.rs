//! Tuning profiles: `tuning/production.toml` and the files it names (sysctl.d, udev rule,
//! limits.d), from a directory or compiled in.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The profile shipped in `tuning/`, compiled in so `riptide tune` works anywhere.
const BUILT_IN: &[(&str, &str)] = &[
    (
        "production.toml",
        include_str!("../../tuning/production.toml"),
    ),
    (
        "sysctl.d/60-riptide.conf",
        include_str!("../../tuning/sysctl.d/60-riptide.conf"),
    ),
    (
        "udev/60-riptide-disk.rules",
        include_str!("../../tuning/udev/60-riptide-disk.rules"),
    ),
    (
        "limits.d/99-riptide.conf",
        include_str!("../../tuning/limits.d/99-riptide.conf"),
    ),
];

/// Where `install.sh` puts the profile; used when present (under `--root`).
pub const INSTALLED_PROFILE: &str = "/etc/riptide/tuning/production.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub sysctl: SysctlSection,
    pub cpu: CpuSection,
    pub disk: DiskSection,
    pub memory: MemorySection,
    pub clock: ClockSection,
    pub irq: IrqSection,
    pub limits: LimitsSection,
    pub data_dir: DataDirSection,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlSection {
    pub files: Vec<String>,
    pub install_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuSection {
    pub governor: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskSection {
    pub schedulers: Vec<String>,
    pub nomerges: u32,
    pub udev_rule: String,
    pub udev_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemorySection {
    pub transparent_hugepages: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockSection {
    pub clocksources: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqSection {
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Bytes, or "unlimited".
    pub memlock: toml::Value,
    pub nofile: u64,
    pub file: String,
    pub install_dir: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataDirSection {
    pub filesystems: Vec<String>,
    pub min_free_bytes: u64,
    pub min_free_percent: u64,
}

/// How a current value is compared with the recommended one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckMode {
    Exact,
    AtLeast,
    AtMost,
}

/// One sysctl of a profile file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysctlEntry {
    pub key: String,
    pub value: String,
    pub check: CheckMode,
    pub why: String,
    /// The profile file it came from (its name is the installed file's name).
    pub file: String,
}

/// A profile with its files read.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    /// "built-in" or the profile's path.
    pub source: String,
    /// (file name as in the profile, entries, raw text).
    pub sysctl_files: Vec<(String, Vec<SysctlEntry>)>,
    pub udev_template: String,
    pub limits_file: String,
}

impl LoadedProfile {
    /// Reads `path` and the files it names from its directory; `None`: the built-in profile.
    pub fn load(path: Option<&Path>) -> anyhow::Result<LoadedProfile> {
        let (source, dir) = match path {
            Some(path) => (
                path.display().to_string(),
                Some(path.parent().unwrap_or(Path::new(".")).to_path_buf()),
            ),
            None => ("built-in".to_string(), None),
        };
        let read = |name: &str| -> anyhow::Result<String> {
            match &dir {
                Some(dir) => {
                    let file: PathBuf = dir.join(name);
                    std::fs::read_to_string(&file).map_err(|e| {
                        anyhow::anyhow!("cannot read profile file {}: {e}", file.display())
                    })
                }
                None => BUILT_IN
                    .iter()
                    .find(|(built_in, _)| *built_in == name)
                    .map(|(_, text)| text.to_string())
                    .ok_or_else(|| anyhow::anyhow!("the built-in profile has no file {name}")),
            }
        };
        let main_text = match path {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read profile {}: {e}", path.display()))?,
            None => read("production.toml")?,
        };
        let profile: Profile = toml::from_str(&main_text)
            .map_err(|e| anyhow::anyhow!("invalid profile {source}: {e}"))?;
        let mut sysctl_files = Vec::new();
        for name in &profile.sysctl.files {
            let entries = parse_sysctl_file(name, &read(name)?)
                .map_err(|e| anyhow::anyhow!("invalid sysctl file {name}: {e}"))?;
            sysctl_files.push((name.clone(), entries));
        }
        let udev_template = read(&profile.disk.udev_rule)?;
        let limits_file = read(&profile.limits.file)?;
        Ok(LoadedProfile {
            profile,
            source,
            sysctl_files,
            udev_template,
            limits_file,
        })
    }

    /// Every sysctl of every file, in file order.
    pub fn sysctls(&self) -> impl Iterator<Item = &SysctlEntry> {
        self.sysctl_files
            .iter()
            .flat_map(|(_, entries)| entries.iter())
    }
}

/// Parses a sysctl.d file, with the `# why:` / `# check:` comments above each key.
pub fn parse_sysctl_file(file: &str, text: &str) -> Result<Vec<SysctlEntry>, String> {
    let mut entries = Vec::new();
    let mut why = None;
    let mut check = CheckMode::Exact;
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            why = None;
            check = CheckMode::Exact;
            continue;
        }
        if let Some(comment) = line.strip_prefix('#').or_else(|| line.strip_prefix(';')) {
            let comment = comment.trim();
            if let Some(text) = comment.strip_prefix("why:") {
                why = Some(text.trim().to_string());
            } else if let Some(mode) = comment.strip_prefix("check:") {
                check = match mode.trim() {
                    "exact" => CheckMode::Exact,
                    "at-least" => CheckMode::AtLeast,
                    "at-most" => CheckMode::AtMost,
                    other => return Err(format!("line {}: unknown check {other:?}", number + 1)),
                };
            }
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY = VALUE", number + 1))?;
        let key = key.trim().trim_start_matches('-').to_string();
        let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
        if key.is_empty() || value.is_empty() {
            return Err(format!("line {}: expected KEY = VALUE", number + 1));
        }
        entries.push(SysctlEntry {
            key,
            value,
            check,
            why: why.take().unwrap_or_default(),
            file: file.to_string(),
        });
        check = CheckMode::Exact;
    }
    Ok(entries)
}

/// Numbers of a (possibly multi-field) value, if every field is one.
fn numbers(value: &str) -> Option<Vec<i64>> {
    value.split_whitespace().map(|f| f.parse().ok()).collect()
}

/// Whether `current` meets `recommended` under `mode`.
pub fn satisfies(current: &str, recommended: &str, mode: CheckMode) -> bool {
    let normalize = |v: &str| v.split_whitespace().collect::<Vec<_>>().join(" ");
    match (mode, numbers(current), numbers(recommended)) {
        (CheckMode::AtLeast, Some(c), Some(r)) if c.len() == r.len() => {
            c.iter().zip(&r).all(|(c, r)| c >= r)
        }
        (CheckMode::AtMost, Some(c), Some(r)) if c.len() == r.len() => {
            c.iter().zip(&r).all(|(c, r)| c <= r)
        }
        _ => normalize(current) == normalize(recommended),
    }
}

/// The value to set so that `mode` holds without lowering (at-least) or raising (at-most) any
/// field the host already has beyond the recommendation.
pub fn target_value(current: Option<&str>, recommended: &str, mode: CheckMode) -> String {
    let Some(current) = current else {
        return recommended.to_string();
    };
    match (mode, numbers(current), numbers(recommended)) {
        (CheckMode::AtLeast, Some(c), Some(r)) if c.len() == r.len() => {
            join(c.iter().zip(&r).map(|(c, r)| *c.max(r)))
        }
        (CheckMode::AtMost, Some(c), Some(r)) if c.len() == r.len() => {
            join(c.iter().zip(&r).map(|(c, r)| *c.min(r)))
        }
        _ => recommended.to_string(),
    }
}

fn join(values: impl Iterator<Item = i64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profile_loads() {
        let loaded = LoadedProfile::load(None).unwrap();
        let keys: Vec<&str> = loaded.sysctls().map(|e| e.key.as_str()).collect();
        for key in [
            "net.core.somaxconn",
            "fs.aio-max-nr",
            "vm.swappiness",
            "net.core.busy_poll",
        ] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
        assert!(
            loaded.sysctls().all(|e| !e.why.is_empty()),
            "every sysctl says why"
        );
        assert!(loaded.udev_template.contains("{device}"));
        assert_eq!(loaded.profile.cpu.governor, "performance");
    }

    #[test]
    fn comments_attach_to_the_next_key() {
        let entries = parse_sysctl_file(
            "x.conf",
            "# why: because\n# check: at-least\na.b = 1  2\n\nc.d=x\n",
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].value, "1 2");
        assert_eq!(entries[0].check, CheckMode::AtLeast);
        assert_eq!(entries[0].why, "because");
        assert_eq!(entries[1].check, CheckMode::Exact);
        assert!(parse_sysctl_file("x", "# check: sideways\na=1").is_err());
    }

    #[test]
    fn comparisons() {
        assert!(satisfies("8192", "4096", CheckMode::AtLeast));
        assert!(!satisfies("128", "4096", CheckMode::AtLeast));
        assert!(satisfies("0", "1", CheckMode::AtMost));
        assert!(!satisfies("60", "1", CheckMode::AtMost));
        assert!(satisfies(
            "4096\t87380   16777216",
            "4096 87380 16777216",
            CheckMode::Exact
        ));
        assert!(!satisfies(
            "4096 131072 6291456",
            "4096 87380 16777216",
            CheckMode::AtLeast
        ));
        assert_eq!(
            target_value(
                Some("4096 131072 6291456"),
                "4096 87380 16777216",
                CheckMode::AtLeast
            ),
            "4096 131072 16777216"
        );
        assert_eq!(target_value(Some("60"), "1", CheckMode::AtMost), "1");
        assert_eq!(target_value(None, "1", CheckMode::AtMost), "1");
    }
}
