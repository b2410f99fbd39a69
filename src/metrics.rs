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
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntGauge, Opts, Registry, TextEncoder,
};

use crate::config::ProbeSpec;
use crate::probe::{FailureReason, Outcome};

/// Buckets of `webhook_exporter_schedule_lag_seconds`: from half a millisecond (on time) to
/// ten seconds (starved by the concurrency caps).
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Git revision and compiler, filled in by `build.rs`.
const REVISION: &str = env!("WEBHOOK_EXPORTER_REVISION");
const RUSTC_VERSION: &str = env!("WEBHOOK_EXPORTER_RUSTC_VERSION");

/// `result` labels of `webhook_probe_runs_total`, in [`ProbeValues::runs`] order.
const RESULT_LABELS: [&str; 2] = ["result=\"success\"", "result=\"failure\""];

/// `phase` labels, in [`crate::probe::PHASE_NAMES`] order.
const PHASE_LABELS: [&str; 5] = [
    "phase=\"resolve\"",
    "phase=\"connect\"",
    "phase=\"tls\"",
    "phase=\"processing\"",
    "phase=\"transfer\"",
];

/// `reason` labels, in [`FailureReason::ALL`] order.
const REASON_LABELS: [&str; 10] = [
    "reason=\"dns\"",
    "reason=\"connect\"",
    "reason=\"tls\"",
    "reason=\"timeout\"",
    "reason=\"http_status\"",
    "reason=\"webhook_error\"",
    "reason=\"body_mismatch\"",
    "reason=\"body_too_large\"",
    "reason=\"invalid_response\"",
    "reason=\"other\"",
];

/// The exporter's metrics.
pub struct Metrics {
    registry: Registry,
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
                &["version", "revision", "rustc_version"],
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
    pub fn register_probe(&self, spec: &ProbeSpec, buckets: &[f64]) -> Arc<ProbeMetrics> {
        let mut info_labels = String::new();
        push_label(&mut info_labels, "url", &spec.target.redacted());
        push_label(&mut info_labels, "method", spec.method.as_str());
        push_label(&mut info_labels, "schedule", &spec.schedule.to_string());
        let probe = Arc::new(ProbeMetrics {
            name: spec.name.clone(),
            static_labels: spec.labels.clone(),
            info_labels,
            buckets: buckets.into(),
            values: Mutex::new(ProbeValues {
                buckets: vec![0; buckets.len()],
                ..ProbeValues::default()
            }),
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
                "version",
                tls.version.as_deref().unwrap_or(""),
            );
            push_label(&mut info_labels, "subject", &certificate.subject);
            push_label(&mut info_labels, "issuer", &certificate.issuer);
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

    /// Renders every family in the Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail on I/O, and every family is well-formed.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        let mut out = String::from_utf8(buffer).unwrap_or_default();
        let snapshot: Vec<(Arc<ProbeMetrics>, ProbeValues)> = self
            .probes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|probe| (probe.clone(), lock(&probe.values).clone()))
            .collect();
        let label_names: BTreeSet<&str> = snapshot
            .iter()
            .flat_map(|(probe, _)| probe.static_labels.keys().map(String::as_str))
            .collect();
        let rows: Vec<Row<'_>> = snapshot
            .iter()
            .map(|(probe, values)| {
                let mut labels = String::new();
                push_label(&mut labels, "probe", &probe.name);
                for name in &label_names {
                    push_label(
                        &mut labels,
                        name,
                        probe.static_labels.get(*name).map_or("", String::as_str),
                    );
                }
                Row {
                    labels,
                    probe,
                    values,
                }
            })
            .collect();
        render_probes(&mut out, &rows);
        out
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
    /// The `probe` label.
    name: String,
    /// The probe's static labels.
    static_labels: BTreeMap<String, String>,
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
struct Row<'a> {
    labels: String,
    probe: &'a ProbeMetrics,
    values: &'a ProbeValues,
}

/// Writes every per-probe family from a consistent snapshot.
fn render_probes(out: &mut String, probes: &[Row<'_>]) {
    let with_last =
        |out: &mut String, name: &str, help: &str, value: fn(&LastRun) -> Option<f64>| {
            header(out, name, "gauge", help);
            for row in probes {
                if let Some(v) = row.values.last.as_ref().and_then(value) {
                    sample(out, name, &row.labels, "", v);
                }
            }
        };
    with_last(
        out,
        "webhook_probe_success",
        "1 if the last run of the probe succeeded, else 0.",
        |l| Some(f64::from(u8::from(l.success))),
    );

    let name = "webhook_probe_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "Duration of every run of the probe, retries included.",
    );
    // `le` labels rendered once per distinct bucket list (usually one for all probes).
    let mut le_labels: Vec<(Arc<[f64]>, Vec<String>)> = Vec::new();
    for Row {
        labels,
        probe,
        values,
    } in probes
    {
        let index = match le_labels.iter().position(|(b, _)| **b == *probe.buckets) {
            Some(index) => index,
            None => {
                let rendered = probe.buckets.iter().map(|bound| {
                    let mut le = String::new();
                    push_label(&mut le, "le", &bound.to_string());
                    le
                });
                le_labels.push((probe.buckets.clone(), rendered.collect()));
                le_labels.len() - 1
            }
        };
        let mut cumulative = 0;
        for (le, count) in le_labels[index].1.iter().zip(&values.buckets) {
            cumulative += count;
            sample(
                out,
                "webhook_probe_duration_seconds_bucket",
                labels,
                le,
                cumulative,
            );
        }
        sample(
            out,
            "webhook_probe_duration_seconds_bucket",
            labels,
            "le=\"+Inf\"",
            values.count,
        );
        sample(
            out,
            "webhook_probe_duration_seconds_sum",
            labels,
            "",
            values.sum,
        );
        sample(
            out,
            "webhook_probe_duration_seconds_count",
            labels,
            "",
            values.count,
        );
    }

    with_last(
        out,
        "webhook_probe_last_duration_seconds",
        "Duration of the last run of the probe.",
        |l| Some(l.duration),
    );

    let name = "webhook_probe_phase_duration_seconds";
    header(
        out,
        name,
        "gauge",
        "Time spent in each phase of the last run (final attempt, summed over redirects).",
    );
    for row in probes {
        if let Some(last) = &row.values.last {
            for (phase, seconds) in PHASE_LABELS.iter().zip(last.phases) {
                sample(out, name, &row.labels, phase, seconds);
            }
        }
    }

    with_last(
        out,
        "webhook_probe_http_status_code",
        "HTTP status of the last run, 0 when none was received.",
        |l| Some(f64::from(l.http_status)),
    );
    with_last(
        out,
        "webhook_probe_response_code",
        "Divalto code read from the body of the last run (absent when none).",
        |l| l.response_code,
    );

    let name = "webhook_probe_runs_total";
    header(out, name, "counter", "Runs of the probe by result.");
    for row in probes {
        for (result, count) in RESULT_LABELS.iter().zip(row.values.runs) {
            sample(out, name, &row.labels, result, count);
        }
    }

    let name = "webhook_probe_failures_total";
    header(out, name, "counter", "Failed runs of the probe by reason.");
    for row in probes {
        for (reason, count) in REASON_LABELS.iter().zip(row.values.failures) {
            sample(out, name, &row.labels, reason, count);
        }
    }

    let name = "webhook_probe_consecutive_failures";
    header(out, name, "gauge", "Failed runs since the last success.");
    for row in probes.iter().filter(|row| row.values.last.is_some()) {
        sample(out, name, &row.labels, "", row.values.consecutive_failures);
    }

    with_last(
        out,
        "webhook_probe_last_run_timestamp_seconds",
        "End of the last run (Unix time).",
        |l| Some(l.finished),
    );

    let name = "webhook_probe_last_success_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "End of the last successful run (Unix time).",
    );
    for row in probes {
        if let Some(at) = row.values.last_success {
            sample(out, name, &row.labels, "", at);
        }
    }

