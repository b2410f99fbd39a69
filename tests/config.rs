//! Config loading: every invalid fixture is refused with its exact message and position;
//! the example config and the URL-building rules work.

mod common;

use std::path::Path;

use webhook_exporter::config;

/// Each `tests/fixtures/invalid-*.yaml` with the exact error expected, `file:line:col: message`.
const INVALID: &[(&str, &str)] = &[
    (
        "invalid-maintenance-cron-never.yaml",
        "5:20: invalid cron expression \"0 22 30 2 *\": it never fires (no date from now on matches all its fields); check the day, month and year",
    ),
    (
        "invalid-maintenance-timezone.yaml",
        "7:19: unknown time zone \"Europe/Lutece\": use an IANA name such as Europe/Paris or UTC",
    ),
    (
        "invalid-maintenance-mode.yaml",
        "5:54: invalid maintenance mode \"pause\": use skip (no scheduled run while open) or mute (runs go on, alerts stay silent)",
    ),
    (
        "invalid-maintenance-unknown-key.yaml",
        "5:48: unknown field `zone`, expected one of schedule, duration, timezone, mode; check the spelling or remove the key",
    ),
    (
        "invalid-maintenance-duration.yaml",
        "3:42: duration \"0s\" is zero: it must be positive",
    ),
    (
        "invalid-maintenance-no-duration.yaml",
        "5:10: missing field `duration`; add it (see the configuration reference in the README)",
    ),
    (
        "invalid-unknown-key.yaml",
        "4:5: unknown field `intervall`, expected one of name, server, code, code_file, url, interval, schedule, timezone, timeout, method, headers, params, labels, retries, retry_delay, retry_on, follow_redirects, max_body_bytes, tls, expect, proxy_url, no_proxy, proxy_from_environment, body, body_file, json, basic_auth, authorization, objective, maintenance; check the spelling or remove the key",
    ),
    (
        "invalid-duplicate-key.yaml",
        "5:5: duplicate mapping key `interval` is not allowed here; each key may appear once",
    ),
    (
        "invalid-duplicate-name.yaml",
        "4:11: probes[1].name: duplicate probe name \"refresh-customer\"; names must be unique",
    ),
    (
        "invalid-name.yaml",
        "2:11: probes[0].name: \"refresh customer\" is not a valid name; use letters, digits, _, . and -",
    ),
    (
        "invalid-url-and-server.yaml",
        "7:10: probes[0] \"both\": has both url and server; keep url for a plain URL, or server + code for a Divalto webhook",
    ),
    (
        "invalid-neither-url-nor-server.yaml",
        "2:5: probes[0] \"nothing\": has neither url nor server; set url, or server + code (or code_file)",
    ),
    (
        "invalid-timeout-not-below-interval.yaml",
        "5:14: probes[0] \"slow\".timeout: 30s must be shorter than the time between two runs (30s); lower the timeout or run less often",
    ),
    (
        "invalid-timeout-cron-gap.yaml",
        "2:12: probes[0] \"business-hours\".timeout: 2m must be shorter than the time between two runs (1m); lower the timeout or run less often",
    ),
    (
        "invalid-cron.yaml",
        "4:15: invalid cron expression \"0 */5 * *\": expected 5 fields (minute hour day month weekday), or 6-7 with seconds and year; found 4",
    ),
    (
        "invalid-timezone.yaml",
        "5:15: unknown time zone \"Europe/Lutece\": use an IANA name such as Europe/Paris or UTC",
    ),
    (
        "invalid-regex.yaml",
        "3:19: invalid regular expression \"(unclosed\": unclosed group",
    ),
    (
        "invalid-unset-env.yaml",
        "6:11: environment variable WEBHOOK_EXPORTER_TEST_UNSET_CODE is not set: export it before starting the exporter",
    ),
    (
        "invalid-unknown-server.yaml",
        "5:13: probes[0] \"refresh-customer\".server: unknown server \"clowd\"; define it under servers (known: cloud)",
    ),
    (
        "invalid-bare-number-duration.yaml",
        "2:13: duration \"30\" has no unit: write it with one, e.g. \"30s\" or \"30ms\"",
    ),
    (
        "invalid-status-class.yaml",
        "4:30: invalid HTTP status \"7xx\": write a code from 100 to 599 or a class such as \"2xx\"",
    ),
    (
        "invalid-size.yaml",
        "4:21: unknown size unit \"parsec\" in \"1 parsec\": use B, kB, KiB, MB, MiB, GB or GiB",
    ),
    (
        "invalid-label-name.yaml",
        "4:14: label name \"probe\" is set by the exporter itself: choose another name",
    ),
    (
        "invalid-defaults-name.yaml",
        "2:8: defaults.url: only a probe can set url; move it into the probes that need it",
    ),
    (
        "invalid-code-without-server.yaml",
        "4:11: probes[0] \"a\": code and code_file need a server; with url, put the whole URL in url",
    ),
    (
        "invalid-interval-and-schedule.yaml",
        "5:15: probes[0] \"a\": has both interval and schedule; keep one",
    ),
    (
        "invalid-divalto-mode.yaml",
        "4:23: invalid divalto mode \"maybe\": use auto, on or off",
    ),
    (
        "invalid-label-version.yaml",
        "4:14: label name \"version\" is set by the exporter itself: choose another name",
    ),
    (
        "invalid-history-size.yaml",
        "1:15: history_size: 1000000000000 is more than 10000; every probe keeps that many results in memory, so lower it",
    ),
    (
        "invalid-duration-month.yaml",
        "4:15: invalid duration \"5M\": \"M\" is not a unit (months vary in length); use ms, s, m, h, d or w, e.g. \"5m\" for minutes or \"30d\"",
    ),
    (
        "invalid-duration-year.yaml",
        "4:15: invalid duration \"1y\": \"y\" is not a unit (years vary in length); write \"365d\" or \"52w\"",
    ),
    (
        "invalid-duration-fraction.yaml",
        "4:15: invalid duration \"1.5h\": fractions are not allowed; write \"1h30m\"",
    ),
    (
        "invalid-duration-space.yaml",
        "4:15: invalid duration \"5 m\": spaces are not allowed; write \"5m\"",
    ),
    (
        "invalid-duration-micro.yaml",
        "4:15: invalid duration \"10us\": \"us\" is below the smallest unit; use ms, s, m, h, d or w (at least \"1ms\")",
    ),
    (
        "invalid-cron-never.yaml",
        "4:15: invalid cron expression \"0 0 30 2 *\": it never fires (no date from now on matches all its fields); check the day, month and year",
    ),
    (
        "invalid-objective-no-percent.yaml",
        "4:16: invalid objective \"99.5\": write it as a percentage, e.g. \"99.5%\"",
    ),
    (
        "invalid-objective-hundred.yaml",
        "2:14: invalid objective \"100%\": it must be above 0% and below 100% (100% leaves no error budget: every failed run would page); write e.g. \"99.9%\"",
    ),
    (
        "invalid-objective-zero.yaml",
        "4:16: invalid objective \"0%\": it must be above 0% and below 100% (100% leaves no error budget: every failed run would page); write e.g. \"99.9%\"",
    ),
    (
        "invalid-regex-too-large.yaml",
        "3:19: invalid regular expression \"(a{1000}){1000}\": regex too large (it would compile to more than 1 MiB); simplify it",
    ),
];

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn every_invalid_fixture_is_refused_with_its_position_and_fix() {
    let mut failures = Vec::new();
    for (name, expected) in INVALID {
        let path = fixture(name);
        let expected = format!("{}:{expected}", path.display());
        match config::load(&path) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(errors) => {
                let got = errors.to_string();
                if got != expected {
                    failures.push(format!("{name}:\n  expected {expected}\n  got      {got}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_in_the_folder_has_an_expectation() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("invalid-") {
            // invalid-code-file.yaml names an absolute path: checked in its own test below.
            let covered =
                INVALID.iter().any(|(n, _)| *n == name) || name == "invalid-code-file.yaml";
            assert!(covered, "{name} has no expected message");
        }
    }
}

#[test]
fn an_unreadable_code_file_names_the_file_and_the_position() {
    let err = config::load(&fixture("invalid-code-file.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "invalid-code-file.yaml:6:16: probes[0] \"refresh-customer\".code_file: cannot read "
        ),
        "{err}"
    );
    assert!(err.contains("does-not-exist/refresh_customer"), "{err}");
}

#[test]
fn all_problems_of_a_file_are_reported_at_once() {
    let (_dir, path) = common::write_config(
        "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    interval: 10s\n    timeout: 20s\n  - name: b\n    server: nowhere\n    code: X\n",
    );
    let errors = config::load(&path).unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
    let at = |line, column| Some(config::Location { line, column });
    assert_eq!(errors.0[0].location, at(5, 14));
    assert_eq!(errors.0[1].location, at(7, 13));
}

#[test]
fn a_divalto_url_is_built_from_base_path_code_and_encoded_params() {
    let (_dir, path) = common::write_config(&format!(
        r#"
defaults:
  params: {{dos: 998}}
servers:
  cloud:
    base_url: https://api.divaltocloud.com/123456/TEST1/
    params: {{env: test}}
probes:
  - name: refresh-customer
    server: cloud
    code: {code}
    params: {{refreshCustomer: "C0000001 & Co/é", env: prod}}
"#,
        code = common::SECRET_CODE
    ));
    let config = config::load(&path).unwrap();
    let url = config.probes[0].target.url.as_str().to_owned();
    assert_eq!(
        url,
        format!(
            "https://api.divaltocloud.com/123456/TEST1/api/v1/WebHook/{}?dos=998&env=prod&refreshCustomer=C0000001+%26+Co%2F%C3%A9",
            common::SECRET_CODE
        )
    );
    assert_eq!(
        config.probes[0].target.redacted(),
        "https://api.divaltocloud.com/123456/TEST1/api/v1/WebHook/MONW…3F53?dos=998&env=prod&refreshCustomer=C0000001+%26+Co%2F%C3%A9"
    );
}

#[test]
fn a_code_file_is_trimmed_and_relative_to_the_config() {
    let (dir, path) = common::write_config(
        "servers:\n  onprem:\n    base_url: http://erp:8080/Rest\n    webhook_path: /api/v1/Webhook\nprobes:\n  - name: a\n    server: onprem\n    code_file: secrets/code\n",
    );
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/code"),
        format!("  {}\n", common::SECRET_CODE),
    )
    .unwrap();
    let config = config::load(&path).unwrap();
    assert_eq!(
        config.probes[0].target.url.as_str(),
        format!(
            "http://erp:8080/Rest/api/v1/Webhook/{}",
            common::SECRET_CODE
        )
    );
}

#[test]
fn probe_settings_override_defaults_and_maps_merge() {
    let (_dir, path) = common::write_config(
        r#"
defaults:
  interval: 1m30s
  timeout: 5s
  retries: 2
  headers: {X-Team: erp, X-Env: test}
  labels: {team: erp}
  expect: {status: ["2xx"], success_codes: ["0"]}
servers:
  cloud:
    base_url: https://x.example/base
    headers: {X-Env: cloud}
    labels: {site: cloud}
probes:
  - name: a
    server: cloud
    code: ABC
    timeout: 2s
    method: post
    headers: {X-Probe: a}
    labels: {dossier: "998"}
    expect: {divalto: on}
    max_body_bytes: 64KiB
"#,
    );
    let config = config::load(&path).unwrap();
    let probe = &config.probes[0];
    assert_eq!(probe.timeout, std::time::Duration::from_secs(2));
    assert_eq!(probe.schedule.to_string(), "every 1m 30s");
    assert_eq!(probe.retries, 2);
    assert_eq!(probe.method, http::Method::POST);
    assert_eq!(probe.max_body_bytes, 64 * 1024);
    let headers: Vec<(String, String)> = probe
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        headers,
        vec![
            ("x-env".into(), "cloud".into()),
            ("x-probe".into(), "a".into()),
            ("x-team".into(), "erp".into())
        ]
    );
    let labels: Vec<(&str, &str)> = probe
        .labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        vec![("dossier", "998"), ("site", "cloud"), ("team", "erp")]
    );
    assert_eq!(probe.expect.divalto, config::DivaltoMode::On);
    assert_eq!(probe.expect.success_codes, vec!["0".to_owned()]);
    assert!(probe.expect.status[0].matches(204));
}

