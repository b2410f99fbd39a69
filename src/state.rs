//! The read model: each probe's live state behind methods that never hand out a lock guard.
//!
//! Shaped like mini-redis's `db.rs`: [`Probes`] is a cheap handle (an `Arc` inside) on the
//! set of running probes, and each [`ProbeState`] keeps its own small locks private. The
//! scheduler writes through them (`record`, `set_next_run`, `try_claim`...: crate-only); the
//! server reads owned, serializable views ([`ProbeView`], [`ResultView`]) and never sees a
//! lock, a [`History`] or an [`Outcome`]. The scheduler keeps its own map of the same probes
//! beside their timers' cancel tokens and publishes the set here after each config.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use crate::config::ProbeSpec;
use crate::history::{History, Record};
use crate::metrics::{Metrics, ProbeMetrics};
use crate::probe::{Outcome, Phases, RunId, TlsDetails};
use crate::sync::lock;

/// The probes of the running config, by name: the handle the server reads views from.
#[derive(Clone, Default)]
pub struct Probes {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    probes: Mutex<BTreeMap<String, Arc<ProbeState>>>,
}

impl Probes {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the set with `probes` (the scheduler calls it once per applied config).
    pub(crate) fn publish(&self, probes: impl IntoIterator<Item = Arc<ProbeState>>) {
        let probes = probes
            .into_iter()
            .map(|probe| (probe.spec.name.clone(), probe))
            .collect();
        *lock(&self.shared.probes) = probes;
    }

    /// The state of one probe.
    pub fn get(&self, name: &str) -> Option<Arc<ProbeState>> {
        lock(&self.shared.probes).get(name).cloned()
    }

    /// Every probe's state, by name.
    pub fn all(&self) -> Vec<Arc<ProbeState>> {
        lock(&self.shared.probes).values().cloned().collect()
    }

    /// Number of probes.
    pub fn len(&self) -> usize {
        lock(&self.shared.probes).len()
    }

    /// Whether no probe is configured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The view of one probe, with at most `history` past results.
    pub fn view(&self, name: &str, history: usize) -> Option<ProbeView> {
        self.get(name).map(|probe| probe.view(history))
    }

    /// Run `id` with its probe's name, while it is in that probe's history.
    ///
    /// A scan of every history from the newest result: nothing to keep in step with the
    /// histories, and no memory beyond them (an index of a million runs would cost tens of
    /// megabytes). Measured at 10,000 probes keeping 100 results each: see
    /// `finding_a_run_among_a_million_takes_milliseconds`.
    pub fn find_run(&self, id: RunId) -> Option<RunView> {
        // The set's lock is released before any probe's is taken.
        self.all().iter().find_map(|probe| {
            let result = lock(&probe.history).find(id).map(ResultView::from)?;
            Some(RunView {
                probe: probe.spec.name.clone(),
                result,
            })
        })
    }

    /// The probes `filter` keeps, by name: how many there are, and those from `offset` on
    /// (at most `limit`). The caller builds only the views of that page, so a small page of
    /// a large set costs little.
    pub fn select(
        &self,
        filter: &ProbeFilter,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<Arc<ProbeState>>) {
        let mut matching: Vec<Arc<ProbeState>> = self
            .all()
            .into_iter()
            .filter(|probe| filter.keeps(probe))
            .collect();
        let total = matching.len();
        matching.truncate(offset.saturating_add(limit));
        matching.drain(..offset.min(total));
        (total, matching)
    }
}

/// Where a probe stands, from its last result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The last run succeeded.
    Ok,
    /// The last run failed.
    Failing,
    /// No run yet.
    Pending,
}

/// Which probes a list keeps: all the given conditions hold.
#[derive(Debug, Clone, Default)]
pub struct ProbeFilter {
    /// Only probes in this state.
    pub health: Option<Health>,
    /// Only probes of this server.
    pub server: Option<String>,
    /// Only probes whose name contains this, in any case.
    pub name_contains: Option<String>,
}

impl ProbeFilter {
    /// Whether `probe` passes every condition given.
    pub fn keeps(&self, probe: &ProbeState) -> bool {
        let spec = &probe.spec;
        self.server
            .as_ref()
            .is_none_or(|server| spec.server.as_ref() == Some(server))
            && self.name_contains.as_ref().is_none_or(|part| {
                spec.name
                    .to_lowercase()
                    .contains(part.to_lowercase().as_str())
            })
            && self.health.is_none_or(|health| probe.health() == health)
    }
}

