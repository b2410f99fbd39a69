//! Raw file -> [`Config`]: merging defaults, servers and probes, and the checks that need
//! more than one value at a time. Every error names the file, the position and the fix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use http::{HeaderName, HeaderValue};
use serde_saphyr::{Location, Spanned};
use url::Url;

use super::raw::{RawConfig, RawExpect, RawProbe, RawServer, RawTls};
use super::values::{
    DivaltoMode, FailureReason, MAX_DETAIL_CHARS, MAX_SHOWN_CHARS, StatusMatcher, Text, cut, shown,
};
use super::{
    Config, ConfigError, ConfigErrors, DEFAULT_HISTORY_SIZE, DEFAULT_MAX_CONCURRENT_PROBES, Expect,
    MAX_HISTORY_SIZE, MAX_PROBES, ProbeSpec, ProxyConfig, ProxyEndpoint, Secret, Server, Target,
    TlsClient, TlsSettings,
};
use crate::schedule::Schedule;

/// Interval of a probe that sets neither an interval nor a schedule.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Budget of a run when no timeout is set.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts when none is set.
const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Reasons retried when `retry_on` is not set: failures before the request reached the
/// server, so a retry never repeats an ERP action.
const DEFAULT_RETRY_ON: [FailureReason; 3] = [
    FailureReason::Dns,
    FailureReason::Connect,
    FailureReason::Tls,
];
/// Body cap when none is set.
const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Path between a server's base URL and the webhook code.
const DEFAULT_WEBHOOK_PATH: &str = "/api/v1/WebHook";
/// Buckets suited to webhook latencies: an ERP answers in tens of ms to a few seconds.
pub const DEFAULT_DURATION_BUCKETS: &[f64] =
    &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Collects errors with their positions while validation goes on, so one run of
/// `check-config` reports every problem, not just the first.
struct Errors<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

/// Longest message kept: a net under [`shown`] for anything quoted by other means.
const MAX_MESSAGE_CHARS: usize = 1_000;

impl Errors<'_> {
    fn at(&mut self, location: Location, message: impl Into<String>) {
        let message = message.into();
        self.list.push(ConfigError {
            file: self.file.to_owned(),
            location: super::Location::of(location),
            message: cut(&message, MAX_MESSAGE_CHARS).into_owned(),
        });
    }
}

/// YAML nodes (mappings, sequences, scalars) one probe may take on average within the
/// budget: a Divalto probe with params, labels, headers and expectations takes 20 to 30.
const NODES_PER_PROBE: usize = 40;

/// What serde-saphyr may spend on one file: enough for [`MAX_PROBES`] probes (its default of
/// 250,000 nodes stops near 50,000), still a bound against a file built to exhaust memory.
fn yaml_options() -> serde_saphyr::Options {
    let nodes = MAX_PROBES * NODES_PER_PROBE;
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: nodes,
            // Each node is one event, plus one closing event per mapping or sequence.
            max_events: 2 * nodes,
            max_total_scalar_bytes: 256 << 20,
        },
    }
}

/// Parses `text` (the content of `path`) and validates it.
pub(super) fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig =
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                location: e.location().and_then(super::Location::of),
                message: yaml_message(&e),
            }])
        })?;
    let mut errors = Errors {
        file: path,
        list: Vec::new(),
    };
    let config = build(path, raw, &mut errors);
    if errors.list.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors.list))
    }
}

/// The message of a YAML error without its position (we print that ourselves) and with a
/// hint where serde's wording is not obvious to an operator.
fn yaml_message(error: &serde_saphyr::Error) -> String {
    let options = serde_saphyr::render_options! {
        formatter: &serde_saphyr::UserMessageFormatter,
        snippets: serde_saphyr::SnippetMode::Off,
    };
    let rendered = error.without_snippet().render_with_options(options);
    let message = cut_quoted(strip_position_suffix(rendered.trim()));
    let message = cut(&message, MAX_MESSAGE_CHARS);
    if message.contains("limits breached") {
        format!(
            "{message}; a config holds at most {MAX_PROBES} probes (about {NODES_PER_PROBE} YAML values each)"
        )
    } else if message.contains("unknown field") {
        format!("{message}; check the spelling or remove the key")
    } else if message.contains("duplicate") {
        format!("{message}; each key may appear once")
    } else {
        message.into_owned()
    }
}

