//! TLS for the `SSL` and `SASL_SSL` listeners, with rustls (no OpenSSL in the broker).
//!
//! The certificate chain, its key and the CA that client certificates must chain to are PEM files.
//! Each shard holds its own [`TlsAcceptor`] and reloads it when one of the files changes or the
//! process gets SIGHUP (see [`request_reload`]): new connections use the new certificate, open ones
//! keep the session they negotiated. A reload that fails (a half-written file, a key that does not
//! match) keeps the previous configuration and logs why.
//!
//! With client authentication the principal is the certificate's subject as an RFC 2253
//! distinguished name (`User:CN=client,O=Example`), as Kafka's default SSL principal builder gives it.
//!
//! TLS runs in user space: the kernel's TLS offload needs the `tls` module, and decrypted cold
//! reads go through the TLS stream (a copy), where plaintext connections splice page cache to the
//! socket. Each connection's mode shows in `riptide_tls_connections_open{mode}`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

/// Kafka's `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No client certificate is asked for.
    None,
    /// Asked for; a client without one connects as `User:ANONYMOUS`, one with an untrusted
    /// certificate is refused.
    Requested,
    /// A certificate that chains to the CA is required.
    Required,
}

impl ClientAuth {
    pub fn from_name(name: &str) -> anyhow::Result<ClientAuth> {
        match name {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => anyhow::bail!("ssl_client_auth {other:?} is not none, requested or required"),
        }
    }
}

/// Where the TLS material is and how clients are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM: the broker's certificate first, then its chain.
    pub certificate_path: PathBuf,
    /// PEM: the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: PathBuf,
    /// PEM: CAs that client certificates must chain to (needed unless `client_auth` is none).
    pub ca_path: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

