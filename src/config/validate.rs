//! Raw file -> [`Config`]: the checks that need more than one value at a time, each error
//! naming the file, the position and the fix. Layering is in [`super::merge`], URLs and
//! secrets in [`super::target`].

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_saphyr::{Location, Spanned};

use super::files::FileVersion;
use super::merge::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_RETRY_DELAY, DEFAULT_RETRY_ON, DEFAULT_TIMEOUT, ResolvedServer,
    TlsFiles, merge_expect, merge_maintenance, merge_maps, resolve_server,
};
use super::raw::{RawConfig, RawInclude, RawProbe, RawServer};
use super::scalars::Text;
use super::scalars::{MAX_DETAIL_CHARS, MAX_SHOWN_CHARS, cut, shown};
use super::{
    ConfigError, ConfigErrors, DEFAULT_HISTORY_SIZE, DEFAULT_MAX_CONCURRENT_PROBES, Expect,
    MAX_HISTORY_SIZE, MAX_PROBES, Origin, ProbeSpec, ProxyConfig, Server, TlsSettings,
};
use crate::schedule::Schedule;

/// Interval of a probe that sets neither an interval nor a schedule.
pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Buckets suited to webhook latencies: an ERP answers in tens of ms to a few seconds.
pub const DEFAULT_DURATION_BUCKETS: &[f64] =
    &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Collects errors with their positions while validation goes on, so one run of
/// `check-config` reports every problem, not just the first.
pub(super) struct Errors<'a> {
    pub(super) file: &'a Path,
    pub(super) list: Vec<ConfigError>,
}

/// Longest message kept: a net under [`shown`] for anything quoted by other means.
pub(super) const MAX_MESSAGE_CHARS: usize = 1_000;

impl Errors<'_> {
    pub(super) fn at(&mut self, location: Location, message: impl Into<String>) {
        let message = message.into();
        self.list.push(ConfigError {
            file: self.file.to_owned(),
            location: super::Location::of(location),
            message: cut(&message, MAX_MESSAGE_CHARS).into_owned(),
        });
    }

    /// Like [`Errors::at`], but a problem already reported at this place with this message
    /// is not reported again: a defaults or server layer is shared by many probes, and its
    /// problem is said once, not once per probe.
    pub(super) fn at_once(&mut self, location: Location, message: impl Into<String>) {
        let message = message.into();
        let shown = cut(&message, MAX_MESSAGE_CHARS);
        let place = super::Location::of(location);
        if !self
            .list
            .iter()
            .any(|e| e.location == place && e.message == shown)
        {
            self.at(location, message);
        }
    }
}

/// YAML nodes (mappings, sequences, scalars) one probe may take on average within the
/// budget: a Divalto probe with params, labels, headers and expectations takes 20 to 30.
pub(super) const NODES_PER_PROBE: usize = 40;

/// What serde-saphyr may spend on one file: enough for [`MAX_PROBES`] probes (its default of
/// 250,000 nodes stops near 50,000), still a bound against a file built to exhaust memory.
pub(super) fn yaml_options() -> serde_saphyr::Options {
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

/// Parses `text` (the content of the main file `path`) and validates it on its own; the
/// included files are read by [`super::files`].
pub(super) fn parse_main(path: &Path, text: &str) -> Result<MainFile, ConfigErrors> {
    let raw: RawConfig = from_yaml(path, text)?;
    let mut errors = Errors {
        file: path,
        list: Vec::new(),
    };
    let main = build_main(path, raw, &mut errors);
    if errors.list.is_empty() {
        Ok(main)
    } else {
        Err(ConfigErrors(errors.list))
    }
}

/// Parses `text` (the content of the included file `path`) and validates it against the
/// main file (its defaults and servers).
pub(super) fn parse_included(
    path: &Path,
    text: &str,
    main: &MainFile,
) -> Result<FileVersion, Vec<ConfigError>> {
    let raw: RawInclude = from_yaml(path, text).map_err(|e| e.0)?;
    let mut errors = Errors {
        file: path,
        list: Vec::new(),
    };
    for (key, location) in raw.main_file_keys() {
        errors.at(
            location,
            format!(
                "{key}: belongs in the main file; an included file holds only servers: and probes:"
            ),
        );
    }
    let (servers, locations) = resolve_servers(raw.servers, &mut errors);
    let visible = Visible {
        main: &main.servers,
        main_file: &main.version.file,
        own: Some(&servers),
    };
    let probes = build_probes(
        path,
        &main.base_dir,
        raw.probes,
        &main.defaults,
        &visible,
        &mut errors,
    );
    if errors.list.is_empty() {
        Ok(FileVersion {
            file: path.to_owned(),
            servers: server_list(servers, locations),
            probes,
        })
    } else {
        Err(errors.list)
    }
}

/// A YAML document read into `T`, the parser's error placed in `path`.
fn from_yaml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigErrors> {
    serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            location: e.location().and_then(super::Location::of),
            message: yaml_message(&e),
        }])
    })
}

