//! Listeners and connections. Every shard binds the Kafka port itself (SO_REUSEPORT) and serves the
//! connections the kernel hands it, start to end, on its own core.
//!
//! A connection reads length-prefixed frames and starts a handler task per request, up to
//! `max_in_flight_requests_per_connection` at once (more stops the reading: backpressure);
//! responses are written strictly in request order, as Kafka clients require.

use crate::api::{self, Outcome};
use crate::shard::Shard;
use bytes::{Bytes, BytesMut};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use futures::{FutureExt, StreamExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::StaticPermit;
use std::net::SocketAddr;
use std::rc::Rc;

/// Frames shorter than this cannot hold a request header (api key, version, correlation id).
const MIN_FRAME_SIZE_BYTES: usize = 8;

pub fn bind_listener(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))
}

/// Accepts connections until shutdown begins.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    let mut stopped = shard.stopped().fuse();
    loop {
        let accepted = futures::select! {
            _ = stopped => break,
            accepted = listener.accept().fuse() => accepted,
        };
        match accepted {
            Ok(stream) => {
                let peer = stream
                    .peer_addr()
                    .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                let connection_shard = shard.clone();
                let spawned = shard
                    .stopping
                    .spawn(async move { serve_connection(connection_shard, stream, peer).await });
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

/// Why a connection's reader stopped.
enum ReadEnd {
    /// The client closed its side, or shutdown began: finish what is in flight.
    Finished,
    /// Protocol violation or I/O error: drop the connection.
    Abort,
}

async fn serve_connection(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    // Metrics hook: counts the connection as open until this function returns.
    let _connection = crate::metrics::connection_opened();
    tracing::debug!(shard = shard.id, %peer, "connection accepted");
    // The writer sends cold file regions itself (splice on a side ring), on this socket.
    let socket_fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let (mut reader, mut writer) = stream.buffered().split();
    let capacity = shard.config.max_in_flight_requests_per_connection;
    let (in_flight_sender, mut in_flight_receiver) =
        futures::channel::mpsc::channel::<glommio::task::JoinHandle<Outcome>>(capacity - 1);
    // `futures` mpsc bounds at capacity + senders; one sender gives exactly `capacity`.
    let read_side = {
        let shard = shard.clone();
        async move {
            let mut in_flight_sender = in_flight_sender;
            let mut stopped = shard.stopped().fuse();
            loop {
                let frame = futures::select! {
                    _ = stopped => return ReadEnd::Finished,
                    frame = read_frame(&mut reader, &shard, peer).fuse() => frame,
                };
                let (frame, memory_permit) = match frame {
                    Ok(Some(frame)) => frame,
                    Ok(None) => return ReadEnd::Finished,
                    Err(()) => return ReadEnd::Abort,
                };
                let handler = glommio::spawn_local({
                    let shard = shard.clone();
                    async move {
                        // The request's memory stays reserved until its handler is done.
                        let _memory_permit = memory_permit;
                        api::handle_request(shard, frame, peer).await
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
    let write_side = async move {
        while let Some(handler) = in_flight_receiver.next().await {
            match handler.await {
                Some(Outcome::Respond(response)) => {
                    if let Err(error) = write_response(&mut writer, socket_fd, &response).await {
                        tracing::debug!(%peer, "write failed, closing: {error}");
                        return;
                    }
                }
                Some(Outcome::NoResponse) => {}
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

/// Reads one frame, reserving its size from the shard's request memory first (waiting while the
/// shard is full: backpressure). `Ok(None)` on a clean end of stream; `Err` when the connection
/// must close.
async fn read_frame<R: futures::io::AsyncRead + Unpin>(
    reader: &mut R,
    shard: &Shard,
    peer: SocketAddr,
) -> Result<Option<(Bytes, StaticPermit)>, ()> {
    let max_request_size_bytes = shard.config.max_request_size_bytes;
    let mut size_prefix = [0u8; 4];
    match reader.read_exact(&mut size_prefix).await {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => {
            tracing::debug!(%peer, "read failed: {error}");
            return Err(());
        }
    }
    let size = i32::from_be_bytes(size_prefix);
    if size < 0 || (size as usize) < MIN_FRAME_SIZE_BYTES {
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
    let Ok(memory_permit) = shard
        .request_memory
        .acquire_static_permit(size as u64)
        .await
    else {
        return Err(());
    };
    let mut frame = BytesMut::zeroed(size);
    if let Err(error) = reader.read_exact(&mut frame).await {
        tracing::warn!(%peer, size, "closing connection: truncated frame ({error})");
        return Err(());
    }
    crate::metrics::add_bytes_received(size_prefix.len() + size);
    Ok(Some((frame.freeze(), memory_permit)))
}

/// Writes a response's chunks in order: bytes through the stream, file regions with a
/// zero-copy splice straight to the socket (after the bytes before them have been written:
/// glommio's stream has no write buffer, `write_all` returns once they are in the socket).
async fn write_response<W: futures::io::AsyncWrite + Unpin>(
    writer: &mut W,
    socket_fd: std::os::fd::RawFd,
    response: &api::Response,
) -> std::io::Result<()> {
    for chunk in response.chunks() {
        match chunk {
            api::ResponseChunk::Bytes(bytes) => writer.write_all(bytes).await?,
            api::ResponseChunk::File(region) => {
                writer.flush().await?;
                crate::log::send_file_region(region, socket_fd).await?;
            }
        }
        crate::metrics::add_bytes_sent(chunk.len());
    }
    Ok(())
}
