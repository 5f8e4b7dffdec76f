//! A small blocking Kafka client over `std::net::TcpStream`, generic over the request types of
//! the `kafka-protocol` crate. Used by the admin CLI (`riptide topic|group|cluster`); usable by
//! tests and tools that need to speak to any Kafka-compatible broker without an async runtime.
//!
//! - [`Connection`] is one TCP connection to one broker. [`Connection::connect`] negotiates
//!   versions with ApiVersions (retrying in v0 when the broker answers UNSUPPORTED_VERSION, as
//!   KIP-511 has it); [`Connection::send`] then sends any `kafka_protocol` request at the
//!   highest version both this codec and the broker support, and decodes the typed response.
//!   [`Connection::send_version`] pins a version.
//! - [`Cluster`] starts from bootstrap addresses, reads Metadata, and keeps one connection per
//!   broker so requests can go to the right one: a partition's leader, the controller, a
//!   group's coordinator.
//! - [`records`] encodes record batches for Produce and decodes the batches Fetch returns.
//!
//! ```no_run
//! use kafka_protocol::messages::MetadataRequest;
//! use riptide::client::{ClientOptions, Connection};
//!
//! let mut connection = Connection::connect("127.0.0.1:9092", &ClientOptions::default())?;
//! let metadata = connection.send(&MetadataRequest::default().with_topics(None))?;
//! println!("{} brokers", metadata.brokers.len());
//! # Ok::<(), riptide::client::ClientError>(())
//! ```
//!
//! Every read and write has a timeout ([`ClientOptions::timeout`]) and responses are bounded
//! ([`ClientOptions::max_response_size_bytes`]). Errors the broker reports inside a response
//! (error codes) are left to the caller, except where this module interprets the response
//! itself (ApiVersions, Metadata lookups, FindCoordinator).

mod cluster;
pub mod records;

pub use cluster::Cluster;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Kafka's UNSUPPORTED_VERSION error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// Settings of a client connection.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent as the request header's client id.
    pub client_id: String,
    /// Connect, read and write timeout.
    pub timeout: Duration,
    /// Responses larger than this are refused (protects against garbage length prefixes).
    pub max_response_size_bytes: usize,
    /// TLS from the first byte (`SSL`, `SASL_SSL`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// A SASL login right after ApiVersions (`SASL_PLAINTEXT`, `SASL_SSL`).
    pub sasl: Option<crate::security::inter_broker::SaslLogin>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_id: "riptide-cli".to_string(),
            timeout: Duration::from_secs(30),
            max_response_size_bytes: 256 * 1024 * 1024,
            tls: None,
            sasl: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{address}: {source}")]
    Io {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Protocol(String),
    /// The broker does not serve this API, or no version both sides speak.
    #[error("the broker does not support {api}{detail}")]
    UnsupportedApi { api: String, detail: String },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {name} (error code {code})")]
    Kafka {
        context: String,
        code: i16,
        name: String,
    },
}

impl ClientError {
    /// A Kafka error for `code` (`None` when the code is 0).
    pub fn from_code(code: i16, context: impl Into<String>) -> Option<ClientError> {
        code.err().map(|error| ClientError::Kafka {
            context: context.into(),
            code,
            name: format!("{error:?}"),
        })
    }

    pub fn is_unsupported_api(&self) -> bool {
        matches!(self, ClientError::UnsupportedApi { .. })
    }
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// Returns `Err` for a non-zero Kafka error code.
pub fn check_code(code: i16, context: impl FnOnce() -> String) -> Result<()> {
    match ClientError::from_code(code, "") {
        None => Ok(()),
        Some(ClientError::Kafka { code, name, .. }) => Err(ClientError::Kafka {
            context: context(),
            code,
            name,
        }),
        Some(other) => Err(other),
    }
}

/// Version range of one API as the broker advertised it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerApi {
    pub min_version: i16,
    pub max_version: i16,
}

/// TCP, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buffer),
            Stream::Tls(stream) => stream.read(buffer),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buffer),
            Stream::Tls(stream) => stream.write(buffer),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

