//! webhook-exporter: calls Divalto ERP webhooks (and any HTTP(S) URL) on a schedule, judges
//! each answer, and exports the results as Prometheus metrics.
//!
//! # Layout
//! - [`config`]: the only code that touches YAML; `config::load` returns a validated [`config::Config`].
//! - [`schedule`]: pure "when is the next run" for intervals (stable per-name phase) and cron.
//! - [`scheduler`]: one timer per probe, no overlap, concurrency caps, schedule lag.
//! - [`probe`]: one run of one probe on a fresh connection -> [`probe::Outcome`].
//! - [`metrics`]: every metric name; records outcomes; renders `/metrics`.
//! - [`history`]: the bounded ring buffer of recent outcomes per probe.
//! - [`server`]: the HTTP endpoints, reading shared state only.
//! - [`demo`]: the embedded simulated Divalto server and its built-in config.
//! - [`report`]: text for the `check-config` and `probe` subcommands.
//! - [`logging`]: logfmt/JSON log set-up.
//!
//! # Data flow
//! config file -> `config::load` -> `Config` -> [`scheduler::Scheduler`] (one timer per probe)
//! -> `probe::run` -> `Outcome` -> `Metrics::record` + `History::push` -> `/metrics`, `/`.

pub mod config;
pub mod demo;
pub mod history;
pub mod logging;
pub mod metrics;
pub mod probe;
pub mod report;
pub mod schedule;
pub mod scheduler;
pub mod server;

use std::sync::{Arc, RwLock};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::scheduler::{Clock, Scheduler};
use crate::server::AppState;

/// Errors that stop the exporter.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metric registry refused a family (a programming error).
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Runs the exporter on `listener` until `shutdown` fires, then lets the runs in flight
/// finish (each bounded by its timeout) and returns.
///
/// # Errors
/// When metrics cannot be set up or the HTTP server fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new(&config)?);
    metrics.config_loaded(true);
    let scheduler = Scheduler::start(
        &config,
        metrics.clone(),
        scheduler::http_runner(),
        Clock::System,
        shutdown.child_token(),
    );
    let mut probes: Vec<_> = scheduler.probes().cloned().collect();
    probes.sort_by(|a, b| (&a.spec.server, &a.spec.name).cmp(&(&b.spec.server, &b.spec.name)));
    let state = AppState {
        metrics,
        probes: Arc::new(RwLock::new(Arc::new(probes))),
    };
    tracing::info!(
        address = %listener.local_addr()?,
        probes = config.probes.len(),
        config = %config.source.display(),
        "webhook-exporter listening"
    );
    let served = axum::serve(listener, server::router(state))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
    shutdown.cancel();
    scheduler.shutdown().await;
    tracing::info!("webhook-exporter stopped");
    served.map_err(RunError::Http)
}
