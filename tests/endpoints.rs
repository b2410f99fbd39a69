//! The real binary against a fake Divalto server: `/metrics` values and labels read through a
//! real exposition parser, promtool's lint, the subcommands, the logs, and no secret on any
//! output surface.

mod common;

use std::time::Duration;

use common::{Exporter, FakeDivalto, SECRET_CODE, Scrape};

/// Every reason label value of the contract.
const REASONS: [&str; 10] = [
    "dns",
    "connect",
    "tls",
    "timeout",
    "http_status",
    "webhook_error",
    "body_mismatch",
    "body_too_large",
    "invalid_response",
    "other",
];

/// Servers for a whole test; they run on their own runtime while the test thread blocks.
struct Targets {
    _runtime: tokio::runtime::Runtime,
    fake: FakeDivalto,
    silent: std::net::SocketAddr,
    garbage: std::net::SocketAddr,
}

fn targets() -> Targets {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (fake, silent, garbage) = runtime.block_on(async {
        (
            FakeDivalto::start().await,
            common::silent_server().await,
            common::raw_server(b"\x00\x01garbage\r\n\r\n").await,
        )
    });
    Targets {
        _runtime: runtime,
        fake,
        silent,
        garbage,
    }
}

/// A config with one probe per outcome the tests look at.
fn config_text(targets: &Targets) -> String {
    let closed = common::closed_port();
    format!(
        r#"
defaults:
  interval: 2s
  timeout: 1s
  labels: {{team: erp}}
servers:
  fake:
    base_url: "{base}"
    max_concurrent: 8
probes:
  - {{name: refresh-customer, server: fake, code: "{SECRET_CODE}-ok", params: {{dos: "998"}}, labels: {{dossier: "998"}}}}
  - {{name: body-code-400, server: fake, code: "{SECRET_CODE}-body400"}}
  - {{name: status-400, server: fake, code: "{SECRET_CODE}-http400"}}
  - {{name: oversized, server: fake, code: "{SECRET_CODE}-big", max_body_bytes: 64KiB}}
  - {{name: closed-port, url: "http://127.0.0.1:{closed}/health"}}
  - {{name: unknown-host, url: "http://divalto-test.invalid/health"}}
  - {{name: silent, url: "http://{silent}/"}}
  - {{name: garbage, url: "http://{garbage}/"}}
"#,
        base = targets.fake.base_url(),
        silent = targets.silent,
        garbage = targets.garbage,
    )
}

const PROBES: [(&str, Option<&str>); 8] = [
    ("refresh-customer", None),
    ("body-code-400", Some("webhook_error")),
    ("status-400", Some("http_status")),
    ("oversized", Some("body_too_large")),
    ("closed-port", Some("connect")),
    ("unknown-host", Some("dns")),
    ("silent", Some("timeout")),
    ("garbage", Some("invalid_response")),
];

fn all_ran(scrape: &Scrape) -> bool {
    PROBES.iter().all(|(name, _)| {
        let runs: f64 = ["success", "failure"]
            .iter()
            .filter_map(|result| {
                scrape.value(
                    "webhook_probe_runs_total",
                    &[("probe", name), ("result", result)],
                )
            })
            .sum();
        runs >= 1.0
    })
}

