//! Scalar types of the config file, parsed and checked while the YAML is decoded.
//! (Over 500 lines: one small type per scalar kind of the file, a sixth of it tests.)
//!
//! Each type here deserializes from a YAML scalar, expands `${VAR}` from the environment, and
//! parses the text into what the rest of the program uses (a `Duration`, a `Regex`, a time
//! zone...). Failing here means serde-saphyr attaches the line and column of the bad value to
//! the error for free, so the operator is pointed at the exact spot.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::secret::Secret;
use crate::labels;

/// Longest part of a value a message quotes: enough to recognise it, short enough that a
/// 100 KB value cannot flood a terminal or a log line.
pub const MAX_SHOWN_CHARS: usize = 80;

/// Longest detail a library adds to a message (a regex or cron parser's explanation).
pub const MAX_DETAIL_CHARS: usize = 200;

/// `text` cut to `max` characters, with an ellipsis when something was cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A value the user wrote, as every config message quotes it: in double quotes, cut to
/// [`MAX_SHOWN_CHARS`], and a URL among them with its secrets redacted as a probe's URL is
/// (a webhook URL pasted into the wrong key must not print its code).
pub fn shown(value: &str) -> String {
    format!("\"{}\"", redacted_cut(value, MAX_SHOWN_CHARS))
}

/// A path the config names, as messages quote it: cut to [`MAX_DETAIL_CHARS`], and a webhook
/// URL written where a path belongs shown with its code redacted, as [`shown`] does.
pub fn shown_path(path: &std::path::Path) -> String {
    redacted_cut(&path.to_string_lossy(), MAX_DETAIL_CHARS)
}

/// Characters past the cut that are still redacted: room for a URL that starts in the shown
/// part and runs past it, so its code is found whole.
const REDACTION_MARGIN_CHARS: usize = 2048;

/// `value` redacted, then cut to `max` characters. Only what can show (with
/// [`REDACTION_MARGIN_CHARS`] more) is redacted: a value of megabytes full of `://` costs no
/// more than a short one.
fn redacted_cut(value: &str, max: usize) -> String {
    let (window, more) = match value.char_indices().nth(max + REDACTION_MARGIN_CHARS) {
        Some((end, _)) => (&value[..end], true),
        None => (value, false),
    };
    let redacted = redact_url(window);
    match cut(&redacted, max) {
        // Redaction shortened the window below the cut: the value still goes on.
        Cow::Borrowed(whole) if more => format!("{whole}…"),
        shown => shown.into_owned(),
    }
}

/// `value` with every URL password and webhook code in it redacted, wherever they stand: a
/// whole URL, a URL after a folder (a relative path joined to the config's folder), or a
/// `…/WebHook/CODE` without a scheme.
fn redact_url(value: &str) -> Cow<'_, str> {
    let mut secrets = Vec::new();
    let mut some_url = None;
    for (at, _) in value.match_indices("://") {
        // The scheme starts after the last character that cannot be in one (which may be
        // several bytes long).
        let start = value[..at]
            .char_indices()
            .rfind(|(_, c)| !(c.is_ascii_alphanumeric() || "+-.".contains(*c)))
            .map_or(0, |(i, c)| i + c.len_utf8());
        let end = value[at..]
            .find(|c: char| c.is_whitespace() || "\"'<>".contains(c))
            .map_or(value.len(), |i| at + i);
        if let Ok(url) = url::Url::parse(&value[start..end]) {
            secrets.extend(super::target::secrets_in_url(&url));
            some_url = Some(url);
        }
    }
    secrets.extend(webhook_codes_in(value).map(super::Secret::new));
    if secrets.is_empty() {
        return Cow::Borrowed(value);
    }
    let url = some_url
        .unwrap_or_else(|| url::Url::parse("http://redacted.invalid/").expect("a valid URL"));
    Cow::Owned(super::Target::new(url, &secrets).redact(value))
}

