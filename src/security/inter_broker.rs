//! How a broker reaches the others (replica fetches, transaction markers, transaction
//! verification): on the listener named by `inter_broker_listener_name`, with that listener's
//! security protocol. On a TLS listener it trusts `ssl_ca_location`, presents its own
//! certificate (so `ssl_client_auth=required` holds between brokers too) and, by default, checks
//! that the peer's certificate names the host it dialled. On a SASL listener it logs in with
//! `inter_broker_sasl_mechanism` as `inter_broker_sasl_username` before its first request.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::cluster::metadata::BrokerRecord;
use crate::config::{SaslMechanism, SecurityProtocol};
use crate::security::tls::{read_certificates, FileStamps, ReloadOnChange};

/// TLS material a broker dials its peers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsClientSettings {
    /// CAs the peers' certificates chain to.
    pub ca_path: PathBuf,
    /// Our certificate and key, presented when a peer asks for a client certificate.
    pub certificate_path: PathBuf,
    pub key_path: PathBuf,
    /// Whether a peer's certificate must name the host dialled (`https` identification).
    pub verify_hostname: bool,
}

/// The SASL login a broker uses with its peers.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslLogin {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for SaslLogin {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslLogin")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl SaslLogin {
    /// A fresh client side of this login's exchange.
    pub fn client(&self) -> SaslClient {
        let state = match self.mechanism {
            SaslMechanism::Plain => SaslClientState::Plain,
            SaslMechanism::Scram(mechanism) => SaslClientState::Scram(
                crate::security::scram::ScramClient::new(mechanism, &self.username, &self.password),
            ),
        };
        SaslClient {
            login: self.clone(),
            state,
        }
    }
}

/// The client side of one SASL exchange, without I/O: [`SaslClient::start`] gives the first
/// SaslAuthenticate payload, [`SaslClient::step`] the next one for each server answer, until it
/// returns `None` (done, and for SCRAM the server's signature checked).
pub struct SaslClient {
    login: SaslLogin,
    state: SaslClientState,
}

enum SaslClientState {
    Plain,
    Scram(crate::security::scram::ScramClient),
    /// SCRAM client-final sent: the next answer is server-final.
    ScramFinal(crate::security::scram::ScramClient),
    Done,
}

impl SaslClient {
    pub fn mechanism_name(&self) -> &'static str {
        self.login.mechanism.name()
    }

    pub fn start(&self) -> Vec<u8> {
        match &self.state {
            SaslClientState::Scram(scram) => scram.client_first(),
            _ => format!("\0{}\0{}", self.login.username, self.login.password).into_bytes(),
        }
    }

    /// The server's answer to our last message: the next message, or `None` when done.
    pub fn step(&mut self, answer: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match std::mem::replace(&mut self.state, SaslClientState::Done) {
            SaslClientState::Plain => Ok(None),
            SaslClientState::Scram(mut scram) => {
                let client_final = scram.client_final(answer)?;
                self.state = SaslClientState::ScramFinal(scram);
                Ok(Some(client_final))
            }
            SaslClientState::ScramFinal(scram) => scram.verify_server_final(answer).map(|()| None),
            SaslClientState::Done => Err("SASL exchange already finished".into()),
        }
    }
}

/// The inter-broker listener and what connecting on it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterBrokerSettings {
    pub listener_name: String,
    pub protocol: SecurityProtocol,
    pub tls: Option<TlsClientSettings>,
    pub sasl: Option<SaslLogin>,
}

/// One shard's view of the inter-broker settings.
pub struct InterBrokerClient {
    pub settings: InterBrokerSettings,
    pub tls: Option<TlsClient>,
}

impl InterBrokerClient {
    pub fn new(settings: InterBrokerSettings) -> anyhow::Result<InterBrokerClient> {
        let tls = match &settings.tls {
            Some(tls) => Some(TlsClient::new(tls.clone())?),
            None => None,
        };
        Ok(InterBrokerClient { settings, tls })
    }

    /// The host and port to dial `broker` at: its endpoint on the inter-broker listener.
    pub fn address_of(&self, broker: &BrokerRecord) -> Option<(String, i32)> {
        broker.endpoint(&self.settings.listener_name)
    }
}

