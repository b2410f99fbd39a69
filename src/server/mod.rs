//! HTTP only: [`router`] maps the endpoints to handlers that take narrow [`Handles`]
//! (metrics to render, the read model, a reload and a run-now handle), and [`serve`] runs
//! it (plain or TLS, with timeouts and a body cap). Handlers never probe anything
//! themselves: on-demand runs go through the run-now handle.

mod api;
pub mod auth;
mod client_auth;
mod csrf;
mod metrics_page;
mod status_page;
pub mod web_config;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::metrics::{Format, Metrics};
use crate::state::{Probes, ResultView, RunNowError};

/// Largest request body accepted: no endpoint takes more than a few bytes.
const MAX_REQUEST_BODY: usize = 16 * 1024;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound of every request but on-demand runs (a reload of a large config included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time given to open connections at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A future the handles answer with.
pub type Answer<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Re-reads and applies the config: `Ok` with what changed (`1 added, 0 removed, ...`),
/// `Err` with why it was refused (the running config stays).
pub type Reload = Arc<dyn Fn() -> Answer<Result<String, String>> + Send + Sync>;

/// Runs the named probe now and answers its recorded result.
pub type RunNow = Arc<dyn Fn(String) -> Answer<Result<ResultView, RunNowError>> + Send + Sync>;

/// What the handlers may use, and nothing more.
#[derive(Clone)]
pub struct Handles {
    /// The registry behind `/metrics` (and the reload gauges on the status page).
    pub metrics: Arc<Metrics>,
    /// The read model: probe views for the API and the status page.
    pub probes: Probes,
    /// `POST /-/reload`.
    pub reload: Reload,
    /// `POST /api/v1/probes/{name}/run`.
    pub run_now: RunNow,
    /// Users allowed on the endpoints.
    pub auth: Arc<auth::Auth>,
    /// This replica's shard, to name the owner of a probe another replica runs.
    pub placement: Arc<crate::shard::Placement>,
    /// Headers the web config adds to every response.
    pub response_headers: Arc<ResponseHeaders>,
}

/// The extra response headers of the web config (`http_server_config.headers`), replaced
/// in place by a reload.
#[derive(Default)]
pub struct ResponseHeaders(std::sync::RwLock<Arc<axum::http::HeaderMap>>);

impl ResponseHeaders {
    /// Installs the headers of a (re)loaded web config.
    pub fn set(&self, headers: axum::http::HeaderMap) {
        *crate::sync::write(&self.0) = Arc::new(headers);
    }

    fn get(&self) -> Arc<axum::http::HeaderMap> {
        crate::sync::read(&self.0).clone()
    }
}

/// Adds the configured headers to a response that does not set them itself (as the
/// toolkit does: the status page keeps its own `Content-Security-Policy`).
async fn add_response_headers(
    State(headers): State<Arc<ResponseHeaders>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    for (name, value) in headers.get().iter() {
        if !response.headers().contains_key(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    response
}

/// The exporter's routes, every one behind basic auth when users are configured, and
/// every one that changes something closed to cross-site requests.
pub fn router(handles: Handles) -> Router {
    let auth = handles.auth.clone();
    let response_headers = handles.response_headers.clone();
    let quick = Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/-/reload", post(reload))
        .route("/", get(status_page::page))
        .route("/status.json", get(status_page::json))
        .route("/assets/{file}", get(status_page::asset))
        .route("/api/v1/probes", get(api::list))
        .route("/api/v1/probes/{name}", get(api::show))
        .route("/api/v1/runs/{run_id}", get(api::show_run))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ));
    // An on-demand run is bounded by the probe's own timeout (plus any wait for a slot).
    let runs = Router::new().route("/api/v1/probes/{name}/run", post(api::run));
    quick
        .merge(runs)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY))
        .layer(axum::middleware::from_fn_with_state(
            auth,
            auth::require_basic_auth,
        ))
        // Before authentication: a forged request costs no bcrypt check.
        .layer(axum::middleware::from_fn(csrf::refuse_cross_site))
        .layer(axum::middleware::from_fn_with_state(
            response_headers,
            add_response_headers,
        ))
        .with_state(handles)
}

/// Serves `router` on `listener` until `shutdown`, then drains open connections.
///
/// # Errors
/// When the listener cannot be used.
pub async fn serve(
    listener: std::net::TcpListener,
    router: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let handle = axum_server::Handle::new();
    let waiter = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        waiter.graceful_shutdown(Some(SHUTDOWN_GRACE));
    });
    listener.set_nonblocking(true)?;
    let service = router.into_make_service();
    match tls {
        Some(config) => {
            let mut server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            server.serve(service).await
        }
        None => {
            let mut server = axum_server::from_tcp(listener)?.handle(handle);
            server
                .http_builder()
                .http1()
                .header_read_timeout(HEADER_READ_TIMEOUT);
            server.serve(service).await
        }
    }
}

