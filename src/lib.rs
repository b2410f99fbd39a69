//! webhook-exporter: calls Divalto ERP webhooks (and any HTTP(S) URL) on a schedule, judges
//! each answer, and exports the results as Prometheus metrics.
//!
//! # Layout
//! - [`app`]: the running exporter: builds the pieces from flags and config, runs, reloads.
//! - [`config`]: the only code that touches YAML; `config::load_layout` reads the main file
//!   and its `include:` files, each accepted or refused on its own, into a validated
//!   [`config::Config`] (`config::load`: the strict form).
//! - [`schedule`]: pure "when is the next run" for intervals (stable per-name phase) and cron,
//!   and maintenance windows (open spans, next opening, the next start outside a skip window).
//! - [`scheduler`]: one timer per probe, no overlap, concurrency caps, schedule lag, reload diff,
//!   and for probes with maintenance windows a task that flips their gauge at each edge.
//! - [`probe`]: one run of one probe on a fresh connection -> [`probe::Outcome`], with its
//!   [`probe::RunId`].
//! - [`state`]: the read model: each probe's live state behind methods, and owned views of it.
//! - [`metrics`]: every metric name; records outcomes; renders `/metrics` (Prometheus text, or
//!   OpenMetrics with exemplars naming runs).
//! - [`history`]: the bounded ring buffer of recent outcomes per probe (inside [`state`]).
//! - [`storage`]: state kept across restarts (`--storage.path`): a redb file fed by a
//!   background writer thread, read once at start.
//! - [`shard`]: which replica runs which probe (`--shard.*`): a stable hash of the name.
//! - [`server`]: the HTTP endpoints (metrics, API, status page, reload) on narrow handles, auth and TLS.
//! - [`demo`]: the embedded simulated Divalto server and its built-in config.
//! - [`report`]: text for the `check-config` and `probe` subcommands.
//! - [`slo`]: when one failed run already pages through the shipped SLO alerts (the
//!   `check-config` warning).
//! - [`logging`]: logfmt/JSON log set-up.
//! - [`shutdown`]: the SIGHUP stream, registered before anything slow starts.
//! - [`tls`]: the crypto provider, PEM loading, TLS client and server configs, fed plain
//!   settings by config; used by probe and server.
//! - [`labels`]: the label names the exporter sets (data only), read by metrics and config.
//!
//! # Data flow
//! config files -> `config::load_layout` (with the last good version of each included file,
//! kept by [`app::App`]) -> `Layout` (`Config` + per-file status) -> [`scheduler::Scheduler`] (one timer per probe)
//! -> `probe::run` -> `Outcome` -> `state::ProbeState::record` (`Metrics::record` +
//! `History::push` + the log line) -> `/metrics` (`Metrics::render`), and
//! [`state::Probes::list`]/[`state::Probes::view`] -> `ProbeView` -> `/api/v1/probes`, `/`;
//! [`state::Probes::find_run`] -> `/api/v1/runs/{run_id}`.
//! [`app::App`] ties them together, hands the router its [`server::Handles`] and owns
//! reloads (SIGHUP, `POST /-/reload`).

pub mod app;
pub mod config;
pub mod demo;
pub mod history;
pub mod labels;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod shard;
pub mod shutdown;
pub mod slo;
pub mod state;
pub mod storage;
pub(crate) mod sync;
pub mod tls;

pub use crate::scheduler::ProbeRuntimes;
