//! TLS objects, built from plain settings: the process's crypto provider, the probes' client
//! configurations (built once per distinct settings, cached, looked up by each run) and the
//! per-run copy that captures the presented chain. Config holds only data; probe and server
//! take their rustls objects from here.
//! (Over 500 lines: the two certificate verifiers are long-hand trait impls, and the tests.)

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::scalars::{MAX_DETAIL_CHARS, cut, shown, shown_path};
use crate::config::{Config, ConfigError, ConfigErrors, ProbeSpec, TlsFile, TlsSettings};

/// The `tls` key a [`TlsConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsField {
    /// `tls.ca_file`.
    CaFile,
    /// `tls.cert_file`.
    CertFile,
    /// `tls.key_file`.
    KeyFile,
    /// `tls.server_name`.
    ServerName,
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
            TlsField::ServerName => "server_name",
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
            "{} is not a valid TLS server name (write a DNS name or an IP address): {e}",
            shown(name)
        )
    })
}

/// A probe's TLS client, built once per distinct settings and shared by its runs.
pub struct ClientTls {
    /// The rustls configuration every run starts from.
    config: Arc<ClientConfig>,
    /// The certificate check of `config`, wrapped per run to capture the presented chain.
    verifier: Verifier,
    /// The configured `tls.server_name`, as rustls takes it; `None`: the URL host is used.
    pub server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientTls(server_name: {:?})", self.server_name)
    }
}

