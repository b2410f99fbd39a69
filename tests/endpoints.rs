//! The real binary against a fake Divalto server: `/metrics` values and labels read through a
//! real exposition parser, promtool's lint, the subcommands, the logs, and no secret on any
//! output surface; and the router alone on its narrow handles.

mod common;

use std::time::Duration;

use common::{Exporter, Fake, FakeDivalto, SECRET_CODE, Scrape, fake};

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
    let (status, page_json) = exporter.get("/status.json");
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
        ("status page JSON", page_json),
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

// ---------------------------------------------------------------------------------------
// Cross-site requests, basic auth, the web config and the command line.

/// A config whose probes (named `names`, codes ending `-{name}-ok`) run only when asked:
/// their cron fires once a year.
fn on_demand_config(fake: &Fake, names: &[&str]) -> String {
    let probes: String = names
        .iter()
        .map(|name| {
            format!(
                "  - {{name: {name}, server: fake, code: \"{SECRET_CODE}-{name}-ok\", schedule: \"0 0 1 1 *\", timeout: 5s}}\n"
            )
        })
        .collect();
    format!(
        "servers:\n  fake:\n    base_url: \"{}\"\nprobes:\n{probes}",
        fake.server.base_url()
    )
}

fn post(exporter: &Exporter, path: &str, headers: &[(&str, &str)]) -> common::HttpResponse {
    common::http_request(exporter.address, "POST", path, headers)
}