/// `message` with each span between backticks or double quotes (the library quoting a key
/// or a value) cut to [`MAX_SHOWN_CHARS`].
fn cut_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(4 * MAX_MESSAGE_CHARS));
    let mut rest = message;
    while let Some(open) = rest.find(['`', '"']) {
        let quote = &rest[open..=open];
        out.push_str(&rest[..=open]);
        let inside = &rest[open + 1..];
        match inside.find(quote) {
            Some(close) => {
                out.push_str(&cut(&inside[..close], MAX_SHOWN_CHARS));
                out.push_str(quote);
                rest = &inside[close + 1..];
            }
            None => {
                out.push_str(&cut(inside, MAX_SHOWN_CHARS));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Drops a trailing ` at line N column M` that the YAML library appends.
fn strip_position_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(pos) if message[pos..].contains("column") => &message[..pos],
        _ => message,
    }
}

fn build(path: &Path, raw: RawConfig, errors: &mut Errors<'_>) -> Config {
    let base_dir = path.parent().map(Path::to_owned).unwrap_or_default();

    let max_concurrent_probes = positive(
        raw.max_concurrent_probes,
        DEFAULT_MAX_CONCURRENT_PROBES,
        "max_concurrent_probes",
        errors,
    );
    let history_size = match raw.history_size {
        // Every probe reserves its whole history at its first result.
        Some(size) if size.value > MAX_HISTORY_SIZE => {
            errors.at(
                size.referenced,
                format!(
                    "history_size: {} is more than {MAX_HISTORY_SIZE}; every probe keeps that many results in memory, so lower it",
                    size.value
                ),
            );
            DEFAULT_HISTORY_SIZE
        }
        size => positive(size, DEFAULT_HISTORY_SIZE, "history_size", errors),
    };
    let run_now_min_gap = raw
        .run_now_min_gap
        .map_or(super::DEFAULT_RUN_NOW_MIN_GAP, |gap| {
            gap_duration(&gap.value.0).unwrap_or_else(|message| {
                errors.at(gap.referenced, format!("run_now_min_gap: {message}"));
                super::DEFAULT_RUN_NOW_MIN_GAP
            })
        });
    let duration_buckets = match raw.duration_buckets {
        None => DEFAULT_DURATION_BUCKETS.to_vec(),
        Some(buckets) => {
            let increasing = buckets.value.windows(2).all(|w| w[0] < w[1]);
            let valid = !buckets.value.is_empty()
                && increasing
                && buckets.value.iter().all(|b| b.is_finite() && *b > 0.0);
            if !valid {
                errors.at(buckets.referenced, "duration_buckets: list positive, strictly increasing upper bounds in seconds, e.g. [0.1, 0.5, 1, 5]");
            }
            buckets.value
        }
    };

    let defaults = raw.defaults.map(|d| {
        for (key, location) in probe_only_keys(&d.value) {
            errors.at(location, format!("defaults.{key}: only a probe can set {key}; move it into the probes that need it"));
        }
        d.value
    }).unwrap_or_default();

    let servers: BTreeMap<String, ResolvedServer> = raw
        .servers
        .into_iter()
        .filter_map(|(name, server)| {
            let resolved = resolve_server(&name, server, errors)?;
            Some((name, resolved))
        })
        .collect();

    let mut tls_cache = HashMap::new();
    let mut seen = HashSet::new();
    let mut probes = Vec::new();
    for (index, probe) in raw.probes.into_iter().enumerate() {
        let Some(name) = probe_name(index, &probe, &mut seen, errors) else {
            continue;
        };
        let context = ProbeContext {
            index,
            name: &name,
            base_dir: &base_dir,
            defaults: &defaults,
            servers: &servers,
        };
        if let Some(spec) = context.build(probe, &mut tls_cache, errors) {
            probes.push(Arc::new(spec));
        }
    }

    Config {
        source: path.to_owned(),
        max_concurrent_probes,
        history_size,
        run_now_min_gap,
        duration_buckets,
        servers: servers
            .into_iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    Server {
                        name,
                        max_concurrent: s.max_concurrent,
                    },
                )
            })
            .collect(),
        probes,
    }
}

/// A duration where zero (`0s`, `0ms`, ...) is allowed: it turns a limit off.
fn gap_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit = text.trim_start_matches('0');
    if unit.len() < text.len() && matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w") {
        return Ok(Duration::ZERO);
    }
    super::values::parse_duration(text)
}

