//! The only code that spells a metric name, help text or bucket: every family defined once.
//!
//! [`Metrics`] holds the exporter-wide families (reload status, lag, in-flight runs, build
//! info, `process_*`) in a `prometheus` registry; the per-probe series live in `store.rs` and
//! are written by `text.rs`, which takes each family's name from its `FamilyDef` here.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::config::{FileStatus, ProbeSpec};
use crate::probe::Outcome;

pub mod names;
mod openmetrics;
mod store;
#[cfg(test)]
pub(crate) mod tests;
mod text;

pub use store::ProbeMetrics;
pub use text::{Page, Part, Rendering};

/// The `# TYPE` of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The word of the text format.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The exposition formats `/metrics` answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4: the default.
    Text,
    /// OpenMetrics 1.0 text, with exemplars naming runs.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a page in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// One metric family as it appears on `/metrics`.
pub(crate) struct FamilyDef {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) help: &'static str,
    /// The label names the family sets on its samples, besides `probe` and the probes' static
    /// labels (a test checks the page against them).
    pub(crate) labels: &'static [&'static str],
}

/// A per-probe family: its definition, and how [`text`] writes one probe's samples of it.
pub(crate) struct ProbeFamily {
    pub(crate) def: FamilyDef,
    write: text::WriteRow,
}

const fn def(
    name: &'static str,
    kind: Kind,
    help: &'static str,
    labels: &'static [&'static str],
) -> FamilyDef {
    FamilyDef {
        name,
        kind,
        help,
        labels,
    }
}

const CONFIG_LAST_RELOAD_SUCCESSFUL: FamilyDef = def(
    "webhook_exporter_config_last_reload_successful",
    Kind::Gauge,
    "1 if the last config load or reload succeeded.",
    &[],
);
const CONFIG_FILE_LAST_RELOAD_SUCCESSFUL: FamilyDef = def(
    "webhook_exporter_config_file_last_reload_successful",
    Kind::Gauge,
    "1 if the config file applied at the last load or reload, 0 if it was refused.",
    &[names::FILE],
);
const CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP: FamilyDef = def(
    "webhook_exporter_config_last_reload_success_timestamp_seconds",
    Kind::Gauge,
    "Time of the last successful config load or reload (Unix time).",
    &[],
);
const PROBES_CONFIGURED: FamilyDef = def(
    "webhook_exporter_probes_configured",
    Kind::Gauge,
    "Probes in the running config.",
    &[],
);
const PROBES_IN_FLIGHT: FamilyDef = def(
    "webhook_exporter_probes_in_flight",
    Kind::Gauge,
    "Runs in progress.",
    &[],
);
const SCHEDULE_LAG: FamilyDef = def(
    "webhook_exporter_schedule_lag_seconds",
    Kind::Histogram,
    "Actual start of a run minus its planned start.",
    &[names::LE],
);
/// Buckets of [`SCHEDULE_LAG`]: from half a millisecond (on time) to ten seconds (starved by
/// the concurrency caps).
const LAG_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BUILD_INFO: FamilyDef = def(
    "webhook_exporter_build_info",
    Kind::Gauge,
    "Version of the exporter; always 1.",
    &[names::VERSION, names::REVISION, names::RUSTC_VERSION],
);

const SHARD_INFO: FamilyDef = def(
    "webhook_exporter_shard_info",
    Kind::Gauge,
    "This replica's shard of the probes (--shard.index of --shard.count); always 1.",
    &[names::INDEX, names::COUNT],
);

