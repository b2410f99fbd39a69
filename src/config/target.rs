//! The URL of a probe: built from `url`, or from a server's base URL, webhook path, code
//! and params; and every redacted spelling of the secrets it holds.

use std::collections::BTreeMap;
use std::fmt;

use http::HeaderValue;
use serde_saphyr::Location;
use url::Url;

use super::merge::{ResolvedServer, merge_maps};
use super::raw::RawProbe;
use super::scalars::shown_path;
use super::secret::{self, Secret};
use super::validate::{Errors, ProbeContext};

/// The URL of a probe and the secrets inside it.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// The full URL, secret included: only the request builder reads it. It never holds a
    /// `user:password@` (that became [`Target::basic_auth`]).
    pub url: Url,
    /// `Authorization: Basic` from a `user:password@` written in the URL (marked sensitive),
    /// sent to the probe's own origin only.
    pub basic_auth: Option<HeaderValue>,
    /// Each way a secret may be spelled in text (raw, percent-encoded), with its redacted form.
    redactions: Vec<(String, String)>,
}

impl Target {
    /// A target whose URL holds `secrets` (the webhook code, a URL password). A
    /// `user:password@` leaves the URL and becomes [`Target::basic_auth`], so it is never
    /// written into a request line (to a proxy or anywhere else) nor shown.
    pub fn new(mut url: Url, secrets: &[Secret]) -> Self {
        let basic_auth = take_basic_auth(&mut url);
        let mut redactions = Vec::new();
        for secret in secrets.iter().filter(|s| !s.expose().is_empty()) {
            let raw = secret.expose();
            let form_encoded: String =
                url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
            for form in [raw.to_owned(), form_encoded, path_encoded(raw)] {
                if !redactions.iter().any(|(known, _)| *known == form) {
                    redactions.push((form, secret.redacted()));
                }
            }
        }
        // Longest first, so an encoded form is replaced before a raw substring of it.
        redactions.sort_by_key(|(form, _)| std::cmp::Reverse(form.len()));
        Self {
            url,
            basic_auth,
            redactions,
        }
    }

    /// The URL as shown to people: `https://host/api/v1/WebHook/MONW…3F53?dos=998`.
    pub fn redacted(&self) -> String {
        self.redact(self.url.as_str())
    }

    /// The URL with every secret replaced by one fixed mark, whatever its value: what
    /// tells two targets apart except their secrets (the store's settings digest).
    pub fn masked(&self) -> String {
        let mut out = self.url.as_str().to_owned();
        for (form, _) in &self.redactions {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), "<secret>");
            }
        }
        out
    }

    /// `text` with each secret, in any of its spellings, replaced by its redacted form.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (form, replacement) in &self.redactions {
            if out.contains(form.as_str()) {
                out = out.replace(form.as_str(), replacement);
            }
        }
        out
    }
}

/// Removes the `user:password@` of `url` and returns it as an `Authorization: Basic` value
/// (user and password percent-decoded), marked sensitive.
fn take_basic_auth(url: &mut Url) -> Option<HeaderValue> {
    use base64::Engine;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = secret::percent_decoded;
    let credentials = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or(""))
    );
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// `raw` as the `url` crate writes it in one path segment.
fn path_encoded(raw: &str) -> String {
    let mut url = Url::parse("http://localhost/").expect("a constant, valid URL");
    url.path_segments_mut()
        .expect("an http URL has path segments")
        .push(raw);
    url.path()[1..].to_owned()
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.redacted())
    }
}

impl ProbeContext<'_> {
    /// The URL: `url`, or the server's base + webhook path + code + params.
    pub(super) fn target(
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

    pub(super) fn code(
        &self,
        at: Location,
        raw: &RawProbe,
        errors: &mut Errors<'_>,
    ) -> Option<Secret> {
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
                                shown_path(&path)
                            ),
                        );
                        None
                    }
                    Err(e) => {
                        errors.at(file.referenced, format!("{label}.code_file: cannot read {}: {e}; check the path and its permissions", shown_path(&path)));
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
}

pub(super) fn append_params(url: &mut Url, params: &BTreeMap<String, String>) {
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