/// Live state of one probe, shared by its timer, its runs and the read side.
pub struct ProbeState {
    /// The probe's settings.
    pub spec: Arc<ProbeSpec>,
    /// Its metric series.
    pub metrics: Arc<ProbeMetrics>,
    /// The registry its results are recorded in.
    registry: Arc<Metrics>,
    /// Its recent results.
    history: Mutex<History>,
    /// What the last run's connection showed beyond its history record (TLS, HTTP version),
    /// for the API's last result.
    last_connection: Mutex<LastConnection>,
    /// Set while a run waits for a slot or runs: the no-overlap rule.
    running: AtomicBool,
    /// Next planned run, for the API and the status page.
    next_run: Mutex<Option<DateTime<Utc>>>,
    /// The config file the probe is written in: it may move to another file without a
    /// restart (the file is no setting), so it is kept apart from the spec.
    file: Mutex<String>,
    /// The maintenance window open now, kept by the scheduler at each window edge.
    maintenance: Mutex<Option<OpenWindow>>,
    /// When the last run (scheduled or on-demand) started calling the target: on-demand
    /// runs keep `run_now_min_gap` from it.
    last_start: Mutex<Option<Instant>>,
}

/// What the last run's connection showed, kept apart from the compact history.
#[derive(Debug, Clone, Default)]
struct LastConnection {
    tls: Option<TlsDetails>,
    http_version: Option<&'static str>,
}

