//! Property tests: the config loader and the answer verdict take any input without
//! panicking; every config error points at a line (except those about the whole file), and no
//! error message ever shows a webhook code planted in the config.

use std::path::Path;

use proptest::prelude::*;
use webhook_exporter::config::{self, DivaltoMode, Expect, StatusMatcher};
use webhook_exporter::probe::verdict;

/// A webhook code planted in generated configs; no message may show it.
const SECRET: &str = "PLANTEDWEBHOOKCODE0123456789ABCDEF";

/// Messages of errors that are about the whole file, where no line applies.
const FILE_LEVEL: &[&str] = &["YAML document too large or too complex"];

/// Longest message: a quoted value is cut to 80 characters, and the longest fixed text
/// (an unknown key with the list of known ones) is under 400.
const MAX_MESSAGE_CHARS: usize = 700;

/// Checks what every outcome of `config::parse` must hold.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let Err(errors) = config::parse(Path::new("generated.yaml"), text) else {
        return Ok(());
    };
    prop_assert!(!errors.0.is_empty());
    for error in &errors.0 {
        prop_assert!(
            error.location.is_some() || FILE_LEVEL.iter().any(|m| error.message.contains(m)),
            "no position: {error}"
        );
        prop_assert!(!error.message.contains(SECRET), "secret shown: {error}");
        prop_assert!(
            error.message.chars().count() <= MAX_MESSAGE_CHARS,
            "{} chars",
            error.message.chars().count()
        );
    }
    Ok(())
}

/// A YAML node, written in flow style so any tree is one valid document shape.
#[derive(Debug, Clone)]
enum Node {
    /// A scalar, written plain (`true`, `30s`) or double-quoted.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    fn write(&self, out: &mut String) {
        match self {
            Node::Scalar { text, plain: true } => out.push_str(text),
            Node::Scalar { text, plain: false } => out.push_str(&quote(text)),
            Node::Seq(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Node::Map(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&quote(key));
                    out.push_str(": ");
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A YAML double-quoted scalar (JSON's escaping is valid YAML).
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap()
}

fn plain(text: &str) -> Node {
    Node::Scalar {
        text: text.to_owned(),
        plain: true,
    }
}

fn quoted(text: String) -> Node {
    Node::Scalar { text, plain: false }
}

/// Scalars that hit the config's parsers where it hurts: units, limits, regexes, crons,
/// variables, numbers out of range.
const TRICKY: &[&str] = &[
    "30s",
    "1m30s",
    "30s1m",
    "5M",
    "1y",
    "1.5h",
    "5 m",
    "10us",
    "0",
    "-1",
    "18446744073709551616",
    "1000000000000",
    "2xx",
    "7xx",
    "200",
    "GET",
    "post",
    "auto",
    "on",
    "off",
    "*/5 7-19 * * Mon-Fri",
    "0 0 30 2 *",
    "0 */5 * *",
    "@hourly",
    "Europe/Paris",
    "Europe/Lutece",
    "(unclosed",
    "(a{1000}){1000}",
    "${WEBHOOK_EXPORTER_PROPERTY_UNSET}",
    "${}",
    "$$",
    "${",
    "http://127.0.0.1:1/",
    "https://erp.example.com/api/v1/WebHook/PLANTEDWEBHOOKCODE0123456789ABCDEF?dos=998",
    "http://user:pass@proxy.example:3128",
    "ftp://nowhere",
    "1MiB",
    "1 parsec",
    "version",
    "probe",
    "X-Team",
    "Host",
    "",
];

/// Words the config knows as keys, and a few it does not.
const KEYS: &[&str] = &[
    "name",
    "server",
    "code",
    "code_file",
    "url",
    "interval",
    "schedule",
    "timezone",
    "timeout",
    "method",
    "headers",
    "params",
    "labels",
    "retries",
    "retry_delay",
    "follow_redirects",
    "max_body_bytes",
    "tls",
    "expect",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "status",
    "divalto",
    "success_codes",
    "body_matches",
    "body_not_matches",
    "insecure_skip_verify",
    "ca_file",
    "server_name",
    "base_url",
    "webhook_path",
    "max_concurrent",
    "version",
    "dossier",
    "intervall",
];

fn scalar() -> impl Strategy<Value = Node> {
    prop_oneof![
        4 => proptest::sample::select(TRICKY).prop_map(|t| quoted(t.to_owned())),
        2 => proptest::sample::select(&["true", "false", "null", "~", "1", "0", "-5", "3.5", "998"][..]).prop_map(plain),
        2 => "[ -~]{0,24}".prop_map(quoted),
        1 => any::<String>().prop_map(quoted),
        // Long values: a message quoting one must still be short.
        1 => "[a-z(]{100,3000}".prop_map(quoted),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_-]{0,12}",
        1 => any::<String>(),
    ]
}

/// Any tree of maps, lists and scalars, keys mostly ones the config knows.
fn tree() -> impl Strategy<Value = Node> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Node::Seq),
            proptest::collection::vec((key(), inner), 0..6).prop_map(Node::Map),
        ]
    })
}

