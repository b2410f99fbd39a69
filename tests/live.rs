//! Live operations on the real binary: reload (HTTP and SIGHUP; good, bad, good), runs in
//! flight across a reload, graceful shutdown, the JSON API, TLS, mutual TLS and basic auth,
//! and bounded memory across many reloads.

mod common;

use std::time::{Duration, Instant};

use common::{Exporter, Fake, SECRET_CODE, Scrape, fake};

fn config(fake: &Fake, probes: &[&str]) -> String {
    let mut text = format!(
        "servers:\n  fake: {{base_url: \"{}\"}}\nprobes:\n",
        fake.server.base_url()
    );
    for probe in probes {
        text.push_str(&format!("  - {probe}\n"));
    }
    text
}

fn runs(scrape: &Scrape, probe: &str) -> f64 {
    ["success", "failure"]
        .iter()
        .filter_map(|r| {
            scrape.value(
                "webhook_probe_runs_total",
                &[("probe", probe), ("result", r)],
            )
        })
        .sum()
}

fn post(exporter: &Exporter, path: &str) -> common::HttpResponse {
    common::http_request(exporter.address, "POST", path, &[])
}

#[test]
fn reloads_apply_good_configs_refuse_bad_ones_and_keep_unchanged_probes() {
    let fake = fake();
    let kept = format!(
        "{{name: kept, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1s, timeout: 500ms}}"
    );
    let removed = format!(
        "{{name: removed, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1s, timeout: 500ms}}"
    );
    let added = format!(
        "{{name: added, server: fake, code: \"{SECRET_CODE}-body400\", interval: 1s, timeout: 500ms}}"
    );
    let (_dir, path) = common::write_config(&config(&fake, &[&kept, &removed]));
    let mut exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let before = exporter.wait_for(Duration::from_secs(10), "two runs of each probe", |s| {
        runs(s, "kept") >= 2.0 && runs(s, "removed") >= 1.0
    });
    let kept_runs = runs(&before, "kept");

    // Good reload over HTTP: one added, one removed, one unchanged.
    std::fs::write(&path, config(&fake, &[&kept, &added])).unwrap();
    let answer = post(&exporter, "/-/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        "config reloaded: 1 added, 1 removed, 0 changed, 1 unchanged\n"
    );
    let after = exporter.scrape();
    assert!(
        runs(&after, "kept") >= kept_runs,
        "the kept probe's counters were reset"
    );
    assert!(
        after
            .label_sets("webhook_probe_runs_total")
            .iter()
            .all(|s| s["probe"] != "removed"),
        "removed probe still exported"
    );
    assert!(
        after
            .label_sets("webhook_probe_info")
            .iter()
            .all(|s| s["probe"] != "removed")
    );
    assert_eq!(
        after.value(
            "webhook_probe_failures_total",
            &[("probe", "added"), ("reason", "webhook_error")]
        ),
        Some(0.0)
    );
    assert_eq!(
        after.value("webhook_exporter_probes_configured", &[]),
        Some(2.0)
    );
    assert_eq!(
        after.value("webhook_exporter_config_last_reload_successful", &[]),
        Some(1.0)
    );
    let (_, api) = exporter.get("/api/v1/probes/removed");
    assert!(api.contains("unknown probe"), "{api}");

    // Bad reload: refused with the position, the running config goes on.
    std::fs::write(
        &path,
        config(
            &fake,
            &[&kept, &added.replace("interval: 1s", "intervall: 1s")],
        ),
    )
    .unwrap();
    let answer = post(&exporter, "/-/reload");
    assert_eq!(answer.status, 500);
    assert!(
        answer
            .body
            .contains(&format!("failed to reload config: {}:5:", path.display())),
        "{}",
        answer.body
    );
    assert!(
        answer.body.contains("unknown field `intervall`"),
        "{}",
        answer.body
    );
    let refused = exporter.scrape();
    assert_eq!(
        refused.value("webhook_exporter_config_last_reload_successful", &[]),
        Some(0.0)
    );
    let kept_now = runs(&refused, "kept");
    exporter.wait_for(Duration::from_secs(5), "the running config to go on", |s| {
        runs(s, "kept") > kept_now && runs(s, "added") >= 1.0
    });
    assert!(
        exporter.logs().contains("config reload refused"),
        "{}",
        exporter.logs()
    );

    // Good reload by SIGHUP: `kept` changes (new timeout), so it starts fresh.
    std::fs::write(
        &path,
        config(
            &fake,
            &[&kept.replace("timeout: 500ms", "timeout: 800ms"), &added],
        ),
    )
    .unwrap();
    let before_hup = runs(&exporter.scrape(), "kept");
    std::process::Command::new("kill")
        .args(["-HUP", &exporter.pid().to_string()])
        .status()
        .unwrap();
    let fresh = exporter.wait_for(Duration::from_secs(5), "the SIGHUP reload", |s| {
        s.value("webhook_exporter_config_last_reload_successful", &[]) == Some(1.0)
    });
    assert!(
        runs(&fresh, "kept") < before_hup,
        "a changed probe starts fresh ({} >= {before_hup})",
        runs(&fresh, "kept")
    );
    assert!(
        exporter.logs().contains("config reloaded"),
        "{}",
        exporter.logs()
    );
    assert_eq!(exporter.stop("TERM", Duration::from_secs(5)), Some(0));
}