fn positive(
    value: Option<Spanned<usize>>,
    default: usize,
    key: &str,
    errors: &mut Errors<'_>,
) -> usize {
    match value {
        None => default,
        Some(v) if v.value == 0 => {
            errors.at(v.referenced, format!("{key}: must be at least 1"));
            default
        }
        Some(v) => v.value,
    }
}

/// Keys a `defaults` block must not carry, with their positions.
fn probe_only_keys(raw: &RawProbe) -> Vec<(&'static str, Location)> {
    let mut found = Vec::new();
    if let Some(v) = &raw.name {
        found.push(("name", v.referenced));
    }
    if let Some(v) = &raw.server {
        found.push(("server", v.referenced));
    }
    if let Some(v) = &raw.code {
        found.push(("code", v.referenced));
    }
    if let Some(v) = &raw.code_file {
        found.push(("code_file", v.referenced));
    }
    if let Some(v) = &raw.url {
        found.push(("url", v.referenced));
    }
    found
}

/// A server with its URL parts checked.
struct ResolvedServer {
    base_url: Url,
    webhook_path: String,
    max_concurrent: Option<usize>,
    headers: BTreeMap<String, String>,
    params: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    tls: RawTls,
    proxy: RawProxy,
    retry_on: Option<Vec<FailureReason>>,
}

/// The proxy keys of one layer (defaults, server or probe).
#[derive(Default)]
struct RawProxy {
    url: Option<Spanned<Text>>,
    no_proxy: Option<Vec<Text>>,
    from_environment: Option<bool>,
}

fn resolve_server(
    name: &str,
    server: Spanned<RawServer>,
    errors: &mut Errors<'_>,
) -> Option<ResolvedServer> {
    let raw = server.value;
    let base_url = match Url::parse(raw.base_url.value.0.trim()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
        Ok(_) => {
            errors.at(
                raw.base_url.referenced,
                format!(
                    "servers.{}.base_url: must be an http:// or https:// URL with a host",
                    cut(name, MAX_SHOWN_CHARS)
                ),
            );
            return None;
        }
        Err(e) => {
            errors.at(raw.base_url.referenced, format!("servers.{}.base_url: invalid URL ({e}); write e.g. https://api.divaltocloud.com/123456/TEST1", cut(name, MAX_SHOWN_CHARS)));
            return None;
        }
    };
    if let Some(max) = &raw.max_concurrent
        && max.value == 0
    {
        errors.at(
            max.referenced,
            format!(
                "servers.{}.max_concurrent: must be at least 1",
                cut(name, MAX_SHOWN_CHARS)
            ),
        );
    }
    Some(ResolvedServer {
        base_url,
        webhook_path: raw
            .webhook_path
            .map_or_else(|| DEFAULT_WEBHOOK_PATH.to_owned(), |p| p.0),
        max_concurrent: raw.max_concurrent.map(|m| m.value.max(1)),
        headers: text_map(raw.headers, |k| k.0),
        params: text_map(raw.params, |k| k.0),
        labels: text_map(raw.labels, |k| k.0),
        tls: raw.tls.unwrap_or_default(),
        retry_on: raw.retry_on,
        proxy: RawProxy {
            url: raw.proxy_url,
            no_proxy: raw.no_proxy,
            from_environment: raw.proxy_from_environment,
        },
    })
}

fn text_map<K>(
    map: Option<BTreeMap<K, Text>>,
    key: impl Fn(K) -> String,
) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (key(k), v.0))
        .collect()
}

/// Names are label values and URL path parts of the API: keep them to a safe alphabet.
fn valid_probe_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn probe_name(
    index: usize,
    probe: &Spanned<Box<RawProbe>>,
    seen: &mut HashSet<String>,
    errors: &mut Errors<'_>,
) -> Option<String> {
    let Some(name) = &probe.value.name else {
        errors.at(
            probe.referenced,
            format!("probes[{index}]: missing name; give every probe a unique name"),
        );
        return None;
    };
    if !valid_probe_name(&name.value) {
        errors.at(
            name.referenced,
            format!(
                "probes[{index}].name: {} is not a valid name; use letters, digits, _, . and -",
                shown(&name.value)
            ),
        );
        return None;
    }
    if !seen.insert(name.value.clone()) {
        errors.at(
            name.referenced,
            format!(
                "probes[{index}].name: duplicate probe name {}; names must be unique",
                shown(&name.value)
            ),
        );
        return None;
    }
    Some(name.value.clone())
}

