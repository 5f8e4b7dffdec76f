//! Listeners and connections. Every shard binds the Kafka port itself (SO_REUSEPORT) and serves the
//! connections the kernel hands it, start to end, on its own core.
//!
//! A connection reads length-prefixed frames and starts a handler task per request, up to
//! `max_in_flight_requests_per_connection` at once (more stops the reading: backpressure);
//! responses are written strictly in request order, as Kafka clients require.
//!
//! A connection throttled by a client quota (its session's `throttle`) handles no further
//! request until the throttle time has passed: Kafka's channel muting.
//!
//! Every wait on the client is bounded, so no client holds a connection, its request memory or
//! its responses indefinitely: a connection with nothing in flight is closed after
//! `connections_max_idle_ms` without a request; a frame's size prefix must arrive within
//! `request_read_timeout_ms` of its first byte, and its body within as much reading time (waits
//! for request memory excluded); a response must be taken by the client within
//! `response_write_timeout_ms`. Request memory is reserved as a frame's bytes arrive, not when
//! its size is declared (`request_memory`). A shard serves at most `max_connections_per_shard`
//! connections, and the broker at most `max_connections_per_ip` from one client address
//! (`connections_per_ip`).

pub mod connections_per_ip;
pub mod request_memory;

use crate::api::{self, Outcome};
use crate::metrics::ConnectionClosed;
use crate::security::session::Session;
use crate::security::tls::TlsAcceptor;
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{FutureExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use request_memory::FrameMemory;
use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Frames shorter than this cannot hold a request header (api key, version, correlation id).
const MIN_FRAME_SIZE_BYTES: usize = 8;

pub fn bind_listener(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Refusals of connections over the limit are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(1);

thread_local! {
    static LAST_REFUSAL_LOG: Cell<Option<Instant>> = const { Cell::new(None) };
    static LAST_IP_REFUSAL_LOG: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Whether a refusal should be logged now (at most once per `REFUSAL_LOG_INTERVAL` per kind and
/// shard: a flood of connections must not become a flood of log lines).
fn refusal_log_due(last_log: &'static std::thread::LocalKey<Cell<Option<Instant>>>) -> bool {
    let now = Instant::now();
    last_log.with(|last| {
        let due = last
            .get()
            .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_INTERVAL);
        if due {
            last.set(Some(now));
        }
        due
    })
}

/// Accepts connections on one Kafka listener until shutdown begins.
pub async fn accept_loop(
    shard: Rc<Shard>,
    listener_config: Rc<crate::config::Listener>,
    listener: TcpListener,
    tls: Option<Rc<TlsAcceptor>>,
) {
    let mut stopped = shard.stopped().fuse();
    loop {
        let accepted = futures::select! {
            _ = stopped => break,
            accepted = listener.accept().fuse() => accepted,
        };
        match accepted {
            Ok(stream)
                if crate::metrics::connections_open_here()
                    >= shard.config.max_connections_per_shard as u64 =>
            {
                crate::metrics::connection_closed(ConnectionClosed::OverLimit);
                if refusal_log_due(&LAST_REFUSAL_LOG) {
                    tracing::warn!(shard = shard.id, peer = ?stream.peer_addr().ok(),
                        max_connections_per_shard = shard.config.max_connections_per_shard,
                        "refusing connections: the shard serves its maximum");
                }
                drop(stream);
            }
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                // Counted until the connection's task ends, whichever shard it runs on.
                let ip_connection = match &shard.connections_per_ip {
                    None => None,
                    Some(counter) => match counter.open(peer.ip()) {
                        Ok(counted) => Some(counted),
                        Err(limit) => {
                            crate::metrics::connection_closed(ConnectionClosed::OverIpLimit);
                            if refusal_log_due(&LAST_IP_REFUSAL_LOG) {
                                tracing::warn!(shard = shard.id, %peer,
                                    max_connections_per_ip = limit,
                                    "refusing connections: the address has its maximum open");
                            }
                            drop(stream);
                            continue;
                        }
                    },
                };
                let connection_shard = shard.clone();
                let listener_config = listener_config.clone();
                let tls = tls.clone();
                let spawned = shard.stopping.spawn(async move {
                    let _ip_connection = ip_connection;
                    match tls {
                        None => {
                            let session = Session::new(listener_config, None);
                            serve_plaintext(connection_shard, stream, peer, session).await
                        }
                        Some(tls) => {
                            serve_tls(connection_shard, stream, peer, listener_config, tls).await
                        }
                    }
                });
                if spawned.is_err() {
                    break;
                }
                if let Ok(task) = spawned {
                    task.detach();
                }
            }
            Err(error) => {
                tracing::warn!(shard = shard.id, "accept failed: {error}");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    tracing::debug!(shard = shard.id, "stopped accepting connections");
}

/// What the idle check needs of a connection.
struct Activity {
    /// Requests read whose response is not yet written.
    requests: Cell<usize>,
    /// When the last request was read or the last response written.
    last_at: Cell<Instant>,
}

/// Marks a request done once its response is written (or abandoned).
struct ResponseDone<'a>(&'a Activity);

impl Drop for ResponseDone<'_> {
    fn drop(&mut self) {
        let activity = self.0;
        assert!(activity.requests.get() > 0, "a response for a request read");
        activity.requests.set(activity.requests.get() - 1);
        activity.last_at.set(Instant::now());
    }
}

/// Why a connection's reader stopped.
enum ReadEnd {
    /// The client closed its side, or shutdown began: finish what is in flight.
    Finished,
    /// Protocol violation or I/O error: drop the connection.
    Abort,
}

async fn serve_plaintext(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    session: Rc<Session>,
) {
    let _ = stream.set_nodelay(true);
    // Metrics hook: counts the connection as open until this function returns.
    let _connection = crate::metrics::connection_opened();
    tracing::debug!(shard = shard.id, %peer, "connection accepted");
    // The writer sends cold file regions itself (splice on a side ring), on this socket.
    let socket_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (reader, writer) = stream.buffered().split();
    let socket = Socket {
        fd: socket_fd,
        zero_copy: true,
    };
    serve_connection(shard, reader, writer, socket, peer, session).await;
}

/// Records sent through TLS are buffered up to this size, so a response's many small pieces
/// become few TLS records.
const TLS_WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Runs the TLS handshake (bounded by `request_read_timeout_ms`), then serves the connection
/// through the TLS stream. The principal of an `SSL` listener is the client certificate's
/// subject, when the client sent one.
async fn serve_tls(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: SocketAddr,
    listener: Rc<crate::config::Listener>,
    tls: Rc<TlsAcceptor>,
) {
    let _ = stream.set_nodelay(true);
    let _connection = crate::metrics::connection_opened();
    let socket_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let handshake_timeout = Duration::from_millis(shard.config.request_read_timeout_ms);
    let acceptor = futures_rustls::TlsAcceptor::from(tls.config());
    let stream = match within(handshake_timeout, acceptor.accept(stream)).await {
        Some(Ok(stream)) => stream,
        Some(Err(error)) => {
            crate::metrics::connection_closed(ConnectionClosed::TlsHandshakeFailed);
            tracing::warn!(%peer, listener = %listener.name,
                "closing connection: TLS handshake failed: {error}");
            return;
        }
        None => {
            crate::metrics::connection_closed(ConnectionClosed::TlsHandshakeFailed);
            tracing::warn!(%peer, request_read_timeout_ms = handshake_timeout.as_millis() as u64,
                "closing connection: TLS handshake not completed in time");
            return;
        }
    };
    let (_, connection) = stream.get_ref();
    let certificate_principal = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| crate::security::tls::certificate_principal(certificate));
    tracing::debug!(shard = shard.id, %peer, version = ?connection.protocol_version(),
        principal = ?certificate_principal, "TLS connection accepted");
    let _tls = crate::metrics::tls_connection_opened();
    let session = Session::new(listener, certificate_principal);
    let (reader, writer) = futures::io::AsyncReadExt::split(stream);
    let writer = futures::io::BufWriter::with_capacity(TLS_WRITE_BUFFER_BYTES, writer);
    let socket = Socket {
        fd: socket_fd,
        zero_copy: false,
    };
    serve_connection(shard, reader, writer, socket, peer, session).await;
}

/// Checks the shard's TLS files every `ssl_reload_check_interval_ms` (and after SIGHUP) and
/// swaps in a new configuration when they changed; open connections keep their session.
pub async fn reload_tls(shard: Rc<Shard>, tls: Rc<TlsAcceptor>) {
    let interval = Duration::from_millis(shard.config.ssl_reload_check_interval_ms);
    let mut stopped = shard.stopped().fuse();
    loop {
        futures::select! {
            _ = stopped => return,
            _ = glommio::timer::sleep(interval).fuse() => {}
        }
        match tls.reload_if_changed() {
            Ok(false) => {}
            Ok(true) => tracing::info!(shard = shard.id, "TLS certificates reloaded"),
            Err(error) => tracing::warn!(
                shard = shard.id,
                "TLS certificates not reloaded, the previous ones stay in use: {error}"
            ),
        }
    }
}

/// The connection's socket, for what goes around its stream: splicing file regions to it and
/// shutting it down.
#[derive(Clone, Copy)]
struct Socket {
    fd: std::os::fd::RawFd,
    /// File regions may be spliced to the socket: false under TLS (the stream encrypts).
    zero_copy: bool,
}

async fn serve_connection<R, W>(
    shard: Rc<Shard>,
    mut reader: R,
    mut writer: W,
    socket: Socket,
    peer: SocketAddr,
    session: Rc<Session>,
) where
    R: futures::io::AsyncRead + Unpin,
    W: futures::io::AsyncWrite + Unpin,
{
    let socket_fd = socket.fd;
    let capacity = shard.config.max_in_flight_requests_per_connection;
    let (in_flight_sender, mut in_flight_receiver) =
        futures::channel::mpsc::channel::<glommio::task::JoinHandle<Outcome>>(capacity - 1);
    // `futures` mpsc bounds at capacity + senders; one sender gives exactly `capacity`.
    // Requests read whose response is not yet written (the connection is not idle meanwhile),
    // and when the last request was read or response written (idleness counts from there).
    let activity = Rc::new(Activity {
        requests: Cell::new(0),
        last_at: Cell::new(Instant::now()),
    });
    let read_side = {
        let shard = shard.clone();
        let activity = activity.clone();
        async move {
            let mut in_flight_sender = in_flight_sender;
            let mut stopped = shard.stopped().fuse();
            loop {
                let frame = futures::select! {
                    _ = stopped => return ReadEnd::Finished,
                    frame = read_frame(&mut reader, &shard, peer, &activity, &session).fuse() => frame,
                };
                let (frame, memory) = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return ReadEnd::Finished,
                    Err(()) => return ReadEnd::Abort,
                };
                // A client over its quota: the next request waits out the throttle (Kafka
                // mutes the channel). One `Cell` read when nothing is throttled.
                if let Some(throttle) = session.throttle_remaining() {
                    futures::select! {
                        _ = stopped => return ReadEnd::Finished,
                        _ = glommio::timer::sleep(throttle).fuse() => {}
                    }
                }
                activity.requests.set(activity.requests.get() + 1);
                let handler = glommio::spawn_local({
                    let shard = shard.clone();
                    let session = session.clone();
                    async move {
                        // The request's memory stays reserved until its handler is done.
                        let _memory = memory;
                        api::handle_request(shard, frame, peer, session).await
                    }
                })
                .detach();
                if futures::SinkExt::send(&mut in_flight_sender, handler)
                    .await
                    .is_err()
                {
                    return ReadEnd::Abort;
                }
            }
        }
    };
    let response_write_timeout = Duration::from_millis(shard.config.response_write_timeout_ms);
    let write_side = async move {
        while let Some(handler) = in_flight_receiver.next().await {
            let outcome = handler.await;
            let _done = ResponseDone(&activity);
            match outcome {
                Some(Outcome::Respond(response)) => {
                    let written = futures::select! {
                        written = write_response(&mut writer, socket, &response).fuse() => written,
                        _ = glommio::timer::sleep(response_write_timeout).fuse() => {
                            crate::metrics::connection_closed(ConnectionClosed::ResponseTimeout);
                            tracing::warn!(%peer, response_write_timeout_ms =
                                response_write_timeout.as_millis() as u64,
                                "closing connection: the client did not read its response in time");
                            // Also ends a zero-copy transfer still writing to a dup of the socket.
                            let _ = nix::sys::socket::shutdown(
                                socket_fd,
                                nix::sys::socket::Shutdown::Both,
                            );
                            return;
                        }
                    };
                    if let Err(error) = written {
                        tracing::debug!(%peer, "write failed, closing: {error}");
                        return;
                    }
                }
                Some(Outcome::NoResponse) => {}
                Some(Outcome::RespondAndClose(response, reason)) => {
                    let _ = write_response(&mut writer, socket, &response).await;
                    let _ = writer.flush().await;
                    tracing::warn!(%peer, "closing connection: {reason}");
                    return;
                }
                Some(Outcome::Close(reason)) => {
                    tracing::warn!(%peer, "closing connection: {reason}");
                    return;
                }
                None => return,
            }
        }
        let _ = writer.flush().await;
    };
    futures::pin_mut!(read_side);
    futures::pin_mut!(write_side);
    match futures::future::select(read_side, write_side).await {
        futures::future::Either::Left((ReadEnd::Finished, write_side)) => write_side.await,
        futures::future::Either::Left((ReadEnd::Abort, _)) => {}
        futures::future::Either::Right(((), _)) => {}
    }
    tracing::debug!(shard = shard.id, %peer, "connection closed");
}

/// Reads one frame, reserving the shard's request memory as its bytes arrive (waiting while the
/// shard is full: backpressure). `Ok(None)` on a clean end of stream; `Err` when the connection
/// must close: a protocol violation, an I/O error, or a client that breaks a time bound (idle
/// with nothing in flight, or a frame arriving too slowly).
async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    shard: &Shard,
    peer: SocketAddr,
    activity: &Activity,
    session: &Session,
) -> Result<Option<(Bytes, FrameMemory)>, ()> {
    // Before authentication only small SASL requests may come: a stranger cannot make the
    // shard reserve large frames.
    let max_request_size_bytes = if session.is_authenticated() {
        shard.config.max_request_size_bytes
    } else {
        shard.config.sasl_max_receive_size_bytes
    };
    let idle = Duration::from_millis(shard.config.connections_max_idle_ms);
    let read_timeout = Duration::from_millis(shard.config.request_read_timeout_ms);
    let mut size_prefix = [0u8; 4];
    {
        // The same read future lives across idle checks: a byte it took is never lost.
        let first_byte = reader.read_exact(&mut size_prefix[..1]).fuse();
        futures::pin_mut!(first_byte);
        activity.last_at.set(Instant::now());
        let mut check_in = idle;
        loop {
            futures::select! {
                read = first_byte => match read {
                    Ok(()) => break,
                    Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
                        return Ok(None)
                    }
                    Err(error) => {
                        tracing::debug!(%peer, "read failed: {error}");
                        return Err(());
                    }
                },
                _ = glommio::timer::sleep(check_in).fuse() => {
                    let quiet = activity.last_at.get().elapsed();
                    let busy = activity.requests.get() > 0;
                    if !busy && quiet >= idle {
                        crate::metrics::connection_closed(ConnectionClosed::Idle);
                        tracing::debug!(%peer, connections_max_idle_ms = idle.as_millis() as u64,
                            "closing idle connection");
                        return Err(());
                    }
                    check_in = if busy { idle } else { idle - quiet };
                }
            }
        }
    }
    let rest_of_prefix = within(read_timeout, reader.read_exact(&mut size_prefix[1..])).await;
    match rest_of_prefix {
        Some(Ok(())) => {}
        Some(Err(error)) => {
            tracing::warn!(%peer, "closing connection: truncated frame size ({error})");
            return Err(());
        }
        None => {
            crate::metrics::connection_closed(ConnectionClosed::RequestTimeout);
            tracing::warn!(%peer, request_read_timeout_ms = read_timeout.as_millis() as u64,
                "closing connection: frame size not received in time");
            return Err(());
        }
    }
    let size = i32::from_be_bytes(size_prefix);
    // A raw SASL token (after SaslHandshake v0) is no request and may be shorter than a header.
    let min_frame_size_bytes = if session.expects_raw_sasl_token() {
        1
    } else {
        MIN_FRAME_SIZE_BYTES
    };
    if size < 0 || (size as usize) < min_frame_size_bytes {
        tracing::warn!(%peer, size, "closing connection: frame size is too small to hold a request");
        return Err(());
    }
    let size = size as usize;
    if size > max_request_size_bytes {
        tracing::warn!(
            %peer,
            size,
            max_request_size_bytes,
            "closing connection: request frame exceeds max_request_size_bytes"
        );
        return Err(());
    }
    let Some((frame, memory)) = read_body(reader, shard, peer, size, read_timeout).await else {
        return Err(());
    };
    crate::metrics::add_bytes_received(size_prefix.len() + size);
    Ok(Some((frame.freeze(), memory)))
}