/// Every per-probe family, in output order. The buckets of `webhook_probe_duration_seconds`
/// come from the config (`duration_buckets`).
pub(crate) const PROBE_FAMILIES: &[ProbeFamily] = &[
    ProbeFamily {
        def: def(
            "webhook_probe_success",
            Kind::Gauge,
            "1 if the last run of the probe succeeded, else 0.",
            &[],
        ),
        write: text::success,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_duration_seconds",
            Kind::Histogram,
            "Duration of every run of the probe, retries included.",
            &[names::LE],
        ),
        write: text::duration_histogram,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_last_duration_seconds",
            Kind::Gauge,
            "Duration of the last run of the probe.",
            &[],
        ),
        write: text::last_duration,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_phase_duration_seconds",
            Kind::Gauge,
            "Time spent in each phase of the last run (final attempt, summed over redirects).",
            &[names::PHASE],
        ),
        write: text::phase_durations,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_http_status_code",
            Kind::Gauge,
            "HTTP status of the last run, 0 when none was received.",
            &[],
        ),
        write: text::http_status,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_response_code",
            Kind::Gauge,
            "Divalto code read from the body of the last run (absent when none).",
            &[],
        ),
        write: text::response_code,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_runs_total",
            Kind::Counter,
            "Runs of the probe by result.",
            &[names::RESULT],
        ),
        write: text::runs,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_failures_total",
            Kind::Counter,
            "Failed runs of the probe by reason.",
            &[names::REASON],
        ),
        write: text::failures,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_consecutive_failures",
            Kind::Gauge,
            "Failed runs since the last success.",
            &[],
        ),
        write: text::consecutive_failures,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_last_run_timestamp_seconds",
            Kind::Gauge,
            "End of the last run (Unix time).",
            &[],
        ),
        write: text::last_run,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_last_success_timestamp_seconds",
            Kind::Gauge,
            "End of the last successful run (Unix time).",
            &[],
        ),
        write: text::last_success,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_skipped_total",
            Kind::Counter,
            "Planned runs skipped because the previous run was still going.",
            &[],
        ),
        write: text::skipped,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_retries_total",
            Kind::Counter,
            "Extra attempts made by retries (a run that succeeds on a retry is a success).",
            &[],
        ),
        write: text::retries,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_redirects",
            Kind::Gauge,
            "Redirects followed in the last run.",
            &[],
        ),
        write: text::redirects,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_http_version",
            Kind::Gauge,
            "HTTP version of the last answer (1.1).",
            &[],
        ),
        write: text::http_version,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_tls_cert_expiry_timestamp_seconds",
            Kind::Gauge,
            "Earliest notAfter of the certificate chain the server presented (Unix time), even when it failed verification.",
            &[],
        ),
        write: text::tls_cert_expiry,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_tls_info",
            Kind::Gauge,
            "TLS version and the leaf certificate's subject and issuer (common names) last seen; always 1.",
            &[names::VERSION, names::SUBJECT, names::ISSUER],
        ),
        write: text::tls_info,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_info",
            Kind::Gauge,
            "Probe settings; the URL has its webhook code redacted.",
            &[names::URL, names::METHOD, names::SCHEDULE],
        ),
        write: text::probe_info,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_next_run_timestamp_seconds",
            Kind::Gauge,
            "Planned start of the next scheduled run (Unix time); absent when none is planned.",
            &[],
        ),
        write: text::next_run,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_maintenance",
            Kind::Gauge,
            "1 while a maintenance window of the probe is open, else 0.",
            &[],
        ),
        write: text::maintenance,
    },
    ProbeFamily {
        def: def(
            "webhook_probe_objective_ratio",
            Kind::Gauge,
            "Availability objective of the probe as a ratio (0.995 for 99.5%); absent when none is set.",
            &[],
        ),
        write: text::objective,
    },
];

/// Git revision and compiler, filled in by `build.rs`.
const REVISION: &str = env!("WEBHOOK_EXPORTER_REVISION");
const RUSTC_VERSION: &str = env!("WEBHOOK_EXPORTER_RUSTC_VERSION");

