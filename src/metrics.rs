//! The only code that knows metric names, help texts and buckets.
//!
//! Exporter-wide metrics (reload status, lag, in-flight runs, build info, `process_*`) live
//! in a `prometheus` registry. Per-probe series are kept by this module in [`ProbeMetrics`]
//! and written straight to the text format, because:
//! - each probe carries its own static labels; every series of a family must carry the same
//!   label names (the union over the probes, empty where a probe has none), and that union
//!   changes when a reload adds or removes probes, which `prometheus` vectors (label names
//!   fixed at creation) cannot follow without resetting every counter;
//! - a reload must drop the series of removed probes and keep those of unchanged probes
//!   untouched;
//! - recording a run touches one small mutex-guarded struct, and rendering thousands of
//!   probes needs no intermediate protobuf objects.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::{Arc, LazyLock, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntGauge, Opts, Registry, TextEncoder,
};

use crate::config::ProbeSpec;
use crate::probe::{FailureReason, Outcome, PHASE_NAMES};

pub mod names;

/// Buckets of `webhook_exporter_schedule_lag_seconds`: from half a millisecond (on time) to
/// ten seconds (starved by the concurrency caps).
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Git revision and compiler, filled in by `build.rs`.
const REVISION: &str = env!("WEBHOOK_EXPORTER_REVISION");
const RUSTC_VERSION: &str = env!("WEBHOOK_EXPORTER_RUSTC_VERSION");

/// `result` labels of `webhook_probe_runs_total`, in [`ProbeValues::runs`] order.
static RESULT_LABELS: LazyLock<[String; 2]> =
    LazyLock::new(|| ["success", "failure"].map(|result| label_pair(names::RESULT, result)));

/// `phase` labels, in [`crate::probe::PHASE_NAMES`] order.
static PHASE_LABELS: LazyLock<[String; 5]> =
    LazyLock::new(|| PHASE_NAMES.map(|phase| label_pair(names::PHASE, phase)));

/// `reason` labels, in [`FailureReason::ALL`] order.
static REASON_LABELS: LazyLock<[String; FailureReason::ALL.len()]> =
    LazyLock::new(|| FailureReason::ALL.map(|reason| label_pair(names::REASON, reason.as_label())));

/// The exporter's metrics.
pub struct Metrics {
    registry: Registry,
    /// The bucket list of the last probe registered, shared by the probes using the same.
    buckets: Mutex<Option<Arc<[f64]>>>,
    /// Per-probe series by probe name.
    probes: RwLock<BTreeMap<String, Arc<ProbeMetrics>>>,
    /// `webhook_exporter_config_last_reload_successful`.
    pub reload_successful: IntGauge,
    /// `webhook_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_timestamp: Gauge,
    /// `webhook_exporter_probes_configured`.
    pub probes_configured: IntGauge,
    /// `webhook_exporter_probes_in_flight`.
    pub probes_in_flight: IntGauge,
    /// `webhook_exporter_schedule_lag_seconds`.
    pub schedule_lag: Histogram,
}

/// Error registering metrics: only a programming error (a duplicate name) can cause it.
pub type MetricsError = prometheus::Error;

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, MetricsError> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