#[test]
fn an_objective_is_taken_from_the_probe_else_its_server_else_the_defaults() {
    let (_dir, path) = common::write_config(
        r#"
defaults:
  objective: 99%
servers:
  strict:
    base_url: https://x.example/base
    objective: 99.95%
  plain:
    base_url: https://y.example/base
probes:
  - {name: own, server: strict, code: A, objective: "99.5 %"}
  - {name: from-server, server: strict, code: B}
  - {name: from-defaults, server: plain, code: C}
  - {name: plain-url, url: "https://z.example/health"}
"#,
    );
    let config = config::load(&path).unwrap();
    let objectives: Vec<(&str, Option<f64>)> = config
        .probes
        .iter()
        .map(|p| (p.name.as_str(), p.objective))
        .collect();
    assert_eq!(
        objectives,
        vec![
            ("own", Some(0.995)),
            ("from-server", Some(0.9995)),
            ("from-defaults", Some(0.99)),
            ("plain-url", Some(0.99)),
        ]
    );
    let (_dir, path) = common::write_config("probes: [{name: a, url: \"https://z.example/\"}]\n");
    assert_eq!(config::load(&path).unwrap().probes[0].objective, None);
}

/// `check-config` on `text`: exit code, stdout and stderr together.
fn check_config_output(text: &str) -> (i32, String) {
    let (_dir, path) = common::write_config(text);
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn check_config_warns_when_one_failed_run_would_page_and_says_what_would_not() {
    // A run a minute at 99.9 %: one failure is 1/60 of the runs of the 1h window, above
    // 14.4 × the 0.1 % budget (1.44 %), and a bigger share still of the 5m window: it pages.
    let (code, output) = check_config_output(
        "probes:\n  - {name: strict, url: \"https://x.example/\", interval: 1m, objective: 99.9%}\n  - {name: relaxed, url: \"https://y.example/\", interval: 1m, objective: 99.5%}\n",
    );
    assert_eq!(code, 0, "a warning is not an error: {output}");
    let warnings: Vec<&str> = output.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{output}");
    let warning = warnings[0];
    for part in [
        ":2:5: warning: probes[0] \"strict\": objective 99.9% with a run every 1m",
        "one failed run would page",
        "objective 99.88% or lower, or an interval of 51s or shorter",
    ] {
        assert!(warning.contains(part), "{part:?} not in {warning}");
    }
}

#[test]
fn check_config_weighs_a_cron_schedule_by_its_shortest_gap() {
    // Every 5 minutes at 99%: one failure is 1/12 of the 1h window, above 14.4 %? No: 8.3 %
    // is below 14.4 × 1 % = 14.4 %, and 5m/6h = 1/72 is below 6 %: no page, no warning.
    let (code, output) = check_config_output(
        "probes:\n  - {name: cron-ok, url: \"https://x.example/\", schedule: \"*/5 * * * *\", objective: 99%}\n",
    );
    assert_eq!(code, 0, "{output}");
    assert!(!output.contains("warning"), "{output}");
    // At 99.5 % the same schedule pages on one failure: 8.3 % > 14.4 × 0.5 % = 7.2 %.
    let (code, output) = check_config_output(
        "probes:\n  - {name: cron-strict, url: \"https://x.example/\", schedule: \"*/5 * * * *\", objective: 99.5%}\n",
    );
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains("objective 99.5% with runs at least 5m apart (*/5 * * * * UTC): one failed run would page"),
        "{output}"
    );
    assert!(
        output.contains("use objective 99.42% or lower, or an interval of 4m 19s or shorter"),
        "{output}"
    );
}

