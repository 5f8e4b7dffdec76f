//! One Kafka-protocol connection from this broker to another (replica fetches, transaction
//! markers), on glommio, over the inter-broker listener: TLS and a SASL login first when that
//! listener asks for them. Requests go one at a time (a fetcher waits for each answer before
//! the next), each bounded by a timeout; any error drops the connection and the caller
//! reconnects.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};

use crate::cluster::metadata::BrokerRecord;
use crate::security::inter_broker::{InterBrokerClient, SaslLogin};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

/// Client id the leader sees in its logs for replica traffic.
const CLIENT_ID: &str = "riptide-replica-fetcher";

/// A TCP stream, or a TLS session over one.
trait PeerStream: futures::AsyncRead + futures::AsyncWrite + Unpin {}
impl<T: futures::AsyncRead + futures::AsyncWrite + Unpin> PeerStream for T {}

pub struct PeerConnection {
    stream: Box<dyn PeerStream>,
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
    /// Connects to `broker` on the inter-broker listener, with its TLS handshake and SASL
    /// login, all within `timeout`.
    pub async fn connect(
        inter_broker: &InterBrokerClient,
        broker: &BrokerRecord,
        timeout: Duration,
        max_response_size_bytes: usize,
    ) -> io::Result<PeerConnection> {
        let Some((host, port)) = inter_broker.address_of(broker) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "broker {} has no {} listener",
                    broker.node_id, inter_broker.settings.listener_name
                ),
            ));
        };
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        within(timeout, "connect", async {
            let tcp = TcpStream::connect(address.as_str())
                .await
                .map_err(|error| io::Error::other(error.to_string()))?;
            tcp.set_nodelay(true).ok();
            let stream: Box<dyn PeerStream> = match &inter_broker.tls {
                None => Box::new(tcp),
                Some(tls) => Box::new(tls.connect(&host, tcp).await?),
            };
            let mut connection = PeerConnection {
                stream,
                address: address.clone(),
                next_correlation_id: 1,
                max_response_size_bytes,
            };
            if let Some(login) = &inter_broker.settings.sasl {
                connection.log_in(login, timeout).await?;
            }
            Ok(connection)
        })
        .await
    }

    /// SaslHandshake v1, then SaslAuthenticate v1 until the mechanism is done.
    async fn log_in(&mut self, login: &SaslLogin, timeout: Duration) -> io::Result<()> {
        let address = self.address.clone();
        let refused = |what: &str, code: i16, message: Option<StrBytes>| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{what} refused by {address}: error {code} {}",
                    message.as_deref().unwrap_or("")
                ),
            )
        };
        let mut client = login.client();
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(client.mechanism_name()));
        let answer = self.call(&handshake, 1, timeout).await?;
        if answer.error_code != 0 {
            return Err(refused("SASL handshake", answer.error_code, None));
        }
        let mut message = client.start();
        loop {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
            let answer = self.call(&request, 1, timeout).await?;
            if answer.error_code != 0 {
                return Err(refused(
                    "SASL login",
                    answer.error_code,
                    answer.error_message,
                ));
            }
            match client.step(&answer.auth_bytes) {
                Ok(Some(next)) => message = next,
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("SASL login with {address}: {error}"),
                    ))
                }
            }
        }
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
            // TLS holds written records until flushed.
            stream.flush().await?;
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
