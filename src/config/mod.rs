//! The only code that touches YAML: [`load`] reads a file into a validated [`Config`].
//!
//! After this module nothing is a bare string standing for a URL, a duration, a schedule, a
//! method or a regex: the rest of the program works with checked types.

mod files;
pub mod include;
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

pub use files::{Check, FileStatus, GoodVersions, Layout, load_layout};
pub use proxy::{ProxyConfig, ProxyEndpoint};
pub use scalars::{DivaltoMode, FailureReason, RegexValue, StatusMatcher};
pub use secret::Secret;
pub use target::Target;

use crate::schedule::{MaintenanceWindow, Schedule};

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
///
/// Plain data compared as a whole (`PartialEq` is derived, so a new field cannot be left out
/// of [`ProbeSpec::same_settings`]); only [`ProbeSpec::origin`] is left out of comparisons.
#[derive(Debug, PartialEq)]
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
    /// TLS client settings, with the files as read at load time (`crate::tls` builds the
    /// client configuration from them).
    pub tls: Arc<TlsSettings>,
    /// HTTP proxy, if any.
    pub proxy: Arc<ProxyConfig>,
    /// What counts as success.
    pub expect: Arc<Expect>,
    /// Where the probe is written, for messages about it after loading.
    pub origin: Origin,
    /// The request body, if any (never shown: its size only).
    pub body: Option<RequestBody>,
    /// The `Authorization` value from `basic_auth` or `authorization` (sensitive: its
    /// `Debug` hides it), sent to the probe's own origin only.
    pub credentials: Option<HeaderValue>,
    /// Windows when the ERP must be left alone: `skip` ones stop scheduled runs, every one
    /// sets `webhook_probe_maintenance` (the shipped alerts stay silent).
    pub maintenance: Vec<MaintenanceWindow>,
    /// The availability objective as a ratio (0.995 for `99.5%`), exported as
    /// `webhook_probe_objective_ratio` for the SLO rules; `None` when not set.
    pub objective: Option<f64>,
}

/// A request body as sent, held as bytes; formats as its size only (a body may carry an
/// ERP payload or a token).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestBody {
    /// The bytes sent.
    pub bytes: bytes::Bytes,
    /// Written as `json:`: sent with `Content-Type: application/json` unless a header sets one.
    pub json: bool,
}

impl RequestBody {
    /// A body of `bytes`.
    pub fn new(bytes: Vec<u8>, json: bool) -> Self {
        Self {
            bytes: bytes.into(),
            json,
        }
    }

    /// Its length in bytes, the only thing ever shown.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestBody({} bytes)", self.bytes.len())
    }
}

impl ProbeSpec {
    /// Whether `other` would run exactly like this probe: a reload keeps such a probe's
    /// timer, counters and history. TLS files count by content, so a rotated CA or client
    /// certificate restarts the probe with the new files; the probe's place in the file
    /// does not count.
    pub fn same_settings(&self, other: &ProbeSpec) -> bool {
        self == other
    }

    /// When the next scheduled run after `after` starts, `skip` windows considered.
    pub fn next_start(&self, after: chrono::DateTime<chrono::Utc>) -> crate::schedule::NextStart {
        crate::schedule::maintenance::next_start(
            &self.schedule,
            &self.name,
            &self.maintenance,
            after,
        )
    }

    /// `text` with every secret of this probe redacted: for messages that might quote the
    /// URL (redirect targets, errors).
    pub fn redact(&self, text: &str) -> String {
        self.target.redact(text)
    }
}

/// Where a probe and its TLS keys are written, for messages about them after loading (a
/// TLS file that does not parse). Always equal to another: moving a probe in the file or to
/// another file, or adding one above it, does not change how it runs (the scheduler keeps
/// it running and only notes its new file for the API and the page).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The config file the probe is written in (the main file or an included one), as
    /// messages, the API and the status page name it.
    pub file: PathBuf,
    /// `probes[2] "refresh-customer"`: how messages name the probe (the index is in its file).
    pub label: String,
    /// The probe's entry.
    pub probe: Option<Location>,
    /// `tls.ca_file`, wherever it was set (probe, server or defaults).
    pub ca_file: Option<Location>,
    /// `tls.cert_file`.
    pub cert_file: Option<Location>,
    /// `tls.key_file`.
    pub key_file: Option<Location>,
}

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// TLS client settings after merging: plain data, files held by content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsSettings {
    /// Accept any certificate.
    pub insecure_skip_verify: bool,
    /// CAs trusted instead of the system store.
    pub ca_file: Option<TlsFile>,
    /// Client certificate for mutual TLS.
    pub cert_file: Option<TlsFile>,
    /// Key of the client certificate.
    pub key_file: Option<TlsFile>,
    /// Name checked in the certificate, when not the URL host.
    pub server_name: Option<TlsServerName>,
}

