//! `--web.config.file`: the exporter-toolkit web configuration (TLS, client certificates,
//! basic auth, extra response headers), shared by every Prometheus exporter, so operators
//! reuse the file they have. Every key of the toolkit's `tls_server_config` and
//! `http_server_config` is read; what rustls cannot do (TLS 1.0/1.1 as a maximum, CBC
//! suites, P-521) is refused with a message naming the key.
//! (Over 500 lines: one serde type and one check per toolkit key, so a key is read or refused
//! in one place.)
//!
//! The certificate and key files are checked on every TLS handshake (two `stat` calls) and
//! re-read when one changes, as the toolkit does, so a rotated certificate needs no reload.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

use super::auth::Users;
use super::client_auth::{AllowedSans, AnyClientCert};

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTlsServerConfig>,
    http_server_config: Option<RawHttpServerConfig>,
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
    #[serde(default)]
    cipher_suites: Vec<String>,
    #[serde(default)]
    curve_preferences: Vec<String>,
    min_version: Option<String>,
    max_version: Option<String>,
    /// The toolkit's default is `true`; rustls then picks the first suite of our list the
    /// client offers, else the client's first.
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpServerConfig {
    /// Whether HTTP/2 is offered over TLS (ALPN `h2`), as in the toolkit (default `true`).
    http2: Option<bool>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// A validated web configuration.
pub struct WebConfig {
    /// TLS for the exporter's own endpoints, when configured.
    pub tls: Option<Arc<ServerConfig>>,
    /// Users allowed in, with their bcrypt hashes; empty means no authentication.
    pub users: Users,
    /// Headers added to every response (`http_server_config.headers`).
    pub headers: HeaderMap,
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

/// The headers `http_server_config.headers` may set, and the values allowed when only a
/// few make sense: the toolkit's own list, so one file means the same everywhere.
const SETTABLE_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and checks the file at `path`: certificates and keys load, hashes are bcrypt,
    /// every key is one this exporter can honour. Blocking: it reads files and computes the
    /// dummy bcrypt hash of unknown users.
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
        let http2 = raw
            .http_server_config
            .as_ref()
            .and_then(|http| http.http2)
            .unwrap_or(true);
        let tls = raw
            .tls_server_config
            .map(|tls| server_config(&tls, base, http2))
            .transpose()
            .map_err(error)?;
        let headers = raw
            .http_server_config
            .map(|http| response_headers(&http.headers))
            .transpose()
            .map_err(error)?
            .unwrap_or_default();
        for (user, hash) in &raw.basic_auth_users {
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(error(format!(
                    "basic_auth_users.{user}: not a bcrypt hash; generate one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
                )));
            }
        }
        Ok(Self {
            tls,
            users: Users::new(raw.basic_auth_users),
            headers,
        })
    }
}

fn response_headers(configured: &BTreeMap<String, String>) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::new();
    for (name, value) in configured {
        let Some((_, allowed)) = SETTABLE_HEADERS
            .iter()
            .find(|(settable, _)| settable.eq_ignore_ascii_case(name))
        else {
            let names: Vec<&str> = SETTABLE_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "http_server_config.headers.{name}: this header cannot be configured; use one of {}",
                names.join(", ")
            ));
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "http_server_config.headers.{name}: \"{value}\" is not allowed; use one of {}",
                allowed.join(", ")
            ));
        }
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| format!("http_server_config.headers.{name}: not a valid header value"))?;
        // The name was found in the list of valid names above.
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("http_server_config.headers.{name}: not a header name"))?;
        headers.insert(header_name, header_value);
    }
    Ok(headers)
}

