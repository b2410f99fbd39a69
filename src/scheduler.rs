//! Time and tasks only: when to run what, never two runs of one probe at once, the global
//! and per-server caps, and how late each run started.
//!
//! One timer task per probe sleeps until the next planned instant, then hands the run to a
//! separate task. The timer never waits for the run, so the plan stays exact; a run still
//! going (or still waiting for a slot) when the next one is due makes that next one skipped
//! and counted. The probe itself is behind [`Runner`], so tests drive the scheduler with a
//! stub and paused tokio time.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ProbeSpec};
use crate::history::History;
use crate::metrics::{Metrics, ProbeMetrics};
use crate::probe::Outcome;

/// Runs one probe once. Production uses [`crate::probe::run`]; tests use stubs.
pub type Runner =
    Arc<dyn Fn(Arc<ProbeSpec>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// The runner that really calls the webhook.
pub fn http_runner() -> Runner {
    Arc::new(|spec: Arc<ProbeSpec>| Box::pin(async move { crate::probe::run(&spec).await }))
}

/// Wall-clock source. `System` in production; `Simulated` follows tokio's (possibly paused)
/// clock from a fixed wall-clock origin, so cron and interval plans are testable.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The real clock.
    System,
    /// `origin_wall` at `origin`, advancing with tokio time.
    Simulated {
        /// Tokio instant of the origin.
        origin: Instant,
        /// Wall-clock time at the origin.
        origin_wall: DateTime<Utc>,
    },
}

impl Clock {
    /// A simulated clock starting now at `wall`.
    pub fn simulated(wall: DateTime<Utc>) -> Self {
        Clock::Simulated {
            origin: Instant::now(),
            origin_wall: wall,
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Simulated {
                origin,
                origin_wall,
            } => {
                let elapsed = Instant::now().saturating_duration_since(*origin);
                *origin_wall + chrono::TimeDelta::from_std(elapsed).unwrap_or_default()
            }
        }
    }

    /// The tokio instant at which the wall clock reads `wall` (now, if that is past).
    pub fn instant_at(&self, wall: DateTime<Utc>) -> Instant {
        let ahead = (wall - self.now()).to_std().unwrap_or_default();
        Instant::now() + ahead
    }
}

/// Live state of one probe, shared by its timer, its runs and the HTTP side.
pub struct ProbeState {
    /// The probe's settings.
    pub spec: Arc<ProbeSpec>,
    /// Its metric handles.
    pub metrics: ProbeMetrics,
    /// Its recent outcomes.
    pub history: Mutex<History>,
    /// Set while a run waits for a slot or runs: the no-overlap rule.
    running: AtomicBool,
    /// Next planned run, for the API and `check-config`.
    next_run: Mutex<Option<DateTime<Utc>>>,
    /// Slots of the probe's server, when it has a cap.
    server_slots: Option<Arc<Semaphore>>,
}

