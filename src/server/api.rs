//! The JSON API: probes with their schedule, next run, last result and recent history, and
//! on-demand runs of configured probes (never of a target taken from the request).

use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::AppState;
use crate::history::Record;
use crate::probe::{Outcome, Phases, TlsDetails};
use crate::scheduler::{ProbeState, RunNowError};

/// One result, as the contract's "result object".
#[derive(Serialize)]
pub struct ResultView {
    success: bool,
    reason: Option<&'static str>,
    message: String,
    http_status: Option<u16>,
    response_code: Option<String>,
    duration_seconds: f64,
    phases: Phases,
    attempts: u32,
    redirects: u32,
    /// Only on the last result and on-demand runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    http_version: Option<&'static str>,
    /// Only on the last result and on-demand runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsDetails>,
    started_at: String,
    finished_at: String,
}

fn rfc3339(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<&Record> for ResultView {
    fn from(record: &Record) -> Self {
        Self {
            success: record.success(),
            reason: record.reason().map(|r| r.as_label()),
            message: record.message().to_owned(),
            http_status: record.http_status(),
            response_code: record.response_code().map(str::to_owned),
            duration_seconds: record.duration().as_secs_f64(),
            phases: record.phases(),
            attempts: record.attempts(),
            redirects: record.redirects(),
            http_version: None,
            tls: None,
            started_at: rfc3339(record.started_at()),
            finished_at: rfc3339(record.finished_at()),
        }
    }
}

impl From<&Outcome> for ResultView {
    fn from(outcome: &Outcome) -> Self {
        Self {
            success: outcome.success,
            reason: outcome.reason.map(|r| r.as_label()),
            message: outcome.message.clone(),
            http_status: outcome.http_status,
            response_code: outcome.response_code.clone(),
            duration_seconds: outcome.duration.as_secs_f64(),
            phases: outcome.phases,
            attempts: outcome.attempts,
            redirects: outcome.redirects,
            http_version: outcome.http_version,
            tls: outcome.tls.clone(),
            started_at: rfc3339(outcome.started_at),
            finished_at: rfc3339(outcome.finished_at),
        }
    }
}

/// One probe.
#[derive(Serialize)]
pub struct ProbeView {
    name: String,
    server: Option<String>,
    url: String,
    method: String,
    schedule: String,
    timeout_seconds: f64,
    labels: std::collections::BTreeMap<String, String>,
    running: bool,
    next_run: Option<String>,
    consecutive_failures: usize,
    last_result: Option<ResultView>,
    /// Oldest first.
    history: Vec<ResultView>,
}

impl ProbeView {
    /// The view of `state`, with at most `history` past results.
    pub fn new(state: &ProbeState, history: usize) -> Self {
        let spec = &state.spec;
        let (last_result, results, consecutive_failures) = {
            let kept = state.history();
            let results: Vec<ResultView> = kept.recent(history).map(ResultView::from).collect();
            let consecutive = kept.consecutive_failures();
            // The last result, with what its connection showed (TLS, HTTP version).
            let last = kept.last().map(|record| {
                let connection = state.last_connection();
                ResultView {
                    tls: connection.tls,
                    http_version: connection.http_version,
                    ..ResultView::from(record)
                }
            });
            (last, results, consecutive)
        };
        Self {
            name: spec.name.clone(),
            server: spec.server.clone(),
            url: spec.target.redacted(),
            method: spec.method.to_string(),
            schedule: spec.schedule.to_string(),
            timeout_seconds: spec.timeout.as_secs_f64(),
            labels: spec.labels.clone(),
            running: state.is_running(),
            next_run: state
                .next_run()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
            consecutive_failures,
            last_result,
            history: results,
        }
    }
}

/// `?history=N`: how many past results to include (default: all kept).
#[derive(Deserialize)]
pub struct HistoryQuery {
    history: Option<usize>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn unknown(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("unknown probe \"{name}\""))
}

/// `GET /api/v1/probes`.
pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<HistoryQuery>,
) -> Json<serde_json::Value> {
    let limit = query.history.unwrap_or(usize::MAX);
    let probes: Vec<ProbeView> = state
        .app
        .scheduler
        .probes()
        .iter()
        .map(|p| ProbeView::new(p, limit))
        .collect();
    Json(serde_json::json!({ "probes": probes }))
}

/// `GET /api/v1/probes/{name}`.
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    match state.app.scheduler.probe(&name) {
        Some(probe) => {
            Json(ProbeView::new(&probe, query.history.unwrap_or(usize::MAX))).into_response()
        }
        None => unknown(&name),
    }
}

/// `POST /api/v1/probes/{name}/run`: runs it now and answers the result.
pub async fn run(State(state): State<AppState>, Path(name): Path<String>) -> Response {
    match state.app.scheduler.run_now(&name).await {
        Ok(outcome) => Json(ResultView::from(&outcome)).into_response(),
        Err(RunNowError::Unknown(_)) => unknown(&name),
        Err(err @ RunNowError::Running(_)) => error(StatusCode::CONFLICT, err.to_string()),
        Err(err @ RunNowError::TooSoon { .. }) => {
            let retry_after = err.retry_after_secs().unwrap_or(1).to_string();
            let mut response = error(StatusCode::TOO_MANY_REQUESTS, err.to_string());
            if let Ok(value) = axum::http::HeaderValue::from_str(&retry_after) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, value);
            }
            response
        }
        Err(err @ RunNowError::Stopped(_)) => {
            error(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
        }
        Err(err @ RunNowError::Panicked(_)) => {
            error(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
        }
    }
}
