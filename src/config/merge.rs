//! Defaults -> server -> probe layering, one rule per key kind: a scalar or a list is taken
//! from the most specific layer that sets it, a map (headers, params, labels) is merged key by
//! key, a block (tls, proxy) is layered key by key.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use serde_saphyr::{Location, Spanned};
use url::Url;

use super::raw::{
    RawAuthorization, RawBasicAuth, RawExpect, RawMaintenance, RawProbe, RawServer, RawTls,
};
use super::scalars::{
    DivaltoMode, FailureReason, MAX_DETAIL_CHARS, MAX_SHOWN_CHARS, StatusMatcher, Text, cut, shown,
    shown_path,
};
use super::validate::{Errors, ProbeContext};
use super::{Expect, ProxyConfig, ProxyEndpoint, RequestBody, TlsFile, TlsServerName, TlsSettings};

/// Budget of a run when no timeout is set.
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts when none is set.
pub(super) const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Reasons retried when `retry_on` is not set: failures before the request reached the
/// server, so a retry never repeats an ERP action.
pub(super) const DEFAULT_RETRY_ON: [FailureReason; 3] = [
    FailureReason::Dns,
    FailureReason::Connect,
    FailureReason::Tls,
];
/// Body cap when none is set.
pub(super) const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Path between a server's base URL and the webhook code.
pub(super) const DEFAULT_WEBHOOK_PATH: &str = "/api/v1/WebHook";

/// A server with its URL parts checked.
pub(super) struct ResolvedServer {
    pub(super) base_url: Url,
    pub(super) webhook_path: String,
    pub(super) max_concurrent: Option<usize>,
    pub(super) headers: BTreeMap<String, String>,
    pub(super) params: BTreeMap<String, String>,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) tls: RawTls,
    pub(super) proxy: RawProxy,
    pub(super) retry_on: Option<Vec<FailureReason>>,
    pub(super) body: RawBody,
    pub(super) basic_auth: Option<Spanned<RawBasicAuth>>,
    pub(super) authorization: Option<Spanned<RawAuthorization>>,
    pub(super) maintenance: Option<Vec<RawMaintenance>>,
    pub(super) objective: Option<f64>,
}

/// The proxy keys of one layer (defaults, server or probe).
#[derive(Default)]
pub(super) struct RawProxy {
    pub(super) url: Option<Spanned<Text>>,
    pub(super) no_proxy: Option<Vec<Text>>,
    pub(super) from_environment: Option<bool>,
}

pub(super) fn resolve_server(
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
        body: RawBody {
            body: raw.body,
            body_file: raw.body_file,
            json: raw.json,
        },
        basic_auth: raw.basic_auth,
        authorization: raw.authorization,
        maintenance: raw.maintenance,
        objective: raw.objective.map(|o| o.0),
    })
}

/// The maintenance windows: the list of the most specific layer that sets one, whole (an
/// empty list on a probe clears those of its server or the defaults).
pub(super) fn merge_maintenance(
    defaults: &RawProbe,
    server: Option<&ResolvedServer>,
    probe: &RawProbe,
) -> Vec<crate::schedule::MaintenanceWindow> {
    let list = probe
        .maintenance
        .as_ref()
        .or_else(|| server.and_then(|s| s.maintenance.as_ref()))
        .or(defaults.maintenance.as_ref());
    list.into_iter()
        .flatten()
        .map(|w| crate::schedule::MaintenanceWindow {
            source: w.schedule.source.clone(),
            cron: Box::new(w.schedule.cron.clone()),
            zone: w.timezone.map_or(chrono_tz::UTC, |z| z.0),
            duration: w.duration.0,
            mode: w.mode.map(|m| m.0).unwrap_or_default(),
        })
        .collect()
}

pub(super) fn text_map<K>(
    map: Option<BTreeMap<K, Text>>,
    key: impl Fn(K) -> String,
) -> BTreeMap<String, String> {
    map.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (key(k), v.0))
        .collect()
}