impl ProbeState {
    /// Whether a run is waiting or in progress.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The next planned run.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        *lock(&self.next_run)
    }

    /// Claims the probe for one run; `false` when a run is already going.
    fn try_claim(&self) -> bool {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it: the data here
/// (histories, timestamps) stays consistent at every await-free step.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What every probe task shares.
struct Shared {
    metrics: Arc<Metrics>,
    runner: Runner,
    clock: Clock,
    global_slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

/// Runs the probes of a config until cancelled.
pub struct Scheduler {
    shared: Arc<Shared>,
    probes: HashMap<String, Arc<ProbeState>>,
    cancel: CancellationToken,
}

impl Scheduler {
    /// Starts one timer per probe of `config`.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        runner: Runner,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Self {
        let shared = Arc::new(Shared {
            metrics,
            runner,
            clock,
            global_slots: Arc::new(Semaphore::new(config.max_concurrent_probes)),
            tracker: TaskTracker::new(),
        });
        let server_slots: HashMap<&str, Arc<Semaphore>> = config
            .servers
            .values()
            .filter_map(|s| {
                s.max_concurrent
                    .map(|n| (s.name.as_str(), Arc::new(Semaphore::new(n))))
            })
            .collect();
        shared
            .metrics
            .probes_configured
            .set(i64::try_from(config.probes.len()).unwrap_or(i64::MAX));
        let mut probes = HashMap::new();
        for spec in &config.probes {
            let state = Arc::new(ProbeState {
                metrics: shared.metrics.register_probe(spec),
                history: Mutex::new(History::new(config.history_size)),
                running: AtomicBool::new(false),
                next_run: Mutex::new(None),
                server_slots: spec
                    .server
                    .as_deref()
                    .and_then(|s| server_slots.get(s).cloned()),
                spec: spec.clone(),
            });
            tracing::debug!(probe = %spec.name, url = %spec.target.redacted(), schedule = %spec.schedule, "probe scheduled");
            shared
                .tracker
                .spawn(timer(state.clone(), shared.clone(), cancel.child_token()));
            probes.insert(spec.name.clone(), state);
        }
        Self {
            shared,
            probes,
            cancel,
        }
    }

    /// The state of a probe by name.
    pub fn probe(&self, name: &str) -> Option<&Arc<ProbeState>> {
        self.probes.get(name)
    }

    /// Every probe's state.
    pub fn probes(&self) -> impl Iterator<Item = &Arc<ProbeState>> {
        self.probes.values()
    }

    /// Stops planning new runs and waits for the runs in flight (each bounded by its timeout).
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

/// The timer of one probe: sleep to the planned instant, start a run or skip it, repeat.
async fn timer(state: Arc<ProbeState>, shared: Arc<Shared>, cancel: CancellationToken) {
    let spec = state.spec.clone();
    let mut planned = spec.schedule.next_after(&spec.name, shared.clock.now());
    while let Some(wall) = planned {
        *lock(&state.next_run) = Some(wall);
        let deadline = shared.clock.instant_at(wall);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = cancel.cancelled() => break,
        }
        if state.try_claim() {
            shared
                .tracker
                .spawn(run(state.clone(), shared.clone(), deadline));
        } else {
            state.metrics.skipped();
            tracing::debug!(probe = %spec.name, "previous run still going: planned run skipped");
        }
        // The next slot after this one; if the timer itself woke late, no burst of catch-up runs.
        let now = shared.clock.now();
        planned = spec.schedule.next_after(&spec.name, wall.max(now));
    }
    *lock(&state.next_run) = None;
}

/// One run: wait for the slots, call the runner, record the outcome.
async fn run(state: Arc<ProbeState>, shared: Arc<Shared>, planned: Instant) {
    // Semaphores are never closed, so acquiring only fails if they were; then run uncapped.
    let _global = shared.global_slots.clone().acquire_owned().await.ok();
    let _server = match &state.server_slots {
        Some(slots) => slots.clone().acquire_owned().await.ok(),
        None => None,
    };
    shared
        .metrics
        .observe_lag(Instant::now().saturating_duration_since(planned));
    shared.metrics.probes_in_flight.inc();
    let outcome = (shared.runner)(state.spec.clone()).await;
    shared.metrics.probes_in_flight.dec();
    record(&state, &shared.metrics, outcome);
    state.running.store(false, Ordering::Release);
}

/// Records an outcome in the metrics and the history, and logs it (once, here).
pub fn record(state: &ProbeState, metrics: &Metrics, outcome: Outcome) -> Arc<Outcome> {
    let spec = &state.spec;
    metrics.record(&state.metrics, &outcome);
    match outcome.reason {
        // The failure text is the event's message, so both formats carry it as `message`/`msg`.
        Some(reason) => tracing::warn!(
            probe = %spec.name,
            reason = reason.as_label(),
            http_status = outcome.http_status.unwrap_or(0),
            duration_seconds = outcome.duration.as_secs_f64(),
            "{}",
            outcome.message
        ),
        None => tracing::debug!(
            probe = %spec.name,
            http_status = outcome.http_status.unwrap_or(0),
            response_code = outcome.response_code.as_deref().unwrap_or(""),
            duration_seconds = outcome.duration.as_secs_f64(),
            "probe succeeded"
        ),
    }
    let outcome = Arc::new(outcome);
    lock(&state.history).push(outcome.clone());
    outcome
}
