//! Status + Divalto code + body rules -> success or a failure reason with a message.
//!
//! Pure functions over bytes, so every rule of the contract's "Verdict" section is a unit
//! test away.

use std::borrow::Cow;

use crate::config::{DivaltoMode, Expect};

use super::FailureReason;

/// Longest message kept from a body: enough for any Divalto message, bounded for memory.
pub const MAX_MESSAGE_CHARS: usize = 300;
/// Longest Divalto code kept: real codes are a few digits (`0`, `200`, `400`); anything
/// longer is cut, as it goes to logs, pages and the API.
pub const MAX_CODE_CHARS: usize = 32;

/// What a webhook said in its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DivaltoAnswer {
    /// The code ("0", "200", "400"), when the body carries one.
    pub code: Option<String>,
    /// The message that came with it.
    pub message: Option<String>,
}

/// The judgement of one complete HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `None` on success.
    pub reason: Option<FailureReason>,
    /// Divalto's message or a description of the failure.
    pub message: String,
    /// The Divalto code found, if any (never read with `divalto: off`).
    pub response_code: Option<String>,
}

/// Reads a Divalto code and message from a JSON or plain-text body.
///
/// JSON: a top-level `code` key (any case), else a `status` key holding a number; the message
/// from `message` or `msg`. A bare JSON number or string counts as the code. Plain text: the
/// first token when it is a number, the rest being the message.
///
/// The body is read as UTF-8 (a leading byte-order mark skipped); see [`decode_body`].
pub fn read_answer(body: &[u8]) -> DivaltoAnswer {
    read_text(&decode_body(body, None))
}

fn read_text(text: &str) -> DivaltoAnswer {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return DivaltoAnswer::default();
    }
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(trimmed) {
        return from_json(&value);
    }
    from_text(trimmed)
}

fn from_json(value: &serde_json::Value) -> DivaltoAnswer {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let field = |name: &str| {
                map.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            };
            let code = field("code").and_then(scalar_code).or_else(|| {
                field("status")
                    .and_then(scalar_code)
                    .filter(|c| is_number(c))
            });
            let message = field("message")
                .or_else(|| field("msg"))
                .and_then(|v| match v {
                    Value::String(s) => Some(clean(s)),
                    Value::Null => None,
                    other => Some(clean(&other.to_string())),
                });
            DivaltoAnswer { code, message }
        }
        Value::Number(_) | Value::String(_) => match scalar_code(value) {
            Some(code) if is_number(&code) => DivaltoAnswer {
                code: Some(code),
                message: None,
            },
            Some(text) => from_text(&text),
            None => DivaltoAnswer::default(),
        },
        _ => DivaltoAnswer::default(),
    }
}

fn scalar_code(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(short_code(s)),
        serde_json::Value::Number(n) => Some(short_code(&n.to_string())),
        _ => None,
    }
}

fn is_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

fn from_text(text: &str) -> DivaltoAnswer {
    let end = text
        .find(|c: char| c.is_whitespace() || matches!(c, ';' | ',' | ':' | '|'))
        .unwrap_or(text.len());
    let (first, rest) = text.split_at(end);
    if !is_number(first) {
        return DivaltoAnswer {
            code: None,
            message: Some(clean(text)),
        };
    }
    let rest = rest.trim_start_matches(|c: char| {
        c.is_whitespace() || matches!(c, ';' | ',' | ':' | '|' | '-')
    });
    DivaltoAnswer {
        code: Some(short_code(first)),
        message: (!rest.trim().is_empty()).then(|| clean(rest)),
    }
}

/// A code as the answer sent it, made one short line: it goes to logs, pages and the API,
/// and a hostile answer may send megabytes or line breaks where a code belongs.
fn short_code(text: &str) -> String {
    let text = text.trim();
    let mut code: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_CODE_CHARS)
        .collect();
    if text.chars().nth(MAX_CODE_CHARS).is_some() {
        code.push('…');
    }
    code
}

/// One line, no control characters, bounded length: messages go to logs and pages.
pub fn clean(text: &str) -> String {
    let mut out: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.trim().chars().count() > MAX_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// The body as text: in the `charset` its `Content-Type` declares (`windows-1252`,
/// `iso-8859-1`, any WHATWG label), else UTF-8; a byte-order mark wins over both and is
/// dropped; bytes invalid in the encoding become U+FFFD.
pub fn decode_body<'a>(body: &'a [u8], content_type: Option<&str>) -> Cow<'a, str> {
    let encoding = content_type
        .and_then(charset)
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode(body).0
}