/// Each segment that follows a `webhook/` (in any case) in `text`, as written.
fn webhook_codes_in(text: &str) -> impl Iterator<Item = &str> {
    let lower = text.to_ascii_lowercase();
    let starts: Vec<usize> = lower
        .match_indices("webhook/")
        .map(|(at, marker)| at + marker.len())
        .collect();
    starts.into_iter().filter_map(move |start| {
        let rest = &text[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || "/?#\"'<>".contains(c))
            .unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

/// Replaces every `${NAME}` in `raw` with the environment variable `NAME`.
///
/// `$$` stands for a literal `$`, so a value that must contain `${` can still be written.
///
/// # Errors
/// An unset variable or an unterminated `${` is an error that says how to fix it.
pub fn expand_env(raw: &str) -> Result<String, String> {
    expand_with(raw, |name| std::env::var(name).ok())
}

/// [`expand_env`] with an injected lookup, so the rules are testable without the process
/// environment.
fn expand_with(raw: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                "unterminated \"${\": close it with \"}\" or write \"$$\" for a literal dollar sign"
                    .to_owned()
            })?;
            let name = &body[..end];
            let valid = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid {
                return Err(format!(
                    "{} is not a valid environment variable reference: use letters, digits and _",
                    shown(&format!("${{{name}}}"))
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!(
                    "environment variable {} is not set: export it before starting the exporter",
                    cut(name, MAX_SHOWN_CHARS)
                )
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Visitor accepting any YAML scalar as text: `dos: 998` and `dos: "998"` mean the same.
struct ScalarText;

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// Reads a scalar as text and expands `${VAR}` in it.
fn expanded<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = deserializer.deserialize_str(ScalarText)?;
    expand_env(&raw).map_err(de::Error::custom)
}

/// Reads an expanded scalar and parses it with `parse`, turning its error into a located one.
fn parsed<'de, D, T>(
    deserializer: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    let text = expanded(deserializer)?;
    parse(text.trim()).map_err(de::Error::custom)
}

/// A string value with `${VAR}` expanded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        expanded(d).map(Text)
    }
}

/// A secret value (webhook code, password): expanded like any string, never printed.
#[derive(Debug, Clone)]
pub struct SecretText(pub Secret);

impl<'de> Deserialize<'de> for SecretText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = expanded(d)?;
        let value = value.trim();
        if value.is_empty() {
            return Err(de::Error::custom(
                "the webhook code is empty: set it or use code_file",
            ));
        }
        Ok(SecretText(Secret::new(value)))
    }
}

/// A duration written Prometheus-style: `500ms`, `30s`, `1m30s`, `2h`, `1d`, `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DurationValue(pub Duration);