/// A TLS client configuration, rebuilt when one of its files changes (checked at each
/// connect: connections between nodes are long-lived or rare). A broken replacement keeps
/// the previous configuration (logged).
pub struct TlsClient {
    settings: TlsClientSettings,
    config: ReloadOnChange<ClientConfig>,
}

impl TlsClient {
    pub fn new(settings: TlsClientSettings) -> anyhow::Result<TlsClient> {
        let stamps = file_stamps(&settings);
        let config = load_client_config(&settings)?;
        Ok(TlsClient {
            settings,
            config: ReloadOnChange::new(config, stamps),
        })
    }

    pub fn config(&self) -> Arc<ClientConfig> {
        let reloaded = self.config.refresh(file_stamps(&self.settings), false, || {
            load_client_config(&self.settings)
        });
        match reloaded {
            Ok(true) => tracing::info!("TLS client files changed: reloaded"),
            Ok(false) => {}
            Err(error) => tracing::warn!("TLS client files changed but do not load: {error}"),
        }
        self.config.current()
    }

    /// The TLS handshake over `stream`, as a client of `host` (a DNS name or an IP address).
    pub async fn connect<S>(
        &self,
        host: &str,
        stream: S,
    ) -> std::io::Result<futures_rustls::client::TlsStream<S>>
    where
        S: futures::AsyncRead + futures::AsyncWrite + Unpin,
    {
        let server_name = ServerName::try_from(host.to_string()).map_err(|error| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host} is not a TLS server name: {error}"),
            )
        })?;
        futures_rustls::TlsConnector::from(self.config())
            .connect(server_name, stream)
            .await
            // Every handshake failure is a refusal to the caller (a certificate or protocol the
            // peer will not take), whatever transport error carried it.
            .map_err(|error| {
                std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("TLS handshake with {host}: {error}"),
                )
            })
    }
}

fn file_stamps(settings: &TlsClientSettings) -> FileStamps {
    FileStamps::of([
        settings.ca_path.as_path(),
        settings.certificate_path.as_path(),
        settings.key_path.as_path(),
    ])
}

/// TLS on the controller listener (`controller_listener_security_protocol=SSL`): every
/// connection, either way, authenticates both ends with certificates from `ssl_ca_location`.
pub struct ControllerTls {
    /// Server side; client certificates required.
    pub acceptor: crate::security::tls::TlsAcceptor,
    pub client: TlsClient,
}

/// Builds the TLS client configuration; every error names its file.
pub fn load_client_config(settings: &TlsClientSettings) -> anyhow::Result<Arc<ClientConfig>> {
    client_config(
        &settings.ca_path,
        Some((&settings.certificate_path, &settings.key_path)),
        settings.verify_hostname,
    )
}

/// A TLS client configuration trusting the CAs in `ca_path`, presenting `identity`
/// (certificate chain and key files) when given.
pub fn client_config(
    ca_path: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
    verify_hostname: bool,
) -> anyhow::Result<Arc<ClientConfig>> {
    // Same provider as the listeners (see `tls::load_server_config`).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(ca_path)? {
        roots.add(certificate).map_err(|e| {
            anyhow::anyhow!("ssl CA {}: unusable certificate: {e}", ca_path.display())
        })?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| anyhow::anyhow!("ssl server verifier: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if verify_hostname {
        webpki
    } else {
        Arc::new(ChainOnlyVerifier(webpki))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let Some((certificate_path, key_path)) = identity else {
        return Ok(Arc::new(builder.with_no_client_auth()));
    };
    let chain = read_certificates(certificate_path)?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| {
        anyhow::anyhow!("ssl key {}: no usable private key: {e}", key_path.display())
    })?;
    let config = builder.with_client_auth_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "ssl certificate {} and key {} do not make a usable pair: {e}",
            certificate_path.display(),
            key_path.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// `ssl_endpoint_identification_algorithm` empty: the chain, validity and signatures are
/// checked as always; only a name that does not match the dialled host is accepted.
#[derive(Debug)]
struct ChainOnlyVerifier(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError;
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