/// A file named by the TLS settings and its bytes as read when the config was loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsFile {
    /// The path, resolved against the config file's directory.
    pub path: PathBuf,
    /// The content (a private key, possibly: never shown).
    pub contents: Arc<[u8]>,
    /// A digest of `contents`, so hashing the settings does not read whole files.
    digest: u64,
}

impl TlsFile {
    /// A file and what was read from it.
    pub fn new(path: PathBuf, contents: Vec<u8>) -> Self {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        contents.hash(&mut hasher);
        Self {
            path,
            contents: contents.into(),
            digest: hasher.finish(),
        }
    }
}

impl std::hash::Hash for TlsFile {
    /// Consistent with `Eq`: equal contents have equal digests.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.path.hash(state);
        self.digest.hash(state);
    }
}

impl fmt::Debug for TlsFile {
    /// The path only: the content may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsFile({})", self.path.display())
    }
}

/// A configured `tls.server_name`: a DNS name or an IP address, checked at load time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsServerName(String);

impl TlsServerName {
    /// Checks `name` the way a TLS client does (RFC 1123 labels, the last one not a number,
    /// or an IPv4 or IPv6 address).
    ///
    /// # Errors
    /// A name no certificate can be checked against, with the fix.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name.parse::<std::net::IpAddr>().is_ok() || valid_dns_name(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(format!(
                "{} is not a valid TLS server name (write a DNS name or an IP address): invalid dns name",
                scalars::shown(name)
            ))
        }
    }

    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `name` is a DNS name a certificate can hold: labels of letters, digits, `_` and