/// Units of a duration, largest first, with their length in milliseconds: Prometheus'
/// grammar without `y` (a year has no fixed length either).
const DURATION_UNITS: [(&str, u64); 6] = [
    ("w", 7 * 24 * 3_600_000),
    ("d", 24 * 3_600_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration in Prometheus' grammar: numbers each followed by a unit of `ms s m h d
/// w`, units from the largest to the smallest, each at most once (`1m30s`). Every refusal says
/// how to write the value instead.
///
/// # Errors
/// A bare number, an unknown unit (`5M`, `1y`, `10us`), a fraction, a space, units out of
/// order, a zero or an overflowing duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let quoted = shown(text);
    let invalid = |why: String| format!("invalid duration {quoted}: {why}");
    if text.is_empty() {
        return Err(invalid("it is empty; write e.g. \"30s\"".to_owned()));
    }
    if text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        let short = cut(text, MAX_SHOWN_CHARS);
        return Err(format!(
            "duration {quoted} has no unit: write it with one, e.g. \"{short}s\" or \"{short}ms\""
        ));
    }
    if text.contains(char::is_whitespace) {
        let joined: String = text.split_whitespace().collect();
        return match parse_duration(&joined) {
            Ok(_) => Err(invalid(format!(
                "spaces are not allowed; write {}",
                shown(&joined)
            ))),
            Err(e) => Err(e),
        };
    }
    // Split into (number, unit) pairs.
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        if number.is_empty() {
            return Err(invalid(format!(
                "{} has no number before it; write e.g. \"500ms\" or \"1m30s\"",
                shown(unit)
            )));
        }
        if unit.is_empty() {
            return Err(invalid(format!(
                "{} at the end has no unit; write e.g. \"1m30s\"",
                shown(number)
            )));
        }
        parts.push((number, unit));
        rest = after;
    }
    let mut milliseconds: Vec<(f64, usize)> = Vec::with_capacity(parts.len());
    for (number, unit) in &parts {
        let Some(rank) = DURATION_UNITS.iter().position(|(name, _)| name == unit) else {
            return Err(invalid(unknown_unit(unit, number)));
        };
        let value: f64 = number.parse().map_err(|_| {
            invalid(format!(
                "{} is not a number; write e.g. \"30s\"",
                shown(number)
            ))
        })?;
        milliseconds.push((value, rank));
    }
    if parts.iter().any(|(number, _)| number.contains('.')) {
        let total: f64 = milliseconds
            .iter()
            .map(|(value, rank)| value * DURATION_UNITS[*rank].1 as f64)
            .sum();
        return Err(invalid(match whole_milliseconds(total) {
            Some(ms) if ms > 0 => format!(
                "fractions are not allowed; write {}",
                shown(&format_prometheus_duration(ms))
            ),
            _ => "fractions are not allowed; write whole numbers, e.g. \"1m30s\"".to_owned(),
        }));
    }
    let mut total: u64 = 0;
    let mut in_order = true;
    for (i, (number, unit)) in parts.iter().enumerate() {
        let rank = milliseconds[i].1;
        if i > 0 && rank <= milliseconds[i - 1].1 {
            in_order = false;
        }
        let count: u64 = number
            .parse()
            .map_err(|_| invalid("it is too large".to_owned()))?;
        let length = DURATION_UNITS
            .iter()
            .find(|(name, _)| name == unit)
            .map_or(1, |(_, ms)| *ms);
        total = count
            .checked_mul(length)
            .and_then(|ms| ms.checked_add(total))
            .ok_or_else(|| invalid("it is too large".to_owned()))?;
    }
    if !in_order {
        return Err(invalid(format!(
            "units must go from the largest to the smallest, each once; write {}",
            shown(&format_prometheus_duration(total))
        )));
    }
    if total == 0 {
        return Err(format!("duration {quoted} is zero: it must be positive"));
    }
    Ok(Duration::from_millis(total))
}

/// Why `unit` is refused, and what to write instead.
fn unknown_unit(unit: &str, number: &str) -> String {
    let allowed = "use ms, s, m, h, d or w";
    match unit {
        "M" | "mo" | "month" | "months" => format!(
            "{} is not a unit (months vary in length); {allowed}, e.g. \"{}m\" for minutes or \"30d\"",
            shown(unit),
            cut(number, MAX_SHOWN_CHARS)
        ),
        "y" | "Y" | "year" | "years" => format!(
            "{} is not a unit (years vary in length); write \"365d\" or \"52w\"",
            shown(unit)
        ),
        "us" | "µs" | "μs" | "ns" => format!(
            "{} is below the smallest unit; {allowed} (at least \"1ms\")",
            shown(unit)
        ),
        _ => format!(
            "unknown unit {}; {allowed}, combinable as in \"1m30s\"",
            shown(unit)
        ),
    }
}

/// `value` rounded to whole milliseconds, when it is a sane duration.
fn whole_milliseconds(value: f64) -> Option<u64> {
    let rounded = value.round();
    // 2^53: every integer below is exact in an f64.
    (rounded.is_finite() && (0.0..9_007_199_254_740_992.0).contains(&rounded))
        .then_some(rounded as u64)
}

/// `milliseconds` in Prometheus' grammar: `1h30m`, `1w2d`, `1500ms` as `1s500ms`.
pub fn format_prometheus_duration(milliseconds: u64) -> String {
    let mut out = String::new();
    let mut rest = milliseconds;
    for (unit, length) in DURATION_UNITS {
        let count = rest / length;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            rest -= count * length;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, parse_duration).map(DurationValue)
    }
}

