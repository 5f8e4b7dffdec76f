//! One Kafka-protocol connection from a follower shard to a leader node, on glommio. Requests
//! go one at a time (a fetcher waits for each answer before the next), each bounded by a
//! timeout; any error drops the connection and the caller reconnects.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Client id the leader sees in its logs for replica traffic.
const CLIENT_ID: &str = "riptide-replica-fetcher";

pub struct PeerConnection {
    stream: TcpStream,
    address: String,
    next_correlation_id: i32,
    max_response_size_bytes: usize,
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl std::future::Future<Output = io::Result<T>>,
) -> io::Result<T> {
    futures::select! {
        result = work.fuse() => result,
        _ = glommio::timer::sleep(timeout).fuse() => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("{what} timed out after {} ms", timeout.as_millis()),
        )),
    }
}

impl PeerConnection {
    pub async fn connect(
        address: &str,
        timeout: Duration,
        max_response_size_bytes: usize,
    ) -> io::Result<PeerConnection> {
        let stream = within(timeout, "connect", async {
            TcpStream::connect(address)
                .await
                .map_err(|error| io::Error::other(error.to_string()))
        })
        .await?;
        stream.set_nodelay(true).ok();
        Ok(PeerConnection {
            stream,
            address: address.to_string(),
            next_correlation_id: 1,
            max_response_size_bytes,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Sends `request` at `version` and decodes the answer.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> io::Result<R::Response> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut frame = BytesMut::with_capacity(512);
        frame.put_i32(0);
        header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version))
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error.to_string()))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let max_size = self.max_response_size_bytes;
        let stream = &mut self.stream;
        let mut body = within(timeout, "replica request", async move {
            stream.write_all(&frame).await?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).await?;
            let size = i32::from_be_bytes(size);
            if size < 4 || size as usize > max_size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("response size {size} out of bounds (max {max_size})"),
                ));
            }
            let mut body = vec![0u8; size as usize];
            stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        })
        .await?;
        let invalid =
            |error: anyhow::Error| io::Error::new(io::ErrorKind::InvalidData, error.to_string());
        let response_header =
            ResponseHeader::decode(&mut body, R::Response::header_version(version))
                .map_err(invalid)?;
        if response_header.correlation_id != correlation_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "correlation id {} instead of {correlation_id}",
                    response_header.correlation_id
                ),
            ));
        }
        R::Response::decode(&mut body, version).map_err(invalid)
    }
}
