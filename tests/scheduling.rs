//! The scheduler with a stub probe and paused tokio time: plans, phases, no overlap,
//! concurrency caps, lag, and cron across a DST change — deterministic, no real sleeping.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, TimeZone, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use webhook_exporter::config::{self, Config, ProbeSpec};
use webhook_exporter::metrics::Metrics;
use webhook_exporter::probe::Outcome;
use webhook_exporter::schedule::phase_offset;
use webhook_exporter::scheduler::{Clock, Runner, Scheduler};

/// Calls seen by the stub: probe name and wall-clock start.
type Calls = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

/// A stub probe that records its calls, takes `busy` (tokio time), tracks the highest
/// number of runs at once, and succeeds.
fn stub(clock: Clock, busy: Duration, calls: Calls, peak: Arc<AtomicUsize>) -> Runner {
    let current = Arc::new(AtomicUsize::new(0));
    Arc::new(move |spec: Arc<ProbeSpec>| {
        let (calls, peak, current) = (calls.clone(), peak.clone(), current.clone());
        Box::pin(async move {
            calls.lock().unwrap().push((spec.name.clone(), clock.now()));
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(busy).await;
            current.fetch_sub(1, Ordering::SeqCst);
            Outcome {
                success: true,
                reason: None,
                message: "OK".into(),
                http_status: Some(200),
                response_code: Some("0".into()),
                duration: busy,
                phases: Default::default(),
                attempts: 1,
                redirects: 0,
                tls: None,
                http_version: None,
                started_at: SystemTime::now(),
                finished_at: SystemTime::now(),
            }
        })
    })
}

fn parse(text: &str) -> Config {
    config::parse(Path::new("test.yaml"), text).unwrap_or_else(|e| panic!("{e}"))
}

struct Harness {
    calls: Calls,
    peak: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    scheduler: Scheduler,
}

fn start(text: &str, wall: DateTime<Utc>, busy: Duration) -> Harness {
    let config = parse(text);
    let clock = Clock::simulated(wall);
    let calls: Calls = Arc::default();
    let peak = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::new().unwrap());
    let runner = stub(clock, busy, calls.clone(), peak.clone());
    let scheduler = Scheduler::start(
        &config,
        metrics.clone(),
        runner,
        clock,
        CancellationToken::new(),
    );
    Harness {
        calls,
        peak,
        metrics,
        scheduler,
    }
}

fn starts_of(calls: &Calls, name: &str) -> Vec<DateTime<Utc>> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, t)| *t)
        .collect()
}

fn nanos_into_period(t: DateTime<Utc>, period: Duration) -> u128 {
    u128::try_from(t.timestamp_nanos_opt().unwrap()).unwrap() % period.as_nanos()
}