#[test]
fn metrics_report_each_probe_with_its_reason_labels_and_values() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);

    // Before any run: every reason series exists at 0.
    let first = exporter.scrape();
    for reason in REASONS {
        assert!(
            first
                .value(
                    "webhook_probe_failures_total",
                    &[("probe", "closed-port"), ("reason", reason)]
                )
                .is_some(),
            "reason {reason} missing at start"
        );
    }

    let scrape = exporter.wait_for(Duration::from_secs(15), "every probe to run", all_ran);
    for (name, reason) in PROBES {
        let success = scrape.value("webhook_probe_success", &[("probe", name)]);
        match reason {
            None => assert_eq!(success, Some(1.0), "{name}"),
            Some(reason) => {
                assert_eq!(success, Some(0.0), "{name}");
                let count = scrape
                    .value(
                        "webhook_probe_failures_total",
                        &[("probe", name), ("reason", reason)],
                    )
                    .unwrap();
                assert!(count >= 1.0, "{name}: {reason} = {count}");
                for other in REASONS.iter().filter(|r| **r != reason) {
                    assert_eq!(
                        scrape.value(
                            "webhook_probe_failures_total",
                            &[("probe", name), ("reason", other)]
                        ),
                        Some(0.0),
                        "{name}: {other}"
                    );
                }
                assert!(
                    scrape
                        .value("webhook_probe_consecutive_failures", &[("probe", name)])
                        .unwrap()
                        >= 1.0,
                    "{name}"
                );
            }
        }
        // Static labels are on every series of the probe.
        for set in scrape
            .label_sets("webhook_probe_runs_total")
            .iter()
            .filter(|s| s["probe"] == name)
        {
            assert_eq!(
                set.get("team").map(String::as_str),
                Some("erp"),
                "{name}: {set:?}"
            );
        }
    }
    let ok = [
        ("probe", "refresh-customer"),
        ("dossier", "998"),
        ("team", "erp"),
    ];
    assert_eq!(
        scrape.value("webhook_probe_http_status_code", &ok),
        Some(200.0)
    );
    assert_eq!(scrape.value("webhook_probe_response_code", &ok), Some(0.0));
    assert!(
        scrape
            .value("webhook_probe_last_success_timestamp_seconds", &ok)
            .unwrap()
            > 1.7e9
    );
    assert!(
        scrape
            .histogram_count("webhook_probe_duration_seconds", &ok)
            .unwrap()
            >= 1
    );
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        assert!(
            scrape
                .value(
                    "webhook_probe_phase_duration_seconds",
                    &[("probe", "refresh-customer"), ("phase", phase)]
                )
                .is_some(),
            "{phase}"
        );
    }
    assert_eq!(
        scrape.value("webhook_probe_response_code", &[("probe", "body-code-400")]),
        Some(400.0)
    );
    assert_eq!(
        scrape.value("webhook_probe_http_status_code", &[("probe", "status-400")]),
        Some(400.0)
    );
    assert_eq!(
        scrape.value(
            "webhook_probe_http_status_code",
            &[("probe", "closed-port")]
        ),
        Some(0.0)
    );
    assert_eq!(
        scrape.value("webhook_probe_response_code", &[("probe", "closed-port")]),
        None,
        "absent when no code"
    );

    let info = scrape.label_sets("webhook_probe_info");
    let info = info
        .iter()
        .find(|s| s["probe"] == "refresh-customer")
        .unwrap();
    assert_eq!(
        info["url"],
        format!(
            "{}/api/v1/WebHook/MONW…3-ok?dos=998",
            targets.fake.base_url()
        )
    );
    assert_eq!(info["method"], "GET");
    assert_eq!(info["schedule"], "every 2s");

    assert_eq!(
        scrape.value("webhook_exporter_probes_configured", &[]),
        Some(8.0)
    );
    assert_eq!(
        scrape.value("webhook_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    assert!(
        scrape
            .histogram_count("webhook_exporter_schedule_lag_seconds", &[])
            .unwrap()
            >= 8
    );
    assert!(scrape.value("process_resident_memory_bytes", &[]).unwrap() > 0.0);
    let build = scrape.label_sets("webhook_exporter_build_info");
    assert_eq!(build[0]["version"], env!("CARGO_PKG_VERSION"));

    // The exposition passes Prometheus' own lint.
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool must be installed (the test command installs Debian's prometheus package)",
        );
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), scrape.text.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn no_output_surface_shows_a_webhook_code() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let config_flag = format!("--config.file={}", path.display());
    let exporter = Exporter::start(&[&config_flag, "--log.level=debug"], &[]);
    let scrape = exporter.wait_for(Duration::from_secs(15), "every probe to run", all_ran);
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    let (_, check) = (
        0,
        common::run_binary(&["check-config", &config_flag], &[], None),
    );
    let probe_ok = common::run_binary(&["probe", "refresh-customer", &config_flag], &[], None);
    let probe_failed = common::run_binary(&["probe", "status-400", &config_flag], &[], None);

    let surfaces = [
        ("metrics", scrape.text.clone()),
        ("logs", exporter.logs()),
        ("status page", page.clone()),
        ("check-config", format!("{}{}", check.1, check.2)),
        ("probe ok", format!("{}{}", probe_ok.1, probe_ok.2)),
        (
            "probe failed",
            format!("{}{}", probe_failed.1, probe_failed.2),
        ),
    ];
    let middle = &SECRET_CODE[4..SECRET_CODE.len() - 4];
    for (surface, text) in &surfaces {
        assert!(!text.is_empty(), "{surface} is empty");
        assert!(
            !text.contains(middle),
            "{surface} leaks the webhook code:\n{text}"
        );
        assert!(
            text.contains("MONW…"),
            "{surface} does not show the redacted code:\n{text}"
        );
    }
}