/// The exporter's metrics.
pub struct Metrics {
    registry: Registry,
    /// Per-probe series by probe name.
    probes: store::Store,
    /// `webhook_exporter_config_last_reload_successful`.
    pub reload_successful: IntGauge,
    /// `webhook_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_timestamp: Gauge,
    /// `webhook_exporter_config_file_last_reload_successful`, with the files it has series
    /// for (a file gone from the config loses its series).
    file_reload_successful: IntGaugeVec,
    files: std::sync::Mutex<Vec<String>>,
    /// `webhook_exporter_probes_configured`.
    pub probes_configured: IntGauge,
    /// `webhook_exporter_probes_in_flight`.
    pub probes_in_flight: IntGauge,
    /// `webhook_exporter_schedule_lag_seconds`.
    pub schedule_lag: Histogram,
    /// `webhook_exporter_shard_info`: one series, replaced by [`Metrics::set_shard`].
    shard_info: GaugeVec,
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

fn int_gauge(registry: &Registry, family: &FamilyDef) -> Result<IntGauge, MetricsError> {
    register(registry, IntGauge::new(family.name, family.help)?)
}

impl Metrics {
    /// Creates the exporter-wide families; probes are added with [`Metrics::register_probe`].
    ///
    /// # Errors
    /// Only on a programming error (two families with one name).
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let metrics = Metrics {
            probes: store::Store::default(),
            reload_successful: int_gauge(&registry, &CONFIG_LAST_RELOAD_SUCCESSFUL)?,
            reload_success_timestamp: register(
                &registry,
                Gauge::new(
                    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP.name,
                    CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP.help,
                )?,
            )?,
            file_reload_successful: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        CONFIG_FILE_LAST_RELOAD_SUCCESSFUL.name,
                        CONFIG_FILE_LAST_RELOAD_SUCCESSFUL.help,
                    ),
                    CONFIG_FILE_LAST_RELOAD_SUCCESSFUL.labels,
                )?,
            )?,
            files: std::sync::Mutex::default(),
            probes_configured: int_gauge(&registry, &PROBES_CONFIGURED)?,
            probes_in_flight: int_gauge(&registry, &PROBES_IN_FLIGHT)?,
            schedule_lag: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(SCHEDULE_LAG.name, SCHEDULE_LAG.help)
                        .buckets(LAG_BUCKETS.to_vec()),
                )?,
            )?,
            shard_info: register(
                &registry,
                GaugeVec::new(
                    Opts::new(SHARD_INFO.name, SHARD_INFO.help),
                    SHARD_INFO.labels,
                )?,
            )?,
            registry,
        };
        metrics.set_shard(0, 1);
        let build_info = register(
            &metrics.registry,
            GaugeVec::new(
                Opts::new(BUILD_INFO.name, BUILD_INFO.help),
                BUILD_INFO.labels,
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
        self.probes.register(spec, buckets)
    }

    /// Removes every series of a probe, unless the name now belongs to a newer registration.
    pub fn remove_probe(&self, name: &str, probe: &Arc<ProbeMetrics>) {
        self.probes.remove(name, probe);
    }

    /// Number of probes with series.
    pub fn probe_count(&self) -> usize {
        self.probes.count()
    }

    /// Records a finished run of a probe.
    pub fn record(&self, probe: &ProbeMetrics, outcome: &Outcome) {
        probe.record(outcome);
    }

    /// Renders every family in the Prometheus text format (version 0.0.4), whole.
    pub fn encode(&self) -> String {
        self.render().collect()
    }

    /// Starts rendering the page in the text format: the probes as they are now, written
    /// piece by piece as it is read.
    pub fn render(&self) -> Rendering {
        self.render_as(Format::Text)
    }

    /// Starts rendering the page in `format`: the probes as they are now, written piece by
    /// piece as it is read.
    pub fn render_as(&self, format: Format) -> Rendering {
        self.page(format).into()
    }

    /// The page in `format` over the probes as they are now, to be written in parts: the
    /// exporter-wide families are rendered now, the probes' values when each part is written.
    pub fn page(&self, format: Format) -> Page {
        let families = self.registry.gather();
        let head = match format {
            Format::Text => {
                let mut buffer = Vec::new();
                // Encoding into a Vec cannot fail on I/O, and every family is well-formed.
                let _ = TextEncoder::new().encode(&families, &mut buffer);
                String::from_utf8(buffer).unwrap_or_default()
            }
            Format::OpenMetrics => openmetrics::encode_families(&families),
        };
        Page::new(head, self.probes.probes(), format)
    }

    /// Marks the outcome of a config load or reload.
    pub fn config_loaded(&self, success: bool) {
        self.reload_successful.set(i64::from(success));
        if success {
            self.reload_success_timestamp
                .set(store::unix_seconds(SystemTime::now()));
        }
    }

    /// Sets `webhook_exporter_shard_info` to this replica's shard (index 0 of 1 unsharded).
    pub fn set_shard(&self, index: u32, count: u32) {
        self.shard_info.reset();
        self.shard_info
            .with_label_values(&[index.to_string(), count.to_string()])
            .set(1.0);
    }

    /// Marks how each file fared in a load that applied: 1 or 0 per file, and no series
    /// for a file no longer in the config.
    pub fn config_files(&self, files: &[FileStatus]) {
        let names: Vec<String> = files.iter().map(|f| f.file.display().to_string()).collect();
        let mut known = crate::sync::lock(&self.files);
        for gone in known.iter().filter(|name| !names.contains(name)) {
            let _ = self
                .file_reload_successful
                .remove_label_values(&[gone.as_str()]);
        }
        for (name, file) in names.iter().zip(files) {
            self.file_reload_successful
                .with_label_values(&[name.as_str()])
                .set(i64::from(file.ok()));
        }
        *known = names;
    }

    /// The files refused at the last load, in load order.
    pub fn refused_files(&self) -> Vec<String> {
        crate::sync::lock(&self.files)
            .iter()
            .filter(|name| {
                self.file_reload_successful
                    .get_metric_with_label_values(&[name.as_str()])
                    .is_ok_and(|gauge| gauge.get() == 0)
            })
            .cloned()
            .collect()
    }

    /// Marks the main file as refused (a load that applied nothing).
    pub fn config_file_failed(&self, file: &std::path::Path) {
        let name = file.display().to_string();
        self.file_reload_successful
            .with_label_values(&[name.as_str()])
            .set(0);
        let mut known = crate::sync::lock(&self.files);
        if !known.contains(&name) {
            known.push(name);
        }
    }

    /// Records how late a run started.
    pub fn observe_lag(&self, lag: Duration) {
        self.schedule_lag.observe(lag.as_secs_f64());
    }
}