impl fmt::Display for DurationValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A size in bytes: `512`, `64KiB`, `1MiB`, `10MB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

/// Parses a size with an optional SI (kB, MB, GB) or IEC (KiB, MiB, GiB) unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| {
        format!(
            "invalid size {}: write e.g. 1MiB, 64KiB or 4096",
            shown(text)
        )
    })?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {} in {}: use B, kB, KiB, MB, MiB, GB or GiB",
                shown(other),
                shown(text)
            ));
        }
    };
    let bytes = number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size {} is too large", shown(text)))?;
    if bytes == 0 {
        return Err(format!("size {} is zero: it must be positive", shown(text)));
    }
    Ok(bytes)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, parse_size).map(ByteSize)
    }
}

/// An availability objective written as a percentage (`99.5%`), held as a ratio (0.995).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective(pub f64);

/// Parses `99.5%` into 0.995. The ratio is read from the decimal digits shifted by two places
/// (`"0.995"`), never computed as `99.5 / 100`, so it prints as written (`0.999`, not
/// `0.9990000000000001`) on `/metrics`.
///
/// # Errors
/// No `%`, something other than a plain decimal number, or a value outside (0 %, 100 %):
/// 100 % leaves no error budget, 0 % no objective.
pub fn parse_objective(text: &str) -> Result<f64, String> {
    let Some(number) = text.trim().strip_suffix('%').map(str::trim) else {
        return Err(format!(
            "invalid objective {}: write it as a percentage, e.g. \"99.5%\"",
            shown(text)
        ));
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |part: &str| part.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) {
        return Err(format!(
            "invalid objective {}: write a plain decimal percentage, e.g. \"99.5%\"",
            shown(text)
        ));
    }
    let whole = whole.trim_start_matches('0');
    let ratio: Option<f64> = match whole.len() {
        0..=2 => format!("0.{whole:0>2}{fraction}").parse().ok(),
        _ => None,
    };
    match ratio {
        Some(ratio) if ratio > 0.0 && ratio < 1.0 => Ok(ratio),
        _ => Err(format!(
            "invalid objective {}: it must be above 0% and below 100% (100% leaves no error budget: every failed run would page); write e.g. \"99.9%\"",
            shown(text)
        )),
    }
}

impl<'de> Deserialize<'de> for Objective {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, parse_objective).map(Objective)
    }
}

/// An accepted HTTP status: one code (`200`) or a class (`2xx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusMatcher {
    /// Exactly this status code.
    Code(u16),
    /// Any code of this hundred (2 for `2xx`).
    Class(u16),
}

impl StatusMatcher {
    /// Whether `status` is accepted by this matcher.
    pub fn matches(self, status: u16) -> bool {
        match self {
            StatusMatcher::Code(code) => code == status,
            StatusMatcher::Class(class) => status / 100 == class,
        }
    }
}

impl FromStr for StatusMatcher {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if let Some(class) = lower.strip_suffix("xx") {
            if let Ok(class @ 1..=5) = class.parse::<u16>() {
                return Ok(StatusMatcher::Class(class));
            }
        } else if let Ok(code @ 100..=599) = lower.parse::<u16>() {
            return Ok(StatusMatcher::Code(code));
        }
        Err(format!(
            "invalid HTTP status {}: write a code from 100 to 599 or a class such as \"2xx\"",
            shown(text)
        ))
    }
}

impl fmt::Display for StatusMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatusMatcher::Code(code) => write!(f, "{code}"),
            StatusMatcher::Class(class) => write!(f, "{class}xx"),
        }
    }
}

impl<'de> Deserialize<'de> for StatusMatcher {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, str::parse)
    }
}

/// How the Divalto answer code in the body is used (see the contract's "Verdict").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DivaltoMode {
    /// Judge the code when the body carries one.
    #[default]
    Auto,
    /// A body without a code is a failure.
    On,
    /// Ignore any code in the body.
    Off,
}

impl<'de> Deserialize<'de> for DivaltoMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML 1.1 reads a bare `on`/`off` as a boolean, so accept both spellings.
        parsed(d, |text| match text.to_ascii_lowercase().as_str() {
            "auto" => Ok(DivaltoMode::Auto),
            "on" | "true" => Ok(DivaltoMode::On),
            "off" | "false" => Ok(DivaltoMode::Off),
            _ => Err(format!(
                "invalid divalto mode {}: use auto, on or off",
                shown(text)
            )),
        })
    }
}