/// The exporter-toolkit (Go) names of the cipher suites rustls implements, TLS 1.2 ones
/// with their `_SHA256`-less Go aliases. TLS 1.3 suites are always all enabled, as in Go;
/// naming one is accepted and changes nothing.
fn tls12_suite(name: &str) -> Option<rustls::SupportedCipherSuite> {
    use rustls::crypto::ring::cipher_suite as suite;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" => {
            suite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

const TLS13_SUITES: [&str; 3] = [
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
];

/// The crypto provider narrowed to the configured suites and curves.
fn narrowed_provider(raw: &RawTlsServerConfig) -> Result<Arc<CryptoProvider>, String> {
    let base = crate::tls::provider();
    let mut provider = (*base).clone();
    if !raw.cipher_suites.is_empty() {
        let mut chosen: Vec<rustls::SupportedCipherSuite> = base
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS13)
            .copied()
            .collect();
        for name in &raw.cipher_suites {
            if TLS13_SUITES.contains(&name.as_str()) {
                continue;
            }
            let Some(suite) = tls12_suite(name) else {
                return Err(format!(
                    "tls_server_config.cipher_suites: \"{name}\" is not supported (rustls implements only ECDHE suites with AES-GCM or ChaCha20-Poly1305); use TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 or their TLS_ECDHE_RSA_ forms"
                ));
            };
            chosen.push(suite);
        }
        provider.cipher_suites = chosen;
    }
    if !raw.curve_preferences.is_empty() {
        use rustls::crypto::ring::kx_group;
        let mut groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
        for name in &raw.curve_preferences {
            groups.push(match name.as_str() {
                "X25519" => kx_group::X25519,
                "CurveP256" => kx_group::SECP256R1,
                "CurveP384" => kx_group::SECP384R1,
                other => {
                    return Err(format!(
                        "tls_server_config.curve_preferences: \"{other}\" is not supported; use X25519, CurveP256 or CurveP384"
                    ));
                }
            });
        }
        provider.kx_groups = groups;
    }
    Ok(Arc::new(provider))
}

/// A toolkit version name as a number to compare (12 = TLS 1.2), for `key`.
fn version(key: &str, value: &str) -> Result<u8, String> {
    match value {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        other => Err(format!(
            "tls_server_config.{key}: \"{other}\" is not a TLS version; use TLS12 or TLS13"
        )),
    }
}