#[test]
fn the_example_config_is_accepted_by_check_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/webhook-exporter.yaml");
    let (code, stdout, stderr) = common::run_binary(
        &[
            "check-config",
            &format!("--config.file={}", example.display()),
        ],
        &[
            ("REFRESH_CUSTOMER_CODE", common::SECRET_CODE),
            ("ORDER_SYNC_CODE", "SYNCCOMMANDESACADEMY0000000000042"),
            ("ACME_STOCK_CODE", "ACMESTOCKWEBHOOK00000000000000000001"),
            ("GLOBEX_INVOICE_CODE", "GLOBEXINVOICES000000000000000000002"),
        ],
        None,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        !stderr.contains("warning"),
        "the example's objective lets one failure page: {stderr}"
    );
    assert!(
        stdout.contains("webhook-exporter.yaml: valid, 3 probe(s), 2 server(s)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("in all 5 probe(s), 4 server(s)"),
        "{stdout}"
    );
    for tenant in ["tenant-acme.yaml", "tenant-globex.yaml"] {
        assert!(
            stdout.contains(&format!("conf.d/{tenant}: valid, 1 probe(s), 1 server(s)")),
            "{stdout}"
        );
    }
    assert!(
        !stdout.contains("ACMESTOCKWEBHOOK00000000000000000001")
            && !stdout.contains("GLOBEXINVOICES000000000000000000002"),
        "{stdout}"
    );
    assert!(
        stdout.contains("/api/v1/WebHook/MONW…3F53?dos=998&refreshCustomer=C0000001"),
        "{stdout}"
    );
    assert!(
        stdout.contains("*/5 7-19 * * Mon-Fri Europe/Paris"),
        "{stdout}"
    );
    assert!(
        !stdout.contains(common::SECRET_CODE)
            && !stdout.contains("SYNCCOMMANDESACADEMY0000000000042"),
        "{stdout}"
    );
}