impl ProbeState {
    /// A probe that has not run yet, keeping `history_size` results, recording into its
    /// series `metrics` of `registry`.
    pub(crate) fn new(
        spec: Arc<ProbeSpec>,
        metrics: Arc<ProbeMetrics>,
        registry: Arc<Metrics>,
        history_size: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            file: Mutex::new(spec.origin.file.display().to_string()),
            spec,
            metrics,
            registry,
            history: Mutex::new(History::new(history_size)),
            last_connection: Mutex::default(),
            running: AtomicBool::new(false),
            next_run: Mutex::new(None),
            maintenance: Mutex::new(None),
            last_start: Mutex::new(None),
        })
    }

    /// Whether a run is waiting or in progress.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// The next planned run.
    pub fn next_run(&self) -> Option<DateTime<Utc>> {
        *lock(&self.next_run)
    }

    /// Sets the next planned run (`None`: none planned).
    pub(crate) fn set_next_run(&self, next: Option<DateTime<Utc>>) {
        *lock(&self.next_run) = next;
        self.metrics
            .set_next_run(next.map(std::time::SystemTime::from));
    }

    /// The config file the probe is written in.
    pub fn file(&self) -> String {
        lock(&self.file).clone()
    }

    /// Notes the file the probe is written in now (a reload kept it while it moved).
    pub(crate) fn set_file(&self, file: &std::path::Path) {
        *lock(&self.file) = file.display().to_string();
    }

    /// The maintenance window open now, if any.
    pub fn maintenance(&self) -> Option<OpenWindow> {
        *lock(&self.maintenance)
    }

    /// Sets the maintenance window open now (`None`: none is), and its gauge.
    pub(crate) fn set_maintenance(&self, open: Option<OpenWindow>) {
        *lock(&self.maintenance) = open;
        self.metrics.set_maintenance(open.is_some());
    }

    /// Changes how many results are kept (a reload), dropping the oldest beyond it.
    pub(crate) fn set_history_capacity(&self, capacity: usize) {
        lock(&self.history).set_capacity(capacity);
    }

    /// Claims the probe for one run; `None` when a run is already going.
    pub(crate) fn try_claim(self: &Arc<Self>) -> Option<Claim> {
        self.running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim(self.clone()))
    }

    /// Notes that a run starts calling the target now (for `run_now_min_gap`).
    pub(crate) fn mark_started(&self) {
        *lock(&self.last_start) = Some(Instant::now());
    }

    /// How long an on-demand run must still wait to be `min_gap` after the last run's start.
    pub(crate) fn wait_before_run_now(&self, min_gap: Duration) -> Option<Duration> {
        let last = (*lock(&self.last_start))?;
        let wait = (last + min_gap).saturating_duration_since(Instant::now());
        (!wait.is_zero()).then_some(wait)
    }

    /// Records an outcome in the metrics and the history, and logs it (once, here).
    pub(crate) fn record(&self, outcome: &Outcome) {
        let spec = &self.spec;
        self.registry.record(&self.metrics, outcome);
        match outcome.reason {
            // The failure text is the event's message, so both formats carry it as `message`/`msg`.
            Some(reason) => tracing::warn!(
                probe = %spec.name,
                run_id = %outcome.run_id,
                reason = reason.as_label(),
                http_status = outcome.http_status.unwrap_or(0),
                duration_seconds = outcome.duration.as_secs_f64(),
                "{}",
                outcome.message
            ),
            None => tracing::debug!(
                probe = %spec.name,
                run_id = %outcome.run_id,
                http_status = outcome.http_status.unwrap_or(0),
                response_code = outcome.response_code.as_deref().unwrap_or(""),
                duration_seconds = outcome.duration.as_secs_f64(),
                "probe succeeded"
            ),
        }
        lock(&self.history).push(outcome);
        *lock(&self.last_connection) = LastConnection {
            tls: outcome.tls.clone(),
            http_version: outcome.http_version,
        };
    }

    /// Carries on from what the store kept (`--storage.path`): the history, the gauges of
    /// the last run, the streak, the last success and the next planned run. Counts no run:
    /// counters start from 0 after a restart, which Prometheus reads as a counter reset.
    pub(crate) fn restore(&self, saved: crate::storage::Saved) {
        let Some(last) = saved.results.last() else {
            return;
        };
        let last = Outcome {
            http_version: saved.http_version,
            tls: saved.tls.clone(),
            ..last.clone()
        };
        self.metrics
            .restore(&last, saved.consecutive_failures, saved.last_success);
        {
            let mut history = lock(&self.history);
            for result in &saved.results {
                history.push(result);
            }
        }
        *lock(&self.last_connection) = LastConnection {
            tls: saved.tls,
            http_version: saved.http_version,
        };
        if let Some(next) = saved.next_run {
            self.set_next_run(Some(utc(next)));
        }
    }

    /// Where the probe stands, from its last result.
    pub fn health(&self) -> Health {
        match lock(&self.history).last() {
            None => Health::Pending,
            Some(record) if record.success() => Health::Ok,
            Some(_) => Health::Failing,
        }
    }

    /// The view of this probe in a list: with at most `history` past results, or without a
    /// `history` field when `None`.
    pub fn list_view(&self, history: Option<usize>) -> ProbeView {
        let mut view = self.view(history.unwrap_or(0));
        if history.is_none() {
            view.history = None;
        }
        view
    }

    /// The view of this probe, with at most `history` past results.
    pub fn view(&self, history: usize) -> ProbeView {
        let spec = &self.spec;
        let (last_result, results, consecutive_failures, last_failure) = {
            let kept = lock(&self.history);
            let results: Vec<ResultView> = kept.recent(history).map(ResultView::from).collect();
            let consecutive = kept.consecutive_failures();
            // The last result, with what its connection showed (TLS, HTTP version).
            let last = kept.last().map(|record| {
                let connection = lock(&self.last_connection).clone();
                ResultView {
                    tls: connection.tls,
                    http_version: connection.http_version,
                    ..ResultView::from(record)
                }
            });
            let failure = kept
                .iter()
                .rev()
                .find(|r| !r.success())
                .map(ResultView::from);
            (last, results, consecutive, failure)
        };
        let maintenance = self.maintenance();
        ProbeView {
            name: spec.name.clone(),
            server: spec.server.clone(),
            file: self.file(),
            url: spec.target.redacted(),
            method: spec.method.to_string(),
            schedule: spec.schedule.to_string(),
            timeout_seconds: spec.timeout.as_secs_f64(),
            labels: spec.labels.clone(),
            running: self.is_running(),
            next_run: self.next_run(),
            maintenance_until: maintenance.map(|m| m.until),
            maintenance_mode: maintenance.map(|m| m.mode()),
            consecutive_failures,
            last_result,
            history: Some(results),
            last_failure,
        }
    }
}

/// A maintenance window open now, merged with the windows it overlaps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenWindow {
    /// When the merged open span ends.
    pub until: DateTime<Utc>,
    /// Whether a `skip` window is open (scheduled runs do not start), not only `mute` ones.
    pub skip: bool,
}

impl OpenWindow {
    /// `skip` or `mute`: what the open windows do now.
    pub fn mode(&self) -> &'static str {
        if self.skip { "skip" } else { "mute" }
    }
}

/// A probe claimed for one run (the no-overlap rule). Dropping it frees the probe, however
/// the run ended: recorded, given up at shutdown, or dropped with its task.
pub struct Claim(Arc<ProbeState>);