/// The message of a YAML error without its position (we print that ourselves) and with a
/// hint where serde's wording is not obvious to an operator.
pub(super) fn yaml_message(error: &serde_saphyr::Error) -> String {
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
    } else if message.contains("missing field") {
        format!("{message}; add it (see the configuration reference in the README)")
    } else if message.contains("duplicate") {
        format!("{message}; each key may appear once")
    } else {
        message.into_owned()
    }
}

/// `message` with each span between backticks or double quotes (the library quoting a key
/// or a value) cut to [`MAX_SHOWN_CHARS`].
pub(super) fn cut_quoted(message: &str) -> String {
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
pub(super) fn strip_position_suffix(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(pos) if message[pos..].contains("column") => &message[..pos],
        _ => message,
    }
}

/// The main file, validated on its own: its settings, its servers and probes, and what the
/// included files build on (the defaults, the servers, the folder paths are relative to).
pub(super) struct MainFile {
    pub(super) settings: Settings,
    pub(super) base_dir: PathBuf,
    pub(super) defaults: RawProbe,
    pub(super) servers: BTreeMap<String, ResolvedServer>,
    pub(super) version: FileVersion,
    pub(super) include: Vec<Spanned<Text>>,
}

/// The settings only the main file sets.
pub(super) struct Settings {
    pub(super) max_concurrent_probes: usize,
    pub(super) history_size: usize,
    pub(super) run_now_min_gap: Duration,
    pub(super) duration_buckets: Vec<f64>,
}

pub(super) fn build_main(path: &Path, raw: RawConfig, errors: &mut Errors<'_>) -> MainFile {
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

    let (servers, locations) = resolve_servers(raw.servers, errors);
    let probes = {
        let visible = Visible {
            main: &servers,
            main_file: path,
            own: None,
        };
        check_shared_layers(path, &base_dir, &defaults, &visible, &locations, errors);
        build_probes(path, &base_dir, raw.probes, &defaults, &visible, errors)
    };
    let version = FileVersion {
        file: path.to_owned(),
        servers: server_list_ref(&servers, &locations),
        probes,
    };
    MainFile {
        settings: Settings {
            max_concurrent_probes,
            history_size,
            run_now_min_gap,
            duration_buckets,
        },
        base_dir,
        defaults,
        servers,
        version,
        include: raw.include.unwrap_or_default(),
    }
}

/// Checks the body and credentials of the defaults and of each server of the main file on
/// their own, so their problems are the main file's even when only included files' probes
/// use them (a tenant's file is never refused for the main file's mistake). Said once each:
/// the probes using them later find the same message at the same place.
fn check_shared_layers(
    path: &Path,
    base_dir: &Path,
    defaults: &RawProbe,
    servers: &Visible<'_>,
    locations: &BTreeMap<String, Location>,
    errors: &mut Errors<'_>,
) {
    let context = ProbeContext {
        index: 0,
        name: "",
        file: path,
        base_dir,
        defaults,
        servers,
    };
    let nowhere = Location::UNKNOWN;
    let _ = context.body(&RawProbe::default(), None, errors);
    let _ = context.credentials(&RawProbe::default(), None, &[], nowhere, errors);
    for (name, server) in servers.main {
        let at = locations.get(name).copied().unwrap_or(nowhere);
        let raw = RawProbe {
            server: Some(Spanned::new(name.clone(), at, at)),
            ..RawProbe::default()
        };
        let _ = context.body(&raw, Some(server), errors);
        let _ = context.credentials(&raw, Some(server), &[], at, errors);
    }
}