#[test]
fn check_config_exits_1_with_the_errors_on_stderr() {
    let (code, stdout, stderr) = common::run_binary(
        &[
            "check-config",
            &format!("--config.file={}", fixture("invalid-cron.yaml").display()),
        ],
        &[],
        None,
    );
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("invalid-cron.yaml:4:15: invalid cron expression"),
        "{stderr}"
    );
}

#[test]
fn a_bad_flag_is_a_usage_error_with_exit_code_2() {
    let (code, _, stderr) = common::run_binary(&["--no-such-flag"], &[], None);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn check_config_prints_a_70000_character_probe_name() {
    let name = "p".repeat(70_000);
    let (_dir, path) = common::write_config(&format!(
        "probes:\n  - name: {name}\n    url: http://127.0.0.1:1/\n"
    ));
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 0, "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with(&format!("{name}  "))),
        "{}",
        &stdout[..stdout.len().min(2000)]
    );
}

/// The messages of loading `text`, or a panic if it loads.
fn messages(text: &str) -> Vec<String> {
    let (_dir, path) = common::write_config(text);
    let errors = config::load(&path).expect_err("the config should be refused");
    errors.0.into_iter().map(|e| e.message).collect()
}

#[test]
fn a_huge_regex_is_refused_with_a_short_message() {
    for pattern in [
        format!("({})", "a".repeat(100_000)),
        "(a{1000}){1000}".to_owned(),
    ] {
        let got = messages(&format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    expect: {{body_matches: '{pattern}'}}\n"
        ));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].contains("regex too large"),
            "{}",
            &got[0][..got[0].len().min(300)]
        );
        assert!(
            got[0].chars().count() < 250,
            "{} chars",
            got[0].chars().count()
        );
    }
}