/// Builds the client for `settings` from the files as the config read them.
///
/// # Errors
/// An invalid CA, certificate or key, naming the key.
pub fn build_client(settings: &TlsSettings) -> Result<ClientTls, TlsConfigError> {
    let server_name = settings
        .server_name
        .as_ref()
        .map(|name| server_name(name.as_str()))
        .transpose()
        .map_err(|message| TlsConfigError {
            field: TlsField::ServerName,
            message,
        })?;
    let roots = match &settings.ca_file {
        None => system_roots(),
        Some(file) => {
            let certs = pem_certs(file).map_err(|message| TlsConfigError {
                field: TlsField::CaFile,
                message,
            })?;
            root_store(certs).ok_or_else(|| TlsConfigError {
                field: TlsField::CaFile,
                message: format!("{} holds no usable CA certificate", shown_path(&file.path)),
            })?
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
            let chain = pem_certs(cert).map_err(|message| TlsConfigError {
                field: TlsField::CertFile,
                message,
            })?;
            let key = PrivateKeyDer::from_pem_slice(&key.contents).map_err(|e| TlsConfigError {
                field: TlsField::KeyFile,
                message: format!(
                    "cannot read a PEM private key from {}: {e}",
                    shown_path(&key.path)
                ),
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
    Ok(ClientTls {
        config: Arc::new(config),
        verifier,
        server_name,
    })
}

/// Built clients by settings. `generation` counts [`prepare`] calls; an entry not used by the
/// last two prepared configs (the running one and its replacement) is dropped, so rotated
/// files do not pile up over reloads.
#[derive(Default)]
struct Cache {
    generation: u64,
    clients: HashMap<TlsSettings, (Arc<ClientTls>, u64)>,
}

fn cache() -> MutexGuard<'static, Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    crate::sync::lock(CACHE.get_or_init(Mutex::default))
}

/// The client for `settings`: looked up, or built and kept on first use (a config loaded
/// through [`prepare`] has every client built already).
///
/// # Errors
/// As [`build_client`].
pub fn client(settings: &TlsSettings) -> Result<Arc<ClientTls>, TlsConfigError> {
    let mut cache = cache();
    let generation = cache.generation;
    if let Some((client, used)) = cache.clients.get_mut(settings) {
        *used = generation;
        return Ok(client.clone());
    }
    let client = Arc::new(build_client(settings)?);
    cache
        .clients
        .insert(settings.clone(), (client.clone(), generation));
    Ok(client)
}

/// Builds (or finds) the TLS client of every probe of `config`, so its runs only look them
/// up; a file that does not parse is an error at the key that names it. Clients no probe
/// of this config or the one before uses are dropped.
///
/// # Errors
/// Every probe whose TLS files cannot be used, as `file:line:col: probes[i] "name".tls.key: …`.
pub fn prepare(config: &Config) -> Result<(), ConfigErrors> {
    cache().generation += 1;
    let errors = check(&config.probes);
    let mut cache = cache();
    let keep_from = cache.generation.saturating_sub(1);
    cache.clients.retain(|_, (_, used)| *used >= keep_from);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Builds (or finds) the TLS client of each of `probes` (one config file's, at load time, so
/// a bad key refuses that file only); the problems, each in the probe's file.
pub fn check(probes: &[Arc<ProbeSpec>]) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for spec in probes {
        if let Err(failure) = client(&spec.tls) {
            let origin = &spec.origin;
            let location = match failure.field {
                TlsField::CaFile => origin.ca_file,
                TlsField::CertFile => origin.cert_file,
                TlsField::KeyFile => origin.key_file,
                TlsField::ServerName | TlsField::Tls => None,
            }
            .or(origin.probe);
            errors.push(ConfigError {
                file: origin.file.clone(),
                location,
                message: format!(
                    "{}.tls.{}: {}",
                    origin.label,
                    failure.field.key(),
                    cut(&failure.message, 2 * MAX_DETAIL_CHARS)
                ),
            });
        }
    }
    errors
}

/// The certificates a server presented, leaf first, as captured during the handshake.
pub type CapturedChain = Arc<Mutex<Vec<CertificateDer<'static>>>>;

/// A per-run copy of `client`'s configuration whose certificate check first records the
/// presented chain: the expiry must be known even when the check fails (an expired
/// certificate is exactly when it matters most). The copy is shallow (shared roots, keys).
pub fn capturing_config(client: &ClientTls) -> (Arc<ClientConfig>, CapturedChain) {
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
            let mut chain = crate::sync::lock(&self.chain);
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

/// The certificates of the PEM file at `path` (the web config's files, re-read on rotation).
///
/// # Errors
/// An unreadable file or a PEM section that does not decode.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_file_iter(path).and_then(Iterator::collect)
}

/// The first private key of the PEM file at `path`.
///
/// # Errors
/// An unreadable file, or no key in it.
pub fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, pem::Error> {
    PrivateKeyDer::from_pem_file(path)
}

/// A trust store of the usable ones among `certs`; `None` when none is.
pub fn root_store(certs: Vec<CertificateDer<'static>>) -> Option<Arc<RootCertStore>> {
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs);
    (added > 0).then(|| Arc::new(store))
}

/// The certificates of a PEM file as read.
fn pem_certs(file: &TlsFile) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = shown_path(&file.path);
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&file.contents)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path} is not a valid PEM file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(certs)
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::TlsServerName;

    #[test]
    fn the_config_checks_a_server_name_as_rustls_does() {
        let long_label = format!("{}.com", "a".repeat(64));
        let long_name = format!("{}.com", vec!["a".repeat(60); 5].join("."));
        let names = [
            "localhost",
            "erp.example.com",
            "erp.example.com.",
            "_srv.example.com",
            "a_b",
            "erp example.com",
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a.-b",
            "123",
            "1.2.3",
            "0",
            "0x1f",
            "a.0x1F",
            "a.0x",
            "a.0xg",
            "a.00x1",
            "a.0a",
            "1.2.3.4",
            "::1",
            "[::1]",
            "fe80::1%eth0",
            "é.com",
            "a.b.c.d.e",
            &long_label,
            &long_name,
        ];
        for name in names {
            assert_eq!(
                TlsServerName::parse(name).is_ok(),
                ServerName::try_from(name.to_owned()).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn a_loaded_config_has_its_clients_built_and_runs_look_them_up() {
        let config = crate::config::parse(
            Path::new("t.yaml"),
            "probes:\n  - {name: p, url: 'https://127.0.0.1:1/', tls: {insecure_skip_verify: true, server_name: erp.example.com}}\n",
        )
        .unwrap();
        prepare(&config).unwrap();
        let first = client(&config.probes[0].tls).unwrap();
        let second = client(&config.probes[0].tls).unwrap();
        assert!(Arc::ptr_eq(&first, &second), "a lookup built a new client");
        assert!(first.server_name.is_some());
    }

    #[test]
    fn a_key_that_is_not_pem_is_an_error_at_its_key_after_loading() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("c.pem"), "no").unwrap();
        std::fs::write(dir.path().join("k.pem"), "no").unwrap();
        let path = dir.path().join("t.yaml");
        let config = crate::config::parse(
            &path,
            "probes:\n  - name: p\n    url: https://127.0.0.1:1/\n    tls:\n      cert_file: c.pem\n      key_file: k.pem\n",
        )
        .unwrap();
        let errors = prepare(&config).unwrap_err().to_string();
        let expected = format!(
            "{}:5:18: probes[0] \"p\".tls.cert_file: {} holds no PEM certificate",
            path.display(),
            dir.path().join("c.pem").display()
        );
        assert_eq!(errors, expected);
    }
}