/// A key of a probe with a value of the kind it takes (whose text may still be wrong).
fn typed_entry() -> impl Strategy<Value = (String, Node)> {
    let scalar_keys = proptest::sample::select(
        &[
            "interval",
            "schedule",
            "timezone",
            "timeout",
            "method",
            "retries",
            "retry_delay",
            "follow_redirects",
            "max_body_bytes",
            "proxy_url",
            "proxy_from_environment",
        ][..],
    );
    let map_keys = proptest::sample::select(&["headers", "params", "labels"][..]);
    let names = prop_oneof![
        proptest::sample::select(TRICKY).prop_map(str::to_owned),
        "[a-zA-Z_][a-zA-Z0-9_-]{0,8}",
    ];
    let expect_entry = prop_oneof![
        proptest::collection::vec(scalar(), 0..3)
            .prop_map(|list| ("status".to_owned(), Node::Seq(list))),
        proptest::collection::vec(scalar(), 0..3)
            .prop_map(|list| ("success_codes".to_owned(), Node::Seq(list))),
        (
            proptest::sample::select(&["divalto", "body_matches", "body_not_matches"][..]),
            scalar()
        )
            .prop_map(|(key, value)| (key.to_owned(), value)),
    ];
    let tls_entry = (
        proptest::sample::select(
            &[
                "insecure_skip_verify",
                "ca_file",
                "cert_file",
                "key_file",
                "server_name",
            ][..],
        ),
        scalar(),
    )
        .prop_map(|(key, value)| (key.to_owned(), value));
    prop_oneof![
        3 => (scalar_keys, scalar()).prop_map(|(key, value)| (key.to_owned(), value)),
        2 => (map_keys, proptest::collection::vec((names, scalar()), 0..3))
            .prop_map(|(key, entries)| (key.to_owned(), Node::Map(entries))),
        2 => proptest::collection::vec(expect_entry, 0..3)
            .prop_map(|entries| ("expect".to_owned(), Node::Map(entries))),
        1 => proptest::collection::vec(tls_entry, 0..3)
            .prop_map(|entries| ("tls".to_owned(), Node::Map(entries))),
        1 => proptest::collection::vec(scalar(), 0..3)
            .prop_map(|list| ("no_proxy".to_owned(), Node::Seq(list))),
    ]
}

/// A probe that is nearly right: a name, a target carrying the planted code, then any keys.
fn probe() -> impl Strategy<Value = Node> {
    let name = proptest::sample::select(&["a", "b", "a", "bad name", "refresh-customer"][..]);
    let target = prop_oneof![
        Just(vec![
            ("server".to_owned(), quoted("cloud".into())),
            ("code".to_owned(), quoted(SECRET.into())),
        ]),
        Just(vec![
            ("server".to_owned(), quoted("nowhere".into())),
            ("code".to_owned(), quoted(SECRET.into())),
        ]),
        Just(vec![(
            "url".to_owned(),
            quoted(format!("https://erp.example.com/api/v1/WebHook/{SECRET}"))
        )]),
        Just(vec![
            ("url".to_owned(), quoted("http://127.0.0.1:1/".into())),
            ("code".to_owned(), quoted(SECRET.into())),
        ]),
    ];
    let extra =
        proptest::collection::vec(prop_oneof![4 => typed_entry(), 1 => (key(), tree())], 0..5);
    (name, target, extra).prop_map(|(name, mut entries, extra)| {
        entries.insert(0, ("name".to_owned(), quoted(name.to_owned())));
        for (key, value) in extra {
            // Duplicate keys are a YAML error found on its own; keep the target's keys.
            if !entries.iter().any(|(k, _)| *k == key) {
                entries.push((key, value));
            }
        }
        Node::Map(entries)
    })
}