#[test]
fn cross_site_posts_are_refused_with_403_and_never_call_the_erp() {
    let fake = fake();
    let allowed_cases: [(&str, Vec<(&str, String)>); 4] = [
        ("curl", vec![]),
        (
            "same-origin",
            vec![("Sec-Fetch-Site", "same-origin".to_owned())],
        ),
        ("typed", vec![("Sec-Fetch-Site", "none".to_owned())]),
        ("own-origin", vec![]),
    ];
    let mut names: Vec<&str> = allowed_cases.iter().map(|(name, _)| *name).collect();
    names.push("guarded");
    let (_dir, path) = common::write_config(&on_demand_config(&fake, &names));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let own_origin = format!("http://{}", exporter.address);
    let other_port = format!("http://127.0.0.1:{}", common::closed_port());

    let refused: [Vec<(&str, &str)>; 7] = [
        vec![("Origin", "http://evil.example")],
        vec![("Origin", "null")],
        vec![("Origin", &other_port)],
        vec![("Origin", "https://127.0.0.1")],
        vec![("Sec-Fetch-Site", "cross-site")],
        vec![("Sec-Fetch-Site", "same-site")],
        vec![("Origin", &own_origin), ("Sec-Fetch-Site", "cross-site")],
    ];
    for headers in &refused {
        for path in ["/api/v1/probes/guarded/run", "/-/reload"] {
            let answer = post(&exporter, path, headers);
            assert_eq!(answer.status, 403, "{path} with {headers:?}: {answer:?}");
            let body: serde_json::Value = serde_json::from_str(&answer.body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.body));
            assert!(
                body["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("cross-site request refused"),
                "{body}"
            );
        }
    }
    assert_eq!(
        fake.server.calls("guarded-ok"),
        0,
        "a refused run called the ERP"
    );

    for (name, headers) in &allowed_cases {
        let mut headers: Vec<(&str, &str)> =
            headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if *name == "own-origin" {
            headers.push(("Origin", &own_origin));
        }
        let answer = post(&exporter, &format!("/api/v1/probes/{name}/run"), &headers);
        assert_eq!(answer.status, 200, "{name} with {headers:?}: {answer:?}");
        assert_eq!(fake.server.calls(&format!("{name}-ok")), 1, "{name}");
        assert_eq!(post(&exporter, "/-/reload", &headers).status, 200, "{name}");
    }
    // Reads stay open to any page (the policy of the page itself guards them).
    let list = common::http_request(
        exporter.address,
        "GET",
        "/api/v1/probes",
        &[("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(list.status, 200);
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// Writes `text` as `web.yml` next to the config and returns its path.
fn write_web_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("web.yml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Median wall times of `count` calls of `first` and of `second`, made alternately.
fn median_times(
    count: usize,
    mut first: impl FnMut(),
    mut second: impl FnMut(),
) -> (Duration, Duration) {
    let time = |call: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        call();
        start.elapsed()
    };
    let (mut firsts, mut seconds): (Vec<Duration>, Vec<Duration>) = (0..count)
        .map(|_| (time(&mut first), time(&mut second)))
        .unzip();
    firsts.sort();
    seconds.sort();
    (firsts[count / 2], seconds[count / 2])
}

/// Threads of process `pid` right now.
fn thread_count(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn basic_auth_refuses_passwords_over_72_bytes_and_reads_the_scheme_in_any_case() {
    let fake = fake();
    let (dir, path) = common::write_config(&on_demand_config(&fake, &["p"]));
    // bcrypt reads 72 bytes at most: a longer password must not match its first 72.
    let password = "s3cret-".repeat(11)[..72].to_owned();
    let hash = bcrypt::hash(&password, 4).unwrap();
    let web = write_web_config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    let get = |authorization: &str| {
        common::http_request(
            exporter.address,
            "GET",
            "/metrics",
            &[("Authorization", authorization)],
        )
        .status
    };
    let credentials = base64_encode(&format!("prometheus:{password}"));
    for scheme in ["Basic", "basic", "BASIC", "bAsIc"] {
        assert_eq!(get(&format!("{scheme} {credentials}")), 200, "{scheme}");
    }
    let longer = base64_encode(&format!("prometheus:{password}anything"));
    assert_eq!(get(&format!("Basic {longer}")), 401, "73+ bytes accepted");
    let wrong = base64_encode(&format!("prometheus:{}", &password[..71]));
    assert_eq!(get(&format!("Basic {wrong}")), 401);
    assert_eq!(get(&format!("Bearer {credentials}")), 401);
}

#[test]
fn an_unknown_user_takes_as_long_as_a_known_one() {
    let fake = fake();
    let (dir, path) = common::write_config(&on_demand_config(&fake, &["p"]));
    // A cheap cost: an unknown user checked against a dearer dummy hash would stand out.
    let hash = bcrypt::hash("s3cret-scrape", 4).unwrap();
    let web = write_web_config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    let try_user = |user: &str| {
        let authorization = format!("Basic {}", base64_encode(&format!("{user}:wrong")));
        let status = common::http_request(
            exporter.address,
            "GET",
            "/-/healthy",
            &[("Authorization", &authorization)],
        )
        .status;
        assert_eq!(status, 401);
    };
    try_user("nobody"); // warm up
    // Interleaved, so a load spike on the machine hits both series alike.
    let (known, unknown) = median_times(9, || try_user("prometheus"), || try_user("nobody"));
    assert!(
        unknown < known * 4 + Duration::from_millis(10),
        "unknown user: {unknown:?}, known user: {known:?}"
    );
}

#[test]
fn a_flood_of_bad_credentials_runs_bcrypt_on_a_few_threads_only() {
    let fake = fake();
    let (dir, path) = common::write_config(&on_demand_config(&fake, &["p"]));
    let hash = bcrypt::hash("s3cret-scrape", 8).unwrap();
    let web = write_web_config(
        dir.path(),
        &format!("basic_auth_users:\n  prometheus: '{hash}'\n"),
    );
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    // 32 unauthenticated requests at once: bcrypt runs on a few threads, not 32.
    let before = thread_count(exporter.pid());
    let address = exporter.address;
    let flood: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                let authorization = format!("Basic {}", base64_encode(&format!("user-{i}:wrong")));
                common::http_request(
                    address,
                    "GET",
                    "/metrics",
                    &[("Authorization", &authorization)],
                )
                .status
            })
        })
        .collect();
    let mut most = before;
    while !flood.iter().all(std::thread::JoinHandle::is_finished) {
        most = most.max(thread_count(exporter.pid()));
        std::thread::sleep(Duration::from_millis(5));
    }
    for request in flood {
        assert_eq!(request.join().unwrap(), 401);
    }
    most = most.max(thread_count(exporter.pid()));
    assert!(
        most <= before + 8,
        "threads grew from {before} to {most} under an unauthenticated flood"
    );
}

/// Writes the PKI's files next to the config; returns nothing (the web config names them).
fn write_pki(dir: &std::path::Path, pki: &common::Pki) {
    for (name, content) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server.0),
        ("server.key", &pki.server.1),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// The exporter behind the web config `web` (written next to its config).
fn exporter_with_web_config(
    fake: &Fake,
    pki: &common::Pki,
    web: &str,
) -> (tempfile::TempDir, Exporter) {
    let (dir, path) = common::write_config(&on_demand_config(fake, &["p"]));
    write_pki(dir.path(), pki);
    let web = write_web_config(dir.path(), web);
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    (dir, exporter)
}

const TLS_FILES: &str = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";

#[test]
fn an_exporter_toolkit_web_config_with_every_tls_and_http_key_works() {
    let fake = fake();
    let pki = common::Pki::generate();
    let (_dir, exporter) = exporter_with_web_config(
        &fake,
        &pki,
        &format!(
            "{TLS_FILES}  client_auth_type: NoClientCert
  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]
  curve_preferences: [X25519, CurveP256, CurveP384]
  min_version: TLS12
  max_version: TLS12
  prefer_server_cipher_suites: true
http_server_config:
  http2: false
  headers:
    Strict-Transport-Security: max-age=31536000; includeSubDomains
    X-Frame-Options: deny
    X-Content-Type-Options: nosniff
"
        ),
    );
    let answer =
        common::https_request(exporter.address, "GET", "/metrics", &[], &pki.ca, None).unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.header("strict-transport-security"),
        Some("max-age=31536000; includeSubDomains")
    );
    assert_eq!(answer.header("x-frame-options"), Some("deny"));
    // The page keeps its own, stricter policy.
    let page = common::https_request(exporter.address, "GET", "/", &[], &pki.ca, None).unwrap();
    assert_eq!(page.header("x-frame-options"), Some("deny"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
}

/// `check-config` with the web config `web` (next to a valid config): exit code and stderr.
fn check_web_config(web: &str) -> (i32, String, String) {
    let fake = fake();
    let pki = common::Pki::generate();
    let (dir, path) = common::write_config(&on_demand_config(&fake, &["p"]));
    write_pki(dir.path(), &pki);
    let web = write_web_config(dir.path(), web);
    common::run_binary(
        &[
            "check-config",
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
        None,
    )
}

#[test]
fn check_config_checks_the_web_config_and_names_the_file_and_the_key() {
    let (code, stdout, stderr) = check_web_config(&format!(
        "{TLS_FILES}  min_version: TLS13\nbasic_auth_users:\n  prometheus: '{}'\n",
        bcrypt::hash("x", 4).unwrap()
    ));
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("web.yml: valid"), "{stdout}");

    for (web, key) in [
        (
            "basic_auth_users:\n  prometheus: not-a-hash\n".to_owned(),
            "basic_auth_users.prometheus",
        ),
        (
            format!("{TLS_FILES}  max_version: TLS11\n"),
            "tls_server_config.max_version",
        ),
        (
            format!("{TLS_FILES}  min_version: TLS13\n  max_version: TLS12\n"),
            "tls_server_config.min_version",
        ),
        (
            format!("{TLS_FILES}  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA]\n"),
            "tls_server_config.cipher_suites",
        ),
        (
            format!("{TLS_FILES}  cipher_suites: [TLS_MADE_UP]\n"),
            "tls_server_config.cipher_suites",
        ),
        (
            format!("{TLS_FILES}  curve_preferences: [CurveP521]\n"),
            "tls_server_config.curve_preferences",
        ),
        (
            format!("{TLS_FILES}  client_allowed_sans: [prometheus]\n"),
            "tls_server_config.client_allowed_sans",
        ),
        (
            format!(
                "{TLS_FILES}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [prometheus]\n"
            ),
            "tls_server_config.client_allowed_sans",
        ),
        (
            format!("{TLS_FILES}  client_auth_type: Sometimes\n"),
            "tls_server_config.client_auth_type",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: me\n".to_owned(),
            "http_server_config.headers",
        ),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n".to_owned(),
            "http_server_config.headers",
        ),
        (
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: server.key\n".to_owned(),
            "tls_server_config.cert_file",
        ),
        ("rate_limit:\n  burst: 2\n".to_owned(), "rate_limit"),
    ] {
        let (code, stdout, stderr) = check_web_config(&web);
        assert_eq!(code, 1, "accepted:\n{web}\n{stdout}{stderr}");
        assert!(
            stderr.contains("web.yml") && stderr.contains(key),
            "{web}: the error does not name the file and {key}:\n{stderr}"
        );
    }
}

