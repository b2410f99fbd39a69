//! `--storage.path`: state that survives a restart. The real binary against the fake Divalto
//! server, stopped with SIGTERM and killed with SIGKILL, restarted on the same store.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use webhook_exporter::storage::{Recorder, Saved, Storage};

use common::{Exporter, Fake, SECRET_CODE, Scrape, fake};
use serde_json::Value;

/// A config whose probes are `probes` (flow mappings), with no gap between on-demand runs.
fn config(fake: &Fake, history_size: usize, probes: &[String]) -> String {
    let mut text = format!(
        "history_size: {history_size}\nrun_now_min_gap: 0s\nservers:\n  fake: {{base_url: \"{}\"}}\nprobes:\n",
        fake.server.base_url()
    );
    for probe in probes {
        text.push_str(&format!("  - {probe}\n"));
    }
    text
}

/// A cron probe that will not run on its own before next New Year: only on-demand runs.
fn yearly(name: &str, behaviour: &str, timeout: &str) -> String {
    format!(
        "{{name: {name}, server: fake, code: \"{SECRET_CODE}-{behaviour}\", schedule: '0 0 1 1 *', timeout: {timeout}}}"
    )
}

fn start(config: &Path, store: &Path) -> Exporter {
    Exporter::start(
        &[
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", store.display()),
        ],
        &[],
    )
}

