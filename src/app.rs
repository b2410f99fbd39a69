//! The running exporter: builds the pieces from flags and config (metrics, scheduler, read
//! model, auth, TLS of the endpoints), runs them, and reloads them (SIGHUP, `POST /-/reload`).
//! Only `main.rs` knows it; the HTTP side gets narrow [`server::Handles`] from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigErrors};
use crate::metrics::Metrics;
use crate::scheduler::{Clock, ReloadSummary, Runner, Scheduler};
use crate::server::auth::Auth;
use crate::server::web_config::{WebConfig, WebConfigError};
use crate::shard::{Placement, Shard};
use crate::shutdown::Hangups;
use crate::{demo, server, state, tls};

/// Where the probe config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// A YAML file, re-read on every reload.
    File(PathBuf),
    /// The built-in demo config, probing the simulated server at this address.
    Demo(SocketAddr),
}

impl ConfigSource {
    /// Reads and validates the config, and builds its probes' TLS clients.
    ///
    /// # Errors
    /// Every problem of the file, with positions.
    pub fn load(&self) -> Result<Config, ConfigErrors> {
        let config = match self {
            ConfigSource::File(path) => config::load(path),
            ConfigSource::Demo(address) => demo::config(*address),
        }?;
        tls::prepare(&config)?;
        Ok(config)
    }
}

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metric registry refused a family (a programming error).
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The web config is invalid.
    #[error("invalid web config: {0}")]
    WebConfig(#[from] WebConfigError),
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new probe config is invalid.
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    /// The new web config is invalid.
    #[error("invalid web config: {0}")]
    WebConfig(#[from] WebConfigError),
    /// The web config turned TLS on or off, which needs a restart.
    #[error("the web config turns TLS on or off: restart the exporter for that")]
    TlsToggled,
}

/// The running exporter: config source, metrics, scheduler, auth and TLS of its endpoints.
pub struct App {
    source: ConfigSource,
    web_config_file: Option<PathBuf>,
    /// The registry behind `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The probes and their timers.
    pub scheduler: Scheduler,
    /// Users allowed on the endpoints.
    pub auth: Arc<Auth>,
    /// This replica's shard; the scheduler only ever gets the probes of it.
    pub placement: Arc<Placement>,
    /// Headers the web config adds to every response.
    pub response_headers: Arc<server::ResponseHeaders>,
    /// TLS of the endpoints (reloaded in place), `None` for plain HTTP.
    tls: Option<RustlsConfig>,
    /// One reload at a time.
    reload_lock: tokio::sync::Mutex<()>,
}

impl App {
    /// Starts the probes of `config` (already loaded from `source`) that `shard` runs, and
    /// reads the web config.
    ///
    /// # Errors
    /// An invalid web config, or metrics that cannot be set up.
    pub fn start(
        source: ConfigSource,
        config: &Config,
        web_config_file: Option<PathBuf>,
        runner: Runner,
        runtimes: Vec<tokio::runtime::Handle>,
        shard: Shard,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let web = web_config_file
            .as_deref()
            .map(WebConfig::load)
            .transpose()?;
        let metrics = Arc::new(Metrics::new()?);
        let scheduler = Scheduler::on_runtimes(
            metrics.clone(),
            runner,
            Clock::System,
            shutdown.child_token(),
            runtimes,
        );
        let placement = Arc::new(Placement::new(shard));
        metrics.set_shard(shard.index(), shard.count());
        scheduler.apply_where(config, &|name| placement.runs(name));
        placement.remember(config);
        metrics.config_loaded(true);
        let auth = Arc::new(Auth::default());
        let response_headers = Arc::new(server::ResponseHeaders::default());
        let mut tls = None;
        if let Some(web) = web {
            auth.set_users(web.users);
            response_headers.set(web.headers);
            tls = web.tls.map(RustlsConfig::from_config);
        }
        Ok(Arc::new(Self {
            source,
            web_config_file,
            metrics,
            scheduler,
            auth,
            placement,
            response_headers,
            tls,
            reload_lock: tokio::sync::Mutex::new(()),
        }))
    }

    /// The narrow handles the HTTP side gets: it never sees the App itself.
    pub fn handles(self: &Arc<Self>) -> server::Handles {
        let reloader = self.clone();
        let runner = self.clone();
        server::Handles {
            metrics: self.metrics.clone(),
            probes: self.scheduler.state(),
            reload: Arc::new(move || {
                let app = reloader.clone();
                Box::pin(async move {
                    app.reload()
                        .await
                        .map(|summary| summary.to_string())
                        .map_err(|error| error.to_string())
                })
            }),
            run_now: Arc::new(move |name| {
                let app = runner.clone();
                Box::pin(async move {
                    app.scheduler
                        .run_now(&name)
                        .await
                        .map(|outcome| state::ResultView::from(&outcome))
                })
            }),
            auth: self.auth.clone(),
            placement: self.placement.clone(),
            response_headers: self.response_headers.clone(),
        }
    }

    /// Whether the endpoints are served over TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Re-reads the config (and the web config) and applies them; an invalid one changes
    /// nothing but `webhook_exporter_config_last_reload_successful`, which becomes 0.
    ///
    /// # Errors
    /// Why the new config was refused.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let source = self.source.clone();
        let web_file = self.web_config_file.clone();
        // File reads and cron checks block: keep them off the runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let config = source.load()?;
            let web = web_file.as_deref().map(WebConfig::load).transpose()?;
            Ok((config, web))
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        let result = loaded.and_then(|(config, web)| {
            if let Some(web) = web {
                if web.tls.is_some() != self.tls.is_some() {
                    return Err(ReloadError::TlsToggled);
                }
                if let (Some(live), Some(new)) = (&self.tls, web.tls) {
                    live.reload_from_config(new);
                }
                self.auth.set_users(web.users);
                self.response_headers.set(web.headers);
            }
            let summary = self
                .scheduler
                .apply_where(&config, &|name| self.placement.runs(name));
            self.placement.remember(&config);
            Ok(summary)
        });
        match &result {
            Ok(summary) => {
                self.metrics.config_loaded(true);
                tracing::info!(
                    added = summary.added,
                    removed = summary.removed,
                    changed = summary.changed,
                    unchanged = summary.unchanged,
                    "config reloaded"
                );
            }
            Err(error) => {
                self.metrics.config_loaded(false);
                for line in error.to_string().lines() {
                    tracing::error!(error = %line, "config reload refused; the running config stays");
                }
            }
        }
        result
    }

    /// Serves the exporter on `listener` until `shutdown` fires (each SIGHUP of `hangups`
    /// reloads meanwhile), then lets the runs in flight finish (each bounded by its timeout)
    /// and returns.
    ///
    /// # Errors
    /// When the HTTP server fails.
    pub async fn run(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
        hangups: Hangups,
    ) -> std::io::Result<()> {
        let app = self;
        tracing::info!(
            address = %listener.local_addr()?,
            probes = app.scheduler.state().len(),
            shard_index = app.placement.shard().index(),
            shard_count = app.placement.shard().count(),
            tls = app.tls.is_some(),
            "webhook-exporter listening"
        );
        let reloader = tokio::spawn(reload_on_sighup(app.clone(), hangups, shutdown.clone()));
        let served = server::serve(
            listener,
            server::router(app.handles()),
            app.tls.clone(),
            shutdown.clone(),
        )
        .await;
        shutdown.cancel();
        reloader.abort();
        app.scheduler.shutdown().await;
        tracing::info!("webhook-exporter stopped");
        served
    }
}

async fn reload_on_sighup(app: Arc<App>, mut hangups: Hangups, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = hangups.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = app.reload().await;
            }
            () = shutdown.cancelled() => return,
        }
    }
}