/// What building one probe needs to know about the rest of the file.
struct ProbeContext<'a> {
    index: usize,
    name: &'a str,
    base_dir: &'a Path,
    defaults: &'a RawProbe,
    servers: &'a BTreeMap<String, ResolvedServer>,
}

impl ProbeContext<'_> {
    /// `probes[2] "refresh-customer"`: how messages name the probe.
    fn label(&self) -> String {
        format!("probes[{}] {}", self.index, shown(self.name))
    }

    /// `file` relative to the config file's directory (`Path::join` keeps an absolute
    /// path as it is).
    fn resolve_path(&self, file: &str) -> PathBuf {
        self.base_dir.join(file)
    }

    fn build(
        &self,
        probe: Spanned<Box<RawProbe>>,
        tls_cache: &mut HashMap<TlsSettings, TlsClient>,
        errors: &mut Errors<'_>,
    ) -> Option<ProbeSpec> {
        let at = probe.referenced;
        let raw = *probe.value;
        let defaults = self.defaults;
        let label = self.label();
        let before = errors.list.len();

        let server = match &raw.server {
            Some(server_ref) => match self.servers.get(&server_ref.value) {
                Some(server) => Some((server_ref.value.clone(), server)),
                None => {
                    let known: Vec<&str> = self.servers.keys().map(String::as_str).collect();
                    errors.at(server_ref.referenced, format!("{label}.server: unknown server {}; define it under servers (known: {})", shown(&server_ref.value), list_or_none(&known)));
                    return None;
                }
            },
            None => None,
        };
        let target = self.target(at, &raw, server.as_ref().map(|(_, s)| *s), errors)?;

        let schedule = self.schedule(&raw, errors)?;
        let timeout = raw.timeout.as_ref().or(defaults.timeout.as_ref());
        let timeout_value = timeout.map_or(DEFAULT_TIMEOUT, |t| t.value.0);
        if let Some(gap) = schedule.shortest_gap(Utc::now())
            && timeout_value >= gap
        {
            let location = timeout.map_or(at, |t| t.referenced);
            errors.at(location, format!(
                "{label}.timeout: {} must be shorter than the time between two runs ({}); lower the timeout or run less often",
                humantime::format_duration(timeout_value), humantime::format_duration(gap)
            ));
        }

        let server_raw = server.as_ref().map(|(_, s)| *s);
        let headers = self.headers(&raw, server_raw, at, errors);
        let labels = merge_maps(
            &defaults.labels,
            server_raw.map(|s| &s.labels),
            &raw.labels,
            |k| k.0.clone(),
        );
        let tls = self.tls(&raw, server_raw, tls_cache, at, errors)?;
        let proxy = self.proxy(&raw, server_raw, at, errors)?;
        let expect = merge_expect(defaults.expect.as_ref(), raw.expect.as_ref());

        if errors.list.len() > before {
            return None;
        }
        Some(ProbeSpec {
            name: self.name.to_owned(),
            server: server.map(|(name, _)| name),
            target,
            method: raw
                .method
                .or_else(|| defaults.method.clone())
                .map_or(http::Method::GET, |m| m.0),
            headers,
            labels,
            schedule,
            timeout: timeout_value,
            retries: raw.retries.or(defaults.retries).unwrap_or(0),
            retry_delay: raw
                .retry_delay
                .or(defaults.retry_delay)
                .map_or(DEFAULT_RETRY_DELAY, |d| d.0),
            // A list replaces: the probe's, else the server's, else the defaults'.
            retry_on: raw
                .retry_on
                .or_else(|| server_raw.and_then(|s| s.retry_on.clone()))
                .or_else(|| defaults.retry_on.clone())
                .unwrap_or_else(|| DEFAULT_RETRY_ON.to_vec()),
            follow_redirects: raw
                .follow_redirects
                .or(defaults.follow_redirects)
                .unwrap_or(true),
            max_body_bytes: raw
                .max_body_bytes
                .or(defaults.max_body_bytes)
                .map_or(DEFAULT_MAX_BODY_BYTES, |s| s.0),
            tls,
            expect,
            proxy,
        })
    }

    /// The URL: `url`, or the server's base + webhook path + code + params.
    fn target(
        &self,
        at: Location,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        errors: &mut Errors<'_>,
    ) -> Option<Target> {
        let label = self.label();
        let params = merge_maps(
            &self.defaults.params,
            server.map(|s| &s.params),
            &raw.params,
            |k| k.0.clone(),
        );
        match (&raw.url, server) {
            (Some(url), Some(_)) => {
                errors.at(url.referenced, format!("{label}: has both url and server; keep url for a plain URL, or server + code for a Divalto webhook"));
                None
            }
            (None, None) => {
                errors.at(at, format!("{label}: has neither url nor server; set url, or server + code (or code_file)"));
                None
            }
            (Some(url), None) => {
                if let Some(code) = raw
                    .code
                    .as_ref()
                    .map(|c| c.referenced)
                    .or(raw.code_file.as_ref().map(|c| c.referenced))
                {
                    errors.at(code, format!("{label}: code and code_file need a server; with url, put the whole URL in url"));
                    return None;
                }
                let mut parsed = match Url::parse(url.value.0.trim()) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => u,
                    Ok(_) => {
                        errors.at(
                            url.referenced,
                            format!("{label}.url: must be an http:// or https:// URL with a host"),
                        );
                        return None;
                    }
                    Err(e) => {
                        errors.at(url.referenced, format!("{label}.url: invalid URL ({e})"));
                        return None;
                    }
                };
                append_params(&mut parsed, &params);
                let secrets = secrets_in_url(&parsed);
                Some(Target::new(parsed, &secrets))
            }
            (None, Some(server)) => {
                let code = self.code(at, raw, errors)?;
                let mut url = server.base_url.clone();
                {
                    let Ok(mut segments) = url.path_segments_mut() else {
                        errors.at(
                            at,
                            format!("{label}: the server's base_url cannot take a path"),
                        );
                        return None;
                    };
                    segments.pop_if_empty();
                    for part in server.webhook_path.split('/').filter(|p| !p.is_empty()) {
                        segments.push(part);
                    }
                    segments.push(code.expose());
                }
                append_params(&mut url, &params);
                let mut secrets = secrets_in_url(&url);
                secrets.push(code);
                Some(Target::new(url, &secrets))
            }
        }
    }

    fn code(&self, at: Location, raw: &RawProbe, errors: &mut Errors<'_>) -> Option<Secret> {
        let label = self.label();
        match (&raw.code, &raw.code_file) {
            (Some(code), None) => Some(code.value.0.clone()),
            (None, Some(file)) => {
                let path = self.resolve_path(&file.value.0);
                match std::fs::read_to_string(&path) {
                    Ok(content) if !content.trim().is_empty() => Some(Secret::new(content.trim())),
                    Ok(_) => {
                        errors.at(
                            file.referenced,
                            format!(
                                "{label}.code_file: {} is empty; write the webhook code in it",
                                cut(&path.display().to_string(), MAX_DETAIL_CHARS)
                            ),
                        );
                        None
                    }
                    Err(e) => {
                        errors.at(file.referenced, format!("{label}.code_file: cannot read {}: {e}; check the path and its permissions", cut(&path.display().to_string(), MAX_DETAIL_CHARS)));
                        None
                    }
                }
            }
            (Some(code), Some(_)) => {
                errors.at(
                    code.referenced,
                    format!("{label}: has both code and code_file; keep one"),
                );
                None
            }
            (None, None) => {
                errors.at(
                    at,
                    format!("{label}: a server probe needs code or code_file (the webhook code)"),
                );
                None
            }
        }
    }

    fn schedule(&self, raw: &RawProbe, errors: &mut Errors<'_>) -> Option<Schedule> {
        let label = self.label();
        if let (Some(_), Some(cron)) = (&raw.interval, &raw.schedule) {
            errors.at(
                cron.referenced,
                format!("{label}: has both interval and schedule; keep one"),
            );
            return None;
        }
        // A probe's own interval or schedule wins over either one in defaults.
        let (interval, cron) = if raw.interval.is_some() || raw.schedule.is_some() {
            (raw.interval.as_ref(), raw.schedule.as_ref())
        } else {
            (
                self.defaults.interval.as_ref(),
                self.defaults.schedule.as_ref(),
            )
        };
        if let Some(cron) = cron {
            let zone = raw
                .timezone
                .or(self.defaults.timezone)
                .map_or(chrono_tz::UTC, |z| z.0);
            return Some(Schedule::Cron {
                source: cron.value.source.clone(),
                cron: Box::new(cron.value.cron.clone()),
                zone,
            });
        }
        Some(Schedule::Interval(
            interval.map_or(DEFAULT_INTERVAL, |i| i.value.0),
        ))
    }

    fn headers(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        at: Location,
        errors: &mut Errors<'_>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let merged = merge_maps(
            &self.defaults.headers,
            server.map(|s| &s.headers),
            &raw.headers,
            |k| k.0.clone(),
        );
        let mut headers = Vec::with_capacity(merged.len());
        for (name, value) in merged {
            // Names were checked at decode time; values may hold bytes HTTP forbids.
            let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) else {
                errors.at(at, format!("{}.headers.{}: the value holds characters not allowed in an HTTP header (control characters or newlines)", self.label(), cut(&name, MAX_SHOWN_CHARS)));
                continue;
            };
            headers.push((name, value));
        }
        headers
    }

    /// The proxy: each key taken from the probe, else the server, else the defaults.
    fn proxy(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        at: Location,
        errors: &mut Errors<'_>,
    ) -> Option<ProxyConfig> {
        let probe = RawProxy {
            url: raw.proxy_url.clone(),
            no_proxy: raw.no_proxy.clone(),
            from_environment: raw.proxy_from_environment,
        };
        let defaults = RawProxy {
            url: self.defaults.proxy_url.clone(),
            no_proxy: self.defaults.no_proxy.clone(),
            from_environment: self.defaults.proxy_from_environment,
        };
        let empty = RawProxy::default();
        let layers = [&probe, server.map_or(&empty, |s| &s.proxy), &defaults];
        let url = layers.iter().find_map(|l| l.url.as_ref());
        let from_environment = layers
            .iter()
            .find_map(|l| l.from_environment)
            .unwrap_or(false);
        let no_proxy: Vec<String> = layers
            .iter()
            .find_map(|l| l.no_proxy.as_ref())
            .map(|list| list.iter().map(|t| t.0.clone()).collect())
            .unwrap_or_default();
        let label = self.label();
        match (url, from_environment) {
            (Some(url), true) => {
                errors.at(
                    url.referenced,
                    format!(
                        "{label}: proxy_url and proxy_from_environment: true both apply; keep one"
                    ),
                );
                None
            }
            (Some(url), false) => match ProxyEndpoint::parse(url.value.0.trim(), "proxy_url") {
                Ok(endpoint) => Some(ProxyConfig {
                    http: Some(endpoint.clone()),
                    https: Some(endpoint),
                    no_proxy,
                }),
                Err(message) => {
                    errors.at(url.referenced, format!("{label}.{message}"));
                    None
                }
            },
            (None, true) => match ProxyConfig::from_environment() {
                Ok(mut config) => {
                    config.no_proxy.extend(no_proxy);
                    Some(config)
                }
                Err(message) => {
                    errors.at(at, format!("{label}: proxy_from_environment: {message}"));
                    None
                }
            },
            (None, false) => Some(ProxyConfig {
                no_proxy,
                ..ProxyConfig::default()
            }),
        }
    }

    fn tls(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        cache: &mut HashMap<TlsSettings, TlsClient>,
        at: Location,
        errors: &mut Errors<'_>,
    ) -> Option<TlsClient> {
        let empty = RawTls::default();
        let layers = [
            raw.tls.as_ref().unwrap_or(&empty),
            server.map_or(&empty, |s| &s.tls),
            self.defaults.tls.as_ref().unwrap_or(&empty),
        ];
        let pick =
            |get: fn(&RawTls) -> Option<&Spanned<Text>>| layers.iter().find_map(|layer| get(layer));
        let ca = pick(|t| t.ca_file.as_ref());
        let cert = pick(|t| t.cert_file.as_ref());
        let key = pick(|t| t.key_file.as_ref());
        let name = pick(|t| t.server_name.as_ref());
        let server_name = match name {
            None => None,
            Some(name) => match crate::probe::tls::server_name(name.value.0.trim()) {
                Ok(parsed) => Some(parsed),
                Err(message) => {
                    errors.at(
                        name.referenced,
                        format!("{}.tls.server_name: {message}", self.label()),
                    );
                    return None;
                }
            },
        };
        let settings = TlsSettings {
            insecure_skip_verify: layers
                .iter()
                .find_map(|l| l.insecure_skip_verify)
                .unwrap_or(false),
            ca_file: ca.map(|f| self.resolve_path(&f.value.0)),
            cert_file: cert.map(|f| self.resolve_path(&f.value.0)),
            key_file: key.map(|f| self.resolve_path(&f.value.0)),
            server_name: name.map(|n| n.value.0.trim().to_owned()),
        };
        if let Some(client) = cache.get(&settings) {
            return Some(client.clone());
        }
        match crate::probe::tls::client_config(&settings) {
            Ok((config, verifier)) => {
                let client = TlsClient {
                    files_digest: files_digest(&settings),
                    settings: settings.clone(),
                    config,
                    verifier,
                    server_name,
                };
                cache.insert(settings, client.clone());
                Some(client)
            }
            Err(failure) => {
                use crate::probe::tls::TlsField;
                let location = match failure.field {
                    TlsField::CaFile => ca.map(|f| f.referenced),
                    TlsField::CertFile => cert.map(|f| f.referenced),
                    TlsField::KeyFile => key.map(|f| f.referenced),
                    TlsField::Tls => None,
                }
                .unwrap_or(at);
                errors.at(
                    location,
                    format!(
                        "{}.tls.{}: {}",
                        self.label(),
                        failure.field.key(),
                        cut(&failure.message, 2 * MAX_DETAIL_CHARS)
                    ),
                );
                None
            }
        }
    }
}