#[test]
fn tls_10_and_11_as_min_version_are_raised_to_tls_12_with_a_warning() {
    let (code, _, stderr) = check_web_config(&format!("{TLS_FILES}  min_version: TLS10\n"));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("tls_server_config.min_version") && stderr.contains("TLS12"),
        "{stderr}"
    );
}

/// A client certificate no CA signed.
fn self_signed_client() -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["stranger".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[test]
fn every_client_auth_type_and_client_allowed_sans_decide_who_gets_in() {
    let fake = fake();
    let pki = common::Pki::generate();
    let stranger = self_signed_client();
    let get = |exporter: &Exporter, client: Option<&(String, String)>| {
        common::https_request(
            exporter.address,
            "GET",
            "/-/healthy",
            &[],
            &pki.ca,
            client.map(|(c, k)| (c.as_str(), k.as_str())),
        )
        .map(|answer| answer.status)
        .unwrap_or(0)
    };
    let web = |rest: &str| format!("{TLS_FILES}  client_ca_file: ca.pem\n{rest}");
    // (client_auth_type and more, status without a certificate, with the stranger's, with
    // the CA-signed one whose SAN is "prometheus"); 0 = refused at the handshake.
    for (settings, none, unsigned, signed) in [
        ("  client_auth_type: RequestClientCert\n", 200, 200, 200),
        ("  client_auth_type: RequireAnyClientCert\n", 0, 200, 200),
        ("  client_auth_type: VerifyClientCertIfGiven\n", 200, 0, 200),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            0,
            0,
            200,
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [someone, prometheus]\n",
            0,
            0,
            200,
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_allowed_sans: [someone-else]\n",
            0,
            0,
            0,
        ),
    ] {
        let (_dir, exporter) = exporter_with_web_config(&fake, &pki, &web(settings));
        assert_eq!(
            get(&exporter, None),
            none,
            "{settings} without a certificate"
        );
        assert_eq!(
            get(&exporter, Some(&stranger)),
            unsigned,
            "{settings} with an unsigned certificate"
        );
        assert_eq!(
            get(&exporter, Some(&pki.client)),
            signed,
            "{settings} with a signed certificate"
        );
    }
}

