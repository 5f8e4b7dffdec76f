//! The systemd notification protocol (`sd_notify(3)`): newline-separated `KEY=VALUE` lines sent
//! as one datagram to the Unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without `NOTIFY_SOCKET` nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `"READY=1"`) to systemd. `Ok(false)` when not started with
/// `Type=notify` (no `NOTIFY_SOCKET`).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket_name) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let address = socket_address(&socket_name)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}

fn socket_address(name: &OsStr) -> io::Result<SocketAddr> {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(name),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET={name:?} is neither an absolute path nor @abstract"),
        )),
    }
}

/// The watchdog interval systemd expects pings within (`WATCHDOG_USEC`, from `WatchdogSec=`),
/// if it is meant for this process (`WATCHDOG_PID` unset or ours).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_interval_is_for_this_process_only() {
        assert_eq!(watchdog_interval_from(None, None, 7), None);
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            watchdog_interval_from(Some("500000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_interval_from(Some("500000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval_from(Some("x"), None, 7), None);
    }

    #[test]
    fn socket_names() {
        assert!(socket_address(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(socket_address(OsStr::new("@abstract")).is_ok());
        assert!(socket_address(OsStr::new("relative")).is_err());
    }

    #[test]
    fn sends_one_datagram_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let address = socket_address(path.as_os_str()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1\nSTATUS=x", &address)
            .unwrap();
        let mut buffer = [0u8; 64];
        let size = receiver.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..size], b"READY=1\nSTATUS=x");
    }
}