#[test]
fn a_failed_run_logs_at_warn_with_probe_reason_and_message_in_json() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            "--log.format=json",
        ],
        &[],
    );
    exporter.wait_for(Duration::from_secs(15), "every probe to run", all_ran);
    std::thread::sleep(Duration::from_millis(200));
    let logs = exporter.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let failure = lines
        .iter()
        .find(|l| l["probe"] == "body-code-400")
        .unwrap_or_else(|| panic!("no log line for body-code-400:\n{logs}"));
    assert_eq!(failure["level"], "WARN");
    assert_eq!(failure["reason"], "webhook_error");
    assert_eq!(
        failure["message"],
        "Divalto code 400: Dossier 998 verrouillé"
    );
}

#[test]
fn logfmt_lines_carry_probe_reason_and_message() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    exporter.wait_for(Duration::from_secs(15), "every probe to run", all_ran);
    std::thread::sleep(Duration::from_millis(200));
    let logs = exporter.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("probe=status-400"))
        .unwrap_or_else(|| panic!("{logs}"));
    assert!(line.starts_with("ts="), "{line}");
    assert!(line.contains(" level=warn "), "{line}");
    assert!(line.contains(" reason=http_status"), "{line}");
    assert!(
        line.contains("msg=\"HTTP 400 Bad Request (expected 200): Paramètre dos manquant\""),
        "{line}"
    );
}

#[test]
fn the_probe_subcommand_prints_a_trace_and_exits_by_verdict() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let flag = format!("--config.file={}", path.display());

    let (code, stdout, _) = common::run_binary(&["probe", "refresh-customer", &flag], &[], None);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("  HTTP status   200"), "{stdout}");
    assert!(stdout.contains("  Divalto code  0"), "{stdout}");
    assert!(
        stdout.contains("  message       Client C0000001 rafraîchi"),
        "{stdout}"
    );
    assert!(stdout.contains("  verdict       success"), "{stdout}");

    let (code, stdout, _) = common::run_binary(&["probe", "body-code-400", &flag], &[], None);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("  verdict       failure (reason webhook_error)"),
        "{stdout}"
    );

    let (code, _, stderr) = common::run_binary(&["probe", "nope", &flag], &[], None);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown probe \"nope\"; known probes: refresh-customer, body-code-400"),
        "{stderr}"
    );
}

#[test]
fn health_and_readiness_answer() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    assert_eq!(exporter.get("/-/healthy").0, 200);
    assert_eq!(exporter.get("/-/ready").0, 200);
    assert_eq!(exporter.get("/no-such-page").0, 404);
}

#[test]
fn the_demo_probes_its_simulated_divalto_server() {
    let exporter = Exporter::start(&["demo"], &[]);
    let scrape = exporter.wait_for(Duration::from_secs(20), "the demo probes to run", |s| {
        s.value("webhook_probe_success", &[("probe", "refresh-customer")]) == Some(1.0)
            && s.value(
                "webhook_probe_failures_total",
                &[
                    ("probe", "export-invoices-bad-dossier"),
                    ("reason", "http_status"),
                ],
            )
            .unwrap_or(0.0)
                >= 1.0
            && s.value("webhook_probe_success", &[("probe", "ping-plain-text")]) == Some(1.0)
    });
    assert_eq!(
        scrape.value("webhook_exporter_probes_configured", &[]),
        Some(6.0)
    );
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(
        page.contains("refresh-customer") && page.contains("Dossier 999 inconnu"),
        "{page}"
    );
    assert!(
        exporter.logs().contains("status page  http://"),
        "{}",
        exporter.logs()
    );
}