/// Replaces `path` at once (as cert-manager or a Kubernetes secret update does).
fn replace_file(path: &std::path::Path, content: &str) {
    let temporary = path.with_extension("new");
    std::fs::write(&temporary, content).unwrap();
    std::fs::rename(&temporary, path).unwrap();
}

#[test]
fn a_rotated_certificate_is_served_to_new_connections_without_a_reload() {
    let fake = fake();
    let old = common::Pki::generate();
    let new = common::Pki::generate();
    let (dir, exporter) = exporter_with_web_config(&fake, &old, TLS_FILES);
    let status = |pki: &common::Pki| {
        common::https_request(exporter.address, "GET", "/-/healthy", &[], &pki.ca, None)
            .map(|answer| answer.status)
    };
    assert_eq!(status(&old), Ok(200));
    assert!(
        status(&new).is_err(),
        "the new CA already vouches for the old certificate"
    );

    // The key first: until the certificate follows, the pair does not match and the old
    // one stays in service.
    replace_file(&dir.path().join("server.key"), &new.server.1);
    assert_eq!(
        status(&old),
        Ok(200),
        "a half-rotated pair replaced the certificate"
    );
    replace_file(&dir.path().join("server.pem"), &new.server.0);

    assert_eq!(status(&new), Ok(200), "the new certificate is not served");
    assert!(status(&old).is_err(), "the old certificate is still served");
    assert!(!exporter.logs().contains("config reloaded"));
}

