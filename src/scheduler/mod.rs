//! Time and tasks only: when to run what, never two runs of one probe at once, the global
//! and per-server caps, how late each run started, and what a new config changes.
//!
//! Each probe thread has one queue of planned instants and one task that sleeps until the
//! earliest ([`timers`]): at each instant due it starts the probe's run in a task of its own,
//! or, the previous run still going (or still waiting for a slot), skips and counts it, and
//! queues the probe's next instant, so the plan stays exact. A run waits for its server
//! slot, then for a global slot, and gives up when the probe is stopped before it got them;
//! a panic inside it is a failed run, never a lost plan. An on-demand run
//! ([`Scheduler::run_now`]) gets a task of its own, tracked like the others for shutdown.
//! Every outcome is recorded through the read model (`crate::state::ProbeState::record`):
//! the scheduler keeps no results itself. The probe itself is behind [`Runner`], so tests
//! drive the scheduler with a stub and paused tokio time.

mod clock;
mod run;
mod runtimes;
mod slots;
mod timers;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ProbeSpec};
use crate::metrics::Metrics;
use crate::probe::Outcome;
use crate::schedule::{MaintenanceMode, MaintenanceWindow, NextStart, maintenance};
use crate::state::{OpenWindow, Probes};
pub use crate::state::{ProbeState, RunNowError};
use crate::sync::lock;

pub use clock::Clock;
use run::run;
pub use runtimes::ProbeRuntimes;
use slots::{Permits, Slots};
use timers::{Due, Timers};

/// Runs one probe once. Production uses [`crate::probe::run`]; tests use stubs.
pub type Runner =
    Arc<dyn Fn(Arc<ProbeSpec>) -> Pin<Box<dyn Future<Output = Outcome> + Send>> + Send + Sync>;

/// The runner that really calls the webhook.
pub fn http_runner() -> Runner {
    Arc::new(|spec: Arc<ProbeSpec>| Box::pin(async move { crate::probe::run(&spec).await }))
}

/// What every timer and run shares.
struct Shared {
    metrics: Arc<Metrics>,
    runner: Runner,
    clock: Clock,
    tracker: TaskTracker,
    slots: Mutex<Slots>,
    /// `run_now_min_gap` of the running config.
    run_now_min_gap: Mutex<Duration>,
    /// Runtimes the probes are spread over (each probe always on the same one, so its timer,
    /// run and connection never wake another thread); empty: the current runtime.
    runtimes: Vec<tokio::runtime::Handle>,
    /// Where results are kept across restarts (`--storage.path`), if anywhere.
    storage: std::sync::OnceLock<crate::storage::Recorder>,
    /// What the store kept, by probe, until the first config is applied.
    restored: Mutex<BTreeMap<String, crate::storage::Saved>>,
    /// The planned instants, one queue per runtime (one for the current runtime).
    timers: Vec<Timers>,
    /// Set once the timer tasks were started (at the first probe).
    timers_started: std::sync::Once,
    /// The scheduler's: stops the timer tasks.
    cancel: CancellationToken,
}

impl Shared {
    /// Spawns `work` for probe `name` on its runtime, tracked for shutdown.
    fn spawn<F>(&self, name: &str, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let index = runtimes::runtime_of(name, self.runtimes.len().max(1));
        self.spawn_on(index, work)
    }

    /// Spawns `work` on runtime `index` (on the current one when the scheduler has none).
    fn spawn_on<F>(&self, index: usize, work: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match self.runtimes.get(index) {
            Some(runtime) => self.tracker.spawn_on(work, runtime),
            None => self.tracker.spawn(work),
        }
    }
}

impl Shared {
    /// The queue of probe `name`'s thread.
    fn timers_of(&self, name: &str) -> &Timers {
        &self.timers[runtimes::runtime_of(name, self.timers.len())]
    }

    /// Starts one timer task per runtime, once.
    fn start_timers(self: &Arc<Self>) {
        self.timers_started.call_once(|| {
            for index in 0..self.timers.len() {
                drop(self.spawn_on(index, drive_timers(self.clone(), index)));
            }
        });
    }

    /// Queues the next instant of a probe (`next`, planned from its schedule) and publishes
    /// it as the probe's next run. Nothing is queued for a probe stopped meanwhile, or whose
    /// schedule never fires again.
    fn plan(&self, state: Arc<ProbeState>, cancel: CancellationToken, next: NextStart) {
        if cancel.is_cancelled() {
            state.set_next_run(None);
            return;
        }
        state.set_next_run(next.at());
        let (wall, runs) = match next {
            NextStart::At(wall) => (wall, true),
            // An always-open skip window: nothing to plan before `resume`.
            NextStart::Blocked(resume) => (resume, false),
            NextStart::Never => return,
        };
        let at = self.clock.instant_at(wall);
        self.timers_of(&state.spec.name).insert(
            at,
            Due {
                state,
                cancel,
                wall,
                runs,
            },
        );
    }