impl Metrics {
    /// Creates the exporter-wide families; probes are added with [`Metrics::register_probe`].
    ///
    /// # Errors
    /// Only on a programming error (two families with one name).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let metrics = Metrics {
            probes: RwLock::default(),
            buckets: Mutex::default(),
            reload_successful: register(
                &registry,
                IntGauge::new(
                    "webhook_exporter_config_last_reload_successful",
                    "1 if the last config load or reload succeeded.",
                )?,
            )?,
            reload_success_timestamp: register(
                &registry,
                Gauge::new(
                    "webhook_exporter_config_last_reload_success_timestamp_seconds",
                    "Time of the last successful config load or reload (Unix time).",
                )?,
            )?,
            probes_configured: register(
                &registry,
                IntGauge::new(
                    "webhook_exporter_probes_configured",
                    "Probes in the running config.",
                )?,
            )?,
            probes_in_flight: register(
                &registry,
                IntGauge::new("webhook_exporter_probes_in_flight", "Runs in progress.")?,
            )?,
            schedule_lag: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "webhook_exporter_schedule_lag_seconds",
                        "Actual start of a run minus its planned start.",
                    )
                    .buckets(LAG_BUCKETS.to_vec()),
                )?,
            )?,
            registry,
        };
        let build_info = register(
            &metrics.registry,
            GaugeVec::new(
                Opts::new(
                    "webhook_exporter_build_info",
                    "Version of the exporter; always 1.",
                ),
                &[names::VERSION, names::REVISION, names::RUSTC_VERSION],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), REVISION, RUSTC_VERSION])
            .set(1.0);
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    /// Creates the series of a probe (counters at 0, info) and returns the handle its runs
    /// are recorded through. A probe of the same name is replaced.
    pub fn register_probe(&self, spec: &Arc<ProbeSpec>, buckets: &[f64]) -> Arc<ProbeMetrics> {
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
                buckets: vec![0; buckets.len()],
                ..ProbeValues::default()
            }),
            buckets,
        });
        write_lock(&self.probes).insert(spec.name.clone(), probe.clone());
        probe
    }

    /// Removes every series of a probe, unless the name now belongs to a newer registration.
    pub fn remove_probe(&self, name: &str, probe: &Arc<ProbeMetrics>) {
        let mut probes = write_lock(&self.probes);
        if probes
            .get(name)
            .is_some_and(|current| Arc::ptr_eq(current, probe))
        {
            probes.remove(name);
        }
    }

    /// Number of probes with series.
    pub fn probe_count(&self) -> usize {
        self.probes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Records a finished run of a probe.
    pub fn record(&self, probe: &ProbeMetrics, outcome: &Outcome) {
        let finished = unix_seconds(outcome.finished_at);
        let seconds = outcome.duration.as_secs_f64();
        let mut values = lock(&probe.values);
        if let Some(bucket) = probe.buckets.iter().position(|bound| seconds <= *bound) {
            values.buckets[bucket] += 1;
        }
        values.sum += seconds;
        values.count += 1;
        values.last = Some(LastRun {
            success: outcome.success,
            duration: seconds,
            phases: outcome.phases.as_array().map(|d| d.as_secs_f64()),
            http_status: outcome.http_status.unwrap_or(0),
            response_code: outcome
                .response_code
                .as_deref()
                .and_then(|code| code.parse::<f64>().ok()),
            finished,
            redirects: outcome.redirects,
            http_version: outcome.http_version.and_then(|v| v.parse().ok()),
        });
        values.retries += u64::from(outcome.attempts.saturating_sub(1));
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
        match outcome.reason {
            None => {
                values.runs[0] += 1;
                values.consecutive_failures = 0;
                values.last_success = Some(finished);
            }
            Some(reason) => {
                values.runs[1] += 1;
                values.consecutive_failures += 1;
                values.failures[reason_index(reason)] += 1;
            }
        }
    }

    /// Renders every family in the Prometheus text format (version 0.0.4), whole.
    pub fn encode(&self) -> String {
        self.render().collect()
    }

    /// Starts rendering the page: a snapshot now, written piece by piece as it is read.
    pub fn render(&self) -> Rendering {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail on I/O, and every family is well-formed.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        let head = String::from_utf8(buffer).unwrap_or_default();
        let snapshot: Vec<(Arc<ProbeMetrics>, ProbeValues)> = self
            .probes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|probe| (probe.clone(), lock(&probe.values).clone()))
            .collect();
        Rendering::new(head, snapshot)
    }

    /// Marks the outcome of a config load or reload.
    pub fn config_loaded(&self, success: bool) {
        self.reload_successful.set(i64::from(success));
        if success {
            self.reload_success_timestamp
                .set(unix_seconds(SystemTime::now()));
        }
    }

    /// Records how late a run started.
    pub fn observe_lag(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }
}

/// The series of one probe.
pub struct ProbeMetrics {
    /// The probe: its name is the `probe` label, its labels the static labels.
    spec: Arc<ProbeSpec>,
    /// `url=...,method=...,schedule=...`: the extra labels of `webhook_probe_info`.
    info_labels: String,
    /// Upper bounds of the duration histogram.
    buckets: Arc<[f64]>,
    values: Mutex<ProbeValues>,
}

impl ProbeMetrics {
    /// Whether the duration histogram has these buckets (a reload changing them starts the
    /// probe's series afresh).
    pub fn has_buckets(&self, buckets: &[f64]) -> bool {
        *self.buckets == *buckets
    }