/// Why a run failed: the `reason` label values of the contract. Plain data, so the config
/// can name reasons (`retry_on`); the probe module re-exports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The host name could not be resolved.
    Dns,
    /// No TCP connection could be opened (refused, unreachable, reset while connecting).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The run's budget was spent before a complete answer.
    Timeout,
    /// The HTTP status is not among the accepted ones.
    HttpStatus,
    /// The Divalto code is not a success code (or missing with `divalto: on`).
    WebhookError,
    /// A body expectation failed.
    BodyMismatch,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The answer is not valid HTTP, or the connection broke before it was complete.
    InvalidResponse,
    /// Anything else (a request we could not even build).
    Other,
}

impl FailureReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [FailureReason; 10] = [
        FailureReason::Dns,
        FailureReason::Connect,
        FailureReason::Tls,
        FailureReason::Timeout,
        FailureReason::HttpStatus,
        FailureReason::WebhookError,
        FailureReason::BodyMismatch,
        FailureReason::BodyTooLarge,
        FailureReason::InvalidResponse,
        FailureReason::Other,
    ];

    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            FailureReason::Dns => "dns",
            FailureReason::Connect => "connect",
            FailureReason::Tls => "tls",
            FailureReason::Timeout => "timeout",
            FailureReason::HttpStatus => "http_status",
            FailureReason::WebhookError => "webhook_error",
            FailureReason::BodyMismatch => "body_mismatch",
            FailureReason::BodyTooLarge => "body_too_large",
            FailureReason::InvalidResponse => "invalid_response",
            FailureReason::Other => "other",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_label())
    }
}

impl<'de> Deserialize<'de> for FailureReason {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            FailureReason::ALL
                .into_iter()
                .find(|r| r.as_label() == text)
                .ok_or_else(|| {
                    let known: Vec<&str> =
                        FailureReason::ALL.iter().map(|r| r.as_label()).collect();
                    format!(
                        "unknown failure reason {}: use one of {}",
                        shown(text),
                        known.join(", ")
                    )
                })
        })
    }
}

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MethodValue(pub http::Method);

impl<'de> Deserialize<'de> for MethodValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            let upper = text.to_ascii_uppercase();
            http::Method::from_bytes(upper.as_bytes())
                .map(MethodValue)
                .map_err(|_| {
                    format!(
                        "invalid HTTP method {}: use GET, POST, PUT, HEAD...",
                        shown(text)
                    )
                })
        })
    }
}

/// Largest compiled size of a body regex: far above any sensible pattern, far below the
/// gigabytes a pattern such as `(a{1000}){1000}` asks for.
pub const MAX_REGEX_BYTES: usize = 1 << 20;

/// A regular expression, compiled once at load time; two are equal when their sources are.
#[derive(Debug, Clone)]
pub struct RegexValue(pub regex::Regex);

impl PartialEq for RegexValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for RegexValue {}

impl std::ops::Deref for RegexValue {
    type Target = regex::Regex;

    fn deref(&self) -> &regex::Regex {
        &self.0
    }
}

impl From<regex::Regex> for RegexValue {
    fn from(regex: regex::Regex) -> Self {
        Self(regex)
    }
}

/// Compiles `text` within [`MAX_REGEX_BYTES`].
///
/// # Errors
/// A syntax error, or a pattern too large to compile, with the pattern cut short.
pub fn compile_regex(text: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(text)
        .size_limit(MAX_REGEX_BYTES)
        .dfa_size_limit(MAX_REGEX_BYTES)
        .build()
        .map_err(|e| {
            let reason = match &e {
                regex::Error::CompiledTooBig(_) => {
                    "regex too large (it would compile to more than 1 MiB); simplify it".to_owned()
                }
                // regex errors are multi-line drawings; their last line says what is wrong.
                other => {
                    let detail = other.to_string();
                    let last = detail
                        .lines()
                        .last()
                        .unwrap_or_default()
                        .trim_start_matches("error: ");
                    cut(last, MAX_DETAIL_CHARS).into_owned()
                }
            };
            format!("invalid regular expression {}: {reason}", shown(text))
        })
}

impl<'de> Deserialize<'de> for RegexValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = expanded(d)?;
        compile_regex(&text)
            .map(RegexValue)
            .map_err(de::Error::custom)
    }
}

