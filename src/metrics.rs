//! The only code that knows metric names, help texts and buckets.
//!
//! [`Metrics`] owns the registry; [`ProbeMetrics`] holds the label handles of one probe so
//! recording a run is a few atomic updates, with no label lookup on the hot path.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::config::{Config, ProbeSpec};
use crate::probe::{FailureReason, Outcome, PHASE_NAMES};

/// Buckets of `webhook_exporter_schedule_lag_seconds`: from half a millisecond (on time) to
/// ten seconds (starved by the concurrency caps).
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Git revision and compiler, filled in by `build.rs`.
const REVISION: &str = env!("WEBHOOK_EXPORTER_REVISION");
const RUSTC_VERSION: &str = env!("WEBHOOK_EXPORTER_RUSTC_VERSION");

/// The exporter's registry and metric families.
pub struct Metrics {
    registry: Registry,
    /// Static label names of every probe (union over the config), after `probe`.
    static_labels: Vec<String>,
    success: GaugeVec,
    duration: HistogramVec,
    last_duration: GaugeVec,
    phase: GaugeVec,
    http_status: GaugeVec,
    response_code: GaugeVec,
    runs: IntCounterVec,
    failures: IntCounterVec,
    consecutive_failures: IntGaugeVec,
    last_run: GaugeVec,
    last_success: GaugeVec,
    skipped: IntCounterVec,
    info: GaugeVec,
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
    /// Creates every family for the probes of `config`.
    ///
    /// # Errors
    /// Only on a programming error (two families with one name).
    pub fn new(config: &Config) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let static_labels: Vec<String> = config
            .probes
            .iter()
            .flat_map(|p| p.labels.keys().cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let probe_labels: Vec<&str> = std::iter::once("probe")
            .chain(static_labels.iter().map(String::as_str))
            .collect();
        let with = |extra: &[&'static str]| -> Vec<&str> {
            probe_labels
                .iter()
                .copied()
                .chain(extra.iter().copied())
                .collect()
        };

        let gauge = |name: &str, help: &str, extra: &[&'static str]| {
            register(
                &registry,
                GaugeVec::new(Opts::new(name, help), &with(extra))?,
            )
        };
        let counter = |name: &str, help: &str, extra: &[&'static str]| {
            register(
                &registry,
                IntCounterVec::new(Opts::new(name, help), &with(extra))?,
            )
        };

        let metrics = Metrics {
            success: gauge(
                "webhook_probe_success",
                "1 if the last run of the probe succeeded, else 0.",
                &[],
            )?,
            duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "webhook_probe_duration_seconds",
                        "Duration of every run of the probe, retries included.",
                    )
                    .buckets(config.duration_buckets.clone()),
                    &with(&[]),
                )?,
            )?,
            last_duration: gauge(
                "webhook_probe_last_duration_seconds",
                "Duration of the last run of the probe.",
                &[],
            )?,
            phase: gauge(
                "webhook_probe_phase_duration_seconds",
                "Time spent in each phase of the last run (final attempt, summed over redirects).",
                &["phase"],
            )?,
            http_status: gauge(
                "webhook_probe_http_status_code",
                "HTTP status of the last run, 0 when none was received.",
                &[],
            )?,
            response_code: gauge(
                "webhook_probe_response_code",
                "Divalto code read from the body of the last run (absent when none).",
                &[],
            )?,
            runs: counter(
                "webhook_probe_runs_total",
                "Runs of the probe by result.",
                &["result"],
            )?,
            failures: counter(
                "webhook_probe_failures_total",
                "Failed runs of the probe by reason.",
                &["reason"],
            )?,
            consecutive_failures: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "webhook_probe_consecutive_failures",
                        "Failed runs since the last success.",
                    ),
                    &with(&[]),
                )?,
            )?,
            last_run: gauge(
                "webhook_probe_last_run_timestamp_seconds",
                "End of the last run (Unix time).",
                &[],
            )?,
            last_success: gauge(
                "webhook_probe_last_success_timestamp_seconds",
                "End of the last successful run (Unix time).",
                &[],
            )?,
            skipped: counter(
                "webhook_probe_skipped_total",
                "Planned runs skipped because the previous run was still going.",
                &[],
            )?,
            info: gauge(
                "webhook_probe_info",
                "Probe settings; the URL has its webhook code redacted.",
                &["url", "method", "schedule"],
            )?,
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
            static_labels,
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

    /// Creates the series of a probe that exist before its first run (counters at 0, info)
    /// and returns the handles its runs are recorded through.
    pub fn register_probe(&self, spec: &ProbeSpec) -> ProbeMetrics {
        let mut labels = Vec::with_capacity(1 + self.static_labels.len());
        labels.push(spec.name.clone());
        for key in &self.static_labels {
            labels.push(spec.labels.get(key).cloned().unwrap_or_default());
        }
        let values = |extra: &[&str]| -> Vec<String> {
            labels
                .iter()
                .cloned()
                .chain(extra.iter().map(|s| (*s).to_owned()))
                .collect()
        };

        let info_labels = values(&[
            &spec.target.redacted(),
            spec.method.as_str(),
            &spec.schedule.to_string(),
        ]);
        self.info.with_label_values(&info_labels).set(1.0);
        let runs =
            ["success", "failure"].map(|result| self.runs.with_label_values(&values(&[result])));
        let failures = FailureReason::ALL.map(|reason| {
            self.failures
                .with_label_values(&values(&[reason.as_label()]))
        });
        ProbeMetrics {
            duration: self.duration.with_label_values(&labels),
            skipped: self.skipped.with_label_values(&labels),
            runs,
            failures,
            info_labels,
            labels,
        }
    }

    /// Removes every series of a probe (it left the config).
    pub fn remove_probe(&self, probe: &ProbeMetrics) {
        let refs: Vec<&str> = probe.labels.iter().map(String::as_str).collect();
        let with = |extra: &'static str| -> Vec<&str> {
            refs.iter().copied().chain(std::iter::once(extra)).collect()
        };
        let _ = self.info.remove_label_values(&probe.info_labels);
        for family in [
            &self.success,
            &self.last_duration,
            &self.http_status,
            &self.response_code,
            &self.last_run,
            &self.last_success,
        ] {
            let _ = family.remove_label_values(&refs);
        }
        let _ = self.duration.remove_label_values(&refs);
        let _ = self.consecutive_failures.remove_label_values(&refs);
        let _ = self.skipped.remove_label_values(&refs);
        for phase in PHASE_NAMES {
            let _ = self.phase.remove_label_values(&with(phase));
        }
        for result in ["success", "failure"] {
            let _ = self.runs.remove_label_values(&with(result));
        }
        for reason in FailureReason::ALL {
            let _ = self.failures.remove_label_values(&with(reason.as_label()));
        }
    }

    /// Records a finished run of a probe.
    pub fn record(&self, probe: &ProbeMetrics, outcome: &Outcome) {
        let refs: Vec<&str> = probe.labels.iter().map(String::as_str).collect();
        let seconds = outcome.duration.as_secs_f64();
        probe.duration.observe(seconds);
        self.last_duration.with_label_values(&refs).set(seconds);
        self.success
            .with_label_values(&refs)
            .set(if outcome.success { 1.0 } else { 0.0 });
        self.http_status
            .with_label_values(&refs)
            .set(f64::from(outcome.http_status.unwrap_or(0)));
        match outcome
            .response_code
            .as_deref()
            .and_then(|code| code.parse::<f64>().ok())
        {
            Some(code) => self.response_code.with_label_values(&refs).set(code),
            None => {
                let _ = self.response_code.remove_label_values(&refs);
            }
        }
        for (name, value) in PHASE_NAMES.iter().zip(outcome.phases.as_array()) {
            let labels: Vec<&str> = refs.iter().copied().chain(std::iter::once(*name)).collect();
            self.phase
                .with_label_values(&labels)
                .set(value.as_secs_f64());
        }
        let finished = unix_seconds(outcome.finished_at);
        self.last_run.with_label_values(&refs).set(finished);
        let consecutive = self.consecutive_failures.with_label_values(&refs);
        match outcome.reason {
            None => {
                probe.runs[0].inc();
                consecutive.set(0);
                self.last_success.with_label_values(&refs).set(finished);
            }
            Some(reason) => {
                probe.runs[1].inc();
                consecutive.inc();
                let index = FailureReason::ALL
                    .iter()
                    .position(|r| *r == reason)
                    .unwrap_or(FailureReason::ALL.len() - 1);
                probe.failures[index].inc();
            }
        }
    }

    /// Renders every family in the Prometheus text format.
    pub fn encode(&self) -> String {
        let families = self.registry.gather();
        let mut buffer = Vec::new();
        // Encoding into a Vec cannot fail on I/O, and every family is well-formed.
        let _ = TextEncoder::new().encode(&families, &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }

    /// Marks the outcome of a config load.
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

/// The handles of one probe's series.
pub struct ProbeMetrics {
    /// `probe` then the static label values, in [`Metrics`]' label order.
    labels: Vec<String>,
    info_labels: Vec<String>,
    duration: Histogram,
    skipped: IntCounter,
    runs: [IntCounter; 2],
    failures: [IntCounter; 10],
}

impl ProbeMetrics {
    /// Counts a planned run skipped because the previous one was still going.
    pub fn skipped(&self) {
        self.skipped.inc();
    }
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
