//! The values of each probe's series, recorded run by run.
//!
//! Kept here rather than in `prometheus` vectors so that a reload drops the series of removed
//! probes and leaves those of unchanged probes untouched, and so that recording a run touches
//! one small mutex-guarded struct.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use crate::sync::{lock, read, write};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::ProbeSpec;
use crate::probe::{FailureReason, Outcome, RunId};

use super::names;
use super::text::push_label;

/// Every probe's series, by probe name.
#[derive(Default)]
pub(super) struct Store {
    /// The bucket list of the last probe registered, shared by the probes using the same.
    buckets: Mutex<Option<Arc<[f64]>>>,
    probes: RwLock<BTreeMap<String, Arc<ProbeMetrics>>>,
}

impl Store {
    /// Creates the series of a probe, replacing one of the same name.
    pub(super) fn register(&self, spec: &Arc<ProbeSpec>, buckets: &[f64]) -> Arc<ProbeMetrics> {
        let mut info_labels = String::new();
        push_label(&mut info_labels, names::URL, &spec.target.redacted());
        push_label(&mut info_labels, names::METHOD, spec.method.as_str());
        push_label(
            &mut info_labels,
            names::SCHEDULE,
            &spec.schedule.to_string(),
        );
        // Probes share one bucket list (they all use the config's).
        let buckets: Arc<[f64]> = {
            let mut shared = lock(&self.buckets);
            match shared.as_ref() {
                Some(list) if **list == *buckets => list.clone(),
                _ => shared.insert(buckets.into()).clone(),
            }
        };
        let probe = Arc::new(ProbeMetrics {
            spec: spec.clone(),
            info_labels,
            values: Mutex::new(ProbeValues {
                buckets: vec![Bucket::default(); buckets.len() + 1],
                ..ProbeValues::default()
            }),
            buckets,
        });
        write(&self.probes).insert(spec.name.clone(), probe.clone());
        probe
    }

    /// Removes a probe's series, unless the name now belongs to a newer registration.
    pub(super) fn remove(&self, name: &str, probe: &Arc<ProbeMetrics>) {
        let mut probes = write(&self.probes);
        if probes
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, probe))
        {
            probes.remove(name);
        }
    }

    /// Number of probes with series.
    pub(super) fn count(&self) -> usize {
        read(&self.probes).len()
    }

    /// Every probe's series, in name order (their values are read as the page is written).
    pub(super) fn probes(&self) -> Vec<Arc<ProbeMetrics>> {
        read(&self.probes).values().cloned().collect()
    }
}

/// The series of one probe.
pub struct ProbeMetrics {
    /// The probe: its name is the `probe` label, its labels the static labels.
    pub(super) spec: Arc<ProbeSpec>,
    /// `url=...,method=...,schedule=...`: the extra labels of `webhook_probe_info`.
    pub(super) info_labels: String,
    /// Upper bounds of the duration histogram.
    pub(super) buckets: Arc<[f64]>,
    values: Mutex<ProbeValues>,
}

impl ProbeMetrics {
    /// The values, locked: held while one family's samples of the probe are written.
    pub(super) fn values(&self) -> MutexGuard<'_, ProbeValues> {
        lock(&self.values)
    }

    /// Whether the duration histogram has these buckets (a reload changing them starts the
    /// probe's series afresh).
    pub fn has_buckets(&self, buckets: &[f64]) -> bool {
        *self.buckets == *buckets
    }

    /// Counts a planned run skipped because the previous one was still going.
    pub fn skipped(&self) {
        lock(&self.values).skipped += 1;
    }

    /// Sets the planned start of the next scheduled run (`None`: none planned).
    pub(crate) fn set_next_run(&self, next: Option<SystemTime>) {
        lock(&self.values).next_run = next.map(unix_seconds);
    }

    /// Sets whether a maintenance window of the probe is open.
    pub(crate) fn set_maintenance(&self, open: bool) {
        lock(&self.values).maintenance = open;
    }

    /// Records a finished run.
    pub(super) fn record(&self, outcome: &Outcome) {
        let finished = unix_seconds(outcome.finished_at);
        let seconds = outcome.duration.as_secs_f64();
        let mut values = lock(&self.values);
        // Above every bound: the overflow bucket, last.
        let landed = self
            .buckets
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.buckets.len());
        let exemplar = |value| Exemplar {
            run_id: outcome.run_id,
            value,
            timestamp: finished,
        };
        if let Some(bucket) = values.buckets.get_mut(landed) {
            bucket.count += 1;
            bucket.exemplar = Some(exemplar(seconds));
        }
        values.sum += seconds;
        values.count += 1;
        values.set_last(outcome);
        values.retries += u64::from(outcome.attempts.saturating_sub(1));
        match outcome.reason {
            None => {
                values.runs[0] += 1;
                values.consecutive_failures = 0;
                values.last_success = Some(finished);
            }
            Some(reason) => {
                values.runs[1] += 1;
                values.consecutive_failures += 1;
                let index = reason_index(reason);
                values.failures[index] += 1;
                values.failure_exemplars.get_or_insert_default()[index] = Some(exemplar(1.0));
            }
        }
    }

    /// Sets the gauges a restart carries on (`--storage.path`) from the last stored run,
    /// the streak and the last success, without counting a run: counters start from 0.
    pub(crate) fn restore(
        &self,
        last: &Outcome,
        consecutive_failures: u64,
        last_success: Option<SystemTime>,
    ) {
        let mut values = lock(&self.values);
        values.set_last(last);
        values.consecutive_failures = consecutive_failures;
        values.last_success = last_success.map(unix_seconds);
    }
}