/// Bumped on SIGHUP; every shard's acceptor reloads when it sees a new value.
static RELOAD_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Asks every shard to reload its TLS files (SIGHUP).
pub fn request_reload() {
    RELOAD_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Builds a rustls server configuration from the files; every error names the file.
pub fn load_server_config(settings: &TlsSettings) -> anyhow::Result<Arc<ServerConfig>> {
    // ring builds with only a C compiler; it lacks the post-quantum key exchange (hence the
    // deprecation), which the Kafka clients' TLS libraries do not offer by default either.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certificates(&settings.certificate_path)?;
    let key = PrivateKeyDer::from_pem_file(&settings.key_path).map_err(|e| {
        anyhow::anyhow!(
            "ssl key {}: no usable private key: {e}",
            settings.key_path.display()
        )
    })?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| anyhow::anyhow!("TLS versions: {e}"))?;
    let builder = match settings.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        ClientAuth::Requested | ClientAuth::Required => {
            let ca_path = settings.ca_path.as_ref().ok_or_else(|| {
                anyhow::anyhow!("ssl_client_auth needs ssl_ca_location (the CAs clients chain to)")
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for certificate in read_certificates(ca_path)? {
                roots.add(certificate).map_err(|e| {
                    anyhow::anyhow!("ssl CA {}: unusable certificate: {e}", ca_path.display())
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if settings.client_auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| anyhow::anyhow!("ssl client verifier: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "ssl certificate {} and key {} do not make a usable pair: {e}",
            settings.certificate_path.display(),
            settings.key_path.display()
        )
    })?;
    Ok(Arc::new(config))
}

pub(crate) fn read_certificates(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("ssl file {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("ssl file {}: bad PEM: {e}", path.display()))?;
    anyhow::ensure!(
        !certificates.is_empty(),
        "ssl file {} holds no certificate",
        path.display()
    );
    Ok(certificates)
}

/// When each TLS file last changed (modification time and size), to notice a replaced
/// certificate. A missing file stamps as `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileStamps(Vec<Option<(SystemTime, u64)>>);

impl FileStamps {
    pub(crate) fn of<'a>(paths: impl IntoIterator<Item = &'a Path>) -> FileStamps {
        FileStamps(
            paths
                .into_iter()
                .map(|path| {
                    std::fs::metadata(path)
                        .ok()
                        .and_then(|m| Some((m.modified().ok()?, m.len())))
                })
                .collect(),
        )
    }

    fn read(settings: &TlsSettings) -> FileStamps {
        let paths = [
            Some(&settings.certificate_path),
            Some(&settings.key_path),
            settings.ca_path.as_ref(),
        ];
        FileStamps::of(paths.into_iter().flatten().map(|path| path.as_path()))
    }
}

/// A configuration built from files, rebuilt when their stamps change. A replacement that does
/// not load keeps the previous configuration, and its stamps count as seen so that a broken
/// file is reported once, not on every check.
pub(crate) struct ReloadOnChange<T> {
    current: RefCell<Arc<T>>,
    stamps: RefCell<FileStamps>,
}

impl<T> ReloadOnChange<T> {
    pub(crate) fn new(current: Arc<T>, stamps: FileStamps) -> ReloadOnChange<T> {
        ReloadOnChange {
            current: RefCell::new(current),
            stamps: RefCell::new(stamps),
        }
    }

    pub(crate) fn current(&self) -> Arc<T> {
        self.current.borrow().clone()
    }

    /// Rebuilds with `load` if `stamps` differ from the last seen ones or `force` is set.
    /// `Ok(true)` when a new configuration is in place.
    pub(crate) fn refresh(
        &self,
        stamps: FileStamps,
        force: bool,
        load: impl FnOnce() -> anyhow::Result<Arc<T>>,
    ) -> anyhow::Result<bool> {
        if !force && stamps == *self.stamps.borrow() {
            return Ok(false);
        }
        *self.stamps.borrow_mut() = stamps;
        *self.current.borrow_mut() = load()?;
        Ok(true)
    }
}

/// One shard's TLS server configuration, replaced when the files change.
pub struct TlsAcceptor {
    settings: TlsSettings,
    config: ReloadOnChange<ServerConfig>,
    generation: std::cell::Cell<u64>,
}

impl TlsAcceptor {
    pub fn new(settings: TlsSettings) -> anyhow::Result<TlsAcceptor> {
        let stamps = FileStamps::read(&settings);
        let config = load_server_config(&settings)?;
        Ok(TlsAcceptor {
            settings,
            config: ReloadOnChange::new(config, stamps),
            generation: std::cell::Cell::new(RELOAD_GENERATION.load(Ordering::Relaxed)),
        })
    }

    /// The configuration new connections handshake with.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.current()
    }

    /// Reloads if a file changed or SIGHUP asked for it. `Ok(true)` when a new configuration
    /// is in place; on error the previous one stays.
    pub fn reload_if_changed(&self) -> anyhow::Result<bool> {
        let generation = RELOAD_GENERATION.load(Ordering::Relaxed);
        let asked = generation != self.generation.replace(generation);
        self.config
            .refresh(FileStamps::read(&self.settings), asked, || {
                load_server_config(&self.settings)
            })
    }
}

/// Kafka's principal for a client certificate: `User:` and the subject as an RFC 2253
/// distinguished name (most specific attribute first, `,` between them, special characters
/// escaped). `None` if the certificate does not parse.
pub fn certificate_principal(certificate: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, parsed) = X509Certificate::from_der(certificate).ok()?;
    let mut parts = Vec::new();
    for rdn in parsed
        .subject()
        .iter()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let attributes: Vec<String> = rdn
            .iter()
            .map(|attribute| {
                let oid = attribute.attr_type().to_id_string();
                let key = short_name(&oid).map_or(oid.clone(), str::to_string);
                let value = attribute
                    .as_str()
                    .map(escape_rfc2253)
                    .unwrap_or_else(|_| format!("#{}", hex(attribute.attr_value().data)));
                format!("{key}={value}")
            })
            .collect();
        parts.push(attributes.join("+"));
    }
    Some(format!("User:{}", parts.join(",")))
}

/// RFC 2253's short names for the attributes certificates use.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.11" => "OU",
        "2.5.4.10" => "O",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

fn escape_rfc2253(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (index, character) in value.chars().enumerate() {
        let special = matches!(character, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (index == 0 && (character == '#' || character == ' '))
            || (index == last && character == ' ');
        if special {
            out.push('\\');
        }
        out.push(character);
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escapes_special_characters() {
        assert_eq!(escape_rfc2253("plain"), "plain");
        assert_eq!(escape_rfc2253("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape_rfc2253("#lead"), "\\#lead");
        assert_eq!(escape_rfc2253(" both "), "\\ both\\ ");
        assert_eq!(escape_rfc2253("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
    }

    #[test]
    fn client_auth_names() {
        assert_eq!(ClientAuth::from_name("none").unwrap(), ClientAuth::None);
        assert_eq!(
            ClientAuth::from_name("required").unwrap(),
            ClientAuth::Required
        );
        assert!(ClientAuth::from_name("REQUIRED").is_err());
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let settings = TlsSettings {
            certificate_path: "/nonexistent/cert.pem".into(),
            key_path: "/nonexistent/key.pem".into(),
            ca_path: None,
            client_auth: ClientAuth::None,
        };
        let error = load_server_config(&settings).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/cert.pem"), "{error}");
    }

    #[test]
    fn client_auth_without_a_ca_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let settings = TlsSettings {
            certificate_path: cert,
            key_path: key,
            ca_path: None,
            client_auth: ClientAuth::Required,
        };
        let error = load_server_config(&settings).unwrap_err().to_string();
        assert!(error.contains("ssl_ca_location"), "{error}");
    }

    #[test]
    fn a_certificate_and_key_load_and_reload_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let settings = TlsSettings {
            certificate_path: cert.clone(),
            key_path: key,
            ca_path: None,
            client_auth: ClientAuth::None,
        };
        let acceptor = TlsAcceptor::new(settings).unwrap();
        assert!(!acceptor.reload_if_changed().unwrap());
        // A broken replacement is reported and the old configuration stays.
        let before = acceptor.config();
        std::fs::write(&cert, b"not a certificate\n").unwrap();
        assert!(acceptor.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&before, &acceptor.config()));
        // Seen once: not reported again until the file changes.
        assert!(!acceptor.reload_if_changed().unwrap());
        request_reload();
        assert!(acceptor.reload_if_changed().is_err());
    }

    #[test]
    fn principal_is_the_subject_most_specific_first() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = self_signed(dir.path());
        let der = read_certificates(&cert).unwrap().remove(0);
        assert_eq!(
            certificate_principal(&der).unwrap(),
            "User:CN=riptide-test,OU=Broker\\, Tests,O=Example"
        );
    }

    /// A self-signed certificate made by `openssl`, with subject O, OU, CN in that order.
    fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj"])
            .arg("/O=Example/OU=Broker, Tests/CN=riptide-test")
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success());
        (cert, key)
    }
}