    /// Counts a planned run skipped because the previous one was still going.
    pub fn skipped(&self) {
        lock(&self.values).skipped += 1;
    }
}

/// Everything recorded for one probe.
#[derive(Debug, Clone, Default)]
struct ProbeValues {
    /// The last run, `None` before the first.
    last: Option<LastRun>,
    last_success: Option<f64>,
    runs: [u64; 2],
    failures: [u64; FailureReason::ALL.len()],
    skipped: u64,
    /// Extra attempts used by retries.
    retries: u64,
    tls: Option<TlsSeen>,
    consecutive_failures: u64,
    /// Observations per bucket (not cumulative); the `+Inf` bucket is `count`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Debug, Clone, Copy)]
struct LastRun {
    success: bool,
    duration: f64,
    phases: [f64; 5],
    http_status: u16,
    response_code: Option<f64>,
    finished: f64,
    redirects: u32,
    /// 1.1, 1.0 or 2, when an answer came.
    http_version: Option<f64>,
}

/// The last certificate chain a probe was shown.
#[derive(Debug, Clone)]
struct TlsSeen {
    earliest_not_after: f64,
    /// `version=...,subject=...,issuer=...`: the extra labels of `webhook_probe_tls_info`.
    info_labels: String,
}

fn reason_index(reason: FailureReason) -> usize {
    FailureReason::ALL
        .iter()
        .position(|r| *r == reason)
        .unwrap_or(FailureReason::ALL.len() - 1)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `name="value"` alone, with the text format's escaping.
fn label_pair(name: &str, value: &str) -> String {
    let mut pair = String::new();
    push_label(&mut pair, name, value);
    pair
}

/// Appends `name="value"` (comma-separated) with the text format's escaping.
fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one sample line: `name{labels,extra} value`.
fn sample(out: &mut String, name: &str, labels: &str, extra: &str, value: impl std::fmt::Display) {
    let separator = if extra.is_empty() { "" } else { "," };
    let _ = writeln!(out, "{name}{{{labels}{separator}{extra}}} {value}");
}

/// One probe at render time: its label pairs (`probe="a",dossier="998"`), settings, values.
struct Row {
    labels: String,
    probe: Arc<ProbeMetrics>,
    values: ProbeValues,
    /// Index into [`Rendering::le_labels`] of this probe's bucket list.
    le: usize,
}

/// How one per-probe family writes the samples of one probe.
type WriteRow = fn(&mut String, &Rendering, &Row);

/// A per-probe family: name, type, help, and how to write one probe's samples.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    write: WriteRow,
}

/// Writes a gauge of the last run, when there was one and it has a value.
fn last_gauge(out: &mut String, name: &str, row: &Row, value: fn(&LastRun) -> Option<f64>) {
    if let Some(v) = row.values.last.as_ref().and_then(value) {
        sample(out, name, &row.labels, "", v);
    }
}

/// Every per-probe family, in output order.
const FAMILIES: &[Family] = &[
    Family {
        name: "webhook_probe_success",
        kind: "gauge",
        help: "1 if the last run of the probe succeeded, else 0.",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_success", row, |l| {
                Some(f64::from(u8::from(l.success)))
            })
        },
    },
    Family {
        name: "webhook_probe_duration_seconds",
        kind: "histogram",
        help: "Duration of every run of the probe, retries included.",
        write: |out, rendering, row| {
            let mut cumulative = 0;
            for (le, count) in rendering.le_labels[row.le]
                .1
                .iter()
                .zip(&row.values.buckets)
            {
                cumulative += count;
                sample(
                    out,
                    "webhook_probe_duration_seconds_bucket",
                    &row.labels,
                    le,
                    cumulative,
                );
            }
            sample(
                out,
                "webhook_probe_duration_seconds_bucket",
                &row.labels,
                "le=\"+Inf\"",
                row.values.count,
            );
            sample(
                out,
                "webhook_probe_duration_seconds_sum",
                &row.labels,
                "",
                row.values.sum,
            );
            sample(
                out,
                "webhook_probe_duration_seconds_count",
                &row.labels,
                "",
                row.values.count,
            );
        },
    },
    Family {
        name: "webhook_probe_last_duration_seconds",
        kind: "gauge",
        help: "Duration of the last run of the probe.",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_last_duration_seconds", row, |l| {
                Some(l.duration)
            })
        },
    },
    Family {
        name: "webhook_probe_phase_duration_seconds",
        kind: "gauge",
        help: "Time spent in each phase of the last run (final attempt, summed over redirects).",
        write: |out, _, row| {
            if let Some(last) = &row.values.last {
                for (phase, seconds) in PHASE_LABELS.iter().zip(last.phases) {
                    sample(
                        out,
                        "webhook_probe_phase_duration_seconds",
                        &row.labels,
                        phase,
                        seconds,
                    );
                }
            }
        },
    },
    Family {
        name: "webhook_probe_http_status_code",
        kind: "gauge",
        help: "HTTP status of the last run, 0 when none was received.",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_http_status_code", row, |l| {
                Some(f64::from(l.http_status))
            })
        },
    },
    Family {
        name: "webhook_probe_response_code",
        kind: "gauge",
        help: "Divalto code read from the body of the last run (absent when none).",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_response_code", row, |l| l.response_code)
        },
    },
    Family {
        name: "webhook_probe_runs_total",
        kind: "counter",
        help: "Runs of the probe by result.",
        write: |out, _, row| {
            for (result, count) in RESULT_LABELS.iter().zip(row.values.runs) {
                sample(out, "webhook_probe_runs_total", &row.labels, result, count);
            }
        },
    },
    Family {
        name: "webhook_probe_failures_total",
        kind: "counter",
        help: "Failed runs of the probe by reason.",
        write: |out, _, row| {
            for (reason, count) in REASON_LABELS.iter().zip(row.values.failures) {
                sample(
                    out,
                    "webhook_probe_failures_total",
                    &row.labels,
                    reason,
                    count,
                );
            }
        },
    },
    Family {
        name: "webhook_probe_consecutive_failures",
        kind: "gauge",
        help: "Failed runs since the last success.",
        write: |out, _, row| {
            if row.values.last.is_some() {
                sample(
                    out,
                    "webhook_probe_consecutive_failures",
                    &row.labels,
                    "",
                    row.values.consecutive_failures,
                );
            }
        },
    },
    Family {
        name: "webhook_probe_last_run_timestamp_seconds",
        kind: "gauge",
        help: "End of the last run (Unix time).",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_last_run_timestamp_seconds", row, |l| {
                Some(l.finished)
            })
        },
    },
    Family {
        name: "webhook_probe_last_success_timestamp_seconds",
        kind: "gauge",
        help: "End of the last successful run (Unix time).",
        write: |out, _, row| {
            if let Some(at) = row.values.last_success {
                sample(
                    out,
                    "webhook_probe_last_success_timestamp_seconds",
                    &row.labels,
                    "",
                    at,
                );
            }
        },
    },
    Family {
        name: "webhook_probe_skipped_total",
        kind: "counter",
        help: "Planned runs skipped because the previous run was still going.",
        write: |out, _, row| {
            sample(
                out,
                "webhook_probe_skipped_total",
                &row.labels,
                "",
                row.values.skipped,
            )
        },
    },
    Family {
        name: "webhook_probe_retries_total",
        kind: "counter",
        help: "Extra attempts made by retries (a run that succeeds on a retry is a success).",
        write: |out, _, row| {
            sample(
                out,
                "webhook_probe_retries_total",
                &row.labels,
                "",
                row.values.retries,
            )
        },
    },
    Family {
        name: "webhook_probe_redirects",
        kind: "gauge",
        help: "Redirects followed in the last run.",
        write: |out, _, row| {
            last_gauge(out, "webhook_probe_redirects", row, |l| {
                Some(f64::from(l.redirects))
            })
        },
    },
    Family {
        name: "webhook_probe_http_version",
        kind: "gauge",
        help: "HTTP version of the last answer (1.1).",
        write: |out, _, row| last_gauge(out, "webhook_probe_http_version", row, |l| l.http_version),
    },
    Family {
        name: "webhook_probe_tls_cert_expiry_timestamp_seconds",
        kind: "gauge",
        help: "Earliest notAfter of the certificate chain the server presented (Unix time), even when it failed verification.",
        write: |out, _, row| {
            if let Some(tls) = &row.values.tls {
                sample(
                    out,
                    "webhook_probe_tls_cert_expiry_timestamp_seconds",
                    &row.labels,
                    "",
                    tls.earliest_not_after,
                );
            }
        },
    },
    Family {
        name: "webhook_probe_tls_info",
        kind: "gauge",
        help: "TLS version and the leaf certificate's subject and issuer (common names) last seen; always 1.",
        write: |out, _, row| {
            if let Some(tls) = &row.values.tls {
                sample(
                    out,
                    "webhook_probe_tls_info",
                    &row.labels,
                    &tls.info_labels,
                    1,
                );
            }
        },
    },
    Family {
        name: "webhook_probe_info",
        kind: "gauge",
        help: "Probe settings; the URL has its webhook code redacted.",
        write: |out, _, row| {
            sample(
                out,
                "webhook_probe_info",
                &row.labels,
                &row.probe.info_labels,
                1,
            )
        },
    },
];

