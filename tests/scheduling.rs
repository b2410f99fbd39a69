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
use webhook_exporter::ProbeRuntimes;
use webhook_exporter::config::{self, Config, ProbeSpec};
use webhook_exporter::metrics::Metrics;
use webhook_exporter::probe::Outcome;
use webhook_exporter::schedule::phase_offset;
use webhook_exporter::scheduler::{Clock, RunNowError, Runner, Scheduler};

/// Calls seen by the stub: probe name and wall-clock start.
type Calls = Arc<Mutex<Vec<(String, DateTime<Utc>)>>>;

/// A stub probe that records its calls, takes `busy` (tokio time), tracks the highest
/// number of runs at once, and succeeds.
fn stub(clock: Clock, busy: Duration, calls: Calls, peak: Arc<AtomicUsize>) -> Runner {
    stub_by(clock, move |_| busy, calls, peak)
}

/// [`stub`] with a time taken that depends on the probe.
fn stub_by(
    clock: Clock,
    busy: impl Fn(&ProbeSpec) -> Duration + Send + Sync + 'static,
    calls: Calls,
    peak: Arc<AtomicUsize>,
) -> Runner {
    let current = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(busy);
    Arc::new(move |spec: Arc<ProbeSpec>| {
        let (calls, peak, current) = (calls.clone(), peak.clone(), current.clone());
        let busy = busy(&spec);
        Box::pin(async move {
            calls.lock().unwrap().push((spec.name.clone(), clock.now()));
            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(busy).await;
            current.fetch_sub(1, Ordering::SeqCst);
            success(busy)
        })
    })
}

fn success(busy: Duration) -> Outcome {
    Outcome {
        run_id: webhook_exporter::probe::RunId::next(),
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
}

/// A stub that panics on its first call and succeeds on every later one, counting calls.
fn panics_first(calls: Arc<AtomicUsize>) -> Runner {
    Arc::new(move |_spec: Arc<ProbeSpec>| {
        let calls = calls.clone();
        Box::pin(async move {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("stub: a library bug");
            }
            success(Duration::ZERO)
        })
    })
}

/// Polls `check` every 100 ms of (paused or real) tokio time, at most `limit`.
async fn wait_until(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    start_by(text, wall, move |_| busy)
}

fn start_by(
    text: &str,
    wall: DateTime<Utc>,
    busy: impl Fn(&ProbeSpec) -> Duration + Send + Sync + 'static,
) -> Harness {
    let config = parse(text);
    let clock = Clock::simulated(wall);
    let calls: Calls = Arc::default();
    let peak = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::new().unwrap());
    let runner = stub_by(clock, busy, calls.clone(), peak.clone());
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
    // Six probes planned at the same instant (10:00:00), two slots, 20 s runs: they start in
    // pairs, 0 s, 20 s and 40 s after their planned start.
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 9, 59, 59).unwrap();
    let mut text = String::from("max_concurrent_probes: 2\nprobes:\n");
    for i in 0..6 {
        text.push_str(&format!(
            "  - {{name: p{i}, url: 'http://127.0.0.1:1/', schedule: '* * * * *', timeout: 30s}}\n"
        ));
    }
    let harness = start(&text, wall, Duration::from_secs(20));
    // Up to 10:00:58: the three pairs have started, the next minute's runs have not.
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(harness.peak.load(Ordering::SeqCst), 2);
    assert_eq!(harness.calls.lock().unwrap().len(), 6);
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    let family = "webhook_exporter_schedule_lag_seconds";
    assert_eq!(scrape.histogram_count(family, &[]), Some(6));
    let (sum, buckets) = scrape.histogram(family, &[]).unwrap();
    assert!(
        (sum - 120.0).abs() < 0.01,
        "lag sum {sum} s, want 0+0+20+20+40+40"
    );
    let at_most = |le: f64| buckets.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
    assert_eq!(at_most(0.0005), Some(2.0), "two runs on time: {buckets:?}");
    assert_eq!(
        at_most(10.0),
        Some(2.0),
        "four waited 20 s or more: {buckets:?}"
    );
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