/// inner `-`, at most 63 bytes each and 253 in all, an optional trailing dot, and a last
/// label that is not a decimal or `0x` number (that would read as an IPv4 address).
fn valid_dns_name(name: &str) -> bool {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() || name.len() > 253 {
        return false;
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    if !trimmed.split('.').all(label_ok) {
        return false;
    }
    let last = trimmed.rsplit('.').next().unwrap_or_default();
    let decimal = last.bytes().all(|b| b.is_ascii_digit());
    let hex = ["0x", "0X"].iter().any(|prefix| {
        last.strip_prefix(prefix)
            .is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    !decimal && !hex
}

/// What counts as a successful run.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Accepted HTTP statuses.
    pub status: Vec<StatusMatcher>,
    /// Use of the Divalto code.
    pub divalto: DivaltoMode,
    /// Divalto codes meaning success.
    pub success_codes: Vec<String>,
    /// The body must match this.
    pub body_matches: Option<RegexValue>,
    /// The body must not match this.
    pub body_not_matches: Option<RegexValue>,
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

/// Reads, parses and validates the config file at `path` and the files it includes, all of
/// them: the strict form of [`load_layout`] (nothing refused on its own).
///
/// # Errors
/// Every problem found, each with the file, line and column and the fix.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_layout(path, &GoodVersions::default(), &|_| Vec::new())?.into_complete()
}

/// The text of a config file.
///
/// # Errors
/// It cannot be read or is not UTF-8.
fn read_text(path: &Path) -> Result<String, ConfigErrors> {
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
    Ok(text.to_owned())
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

/// Parses and validates config text; `path` is used in messages and to resolve relative
/// paths (files read at load, `include:` patterns), which are all relative to its folder.
///
/// # Errors
/// As [`load`].
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    files::layout_of(path, text, &GoodVersions::default(), &|_| Vec::new())?.into_complete()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe<'a>(config: &'a Config, name: &str) -> &'a ProbeSpec {
        config.probes.iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn probes_inheriting_the_same_blocks_share_them_and_one_with_its_own_does_not() {
        let config = parse(
            Path::new("t.yaml"),
            "defaults:\n  proxy_url: 'http://127.0.0.1:3128'\n  tls: {server_name: erp.example}\n  expect: {body_matches: OK}\n\
             probes:\n\
             - {name: a, url: 'https://127.0.0.1:1/'}\n\
             - {name: b, url: 'https://127.0.0.1:2/'}\n\
             - {name: own, url: 'https://127.0.0.1:3/', expect: {body_matches: KO}, tls: {server_name: other.example}}\n",
        )
        .unwrap();
        let (a, b, own) = (
            probe(&config, "a"),
            probe(&config, "b"),
            probe(&config, "own"),
        );
        assert!(Arc::ptr_eq(&a.tls, &b.tls));
        assert!(Arc::ptr_eq(&a.proxy, &b.proxy));
        assert!(Arc::ptr_eq(&a.expect, &b.expect));
        assert!(Arc::ptr_eq(&a.proxy, &own.proxy));
        assert!(!Arc::ptr_eq(&a.expect, &own.expect));
        assert_eq!(own.expect.body_matches.as_ref().unwrap().0.as_str(), "KO");
        assert_eq!(
            own.tls.server_name.as_ref().map(TlsServerName::as_str),
            Some("other.example")
        );
        assert_eq!(
            a.tls.server_name.as_ref().map(TlsServerName::as_str),
            Some("erp.example")
        );
    }

    #[test]
    fn a_probe_moved_down_the_file_keeps_its_settings() {
        let p = "  - {name: p, url: 'http://127.0.0.1:1/', expect: {body_matches: OK}}\n";
        let before = parse(Path::new("t.yaml"), &format!("probes:\n{p}")).unwrap();
        let after = parse(
            Path::new("t.yaml"),
            &format!("probes:\n  - {{name: new, url: 'http://127.0.0.1:2/'}}\n{p}"),
        )
        .unwrap();
        assert_ne!(
            probe(&after, "p").origin.label,
            probe(&before, "p").origin.label
        );
        assert!(probe(&after, "p").same_settings(probe(&before, "p")));
        assert!(!probe(&after, "new").same_settings(probe(&before, "p")));
    }

    #[test]
    fn a_changed_regex_or_tls_file_content_changes_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.yaml");
        let ca = dir.path().join("ca.pem");
        let text = |pattern: &str| {
            format!(
                "probes:\n  - {{name: p, url: 'https://127.0.0.1:1/', tls: {{ca_file: ca.pem}}, expect: {{body_matches: '{pattern}'}}}}\n"
            )
        };
        std::fs::write(&ca, "first").unwrap();
        let first = parse(&path, &text("OK")).unwrap();
        let again = parse(&path, &text("OK")).unwrap();
        assert!(probe(&again, "p").same_settings(probe(&first, "p")));
        let other_regex = parse(&path, &text("OK+")).unwrap();
        assert!(!probe(&other_regex, "p").same_settings(probe(&first, "p")));
        std::fs::write(&ca, "rotated").unwrap();
        let rotated = parse(&path, &text("OK")).unwrap();
        assert!(!probe(&rotated, "p").same_settings(probe(&first, "p")));
    }

    /// A webhook URL pasted into a file key (the failure proptest found in CI) or another
    /// free-text key: the message quoting what it could not use shows the code redacted.
    #[test]
    fn a_webhook_url_written_as_a_file_path_is_quoted_redacted() {
        let code = "PLANTEDWEBHOOKCODE0123456789ABCDEF";
        let url = format!("https://erp.example.com/api/v1/WebHook/{code}?dos=998");
        for key in [
            "tls: {ca_file: 'URL'}",
            "tls: {cert_file: 'URL', key_file: 'URL'}",
            "body_file: 'URL'",
            "code_file: 'URL'",
            "basic_auth: {username: u, password_file: 'URL'}",
            "authorization: {credentials_file: 'URL'}",
            "tls: {server_name: 'URL'}",
            "retry_on: ['URL']",
        ] {
            // A code file names a Divalto webhook: the probe then has a server, not a URL.
            let target = if key.starts_with("code_file") {
                "server: s".to_string()
            } else {
                format!("url: '{url}'")
            };
            let text = format!(
                "servers: {{s: {{base_url: 'https://api.divaltocloud.com/123456/TEST1'}}}}\nprobes:\n  - {{name: p, {target}, {}}}\n",
                key.replace("URL", &url)
            );
            // In a folder, as configs are: a relative path is joined to it.
            let errors = parse(Path::new("/etc/webhook-exporter/t.yaml"), &text)
                .unwrap_err()
                .to_string();
            assert!(!errors.contains(code), "{key}: {errors}");
            assert!(errors.contains("PLAN…CDEF"), "{key}: {errors}");
        }
    }

    #[test]
    fn a_tls_file_that_cannot_be_read_is_an_error_at_its_key() {
        let text = "probes:\n  - name: p\n    url: https://127.0.0.1:1/\n    tls:\n      key_file: /nonexistent/k.pem\n      cert_file: /nonexistent/c.pem\n";
        let errors = parse(Path::new("t.yaml"), text).unwrap_err().to_string();
        assert!(
            errors.contains("t.yaml:5:17: probes[0] \"p\".tls.key_file: cannot read a PEM private key from /nonexistent/k.pem: I/O error:"),
            "{errors}"
        );
        assert!(
            errors.contains("t.yaml:6:18: probes[0] \"p\".tls.cert_file: cannot read /nonexistent/c.pem: I/O error:"),
            "{errors}"
        );
    }
}