    /// Handles one instant due: starts the run planned at it, or skips and counts it if the
    /// probe is still busy; then queues the probe's next instant. Instants inside a `skip`
    /// maintenance window are never planned at all (so never counted as skipped): the plan
    /// jumps to the first one after the window.
    fn handle(self: &Arc<Self>, at: Instant, due: Due) {
        let Due {
            state,
            cancel,
            wall,
            runs,
        } = due;
        if cancel.is_cancelled() {
            return;
        }
        // The next slot after this one; if the timer woke late, no burst of catch-up runs.
        let after = wall.max(self.clock.now());
        // One task plans every probe of its thread: a panic while planning one (a bug in
        // the schedule code) stops that probe's plan, never its neighbours'.
        let planned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.spec.next_start(after)
        }));
        let Ok(next) = planned else {
            tracing::error!(probe = %state.spec.name, "planning the next run panicked: the probe runs no more until the config is reloaded with a change to it");
            state.set_next_run(None);
            return;
        };
        if runs {
            match state.try_claim() {
                // A cancelled probe lets a run that started finish and be recorded; one still
                // waiting for a slot gives up.
                Some(claim) => {
                    drop(
                        self.tracker
                            .spawn(run(claim, self.clone(), Some(at), cancel.clone())),
                    )
                }
                None => {
                    state.metrics.skipped();
                    tracing::debug!(probe = %state.spec.name, "previous run still going: planned run skipped");
                }
            }
        }
        self.plan(state, cancel, next);
    }

    /// Waits for the server slot (capped servers), then a global slot; `None` when `cancel`
    /// fires first.
    async fn acquire(&self, spec: &ProbeSpec, cancel: &CancellationToken) -> Option<Permits> {
        let semaphores = lock(&self.slots).for_probe(spec);
        slots::acquire(semaphores, cancel).await
    }
}

/// What a new config changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReloadSummary {
    /// Probes that did not exist before.
    pub added: usize,
    /// Probes gone from the config.
    pub removed: usize,
    /// Probes whose settings changed (they start fresh).
    pub changed: usize,
    /// Probes kept as they were (schedule phase, counters, history).
    pub unchanged: usize,
}

impl std::fmt::Display for ReloadSummary {
    /// `1 added, 0 removed, 2 changed, 5 unchanged`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} removed, {} changed, {} unchanged",
            self.added, self.removed, self.changed, self.unchanged
        )
    }
}

struct Entry {
    state: Arc<ProbeState>,
    cancel: CancellationToken,
}

/// Runs the probes of the current config until shut down.
pub struct Scheduler {
    shared: Arc<Shared>,
    probes: Mutex<BTreeMap<String, Entry>>,
    /// The read model: the same probes, published for the server after each config.
    state: Probes,
    cancel: CancellationToken,
}