/// An IANA time zone (`Europe/Paris`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimeZoneValue(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZoneValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            text.parse::<chrono_tz::Tz>()
                .map(TimeZoneValue)
                .map_err(|_| {
                    format!(
                        "unknown time zone {}: use an IANA name such as Europe/Paris or UTC",
                        shown(text)
                    )
                })
        })
    }
}

/// `mode` of a maintenance window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceModeValue(pub crate::schedule::MaintenanceMode);

impl<'de> Deserialize<'de> for MaintenanceModeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::schedule::MaintenanceMode;
        parsed(d, |text| match text.to_ascii_lowercase().as_str() {
            "skip" => Ok(MaintenanceModeValue(MaintenanceMode::Skip)),
            "mute" => Ok(MaintenanceModeValue(MaintenanceMode::Mute)),
            _ => Err(format!(
                "invalid maintenance mode {}: use skip (no scheduled run while open) or mute (runs go on, alerts stay silent)",
                shown(text)
            )),
        })
    }
}

/// A cron expression, checked at load time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CronValue {
    /// The expression as written, for display.
    pub source: String,
    /// The parsed expression.
    pub cron: croner::Cron,
}

impl<'de> Deserialize<'de> for CronValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            crate::schedule::parse_cron(text)
                .map(|cron| CronValue {
                    source: text.to_owned(),
                    cron,
                })
                .map_err(|why| {
                    format!(
                        "invalid cron expression {}: {}",
                        shown(text),
                        cut(&why, MAX_DETAIL_CHARS)
                    )
                })
        })
    }
}

/// A header name, validated as HTTP token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HeaderKey(pub String);

impl<'de> Deserialize<'de> for HeaderKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            http::HeaderName::from_bytes(text.as_bytes())
                .map(|name| HeaderKey(name.as_str().to_owned()))
                .map_err(|_| format!("invalid header name {}", shown(text)))
        })
    }
}

/// A Prometheus label name for a probe's static labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelKey(pub String);