/// A digest of the TLS files' contents (unreadable files were already reported).
fn files_digest(settings: &TlsSettings) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in [&settings.ca_file, &settings.cert_file, &settings.key_file]
        .into_iter()
        .flatten()
    {
        std::fs::read(path).unwrap_or_default().hash(&mut hasher);
    }
    hasher.finish()
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        cut(&items.join(", "), MAX_DETAIL_CHARS).into_owned()
    }
}

/// Merges a map key the contract's way: defaults, then the server, then the probe.
fn merge_maps<K>(
    defaults: &Option<BTreeMap<K, Text>>,
    server: Option<&BTreeMap<String, String>>,
    probe: &Option<BTreeMap<K, Text>>,
    key: impl Fn(&K) -> String,
) -> BTreeMap<String, String> {
    let mut merged = BTreeMap::new();
    for (k, v) in defaults.iter().flatten() {
        merged.insert(key(k), v.0.clone());
    }
    for (k, v) in server.into_iter().flatten() {
        merged.insert(k.clone(), v.clone());
    }
    for (k, v) in probe.iter().flatten() {
        merged.insert(key(k), v.0.clone());
    }
    merged
}

fn merge_expect(defaults: Option<&RawExpect>, probe: Option<&RawExpect>) -> Expect {
    let empty = RawExpect::default();
    let (d, p) = (defaults.unwrap_or(&empty), probe.unwrap_or(&empty));
    Expect {
        status: p
            .status
            .clone()
            .or_else(|| d.status.clone())
            .unwrap_or_else(|| vec![StatusMatcher::Code(200)]),
        divalto: p.divalto.or(d.divalto).unwrap_or(DivaltoMode::Auto),
        success_codes: p
            .success_codes
            .as_ref()
            .or(d.success_codes.as_ref())
            .map_or_else(
                || vec!["0".to_owned(), "200".to_owned()],
                |codes| codes.iter().map(|c| c.0.trim().to_owned()).collect(),
            ),
        body_matches: p
            .body_matches
            .as_ref()
            .or(d.body_matches.as_ref())
            .map(|r| r.0.clone()),
        body_not_matches: p
            .body_not_matches
            .as_ref()
            .or(d.body_not_matches.as_ref())
            .map(|r| r.0.clone()),
    }
}

fn append_params(url: &mut Url, params: &BTreeMap<String, String>) {
    if params.is_empty() {
        return;
    }
    let mut pairs = url.query_pairs_mut();
    for (key, value) in params {
        pairs.append_pair(key, value);
    }
}

/// Secrets a plain URL may carry: a password, and a Divalto webhook code written by hand
/// (the path segment after `.../WebHook/`).
pub(super) fn secrets_in_url(url: &Url) -> Vec<Secret> {
    let mut secrets = Vec::new();
    if let Some(password) = url.password() {
        secrets.push(Secret::new(password));
    }
    if let Some(segments) = url.path_segments() {
        let segments: Vec<&str> = segments.collect();
        for pair in segments.windows(2) {
            if pair[0].eq_ignore_ascii_case("webhook") && !pair[1].is_empty() {
                let decoded = super::secret::percent_decoded(pair[1]);
                secrets.push(Secret::new(decoded));
            }
        }
    }
    secrets
}
