//! TLS client configuration (built once per distinct settings, at config load) and the
//! wording of TLS failures.

use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::{TlsClient, TlsSettings};

/// The `tls` key a [`TlsConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    /// `tls.ca_file`.
    CaFile,
    /// `tls.cert_file`.
    CertFile,
    /// `tls.key_file`.
    KeyFile,
    /// The `tls` block as a whole.
    Tls,
}

impl TlsField {
    /// The key as written in the config file.
    pub fn key(self) -> &'static str {
        match self {
            TlsField::CaFile => "ca_file",
            TlsField::CertFile => "cert_file",
            TlsField::KeyFile => "key_file",
            TlsField::Tls => "tls",
        }
    }
}

/// A TLS setting that could not be used, with the key to point at.
#[derive(Debug)]
pub struct TlsConfigError {
    /// The key at fault.
    pub field: TlsField,
    /// What went wrong and what to do.
    pub message: String,
}

/// The one crypto provider of the process (ring); passed explicitly so no global default
/// has to be installed before a config is loaded.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static PROVIDER: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system trust store, read once: reading it costs milliseconds and it does not change
/// while the exporter runs.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut store = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(error = %error, "could not read part of the system trust store");
            }
            let (added, ignored) = store.add_parsable_certificates(found.certs);
            tracing::debug!(added, ignored, "system trust store loaded");
            Arc::new(store)
        })
        .clone()
}

/// The certificate check a probe's configuration uses.
pub type Verifier = Arc<dyn ServerCertVerifier>;

/// Parses a configured `tls.server_name` (a DNS name or an IP address).
///
/// # Errors
/// A name rustls would refuse, with the reason.
pub fn server_name(name: &str) -> Result<rustls::pki_types::ServerName<'static>, String> {
    rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| {
        format!(
            "\"{name}\" is not a valid TLS server name (write a DNS name or an IP address): {e}"
        )
    })
}

/// Builds the client configuration for `settings`, and returns its certificate check so each
/// run can wrap it (see [`capturing_config`]).
///
/// # Errors
/// An unreadable or invalid CA, certificate or key file, naming the key.
pub fn client_config(
    settings: &TlsSettings,
) -> Result<(Arc<ClientConfig>, Verifier), TlsConfigError> {
    let roots = match &settings.ca_file {
        None => system_roots(),
        Some(path) => {
            let certs = read_certs(path).map_err(|message| TlsConfigError {
                field: TlsField::CaFile,
                message,
            })?;
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsConfigError {
                    field: TlsField::CaFile,
                    message: format!("{} holds no usable CA certificate", path.display()),
                });
            }
            Arc::new(store)
        }
    };
    let verifier: Verifier = if settings.insecure_skip_verify {
        Arc::new(AcceptAnyCertificate)
    } else {
        WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsConfigError {
                field: TlsField::CaFile,
                message: e.to_string(),
            })?
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError {
            field: TlsField::Tls,
            message: e.to_string(),
        })?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|message| TlsConfigError {
                field: TlsField::CertFile,
                message,
            })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError {
                field: TlsField::KeyFile,
                message: format!("cannot read a PEM private key from {}: {e}", key.display()),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsConfigError {
                    field: TlsField::CertFile,
                    message: format!("the client certificate and key do not fit together: {e}"),
                })?
        }
        (Some(_), None) => {
            return Err(TlsConfigError {
                field: TlsField::KeyFile,
                message: "cert_file needs key_file: set both".to_owned(),
            });
        }
        (None, Some(_)) => {
            return Err(TlsConfigError {
                field: TlsField::CertFile,
                message: "key_file needs cert_file: set both".to_owned(),
            });
        }
    };
    // One fresh connection per run, HTTP/1.1 only: what a webhook caller does.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok((Arc::new(config), verifier))
}