fn run_now(exporter: &Exporter, probe: &str) {
    let answer = common::http_request(
        exporter.address,
        "POST",
        &format!("/api/v1/probes/{probe}/run"),
        &[],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
}

fn api(exporter: &Exporter, probe: &str) -> Value {
    let (status, body) = exporter.get(&format!("/api/v1/probes/{probe}?history=1000"));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The gauges a restart must carry on, for `probe`.
const CARRIED: &[&str] = &[
    "webhook_probe_success",
    "webhook_probe_consecutive_failures",
    "webhook_probe_last_run_timestamp_seconds",
    "webhook_probe_last_success_timestamp_seconds",
    "webhook_probe_http_status_code",
    "webhook_probe_response_code",
    "webhook_probe_last_duration_seconds",
    "webhook_probe_redirects",
    "webhook_probe_http_version",
];

fn gauges(scrape: &Scrape, probe: &str) -> Vec<(&'static str, Option<f64>)> {
    CARRIED
        .iter()
        .map(|family| (*family, scrape.value(family, &[("probe", probe)])))
        .collect()
}

/// What the API says of a probe that a restart must keep: its results and its streak.
fn kept(view: &Value) -> (Value, Value, Value) {
    let mut last = view["last_result"].clone();
    // Not kept: what the connection showed beyond the result (none of it on plain HTTP).
    if let Some(last) = last.as_object_mut() {
        last.remove("tls");
    }
    (
        view["history"].clone(),
        view["consecutive_failures"].clone(),
        last,
    )
}

/// Runs `ok` twice and `down` three times, and returns what the exporter shows of them.
fn run_and_capture(exporter: &Exporter) -> Shown {
    for probe in ["ok", "down", "ok", "down", "down"] {
        run_now(exporter, probe);
    }
    capture(exporter)
}

/// The carried gauges and the kept API fields of `ok` and `down`.
type Shown = (
    Vec<Vec<(&'static str, Option<f64>)>>,
    Vec<(Value, Value, Value)>,
);

fn capture(exporter: &Exporter) -> Shown {
    let scrape = exporter.scrape();
    let gauges = ["ok", "down"].map(|p| gauges(&scrape, p)).to_vec();
    let views = ["ok", "down"].map(|p| kept(&api(exporter, p))).to_vec();
    (gauges, views)
}

fn restart_keeps_everything(signal: &str) {
    let fake = fake();
    let store = tempfile::tempdir().unwrap();
    let (_dir, path) = common::write_config(&config(
        &fake,
        10,
        &[yearly("ok", "ok", "5s"), yearly("down", "http500", "5s")],
    ));
    let mut exporter = start(&path, store.path());
    let before = run_and_capture(&exporter);
    assert_eq!(
        before.1[1].1, 3,
        "three failures in a row: {:?}",
        before.1[1]
    );
    assert_eq!(before.1[0].0.as_array().unwrap().len(), 2);
    if signal == "KILL" {
        // Results reach the store within a second; SIGKILL loses at most the last one.
        std::thread::sleep(Duration::from_millis(2500));
    }
    exporter.stop(signal, Duration::from_secs(10));
    // Nothing secret on disk: not the code, not even its first characters.
    let bytes = std::fs::read(store.path().join("webhook-exporter.redb")).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(&SECRET_CODE[..12]),
        "the store holds the code"
    );

    let restarted = start(&path, store.path());
    let after = capture(&restarted);
    assert_eq!(
        after.0, before.0,
        "gauges after SIGTERM/SIGKILL and restart"
    );
    assert_eq!(after.1, before.1, "API history after a restart");
    // Run ids are kept too: a run from before the restart is still found by its id.
    let run_id = before.1[0].0[0]["run_id"].as_str().unwrap().to_owned();
    let (status, run) = restarted.get(&format!("/api/v1/runs/{run_id}"));
    assert_eq!(status, 200, "{run}");
    // Counters restart from 0: Prometheus reads that as a counter reset.
    let scrape = restarted.scrape();
    assert_eq!(
        scrape.value(
            "webhook_probe_runs_total",
            &[("probe", "down"), ("result", "failure")]
        ),
        Some(0.0)
    );
    // The status page carries on too: the failing probe shows its failure.
    let (status, page) = restarted.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("down"), "{page}");
    assert!(
        !restarted.logs().contains(&SECRET_CODE[4..20]),
        "the code leaked in the logs"
    );
}

#[test]
fn a_restart_after_sigterm_carries_on_with_gauges_and_history() {
    restart_keeps_everything("TERM");
}

#[test]
fn a_restart_after_sigkill_carries_on_with_gauges_and_history() {
    restart_keeps_everything("KILL");
}

#[test]
fn a_removed_probe_is_dropped_and_a_changed_probe_starts_fresh() {
    let fake = fake();
    let store = tempfile::tempdir().unwrap();
    let all = [
        yearly("ok", "ok", "5s"),
        yearly("down", "http500", "5s"),
        yearly("gone", "ok", "5s"),
    ];
    let (_dir, path) = common::write_config(&config(&fake, 10, &all));
    let mut exporter = start(&path, store.path());
    for probe in ["ok", "down", "gone"] {
        run_now(&exporter, probe);
    }
    exporter.stop("TERM", Duration::from_secs(10));

    // `gone` removed and `down` changed (its timeout) while stopped.
    let changed = [yearly("ok", "ok", "5s"), yearly("down", "http500", "4s")];
    std::fs::write(&path, config(&fake, 10, &changed)).unwrap();
    let mut exporter = start(&path, store.path());
    assert_eq!(api(&exporter, "ok")["history"].as_array().unwrap().len(), 1);
    let down = api(&exporter, "down");
    assert_eq!(down["history"], serde_json::json!([]), "{down}");
    assert_eq!(down["last_result"], Value::Null);
    assert_eq!(
        exporter
            .scrape()
            .value("webhook_probe_success", &[("probe", "down")]),
        None,
        "a changed probe has no result until it runs"
    );
    exporter.stop("TERM", Duration::from_secs(10));

    // `gone` comes back: the store forgot it, so it starts fresh.
    std::fs::write(&path, config(&fake, 10, &all)).unwrap();
    let exporter = start(&path, store.path());
    assert_eq!(api(&exporter, "gone")["history"], serde_json::json!([]));
    assert_eq!(api(&exporter, "ok")["history"].as_array().unwrap().len(), 1);
}

/// Finished-at times of a probe's history, oldest first.
fn finished(view: &Value) -> Vec<String> {
    view["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["finished_at"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn sigkill_in_a_loop_during_writes_never_corrupts_the_store_nor_loses_more_than_a_second() {
    let fake = fake();
    let store = tempfile::tempdir().unwrap();
    let probes: Vec<String> = (0..20)
        .map(|i| {
            let behaviour = if i % 3 == 0 { "http500" } else { "ok" };
            format!(
                "{{name: p{i}, server: fake, code: \"{SECRET_CODE}-{behaviour}\", interval: 100ms, timeout: 90ms}}"
            )
        })
        .collect();
    let (_dir, path) = common::write_config(&config(&fake, 50, &probes));
    let mut previous: Option<Vec<Vec<String>>> = None;
    for round in 0..6 {
        let mut exporter = start(&path, store.path());
        // Right at start (before any new run could land), what was restored.
        let restored: Vec<Vec<String>> = (0..20)
            .map(|i| finished(&api(&exporter, &format!("p{i}"))))
            .collect();
        if let Some(previous) = &previous {
            for (i, (before, after)) in previous.iter().zip(&restored).enumerate() {
                // Everything seen a while before the kill is there, in the same order.
                let old_enough: Vec<&String> = before.iter().collect();
                let start = after
                    .iter()
                    .position(|f| Some(f) == old_enough.first().copied())
                    .unwrap_or_else(|| {
                        panic!("round {round}, p{i}: lost results {before:?} -> {after:?}")
                    });
                let tail: Vec<&String> = after[start..].iter().take(old_enough.len()).collect();
                assert_eq!(tail, old_enough, "round {round}, p{i}: not a prefix");
            }
        }
        // Writes going on: kill at a different moment of the batch each round.
        std::thread::sleep(Duration::from_millis(2500 + 170 * round));
        let cutoff = SystemTime::now() - Duration::from_millis(1500);
        let cutoff = chrono::DateTime::<chrono::Utc>::from(cutoff)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let seen: Vec<Vec<String>> = (0..20)
            .map(|i| {
                let all = finished(&api(&exporter, &format!("p{i}")));
                // Older than the cutoff: must have been written before the kill.
                all.into_iter().filter(|f| *f < cutoff).collect()
            })
            .collect();
        assert!(seen.iter().any(|s| !s.is_empty()), "no run at all");
        exporter.stop("KILL", Duration::from_secs(10));
        // Keep only the most recent of the old enough ones that the ring still holds
        // after the runs that may have landed between the cutoff and the kill.
        previous = Some(
            seen.into_iter()
                .map(|s| s.into_iter().rev().take(20).rev().collect())
                .collect(),
        );
    }
}

#[test]
fn a_corrupt_store_is_a_clear_error_at_start() {
    let store = tempfile::tempdir().unwrap();
    let file = store.path().join("webhook-exporter.redb");
    std::fs::write(&file, b"not a database, just garbage bytes ".repeat(200)).unwrap();
    let (_dir, path) =
        common::write_config("probes:\n  - {name: a, url: 'http://127.0.0.1:1/', interval: 1h}\n");
    let (code, _stdout, stderr) = run(&path, store.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
    assert!(stderr.contains("corrupt"), "{stderr}");
    assert!(stderr.contains("move it away"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn an_unwritable_store_is_a_clear_error_at_start() {
    // A file where the directory should be: root can write anywhere, but not into a file.
    let parent = tempfile::tempdir().unwrap();
    let store = parent.path().join("store");
    std::fs::write(&store, b"a file, not a directory").unwrap();
    let (_dir, path) =
        common::write_config("probes:\n  - {name: a, url: 'http://127.0.0.1:1/', interval: 1h}\n");
    let (code, _stdout, stderr) = run(&path, &store);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&store.display().to_string()), "{stderr}");
    assert!(stderr.contains("--storage.path"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A read-only directory, when not root (root writes there anyway).
    if !is_root() {
        let read_only = parent.path().join("read-only");
        std::fs::create_dir(&read_only).unwrap();
        let mut permissions = std::fs::metadata(&read_only).unwrap().permissions();
        permissions.set_readonly(true);
        std::fs::set_permissions(&read_only, permissions).unwrap();
        let (code, _stdout, stderr) = run(&path, &read_only);
        assert_eq!(code, Some(1), "{stderr}");
        assert!(
            stderr.contains(&read_only.display().to_string()),
            "{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// Runs the exporter until it exits on its own (it must, the store being unusable).
fn run(config: &Path, store: &Path) -> (Option<i32>, String, String) {
    let mut child = std::process::Command::new(common::binary())
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", store.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the exporter kept running on an unusable store");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The store's size and the writer's CPU at scale, for the README:
/// `cargo test --release --test storage store_size -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement (a minute or two), not a check"]
fn store_size_at_ten_thousand_probes_with_history_size_100() {
    const PROBES: usize = 10_000;
    const HISTORY: usize = 100;
    let mut text = format!("history_size: {HISTORY}\nprobes:\n");
    for i in 0..PROBES {
        text.push_str(&format!(
            "  - {{name: refresh-customer-{i:05}, url: 'https://api.divaltocloud.com/123456/TEST1/api/v1/WebHook/{SECRET_CODE}?dos=998&client={i}', interval: 1m}}\n"
        ));
    }
    let (_dir, path) = common::write_config(&text);
    let config = webhook_exporter::config::load(&path).unwrap();
    let store = tempfile::tempdir().unwrap();
    let storage = Storage::open(store.path()).unwrap();
    let file = storage.file().to_owned();
    let writer = storage.start_writer(&Default::default()).unwrap();
    let recorder = writer.recorder();
    recorder.keep(config.probes.clone(), HISTORY);
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<u64> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        (fields[0] + fields[1]) as f64 / 100.0
    };
    let cpu0 = cpu();
    // More rounds than the history holds, so the ring is full and trimmed as it runs.
    let rounds = HISTORY + 20;
    for round in 0..rounds {
        for (i, spec) in config.probes.iter().enumerate() {
            // Commits of about the size a busy exporter makes (1,000 runs a second).
            if i % 1000 == 0 {
                recorder.flush();
            }
            let outcome = outcome(round % 10 == 0);
            recorder.result(spec, &outcome, None);
        }
    }
    writer.close();
    let seconds = cpu() - cpu0;
    let size = std::fs::metadata(&file).unwrap().len();
    let results = (PROBES * rounds) as f64;
    println!(
        "store at {PROBES} probes x history_size {HISTORY}: {:.1} MiB = {:.1} KiB per probe; \
         writer and feeding: {seconds:.1} CPU-s for {results} results = {:.1} us per result",
        size as f64 / 1048576.0,
        size as f64 / 1024.0 / PROBES as f64,
        seconds / results * 1e6
    );
    let mut db = redb::Database::open(&file).unwrap();
    db.compact().unwrap();
    drop(db);
    println!(
        "after redb's compact(): {:.1} MiB",
        std::fs::metadata(&file).unwrap().len() as f64 / 1048576.0
    );
    let mut reopened = Storage::open(store.path()).unwrap();
    let saved = reopened.load().unwrap();
    assert_eq!(saved.len(), PROBES);
    // Entries fallen out of a ring go in batches: a few may still be there.
    assert!(saved.values().all(|s| s.results.len() >= HISTORY));
}

/// A result of `spec` ending now, a success unless `failed`.
fn outcome(failed: bool) -> webhook_exporter::probe::Outcome {
    use webhook_exporter::probe::{Outcome, Phases, RunId};
    let finished_at = SystemTime::now();
    Outcome {
        run_id: RunId::next(),
        success: !failed,
        reason: failed.then_some(webhook_exporter::config::FailureReason::HttpStatus),
        message: "Client C0000001 rafraîchi".to_owned(),
        http_status: Some(if failed { 500 } else { 200 }),
        response_code: Some("0".to_owned()),
        duration: Duration::from_micros(52_431),
        phases: Phases::default(),
        attempts: 1,
        redirects: 0,
        tls: None,
        http_version: Some("1.1"),
        started_at: finished_at - Duration::from_micros(52_431),
        finished_at,
    }
}

/// The run ids of what the store kept of `probe`, oldest first.
fn stored_runs(saved: &BTreeMap<String, Saved>, probe: &str) -> Vec<String> {
    saved.get(probe).map_or_else(Vec::new, |saved| {
        saved.results.iter().map(|r| r.run_id.to_string()).collect()
    })
}

type Probes = Vec<std::sync::Arc<webhook_exporter::config::ProbeSpec>>;

/// `fast` probes and `slow` ones (flow mappings, 1m and 1d).
fn probe_specs(fast: usize, slow: usize) -> (tempfile::TempDir, Probes) {
    let mut text = "history_size: 10\nprobes:\n".to_owned();
    for i in 0..fast {
        text.push_str(&format!(
            "  - {{name: fast-{i}, url: 'http://127.0.0.1:9/f{i}', interval: 1m}}\n"
        ));
    }
    for i in 0..slow {
        text.push_str(&format!(
            "  - {{name: slow-{i}, url: 'http://127.0.0.1:9/s{i}', interval: 1d}}\n"
        ));
    }
    let (dir, path) = common::write_config(&text);
    let config = webhook_exporter::config::load(&path).unwrap();
    (dir, config.probes)
}

#[test]
fn results_kept_by_rare_probes_do_not_pin_old_commits_and_come_back_in_order() {
    // 40 probes run once a day beside 50 that run all the time, 400 results a commit: each
    // daily result lands in its own commit, whose other results fall out of their rings
    // soon after. Left there, 400 commits would keep 160,000 results on disk for the 500
    // that the rings hold.
    let (_dir, probes) = probe_specs(50, 40);
    let (fast, slow) = probes.split_at(50);
    let store = tempfile::tempdir().unwrap();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut record = |recorder: &Recorder, spec: &std::sync::Arc<_>, failed: bool| {
        let outcome = outcome(failed);
        let runs = expected.entry(spec_name(spec)).or_default();
        runs.push(outcome.run_id.to_string());
        if runs.len() > 10 {
            runs.remove(0);
        }
        recorder.result(spec, &outcome, None);
    };
    let storage = Storage::open(store.path()).unwrap();
    let writer = storage.start_writer(&BTreeMap::new()).unwrap();
    let recorder = writer.recorder();
    recorder.keep(probes.clone(), 10);
    for commit in 0..400 {
        let daily = &slow[commit % slow.len()];
        record(&recorder, daily, commit % 3 == 0);
        for i in 0..399 {
            record(&recorder, &fast[i % fast.len()], false);
        }
        recorder.flush();
    }
    writer.close();

    let mut reopened = Storage::open(store.path()).unwrap();
    let saved = reopened.load().unwrap();
    for spec in &probes {
        let name = spec_name(spec);
        assert_eq!(stored_runs(&saved, &name), expected[&name], "{name}");
    }
    let slow_0 = &saved["slow-0"];
    assert_eq!(slow_0.results.len(), 10);
    assert_eq!(
        slow_0.consecutive_failures, 1,
        "its last run (commit 360) failed, the one before succeeded"
    );
    let kept = 50 * 10 + 40 * 10;
    let stored = reopened.stored_results();
    assert!(
        stored <= 2 * kept + 10_000 + 400,
        "{stored} results on disk for {kept} kept"
    );
}

#[test]
fn a_removed_probe_and_a_shorter_history_do_not_come_back_after_a_restart() {
    let (_dir, probes) = probe_specs(3, 0);
    let store = tempfile::tempdir().unwrap();
    let storage = Storage::open(store.path()).unwrap();
    let writer = storage.start_writer(&BTreeMap::new()).unwrap();
    let recorder = writer.recorder();
    recorder.keep(probes.clone(), 10);
    let mut runs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // fast-1 runs once, in the first commit: that commit stays in the store for it.
    for round in 0..6 {
        for spec in probes
            .iter()
            .filter(|spec| round == 0 || spec.name != "fast-1")
        {
            let outcome = outcome(false);
            runs.entry(spec_name(spec))
                .or_default()
                .push(outcome.run_id.to_string());
            recorder.result(spec, &outcome, None);
        }
        recorder.flush();
    }
    // fast-2 removed and the history cut to 4 (fast-0's first result stays on disk beside
    // fast-1's), then fast-2 back and the history at 10 again.
    recorder.keep(probes[..2].to_vec(), 4);
    recorder.flush();
    writer.close();
    let mut reopened = Storage::open(store.path()).unwrap();
    let saved = reopened.load().unwrap();
    assert!(
        !saved.contains_key("fast-2"),
        "a removed probe is forgotten"
    );
    assert_eq!(stored_runs(&saved, "fast-0"), runs["fast-0"][2..].to_vec());
    let writer = reopened.start_writer(&saved).unwrap();
    let recorder = writer.recorder();
    recorder.keep(probes.clone(), 10);
    let again = outcome(false);
    recorder.result(&probes[2], &again, None);
    writer.close();
    let mut reopened = Storage::open(store.path()).unwrap();
    let saved = reopened.load().unwrap();
    assert_eq!(
        stored_runs(&saved, "fast-2"),
        vec![again.run_id.to_string()]
    );
    assert_eq!(
        stored_runs(&saved, "fast-0"),
        runs["fast-0"][2..].to_vec(),
        "the results cut by the shorter history stay cut"
    );
}

fn spec_name(spec: &webhook_exporter::config::ProbeSpec) -> String {
    spec.name.clone()
}
