//! HTTP only: [`router`] maps the endpoints to handlers that read shared state. Handlers
//! never probe anything themselves.

mod status_page;

use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::metrics::Metrics;
use crate::scheduler::ProbeState;

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The registry rendered by `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The running probes, replaced as a whole when the config changes.
    pub probes: Arc<RwLock<Arc<Vec<Arc<ProbeState>>>>>,
}

impl AppState {
    /// A snapshot of the running probes, sorted by server then name.
    pub fn probes(&self) -> Arc<Vec<Arc<ProbeState>>> {
        self.probes
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// The exporter's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/-/healthy", get(healthy))
        .route("/-/ready", get(ready))
        .route("/", get(status_page))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.encode();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn healthy() -> &'static str {
    "Healthy\n"
}

async fn ready() -> (StatusCode, &'static str) {
    (StatusCode::OK, "Ready\n")
}

async fn status_page(State(state): State<AppState>) -> Html<String> {
    Html(status_page::render(&state.probes()))
}