#[tokio::test(start_paused = true)]
async fn after_shutdown_a_run_waiting_for_its_server_slot_never_starts() {
    // Ten runs planned at 10:00:00 against a server that takes two at a time.
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 9, 59, 59).unwrap();
    let mut text = String::from(
        "servers:\n  erp: {base_url: 'http://127.0.0.1:1/erp', max_concurrent: 2}\nprobes:\n",
    );
    for i in 0..10 {
        text.push_str(&format!(
            "  - {{name: w{i}, server: erp, code: CODE{i}, schedule: '* * * * *', timeout: 30s}}\n"
        ));
    }
    let harness = start(&text, wall, Duration::from_secs(20));
    let scheduler = &harness.scheduler;
    wait_until(
        Duration::from_secs(10),
        "two runs and eight waiting",
        || {
            harness.calls.lock().unwrap().len() == 2
                && scheduler.probes().iter().filter(|p| p.is_running()).count() == 10
        },
    )
    .await;
    let stopped_at = Instant::now();
    scheduler.shutdown().await;
    assert_eq!(
        harness.calls.lock().unwrap().len(),
        2,
        "runs waiting for a slot started after the shutdown"
    );
    assert!(stopped_at.elapsed() <= Duration::from_secs(20));
    assert!(scheduler.probes().iter().all(|p| !p.is_running()));
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    assert_eq!(
        scrape.value("webhook_exporter_probes_in_flight", &[]),
        Some(0.0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_server_waiting_for_its_cap_never_delays_the_probes_of_another_server() {
    // Server `slow` takes 4 runs at a time and answers in 30 s; its 300 probes queue up far
    // beyond the global cap of 8. The probes of server `healthy` must not notice.
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let mut text = String::from(
        "max_concurrent_probes: 8\nservers:\n  slow: {base_url: 'http://127.0.0.1:1/a', max_concurrent: 4}\n  healthy: {base_url: 'http://127.0.0.1:1/b'}\nprobes:\n",
    );
    for i in 0..300 {
        text.push_str(&format!(
            "  - {{name: a{i}, server: slow, code: CODE{i}, interval: 1m, timeout: 30s}}\n"
        ));
    }
    let healthy = ["b0", "b1", "b2", "b3"];
    for name in healthy {
        text.push_str(&format!(
            "  - {{name: {name}, server: healthy, code: CODE, interval: 10s, timeout: 5s}}\n"
        ));
    }
    let harness = start_by(&text, wall, |spec| {
        if spec.server.as_deref() == Some("slow") {
            Duration::from_secs(30)
        } else {
            Duration::from_millis(10)
        }
    });
    tokio::time::sleep(Duration::from_secs(125)).await;
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    let period = Duration::from_secs(10);
    for name in healthy {
        let starts = starts_of(&harness.calls, name);
        let offset = phase_offset(name, period).as_secs_f64();
        let slots = (0..13)
            .filter(|k| offset + 10.0 * f64::from(*k) <= 125.0)
            .count();
        assert_eq!(starts.len(), slots, "{name} missed runs: {starts:?}");
        for start in &starts {
            // Each run starts on its planned instant: no schedule lag.
            let lag =
                nanos_into_period(*start, period).abs_diff(phase_offset(name, period).as_nanos());
            assert!(lag < 1_000_000, "{name} at {start}: started {lag} ns late");
        }
        assert_eq!(
            scrape.value("webhook_probe_skipped_total", &[("probe", name)]),
            Some(0.0),
            "{name} had runs skipped"
        );
    }
    // The slow server was really saturated (so the test means something).
    let slow_runs = harness
        .calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n.starts_with('a'))
        .count();
    assert!(slow_runs <= 4 * 5, "{slow_runs}");
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_run_that_panics_is_an_other_failure_and_the_probe_keeps_its_schedule() {
    let config =
        parse("probes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 5s}\n");
    let calls = Arc::new(AtomicUsize::new(0));
    let metrics = Arc::new(Metrics::new().unwrap());
    let clock = Clock::simulated(Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap());
    let scheduler = Scheduler::start(
        &config,
        metrics.clone(),
        panics_first(calls.clone()),
        clock,
        CancellationToken::new(),
    );
    tokio::time::sleep(Duration::from_secs(35)).await;
    let scrape = common::Scrape::parse(&metrics.encode());
    let runs = |result| {
        scrape.value(
            "webhook_probe_runs_total",
            &[("probe", "p"), ("result", result)],
        )
    };
    assert_eq!(
        runs("failure"),
        Some(1.0),
        "the panicking run is one failure"
    );
    assert_eq!(
        scrape.value(
            "webhook_probe_failures_total",
            &[("probe", "p"), ("reason", "other")]
        ),
        Some(1.0)
    );
    assert!(
        runs("success").unwrap_or(0.0) >= 2.0,
        "the timer went on after the panic"
    );
    assert_eq!(
        scrape.value("webhook_exporter_probes_in_flight", &[]),
        Some(0.0)
    );
    let state = scheduler.probe("p").unwrap();
    assert!(!state.is_running());
    assert!(state.next_run().unwrap() > clock.now(), "next_run is stale");
    let message = state
        .view(usize::MAX)
        .history
        .unwrap()
        .iter()
        .find(|r| !r.success)
        .map(|r| r.message.clone())
        .unwrap();
    assert!(message.contains("panicked"), "{message}");
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_run_that_panics_answers_a_failed_result_and_the_next_one_runs() {
    let config = parse(
        "run_now_min_gap: 0s\nprobes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 5s}\n",
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let scheduler = Scheduler::start(
        &config,
        Arc::new(Metrics::new().unwrap()),
        panics_first(calls.clone()),
        Clock::simulated(Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap()),
        CancellationToken::new(),
    );
    let first = scheduler
        .run_now("p")
        .await
        .expect("a result, not an error");
    assert!(!first.success);
    assert_eq!(first.reason.map(|r| r.as_label()), Some("other"));
    assert!(first.message.contains("panicked"), "{}", first.message);
    let second = scheduler.run_now("p").await.expect("not stuck as running");
    assert!(second.success);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_run_sooner_than_run_now_min_gap_is_refused_with_the_wait() {
    let wall = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 5s}\n",
        wall,
        Duration::from_secs(1),
    );
    let scheduler = &harness.scheduler;
    assert!(scheduler.run_now("p").await.unwrap().success);
    // The default gap is 10 s, counted from the start of the last run (1 s ago).
    let refused = scheduler.run_now("p").await.unwrap_err();
    assert!(
        matches!(&refused, RunNowError::TooSoon { wait, .. } if *wait == Duration::from_secs(9)),
        "{refused:?}"
    );
    assert_eq!(refused.retry_after_secs(), Some(9));
    assert!(refused.to_string().contains("run_now_min_gap"), "{refused}");
    tokio::time::sleep(Duration::from_millis(8_500)).await;
    assert_eq!(
        scheduler.run_now("p").await.unwrap_err().retry_after_secs(),
        Some(1)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(scheduler.run_now("p").await.unwrap().success);
    assert_eq!(harness.calls.lock().unwrap().len(), 2);
    harness.scheduler.shutdown().await;
}

// The same scheduler on real probe threads, as production runs it (`App::start` hands it
// `ProbeRuntimes`): real time, so short durations and bounded polls.

struct Threaded {
    calls: Calls,
    peak: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    scheduler: Scheduler,
    runtimes: Option<ProbeRuntimes>,
}

impl Threaded {
    fn start(text: &str, runner: impl FnOnce(Calls, Arc<AtomicUsize>) -> Runner) -> Self {
        let config = parse(text);
        let calls: Calls = Arc::default();
        let peak = Arc::new(AtomicUsize::new(0));
        let metrics = Arc::new(Metrics::new().unwrap());
        let runtimes = ProbeRuntimes::start(2).unwrap();
        let scheduler = Scheduler::on_runtimes(
            metrics.clone(),
            runner(calls.clone(), peak.clone()),
            Clock::System,
            CancellationToken::new(),
            runtimes.handles(),
        );
        scheduler.apply(&config);
        Self {
            calls,
            peak,
            metrics,
            scheduler,
            runtimes: Some(runtimes),
        }
    }

    async fn stop(mut self) {
        self.scheduler.shutdown().await;
        // Joining the threads blocks: off the test's runtime.
        let runtimes = self.runtimes.take();
        tokio::task::spawn_blocking(move || drop(runtimes))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn on_probe_threads_the_server_cap_holds_and_a_shutdown_starts_no_waiting_run() {
    let mut text = String::from(
        "servers:\n  erp: {base_url: 'http://127.0.0.1:1/erp', max_concurrent: 1}\nprobes:\n",
    );
    for i in 0..4 {
        text.push_str(&format!(
            "  - {{name: w{i}, server: erp, code: CODE{i}, interval: 1s, timeout: 900ms}}\n"
        ));
    }
    let threaded = Threaded::start(&text, |calls, peak| {
        stub(Clock::System, Duration::from_millis(600), calls, peak)
    });
    let scheduler = &threaded.scheduler;
    // Wait until one run is going and others wait for the slot...
    wait_until(
        Duration::from_secs(20),
        "runs queued behind the cap",
        || scheduler.probes().iter().filter(|p| p.is_running()).count() >= 3,
    )
    .await;
    // ...then for a run that has just started (600 ms from its end), and stop.
    let seen = threaded.calls.lock().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(10);
    while threaded.calls.lock().unwrap().len() == seen {
        assert!(Instant::now() < deadline, "no run started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let at_stop = threaded.calls.lock().unwrap().len();
    let metrics = threaded.metrics.clone();
    let calls = threaded.calls.clone();
    assert_eq!(threaded.peak.load(Ordering::SeqCst), 1);
    assert!(scheduler.probes().iter().filter(|p| p.is_running()).count() >= 2);
    threaded.stop().await;
    assert_eq!(
        calls.lock().unwrap().len(),
        at_stop,
        "a waiting run started after the shutdown"
    );
    let scrape = common::Scrape::parse(&metrics.encode());
    assert_eq!(
        scrape.value("webhook_exporter_probes_in_flight", &[]),
        Some(0.0)
    );
}

#[tokio::test]
async fn on_probe_threads_a_panicking_run_fails_with_other_and_the_probe_runs_again() {
    let counted = Arc::new(AtomicUsize::new(0));
    let runner_calls = counted.clone();
    let threaded = Threaded::start(
        "run_now_min_gap: 0s\nprobes:\n  - {name: p, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 5s}\n  - {name: q, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 5s}\n",
        move |_, _| panics_first(runner_calls),
    );
    let first = threaded
        .scheduler
        .run_now("p")
        .await
        .expect("a result, not an error");
    assert_eq!(first.reason.map(|r| r.as_label()), Some("other"));
    assert!(!threaded.scheduler.probe("p").unwrap().is_running());
    assert!(threaded.scheduler.run_now("p").await.unwrap().success);
    assert!(threaded.scheduler.run_now("q").await.unwrap().success);
    let scrape = common::Scrape::parse(&threaded.metrics.encode());
    assert_eq!(
        scrape.value(
            "webhook_probe_failures_total",
            &[("probe", "p"), ("reason", "other")]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("webhook_exporter_probes_in_flight", &[]),
        Some(0.0)
    );
    assert_eq!(counted.load(Ordering::SeqCst), 3);
    threaded.stop().await;
}

#[test]
fn run_now_min_gap_defaults_to_10s_takes_a_duration_and_0s_turns_it_off() {
    let probe = "probes:\n  - {name: p, url: 'http://127.0.0.1:1/'}\n";
    assert_eq!(parse(probe).run_now_min_gap, Duration::from_secs(10));
    for (text, gap) in [("0s", 0), ("0ms", 0), ("2m", 120), ("1m30s", 90)] {
        let config = parse(&format!("run_now_min_gap: {text}\n{probe}"));
        assert_eq!(config.run_now_min_gap, Duration::from_secs(gap), "{text}");
    }
    let error = config::parse(
        Path::new("test.yaml"),
        &format!("run_now_min_gap: 10\n{probe}"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.starts_with("test.yaml:1:18: run_now_min_gap: duration \"10\" has no unit"),
        "{error}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_run_gauge_is_the_planned_start_of_the_next_scheduled_run() {
    // Saturday 2027-03-27 12:00 UTC; a cron probe in Paris and an interval probe.
    let wall = Utc.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: nightly, url: 'http://127.0.0.1:1/', schedule: '30 2 * * *', timezone: Europe/Paris, timeout: 10s}\n  - {name: often, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 1s}\n",
        wall,
        Duration::from_millis(1),
    );
    tokio::time::sleep(Duration::from_millis(1)).await;
    let next_of = |name: &str| {
        common::Scrape::parse(&harness.metrics.encode()).value(
            "webhook_probe_next_run_timestamp_seconds",
            &[("probe", name)],
        )
    };
    // 02:30 does not exist on the 28th: 03:00 CEST = 01:00 UTC.
    let first = Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0).unwrap();
    assert_eq!(next_of("nightly"), Some(first.timestamp() as f64));
    let offset = phase_offset("often", Duration::from_secs(10)).as_secs_f64();
    let planned = next_of("often").unwrap();
    assert!(
        (planned - (wall.timestamp() as f64 + offset)).abs() < 1e-6,
        "{planned} vs offset {offset}"
    );
    // After the interval probe ran, the gauge moved to the start of the call after it.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let starts = starts_of(&harness.calls, "often");
    let last = starts.last().unwrap();
    let planned = next_of("often").unwrap();
    let expected = (*last + chrono::TimeDelta::seconds(10)).timestamp_micros() as f64 / 1e6;
    assert!((planned - expected).abs() < 0.01, "{planned} vs {expected}");
    tokio::time::sleep(Duration::from_secs(14 * 3600)).await;
    let second = Utc.with_ymd_and_hms(2027, 3, 29, 0, 30, 0).unwrap();
    assert_eq!(starts_of(&harness.calls, "nightly"), vec![first]);
    assert_eq!(next_of("nightly"), Some(second.timestamp() as f64));
    harness.scheduler.shutdown().await;
    // Stopped: no next run.
    assert_eq!(next_of("nightly"), None);
}

/// The second of the minute `t` falls in (0..60), as a float.
fn second_of_minute(t: DateTime<Utc>) -> f64 {
    (t.timestamp_nanos_opt().unwrap() % 60_000_000_000) as f64 / 1e9
}

/// A config of one interval probe (every 10 s) with a window opening every minute for 30 s.
fn windowed(mode: &str) -> String {
    format!(
        "probes:\n  - name: p\n    url: 'http://127.0.0.1:1/'\n    interval: 10s\n    timeout: 1s\n    maintenance:\n      - {{schedule: '* * * * *', duration: 30s, mode: {mode}}}\n"
    )
}

#[tokio::test(start_paused = true)]
async fn in_skip_mode_no_scheduled_run_starts_inside_a_window_and_none_is_counted_skipped() {
    let wall = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let harness = start(&windowed("skip"), wall, Duration::from_millis(5));
    let gauge = |metrics: &Metrics| {
        common::Scrape::parse(&metrics.encode())
            .value("webhook_probe_maintenance", &[("probe", "p")])
    };
    // 10:00:15: inside the first window.
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert_eq!(gauge(&harness.metrics), Some(1.0), "open at :15");
    // 10:00:45: outside.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(gauge(&harness.metrics), Some(0.0), "closed at :45");
    // To 10:03:00.5: inside the fourth window, which holds no run.
    tokio::time::sleep(Duration::from_millis(135_500)).await;
    let starts = starts_of(&harness.calls, "p");
    // Three minutes, three runs outside each window (at :3x, :4x, :5x), none inside.
    assert_eq!(starts.len(), 9, "{starts:?}");
    for start in &starts {
        assert!(
            second_of_minute(*start) >= 30.0,
            "a run inside a window: {start}"
        );
    }
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    assert_eq!(
        scrape.value("webhook_probe_skipped_total", &[("probe", "p")]),
        Some(0.0)
    );
    // The next run announced is the first one after the window now open.
    let next = scrape
        .value(
            "webhook_probe_next_run_timestamp_seconds",
            &[("probe", "p")],
        )
        .unwrap();
    let next = DateTime::from_timestamp_micros((next * 1e6) as i64).unwrap();
    assert!(second_of_minute(next) >= 30.0, "{next}");
    assert!(next > wall + chrono::TimeDelta::minutes(3));
    let view = harness.scheduler.probe("p").unwrap().view(0);
    assert_eq!(
        view.maintenance_until,
        Some(wall + chrono::TimeDelta::seconds(3 * 60 + 30))
    );
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn in_mute_mode_runs_go_on_inside_a_window_and_the_gauge_still_flips() {
    let wall = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let harness = start(&windowed("mute"), wall, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(15)).await;
    let open = common::Scrape::parse(&harness.metrics.encode())
        .value("webhook_probe_maintenance", &[("probe", "p")]);
    assert_eq!(open, Some(1.0));
    let view = harness.scheduler.probe("p").unwrap().view(0);
    assert_eq!(view.maintenance_mode, Some("mute"));
    tokio::time::sleep(Duration::from_secs(165)).await; // to 10:03:00
    let starts = starts_of(&harness.calls, "p");
    assert_eq!(starts.len(), 18, "{starts:?}");
    assert!(starts.iter().any(|s| second_of_minute(*s) < 30.0));
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_probe_without_windows_reads_maintenance_zero() {
    let wall = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let harness = start(
        "probes:\n  - {name: plain, url: 'http://127.0.0.1:1/', interval: 10s, timeout: 1s}\n",
        wall,
        Duration::from_millis(5),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scrape = common::Scrape::parse(&harness.metrics.encode());
    assert_eq!(
        scrape.value("webhook_probe_maintenance", &[("probe", "plain")]),
        Some(0.0)
    );
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_on_demand_run_inside_a_skip_window_still_runs() {
    let wall = Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap();
    let harness = start(&windowed("skip"), wall, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let state = harness.scheduler.probe("p").unwrap();
    assert!(state.maintenance().is_some_and(|w| w.skip));
    let outcome = harness.scheduler.run_now("p").await.unwrap();
    assert!(outcome.success);
    assert_eq!(starts_of(&harness.calls, "p").len(), 1);
    harness.scheduler.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_probes_hold_no_task_each_and_a_removed_probe_is_let_go_at_once() {
    let mut text = String::from("probes:\n");
    for i in 0..500 {
        text.push_str(&format!(
            "  - {{name: p{i}, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 1s}}\n"
        ));
    }
    text.push_str(
        "  - {name: new-year, url: 'http://127.0.0.1:1/', schedule: '0 0 1 1 *', timeout: 1s}\n",
    );
    let wall = Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 0).unwrap();
    let harness = start(&text, wall, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A task per probe costs about a kilobyte each at 10,000 probes; the plan needs none.
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert!(alive < 10, "{alive} tasks alive for 501 idle probes");
    // Removed, a probe whose next run is a month away is not kept until then.
    let new_year = harness.scheduler.probe("new-year").unwrap();
    harness.scheduler.apply(&parse(
        "probes:\n  - {name: p0, url: 'http://127.0.0.1:1/', interval: 1h, timeout: 1s}\n",
    ));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        Arc::strong_count(&new_year),
        1,
        "the removed probe's state is still held"
    );
    harness.scheduler.shutdown().await;
}