/// The servers of one file, checked, with where each is written.
fn resolve_servers(
    raw: BTreeMap<String, Spanned<RawServer>>,
    errors: &mut Errors<'_>,
) -> (BTreeMap<String, ResolvedServer>, BTreeMap<String, Location>) {
    let mut locations = BTreeMap::new();
    let servers = raw
        .into_iter()
        .filter_map(|(name, server)| {
            locations.insert(name.clone(), server.referenced);
            let resolved = resolve_server(&name, server, errors)?;
            Some((name, resolved))
        })
        .collect();
    (servers, locations)
}

/// The servers as the scheduler sees them, with their positions.
fn server_list_ref(
    servers: &BTreeMap<String, ResolvedServer>,
    locations: &BTreeMap<String, Location>,
) -> Vec<(Server, Option<super::Location>)> {
    servers
        .iter()
        .map(|(name, s)| {
            (
                Server {
                    name: name.clone(),
                    max_concurrent: s.max_concurrent,
                },
                locations.get(name).copied().and_then(super::Location::of),
            )
        })
        .collect()
}

fn server_list(
    servers: BTreeMap<String, ResolvedServer>,
    locations: BTreeMap<String, Location>,
) -> Vec<(Server, Option<super::Location>)> {
    server_list_ref(&servers, &locations)
}

/// The probes of one file, each built on the main file's defaults and the servers it sees.
fn build_probes(
    path: &Path,
    base_dir: &Path,
    raw: Vec<Spanned<Box<RawProbe>>>,
    defaults: &RawProbe,
    servers: &Visible<'_>,
    errors: &mut Errors<'_>,
) -> Vec<Arc<ProbeSpec>> {
    let mut tls_files = TlsFiles::default();
    let mut shared = SharedSettings::default();
    let mut seen = HashSet::new();
    let mut probes = Vec::new();
    for (index, probe) in raw.into_iter().enumerate() {
        let Some(name) = probe_name(index, &probe, &mut seen, errors) else {
            continue;
        };
        let context = ProbeContext {
            index,
            name: &name,
            file: path,
            base_dir,
            defaults,
            servers,
        };
        if let Some(spec) = context.build(probe, &mut tls_files, &mut shared, errors) {
            probes.push(Arc::new(spec));
        }
    }
    probes
}

/// A duration where zero (`0s`, `0ms`, ...) is allowed: it turns a limit off.
pub(super) fn gap_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit = text.trim_start_matches('0');
    if unit.len() < text.len() && matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w") {
        return Ok(Duration::ZERO);
    }
    super::scalars::parse_duration(text)
}

pub(super) fn positive(
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
pub(super) fn probe_only_keys(raw: &RawProbe) -> Vec<(&'static str, Location)> {
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

/// Names are label values and URL path parts of the API: keep them to a safe alphabet.
pub(super) fn valid_probe_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

pub(super) fn probe_name(
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

/// The blocks of settings probes mostly inherit whole from the defaults or their server,
/// each kept once for the probes that have the same: about 550 bytes a probe otherwise
/// (5 MB at 10,000 probes).
#[derive(Default)]
pub(super) struct SharedSettings {
    tls: Recent<TlsSettings>,
    proxy: Recent<ProxyConfig>,
    expect: Recent<Expect>,
}

/// The last few distinct values built, to hand out again to a probe with an equal one.
/// A few, not all: probes of one server are usually written together, and a full search
/// would be quadratic in a file where every probe has its own.
struct Recent<T>(Vec<Arc<T>>);

impl<T> Default for Recent<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

/// Distinct values [`Recent`] remembers.
const RECENT: usize = 8;

impl<T: PartialEq> Recent<T> {
    /// `value`, shared with an equal one built before when there is one.
    fn get(&mut self, value: T) -> Arc<T> {
        if let Some(at) = self.0.iter().position(|known| **known == value) {
            let known = self.0.remove(at);
            self.0.push(known.clone());
            return known;
        }
        if self.0.len() == RECENT {
            self.0.remove(0);
        }
        let value = Arc::new(value);
        self.0.push(value.clone());
        value
    }
}

/// What building one probe needs to know about the rest of the file.
pub(super) struct ProbeContext<'a> {
    pub(super) index: usize,
    pub(super) name: &'a str,
    /// The file the probe is written in.
    pub(super) file: &'a Path,
    pub(super) base_dir: &'a Path,
    pub(super) defaults: &'a RawProbe,
    pub(super) servers: &'a Visible<'a>,
}

/// The servers a probe may use: those of the main file and of its own file. A server of
/// another included file is not visible, so a tenant's typo never refuses another tenant.
pub(super) struct Visible<'a> {
    pub(super) main: &'a BTreeMap<String, ResolvedServer>,
    pub(super) main_file: &'a Path,
    pub(super) own: Option<&'a BTreeMap<String, ResolvedServer>>,
}

impl Visible<'_> {
    fn get(&self, name: &str) -> Option<&ResolvedServer> {
        self.own
            .and_then(|own| own.get(name))
            .or_else(|| self.main.get(name))
    }

    fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .main
            .keys()
            .chain(self.own.into_iter().flat_map(BTreeMap::keys))
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }
}