impl Scheduler {
    /// A scheduler with no probes; [`Scheduler::apply`] gives it a config.
    pub fn new(
        metrics: Arc<Metrics>,
        runner: Runner,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Self {
        Self::on_runtimes(metrics, runner, clock, cancel, Vec::new())
    }

    /// A scheduler spreading its probes over `runtimes` (see [`ProbeRuntimes`]).
    pub fn on_runtimes(
        metrics: Arc<Metrics>,
        runner: Runner,
        clock: Clock,
        cancel: CancellationToken,
        runtimes: Vec<tokio::runtime::Handle>,
    ) -> Self {
        let runtimes_count = runtimes.len();
        let shared = Arc::new(Shared {
            metrics,
            runner,
            clock,
            tracker: TaskTracker::new(),
            slots: Mutex::default(),
            run_now_min_gap: Mutex::new(crate::config::DEFAULT_RUN_NOW_MIN_GAP),
            runtimes,
            storage: std::sync::OnceLock::new(),
            restored: Mutex::default(),
            timers: (0..runtimes_count.max(1))
                .map(|_| Timers::default())
                .collect(),
            timers_started: std::sync::Once::new(),
            cancel: cancel.clone(),
        });
        Self {
            shared,
            probes: Mutex::default(),
            state: Probes::new(),
            cancel,
        }
    }

    /// Keeps results in a store from now on, and restores the probes of the next config
    /// (the first) from what it kept: call it before the first [`Scheduler::apply`].
    pub fn persist_to(
        &self,
        recorder: crate::storage::Recorder,
        saved: BTreeMap<String, crate::storage::Saved>,
    ) {
        let _ = self.shared.storage.set(recorder);
        *lock(&self.shared.restored) = saved;
    }

    /// Starts a scheduler running `config`.
    pub fn start(
        config: &Config,
        metrics: Arc<Metrics>,
        runner: Runner,
        clock: Clock,
        cancel: CancellationToken,
    ) -> Self {
        let scheduler = Self::new(metrics, runner, clock, cancel);
        scheduler.apply(config);
        scheduler
    }

    /// Moves to `config`: new probes start, removed ones stop and lose their series,
    /// unchanged ones keep their timer, counters and history, changed ones start fresh.
    /// A run in flight of a removed or changed probe completes and is recorded into its old,
    /// detached state, so it never resurrects removed series.
    pub fn apply(&self, config: &Config) -> ReloadSummary {
        self.apply_where(config, &|_| true)
    }

    /// [`Scheduler::apply`] for the probes of `config` whose name `keep` accepts (this
    /// replica's shard, [`crate::shard`]): the others are not scheduled, not counted and
    /// have no series, as if they were not in the config.
    pub fn apply_where(&self, config: &Config, keep: &dyn Fn(&str) -> bool) -> ReloadSummary {
        let metrics = &self.shared.metrics;
        self.update_slots(config);
        let mut summary = ReloadSummary::default();
        let mut probes = lock(&self.probes);
        let mut old = std::mem::take(&mut *probes);
        for spec in config.probes.iter().filter(|spec| keep(&spec.name)) {
            let entry = match old.remove(&spec.name) {
                Some(entry)
                    if entry.state.spec.same_settings(spec)
                        && entry.state.metrics.has_buckets(&config.duration_buckets) =>
                {
                    entry.state.set_history_capacity(config.history_size);
                    entry.state.set_file(&spec.origin.file);
                    summary.unchanged += 1;
                    entry
                }
                Some(entry) => {
                    self.stop(&spec.name, &entry);
                    summary.changed += 1;
                    self.spawn(spec.clone(), config)
                }
                None => {
                    summary.added += 1;
                    self.spawn(spec.clone(), config)
                }
            };
            probes.insert(spec.name.clone(), entry);
        }
        for (name, entry) in old {
            self.stop(&name, &entry);
            summary.removed += 1;
        }
        if summary.removed + summary.changed > 0 {
            for timers in &self.shared.timers {
                timers.forget_cancelled();
            }
        }
        metrics
            .probes_configured
            .set(i64::try_from(probes.len()).unwrap_or(i64::MAX));
        self.state
            .publish(probes.values().map(|entry| entry.state.clone()));
        // Only the first config restores; the store forgets what this one does not run.
        lock(&self.shared.restored).clear();
        if let Some(storage) = self.shared.storage.get() {
            let specs = probes.values().map(|e| e.state.spec.clone()).collect();
            storage.keep(specs, config.history_size);
        }
        summary
    }

    fn update_slots(&self, config: &Config) {
        lock(&self.shared.slots).update(config);
        *lock(&self.shared.run_now_min_gap) = config.run_now_min_gap;
    }

    fn spawn(&self, spec: Arc<ProbeSpec>, config: &Config) -> Entry {
        let state = ProbeState::new(
            spec.clone(),
            self.shared
                .metrics
                .register_probe(&spec, &config.duration_buckets),
            self.shared.metrics.clone(),
            config.history_size,
        );
        let saved = lock(&self.shared.restored).remove(&spec.name);
        if let Some(saved) = saved.filter(|saved| saved.digest == crate::storage::digest(&spec)) {
            state.restore(saved);
        }
        tracing::debug!(probe = %state.spec.name, url = %state.spec.target.redacted(), schedule = %state.spec.schedule, "probe scheduled");
        let cancel = self.cancel.child_token();
        self.shared.start_timers();
        let next = state.spec.next_start(self.shared.clock.now());
        self.shared.plan(state.clone(), cancel.clone(), next);
        if !state.spec.maintenance.is_empty() {
            let edges = maintenance_edges(state.clone(), self.shared.clone(), cancel.clone());
            self.shared.spawn(&state.spec.name, edges);
        }
        Entry { state, cancel }
    }

    fn stop(&self, name: &str, entry: &Entry) {
        entry.cancel.cancel();
        entry.state.set_next_run(None);
        self.shared.metrics.remove_probe(name, &entry.state.metrics);
    }

    /// The read model of the running probes (a cheap handle, for the server).
    pub fn state(&self) -> Probes {
        self.state.clone()
    }

    /// The state of a probe by name.
    pub fn probe(&self, name: &str) -> Option<Arc<ProbeState>> {
        lock(&self.probes).get(name).map(|e| e.state.clone())
    }

    /// Every probe's state, by name.
    pub fn probes(&self) -> Vec<Arc<ProbeState>> {
        lock(&self.probes)
            .values()
            .map(|e| e.state.clone())
            .collect()
    }

    /// Runs a probe now (the no-overlap rule and `run_now_min_gap` hold) and returns the
    /// recorded outcome.
    ///
    /// # Errors
    /// An unknown probe, one already running or that started a run too recently, one stopped
    /// before its run could start, or a run whose task panicked.
    pub async fn run_now(&self, name: &str) -> Result<Outcome, RunNowError> {
        let (state, cancel) = lock(&self.probes)
            .get(name)
            .map(|e| (e.state.clone(), e.cancel.clone()))
            .ok_or_else(|| RunNowError::Unknown(name.to_owned()))?;
        if state.is_running() {
            return Err(RunNowError::Running(name.to_owned()));
        }
        let min_gap = *lock(&self.shared.run_now_min_gap);
        if let Some(wait) = state.wait_before_run_now(min_gap) {
            return Err(RunNowError::TooSoon {
                name: name.to_owned(),
                min_gap,
                wait,
            });
        }
        let claim = state
            .try_claim()
            .ok_or_else(|| RunNowError::Running(name.to_owned()))?;
        // Tracked like scheduled runs, so a shutdown waits for it; and run in its own task, so a
        // client hanging up does not cancel a run that is already calling the ERP.
        let task = self
            .shared
            .spawn(name, run(claim, self.shared.clone(), None, cancel));
        match task.await {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(RunNowError::Stopped(name.to_owned())),
            Err(error) if error.is_panic() => Err(RunNowError::Panicked(name.to_owned())),
            Err(_) => Err(RunNowError::Stopped(name.to_owned())),
        }
    }

    /// Stops planning new runs and waits for the runs in flight (each bounded by its timeout).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.shared.tracker.close();
        self.shared.tracker.wait().await;
    }
}