    let name = "webhook_probe_skipped_total";
    header(
        out,
        name,
        "counter",
        "Planned runs skipped because the previous run was still going.",
    );
    for row in probes {
        sample(out, name, &row.labels, "", row.values.skipped);
    }

    let name = "webhook_probe_retries_total";
    header(
        out,
        name,
        "counter",
        "Extra attempts made by retries (a run that succeeds on a retry is a success).",
    );
    for row in probes {
        sample(out, name, &row.labels, "", row.values.retries);
    }

    with_last(
        out,
        "webhook_probe_redirects",
        "Redirects followed in the last run.",
        |l| Some(f64::from(l.redirects)),
    );
    with_last(
        out,
        "webhook_probe_http_version",
        "HTTP version of the last answer (1.1).",
        |l| l.http_version,
    );

    let name = "webhook_probe_tls_cert_expiry_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "Earliest notAfter of the certificate chain the server presented (Unix time), even when it failed verification.",
    );
    for row in probes {
        if let Some(tls) = &row.values.tls {
            sample(out, name, &row.labels, "", tls.earliest_not_after);
        }
    }

    let name = "webhook_probe_tls_info";
    header(
        out,
        name,
        "gauge",
        "TLS version and the leaf certificate's subject and issuer (common names) last seen; always 1.",
    );
    for row in probes {
        if let Some(tls) = &row.values.tls {
            sample(out, name, &row.labels, &tls.info_labels, 1);
        }
    }

    let name = "webhook_probe_info";
    header(
        out,
        name,
        "gauge",
        "Probe settings; the URL has its webhook code redacted.",
    );
    for row in probes {
        sample(out, name, &row.labels, &row.probe.info_labels, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::PHASE_NAMES;

    #[test]
    fn constant_labels_follow_the_reason_and_phase_orders() {
        for (reason, label) in FailureReason::ALL.iter().zip(REASON_LABELS) {
            assert_eq!(label, format!("reason=\"{}\"", reason.as_label()));
        }
        for (phase, label) in PHASE_NAMES.iter().zip(PHASE_LABELS) {
            assert_eq!(label, format!("phase=\"{phase}\""));
        }
    }
}
