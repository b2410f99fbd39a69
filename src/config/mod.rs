//! The only code that touches YAML: [`load`] reads a file into a validated [`Config`].
//!
//! After this module nothing is a bare string standing for a URL, a duration, a schedule, a
//! method or a regex: the rest of the program works with checked types.

mod merge;
pub mod proxy;
mod raw;
pub mod scalars;
pub mod secret;
mod target;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use proxy::{ProxyConfig, ProxyEndpoint};
pub use scalars::{DivaltoMode, FailureReason, StatusMatcher};
pub use secret::Secret;
pub use target::Target;

use crate::schedule::Schedule;

/// Path used when `--config.file` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "config/webhook-exporter.yaml";
/// Default of `max_concurrent_probes`: enough for hundreds of probes, far below file limits.
pub const DEFAULT_MAX_CONCURRENT_PROBES: usize = 256;
/// Default of `history_size`.
pub const DEFAULT_HISTORY_SIZE: usize = 100;
/// Default of `run_now_min_gap`: on-demand runs of one probe at most every 10 s, so no loop
/// of `POST …/run` can call an ERP action back to back.
pub const DEFAULT_RUN_NOW_MIN_GAP: Duration = Duration::from_secs(10);
/// Largest `history_size`: each probe reserves its whole history (48 bytes a result) at its
/// first run, so a typo of a few zeros must not ask for terabytes.
pub const MAX_HISTORY_SIZE: usize = 10_000;
/// Probes one config file is sized for (the YAML parser's budget follows from it).
pub const MAX_PROBES: usize = 100_000;

/// A validated configuration, shared read-only by the scheduler and the HTTP side.
#[derive(Debug)]
pub struct Config {
    /// The file it came from, for messages.
    pub source: PathBuf,
    /// Global cap on runs in flight.
    pub max_concurrent_probes: usize,
    /// Results kept per probe.
    pub history_size: usize,
    /// Least time from the start of a probe's last run to an on-demand run (zero: no limit).
    pub run_now_min_gap: Duration,
    /// Buckets of `webhook_probe_duration_seconds`, in seconds.
    pub duration_buckets: Vec<f64>,
    /// Servers by name.
    pub servers: BTreeMap<String, Server>,
    /// Probes in file order.
    pub probes: Vec<Arc<ProbeSpec>>,
}

/// A Divalto REST base, as far as the scheduler cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name in the file.
    pub name: String,
    /// Runs in flight against it at once (`None`: only the global cap applies).
    pub max_concurrent: Option<usize>,
}

/// Everything needed to run one probe, defaults and server settings already merged in.
#[derive(Debug)]
pub struct ProbeSpec {
    /// Unique name, the `probe` label.
    pub name: String,
    /// Server the probe belongs to, for the per-server concurrency cap.
    pub server: Option<String>,
    /// The URL called, with its secret.
    pub target: Target,
    /// HTTP method.
    pub method: Method,
    /// Request headers (values never shown).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Static labels added to every series of the probe.
    pub labels: BTreeMap<String, String>,
    /// When it runs.
    pub schedule: Schedule,
    /// Budget of one whole run.
    pub timeout: Duration,
    /// Extra attempts inside one run.
    pub retries: u32,
    /// Pause between attempts.
    pub retry_delay: Duration,
    /// Failure reasons that start a retry (by default only those before the request
    /// reached the server: `dns`, `connect`, `tls`).
    pub retry_on: Vec<FailureReason>,
    /// Whether 3xx answers are followed.
    pub follow_redirects: bool,
    /// Largest body read before `body_too_large`.
    pub max_body_bytes: u64,
    /// TLS client configuration, built once at load time.
    pub tls: TlsClient,
    /// HTTP proxy, if any.
    pub proxy: ProxyConfig,
    /// What counts as success.
    pub expect: Expect,
}

impl ProbeSpec {
    /// Whether `other` would run exactly like this probe: a reload keeps such a probe's
    /// timer, counters and history. TLS files count by content, so a rotated CA or client
    /// certificate restarts the probe with the new files.
    pub fn same_settings(&self, other: &ProbeSpec) -> bool {
        self.name == other.name
            && self.server == other.server
            && self.target == other.target
            && self.method == other.method
            && self.headers == other.headers
            && self.labels == other.labels
            && self.schedule == other.schedule
            && self.timeout == other.timeout
            && self.retries == other.retries
            && self.retry_delay == other.retry_delay
            && self.retry_on == other.retry_on
            && self.follow_redirects == other.follow_redirects
            && self.max_body_bytes == other.max_body_bytes
            && self.tls.settings == other.tls.settings
            && self.tls.files_digest == other.tls.files_digest
            && self.expect.same_rules(&other.expect)
            && self.proxy == other.proxy
    }