/// Size of the pieces `/metrics` is written in: memory stays bounded whatever the probe
/// count, and no piece is large enough for the allocator to keep it around.
const CHUNK_BYTES: usize = 64 * 1024;

/// A `/metrics` page being written, piece by piece, from a snapshot taken when it started.
pub struct Rendering {
    /// The exporter-wide families, written first.
    head: Option<String>,
    rows: Vec<Row>,
    /// Distinct bucket lists with their rendered `le` labels.
    le_labels: Vec<(Arc<[f64]>, Vec<String>)>,
    family: usize,
    row: usize,
}

impl Rendering {
    fn new(head: String, snapshot: Vec<(Arc<ProbeMetrics>, ProbeValues)>) -> Self {
        let label_names: BTreeSet<String> = snapshot
            .iter()
            .flat_map(|(probe, _)| probe.spec.labels.keys().cloned())
            .collect();
        let mut le_labels: Vec<(Arc<[f64]>, Vec<String>)> = Vec::new();
        let rows = snapshot
            .into_iter()
            .map(|(probe, values)| {
                let mut labels = String::new();
                push_label(&mut labels, names::PROBE, &probe.spec.name);
                for name in &label_names {
                    push_label(
                        &mut labels,
                        name,
                        probe.spec.labels.get(name).map_or("", String::as_str),
                    );
                }
                let le = le_labels
                    .iter()
                    .position(|(b, _)| **b == *probe.buckets)
                    .unwrap_or_else(|| {
                        let rendered = probe.buckets.iter().map(|bound| {
                            let mut le = String::new();
                            push_label(&mut le, names::LE, &bound.to_string());
                            le
                        });
                        le_labels.push((probe.buckets.clone(), rendered.collect()));
                        le_labels.len() - 1
                    });
                Row {
                    labels,
                    probe,
                    values,
                    le,
                }
            })
            .collect();
        Self {
            head: Some(head),
            rows,
            le_labels,
            family: 0,
            row: 0,
        }
    }
}