impl Claim {
    /// The claimed probe.
    pub fn probe(&self) -> &Arc<ProbeState> {
        &self.0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// Why an on-demand run did not happen (the scheduler's answer, the API's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunNowError {
    /// No probe has that name.
    #[error("unknown probe \"{0}\"")]
    Unknown(String),
    /// A run of the probe is waiting or in progress.
    #[error("probe \"{0}\" is already running")]
    Running(String),
    /// The probe's last run started less than `run_now_min_gap` ago.
    #[error(
        "probe \"{name}\" started a run less than {} ago (run_now_min_gap): next on-demand run possible in {}s",
        humantime::format_duration(*min_gap),
        whole_seconds(*wait)
    )]
    TooSoon {
        /// The probe.
        name: String,
        /// `run_now_min_gap`.
        min_gap: Duration,
        /// Time left until an on-demand run is allowed.
        wait: Duration,
    },
    /// The probe was stopped (shutdown, or removed by a reload) before its run could start.
    #[error("probe \"{0}\" was stopped before its run could start")]
    Stopped(String),
    /// The run's task panicked outside the runner (a bug in the exporter).
    #[error("the run of probe \"{0}\" panicked")]
    Panicked(String),
}

impl RunNowError {
    /// For [`RunNowError::TooSoon`]: the wait in whole seconds, rounded up (`Retry-After`).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            RunNowError::TooSoon { wait, .. } => Some(whole_seconds(*wait)),
            _ => None,
        }
    }
}

/// `duration` in whole seconds, rounded up, at least 1.
fn whole_seconds(duration: Duration) -> u64 {
    (duration.as_secs() + u64::from(duration.subsec_nanos() > 0)).max(1)
}

/// One probe, as the API answers it (and the status page reads it).
#[derive(Debug, Clone, Serialize)]
pub struct ProbeView {
    /// The probe's name.
    pub name: String,
    /// Its server, if it has one.
    pub server: Option<String>,
    /// The config file it is written in (the main file or an included one).
    pub file: String,
    /// The URL with its code redacted: the code is a secret.
    pub url: String,
    /// HTTP method.
    pub method: String,
    /// `every 1m` or the cron expression and zone.
    pub schedule: String,
    /// Budget of one run.
    pub timeout_seconds: f64,
    /// Static labels.
    pub labels: BTreeMap<String, String>,
    /// A run is waiting for a slot or in progress.
    pub running: bool,
    /// The next planned run.
    #[serde(serialize_with = "rfc3339_seconds")]
    pub next_run: Option<DateTime<Utc>>,
    /// While a maintenance window is open: when it closes (`null` otherwise).
    #[serde(serialize_with = "rfc3339_seconds")]
    pub maintenance_until: Option<DateTime<Utc>>,
    /// While a maintenance window is open: `skip` (scheduled runs do not start) or `mute`.
    pub maintenance_mode: Option<&'static str>,
    /// Failed runs since the last success, within the kept results.
    pub consecutive_failures: usize,
    /// The last result, with its connection's TLS and HTTP version.
    pub last_result: Option<ResultView>,
    /// Past results, oldest first; `None` when not asked for (the list's default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<ResultView>>,
    /// The most recent failure within all kept results (the status page shows it while the
    /// probe is up again); not part of the API's answer.
    #[serde(skip)]
    pub last_failure: Option<ResultView>,
}

/// The answer of an on-demand run: its result, and whether it ran inside a maintenance
/// window (on-demand runs still run then; the caller is told).
#[derive(Debug, Clone, Serialize)]
pub struct RunAnswer {
    /// The run's result object.
    #[serde(flatten)]
    pub result: ResultView,
    /// A maintenance window of the probe was open when the run was asked for.
    pub maintenance: bool,
    /// When that window closes (absent outside a window).
    #[serde(
        serialize_with = "rfc3339_seconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub maintenance_until: Option<DateTime<Utc>>,
}

impl RunAnswer {
    /// `result`, run while `window` was open (or none was).
    pub fn new(result: ResultView, window: Option<OpenWindow>) -> Self {
        Self {
            result,
            maintenance: window.is_some(),
            maintenance_until: window.map(|w| w.until),
        }
    }
}

/// One run found by its id (`GET /api/v1/runs/{run_id}`): the result object and its probe.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    /// The probe that ran.
    pub probe: String,
    /// What the run gave.
    #[serde(flatten)]
    pub result: ResultView,
}

