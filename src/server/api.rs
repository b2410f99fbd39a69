//! The JSON API: probes with their schedule, next run, last result and recent history, and
//! on-demand runs of configured probes (never of a target taken from the request).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Handles;
use crate::state::{ProbeView, RunAnswer, RunNowError};

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
    State(handles): State<Handles>,
    Query(query): Query<HistoryQuery>,
) -> Json<serde_json::Value> {
    let limit = query.history.unwrap_or(usize::MAX);
    let probes: Vec<ProbeView> = handles.probes.list(limit);
    Json(serde_json::json!({ "probes": probes }))
}

/// `GET /api/v1/probes/{name}`.
pub async fn show(
    State(handles): State<Handles>,
    Path(name): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Response {
    let limit = query.history.unwrap_or(usize::MAX);
    match handles.probes.view(&name, limit) {
        Some(probe) => Json(probe).into_response(),
        None => unknown(&name),
    }
}

/// `POST /api/v1/probes/{name}/run`: runs it now and answers the result, with
/// `"maintenance": true` and `maintenance_until` when a window of the probe is open (the run
/// still happens: on-demand runs are the operator's own).
pub async fn run(State(handles): State<Handles>, Path(name): Path<String>) -> Response {
    let window = handles.probes.get(&name).and_then(|p| p.maintenance());
    match (handles.run_now)(name.clone()).await {
        Ok(result) => Json(RunAnswer::new(result, window)).into_response(),
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
