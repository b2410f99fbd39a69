//! `--web.config.file`: the exporter-toolkit web configuration (TLS, client certificates,
//! basic auth), shared by every Prometheus exporter, so operators reuse the file they have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTlsServerConfig>,
    #[serde(default)]
    basic_auth_users: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTlsServerConfig {
    cert_file: String,
    key_file: String,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    min_version: Option<String>,
}

/// A validated web configuration.
pub struct WebConfig {
    /// TLS for the exporter's own endpoints, when configured.
    pub tls: Option<Arc<ServerConfig>>,
    /// Users allowed in, with their bcrypt hashes; empty means no authentication.
    pub users: HashMap<String, String>,
}

/// An invalid web config, with the file and the fix.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct WebConfigError {
    /// The file.
    pub file: String,
    /// What is wrong.
    pub message: String,
}

impl WebConfig {
    /// Reads and checks the file at `path`: certificates and keys load, hashes are bcrypt.
    ///
    /// # Errors
    /// Unreadable files, unknown keys, unsupported values, invalid hashes.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let error = |message: String| WebConfigError {
            file: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| error(format!("cannot read the web config: {e}")))?;
        let raw: RawWebConfig = serde_saphyr::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("{}:{}: ", l.line(), l.column()))
                .unwrap_or_default();
            let options = serde_saphyr::render_options! {
                formatter: &serde_saphyr::UserMessageFormatter,
                snippets: serde_saphyr::SnippetMode::Off,
            };
            error(format!(
                "{at}{}",
                e.without_snippet().render_with_options(options)
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let tls = raw
            .tls_server_config
            .map(|tls| server_config(&tls, base))
            .transpose()
            .map_err(error)?;
        for (user, hash) in &raw.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(error(format!(
                    "basic_auth_users.{user}: not a bcrypt hash; generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )));
            }
        }
        Ok(Self {
            tls,
            users: raw.basic_auth_users,
        })
    }
}

fn resolve(base: &Path, file: &str) -> PathBuf {
    let path = Path::new(file);
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

fn server_config(raw: &RawTlsServerConfig, base: &Path) -> Result<Arc<ServerConfig>, String> {
    let cert_path = resolve(base, &raw.cert_file);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(Iterator::collect)
        .map_err(|e| {
            format!(
                "tls_server_config.cert_file: cannot read {}: {e}",
                cert_path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "tls_server_config.cert_file: {} holds no certificate",
            cert_path.display()
        ));
    }
    let key_path = resolve(base, &raw.key_file);
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| {
        format!(
            "tls_server_config.key_file: cannot read a private key from {}: {e}",
            key_path.display()
        )
    })?;

    let versions: &[&rustls::SupportedProtocolVersion] = match raw.min_version.as_deref() {
        None | Some("TLS12") => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Some("TLS13") => &[&rustls::version::TLS13],
        Some(other) => {
            return Err(format!(
                "tls_server_config.min_version: \"{other}\" is not supported; use TLS12 or TLS13"
            ));
        }
    };
    let provider = crate::probe::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;

    let client_roots = || -> Result<Arc<RootCertStore>, String> {
        let file = raw
            .client_ca_file
            .as_deref()
            .ok_or("tls_server_config.client_ca_file: required by this client_auth_type")?;
        let path = resolve(base, file);
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&path)
            .and_then(Iterator::collect)
            .map_err(|e| {
                format!(
                    "tls_server_config.client_ca_file: cannot read {}: {e}",
                    path.display()
                )
            })?;
        let mut store = RootCertStore::empty();
        let (added, _) = store.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "tls_server_config.client_ca_file: {} holds no usable CA certificate",
                path.display()
            ));
        }
        Ok(Arc::new(store))
    };
    let builder = match raw.client_auth_type.as_deref().unwrap_or("NoClientCert") {
        "NoClientCert" => builder.with_no_client_auth(),
        kind @ ("RequireAndVerifyClientCert" | "VerifyClientCertIfGiven") => {
            let verifier = WebPkiClientVerifier::builder_with_provider(client_roots()?, provider);
            let verifier = if kind == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?,
            )
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: \"{other}\" is not supported; use NoClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        format!("tls_server_config: the certificate and key do not fit together: {e}")
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
