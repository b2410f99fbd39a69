//! The config file exactly as written: serde structs, unknown keys rejected.
//!
//! Scalars are already typed (see [`super::scalars`]); what needs more than one field at a
//! time (merging defaults, server and probe; timeout against interval; server references)
//! happens in [`super::validate`]. `Spanned` keeps the position of the values those checks
//! may have to point at.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_saphyr::Spanned;

use super::scalars::{
    ByteSize, CronValue, DivaltoMode, DurationValue, FailureReason, HeaderKey, LabelKey,
    MaintenanceModeValue, MethodValue, Objective, RegexValue, SecretText, StatusMatcher, Text,
    TimeZoneValue,
};

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Global cap on runs in flight.
    pub max_concurrent_probes: Option<Spanned<usize>>,
    /// Results kept per probe for the API and the status page.
    pub history_size: Option<Spanned<usize>>,
    /// Least time between the start of a probe's last run and an on-demand run of it
    /// (`0s`: no limit); a duration, kept as text because zero is allowed here.
    pub run_now_min_gap: Option<Spanned<Text>>,
    /// Upper bounds (seconds) of `webhook_probe_duration_seconds`.
    pub duration_buckets: Option<Spanned<Vec<f64>>>,
    /// Settings every probe inherits.
    #[serde(default)]
    pub defaults: Option<Spanned<RawProbe>>,
    /// Named Divalto REST bases.
    #[serde(default)]
    pub servers: BTreeMap<String, Spanned<RawServer>>,
    /// The probes (boxed: a raw probe is large, and a list of ten thousand should not need
    /// one contiguous block of them while the file is read).
    #[serde(default)]
    pub probes: Vec<Spanned<Box<RawProbe>>>,
    /// Patterns of more files holding `servers:` and `probes:` (one file per tenant),
    /// relative to this file's folder.
    pub include: Option<Vec<Spanned<Text>>>,
}

/// An included file: only `servers:` and `probes:`. The keys of the main file are read (and
/// ignored) so the error can say where they belong instead of "unknown field".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInclude {
    /// Named Divalto REST bases of this file.
    #[serde(default)]
    pub servers: BTreeMap<String, Spanned<RawServer>>,
    /// The probes of this file.
    #[serde(default)]
    pub probes: Vec<Spanned<Box<RawProbe>>>,
    /// Main-file keys, refused with a message each.
    pub max_concurrent_probes: Option<Spanned<IgnoredAny>>,
    /// See `max_concurrent_probes`.
    pub history_size: Option<Spanned<IgnoredAny>>,
    /// See `max_concurrent_probes`.
    pub run_now_min_gap: Option<Spanned<IgnoredAny>>,
    /// See `max_concurrent_probes`.
    pub duration_buckets: Option<Spanned<IgnoredAny>>,
    /// See `max_concurrent_probes`.
    pub defaults: Option<Spanned<IgnoredAny>>,
    /// See `max_concurrent_probes` (an included file includes nothing more).
    pub include: Option<Spanned<IgnoredAny>>,
}

impl RawInclude {
    /// The main-file keys this file sets, with their positions.
    pub fn main_file_keys(&self) -> Vec<(&'static str, serde_saphyr::Location)> {
        [
            ("max_concurrent_probes", &self.max_concurrent_probes),
            ("history_size", &self.history_size),
            ("run_now_min_gap", &self.run_now_min_gap),
            ("duration_buckets", &self.duration_buckets),
            ("defaults", &self.defaults),
            ("include", &self.include),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.as_ref().map(|v| (key, v.referenced)))
        .collect()
    }
}

/// A Divalto REST base shared by probes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// `https://api.divaltocloud.com/123456/TEST1`.
    pub base_url: Spanned<Text>,
    /// Path between the base and the code; `/api/v1/WebHook` by default.
    pub webhook_path: Option<Text>,
    /// Runs in flight against this server at once.
    pub max_concurrent: Option<Spanned<usize>>,
    /// Headers for every probe of the server.
    pub headers: Option<BTreeMap<HeaderKey, Text>>,
    /// Query parameters for every probe of the server.
    pub params: Option<BTreeMap<Text, Text>>,
    /// Static labels for every probe of the server.
    pub labels: Option<BTreeMap<LabelKey, Text>>,
    /// TLS settings for every probe of the server.
    pub tls: Option<RawTls>,
    /// HTTP proxy for every probe of the server.
    pub proxy_url: Option<Spanned<Text>>,
    /// Hosts reached without the proxy.
    pub no_proxy: Option<Vec<Text>>,
    /// Take the proxy from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub proxy_from_environment: Option<bool>,
    /// Failure reasons retried, for every probe of the server.
    pub retry_on: Option<Vec<FailureReason>>,
    /// Request body for every probe of the server (`${VAR}` expanded).
    pub body: Option<Spanned<Text>>,
    /// A file holding the request body.
    pub body_file: Option<Spanned<Text>>,
    /// A request body written as YAML, sent as JSON.
    pub json: Option<Spanned<serde_json::Value>>,
    /// `Authorization: Basic` for every probe of the server.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// `Authorization: <type> <credentials>` for every probe of the server.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// Maintenance windows of every probe of the server (a list: replaces, never merges).
    pub maintenance: Option<Vec<RawMaintenance>>,
    /// Availability objective of every probe of the server.
    pub objective: Option<Objective>,
}