/// The certificates a server presented, leaf first, as captured during the handshake.
pub type CapturedChain = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// A per-run copy of `client`'s configuration whose certificate check first records the
/// presented chain: the expiry must be known even when the check fails (an expired
/// certificate is exactly when it matters most). The copy is shallow (shared roots, keys).
pub fn capturing_config(client: &TlsClient) -> (Arc<ClientConfig>, CapturedChain) {
    let chain = CapturedChain::default();
    let mut config = (*client.config).clone();
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(CapturingVerifier {
            inner: client.verifier.clone(),
            chain: chain.clone(),
        }));
    (Arc::new(config), chain)
}

/// Wraps a verifier, copying the presented chain before judging it.
#[derive(Debug)]
struct CapturingVerifier {
    inner: Verifier,
    chain: CapturedChain,
}

impl ServerCertVerifier for CapturingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        {
            let mut chain = self
                .chain
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            chain.clear();
            chain.push(end_entity.clone().into_owned());
            chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.inner.root_hint_subjects()
    }
}

/// What the exporter reports of a presented certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// Earliest `notAfter` of the chain (Unix seconds): when the chain stops working.
    pub earliest_not_after: i64,
    /// Subject of the leaf (its common name, else the whole name).
    pub subject: String,
    /// Issuer of the leaf (common name, else the whole name).
    pub issuer: String,
    /// Names the leaf is valid for.
    pub names: Vec<String>,
}

/// Longest subject or issuer kept: they become label values.
const MAX_NAME_CHARS: usize = 64;

/// Reads the chain with x509-parser; `None` when nothing (parsable) was presented.
pub fn certificate_info(chain: &[CertificateDer<'_>]) -> Option<CertificateInfo> {
    let parsed: Vec<_> = chain
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    let leaf = parsed.first()?;
    let earliest_not_after = parsed
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()?;
    let name = |n: &x509_parser::x509::X509Name<'_>| -> String {
        let text = n
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map_or_else(|| n.to_string(), str::to_owned);
        text.chars().take(MAX_NAME_CHARS).collect()
    };
    let names = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                        16 => {
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                .to_string()
                        }
                        _ => String::new(),
                    },
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertificateInfo {
        earliest_not_after,
        subject: name(leaf.subject()),
        issuer: name(leaf.issuer()),
        names,
    })
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}; check the path", path.display()))?
        .collect();
    let certs = certs.map_err(|e| format!("{} is not a valid PEM file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

fn date(time: UnixTime) -> String {
    let seconds = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
        || seconds.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Explains a handshake error to an operator: which check failed, with the dates or names.
pub fn describe_error(error: &rustls::Error, host: &str, info: Option<&CertificateInfo>) -> String {
    use rustls::CertificateError as C;
    let presented = || {
        info.map(|i| i.names.join(", "))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "no name".to_owned())
    };
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::ExpiredContext { not_after, .. } => {
                format!("the certificate of {host} expired on {}", date(*not_after))
            }
            C::Expired => format!("the certificate of {host} has expired"),
            C::NotValidYetContext { not_before, .. } => {
                format!(
                    "the certificate of {host} is not valid before {}",
                    date(*not_before)
                )
            }
            C::NotValidYet => format!("the certificate of {host} is not valid yet"),
            C::UnknownIssuer => {
                let issuer = info
                    .map(|i| format!(" \"{}\"", i.issuer))
                    .unwrap_or_default();
                format!(
                    "the certificate of {host} is signed by an unknown issuer{issuer} \
                     (self-signed, or a private CA: trust it with tls.ca_file)"
                )
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!(
                    "the certificate is not valid for {host}: it holds {}",
                    presented()
                )
            }
            other => format!("invalid certificate from {host}: {other:?}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            format!("{host} requires a client certificate: set tls.cert_file and tls.key_file")
        }
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        ) => format!("{host} refused our client certificate ({alert:?})"),
        rustls::Error::AlertReceived(alert) => format!(
            "{host} refused the TLS handshake ({alert:?}): protocol version, cipher, \
             or a client certificate it requires"
        ),
        rustls::Error::PeerIncompatible(why) => {
            format!("{host} speaks no TLS version or cipher we accept ({why:?})")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}

/// Verifier for `insecure_skip_verify`: accepts any certificate, checks signatures.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
