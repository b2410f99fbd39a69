//! The JSON API: probes with their schedule, next run, last result and recent history, and
//! on-demand runs of configured probes (never of a target taken from the request).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Handles;
use crate::state::{ProbeView, RunNowError};

/// `?history=N`: how many past results to include (default: all kept).
#[derive(Deserialize)]
pub struct HistoryQuery {
    history: Option<usize>,
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// 404 for a probe this replica does not run: one of another shard is named with its owner
/// (so a client or an operator knows which replica to ask), any other is unknown.
fn unknown(handles: &Handles, name: &str) -> Response {
    let Some(owner) = handles.placement.elsewhere(name) else {
        return error(StatusCode::NOT_FOUND, format!("unknown probe \"{name}\""));
    };
    let shard = handles.placement.shard();
    let message = format!(
        "probe \"{name}\" runs on shard {owner} of {}, not on this one (shard {})",
        shard.count(),
        shard.index()
    );
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": message, "shard": owner })),
    )
        .into_response()
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
        None => unknown(&handles, &name),
    }
}

/// `POST /api/v1/probes/{name}/run`: runs it now and answers the result.
pub async fn run(State(handles): State<Handles>, Path(name): Path<String>) -> Response {
    match (handles.run_now)(name.clone()).await {
        Ok(result) => Json(result).into_response(),
        Err(RunNowError::Unknown(_)) => unknown(&handles, &name),
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