impl ProbeContext<'_> {
    /// `probes[2] "refresh-customer"`: how messages name the probe.
    pub(super) fn label(&self) -> String {
        format!("probes[{}] {}", self.index, shown(self.name))
    }

    /// `file` relative to the config file's directory (`Path::join` keeps an absolute
    /// path as it is).
    pub(super) fn resolve_path(&self, file: &str) -> PathBuf {
        self.base_dir.join(file)
    }

    pub(super) fn build(
        &self,
        probe: Spanned<Box<RawProbe>>,
        tls_files: &mut TlsFiles,
        shared: &mut SharedSettings,
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
                    let known = self.servers.names();
                    let main = self.servers.main_file.display();
                    let where_ = if self.servers.own.is_some() {
                        format!("under servers in this file or in {main}")
                    } else {
                        "under servers".to_owned()
                    };
                    errors.at(
                        server_ref.referenced,
                        format!(
                            "{label}.server: unknown server {}; define it {where_} (known: {})",
                            shown(&server_ref.value),
                            list_or_none(&known)
                        ),
                    );
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
        let (tls, tls_origin) = self.tls(&raw, server_raw, tls_files, at, errors)?;
        let proxy = self.proxy(&raw, server_raw, at, errors)?;
        let expect = merge_expect(defaults.expect.as_ref(), raw.expect.as_ref());
        let maintenance = merge_maintenance(defaults, server_raw, &raw);
        let body = self.body(&raw, server_raw, errors).ok()?;
        let credentials = self
            .credentials(&raw, server_raw, &headers, at, errors)
            .ok()?;
        if target.basic_auth.is_some()
            && let Some(url) = &raw.url
        {
            let key = match (&raw.basic_auth, &raw.authorization) {
                (Some(_), _) => Some("basic_auth"),
                (None, Some(_)) => Some("authorization"),
                (None, None) => None,
            };
            if let Some(key) = key {
                errors.at(
                    url.referenced,
                    format!("{label}: the url holds user:password@ and {key} is set too; keep one"),
                );
            }
        }

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
            tls: shared.tls.get(tls),
            expect: shared.expect.get(expect),
            proxy: shared.proxy.get(proxy),
            origin: Origin {
                file: self.file.to_owned(),
                label,
                probe: tls_origin.probe,
                ca_file: tls_origin.ca_file,
                cert_file: tls_origin.cert_file,
                key_file: tls_origin.key_file,
            },
            body,
            credentials,
            maintenance,
            // A scalar: the probe's, else the server's, else the defaults'.
            objective: raw
                .objective
                .map(|o| o.0)
                .or_else(|| server_raw.and_then(|s| s.objective))
                .or(defaults.objective.map(|o| o.0)),
        })
    }

    pub(super) fn schedule(&self, raw: &RawProbe, errors: &mut Errors<'_>) -> Option<Schedule> {
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
}

pub(super) fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        cut(&items.join(", "), MAX_DETAIL_CHARS).into_owned()
    }
}
