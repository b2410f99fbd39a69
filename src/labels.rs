//! Label names the exporter's metric families set themselves, and those Prometheus reserves:
//! data only, no imports, so both metrics (which writes them) and config (which refuses a
//! static label that would collide with one) can use them without knowing each other.
//!
//! The families in [`crate::metrics`] write these constants (never a literal, through the
//! `metrics::names` re-export), and a test there renders a page with every family populated
//! and checks that each label name on it is listed here.

/// `probe`: every per-probe series.
pub const PROBE: &str = "probe";
/// `result` of `webhook_probe_runs_total`.
pub const RESULT: &str = "result";
/// `reason` of `webhook_probe_failures_total`.
pub const REASON: &str = "reason";
/// `phase` of `webhook_probe_phase_duration_seconds`.
pub const PHASE: &str = "phase";
/// `le` of the histograms' buckets.
pub const LE: &str = "le";
/// `url` of `webhook_probe_info`.
pub const URL: &str = "url";
/// `method` of `webhook_probe_info`.
pub const METHOD: &str = "method";
/// `schedule` of `webhook_probe_info`.
pub const SCHEDULE: &str = "schedule";
/// `version` of `webhook_probe_tls_info` (and of `webhook_exporter_build_info`).
pub const VERSION: &str = "version";
/// `subject` of `webhook_probe_tls_info`.
pub const SUBJECT: &str = "subject";
/// `issuer` of `webhook_probe_tls_info`.
pub const ISSUER: &str = "issuer";
/// `revision` of `webhook_exporter_build_info`.
pub const REVISION: &str = "revision";
/// `rustc_version` of `webhook_exporter_build_info`.
pub const RUSTC_VERSION: &str = "rustc_version";
/// `file` of `webhook_exporter_config_file_last_reload_successful`.
pub const FILE: &str = "file";

/// `index` of `webhook_exporter_shard_info`.
pub const INDEX: &str = "index";
/// `count` of `webhook_exporter_shard_info`.
pub const COUNT: &str = "count";

/// `run_id` of the exemplars in OpenMetrics output. An exemplar's labels are apart from its
/// series' labels, so a static label may take this name: it is not in [`RESERVED`].
pub const RUN_ID: &str = "run_id";

/// Label names Prometheus itself gives a meaning to: `quantile` (summaries), and `job` and
/// `instance`, which it attaches to every scraped series.
pub const PROMETHEUS: [&str; 3] = ["quantile", "job", "instance"];

/// Every label name a static probe label must not take: those the families set, then
/// Prometheus' own.
pub const RESERVED: [&str; 19] = [
    PROBE,
    RESULT,
    REASON,
    PHASE,
    LE,
    URL,
    METHOD,
    SCHEDULE,
    VERSION,
    SUBJECT,
    ISSUER,
    REVISION,
    RUSTC_VERSION,
    INDEX,
    COUNT,
    FILE,
    PROMETHEUS[0],
    PROMETHEUS[1],
    PROMETHEUS[2],
];