async fn metrics(State(handles): State<Handles>, headers: axum::http::HeaderMap) -> Response {
    let format = negotiate(&header_list(&headers, header::ACCEPT));
    let gzip = metrics_page::accepts_gzip(&header_list(&headers, header::ACCEPT_ENCODING));
    // Built and written on the render threads, ahead of the reader: memory stays bounded at
    // any probe count, and the serving threads only pass the parts on.
    let Some(body) = metrics_page::MetricsBody::start(handles.metrics.clone(), format, gzip).await
    else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while listing the probes\n",
        )
            .into_response();
    };
    let body = axum::body::Body::new(body);
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type()),
            // The answer depends on both headers: a cache must not mix formats or encodings.
            (header::VARY, "Accept, Accept-Encoding"),
        ],
        body,
    )
        .into_response();
    if gzip {
        response.headers_mut().insert(
            header::CONTENT_ENCODING,
            axum::http::HeaderValue::from_static("gzip"),
        );
    }
    response
}

/// Every value of header `name` as one comma-separated list (a header may come several
/// times, each a part of the list).
fn header_list(headers: &axum::http::HeaderMap, name: header::HeaderName) -> String {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect::<Vec<_>>()
        .join(",")
}

/// The items of a comma-separated `Accept`-style list, each in lower case with its weight:
/// `q` when given, 1 when absent, 0 when unreadable.
fn weighted(list: &str) -> impl Iterator<Item = (String, f32)> + '_ {
    list.split(',').map(|item| {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|param| param.split_once('='))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, value)| value.trim().parse().unwrap_or(0.0));
        (name, q)
    })
}

/// The format an `Accept` header asks for: OpenMetrics when it ranks
/// `application/openmetrics-text` (any version: 1.0.0 is answered) above zero and at least
/// as high as the text format (`text/plain`, `text/*`, `*/*`); else the text format, also
/// when there is no header. Prometheus asks for OpenMetrics first.
fn negotiate(accept: &str) -> Format {
    let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
    for (media, q) in weighted(accept) {
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    if openmetrics > 0.0 && openmetrics >= text {
        Format::OpenMetrics
    } else {
        Format::Text
    }
}

/// Large answers built at once (the page, its JSON, the probe list) at most this many at a
/// time: each may hold tens of MB at 10,000 probes, and more builders would only share the
/// same two cores.
const HEAVY_BUILDERS: usize = 2;

static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HEAVY_BUILDERS);

/// Builds a large answer with `work` on the blocking pool, not on the thread that serves
/// every request: while a 10,000-probe page is rendered and serialized, `/-/healthy`,
/// `/-/ready` and `/metrics` are still answered. A panic in `work` answers 500.
pub(crate) async fn off_the_serving_thread(
    work: impl FnOnce() -> Response + Send + 'static,
) -> Response {
    // The semaphore is never closed, so acquiring only waits.
    let _turn = HEAVY.acquire().await;
    let work = move || {
        lower_this_threads_priority();
        work()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(response) => response,
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error while building the answer\n",
        )
            .into_response(),
    }
}

/// Lowers the calling thread's CPU priority (niceness 10), once per thread. When the cores
/// are busy, the threads that answer `/-/healthy` and scrapes and the probes' threads are
/// then scheduled before a page that takes 100 ms of CPU to build; when they are idle, the
/// build runs as fast as before. On Linux a thread has its own niceness; the blocking pool's
/// other work (bcrypt checks, a reload's file reads) may land on a lowered thread and wait
/// the same way under load. bench/run.py at 10,000 probes, three runs each: `/-/healthy`
/// under load p50 1.15-1.33 ms (1.60-2.00 without), p99 36-129 ms (83-108 without).
pub(crate) fn lower_this_threads_priority() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        thread_local!(static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
        if LOWERED.with(|lowered| lowered.replace(true)) {
            return;
        }
        // SAFETY: gettid and setpriority only read their arguments; a thread id is a valid
        // `who` for PRIO_PROCESS on Linux. Lowering needs no privilege; a failure leaves the
        // priority as it was.
        let tid = unsafe { libc::gettid() };
        if let Ok(tid) = libc::id_t::try_from(tid) {
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, tid, 10);
            }
        }
    }
}

async fn healthy() -> &'static str {
    "Healthy\n"
}

async fn ready() -> &'static str {
    "Ready\n"
}

/// `POST /-/reload`: 200 with what changed, or 500 with the (redacted) error, the running
/// config staying in place.
async fn reload(State(handles): State<Handles>) -> Response {
    match (handles.reload)().await {
        Ok(summary) => (StatusCode::OK, format!("config reloaded: {summary}\n")).into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to reload config: {error}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_is_answered_when_the_accept_header_ranks_it_first() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for accept in [
            prometheus,
            "application/openmetrics-text",
            "Application/OpenMetrics-Text; version=0.0.1",
            "text/plain;q=0.5, application/openmetrics-text;q=0.9",
        ] {
            assert_eq!(negotiate(accept), Format::OpenMetrics, "{accept}");
        }
        for accept in [
            "",
            "*/*",
            "text/plain",
            "application/openmetrics-text;q=0.1, text/plain",
            "application/openmetrics-text;q=0",
            "application/json",
        ] {
            assert_eq!(negotiate(accept), Format::Text, "{accept}");
        }
    }
}