/// A probe, or the `defaults` block (same keys; probe-only keys are refused there).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Unique name, the `probe` label.
    pub name: Option<Spanned<String>>,
    /// Name of a server in `servers`.
    pub server: Option<Spanned<String>>,
    /// The webhook code.
    pub code: Option<Spanned<SecretText>>,
    /// A file holding the webhook code.
    pub code_file: Option<Spanned<Text>>,
    /// A full URL, instead of server + code.
    pub url: Option<Spanned<Text>>,
    /// Fixed period between runs.
    pub interval: Option<Spanned<DurationValue>>,
    /// Cron expression, instead of an interval.
    pub schedule: Option<Spanned<CronValue>>,
    /// Zone of the cron expression.
    pub timezone: Option<TimeZoneValue>,
    /// Budget of one whole run.
    pub timeout: Option<Spanned<DurationValue>>,
    /// HTTP method.
    pub method: Option<MethodValue>,
    /// Request headers (merged).
    pub headers: Option<BTreeMap<HeaderKey, Text>>,
    /// Query parameters (merged).
    pub params: Option<BTreeMap<Text, Text>>,
    /// Static labels (merged).
    pub labels: Option<BTreeMap<LabelKey, Text>>,
    /// Extra attempts inside one run.
    pub retries: Option<u32>,
    /// Pause between attempts.
    pub retry_delay: Option<DurationValue>,
    /// Failure reasons that start a retry (a list: replaces, never merges).
    pub retry_on: Option<Vec<FailureReason>>,
    /// Whether 3xx answers are followed.
    pub follow_redirects: Option<bool>,
    /// Largest body read.
    pub max_body_bytes: Option<ByteSize>,
    /// TLS client settings.
    pub tls: Option<RawTls>,
    /// What counts as success.
    pub expect: Option<RawExpect>,
    /// HTTP proxy (`http://user:password@proxy:3128`).
    pub proxy_url: Option<Spanned<Text>>,
    /// Hosts reached without the proxy.
    pub no_proxy: Option<Vec<Text>>,
    /// Take the proxy from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    pub proxy_from_environment: Option<bool>,
    /// Request body (`${VAR}` expanded); at most one of body, body_file, json.
    pub body: Option<Spanned<Text>>,
    /// A file holding the request body, read at load time.
    pub body_file: Option<Spanned<Text>>,
    /// A request body written as YAML, sent as JSON.
    pub json: Option<Spanned<serde_json::Value>>,
    /// `Authorization: Basic` toward the target.
    pub basic_auth: Option<Spanned<RawBasicAuth>>,
    /// `Authorization: <type> <credentials>` toward the target.
    pub authorization: Option<Spanned<RawAuthorization>>,
    /// Availability objective (SLO), for the burn-rate rules of `config/slo.yml`.
    pub objective: Option<Objective>,
    /// Windows when the ERP must not be called (a list: replaces, never merges; `[]` clears
    /// the windows of the server or the defaults).
    pub maintenance: Option<Vec<RawMaintenance>>,
}

/// One maintenance window: opens when `schedule` fires, stays open `duration`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    /// When it opens: a cron expression (checked to fire again at decode time).
    pub schedule: CronValue,
    /// How long it stays open (positive).
    pub duration: DurationValue,
    /// The zone of `schedule` (UTC by default, not the probe's `timezone`: a window is the
    /// ERP's, a schedule the probe's).
    pub timezone: Option<TimeZoneValue>,
    /// `skip` (default) or `mute`.
    pub mode: Option<MaintenanceModeValue>,
}

/// Prometheus' `basic_auth`: a username and exactly one of password, password_file.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBasicAuth {
    /// Not secret (as in Prometheus).
    pub username: Text,
    /// The password (`${VAR}` expanded).
    pub password: Option<Text>,
    /// A file holding the password, read at load and reload, trimmed.
    pub password_file: Option<Text>,
}

/// Prometheus' `authorization`: a type (default `Bearer`) and exactly one of credentials,
/// credentials_file.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAuthorization {
    /// The scheme, `Bearer` by default.
    #[serde(rename = "type")]
    pub kind: Option<Text>,
    /// The credentials (`${VAR}` expanded).
    pub credentials: Option<Text>,
    /// A file holding them, read at load and reload, trimmed.
    pub credentials_file: Option<Text>,
}

/// TLS client settings; each key overrides on its own.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: Option<bool>,
    /// PEM bundle of CAs to trust instead of the system store.
    pub ca_file: Option<Spanned<Text>>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<Spanned<Text>>,
    /// Key of the client certificate (PEM).
    pub key_file: Option<Spanned<Text>>,
    /// Name sent in SNI and checked in the certificate, when not the URL host.
    pub server_name: Option<Spanned<Text>>,
}

/// Success rules; each key overrides on its own.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawExpect {
    /// Accepted HTTP statuses.
    pub status: Option<Vec<StatusMatcher>>,
    /// Use of the Divalto code.
    pub divalto: Option<DivaltoMode>,
    /// Divalto codes that mean success.
    pub success_codes: Option<Vec<Text>>,
    /// The body must match this.
    pub body_matches: Option<RegexValue>,
    /// The body must not match this.
    pub body_not_matches: Option<RegexValue>,
}
