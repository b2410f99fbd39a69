//! TLS client configuration (built once per distinct settings, at config load) and the
//! wording of TLS failures.

use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::TlsSettings;

/// A TLS setting that could not be used, with the key to point at.
#[derive(Debug)]
pub struct TlsConfigError {
    /// `ca_file`, `cert_file` or `key_file`.
    pub field: &'static str,
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

/// Builds the client configuration for `settings`.
///
/// # Errors
/// An unreadable or invalid CA, certificate or key file, naming the key.
pub fn client_config(settings: &TlsSettings) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let roots = match &settings.ca_file {
        None => system_roots(),
        Some(path) => {
            let certs = read_certs(path).map_err(|message| TlsConfigError {
                field: "ca_file",
                message,
            })?;
            let mut store = RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsConfigError {
                    field: "ca_file",
                    message: format!("{} holds no usable CA certificate", path.display()),
                });
            }
            Arc::new(store)
        }
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError {
            field: "tls",
            message: e.to_string(),
        })?;
    let builder = if settings.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
    } else {
        builder.with_root_certificates(roots)
    };
    let mut config = match (&settings.cert_file, &settings.key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert).map_err(|message| TlsConfigError {
                field: "cert_file",
                message,
            })?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsConfigError {
                field: "key_file",
                message: format!("cannot read a PEM private key from {}: {e}", key.display()),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsConfigError {
                    field: "cert_file",
                    message: format!("the client certificate and key do not fit together: {e}"),
                })?
        }
        (Some(_), None) => {
            return Err(TlsConfigError {
                field: "key_file",
                message: "cert_file needs key_file: set both".to_owned(),
            });
        }
        (None, Some(_)) => {
            return Err(TlsConfigError {
                field: "cert_file",
                message: "key_file needs cert_file: set both".to_owned(),
            });
        }
    };
    // One fresh connection per run, HTTP/1.1 only: what a webhook caller does.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
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

/// Explains a handshake error to an operator.
pub fn describe_error(error: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::Expired | C::ExpiredContext { .. } => {
                format!("the certificate of {host} has expired ({cert})")
            }
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("the certificate of {host} is not valid yet ({cert})")
            }
            C::UnknownIssuer => format!(
                "the certificate of {host} is signed by an unknown issuer (self-signed or missing CA: set tls.ca_file)"
            ),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("the certificate is not valid for {host} ({cert})")
            }
            other => format!("invalid certificate from {host}: {other}"),
        },
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
