//! Open-files limit: every partition keeps its active segment open (and a connection, a cold
//! segment being read, a checkpoint being written are file descriptors too), so the common
//! default soft limit of 1,024 stops a broker at about a thousand partitions.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Raises the soft RLIMIT_NOFILE to the hard limit (as the JVM does for Kafka at start-up).
/// Returns the soft limit in force afterwards; never fails the start (the limit only bounds
/// how many partitions and connections the broker can hold).
pub fn raise_open_files_limit() -> u64 {
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(error) => {
            tracing::warn!(soft, hard, %error, "cannot raise the open-files limit");
            soft
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_limit_is_raised_towards_the_hard_limit() {
        let (before, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let limit = raise_open_files_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(limit, soft);
        assert!(before <= soft && soft <= hard);
    }
}