impl ProbeContext<'_> {
    pub(super) fn headers(
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
    pub(super) fn proxy(
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

    /// The TLS settings, each key from the most specific layer, with the files read (once
    /// per path and load, through `files`), and where the file keys are written.
    pub(super) fn tls(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        files: &mut TlsFiles,
        at: Location,
        errors: &mut Errors<'_>,
    ) -> Option<(TlsSettings, TlsOrigin)> {
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
        let label = self.label();
        let server_name = match name {
            None => None,
            Some(name) => match TlsServerName::parse(name.value.0.trim()) {
                Ok(parsed) => Some(parsed),
                Err(message) => {
                    errors.at(
                        name.referenced,
                        format!("{label}.tls.server_name: {message}"),
                    );
                    return None;
                }
            },
        };
        let before = errors.list.len();
        let mut read = |file: Option<&Spanned<Text>>, key: &str| {
            let file = file?;
            let path = self.resolve_path(&file.value.0);
            match files.read(&path, key == "key_file") {
                Ok(file) => Some(file),
                Err(message) => {
                    errors.at(
                        file.referenced,
                        format!("{label}.tls.{key}: {}", cut(&message, 2 * MAX_DETAIL_CHARS)),
                    );
                    None
                }
            }
        };
        let settings = TlsSettings {
            insecure_skip_verify: layers
                .iter()
                .find_map(|l| l.insecure_skip_verify)
                .unwrap_or(false),
            ca_file: read(ca, "ca_file"),
            cert_file: read(cert, "cert_file"),
            key_file: read(key, "key_file"),
            server_name,
        };
        if errors.list.len() > before {
            return None;
        }
        let origin = TlsOrigin {
            probe: super::Location::of(at),
            ca_file: ca.and_then(|f| super::Location::of(f.referenced)),
            cert_file: cert.and_then(|f| super::Location::of(f.referenced)),
            key_file: key.and_then(|f| super::Location::of(f.referenced)),
        };
        Some((settings, origin))
    }
}

/// Where a probe's TLS keys are written (see [`super::Origin`]).
pub(super) struct TlsOrigin {
    pub(super) probe: Option<super::Location>,
    pub(super) ca_file: Option<super::Location>,
    pub(super) cert_file: Option<super::Location>,
    pub(super) key_file: Option<super::Location>,
}

/// The TLS files of one load, each read once however many probes name it.
#[derive(Default)]
pub(super) struct TlsFiles(HashMap<PathBuf, Result<TlsFile, String>>);

impl TlsFiles {
    /// The file at `path` as read, or why it cannot be (worded as for a PEM `key` or not).
    fn read(&mut self, path: &Path, key: bool) -> Result<TlsFile, String> {
        self.0
            .entry(path.to_owned())
            .or_insert_with(|| match std::fs::read(path) {
                Ok(contents) => Ok(TlsFile::new(path.to_owned(), contents)),
                Err(e) if key => Err(format!(
                    "cannot read a PEM private key from {}: I/O error: {e}",
                    shown_path(path)
                )),
                Err(e) => Err(format!(
                    "cannot read {}: I/O error: {e}; check the path",
                    shown_path(path)
                )),
            })
            .clone()
    }
}

/// Merges a map key the contract's way: defaults, then the server, then the probe.
pub(super) fn merge_maps<K>(
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

pub(super) fn merge_expect(defaults: Option<&RawExpect>, probe: Option<&RawExpect>) -> Expect {
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
        body_matches: p.body_matches.as_ref().or(d.body_matches.as_ref()).cloned(),
        body_not_matches: p
            .body_not_matches
            .as_ref()
            .or(d.body_not_matches.as_ref())
            .cloned(),
    }
}

/// The body keys of one layer (defaults, server or probe): a layer setting any of them
/// replaces the whole body of the layers below.
#[derive(Default, Clone)]
pub(super) struct RawBody {
    pub(super) body: Option<Spanned<Text>>,
    pub(super) body_file: Option<Spanned<Text>>,
    pub(super) json: Option<Spanned<serde_json::Value>>,
}

impl RawBody {
    /// The keys set, with their positions, in the order they are named in messages.
    fn keys(&self) -> Vec<(&'static str, Location)> {
        let mut keys = Vec::new();
        if let Some(v) = &self.body {
            keys.push(("body", v.referenced));
        }
        if let Some(v) = &self.body_file {
            keys.push(("body_file", v.referenced));
        }
        if let Some(v) = &self.json {
            keys.push(("json", v.referenced));
        }
        keys
    }
}

impl ProbeContext<'_> {
    /// Who a problem of layer `index` (0: the probe, 1: its server, 2: the defaults) belongs
    /// to: a server's or the defaults' problem names that block, so it reads (and is
    /// reported, see [`Errors::at_once`]) once for all the probes sharing it.
    fn layer_label(&self, index: usize, raw: &RawProbe) -> String {
        match (index, &raw.server) {
            (0, _) => self.label(),
            (1, Some(server)) => format!("servers.{}", shown(&server.value)),
            _ => "defaults".to_owned(),
        }
    }

    /// The request body: the most specific layer setting one of `body`, `body_file`, `json`
    /// gives it whole; two of them in that layer is an error at the second. `Err` after an
    /// error was recorded.
    pub(super) fn body(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        errors: &mut Errors<'_>,
    ) -> Result<Option<RequestBody>, ()> {
        let probe = RawBody {
            body: raw.body.clone(),
            body_file: raw.body_file.clone(),
            json: raw.json.clone(),
        };
        let defaults = RawBody {
            body: self.defaults.body.clone(),
            body_file: self.defaults.body_file.clone(),
            json: self.defaults.json.clone(),
        };
        let empty = RawBody::default();
        let layers = [&probe, server.map_or(&empty, |s| &s.body), &defaults];
        let Some(index) = layers.iter().position(|l| !l.keys().is_empty()) else {
            return Ok(None);
        };
        let layer = layers[index];
        let label = self.layer_label(index, raw);
        let keys = layer.keys();
        if let [(first, _), (second, at), ..] = keys[..] {
            let message = format!("{label}: has both {first} and {second}; keep one");
            errors.at_once(at, message);
            return Err(());
        }
        if let Some(text) = &layer.body {
            return Ok(Some(RequestBody::new(
                text.value.0.clone().into_bytes(),
                false,
            )));
        }
        if let Some(json) = &layer.json {
            let expanded = expand_json_strings(&json.value, "").map_err(|e| {
                errors.at(json.referenced, format!("{label}.json: {e}"));
            })?;
            let bytes = serde_json::to_vec(&expanded).map_err(|e| {
                errors.at(
                    json.referenced,
                    format!("{label}.json: cannot be written as JSON ({e})"),
                );
            })?;
            return Ok(Some(RequestBody::new(bytes, true)));
        }
        let Some(file) = &layer.body_file else {
            return Ok(None);
        };
        let path = self.resolve_path(&file.value.0);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(RequestBody::new(bytes, false))),
            Err(e) => {
                errors.at(
                    file.referenced,
                    format!(
                        "{label}.body_file: cannot read {}: {e}; check the path and its permissions",
                        shown_path(&path)
                    ),
                );
                Err(())
            }
        }
    }
}