/// The timer task of runtime `index`: waits for the instants of its probes and handles
/// each one due, until the scheduler stops.
async fn drive_timers(shared: Arc<Shared>, index: usize) {
    let mut due = Vec::new();
    while shared.timers[index].wait(&shared.cancel).await {
        shared.timers[index].take_due(Instant::now(), &mut due);
        for (at, one) in due.drain(..) {
            shared.handle(at, one);
        }
    }
    shared.timers[index].clear();
}

/// Keeps a probe's maintenance state (`webhook_probe_maintenance`, the API's
/// `maintenance_until`) right: wakes at each edge of its merged windows, run or no run.
async fn maintenance_edges(state: Arc<ProbeState>, shared: Arc<Shared>, cancel: CancellationToken) {
    let windows = &state.spec.maintenance;
    loop {
        let now = shared.clock.now();
        let until = maintenance::open_until(windows, now);
        state.set_maintenance(until.map(|until| OpenWindow {
            until,
            skip: maintenance::skips_at(windows, now),
        }));
        // A skip window may open inside a mute one (or close before it): wake then too.
        let Some(wake) = until
            .or_else(|| maintenance::next_opening(windows, now))
            .map(|edge| next_mode_change(windows, now).map_or(edge, |change| change.min(edge)))
        else {
            break;
        };
        tokio::select! {
            () = tokio::time::sleep_until(shared.clock.instant_at(wake)) => {}
            () = cancel.cancelled() => break,
        }
    }
}

/// While windows are open, the next instant the open span's mode (skip or mute) may change:
/// the next opening or end of a skip window. `None` when no window is open or none of them
/// skips.
fn next_mode_change(windows: &[MaintenanceWindow], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    maintenance::open_until(windows, now)?;
    let skip: Vec<MaintenanceWindow> = windows
        .iter()
        .filter(|w| w.mode == MaintenanceMode::Skip)
        .cloned()
        .collect();
    if skip.is_empty() || skip.len() == windows.len() {
        return None;
    }
    maintenance::open_until(&skip, now).or_else(|| maintenance::next_opening(&skip, now))
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
