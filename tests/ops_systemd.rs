//! The systemd notification protocol, with a fake NOTIFY_SOCKET: a Unix datagram socket in the
//! test that reads what the broker sends (READY=1, WATCHDOG=1, STOPPING=1).

mod ops_support;

use ops_support::{temp_dir, Broker};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Reads datagrams until one contains `wanted` (returns it) or `timeout` passes.
fn wait_for(
    socket: &UnixDatagram,
    wanted: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buffer) {
            Ok(size) => {
                let message = String::from_utf8_lossy(&buffer[..size]).into_owned();
                seen.push(message.clone());
                if message.lines().any(|line| line == wanted) {
                    return Some(message);
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(error) => panic!("recv: {error}"),
        }
    }
    None
}

#[test]
fn ready_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = temp_dir("ops-notify-");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut broker = Broker::spawn(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    let pid = broker.child.as_ref().unwrap().id();
    let mut seen = Vec::new();
    let ready = wait_for(&socket, "READY=1", Duration::from_secs(30), &mut seen)
        .unwrap_or_else(|| panic!("no READY=1 (saw {seen:?}); log:\n{}", broker.log()));
    assert!(ready.contains(&format!("MAINPID={pid}")), "{ready}");
    assert!(ready.contains("STATUS=serving Kafka on"), "{ready}");
    // READY=1 comes once the Kafka port listens.
    assert!(std::net::TcpStream::connect(("127.0.0.1", broker.port)).is_ok());

    // WATCHDOG_USEC=400000: a ping every 200 ms while both shards run their timers.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 3 {
        assert!(
            wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5), &mut seen).is_some(),
            "watchdog pings stopped after {pings} (saw {seen:?}); log:\n{}",
            broker.log()
        );
        pings += 1;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "pings too slow: {:?}",
        started.elapsed()
    );

    let status = broker.stop();
    assert!(
        wait_for(&socket, "STOPPING=1", Duration::from_secs(5), &mut seen).is_some(),
        "no STOPPING=1 (saw {seen:?})"
    );
    assert!(status.success(), "exit {status}; log:\n{}", broker.log());
    let log = broker.log();
    assert!(log.contains("systemd watchdog enabled"), "{log}");
}

#[test]
fn abstract_socket_and_a_watchdog_meant_for_another_process() {
    let name = format!("riptide-ops-test-{}", std::process::id());
    let socket =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
    // WATCHDOG_PID names another process: the broker must not ping on its behalf.
    let mut broker = Broker::spawn(
        &[],
        &[
            ("NOTIFY_SOCKET", &format!("@{name}")),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let mut seen = Vec::new();
    assert!(
        wait_for(&socket, "READY=1", Duration::from_secs(30), &mut seen).is_some(),
        "no READY=1 on the abstract socket (saw {seen:?}); log:\n{}",
        broker.log()
    );
    assert!(
        wait_for(
            &socket,
            "WATCHDOG=1",
            Duration::from_millis(1200),
            &mut seen
        )
        .is_none(),
        "{seen:?}"
    );
    assert!(broker.stop().success());
    assert!(
        wait_for(&socket, "STOPPING=1", Duration::from_secs(5), &mut seen).is_some(),
        "{seen:?}"
    );
}

#[test]
fn without_notify_socket_the_broker_runs_as_before() {
    let mut broker = Broker::start(&[], &[]);
    assert!(broker.stop().success(), "log:\n{}", broker.log());
    assert!(!broker.log().contains("cannot notify systemd"));
}