/// One connection to one broker, with the API versions it advertised.
pub struct Connection {
    stream: Stream,
    address: String,
    options: ClientOptions,
    next_correlation_id: i32,
    apis: BTreeMap<i16, BrokerApi>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `address` (`host:port`) and negotiates API versions.
    pub fn connect(address: &str, options: &ClientOptions) -> Result<Connection> {
        let io_error = |source| ClientError::Io {
            address: address.to_string(),
            source,
        };
        let mut last_error = None;
        let mut stream = None;
        for socket_address in address.to_socket_addrs().map_err(io_error)? {
            match TcpStream::connect_timeout(&socket_address, options.timeout) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = Some(error),
            }
        }
        let stream = stream.ok_or_else(|| {
            io_error(last_error.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
            }))
        })?;
        stream
            .set_read_timeout(Some(options.timeout))
            .map_err(io_error)?;
        stream
            .set_write_timeout(Some(options.timeout))
            .map_err(io_error)?;
        let _ = stream.set_nodelay(true);
        let stream = match &options.tls {
            None => Stream::Plain(stream),
            Some(config) => {
                let (host, _) = crate::config::split_host_port(address)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|e| ClientError::Protocol(format!("{host}: not a TLS name: {e}")))?;
                let session = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| ClientError::Protocol(format!("{address}: TLS: {e}")))?;
                Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
            }
        };
        let mut connection = Connection {
            stream,
            address: address.to_string(),
            options: options.clone(),
            next_correlation_id: 1,
            apis: BTreeMap::new(),
        };
        connection.negotiate()?;
        if let Some(login) = options.sasl.clone() {
            connection.log_in(&login)?;
        }
        Ok(connection)
    }

    /// SaslHandshake, then SaslAuthenticate until the mechanism is done.
    fn log_in(&mut self, login: &crate::security::inter_broker::SaslLogin) -> Result<()> {
        use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
        let mut client = login.client();
        let handshake = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(client.mechanism_name()));
        let answer = self.send_version(&handshake, 1)?;
        check_code(answer.error_code, || {
            format!(
                "SASL handshake ({}) with {}",
                client.mechanism_name(),
                self.address
            )
        })?;
        let mut message = client.start();
        loop {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message));
            let answer = self.send_version(&request, 1)?;
            check_code(answer.error_code, || {
                format!(
                    "SASL login as {} with {}: {}",
                    login.username,
                    self.address,
                    answer.error_message.as_deref().unwrap_or("")
                )
            })?;
            match client.step(&answer.auth_bytes) {
                Ok(Some(next)) => message = next,
                Ok(None) => return Ok(()),
                Err(error) => {
                    return Err(ClientError::Protocol(format!(
                        "SASL login with {}: {error}",
                        self.address
                    )))
                }
            }
        }
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The APIs and versions the broker advertised, by API key.
    pub fn broker_apis(&self) -> &BTreeMap<i16, BrokerApi> {
        &self.apis
    }

    /// True when the broker serves `key` in a version this codec speaks.
    pub fn supports(&self, key: ApiKey) -> bool {
        let codec = key.valid_versions();
        self.apis.get(&(key as i16)).is_some_and(|broker| {
            broker.min_version.max(codec.min) <= broker.max_version.min(codec.max)
        })
    }

    /// The highest version of `R` both this codec and the broker support.
    pub fn version_for<R: Request>(&self) -> Result<i16> {
        let name = api_name(R::KEY);
        let Some(broker) = self.apis.get(&R::KEY) else {
            return Err(ClientError::UnsupportedApi {
                api: name,
                detail: String::new(),
            });
        };
        let low = broker.min_version.max(R::VERSIONS.min);
        let high = broker.max_version.min(R::VERSIONS.max);
        if low > high {
            return Err(ClientError::UnsupportedApi {
                api: name,
                detail: format!(
                    " in a common version (broker {}..={}, client {}..={})",
                    broker.min_version,
                    broker.max_version,
                    R::VERSIONS.min,
                    R::VERSIONS.max
                ),
            });
        }
        Ok(high)
    }

    /// Sends `request` at the highest common version and returns the decoded response.
    pub fn send<R: Request>(&mut self, request: &R) -> Result<R::Response> {
        let version = self.version_for::<R>()?;
        self.send_version(request, version)
    }

    /// Sends `request` at `version` and returns the decoded response.
    pub fn send_version<R: Request>(&mut self, request: &R, version: i16) -> Result<R::Response> {
        let correlation_id = self.write_request(request, version)?;
        let mut body = self.read_response(correlation_id, R::Response::header_version(version))?;
        R::Response::decode(&mut body, version).map_err(|e| {
            ClientError::Protocol(format!(
                "cannot decode {} v{version} response from {}: {e}",
                api_name(R::KEY),
                self.address
            ))
        })
    }

    /// Sends a request that gets no response (Produce with acks=0).
    pub fn send_without_response<R: Request>(&mut self, request: &R) -> Result<()> {
        let version = self.version_for::<R>()?;
        self.write_request(request, version).map(|_| ())
    }

    fn write_request<R: Request>(&mut self, request: &R, version: i16) -> Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1).max(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.options.client_id.clone())));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        let encoded = header
            .encode(&mut frame, R::header_version(version))
            .and_then(|()| request.encode(&mut frame, version));
        encoded.map_err(|e| {
            ClientError::Protocol(format!(
                "cannot encode {} v{version}: {e}",
                api_name(R::KEY)
            ))
        })?;
        let size = i32::try_from(frame.len() - 4)
            .map_err(|_| ClientError::Protocol("request larger than 2 GiB".into()))?;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        self.stream
            .write_all(&frame)
            .and_then(|()| self.stream.flush())
            .map_err(|source| self.io(source))?;
        Ok(correlation_id)
    }

    fn read_response(&mut self, correlation_id: i32, header_version: i16) -> Result<Bytes> {
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|source| self.io(source))?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > self.options.max_response_size_bytes {
            return Err(ClientError::Protocol(format!(
                "{}: response size {size} out of bounds",
                self.address
            )));
        }
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|source| self.io(source))?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, header_version).map_err(|e| {
            ClientError::Protocol(format!("{}: bad response header: {e}", self.address))
        })?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Protocol(format!(
                "{}: response for correlation id {} while waiting for {correlation_id}",
                self.address, header.correlation_id
            )));
        }
        Ok(frame)
    }

    fn io(&self, source: std::io::Error) -> ClientError {
        ClientError::Io {
            address: self.address.clone(),
            source,
        }
    }

    /// ApiVersions at our highest version; on UNSUPPORTED_VERSION the broker answers in v0
    /// with its own range, and we retry at the highest version both speak.
    fn negotiate(&mut self) -> Result<()> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("riptide-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max;
        for _attempt in 0..2 {
            let correlation_id = self.write_request(&request, version)?;
            // ApiVersions responses always use header v0 (KIP-511).
            let body = self.read_response(correlation_id, 0)?;
            let error_code = body.clone().get_i16();
            let response = if error_code == UNSUPPORTED_VERSION {
                ApiVersionsResponse::decode(&mut body.clone(), 0)
            } else {
                ApiVersionsResponse::decode(&mut body.clone(), version)
            }
            .map_err(|e| {
                ClientError::Protocol(format!("{}: bad ApiVersions response: {e}", self.address))
            })?;
            if response.error_code == UNSUPPORTED_VERSION {
                let broker_max = response
                    .api_keys
                    .iter()
                    .find(|api| api.api_key == ApiKey::ApiVersions as i16)
                    .map_or(0, |api| api.max_version);
                let next = broker_max.min(ApiVersionsRequest::VERSIONS.max);
                if next >= version {
                    break;
                }
                version = next;
                continue;
            }
            check_code(response.error_code, || {
                format!("ApiVersions from {}", self.address)
            })?;
            self.apis = response
                .api_keys
                .iter()
                .map(|api| {
                    (
                        api.api_key,
                        BrokerApi {
                            min_version: api.min_version,
                            max_version: api.max_version,
                        },
                    )
                })
                .collect();
            return Ok(());
        }
        Err(ClientError::UnsupportedApi {
            api: "ApiVersions".into(),
            detail: " in a common version".into(),
        })
    }
}

/// Kafka's name of an API key, or its number.
pub fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(key) => format!("{key:?}"),
        Err(_) => format!("API key {key}"),
    }
}

/// Kafka's string type from a `&str`.
pub fn str_bytes(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_errors_carry_their_name() {
        assert!(ClientError::from_code(0, "x").is_none());
        let error = ClientError::from_code(3, "topic t").unwrap();
        assert_eq!(
            error.to_string(),
            "topic t: UnknownTopicOrPartition (error code 3)"
        );
        assert!(check_code(0, || unreachable!()).is_ok());
        assert!(check_code(36, || "create".into()).is_err());
    }
}