/// One result, as the contract's "result object".
#[derive(Debug, Clone, Serialize)]
pub struct ResultView {
    /// The run's id: exemplars and log lines name it.
    pub run_id: RunId,
    /// Whether the run succeeded.
    pub success: bool,
    /// Why it failed (`None` on success).
    pub reason: Option<&'static str>,
    /// Divalto's message or the error text.
    pub message: String,
    /// The HTTP status, when an answer came.
    pub http_status: Option<u16>,
    /// The Divalto code, when the body carried one.
    pub response_code: Option<String>,
    /// The whole run, retries included.
    pub duration_seconds: f64,
    /// Phases of the final attempt.
    pub phases: Phases,
    /// Attempts made.
    pub attempts: u32,
    /// Redirects followed.
    pub redirects: u32,
    /// Only on the last result and on-demand runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_version: Option<&'static str>,
    /// Only on the last result and on-demand runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsDetails>,
    /// Start of the run.
    #[serde(serialize_with = "rfc3339_millis")]
    pub started_at: DateTime<Utc>,
    /// End of the run.
    #[serde(serialize_with = "rfc3339_millis")]
    pub finished_at: DateTime<Utc>,
}

fn rfc3339_millis<S: Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn rfc3339_seconds<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Secs, true)),
        None => serializer.serialize_none(),
    }
}

fn utc(time: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(time)
}

impl From<&Record> for ResultView {
    fn from(record: &Record) -> Self {
        Self {
            run_id: record.run_id(),
            success: record.success(),
            reason: record.reason().map(|r| r.as_label()),
            message: record.message().to_owned(),
            http_status: record.http_status(),
            response_code: record.response_code().map(str::to_owned),
            duration_seconds: record.duration().as_secs_f64(),
            phases: record.phases(),
            attempts: record.attempts(),
            redirects: record.redirects(),
            http_version: None,
            tls: None,
            started_at: utc(record.started_at()),
            finished_at: utc(record.finished_at()),
        }
    }
}

impl From<&Outcome> for ResultView {
    fn from(outcome: &Outcome) -> Self {
        Self {
            run_id: outcome.run_id,
            success: outcome.success,
            reason: outcome.reason.map(|r| r.as_label()),
            message: outcome.message.clone(),
            http_status: outcome.http_status,
            response_code: outcome.response_code.clone(),
            duration_seconds: outcome.duration.as_secs_f64(),
            phases: outcome.phases,
            attempts: outcome.attempts,
            redirects: outcome.redirects,
            http_version: outcome.http_version,
            tls: outcome.tls.clone(),
            started_at: utc(outcome.started_at),
            finished_at: utc(outcome.finished_at),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A successful run with a fresh id.
    fn outcome() -> Outcome {
        let now = SystemTime::now();
        Outcome {
            run_id: RunId::next(),
            success: true,
            reason: None,
            message: "OK".into(),
            http_status: Some(200),
            response_code: Some("0".into()),
            duration: Duration::from_millis(3),
            phases: Phases::default(),
            attempts: 1,
            redirects: 0,
            tls: None,
            http_version: None,
            started_at: now,
            finished_at: now,
        }
    }

    /// `count` probes named `p00000`... that have not run, each keeping `history_size`
    /// results: their states, and a read model they are not yet published in.
    pub(crate) fn probe_states(
        count: usize,
        history_size: usize,
    ) -> (Probes, Vec<Arc<ProbeState>>) {
        let mut text = String::from("probes:\n");
        for i in 0..count {
            text.push_str(&format!(
                "  - {{name: p{i:05}, url: 'http://127.0.0.1:1/'}}\n"
            ));
        }
        let config = crate::config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
        let registry = Arc::new(Metrics::new().unwrap());
        let states = config
            .probes
            .iter()
            .map(|spec| {
                let metrics = registry.register_probe(spec, &[0.1, 1.0]);
                ProbeState::new(spec.clone(), metrics, registry.clone(), history_size)
            })
            .collect();
        (Probes::new(), states)
    }

    #[test]
    fn finding_a_run_among_a_million_takes_milliseconds() {
        // Arrange: 10,000 probes keeping 100 results each.
        let (probe_count, history_size) = (10_000, 100);
        let (probes, states) = probe_states(probe_count, history_size);
        let mut oldest_of_first = None;
        for (i, state) in states.iter().enumerate() {
            let mut history = lock(&state.history);
            for _ in 0..history_size {
                let run = outcome();
                if i == 0 {
                    oldest_of_first.get_or_insert(run.run_id);
                }
                history.push(&run);
            }
        }
        probes.publish(states);

        // Act: the first probe's oldest run (its whole history is scanned, newest first),
        // and an id kept nowhere: the worst case, all million records compared.
        let started = std::time::Instant::now();
        let found = probes.find_run(oldest_of_first.unwrap());
        let missing = probes.find_run(RunId::next());
        let took = started.elapsed() / 2;

        // Assert: found with its probe; a miss scans all million records.
        assert_eq!(found.map(|run| run.probe).as_deref(), Some("p00000"));
        assert!(missing.is_none());
        println!("find_run at {probe_count} probes x {history_size} results: {took:?} a lookup");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
