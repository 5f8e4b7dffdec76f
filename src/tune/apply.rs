//! Applying changes all or nothing: every target is checked writable first, then written in
//! order; if a write still fails, the ones already made are rolled back.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// One file write: a kernel knob (/proc/sys, /sys) or a configuration file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Change {
    /// The path as the host sees it (`/proc/sys/vm/swappiness`).
    pub target: String,
    /// Where it is written (under `--root`).
    #[serde(skip)]
    pub path: PathBuf,
    /// The current value or content (`None`: the file does not exist).
    pub before: Option<String>,
    pub after: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeKind {
    /// Write a value into an existing kernel file (never created).
    Knob,
    /// Create or replace a regular file (its parent directories are created).
    File,
}

/// A change that cannot be made, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Blocked {
    pub target: String,
    pub reason: String,
}

/// What is needed to undo a change already made.
enum Undo {
    Knob {
        path: PathBuf,
        value: String,
    },
    Restore {
        path: PathBuf,
        content: String,
    },
    Remove {
        path: PathBuf,
        created_dirs: Vec<PathBuf>,
    },
}

fn describe(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EROFS) => {
            "read-only file system (in a container /proc/sys and /sys are read-only: tune the host)"
                .into()
        }
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied (run as root)".into(),
        Some(libc::ENOENT) => "does not exist on this host".into(),
        Some(libc::EISDIR) => "is a directory".into(),
        _ => error.to_string(),
    }
}

/// The nearest existing ancestor of `path` (itself included).
fn existing_ancestor(path: &Path) -> Option<&Path> {
    path.ancestors().find(|p| p.exists())
}

fn writable_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK)
        .map_err(|errno| describe(&std::io::Error::from_raw_os_error(errno as i32)))
}

/// Checks that every change can be written, without writing anything.
pub fn preflight(changes: &[Change]) -> Vec<Blocked> {
    let mut blocked = Vec::new();
    for change in changes {
        let result = match change.kind {
            // Opening for writing is enough to see EROFS/EACCES; nothing is written.
            ChangeKind::Knob => std::fs::OpenOptions::new()
                .write(true)
                .open(&change.path)
                .map(drop)
                .map_err(|e| describe(&e)),
            ChangeKind::File => {
                if change.path.is_dir() {
                    Err("is a directory".into())
                } else if change.path.exists() {
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&change.path)
                        .map(drop)
                        .map_err(|e| describe(&e))
                } else {
                    match existing_ancestor(&change.path) {
                        Some(ancestor) => writable_dir(ancestor),
                        None => Err("no existing parent directory".into()),
                    }
                }
            }
        };
        if let Err(reason) = result {
            blocked.push(Blocked {
                target: change.target.clone(),
                reason,
            });
        }
    }
    blocked
}

/// Writes one change and returns how to undo it.
fn write_one(change: &Change) -> std::io::Result<Undo> {
    match change.kind {
        ChangeKind::Knob => {
            // Like `echo value > file`: kernel files take the write whole; O_TRUNC makes a
            // fixture tree of regular files behave the same.
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&change.path)?;
            file.write_all(format!("{}\n", change.after).as_bytes())?;
            Ok(Undo::Knob {
                path: change.path.clone(),
                value: change.before.clone().unwrap_or_default(),
            })
        }
        ChangeKind::File => {
            let parent = change.path.parent().unwrap_or(Path::new("/"));
            let created_dirs: Vec<PathBuf> = parent
                .ancestors()
                .take_while(|p| !p.exists())
                .map(Path::to_path_buf)
                .collect();
            std::fs::create_dir_all(parent)?;
            let previous = std::fs::read_to_string(&change.path).ok();
            // Write a temporary file and rename it: the target is never half written.
            let temporary = change.path.with_extension("riptide-tune.tmp");
            {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .open(&temporary)?;
                file.write_all(change.after.as_bytes())?;
                file.sync_all()?;
            }
            if let Err(error) = std::fs::rename(&temporary, &change.path) {
                let _ = std::fs::remove_file(&temporary);
                return Err(error);
            }
            Ok(match previous {
                Some(content) => Undo::Restore {
                    path: change.path.clone(),
                    content,
                },
                None => Undo::Remove {
                    path: change.path.clone(),
                    created_dirs,
                },
            })
        }
    }
}