fn protocol_versions(
    raw: &RawTlsServerConfig,
) -> Result<&'static [&'static rustls::SupportedProtocolVersion], String> {
    let min = raw
        .min_version
        .as_deref()
        .map(|v| version("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let max = raw
        .max_version
        .as_deref()
        .map(|v| version("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if max < 12 {
        return Err(format!(
            "tls_server_config.max_version: TLS 1.{} cannot be served (rustls speaks only TLS 1.2 and 1.3); use TLS12 or TLS13",
            max - 10
        ));
    }
    if min < 12 {
        tracing::warn!(
            min_version = raw.min_version.as_deref().unwrap_or_default(),
            "tls_server_config.min_version: TLS 1.0 and 1.1 are not served (rustls speaks only TLS 1.2 and 1.3); using TLS12"
        );
    }
    if min > max {
        return Err(
            "tls_server_config.min_version: higher than max_version; lower one of them".to_owned(),
        );
    }
    static TLS12_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    Ok(match (min.max(12), max) {
        (12, 12) => &TLS12_ONLY,
        (13, _) => &TLS13_ONLY,
        _ => &BOTH,
    })
}

fn server_config(
    raw: &RawTlsServerConfig,
    base: &Path,
    http2: bool,
) -> Result<Arc<ServerConfig>, String> {
    let provider = narrowed_provider(raw)?;
    let certificate = RotatingCertificate::load(
        base.join(&raw.cert_file),
        base.join(&raw.key_file),
        provider.clone(),
    )?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(protocol_versions(raw)?)
        .map_err(|e| format!("tls_server_config: {e}"))?;

    let client_roots = || -> Result<Arc<RootCertStore>, String> {
        let file = raw
            .client_ca_file
            .as_deref()
            .ok_or("tls_server_config.client_ca_file: required by this client_auth_type")?;
        let path = base.join(file);
        let certs = crate::tls::read_pem_certs(&path).map_err(|e| {
            format!(
                "tls_server_config.client_ca_file: cannot read {}: {e}",
                path.display()
            )
        })?;
        crate::tls::root_store(certs).ok_or_else(|| {
            format!(
                "tls_server_config.client_ca_file: {} holds no usable CA certificate",
                path.display()
            )
        })
    };
    let kind = raw.client_auth_type.as_deref().unwrap_or("NoClientCert");
    if raw.client_allowed_sans.is_some() && kind != "RequireAndVerifyClientCert" {
        return Err(format!(
            "tls_server_config.client_allowed_sans: needs client_auth_type RequireAndVerifyClientCert (with {kind}, a client could present no certificate, or one anyone can make with an allowed name)"
        ));
    }
    // The toolkit refuses a CA without a policy asking for certificates; files that worked
    // here before keep working, with a warning.
    if raw.client_ca_file.is_some() && kind == "NoClientCert" {
        tracing::warn!(
            "tls_server_config.client_ca_file: unused with client_auth_type NoClientCert (no client certificate is asked for); set RequireAndVerifyClientCert or VerifyClientCertIfGiven, or remove it"
        );
    }
    let builder = match kind {
        "NoClientCert" => builder.with_no_client_auth(),
        "RequestClientCert" | "RequireAnyClientCert" => {
            builder.with_client_cert_verifier(Arc::new(AnyClientCert::new(
                provider.clone(),
                kind == "RequireAnyClientCert",
            )))
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(client_roots()?, provider.clone());
            let verifier = if kind == "VerifyClientCertIfGiven" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("tls_server_config.client_ca_file: {e}"))?;
            match &raw.client_allowed_sans {
                Some(sans) => builder
                    .with_client_cert_verifier(Arc::new(AllowedSans::new(verifier, sans.clone()))),
                None => builder.with_client_cert_verifier(verifier),
            }
        }
        other => {
            return Err(format!(
                "tls_server_config.client_auth_type: \"{other}\" is not a client auth type; use NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven or RequireAndVerifyClientCert"
            ));
        }
    };
    let mut config = builder.with_cert_resolver(Arc::new(certificate));
    config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// What identifies a version of a file cheaply: modification time, size and inode (a
/// rename over it, as Kubernetes secrets and cert-manager do, changes the inode).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(std::time::SystemTime, u64, u64)>);

impl Stamp {
    fn of(path: &Path) -> Self {
        Self(std::fs::metadata(path).ok().map(|meta| {
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            (
                meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                meta.len(),
                inode,
            )
        }))
    }
}

/// The server certificate, re-read when its files change (checked per handshake).
#[derive(Debug)]
struct RotatingCertificate {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    state: Mutex<Served>,
}

#[derive(Debug)]
struct Served {
    key: Arc<CertifiedKey>,
    /// The files' stamps when `key` was read.
    stamps: (Stamp, Stamp),
    /// Stamps of files that did not load (a rotation half done): not retried until they
    /// change again.
    failed: Option<(Stamp, Stamp)>,
}

impl RotatingCertificate {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let stamps = (Stamp::of(&cert_path), Stamp::of(&key_path));
        let key = read_certified_key(&cert_path, &key_path, &provider)?;
        Ok(Self {
            cert_path,
            key_path,
            provider,
            state: Mutex::new(Served {
                key: Arc::new(key),
                stamps,
                failed: None,
            }),
        })
    }

    fn current(&self) -> Arc<CertifiedKey> {
        let stamps = (Stamp::of(&self.cert_path), Stamp::of(&self.key_path));
        let mut served = crate::sync::lock(&self.state);
        if stamps != served.stamps && served.failed.as_ref() != Some(&stamps) {
            match read_certified_key(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    tracing::info!(
                        cert_file = %self.cert_path.display(),
                        "server certificate changed on disk: serving the new one"
                    );
                    served.key = Arc::new(key);
                    served.stamps = stamps;
                    served.failed = None;
                }
                Err(error) => {
                    tracing::warn!(
                        error = %error,
                        "server certificate files changed but do not load; still serving the previous certificate"
                    );
                    served.failed = Some(stamps);
                }
            }
        }
        served.key.clone()
    }
}

impl rustls::server::ResolvesServerCert for RotatingCertificate {
    fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = crate::tls::read_pem_certs(cert_path).map_err(|e| {
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
    let key = crate::tls::read_pem_key(key_path).map_err(|e| {
        format!(
            "tls_server_config.key_file: cannot read a private key from {}: {e}",
            key_path.display()
        )
    })?;
    CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| format!("tls_server_config: the certificate and key do not fit together: {e}"))
}