#[test]
fn every_value_echoed_in_an_error_is_cut_short() {
    let long = "x".repeat(100_000);
    // YAML keys (simple keys) are at most 1,024 characters long.
    let key = "k".repeat(1_000);
    let cases = [
        format!("probes:\n  - name: '{long} y'\n    url: http://127.0.0.1:1/\n"),
        format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    expect: {{body_matches: '({long}'}}\n"
        ),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    timezone: {long}\n"),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    interval: {long}\n"),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    schedule: '{long}'\n"),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    method: '{long} x'\n"),
        format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    max_body_bytes: 1{long}\n"
        ),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    labels: {{{key}-: v}}\n"),
        format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    headers: {{'{key} x': v}}\n"
        ),
        format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    expect: {{status: ['{long}']}}\n"
        ),
        format!(
            "probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    expect: {{divalto: {long}}}\n"
        ),
        format!("probes:\n  - name: a\n    url: 'http://127.0.0.1:1/${{{long}}}'\n"),
        format!("probes:\n  - name: a\n    url: 'http://127.0.0.1:1/${{{long}-}}'\n"),
        format!(
            "servers: {{s: {{base_url: 'http://h/'}}}}\nprobes:\n  - name: a\n    server: {long}\n    code: X\n"
        ),
        format!("probes:\n  - name: a\n    url: http://127.0.0.1:1/\n    {key}: 1\n"),
    ];
    for text in &cases {
        for message in messages(text) {
            assert!(
                message.chars().count() < 600,
                "{} chars: {}",
                message.chars().count(),
                message.chars().take(300).collect::<String>()
            );
        }
    }
}