impl ProbeContext<'_> {
    /// The `Authorization` value from `basic_auth` or `authorization`: the most specific
    /// layer setting either gives it; both in one layer, both or neither source of a secret,
    /// or a configured `Authorization` header as well is an error. Marked sensitive.
    pub(super) fn credentials(
        &self,
        raw: &RawProbe,
        server: Option<&ResolvedServer>,
        headers: &[(HeaderName, HeaderValue)],
        at: Location,
        errors: &mut Errors<'_>,
    ) -> Result<Option<HeaderValue>, ()> {
        use base64::Engine;
        let layers = [
            (raw.basic_auth.as_ref(), raw.authorization.as_ref()),
            server.map_or((None, None), |s| {
                (s.basic_auth.as_ref(), s.authorization.as_ref())
            }),
            (
                self.defaults.basic_auth.as_ref(),
                self.defaults.authorization.as_ref(),
            ),
        ];
        let Some(index) = layers.iter().position(|(b, a)| b.is_some() || a.is_some()) else {
            return Ok(None);
        };
        let (basic, bearer) = layers[index];
        let label = self.layer_label(index, raw);
        let mut fail = |at: Location, message: String| {
            errors.at_once(at, message);
            Err(())
        };
        let key = if basic.is_some() {
            "basic_auth"
        } else {
            "authorization"
        };
        if let (Some(_), Some(a)) = (basic, bearer) {
            return fail(
                a.referenced,
                format!("{label}: has both basic_auth and authorization; keep one"),
            );
        }
        if headers
            .iter()
            .any(|(name, _)| name == http::header::AUTHORIZATION)
        {
            return fail(
                at,
                format!("{label}: has both headers.Authorization and {key}; keep one"),
            );
        }
        let secret = |inline: &Option<Text>,
                      file: &Option<Text>,
                      names: [&str; 2]|
         -> Result<String, String> {
            match (inline, file) {
                (Some(value), None) => Ok(value.0.clone()),
                (None, Some(file)) => {
                    let path = self.resolve_path(&file.0);
                    std::fs::read_to_string(&path)
                        .map(|text| text.trim().to_owned())
                        .map_err(|e| format!("{label}.{key}.{}: cannot read {}: {e}; check the path and its permissions", names[1], shown_path(&path)))
                }
                (Some(_), Some(_)) => Err(format!(
                    "{label}.{key}: has both {} and {}; keep one",
                    names[0], names[1]
                )),
                (None, None) => Err(format!("{label}.{key}: needs {} or {}", names[0], names[1])),
            }
        };
        let (text, position) = if let Some(basic) = basic {
            let b = &basic.value;
            let password =
                match secret(&b.password, &b.password_file, ["password", "password_file"]) {
                    Ok(p) => p,
                    Err(message) => return fail(basic.referenced, message),
                };
            let encoded = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{password}", b.username.0));
            (format!("Basic {encoded}"), basic.referenced)
        } else if let Some(auth) = bearer {
            let a = &auth.value;
            let credentials = match secret(
                &a.credentials,
                &a.credentials_file,
                ["credentials", "credentials_file"],
            ) {
                Ok(c) => c,
                Err(message) => return fail(auth.referenced, message),
            };
            let kind = a.kind.as_ref().map_or("Bearer", |k| k.0.trim());
            (format!("{kind} {credentials}"), auth.referenced)
        } else {
            return Ok(None);
        };
        match HeaderValue::from_str(&text) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Ok(Some(value))
            }
            Err(_) => fail(
                position,
                format!(
                    "{label}.{key}: holds characters not allowed in an HTTP header (control characters or newlines)"
                ),
            ),
        }
    }
}

/// `value` with `${VAR}` expanded in every string value (keys stay as written), as in any
/// other string of the config; `at` is the path of `value` inside the `json:` block, for
/// the message of an unset variable.
fn expand_json_strings(value: &serde_json::Value, at: &str) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    let inside = |key: &str| {
        if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        }
    };
    Ok(match value {
        Value::String(text) => Value::String(super::scalars::expand_env(text).map_err(|e| {
            if at.is_empty() {
                e
            } else {
                format!("{at}: {e}")
            }
        })?),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| expand_json_strings(item, &format!("{at}[{i}]")))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, item)| Ok((key.clone(), expand_json_strings(item, &inside(key))?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}