fn undo(step: Undo) -> Result<(), String> {
    let result = match &step {
        Undo::Knob { path, value } => std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)
            .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes())),
        Undo::Restore { path, content } => std::fs::write(path, content),
        Undo::Remove { path, created_dirs } => std::fs::remove_file(path).map(|()| {
            for dir in created_dirs {
                let _ = std::fs::remove_dir(dir);
            }
        }),
    };
    result.map_err(|e| e.to_string())
}

/// The outcome of [`apply`].
#[derive(Debug, Default, serde::Serialize)]
pub struct Applied {
    /// Changes made (empty after a rollback).
    pub changed: Vec<Change>,
    /// Set when a write failed: the target, the error, and the rollback result.
    pub failure: Option<Blocked>,
    /// Rollback steps that failed themselves (the host may be partly changed: listed here).
    pub rollback_failures: Vec<Blocked>,
}

/// Applies `changes` in order; on the first failure, undoes the ones made, newest first.
pub fn apply(changes: &[Change]) -> Applied {
    apply_with(changes, write_one)
}

fn apply_with(
    changes: &[Change],
    mut write: impl FnMut(&Change) -> std::io::Result<Undo>,
) -> Applied {
    let mut done: Vec<(Change, Undo)> = Vec::new();
    for change in changes {
        match write(change) {
            Ok(undo_step) => done.push((change.clone(), undo_step)),
            Err(error) => {
                let mut applied = Applied {
                    failure: Some(Blocked {
                        target: change.target.clone(),
                        reason: describe(&error),
                    }),
                    ..Applied::default()
                };
                for (made, undo_step) in done.into_iter().rev() {
                    if let Err(reason) = undo(undo_step) {
                        applied.rollback_failures.push(Blocked {
                            target: made.target,
                            reason,
                        });
                    }
                }
                return applied;
            }
        }
    }
    Applied {
        changed: done.into_iter().map(|(change, _)| change).collect(),
        ..Applied::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn knob(dir: &Path, name: &str, before: &str, after: &str) -> Change {
        let path = dir.join(name);
        std::fs::write(&path, format!("{before}\n")).unwrap();
        Change {
            target: format!("/proc/sys/{name}"),
            path,
            before: Some(before.into()),
            after: after.into(),
            kind: ChangeKind::Knob,
        }
    }

    #[test]
    fn a_failed_write_rolls_back_everything_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = knob(dir.path(), "a", "128", "4096");
        let file = Change {
            target: "/etc/sysctl.d/60-riptide.conf".into(),
            path: dir.path().join("etc/sysctl.d/60-riptide.conf"),
            before: None,
            after: "x = 1\n".into(),
            kind: ChangeKind::File,
        };
        let third = knob(dir.path(), "c", "60", "1");
        let changes = vec![first.clone(), file.clone(), third.clone()];
        assert!(preflight(&changes).is_empty());
        let mut calls = 0;
        let applied = apply_with(&changes, |change| {
            calls += 1;
            if calls == 3 {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            write_one(change)
        });
        assert!(applied.changed.is_empty());
        assert_eq!(applied.failure.unwrap().target, "/proc/sys/c");
        assert!(applied.rollback_failures.is_empty());
        assert_eq!(std::fs::read_to_string(&first.path).unwrap(), "128\n");
        assert!(!file.path.exists(), "created file removed");
        assert!(
            !dir.path().join("etc").exists(),
            "created directories removed"
        );
        assert_eq!(std::fs::read_to_string(&third.path).unwrap(), "60\n");
    }

    #[test]
    fn preflight_reports_what_cannot_be_written() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("swappiness")).unwrap();
        let changes = vec![
            Change {
                target: "/proc/sys/vm/swappiness".into(),
                path: dir.path().join("swappiness"),
                before: Some("60".into()),
                after: "1".into(),
                kind: ChangeKind::Knob,
            },
            Change {
                target: "/proc/sys/missing".into(),
                path: dir.path().join("missing"),
                before: None,
                after: "1".into(),
                kind: ChangeKind::Knob,
            },
        ];
        let blocked = preflight(&changes);
        assert_eq!(blocked.len(), 2, "{blocked:?}");
        assert_eq!(blocked[1].reason, "does not exist on this host");
    }

    #[test]
    fn applied_changes_stay() {
        let dir = tempfile::tempdir().unwrap();
        let change = knob(dir.path(), "a", "128", "4096");
        let applied = apply(std::slice::from_ref(&change));
        assert_eq!(applied.changed.len(), 1);
        assert_eq!(std::fs::read_to_string(&change.path).unwrap(), "4096\n");
    }
}