#[test]
fn a_history_of_10000_is_accepted() {
    let (_dir, path) = common::write_config(
        "history_size: 10000\nprobes:\n  - name: a\n    url: http://127.0.0.1:1/\n",
    );
    assert_eq!(config::load(&path).unwrap().history_size, 10_000);
}

#[test]
fn prometheus_durations_combine_units_from_the_largest() {
    let (_dir, path) = common::write_config(
        "probes:\n  - {name: a, url: 'http://127.0.0.1:1/', interval: 1w2d3h4m5s6ms, timeout: 1m30s}\n  - {name: b, url: 'http://127.0.0.1:1/', interval: 30s1m}\n",
    );
    let errors = config::load(&path).unwrap_err();
    assert_eq!(
        errors
            .0
            .iter()
            .map(|e| e.message.as_str())
            .collect::<Vec<_>>(),
        [
            "invalid duration \"30s1m\": units must go from the largest to the smallest, each once; write \"1m30s\""
        ]
    );
    let (_dir, path) = common::write_config(
        "probes:\n  - {name: a, url: 'http://127.0.0.1:1/', interval: 1w2d3h4m5s6ms, timeout: 1m30s}\n",
    );
    let config = config::load(&path).unwrap();
    assert_eq!(
        config.probes[0].schedule,
        webhook_exporter::schedule::Schedule::Interval(std::time::Duration::from_millis(
            ((((7 + 2) * 24 + 3) * 60 + 4) * 60 + 5) * 1000 + 6
        ))
    );
    assert_eq!(config.probes[0].timeout, std::time::Duration::from_secs(90));
}

#[test]
fn a_file_that_is_not_utf8_is_refused_at_the_first_bad_byte() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.yaml");
    std::fs::write(
        &path,
        b"probes:\n  - name: caf\xe9\n    url: http://127.0.0.1:1/\n",
    )
    .unwrap();
    let errors = config::load(&path).unwrap_err();
    assert_eq!(
        errors.to_string(),
        format!(
            "{}:2:14: the file is not valid UTF-8 (byte 0xE9): save it as UTF-8",
            path.display()
        )
    );
}