    /// `text` with every secret of this probe redacted: for messages that might quote the
    /// URL (redirect targets, errors).
    pub fn redact(&self, text: &str) -> String {
        self.target.redact(text)
    }
}

/// TLS settings of a probe and the client configuration built from them.
#[derive(Clone)]
pub struct TlsClient {
    /// The settings as configured, for display.
    pub settings: TlsSettings,
    /// The rustls configuration every run of the probe starts from.
    pub config: Arc<rustls::ClientConfig>,
    /// The certificate check of `config`, wrapped per run to capture the presented chain.
    pub verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
    /// Digest of the CA, certificate and key files as read, to notice a rotation on reload.
    pub files_digest: u64,
    /// `settings.server_name`, parsed when the config is loaded (an invalid name is a config
    /// error); `None`: the URL host is used.
    pub server_name: Option<rustls::pki_types::ServerName<'static>>,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

/// TLS client settings after merging.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// CAs trusted instead of the system store.
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Key of the client certificate.
    pub key_file: Option<PathBuf>,
    /// Name checked in the certificate, when not the URL host.
    pub server_name: Option<String>,
}

/// What counts as a successful run.
#[derive(Debug, Clone)]
pub struct Expect {
    /// Accepted HTTP statuses.
    pub status: Vec<StatusMatcher>,
    /// Use of the Divalto code.
    pub divalto: DivaltoMode,
    /// Divalto codes meaning success.
    pub success_codes: Vec<String>,
    /// The body must match this.
    pub body_matches: Option<regex::Regex>,
    /// The body must not match this.
    pub body_not_matches: Option<regex::Regex>,
}

impl Expect {
    /// Whether both apply the same rules (regexes compared by their source).
    pub fn same_rules(&self, other: &Expect) -> bool {
        let same_regex = |a: &Option<regex::Regex>, b: &Option<regex::Regex>| {
            a.as_ref().map(regex::Regex::as_str) == b.as_ref().map(regex::Regex::as_str)
        };
        self.status == other.status
            && self.divalto == other.divalto
            && self.success_codes == other.success_codes
            && same_regex(&self.body_matches, &other.body_matches)
            && same_regex(&self.body_not_matches, &other.body_not_matches)
    }
}

/// A position in a config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// 1-based line.
    pub line: u64,
    /// 1-based column, in characters.
    pub column: u64,
}

impl Location {
    /// The position of a YAML node, `None` when the parser did not know it.
    pub(crate) fn of(yaml: serde_saphyr::Location) -> Option<Self> {
        (yaml.line() > 0).then(|| Self {
            line: yaml.line(),
            column: yaml.column(),
        })
    }
}

/// A config problem, pointing at the file and, when known, the line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Where in the file; `None` for a problem of the whole file.
    pub location: Option<Location>,
    /// What is wrong and how to fix it; secrets already redacted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.file.display();
        match self.location {
            Some(Location { line, column }) => {
                write!(f, "{file}:{line}:{column}: {}", self.message)
            }
            None => write!(f, "{file}: {}", self.message),
        }
    }
}

/// All the problems found in one config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads, parses and validates the config file at `path`.
///
/// # Errors
/// Every problem found, each with the file, line and column and the fix.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            location: None,
            message: format!("cannot read the config file: {e}"),
        }])
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            location: Some(position_of(&bytes, e.valid_up_to())),
            // An error means a byte at valid_up_to() starts an invalid or cut sequence.
            message: format!(
                "the file is not valid UTF-8 (byte 0x{:02X}): save it as UTF-8",
                bytes[e.valid_up_to()]
            ),
        }])
    })?;
    parse(path, text)
}

/// 1-based line and column (in characters) of byte `offset`, all bytes before it being valid
/// UTF-8.
fn position_of(bytes: &[u8], offset: usize) -> Location {
    let before = String::from_utf8_lossy(&bytes[..offset]);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    Location {
        line: line as u64,
        column: column as u64,
    }
}

/// Parses and validates config text; `path` is used in messages and to resolve nothing else.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    validate::parse(path, text)
}
