//! The running exporter: builds the pieces from flags and config (metrics, scheduler, read
//! model, auth, TLS of the endpoints), runs them, and reloads them (SIGHUP, `POST /-/reload`).
//! Only `main.rs` knows it; the HTTP side gets narrow [`server::Handles`] from it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigErrors, FileStatus, GoodVersions, Layout};
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
    /// Reads and validates the config files, and builds their probes' TLS clients; an
    /// invalid included file is refused on its own (its version in `previous`, the last
    /// load's [`Layout::good`], runs instead).
    ///
    /// # Errors
    /// Every problem of the main file, with positions: then nothing applies.
    pub fn load(&self, previous: &GoodVersions) -> Result<Layout, ConfigErrors> {
        let layout = match self {
            ConfigSource::File(path) => config::load_layout(path, previous, &tls::check)?,
            ConfigSource::Demo(address) => Layout::single(demo::config(*address)?),
        };
        tls::prepare(&layout.config)?;
        Ok(layout)
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
    /// The store (`--storage.path`) cannot be read.
    #[error("{0}")]
    Storage(#[from] crate::storage::StorageError),
    /// The store's writer thread cannot be started.
    #[error("cannot start the store's writer thread: {0}")]
    StorageWriter(std::io::Error),
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
    /// Some included files were refused; the main file and the others applied.
    #[error(
        "{refused} file(s) refused, their last good version stays; the other files applied ({summary}):\n{errors}"
    )]
    Partial {
        /// How many files were refused.
        refused: usize,
        /// What the applied part changed.
        summary: ReloadSummary,
        /// Why.
        errors: ConfigErrors,
    },
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
    /// One reload at a time; it guards the last good version of each included file.
    reload_lock: tokio::sync::Mutex<GoodVersions>,
    /// The store's writer (`--storage.path`), closed (flushed) after the last run.
    storage: std::sync::Mutex<Option<crate::storage::Writer>>,
}

impl App {
    /// Starts the probes of `layout` (already loaded from `source`) that `shard` runs, and
    /// reads the web config. With a `storage`, the probes first carry on from what it kept.
    ///
    /// # Errors
    /// An invalid web config, a store that cannot be read, or metrics that cannot be set up.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        source: ConfigSource,
        layout: &Layout,
        web_config_file: Option<PathBuf>,
        runner: Runner,
        runtimes: Vec<tokio::runtime::Handle>,
        shard: Shard,
        storage: Option<crate::storage::Storage>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Self>, StartError> {
        let web = web_config_file
            .as_deref()
            .map(WebConfig::load)
            .transpose()?;
        let storage = match storage {
            Some(mut storage) => {
                let saved = storage.load()?;
                let file = storage.file().display().to_string();
                let writer = storage
                    .start_writer(&saved)
                    .map_err(StartError::StorageWriter)?;
                tracing::info!(file = %file, probes = saved.len(), "store opened");
                Some((writer, saved))
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new()?);
        let scheduler = Scheduler::on_runtimes(
            metrics.clone(),
            runner,
            Clock::System,
            shutdown.child_token(),
            runtimes,
        );
        let storage = storage.map(|(writer, saved)| {
            scheduler.persist_to(writer.recorder(), saved);
            writer
        });
        let placement = Arc::new(Placement::new(shard));
        metrics.set_shard(shard.index(), shard.count());
        scheduler.apply_where(&layout.config, &|name| placement.runs(name));
        placement.remember(&layout.config);
        metrics.config_files(&layout.files);
        metrics.config_loaded(layout.is_complete());
        log_refused(&layout.files);
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
            reload_lock: tokio::sync::Mutex::new(layout.good.clone()),
            storage: std::sync::Mutex::new(storage),
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

    /// Re-reads the config (and the web config) and applies them; an invalid main file or
    /// web config changes nothing but `webhook_exporter_config_last_reload_successful`,
    /// which becomes 0. An invalid included file is refused on its own: the rest applies,
    /// and that gauge is 0 too (not everything applied).
    ///
    /// # Errors
    /// Why the new config, or part of it, was refused.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let mut good = self.reload_lock.lock().await;
        let source = self.source.clone();
        let web_file = self.web_config_file.clone();
        let previous = good.clone();
        // File reads and cron checks block: keep them off the runtime's workers.
        let loaded = tokio::task::spawn_blocking(move || -> Result<_, ReloadError> {
            let config = source.load(&previous)?;
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
                .apply_where(&config.config, &|name| self.placement.runs(name));
            self.placement.remember(&config.config);
            self.metrics.config_files(&config.files);
            log_refused(&config.files);
            let complete = config.is_complete();
            let errors = config.errors();
            *good = config.good;
            if complete {
                Ok(summary)
            } else {
                Err(ReloadError::Partial {
                    refused: config.files.iter().filter(|f| !f.ok()).count(),
                    summary,
                    errors,
                })
            }
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
            Err(ReloadError::Partial { summary, .. }) => {
                self.metrics.config_loaded(false);
                tracing::warn!(
                    added = summary.added,
                    removed = summary.removed,
                    changed = summary.changed,
                    unchanged = summary.unchanged,
                    "config reloaded in part: refused files keep their last good version"
                );
            }
            Err(error) => {
                self.metrics.config_loaded(false);
                if let (ReloadError::Config(_), ConfigSource::File(path)) = (error, &self.source) {
                    self.metrics.config_file_failed(path);
                }
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
        let writer = crate::sync::lock(&app.storage).take();
        if let Some(writer) = writer {
            // The last results reach the disk before the process ends.
            let _ = tokio::task::spawn_blocking(move || writer.close()).await;
        }
        tracing::info!("webhook-exporter stopped");
        served
    }
}

/// Logs each error of each refused included file, with its position.
fn log_refused(files: &[FileStatus]) {
    for file in files.iter().filter(|f| !f.ok()) {
        let outcome = if file.kept {
            "config file refused; its last good version stays"
        } else {
            "config file refused; its probes are not loaded"
        };
        for error in &file.errors {
            tracing::error!(file = %file.file.display(), error = %error, "{outcome}");
        }
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