#[tokio::test(start_paused = true)]
async fn interval_runs_keep_the_stable_phase_of_their_name() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: alpha, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 1s}\n  - {name: beta, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 1s}\n",
        wall,
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_secs(35)).await;
    let period = Duration::from_secs(10);
    for name in ["alpha", "beta"] {
        let starts = starts_of(&harness.calls, name);
        let offset = phase_offset(name, period).as_secs_f64();
        let slots = (0..10)
            .filter(|k| offset + 10.0 * f64::from(*k) <= 35.0)
            .count();
        assert_eq!(starts.len(), slots, "{name}: {starts:?}");
        for start in &starts {
            // Every run starts at epoch + k * period + offset, to tokio's 1 ms timer resolution.
            let drift =
                nanos_into_period(*start, period).abs_diff(phase_offset(name, period).as_nanos());
            assert!(
                drift < 1_000_000,
                "{name} at {start}: {drift} ns off its phase"
            );
        }
        assert!(
            starts
                .windows(2)
                .all(|w| w[1] - w[0] == chrono::TimeDelta::seconds(10))
        );
    }
    assert_ne!(phase_offset("alpha", period), phase_offset("beta", period));
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_still_going_makes_the_next_one_skipped_and_counted() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    // The stub outlasts two intervals (the config's timeout would normally prevent this, but
    // slot waits and on-demand runs can cause it too).
    let harness = start(
        "probes:\n  - {name: slow, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 1s}\n",
        wall,
        Duration::from_secs(25),
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    let starts = starts_of(&harness.calls, "slow");
    // Slots at offset + 0, 10, ..., 60 s: runs start at slots 0, 30 and 60; the others are skipped.
    assert_eq!(
        harness.peak.load(Ordering::SeqCst),
        1,
        "never two runs at once"
    );
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    let skipped = scrape
        .value("webhook_probe_skipped_total", &[("probe", "slow")])
        .unwrap();
    // Planned slots in the 61 s: offset, offset + 10 s, ... Each one either ran or was skipped.
    let offset = phase_offset("slow", Duration::from_secs(10)).as_secs_f64();
    let slots = (0..10)
        .filter(|k| offset + 10.0 * f64::from(*k) <= 61.0)
        .count() as f64;
    let runs = starts.len() as f64;
    assert_eq!(runs + skipped, slots, "runs {runs} skipped {skipped}");
    // A 25 s run covers the two slots after it, so two of every three slots are skipped.
    assert!(
        starts
            .windows(2)
            .all(|w| w[1] - w[0] == chrono::TimeDelta::seconds(30)),
        "{starts:?}"
    );
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_global_cap_limits_runs_in_flight_and_the_wait_is_lag() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let mut text = String::from("max_concurrent_probes: 2\nprobes:\n");
    for i in 0..6 {
        text.push_str(&format!(
            "  - {{name: p{i}, url: 'http://127.0.0.1:1/', interval: 1m, timeout: 30s}}\n"
        ));
    }
    let harness = start(&text, wall, Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(150)).await;
    assert_eq!(harness.peak.load(Ordering::SeqCst), 2);
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    let lag_count = scrape
        .histogram_count("webhook_exporter_schedule_lag_seconds", &[])
        .unwrap();
    assert!(lag_count >= 6, "{lag_count}");
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_server_cap_limits_runs_against_one_server() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let mut text = String::from(
        "servers:\n  erp: {base_url: 'http://127.0.0.1:1/erp', max_concurrent: 1}\nprobes:\n",
    );
    for i in 0..4 {
        text.push_str(&format!(
            "  - {{name: w{i}, server: erp, code: CODE{i}, interval: 1m, timeout: 10s}}\n"
        ));
    }
    let harness = start(&text, wall, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(130)).await;
    assert_eq!(harness.peak.load(Ordering::SeqCst), 1);
    assert!(harness.calls.lock().unwrap().len() >= 4);
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cron_runs_follow_europe_paris_across_the_spring_dst_change() {
    // Saturday 2027-03-27 12:00 UTC. On Sunday 28th Paris skips from 02:00 to 03:00.
    let wall = Utc.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: nightly, url: 'http://127.0.0.1:1/', schedule: '30 2 * * *', timezone: Europe/Paris, timeout: 10s}\n  - {name: mornings, url: 'http://127.0.0.1:1/', schedule: '0 8 * * 1-5', timezone: Europe/Paris, timeout: 10s}\n",
        wall,
        Duration::from_millis(1),
    );
    tokio::time::sleep(Duration::from_secs(3 * 24 * 3600)).await;
    let nightly = starts_of(&harness.calls, "nightly");
    assert_eq!(
        nightly,
        vec![
            Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0).unwrap(), // 02:30 does not exist: 03:00 CEST, once
            Utc.with_ymd_and_hms(2027, 3, 29, 0, 30, 0).unwrap(), // 02:30 CEST
            Utc.with_ymd_and_hms(2027, 3, 30, 0, 30, 0).unwrap(),
        ]
    );
    // Weekdays only: Monday 29th and Tuesday 30th at 08:00 CEST (06:00 UTC); no Sunday run.
    assert_eq!(
        starts_of(&harness.calls, "mornings"),
        vec![
            Utc.with_ymd_and_hms(2027, 3, 29, 6, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2027, 3, 30, 6, 0, 0).unwrap()
        ]
    );
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_new_runs_and_waits_for_the_one_in_flight() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 9s}\n",
        wall,
        Duration::from_secs(8),
    );
    // Let the first run start, then stop mid-run.
    while harness.calls.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped_at = Instant::now();
    let metrics = harness.metrics.clone();
    harness.scheduler.shutdown().await;
    let waited = stopped_at.elapsed();
    assert!(
        waited > Duration::from_secs(7) && waited <= Duration::from_secs(8),
        "{waited:?}"
    );
    let scrape = common::Scrape::parse(&metrics.encode());
    assert_eq!(
        scrape.value(
            "webhook_probe_runs_total",
            &[("probe", "p"), ("result", "success")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("webhook_exporter_probes_in_flight", &[]),
        Some(0.0)
    );
}