#[test]
fn the_objective_is_exported_as_a_ratio_and_goes_away_when_a_reload_removes_it() {
    // Arrange: one probe with an objective (and a static label, which the series carries),
    // one without.
    let fake = fake();
    let with = |objective: &str| {
        format!(
            "{{name: slo, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1h, labels: {{dossier: \"998\"}}{objective}}}"
        )
    };
    let without =
        format!("{{name: plain, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1h}}");
    let (_dir, path) =
        common::write_config(&config(&fake, &[&with(", objective: 99.5%"), &without]));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);

    // Act, Assert: the ratio is there from the start, before any run.
    let scrape = exporter.scrape();
    assert_eq!(
        scrape.value(
            "webhook_probe_objective_ratio",
            &[("probe", "slo"), ("dossier", "998")]
        ),
        Some(0.995),
        "{}",
        scrape.text
    );
    let probes: Vec<String> = scrape
        .label_sets("webhook_probe_objective_ratio")
        .iter()
        .map(|labels| labels["probe"].clone())
        .collect();
    assert_eq!(
        probes,
        vec!["slo".to_owned()],
        "absent without an objective"
    );

    // A reload that changes it, then one that removes it.
    std::fs::write(
        &path,
        config(&fake, &[&with(", objective: 99.9%"), &without]),
    )
    .unwrap();
    let answer = post(&exporter, "/-/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let scrape = exporter.scrape();
    assert_eq!(
        scrape.value("webhook_probe_objective_ratio", &[("probe", "slo")]),
        Some(0.999),
        "{}",
        scrape.text
    );
    std::fs::write(&path, config(&fake, &[&with(""), &without])).unwrap();
    let answer = post(&exporter, "/-/reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    let scrape = exporter.scrape();
    assert!(
        scrape
            .label_sets("webhook_probe_objective_ratio")
            .is_empty(),
        "{}",
        scrape.text
    );
    assert!(
        scrape
            .label_sets("webhook_probe_info")
            .iter()
            .any(|labels| labels["probe"] == "slo"),
        "the probe itself stays"
    );
}

#[test]
fn a_run_in_flight_during_a_reload_completes_and_is_recorded_or_dropped() {
    let fake = fake();
    let slow = |name: &str| {
        format!(
            "{{name: {name}, server: fake, code: \"{SECRET_CODE}-{name}-sleep2s\", interval: 5s, timeout: 3s}}"
        )
    };
    let (_dir, path) = common::write_config(&config(&fake, &[&slow("stays"), &slow("goes")]));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    exporter.wait_for(Duration::from_secs(10), "both slow runs in flight", |s| {
        s.value("webhook_exporter_probes_in_flight", &[]) == Some(2.0)
    });
    std::fs::write(&path, config(&fake, &[&slow("stays")])).unwrap();
    assert_eq!(post(&exporter, "/-/reload").status, 200);
    let done = exporter.wait_for(
        Duration::from_secs(5),
        "the in-flight runs to finish",
        |s| s.value("webhook_exporter_probes_in_flight", &[]) == Some(0.0),
    );
    assert_eq!(
        done.value(
            "webhook_probe_runs_total",
            &[("probe", "stays"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert!(
        done.label_sets("webhook_probe_runs_total")
            .iter()
            .all(|s| s["probe"] != "goes"),
        "a removed probe came back"
    );
    let (_, api) = exporter.get("/api/v1/probes/stays");
    let api: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(api["last_result"]["message"], "OK after 2 s");
    assert_eq!(exporter.get("/-/healthy").0, 200);
}

#[test]
fn sigterm_waits_for_the_run_in_flight_then_exits_zero() {
    let fake = fake();
    let slow = format!(
        "{{name: slow, server: fake, code: \"{SECRET_CODE}-sleep2s\", interval: 10s, timeout: 5s}}"
    );
    let (_dir, path) = common::write_config(&config(&fake, &[&slow]));
    let mut exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            "--log.level=debug",
        ],
        &[],
    );
    exporter.wait_for(Duration::from_secs(15), "the slow run", |s| {
        s.value("webhook_exporter_probes_in_flight", &[]) == Some(1.0)
    });
    let signalled = Instant::now();
    let code = exporter.stop("TERM", Duration::from_secs(6));
    let waited = signalled.elapsed();
    assert_eq!(code, Some(0), "{}", exporter.logs());
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(fake.server.calls("sleep2s"), 1);
    // The run in flight was completed and recorded before the exit: its result is logged
    // (only a run that ends logs one), before the last line.
    let logs = exporter.logs();
    let result = logs
        .lines()
        .position(|l| l.contains("probe=slow") && l.contains("probe succeeded"))
        .unwrap_or_else(|| panic!("no result of the run in flight:\n{logs}"));
    let stopped = logs
        .lines()
        .position(|l| l.contains("webhook-exporter stopped"))
        .unwrap_or_else(|| panic!("no clean stop:\n{logs}"));
    assert!(result < stopped, "{logs}");
}

#[test]
fn after_sigterm_no_run_waiting_for_a_server_slot_starts() {
    let fake = fake();
    // One run at a time against the server; four probes wanting 2 s each every 3 s keep a
    // queue of runs waiting for the slot.
    let mut text = format!(
        "servers:\n  fake: {{base_url: \"{}\", max_concurrent: 1}}\nprobes:\n",
        fake.server.base_url()
    );
    for i in 0..4 {
        text.push_str(&format!(
            "  - {{name: w{i}, server: fake, code: \"{SECRET_CODE}-w{i}-sleep2s\", interval: 3s, timeout: 2500ms}}\n"
        ));
    }
    let (_dir, path) = common::write_config(&text);
    let mut exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    wait_for_api(&exporter, "one run going and two waiting", |probes| {
        probes.iter().filter(|p| p["running"] == true).count() >= 3
    });
    // Signal just after a run has reached the fake (it has 2 s to go), so no other run can
    // legitimately start between the count and the signal.
    let seen = fake.server.calls("sleep2s");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fake.server.calls("sleep2s") == seen {
        assert!(Instant::now() < deadline, "no run started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let at_signal = fake.server.calls("sleep2s");
    let code = exporter.stop("TERM", Duration::from_secs(15));
    assert_eq!(code, Some(0), "{}", exporter.logs());
    assert_eq!(
        fake.server.calls("sleep2s"),
        at_signal,
        "runs waiting for the slot called the ERP after SIGTERM"
    );
}

/// Polls `GET /api/v1/probes` until `check` holds for its `probes` (at most 15 s).
fn wait_for_api(exporter: &Exporter, what: &str, check: impl Fn(&[serde_json::Value]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = exporter.get("/api/v1/probes");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        if check(list["probes"].as_array().unwrap()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_signal_exits_at_once() {
    let fake = fake();
    let slow = format!(
        "{{name: slow, server: fake, code: \"{SECRET_CODE}-sleep2s\", interval: 10s, timeout: 5s}}"
    );
    let (_dir, path) = common::write_config(&config(&fake, &[&slow]));
    let mut exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    exporter.wait_for(Duration::from_secs(15), "the slow run", |s| {
        s.value("webhook_exporter_probes_in_flight", &[]) == Some(1.0)
    });
    std::process::Command::new("kill")
        .args(["-TERM", &exporter.pid().to_string()])
        .status()
        .unwrap();
    // The first signal is handled once the exporter says it is shutting down.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exporter.logs().contains("shutting down") {
        assert!(Instant::now() < deadline, "{}", exporter.logs());
        std::thread::sleep(Duration::from_millis(10));
    }
    let signalled = Instant::now();
    let code = exporter.stop("TERM", Duration::from_secs(5));
    assert_eq!(code, Some(1));
    assert!(
        signalled.elapsed() < Duration::from_millis(1000),
        "{:?}",
        signalled.elapsed()
    );
}

#[test]
fn the_api_lists_shows_and_runs_configured_probes_only() {
    let fake = fake();
    let ok = format!(
        "{{name: refresh-customer, server: fake, code: \"{SECRET_CODE}-ok\", params: {{dos: \"998\"}}, interval: 1h, timeout: 5s}}"
    );
    let slow = format!(
        "{{name: slow, server: fake, code: \"{SECRET_CODE}-sleep2s\", interval: 1h, timeout: 5s}}"
    );
    // Four on-demand runs in a row: no minimum gap between them.
    let (_dir, path) = common::write_config(&format!(
        "history_size: 3\nrun_now_min_gap: 0s\n{}",
        config(&fake, &[&ok, &slow])
    ));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);

    // Run now: answers the result object.
    for _ in 0..4 {
        let answer = post(&exporter, "/api/v1/probes/refresh-customer/run");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let result: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(result["success"], true);
        assert_eq!(result["reason"], serde_json::Value::Null);
        assert_eq!(result["message"], "Client C0000001 rafraîchi");
        assert_eq!(result["http_status"], 200);
        assert_eq!(result["response_code"], "0");
        assert_eq!(result["attempts"], 1);
        assert!(result["duration_seconds"].as_f64().unwrap() > 0.0);
        assert!(result["phases"]["processing"].as_f64().is_some());
        assert!(result["started_at"].as_str().unwrap().ends_with('Z'));
        assert!(result["finished_at"].as_str().is_some());
    }

    let (status, list) = exporter.get("/api/v1/probes?history=100");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let probe = list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "refresh-customer")
        .unwrap();
    assert_eq!(
        probe["url"],
        format!(
            "{}/api/v1/WebHook/MONW…3-ok?dos=998",
            fake.server.base_url()
        )
    );
    assert_eq!(probe["method"], "GET");
    assert_eq!(probe["schedule"], "every 1h");
    assert!(probe["next_run"].as_str().unwrap().ends_with('Z'));
    assert_eq!(probe["last_result"]["success"], true);
    assert_eq!(
        probe["history"].as_array().unwrap().len(),
        3,
        "the ring buffer keeps history_size results"
    );
    assert!(
        !list.to_string().contains(&SECRET_CODE[4..20]),
        "the API leaks the code"
    );

    // Unknown probe: 404 with a JSON error; wrong method: 405.
    let (status, body) = exporter.get("/api/v1/probes/nope");
    assert_eq!(status, 404);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"],
        "unknown probe \"nope\""
    );
    assert_eq!(post(&exporter, "/api/v1/probes/nope/run").status, 404);
    assert_eq!(exporter.get("/api/v1/probes/slow/run").0, 405);

    // A run in progress: 409.
    let address = exporter.address;
    let first = std::thread::spawn(move || {
        common::http_request(address, "POST", "/api/v1/probes/slow/run", &[])
    });
    wait_for_api(&exporter, "the on-demand run of slow", |probes| {
        probes
            .iter()
            .any(|p| p["name"] == "slow" && p["running"] == true)
    });
    let second = post(&exporter, "/api/v1/probes/slow/run");
    assert_eq!(second.status, 409, "{}", second.body);
    assert!(second.body.contains("already running"), "{}", second.body);
    assert_eq!(first.join().unwrap().status, 200);
    let scrape = exporter.scrape();
    assert_eq!(
        scrape.value(
            "webhook_probe_runs_total",
            &[("probe", "refresh-customer"), ("result", "success")]
        ),
        Some(4.0)
    );
}

#[test]
fn an_on_demand_run_sooner_than_run_now_min_gap_answers_429_with_retry_after() {
    let fake = fake();
    // A schedule that does not fire during the test: only on-demand runs.
    let probe = format!(
        "{{name: p, server: fake, code: \"{SECRET_CODE}-ok\", schedule: '0 0 1 1 *', timeout: 5s}}"
    );
    let (_dir, path) = common::write_config(&config(&fake, &[&probe]));
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let first = post(&exporter, "/api/v1/probes/p/run");
    assert_eq!(first.status, 200, "{}", first.body);
    let second = post(&exporter, "/api/v1/probes/p/run");
    assert_eq!(second.status, 429, "{}", second.body);
    // The default gap is 10 s: whole seconds left, rounded up.
    let retry_after: u64 = second
        .header("retry-after")
        .unwrap_or_else(|| panic!("no Retry-After: {second:?}"))
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let error: serde_json::Value = serde_json::from_str(&second.body).unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("probe \"p\" started a run less than 10s ago (run_now_min_gap)"),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("in {retry_after}s")),
        "{message}"
    );
    assert_eq!(fake.server.calls("ok"), 1, "the refused run called the ERP");
}

#[test]
fn a_sighup_during_start_up_neither_kills_the_exporter_nor_stops_it_serving() {
    // 20,000 probes: loading and starting them takes a while.
    let port = common::closed_port();
    let mut text = String::from("probes:\n");
    for i in 0..20_000 {
        text.push_str(&format!(
            "  - {{name: p{i}, url: 'http://127.0.0.1:{port}/', interval: 1h}}\n"
        ));
    }
    let (_dir, path) = common::write_config(&text);
    let mut child = std::process::Command::new(common::binary())
        .arg(format!("--config.file={}", path.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let stderr = child.stderr.take().unwrap();
    let (address_tx, address_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(address) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("address="))
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            {
                let _ = address_tx.send(address);
            }
        }
    });
    // Before it listens, the exporter must catch SIGHUP (whose default action kills it).
    // Waiting for the handler, not for some moment in `main`, keeps this free of races.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !catches_signal(&pid, 1) {
        assert!(
            address_rx.try_recv().is_err(),
            "the exporter listened before catching SIGHUP: a hang-up during start-up kills it"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the exporter exited during start-up: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the exporter never caught SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    // Then hang-ups, again and again, until it listens.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    let address = loop {
        if let Ok(address) = address_rx.try_recv() {
            break address;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the exporter died during start-up after {sent} SIGHUP(s): {status}");
        }
        assert!(Instant::now() < deadline, "the exporter did not start");
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap();
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("{sent} SIGHUP(s) during start-up");
    assert!(
        sent >= 3,
        "start-up too short to test anything: {sent} SIGHUP(s)"
    );
    assert_eq!(common::http_get(address, "/-/healthy").0, 200);
    assert!(child.try_wait().unwrap().is_none(), "the exporter exited");
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether process `pid` has a handler for signal `number` (its `SigCgt` mask in /proc).
fn catches_signal(pid: &str, number: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & (1 << (number - 1)) != 0)
}

/// Writes the PKI and a web config into `dir`; returns the web config path.
fn web_config(
    dir: &std::path::Path,
    pki: &common::Pki,
    client_auth: &str,
    password_hash: &str,
) -> std::path::PathBuf {
    for (name, content) in [
        ("ca.pem", &pki.ca),
        ("server.pem", &pki.server.0),
        ("server.key", &pki.server.1),
    ] {
        std::fs::write(dir.join(name), content).unwrap();
    }
    let path = dir.join("web.yml");
    std::fs::write(
        &path,
        format!(
            "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  client_auth_type: {client_auth}\n  client_ca_file: ca.pem\n  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{password_hash}'\n"
        ),
    )
    .unwrap();
    path
}

/// An exporter behind TLS (with `client_auth`) and basic auth: user `prometheus`, password
/// `s3cret-scrape`. The fake server and the config folder must live as long as it.
fn protected_exporter(client_auth: &str) -> (Fake, tempfile::TempDir, common::Pki, Exporter) {
    let fake = fake();
    let pki = common::Pki::generate();
    let (dir, path) = common::write_config(&config(
        &fake,
        &[&format!(
            "{{name: p, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1h}}"
        )],
    ));
    let hash = bcrypt::hash("s3cret-scrape", 4).unwrap();
    let web = web_config(dir.path(), &pki, client_auth, &hash);
    let exporter = Exporter::start(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
        ],
        &[],
    );
    (fake, dir, pki, exporter)
}

#[test]
fn tls_and_basic_auth_protect_every_endpoint() {
    let (_fake, _dir, pki, exporter) = protected_exporter("NoClientCert");
    let good = format!("Basic {}", base64_encode("prometheus:s3cret-scrape"));
    let bad = format!("Basic {}", base64_encode("prometheus:wrong"));
    for path in [
        "/metrics",
        "/",
        "/status.json",
        "/api/v1/probes",
        "/-/healthy",
        "/-/ready",
    ] {
        let ok = common::https_request(
            exporter.address,
            "GET",
            path,
            &[("Authorization", &good)],
            &pki.ca,
            None,
        )
        .unwrap();
        assert_eq!(ok.status, 200, "{path}: {}", ok.body);
        for headers in [vec![("Authorization", bad.as_str())], vec![]] {
            let refused =
                common::https_request(exporter.address, "GET", path, &headers, &pki.ca, None)
                    .unwrap();
            assert_eq!(refused.status, 401, "{path} with {headers:?}");
            assert!(
                refused
                    .header("www-authenticate")
                    .unwrap()
                    .starts_with("Basic"),
                "{refused:?}"
            );
        }
    }
    let refused =
        common::https_request(exporter.address, "POST", "/-/reload", &[], &pki.ca, None).unwrap();
    assert_eq!(refused.status, 401);
    // Plain HTTP on the TLS port gets no answer.
    let plain = std::panic::catch_unwind(|| common::http_get(exporter.address, "/metrics"));
    assert!(plain.map(|(status, _)| status != 200).unwrap_or(true));
}

#[test]
fn mutual_tls_requires_a_client_certificate_signed_by_the_ca() {
    let (_fake, _dir, pki, exporter) = protected_exporter("RequireAndVerifyClientCert");
    let auth = format!("Basic {}", base64_encode("prometheus:s3cret-scrape"));
    let client = (pki.client.0.as_str(), pki.client.1.as_str());
    let with_cert = common::https_request(
        exporter.address,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        &pki.ca,
        Some(client),
    )
    .unwrap();
    assert_eq!(with_cert.status, 200);
    let without = common::https_request(
        exporter.address,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        &pki.ca,
        None,
    );
    assert!(
        without.is_err() || without.as_ref().unwrap().status == 0,
        "{without:?}"
    );
}

#[test]
fn an_invalid_web_config_stops_the_start_with_a_clear_error() {
    let fake = fake();
    let (dir, path) = common::write_config(&config(
        &fake,
        &[&format!(
            "{{name: p, server: fake, code: \"{SECRET_CODE}-ok\"}}"
        )],
    ));
    let web = dir.path().join("web.yml");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: not-a-hash\n").unwrap();
    let (code, _, stderr) = common::run_binary(
        &[
            &format!("--config.file={}", path.display()),
            &format!("--web.config.file={}", web.display()),
            "--web.listen-address=127.0.0.1:0",
        ],
        &[],
        None,
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("basic_auth_users.prometheus: not a bcrypt hash"),
        "{stderr}"
    );
}

#[test]
fn two_hundred_reloads_leave_series_and_memory_at_their_starting_level() {
    let fake = fake();
    let base: Vec<String> = (0..5).map(|i| format!("{{name: base-{i}, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1h, labels: {{dossier: \"{i}\"}}}}")).collect();
    let extra: Vec<String> = (0..50).map(|i| format!("{{name: extra-{i}, server: fake, code: \"{SECRET_CODE}-ok\", interval: 1h, labels: {{tenant: \"t{i}\"}}}}")).collect();
    let base_refs: Vec<&str> = base.iter().map(String::as_str).collect();
    let all_refs: Vec<&str> = base.iter().chain(&extra).map(String::as_str).collect();
    let small = config(&fake, &base_refs);
    let large = config(&fake, &all_refs);
    let (_dir, path) = common::write_config(&small);
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let rss = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", exporter.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .unwrap()
            .trim()
            .trim_end_matches(" kB")
            .trim()
            .parse()
            .unwrap()
    };
    let reload = |text: &str| {
        std::fs::write(&path, text).unwrap();
        let answer = post(&exporter, "/-/reload");
        assert_eq!(answer.status, 200, "{}", answer.body);
    };
    // Warm up allocator pools, then measure.
    for _ in 0..10 {
        reload(&large);
        reload(&small);
    }
    let series_start = exporter.scrape().sample_count();
    let rss_start = rss();
    for _ in 0..100 {
        reload(&large);
        reload(&small);
    }
    let series_end = exporter.scrape().sample_count();
    let rss_end = rss();
    println!(
        "200 reloads: series {series_start} -> {series_end}, RSS {rss_start} kB -> {rss_end} kB"
    );
    assert_eq!(series_end, series_start);
    assert!(
        rss_end <= rss_start + rss_start / 10 + 2048,
        "RSS grew from {rss_start} kB to {rss_end} kB"
    );
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// `GET /api/v1/probes` with its query parameters, parsed; panics unless it answers 200.
fn api_list(exporter: &Exporter, query: &str) -> serde_json::Value {
    let (status, body) = exporter.get(&format!("/api/v1/probes{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn names(list: &serde_json::Value) -> Vec<String> {
    list["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_probe_list_has_no_history_unless_asked_and_filters_and_pages() {
    let fake = fake();
    let text = format!(
        "servers:\n  a: {{base_url: \"{base}\"}}\n  b: {{base_url: \"{base}\"}}\nprobes:\n\
         {a}\
         \x20 - {{name: b-fails, server: b, code: \"{SECRET_CODE}-http400\", interval: 1s, timeout: 500ms}}\n\
         \x20 - {{name: b-never, server: b, code: \"{SECRET_CODE}-ok\", schedule: '0 0 1 1 *', timeout: 5s}}\n",
        base = fake.server.base_url(),
        a = (1..=4)
            .map(|i| format!(
                "  - {{name: a-ok-{i}, server: a, code: \"{SECRET_CODE}-ok\", interval: 1s, timeout: 500ms}}\n"
            ))
            .collect::<String>(),
    );
    let (_dir, path) = common::write_config(&text);
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    // Two runs of every interval probe, so a history exists.
    wait_for_api(&exporter, "a run of each interval probe", |probes| {
        probes
            .iter()
            .filter(|p| p["name"] != "b-never")
            .all(|p| p["last_result"].is_object())
    });
    exporter.wait_for(Duration::from_secs(15), "two runs each", |s| {
        ["a-ok-1", "a-ok-2", "a-ok-3", "a-ok-4", "b-fails"]
            .iter()
            .all(|p| runs(s, p) >= 2.0)
    });

    let all = api_list(&exporter, "");
    assert_eq!(all["total"], 6);
    assert_eq!(names(&all).len(), 6);
    for probe in all["probes"].as_array().unwrap() {
        assert!(
            probe.get("history").is_none(),
            "history without ?history: {probe}"
        );
        assert!(probe.get("name").is_some());
    }
    let with_history = api_list(&exporter, "?history=1");
    for probe in with_history["probes"].as_array().unwrap() {
        let expected = if probe["name"] == "b-never" { 0 } else { 1 };
        assert_eq!(
            probe["history"].as_array().unwrap().len(),
            expected,
            "{probe}"
        );
    }
    // One probe answers its whole history.
    let (_, one) = exporter.get("/api/v1/probes/a-ok-1");
    let one: serde_json::Value = serde_json::from_str(&one).unwrap();
    assert!(one["history"].as_array().unwrap().len() >= 2, "{one}");

    assert_eq!(names(&api_list(&exporter, "?state=failing")), ["b-fails"]);
    assert_eq!(names(&api_list(&exporter, "?state=pending")), ["b-never"]);
    assert_eq!(
        names(&api_list(&exporter, "?state=ok")),
        ["a-ok-1", "a-ok-2", "a-ok-3", "a-ok-4"]
    );
    assert_eq!(
        names(&api_list(&exporter, "?server=b")),
        ["b-fails", "b-never"]
    );
    assert_eq!(names(&api_list(&exporter, "?q=OK-3")), ["a-ok-3"]);
    let page = api_list(&exporter, "?server=a&offset=1&limit=2");
    assert_eq!(names(&page), ["a-ok-2", "a-ok-3"]);
    assert_eq!((&page["total"], &page["offset"]), (&4.into(), &1.into()));
    assert!(names(&api_list(&exporter, "?offset=100")).is_empty());

    let (status, body) = exporter.get("/api/v1/probes?state=sideways");
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("state: expected one of failing, ok, pending"),
        "{body}"
    );
    let (status, body) = exporter.get("/api/v1/probes?history=lots");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("\"error\""), "{body}");
}

/// Seconds into the current 4-second cycle of the wall clock (0.0..4.0).
fn into_cycle(at: std::time::SystemTime) -> f64 {
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap();
    (since.as_millis() % 4_000) as f64 / 1_000.0
}

#[test]
fn a_skip_window_stops_scheduled_calls_while_open_and_the_gauge_and_on_demand_runs_say_so() {
    // A window opening every 4 s (at seconds 0, 4, 8, ...) for 2 s; the probe runs every
    // 250 ms. The fake sees calls only in the closed halves of each cycle.
    let fake = fake();
    let probe = format!(
        "{{name: windowed, server: fake, code: \"{SECRET_CODE}W-ok\", interval: 250ms, timeout: 200ms, maintenance: [{{schedule: '*/4 * * * * *', duration: 2s}}]}}"
    );
    // Always in a mute window (opening every second for two): runs go on, the page says so.
    let muted = format!(
        "{{name: muted, server: fake, code: \"{SECRET_CODE}M-ok\", interval: 1s, timeout: 500ms, maintenance: [{{schedule: '* * * * * *', duration: 2s, mode: mute}}]}}"
    );
    let text = format!("run_now_min_gap: 0s\n{}", config(&fake, &[&probe, &muted]));
    let (_dir, path) = common::write_config(&text);
    let exporter = Exporter::start(&[&format!("--config.file={}", path.display())], &[]);
    let gauge =
        |scrape: &Scrape| scrape.value("webhook_probe_maintenance", &[("probe", "windowed")]);
    exporter.wait_for(Duration::from_secs(10), "the window open", |s| {
        gauge(s) == Some(1.0)
    });
    exporter.wait_for(Duration::from_secs(10), "the window closed", |s| {
        gauge(s) == Some(0.0)
    });
    // An on-demand run inside a window runs, and says a window is open.
    let mut answered_in_window = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered_in_window.is_none() && Instant::now() < deadline {
        exporter.wait_for(Duration::from_secs(10), "the window open", |s| {
            gauge(s) == Some(1.0)
        });
        let answer = post(&exporter, "/api/v1/probes/windowed/run");
        assert_eq!(answer.status, 200, "{}", answer.body);
        let json: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(json["success"], true, "{json}");
        if json["maintenance"] == true {
            assert!(json["maintenance_until"].is_string(), "{json}");
            answered_in_window = Some(json);
        }
    }
    assert!(
        answered_in_window.is_some(),
        "no run-now answer said a window was open"
    );
    let before_run_now = fake.server.arrivals("W-ok").len();
    std::thread::sleep(Duration::from_secs(4));
    let view: serde_json::Value =
        serde_json::from_str(&exporter.get("/api/v1/probes/windowed?history=0").1).unwrap();
    assert!(view.get("maintenance_until").is_some(), "{view}");
    let arrivals = fake.server.arrivals("W-ok");
    // Every scheduled call arrived in a closed half (a call planned just before the next
    // window opens may arrive a few milliseconds into it); the on-demand ones are left out
    // by checking only the calls of the last 4 s.
    let scheduled = &arrivals[before_run_now..];
    assert!(scheduled.len() >= 4, "{} calls in 4 s", scheduled.len());
    for at in scheduled {
        let phase = into_cycle(*at);
        assert!(
            !(0.1..2.0).contains(&phase),
            "a scheduled call {phase:.3} s into a cycle, inside the window"
        );
    }
    let scrape = exporter.scrape();
    assert_eq!(
        scrape.value("webhook_probe_skipped_total", &[("probe", "windowed")]),
        Some(0.0)
    );
    // The muted probe runs on, and the API and the page say it is in maintenance.
    assert!(runs(&scrape, "muted") >= 2.0, "{}", scrape.text);
    assert_eq!(
        scrape.value("webhook_probe_maintenance", &[("probe", "muted")]),
        Some(1.0)
    );
    let muted: serde_json::Value =
        serde_json::from_str(&exporter.get("/api/v1/probes/muted?history=0").1).unwrap();
    assert_eq!(muted["maintenance_mode"], "mute", "{muted}");
    assert!(muted["maintenance_until"].is_string(), "{muted}");
    let (status, page) = exporter.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("in maintenance (mute) until"), "{page}");
    assert!(!exporter.logs().contains(SECRET_CODE));
    assert!(!page.contains(SECRET_CODE));
}