impl ProbeValues {
    /// The gauges of the last run (and the last certificate seen): the one place that maps
    /// an outcome to them, for a run and for a restored one.
    fn set_last(&mut self, outcome: &Outcome) {
        let values = self;
        values.last = Some(LastRun {
            success: outcome.success,
            duration: outcome.duration.as_secs_f64(),
            phases: outcome.phases.as_array().map(|d| d.as_secs_f64()),
            http_status: outcome.http_status.unwrap_or(0),
            response_code: outcome
                .response_code
                .as_deref()
                .and_then(|code| code.parse::<f64>().ok()),
            finished: unix_seconds(outcome.finished_at),
            redirects: outcome.redirects,
            http_version: outcome.http_version.and_then(|v| v.parse().ok()),
        });
        // Kept from the last run that saw a certificate, so a server that is down for a while
        // does not make its expiry vanish from the expiry alerts.
        if let Some(tls) = &outcome.tls
            && let Some(certificate) = &tls.certificate
        {
            let mut info_labels = String::new();
            push_label(
                &mut info_labels,
                names::VERSION,
                tls.version.as_deref().unwrap_or(""),
            );
            push_label(&mut info_labels, names::SUBJECT, &certificate.subject);
            push_label(&mut info_labels, names::ISSUER, &certificate.issuer);
            values.tls = Some(TlsSeen {
                earliest_not_after: certificate.earliest_not_after as f64,
                info_labels,
            });
        }
    }
}

/// Everything recorded for one probe.
#[derive(Debug, Clone, Default)]
pub(super) struct ProbeValues {
    /// The last run, `None` before the first.
    pub(super) last: Option<LastRun>,
    pub(super) last_success: Option<f64>,
    /// Successful, then failed runs.
    pub(super) runs: [u64; 2],
    /// Failed runs, in [`FailureReason::ALL`] order.
    pub(super) failures: [u64; FailureReason::ALL.len()],
    /// The latest failed run of each reason (an increment of one), same order; boxed on
    /// the first failure, as most probes never fail (320 bytes a probe otherwise).
    pub(super) failure_exemplars: Option<Box<[Option<Exemplar>; FailureReason::ALL.len()]>>,
    pub(super) skipped: u64,
    /// Extra attempts used by retries.
    pub(super) retries: u64,
    pub(super) tls: Option<TlsSeen>,
    pub(super) consecutive_failures: u64,
    /// Observations per bucket (not cumulative), one per bound then the overflow above
    /// them all (the `+Inf` bucket's count is `count`); one vector, copied whole per scrape,
    /// with each bucket's exemplar beside its count.
    pub(super) buckets: Vec<Bucket>,
    pub(super) sum: f64,
    pub(super) count: u64,
    /// Planned start of the next scheduled run (Unix time), `None` when none is planned.
    pub(super) next_run: Option<f64>,
    /// A maintenance window is open (`webhook_probe_maintenance`).
    pub(super) maintenance: bool,
}

/// One bucket of the duration histogram.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Bucket {
    /// Runs whose duration landed here (not cumulative).
    pub(super) count: u64,
    /// The latest of them.
    pub(super) exemplar: Option<Exemplar>,
}

/// A run attached to a sample in OpenMetrics output, so a graph leads to the run.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exemplar {
    pub(super) run_id: RunId,
    /// The observed duration (histogram) or the increment, 1 (failures counter).
    pub(super) value: f64,
    /// End of the run (Unix time).
    pub(super) timestamp: f64,
}

/// What the last run showed.
#[derive(Debug, Clone, Copy)]
pub(super) struct LastRun {
    pub(super) success: bool,
    pub(super) duration: f64,
    /// In [`crate::probe::PHASE_NAMES`] order.
    pub(super) phases: [f64; 5],
    pub(super) http_status: u16,
    pub(super) response_code: Option<f64>,
    pub(super) finished: f64,
    pub(super) redirects: u32,
    /// 1.1, 1.0 or 2, when an answer came.
    pub(super) http_version: Option<f64>,
}

/// The last certificate chain a probe was shown.
#[derive(Debug, Clone)]
pub(super) struct TlsSeen {
    pub(super) earliest_not_after: f64,
    /// `version=...,subject=...,issuer=...`: the extra labels of `webhook_probe_tls_info`.
    pub(super) info_labels: String,
}

fn reason_index(reason: FailureReason) -> usize {
    FailureReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(FailureReason::ALL.len() - 1)
}

/// Seconds since the Unix epoch (0 before it).
pub(super) fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
