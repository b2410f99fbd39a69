//! [`Secret`]: the only way the exporter holds a webhook code or a password.
//!
//! A Divalto webhook code is a bearer key living in the URL path: whoever reads it can
//! trigger the ERP action. Every formatting path of `Secret` (`Display`, `Debug`) prints the
//! redacted form, so a stray `{:?}` in a log line or an error cannot leak it.

use std::fmt;

/// Secrets at least this long keep their first and last four characters when redacted.
const SHOWN_EDGE_MIN_LEN: usize = 12;
/// Characters kept at each end of a long secret.
const SHOWN_EDGE: usize = 4;

/// A secret string (webhook code, password) that never formats as itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The real value, for the one place that needs it: building the request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form shown to people: `MONW…3F53` for 12 characters or more, `****` below.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

/// Redacts any secret text the way [`Secret`] does.
pub fn redact(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < SHOWN_EDGE_MIN_LEN {
        return "****".to_owned();
    }
    let head: String = chars[..SHOWN_EDGE].iter().collect();
    let tail: String = chars[chars.len() - SHOWN_EDGE..].iter().collect();
    format!("{head}…{tail}")
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.redacted())
    }
}

/// `text` (a URL part) percent-decoded; `+` stays `+` and invalid UTF-8 becomes U+FFFD.
pub(crate) fn percent_decoded(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_code_keeps_four_characters_at_each_end() {
        let code = Secret::new("MONWEBHOOKACADEMY123456789012363F53");
        assert_eq!(code.redacted(), "MONW…3F53");
        assert_eq!(code.to_string(), "MONW…3F53");
    }

    #[test]
    fn a_short_secret_is_fully_hidden() {
        assert_eq!(Secret::new("hunter2").redacted(), "****");
        assert_eq!(Secret::new("ABCDEFGHIJK").redacted(), "****");
        assert_eq!(Secret::new("ABCDEFGHIJKL").redacted(), "ABCD…IJKL");
    }

    #[test]
    fn debug_formatting_does_not_leak_the_value() {
        let code = Secret::new("MONWEBHOOKACADEMY123456789012363F53");
        let debug = format!("{code:?} {:?}", Some(&code));
        assert!(!debug.contains("ACADEMY"), "{debug}");
    }
}