/// Reads a frame's body of `size` bytes, reserving request memory as the bytes arrive (see
/// `request_memory`), within `read_timeout` of reading time: waits for memory do not count,
/// they are the shard's backpressure, not the client's slowness. `None` when the connection
/// must close.
async fn read_body<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    shard: &Shard,
    peer: SocketAddr,
    size: usize,
    read_timeout: Duration,
) -> Option<(BytesMut, FrameMemory)> {
    let mut memory = FrameMemory::new(&shard.request_memory, size);
    // Address space for the whole frame, so it is never copied to grow; its pages are written
    // (zeroed just before the read that fills them) only as far as memory is reserved.
    let mut frame = BytesMut::with_capacity(size);
    let mut deadline = Instant::now() + read_timeout;
    let timer = glommio::timer::sleep(read_timeout).fuse();
    futures::pin_mut!(timer);
    while frame.len() < size {
        let arrived = frame.len();
        if !memory.try_grow(arrived) {
            let waiting_since = Instant::now();
            if memory.grow_waiting(arrived).await.is_err() {
                return None;
            }
            deadline += waiting_since.elapsed();
            timer.set(
                glommio::timer::sleep(deadline.saturating_duration_since(Instant::now())).fuse(),
            );
        }
        let reserved = memory.reserved_bytes();
        frame.resize(reserved, 0);
        let read = reader.read_exact(&mut frame[arrived..reserved]).fuse();
        futures::pin_mut!(read);
        futures::select! {
            read = read => if let Err(error) = read {
                tracing::warn!(%peer, size, received = arrived,
                    "closing connection: truncated frame ({error})");
                return None;
            },
            _ = timer => {
                crate::metrics::connection_closed(ConnectionClosed::RequestTimeout);
                tracing::warn!(%peer, size, received = arrived,
                    request_read_timeout_ms = read_timeout.as_millis() as u64,
                    "closing connection: request frame not received in time");
                return None;
            }
        }
    }
    Some((frame, memory))
}