/// A whole config: servers, defaults, probes and any other top-level keys.
fn document() -> impl Strategy<Value = String> {
    let server = Node::Map(vec![(
        "base_url".to_owned(),
        quoted("https://api.divaltocloud.com/123456/TEST1".into()),
    )]);
    (
        proptest::collection::vec(probe(), 0..4),
        proptest::option::of(prop_oneof![
            proptest::collection::vec(typed_entry(), 0..4).prop_map(Node::Map),
            tree(),
        ]),
        proptest::collection::vec(
            (
                proptest::sample::select(
                    &[
                        "history_size",
                        "max_concurrent_probes",
                        "duration_buckets",
                        "other",
                    ][..],
                ),
                tree(),
            ),
            0..2,
        ),
    )
        .prop_map(move |(probes, defaults, top)| {
            let mut entries = vec![
                (
                    "servers".to_owned(),
                    Node::Map(vec![("cloud".to_owned(), server.clone())]),
                ),
                ("probes".to_owned(), Node::Seq(probes)),
            ];
            if let Some(defaults) = defaults {
                entries.push(("defaults".to_owned(), defaults));
            }
            for (key, value) in top {
                if !entries.iter().any(|(k, _)| k == key) {
                    entries.push((key.to_owned(), value));
                }
            }
            let mut text = String::new();
            Node::Map(entries).write(&mut text);
            text.push('\n');
            text
        })
}

/// Bytes shaped like a Divalto answer, or anything.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<Vec<u8>>(),
        "\\{\"code\":\"[0-9]{1,4}\",\"message\":\"[ -~é]{0,40}\"\\}".prop_map(String::into_bytes),
        "[0-9]{1,3} [ -~]{0,30}".prop_map(String::into_bytes),
        "\u{feff}?[ -~]{0,60}".prop_map(String::into_bytes),
        "\\{\"(code|Code|status|msg|message)\":(\"[^\"]{0,10}\"|[0-9]{1,3}|null|\\[\\]|\\{\\})\\}"
            .prop_map(String::into_bytes),
    ]
}

fn expect() -> impl Strategy<Value = Expect> {
    let matcher = prop_oneof![
        (100u16..600).prop_map(StatusMatcher::Code),
        (1u16..6).prop_map(StatusMatcher::Class),
    ];
    let mode =
        proptest::sample::select(&[DivaltoMode::Auto, DivaltoMode::On, DivaltoMode::Off][..]);
    let pattern = proptest::option::of(proptest::sample::select(
        &["OK", "(?i)error", "^$", "code\":\"0", ".*", "[é]+"][..],
    ));
    (
        proptest::collection::vec(matcher, 1..4),
        mode,
        proptest::collection::vec("[0-9]{1,3}", 0..3),
        pattern.clone(),
        pattern,
    )
        .prop_map(
            |(status, divalto, success_codes, matches, not_matches)| Expect {
                status,
                divalto,
                success_codes,
                body_matches: matches.map(|p| regex::Regex::new(p).unwrap().into()),
                body_not_matches: not_matches.map(|p| regex::Regex::new(p).unwrap().into()),
            },
        )
}

proptest! {
    // 256 cases per test (proptest's default); `PROPTEST_CASES=20000` searches harder.
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn any_text_is_loaded_or_refused_with_positions(text in any::<String>()) {
        check_config(&text)?;
    }

    #[test]
    fn yaml_shaped_text_is_loaded_or_refused_with_positions(
        text in "(probes|servers|defaults|name|url|interval|[:{}\\[\\],\"'&*!|>#-]| |\n|[a-z0-9]){0,80}"
    ) {
        check_config(&text)?;
    }

    #[test]
    fn a_random_config_tree_never_shows_the_planted_code(text in document()) {
        check_config(&text)?;
    }

    #[test]
    fn any_answer_gets_a_verdict(
        status in any::<u16>(),
        reason_phrase in "[ -~]{0,20}",
        body in body(),
        rules in expect(),
    ) {
        let judged = verdict::judge(status, &reason_phrase, &body, &rules);
        if !rules.status.iter().any(|m| m.matches(status)) {
            prop_assert_eq!(judged.reason, Some(webhook_exporter::probe::FailureReason::HttpStatus));
        }
        if rules.divalto == DivaltoMode::Off {
            prop_assert_eq!(judged.response_code, None);
        }
    }
}