#[test]
fn a_config_of_100000_probes_loads() {
    let mut text = String::from("probes:\n");
    for i in 0..100_000 {
        text.push_str(&format!("  - {{name: p{i}, url: 'http://10.0.0.1/{i}'}}\n"));
    }
    let config = config::parse(Path::new("big.yaml"), &text)
        .unwrap_or_else(|e| panic!("{}", e.to_string().chars().take(500).collect::<String>()));
    assert_eq!(config.probes.len(), 100_000);
    assert_eq!(config.probes[99_999].name, "p99999");
}

#[test]
fn check_config_points_at_a_tls_file_that_is_not_pem() {
    let (dir, path) = common::write_config(
        "probes:\n  - name: p\n    url: https://127.0.0.1:1/\n    tls:\n      ca_file: ca.pem\n",
    );
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 1, "{stdout}");
    let expected = format!(
        "{}:5:16: probes[0] \"p\".tls.ca_file: {} holds no PEM certificate",
        path.display(),
        dir.path().join("ca.pem").display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
}

#[test]
fn a_rotated_password_file_changes_the_probe_for_the_reload_diff() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exporter.yaml");
    std::fs::write(dir.path().join("password"), "first\n").unwrap();
    let text = "probes:\n  - name: p\n    url: http://127.0.0.1:1/\n    basic_auth: {username: u, password_file: password}\n";
    let load = || config::parse(&path, text).unwrap().probes[0].clone();
    let before = load();
    assert!(before.same_settings(&load()));
    std::fs::write(dir.path().join("password"), "second\n").unwrap();
    let after = load();
    assert!(!before.same_settings(&after));
    assert!(!format!("{after:?}").contains("second"), "{after:?}");
}

#[test]
fn a_problem_of_the_defaults_is_reported_once_not_once_per_probe() {
    let text = "defaults:\n  body: a\n  json: {b: 1}\nprobes:\n  - {name: one, url: http://127.0.0.1:1/}\n  - {name: two, url: http://127.0.0.1:1/}\n  - {name: three, url: http://127.0.0.1:1/}\n";
    let errors = config::parse(Path::new("test.yaml"), text).unwrap_err().0;
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(
        messages[0].contains("has both body and json"),
        "{messages:#?}"
    );
}

#[test]
fn maintenance_windows_come_whole_from_the_most_specific_layer_and_an_empty_list_clears_them() {
    use webhook_exporter::schedule::MaintenanceMode;
    let text = "defaults:\n  maintenance:\n    - {schedule: '0 22 * * *', duration: 2h, timezone: Europe/Paris}\nservers:\n  erp:\n    base_url: http://127.0.0.1:1/erp\n    maintenance:\n      - {schedule: '0 1 * * *', duration: 30m, mode: mute}\n      - {schedule: '0 3 * * 0', duration: 1h}\nprobes:\n  - {name: inherits, url: 'http://127.0.0.1:1/a'}\n  - {name: from-server, server: erp, code: ABC}\n  - {name: own, server: erp, code: DEF, maintenance: [{schedule: '*/5 * * * *', duration: 1m}]}\n  - {name: none, url: 'http://127.0.0.1:1/b', maintenance: []}\n";
    let config = config::parse(Path::new("t.yaml"), text).unwrap_or_else(|e| panic!("{e}"));
    let windows = |name: &str| {
        config
            .probes
            .iter()
            .find(|p| p.name == name)
            .unwrap()
            .maintenance
            .clone()
    };
    let inherited = windows("inherits");
    assert_eq!(inherited.len(), 1);
    assert_eq!(inherited[0].zone, chrono_tz::Europe::Paris);
    assert_eq!(inherited[0].mode, MaintenanceMode::Skip, "skip by default");
    assert_eq!(inherited[0].duration, std::time::Duration::from_secs(7200));
    let from_server = windows("from-server");
    assert_eq!(
        from_server.len(),
        2,
        "the server's list replaces the defaults'"
    );
    assert_eq!(from_server[0].mode, MaintenanceMode::Mute);
    assert_eq!(from_server[1].zone, chrono_tz::UTC, "UTC by default");
    let own = windows("own");
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].source, "*/5 * * * *");
    assert!(
        windows("none").is_empty(),
        "[] clears the inherited windows"
    );
}