impl<'de> Deserialize<'de> for LabelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parsed(d, |text| {
            let mut chars = text.chars();
            let valid = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid || text.starts_with("__") {
                return Err(format!(
                    "invalid label name {}: use letters, digits and _, not starting with a digit or __",
                    shown(text)
                ));
            }
            // The families' own label names: a static label of the same name would give
            // their series a duplicate label, and Prometheus would refuse the whole page.
            if labels::RESERVED.contains(&text) {
                return Err(format!(
                    "label name {} is set by the exporter itself: choose another name",
                    shown(text)
                ));
            }
            Ok(LabelKey(text.to_owned()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "CODE").then(|| "MONWEBHOOK".to_owned())
    }

    #[test]
    fn a_variable_is_replaced_anywhere_in_the_string() {
        assert_eq!(expand_with("a/${CODE}/b", env).unwrap(), "a/MONWEBHOOK/b");
        assert_eq!(expand_with("$$5 and $x", env).unwrap(), "$5 and $x");
    }

    #[test]
    fn an_unset_variable_is_an_error_naming_it() {
        let err = expand_with("${MISSING_CODE}", env).unwrap_err();
        assert!(err.contains("MISSING_CODE is not set"), "{err}");
    }

    #[test]
    fn a_bare_number_is_not_a_duration() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    }

    #[test]
    fn a_webhook_code_is_redacted_wherever_it_stands_in_a_value() {
        let code = "MONWEBHOOKACADEMY123456789012363F53";
        for value in [
            format!("https://h.example/api/v1/WebHook/{code}?dos=998"),
            format!("/etc/webhook-exporter/https://h.example/api/v1/WebHook/{code}"),
            format!("h.example/api/v1/webhook/{code}"),
            format!("see 'https://u:{code}@h.example/'"),
        ] {
            let path = shown_path(std::path::Path::new(&value));
            assert!(!path.contains("ACADEMY"), "{path}");
            assert!(path.contains("MONW…3F53"), "{path}");
            assert!(!shown(&value).contains("ACADEMY"), "{value}");
        }
        assert_eq!(
            shown_path(std::path::Path::new("/etc/ca.pem")),
            "/etc/ca.pem"
        );
        assert_eq!(
            shown("https://h.example/WebHook/"),
            "\"https://h.example/WebHook/\""
        );
        // A multi-byte character just before a scheme is no slicing point.
        assert_eq!(shown("é://x"), "\"é://x\"");
        assert!(!shown(&format!("€https://h.example/WebHook/{code}")).contains("ACADEMY"));
    }

    /// A hostile value (400 KB of `a://`) is redacted as far as a message shows it, not
    /// parsed whole once per `://` (which took minutes): the message comes, cut and redacted.
    #[test]
    fn a_huge_value_full_of_schemes_is_shown_cut_and_redacted() {
        let code = "MONWEBHOOKACADEMY123456789012363F53";
        let value = format!(
            "https://h.example/WebHook/{code} {}",
            "a://".repeat(100_000)
        );
        let quoted = shown(&value);
        assert_eq!(quoted.chars().count(), MAX_SHOWN_CHARS + 3, "{quoted}");
        assert!(
            quoted.starts_with("\"https://h.example/WebHook/MONW…3F53 a://"),
            "{quoted}"
        );
        assert!(quoted.ends_with("…\""), "{quoted}");
        let path = shown_path(std::path::Path::new(&value));
        assert!(
            path.contains("MONW…3F53") && !path.contains("ACADEMY"),
            "{path}"
        );
        assert_eq!(path.chars().count(), MAX_DETAIL_CHARS + 1, "{path}");
    }

    #[test]
    fn a_quoted_value_is_cut_and_a_webhook_url_in_it_redacted() {
        let long = "x".repeat(1000);
        assert_eq!(
            shown(&long),
            format!("\"{}…\"", "x".repeat(MAX_SHOWN_CHARS))
        );
        let pasted = "https://h.example/api/v1/WebHook/MONWEBHOOKACADEMY123456789012363F53";
        let err = parse_duration(pasted).unwrap_err();
        assert!(!err.contains("ACADEMY"), "{err}");
        assert!(err.contains("WebHook/MONW…3F53"), "{err}");
    }

    #[test]
    fn prometheus_units_only_and_each_refusal_says_what_to_write() {
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        for (text, fix) in [
            ("5M", "\"5m\" for minutes"),
            ("1y", "\"365d\""),
            ("1.5h", "write \"1h30m\""),
            ("0.25s", "write \"250ms\""),
            ("5 m", "write \"5m\""),
            ("10us", "at least \"1ms\""),
            ("30s1m", "write \"1m30s\""),
            ("1m1m", "write \"2m\""),
            ("1min", "unknown unit \"min\""),
            ("1m30", "\"30\" at the end has no unit"),
            ("99999999999999999999s", "too large"),
            ("0s", "is zero"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(fix), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_take_si_and_iec_units() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("10kB").unwrap(), 10_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1 parsec").is_err());
    }

    #[test]
    fn an_objective_is_a_percentage_strictly_between_0_and_100() {
        assert_eq!(parse_objective("99.5%").unwrap(), 0.995);
        assert_eq!(parse_objective("99.9%").unwrap().to_string(), "0.999");
        assert_eq!(parse_objective("5%").unwrap(), 0.05);
        assert_eq!(parse_objective("099.95 %").unwrap(), 0.9995);
        for (text, fix) in [
            ("99.5", "write it as a percentage"),
            ("0.995", "write it as a percentage"),
            ("100%", "below 100%"),
            ("100.0%", "below 100%"),
            ("0%", "above 0%"),
            ("0.000%", "above 0%"),
            ("-1%", "plain decimal"),
            ("1e2%", "plain decimal"),
            ("%", "plain decimal"),
            (".5%", "plain decimal"),
        ] {
            let err = parse_objective(text).unwrap_err();
            assert!(err.contains(fix), "{text}: {err}");
        }
    }

    #[test]
    fn status_classes_match_the_whole_hundred() {
        let class: StatusMatcher = "2xx".parse().unwrap();
        assert!(class.matches(204));
        assert!(!class.matches(301));
        assert!("6xx".parse::<StatusMatcher>().is_err());
        assert!("200".parse::<StatusMatcher>().unwrap().matches(200));
    }
}