#[test]
fn the_listen_address_takes_a_host_name_or_only_a_port() {
    let fake = fake();
    let (_dir, path) = common::write_config(&on_demand_config(&fake, &["p"]));
    for host in ["localhost", ""] {
        let port = common::closed_port();
        let mut child = std::process::Command::new(common::binary())
            .arg(format!("--config.file={}", path.display()))
            .arg(format!("--web.listen-address={host}:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let served = loop {
            let candidates: [std::net::SocketAddr; 2] = [
                ([127, 0, 0, 1], port).into(),
                (std::net::Ipv6Addr::LOCALHOST, port).into(),
            ];
            if let Some(address) = candidates
                .into_iter()
                .find(|a| std::net::TcpStream::connect(a).is_ok())
            {
                break Some(common::http_get(address, "/-/healthy").0);
            }
            if child.try_wait().unwrap().is_some() || std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            served,
            Some(200),
            "--web.listen-address={host}:{port}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn probe_without_a_name_or_with_a_bad_flag_exits_2_and_lists_the_probes() {
    let fake = fake();
    let (_dir, path) = common::write_config(&on_demand_config(&fake, &["first", "second"]));
    let flag = format!("--config.file={}", path.display());
    for args in [
        vec!["probe", &flag],
        vec!["probe", "first", "--no-such-flag", &flag],
        vec!["probe", "--config.file", path.to_str().unwrap()],
    ] {
        let (code, stdout, stderr) = common::run_binary(&args, &[], None);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("known probes: first, second"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(fake.server.calls("ok"), 0);
}

/// The protocol the exporter picks by ALPN when a client offers HTTP/2 and HTTP/1.1.
fn negotiated_protocol(address: std::net::SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut roots = rustls::RootCertStore::empty();
    for cert in common::pem_certs(ca_pem) {
        roots.add(cert).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut connection =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    let mut tcp = std::net::TcpStream::connect(address).unwrap();
    while connection.is_handshaking() {
        connection.complete_io(&mut tcp).unwrap();
    }
    let protocol = connection.alpn_protocol().map(<[u8]>::to_vec);
    connection.send_close_notify();
    let _ = connection.complete_io(&mut tcp);
    let _ = tcp.flush();
    protocol
}

#[test]
fn http2_is_offered_over_tls_unless_the_web_config_turns_it_off() {
    let fake = fake();
    let pki = common::Pki::generate();
    let (_dir, exporter) = exporter_with_web_config(&fake, &pki, TLS_FILES);
    assert_eq!(
        negotiated_protocol(exporter.address, &pki.ca).as_deref(),
        Some(&b"h2"[..])
    );
    let (_dir, exporter) = exporter_with_web_config(
        &fake,
        &pki,
        &format!("{TLS_FILES}http_server_config:\n  http2: false\n"),
    );
    assert_eq!(
        negotiated_protocol(exporter.address, &pki.ca).as_deref(),
        Some(&b"http/1.1"[..])
    );
}

/// The router on its narrow handles alone: a scheduler with a stub runner for the read model
/// and run-now, a stub reload, no App and no binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_serves_from_its_handles_without_the_app() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use webhook_exporter::config::{self, ProbeSpec};
    use webhook_exporter::metrics::Metrics;
    use webhook_exporter::probe::Outcome;
    use webhook_exporter::scheduler::{Clock, Runner, Scheduler};
    use webhook_exporter::server::{self, Handles};
    use webhook_exporter::state::ResultView;

    let config = config::parse(
        std::path::Path::new("test.yaml"),
        "run_now_min_gap: 0s\nprobes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 5s}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runner: Runner = Arc::new(|_spec: Arc<ProbeSpec>| {
        Box::pin(async {
            let now = std::time::SystemTime::now();
            Outcome {
                run_id: webhook_exporter::probe::RunId::next(),
                success: true,
                reason: None,
                message: "stub OK".into(),
                http_status: Some(200),
                response_code: Some("0".into()),
                duration: Duration::from_millis(3),
                phases: Default::default(),
                attempts: 1,
                redirects: 0,
                tls: None,
                http_version: None,
                started_at: now,
                finished_at: now,
            }
        })
    });
    let metrics = Arc::new(Metrics::new().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let scheduler = Arc::new(Scheduler::start(
        &config,
        metrics.clone(),
        runner,
        Clock::System,
        shutdown.child_token(),
    ));
    let reloads = Arc::new(AtomicUsize::new(0));
    let counted = reloads.clone();
    let on_demand = scheduler.clone();
    let handles = Handles {
        metrics: metrics.clone(),
        probes: scheduler.state(),
        reload: Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok("0 added, 0 removed, 0 changed, 1 unchanged".to_owned()) })
        }),
        run_now: Arc::new(move |name| {
            let scheduler = on_demand.clone();
            Box::pin(async move {
                let outcome = scheduler.run_now(&name).await?;
                Ok(ResultView::from(&outcome))
            })
        }),
        auth: Default::default(),
        placement: Default::default(),
        response_headers: Default::default(),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let served = tokio::spawn(server::serve(
        listener,
        server::router(handles),
        None,
        shutdown.clone(),
    ));
    let request = move |method: &'static str, path: &'static str| {
        tokio::task::spawn_blocking(move || common::http_request(address, method, path, &[]))
    };

    let before = request("GET", "/api/v1/probes/p").await.unwrap();
    assert_eq!(before.status, 200, "{}", before.body);
    let probe: serde_json::Value = serde_json::from_str(&before.body).unwrap();
    assert_eq!(probe["name"], "p");
    assert!(probe["last_result"].is_null(), "{probe}");

    let run = request("POST", "/api/v1/probes/p/run").await.unwrap();
    assert_eq!(run.status, 200, "{}", run.body);
    let result: serde_json::Value = serde_json::from_str(&run.body).unwrap();
    assert_eq!(
        (&result["success"], &result["message"]),
        (&serde_json::json!(true), &serde_json::json!("stub OK"))
    );

    let after = request("GET", "/api/v1/probes?history=5").await.unwrap();
    let list: serde_json::Value = serde_json::from_str(&after.body).unwrap();
    assert_eq!(list["probes"][0]["last_result"]["message"], "stub OK");
    assert_eq!(list["probes"][0]["history"].as_array().unwrap().len(), 1);

    let scrape = Scrape::parse(&request("GET", "/metrics").await.unwrap().body);
    assert_eq!(
        scrape.value(
            "webhook_probe_runs_total",
            &[("probe", "p"), ("result", "success")]
        ),
        Some(1.0)
    );

    let page = request("GET", "/").await.unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("stub OK"), "{}", page.body);
    // The script's JSON is the page's own view model: the same strings, formatted once.
    let json = request("GET", "/status.json").await.unwrap();
    assert_eq!(json.status, 200, "{}", json.body);
    let view: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    let row = &view["healthy"][0]["probes"][0];
    assert_eq!(
        row["status"],
        serde_json::json!({"key": "up", "text": "up"})
    );
    assert_eq!(row["last"]["duration"], "3 ms");
    let duration_cell = "<td class=\"c-duration\" data-label=\"Duration\">3 ms</td>";
    assert!(page.body.contains(duration_cell), "{}", page.body);
    assert_eq!(row["chart"]["bars"].as_array().unwrap().len(), 1);

    let unknown = request("POST", "/api/v1/probes/nope/run").await.unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    let reload = request("POST", "/-/reload").await.unwrap();
    assert_eq!(
        (reload.status, reload.body.as_str()),
        (
            200,
            "config reloaded: 0 added, 0 removed, 0 changed, 1 unchanged\n"
        )
    );
    assert_eq!(reloads.load(Ordering::SeqCst), 1);

    shutdown.cancel();
    served.await.unwrap().unwrap();
    scheduler.shutdown().await;
}

#[test]
fn the_next_run_gauge_is_when_the_fake_sees_the_next_call() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let (_dir, path) = common::write_config(&format!(
        "servers:\n  fake: {{base_url: '{}'}}\nprobes:\n  - {{name: soon, server: fake, code: '{SECRET_CODE}-ok', interval: 2s, timeout: 1s}}\n",
        fake.base_url()
    ));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let scrape = exporter.wait_for(Duration::from_secs(5), "a planned next run", |s| {
        s.value(
            "webhook_probe_next_run_timestamp_seconds",
            &[("probe", "soon")],
        )
        .is_some()
    });
    drop(scrape);
    // A scrape with no call around it, so the planned run it shows is the next call.
    let (planned, before) = loop {
        let before = fake.calls("-ok");
        let planned = exporter
            .scrape()
            .value(
                "webhook_probe_next_run_timestamp_seconds",
                &[("probe", "soon")],
            )
            .unwrap();
        if fake.calls("-ok") == before {
            break (planned, before);
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fake.calls("-ok") == before {
        assert!(std::time::Instant::now() < deadline, "no call came");
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen = fake
        .last_call_at()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (seen - planned).abs() < 0.1,
        "planned {planned}, the fake saw the call at {seen}"
    );
}

/// Each thread of process `pid`: its name and its niceness (`/proc/PID/task/TID/stat`).
#[cfg(target_os = "linux")]
fn thread_niceness(pid: u32) -> Vec<(String, i64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|task| {
            let task = task.ok()?.path();
            let name = std::fs::read_to_string(task.join("comm")).ok()?;
            let stat = std::fs::read_to_string(task.join("stat")).ok()?;
            // After the name in parentheses: state is the first field, niceness the 17th.
            let niceness = stat.rsplit_once(')')?.1.split_whitespace().nth(16)?;
            Some((name.trim().to_owned(), niceness.parse().ok()?))
        })
        .collect()
}

/// A large answer (the status page) is built on a thread at niceness 10, so that when the
/// cores are busy the threads answering `/-/healthy` and scrapes, and the probes' threads,
/// run first; those keep the default niceness.
#[cfg(target_os = "linux")]
#[test]
fn large_answers_are_built_at_a_lower_cpu_priority_than_probes_and_health_checks() {
    let targets = targets();
    let (_dir, path) = common::write_config(&config_text(&targets));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let (status, _) = exporter.get("/");
    assert_eq!(status, 200);
    let threads = thread_niceness(exporter.pid());
    assert!(
        threads.iter().any(|(_, niceness)| *niceness == 10),
        "no thread at niceness 10 after building the page: {threads:?}"
    );
    let probes: Vec<&(String, i64)> = threads
        .iter()
        .filter(|(name, _)| name.starts_with("probes-"))
        .collect();
    assert!(!probes.is_empty(), "{threads:?}");
    assert!(
        probes.iter().all(|(_, niceness)| *niceness == 0),
        "{threads:?}"
    );
    let (status, body) = exporter.get("/-/healthy");
    assert_eq!((status, body.as_str()), (200, "Healthy\n"));
}