#[test]
fn check_config_shows_each_probes_windows_and_next_opening_and_the_next_run_after_them() {
    let (_dir, path) = common::write_config(
        "probes:\n  - name: nightly\n    url: http://127.0.0.1:1/WebHook/SECRETWEBHOOKCODE12345\n    maintenance:\n      - {schedule: '0 22 * * *', duration: 2h, timezone: Europe/Paris}\n      - {schedule: '* * * * *', duration: 2m, mode: mute}\n",
    );
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("maintenance of nightly:"), "{stdout}");
    assert!(
        stdout.contains("  0 22 * * * Europe/Paris for 2h (skip), next opening 20"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  * * * * * UTC for 2m (mute), next opening 20"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  open now, until 20"),
        "the mute window is always open: {stdout}"
    );
    assert!(!stdout.contains("SECRETWEBHOOKCODE12345"), "{stdout}");
}

#[test]
fn the_probe_subcommand_runs_inside_a_window_and_says_one_is_open() {
    let (_dir, path) = common::write_config(&format!(
        "probes:\n  - name: p\n    url: http://127.0.0.1:{}/\n    timeout: 1s\n    maintenance: [{{schedule: '* * * * *', duration: 2m}}]\n",
        common::closed_port()
    ));
    let (code, stdout, stderr) = common::run_binary(
        &["probe", "p", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 1, "the closed port fails the run: {stdout}{stderr}");
    assert!(
        stdout.contains("  maintenance   a window is open until 20"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(scheduled runs are skipped); this on-demand run went on"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict       failure (reason connect)"),
        "{stdout}"
    );
}

#[test]
fn check_config_shows_each_probes_body_size_credentials_and_maintenance_never_their_values() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "no_secret_token_file\n").unwrap();
    let path = dir.path().join("exporter.yaml");
    std::fs::write(
        &path,
        "probes:\n\
         \x20 - {name: with-json, url: 'http://127.0.0.1:1/a', method: POST, json: {evenement: {codeevt: 1102}}, basic_auth: {username: u, password: no_secret_pass}}\n\
         \x20 - {name: with-body, url: 'http://127.0.0.1:1/b', method: POST, body: no_secret_body, authorization: {credentials_file: token}}\n\
         \x20 - {name: in-url, url: 'http://u:no_secret_url@127.0.0.1:1/c'}\n\
         \x20 - name: plain\n\
         \x20   url: 'http://127.0.0.1:1/d'\n\
         \x20   maintenance: [{schedule: '0 0 29 2 *', duration: 1m, timezone: UTC}]\n\
         \x20 - name: in-window\n\
         \x20   url: 'http://127.0.0.1:1/e'\n\
         \x20   maintenance: [{schedule: '* * * * *', duration: 2m}]\n",
    )
    .unwrap();
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    let row = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{stdout}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let header = stdout
        .lines()
        .find(|l| l.starts_with("PROBE"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        header.contains("BODY CREDENTIALS MAINTENANCE URL"),
        "{header}"
    );
    assert!(
        row("with-json").contains(" 30 B json Basic - "),
        "{}",
        row("with-json")
    );
    assert!(
        row("with-body").contains(" 14 B Bearer - "),
        "{}",
        row("with-body")
    );
    assert!(
        row("in-url").contains(" - Basic (url) - "),
        "{}",
        row("in-url")
    );
    // The window of "plain" opens for one minute every four years and the one of
    // "in-window" is always open, so each row is the same whenever the test runs (a window
    // of 22:00 Paris for two hours had made this test fail every evening).
    assert!(
        row("plain").contains(" - - 1 window, next opening 20"),
        "{}",
        row("plain")
    );
    assert!(
        row("in-window").contains(" - - open until 20"),
        "{}",
        row("in-window")
    );
    assert!(
        !format!("{stdout}{stderr}").contains("no_secret"),
        "{stdout}"
    );
}