/// `work`'s output, or `None` if it takes longer than `timeout` (it is dropped then).
async fn within<T>(timeout: Duration, work: impl std::future::Future<Output = T>) -> Option<T> {
    futures::select! {
        output = work.fuse() => Some(output),
        _ = glommio::timer::sleep(timeout).fuse() => None,
    }
}

/// Writes a response's chunks in order: bytes through the stream, file regions with a
/// zero-copy splice straight to the socket (after the bytes before them have been written:
/// glommio's stream has no write buffer, `write_all` returns once they are in the socket).
async fn write_response<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    socket: Socket,
    response: &api::Response,
) -> std::io::Result<()> {
    for chunk in response.chunks() {
        match chunk {
            api::ResponseChunk::Bytes(bytes) => writer.write_all(bytes).await?,
            api::ResponseChunk::File(region) => {
                if !socket.zero_copy {
                    // Fetch reads into memory for these connections (`zero_copy_allowed`).
                    return Err(std::io::Error::other(
                        "a file region for a connection that cannot splice",
                    ));
                }
                writer.flush().await?;
                crate::log::send_file_region(region, socket.fd).await?;
            }
        }
        crate::metrics::add_bytes_sent(chunk.len());
    }
    // TLS buffers records until flushed; plaintext writes went to the socket already.
    writer.flush().await
}