impl Iterator for Rendering {
    type Item = String;

    /// The next piece of the page (about [`CHUNK_BYTES`]), `None` at the end.
    fn next(&mut self) -> Option<String> {
        if let Some(head) = self.head.take() {
            return Some(head);
        }
        let mut out = String::with_capacity(CHUNK_BYTES + 4096);
        while out.len() < CHUNK_BYTES {
            let Some(family) = FAMILIES.get(self.family) else {
                break;
            };
            if self.row == 0 {
                header(&mut out, family.name, family.kind, family.help);
            }
            match self.rows.get(self.row) {
                Some(row) => {
                    (family.write)(&mut out, self, row);
                    self.row += 1;
                }
                None => {
                    self.family += 1;
                    self.row = 0;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_larger_than_a_piece_keeps_every_family_whole_and_in_order() {
        let mut text = String::from("probes:\n");
        for i in 0..2000 {
            text.push_str(&format!(
                "  - {{name: p{i:04}, url: 'http://127.0.0.1:1/', labels: {{n: '{i}'}}}}\n"
            ));
        }
        let config = crate::config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
        let metrics = Metrics::new().unwrap();
        for spec in &config.probes {
            metrics.register_probe(spec, &[0.1, 1.0]);
        }
        let pieces: Vec<String> = metrics.render().collect();
        assert!(pieces.len() > 5, "{} pieces", pieces.len());
        let page = pieces.concat();
        for family in FAMILIES {
            assert_eq!(
                page.matches(&format!("# TYPE {} ", family.name)).count(),
                1,
                "{}",
                family.name
            );
        }
        // Each family's samples follow its own header, never another's.
        let info = page.find("# TYPE webhook_probe_info ").unwrap();
        assert!(page[info..].contains("webhook_probe_info{probe=\"p1999\",n=\"1999\",url="));
        assert_eq!(page.matches("webhook_probe_runs_total{").count(), 4000);
        assert!(page.ends_with('\n'));
    }

    #[test]
    fn an_empty_config_still_lists_every_family_once() {
        let page = Metrics::new().unwrap().encode();
        for family in FAMILIES {
            assert_eq!(
                page.matches(&format!("# TYPE {} ", family.name)).count(),
                1,
                "{}",
                family.name
            );
        }
    }

    /// A run that fills every per-probe family (TLS, Divalto code, redirects, retries).
    fn full_outcome(success: bool) -> Outcome {
        let now = SystemTime::now();
        Outcome {
            success,
            reason: (!success).then_some(FailureReason::WebhookError),
            message: "Divalto code 400".into(),
            http_status: Some(200),
            response_code: Some("400".into()),
            duration: Duration::from_millis(5),
            phases: crate::probe::Phases::default(),
            attempts: 2,
            redirects: 1,
            tls: Some(crate::probe::TlsDetails {
                version: Some("TLSv1.3".into()),
                certificate: Some(crate::probe::tls::CertificateInfo {
                    earliest_not_after: 2_000_000_000,
                    subject: "erp.example.com".into(),
                    issuer: "Example CA".into(),
                    names: vec!["erp.example.com".into()],
                }),
            }),
            http_version: Some("1.1"),
            started_at: now,
            finished_at: now,
        }
    }

    /// A page where every family has samples: one probe labelled `team=erp`, two full runs.
    fn full_page() -> String {
        let config = crate::config::parse(
            std::path::Path::new("t.yaml"),
            "probes:\n  - {name: a, url: 'https://127.0.0.1:1/', labels: {team: erp}}\n",
        )
        .unwrap();
        let metrics = Metrics::new().unwrap();
        metrics.observe_lag(Duration::from_millis(1));
        metrics.config_loaded(true);
        let probe = metrics.register_probe(&config.probes[0], &[0.1, 1.0]);
        metrics.record(&probe, &full_outcome(true));
        metrics.record(&probe, &full_outcome(false));
        probe.skipped();
        metrics.encode()
    }

    #[test]
    fn every_sample_carries_the_name_of_the_family_whose_header_it_follows() {
        let page = full_page();
        let mut family: Option<(&str, &str)> = None;
        let mut samples = 0;
        for line in page.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                family = Some((name, kind));
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let name = line.split(['{', ' ']).next().unwrap();
            let (family, kind) = family.unwrap_or_else(|| panic!("{name} before any header"));
            let own = name == family
                || (kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family)));
            assert!(own, "{name} is written under the header of {family}");
            samples += 1;
        }
        assert!(samples > 40, "{samples} samples");
    }

    #[test]
    fn every_label_name_on_a_full_page_is_refused_as_a_static_label() {
        // Arrange: a page where every family has samples.
        let page = full_page();
        let exposition = openmetrics_parser::prometheus::parse_prometheus(&page)
            .unwrap_or_else(|e| panic!("{e:?}\n{page}"));
        for family in FAMILIES {
            let samples = exposition
                .families
                .get(family.name)
                .map_or(0, |f| f.iter_samples().count());
            assert!(
                samples > 0,
                "{} has no sample: populate it here",
                family.name
            );
        }

        // Act: every label name the page carries (the parser folds `le` into histograms).
        let mut on_page = BTreeSet::new();
        for family in exposition.families.values() {
            if family.family_type == openmetrics_parser::PrometheusType::Histogram {
                on_page.insert("le".to_owned());
            }
            on_page.extend(family.get_label_names().iter().cloned());
        }
        on_page.remove("team");

        // Assert: none of them can be a static label.
        assert!(on_page.len() > 10, "{on_page:?}");
        let accepted: Vec<&String> = on_page
            .iter()
            .filter(|name| {
                let text = format!(
                    "probes:\n  - {{name: a, url: 'http://127.0.0.1:1/', labels: {{{name}: x}}}}\n"
                );
                match crate::config::parse(std::path::Path::new("t.yaml"), &text) {
                    Ok(_) => true,
                    Err(errors) => !errors.to_string().contains("is set by the exporter itself"),
                }
            })
            .collect();
        assert!(
            accepted.is_empty(),
            "accepted as static labels: {accepted:?}"
        );
    }
}