/// The `charset` parameter of a `Content-Type` value, unquoted.
fn charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|parameter| {
        let (name, value) = parameter.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// Judges a complete answer against `expect`, its body read as UTF-8 (see [`judge_answer`]).
pub fn judge(status: u16, reason_phrase: &str, body: &[u8], expect: &Expect) -> Verdict {
    judge_answer(status, reason_phrase, None, body, expect)
}

/// Judges a complete answer against `expect`, its body decoded by [`decode_body`] with the
/// answer's `Content-Type`.
pub fn judge_answer(
    status: u16,
    reason_phrase: &str,
    content_type: Option<&str>,
    body: &[u8],
    expect: &Expect,
) -> Verdict {
    let text = decode_body(body, content_type);
    let answer = if expect.divalto == DivaltoMode::Off {
        DivaltoAnswer::default()
    } else {
        read_text(&text)
    };
    let with_message = |prefix: String| match &answer.message {
        Some(message) => format!("{prefix}: {message}"),
        None => prefix,
    };
    let response_code = answer.code.clone();

    if !expect.status.iter().any(|m| m.matches(status)) {
        let accepted: Vec<String> = expect.status.iter().map(ToString::to_string).collect();
        return Verdict {
            reason: Some(FailureReason::HttpStatus),
            message: with_message(
                format!(
                    "HTTP {status} {reason_phrase} (expected {})",
                    accepted.join(", ")
                )
                .trim()
                .replace("  ", " "),
            ),
            response_code,
        };
    }
    match (&answer.code, expect.divalto) {
        (Some(code), DivaltoMode::Auto | DivaltoMode::On)
            if !expect.success_codes.iter().any(|c| c == code) =>
        {
            return Verdict {
                reason: Some(FailureReason::WebhookError),
                message: with_message(format!("Divalto code {code}")),
                response_code,
            };
        }
        (None, DivaltoMode::On) => {
            return Verdict {
                reason: Some(FailureReason::WebhookError),
                message: "no Divalto code in the answer (divalto: on)".to_owned(),
                response_code,
            };
        }
        _ => {}
    }
    if let Some(pattern) = &expect.body_matches
        && !pattern.is_match(&text)
    {
        return Verdict {
            reason: Some(FailureReason::BodyMismatch),
            message: format!("body does not match /{}/", pattern.as_str()),
            response_code,
        };
    }
    if let Some(pattern) = &expect.body_not_matches
        && pattern.is_match(&text)
    {
        return Verdict {
            reason: Some(FailureReason::BodyMismatch),
            message: format!("body matches /{}/", pattern.as_str()),
            response_code,
        };
    }
    let message = answer
        .message
        .clone()
        .unwrap_or_else(|| format!("HTTP {status} {reason_phrase}").trim().to_owned());
    Verdict {
        reason: None,
        message,
        response_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StatusMatcher;

    fn expect(divalto: DivaltoMode) -> Expect {
        Expect {
            status: vec![StatusMatcher::Code(200)],
            divalto,
            success_codes: vec!["0".into(), "200".into()],
            body_matches: None,
            body_not_matches: None,
        }
    }

    #[test]
    fn json_keys_are_read_in_any_case() {
        for body in [
            r#"{"code":"400","message":"Dossier inconnu"}"#,
            r#"{"Code":400,"Message":"Dossier inconnu"}"#,
            r#"{"CODE":"400","MESSAGE":"Dossier inconnu"}"#,
        ] {
            let answer = read_answer(body.as_bytes());
            assert_eq!(answer.code.as_deref(), Some("400"), "{body}");
            assert_eq!(answer.message.as_deref(), Some("Dossier inconnu"), "{body}");
        }
    }

    #[test]
    fn a_plain_text_zero_is_a_code() {
        assert_eq!(read_answer(b"0\n").code.as_deref(), Some("0"));
        let answer = read_answer(b"400 Client C0000001 introuvable");
        assert_eq!(answer.code.as_deref(), Some("400"));
        assert_eq!(
            answer.message.as_deref(),
            Some("Client C0000001 introuvable")
        );
        assert_eq!(read_answer(b"OK").code, None);
    }

    #[test]
    fn a_body_code_is_one_short_line_whatever_the_answer_sends() {
        let huge = format!(r#"{{"code":"4\n00{}","message":"x"}}"#, "9".repeat(100_000));
        let verdict = judge(200, "OK", huge.as_bytes(), &expect(DivaltoMode::Auto));
        let code = verdict.response_code.expect("a code");
        assert!(
            !code.chars().any(char::is_control),
            "a control character in the code"
        );
        assert!(
            code.chars().count() <= MAX_CODE_CHARS + 1,
            "{} chars",
            code.len()
        );
        assert!(!verdict.message.chars().any(char::is_control));
        assert!(verdict.message.chars().count() <= MAX_MESSAGE_CHARS + 1);
    }

    #[test]
    fn a_textual_status_field_is_not_a_code() {
        assert_eq!(read_answer(br#"{"status":"UP"}"#).code, None);
        assert_eq!(
            read_answer(br#"{"status":200}"#).code.as_deref(),
            Some("200")
        );
    }

    #[test]
    fn a_body_code_400_is_a_webhook_error() {
        let verdict = judge(
            200,
            "OK",
            r#"{"code":"400","message":"Dossier 998 verrouillé"}"#.as_bytes(),
            &expect(DivaltoMode::Auto),
        );
        assert_eq!(verdict.reason, Some(FailureReason::WebhookError));
        assert_eq!(verdict.message, "Divalto code 400: Dossier 998 verrouillé");
        assert_eq!(verdict.response_code.as_deref(), Some("400"));
    }

    #[test]
    fn a_bad_status_wins_over_a_bad_body_code() {
        let verdict = judge(
            400,
            "Bad Request",
            r#"{"code":"400","message":"Paramètre dos manquant"}"#.as_bytes(),
            &expect(DivaltoMode::Auto),
        );
        assert_eq!(verdict.reason, Some(FailureReason::HttpStatus));
        assert_eq!(
            verdict.message,
            "HTTP 400 Bad Request (expected 200): Paramètre dos manquant"
        );
    }

    #[test]
    fn divalto_on_requires_a_code_and_off_ignores_it() {
        assert_eq!(
            judge(200, "OK", b"<html>", &expect(DivaltoMode::On)).reason,
            Some(FailureReason::WebhookError)
        );
        assert_eq!(
            judge(200, "OK", br#"{"code":"400"}"#, &expect(DivaltoMode::Off)).reason,
            None
        );
        assert_eq!(
            judge(200, "OK", b"<html>", &expect(DivaltoMode::Auto)).reason,
            None
        );
    }

    #[test]
    fn body_expectations_are_checked_after_the_code() {
        let mut rules = expect(DivaltoMode::Auto);
        rules.body_matches = Some(regex::Regex::new("OK").unwrap().into());
        let verdict = judge(200, "OK", br#"{"code":"0","message":"KO"}"#, &rules);
        assert_eq!(verdict.reason, Some(FailureReason::BodyMismatch));
        rules.body_matches = None;
        rules.body_not_matches = Some(regex::Regex::new("(?i)error").unwrap().into());
        assert_eq!(
            judge(200, "OK", b"0 Error later", &rules).reason,
            Some(FailureReason::BodyMismatch)
        );
    }

    #[test]
    fn long_messages_are_cut_and_flattened() {
        let long = format!("400 {}\nsecond line", "x".repeat(1000));
        let answer = read_answer(long.as_bytes());
        let message = answer.message.unwrap();
        assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1);
        assert!(!message.contains('\n'));
    }

    #[test]
    fn a_utf8_bom_does_not_hide_the_code() {
        let body = "\u{feff}{\"code\":\"400\",\"message\":\"Dossier inconnu\"}";
        let answer = read_answer(body.as_bytes());
        assert_eq!(answer.code.as_deref(), Some("400"));
        let verdict = judge(200, "OK", body.as_bytes(), &expect(DivaltoMode::Auto));
        assert_eq!(verdict.reason, Some(FailureReason::WebhookError));
        assert_eq!(
            read_answer("\u{feff}400 Client inconnu".as_bytes())
                .code
                .as_deref(),
            Some("400")
        );
    }

    #[test]
    fn a_declared_charset_is_decoded() {
        let body = b"{\"code\":\"500\",\"message\":\"\xC9chec de la requ\xEAte\"}";
        for content_type in [
            "application/json; charset=windows-1252",
            "text/plain;charset=\"ISO-8859-1\"",
            "application/json; Charset=Latin1",
        ] {
            let verdict = judge_answer(
                200,
                "OK",
                Some(content_type),
                body,
                &expect(DivaltoMode::Auto),
            );
            assert_eq!(
                verdict.message, "Divalto code 500: Échec de la requête",
                "{content_type}"
            );
        }
        // No charset, or one we do not know: UTF-8, invalid bytes replaced.
        assert_eq!(decode_body("é".as_bytes(), Some("application/json")), "é");
        assert_eq!(
            decode_body(b"\xC9", Some("text/plain; charset=nonsense")),
            "\u{fffd}"
        );
        assert_eq!(decode_body("\u{feff}0".as_bytes(), None), "0");
    }
}
