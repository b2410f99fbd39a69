//! The JSON API: probes with their schedule, next run, last result (and, when asked, their
//! recent history), filtered and paged; one run by its id; and on-demand runs of configured
//! probes (never of a target taken from the request).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::Handles;
use crate::probe::RunId;
use crate::state::{Health, ProbeFilter, ProbeState, RunAnswer, RunNowError};

/// `?history=N` on one probe: how many past results to include (default: all kept).
#[derive(Deserialize)]
pub struct HistoryQuery {
    history: Option<usize>,
}

/// The query of `GET /api/v1/probes`: no history unless `history=N` asks for it (at 10,000
/// probes the histories are most of the answer), filters, and a page of the result.
#[derive(Deserialize)]
pub struct ListQuery {
    /// Past results per probe; absent: none.
    history: Option<usize>,
    /// `failing`, `ok` or `pending`.
    #[serde(default, deserialize_with = "health")]
    state: Option<Health>,
    /// Only the probes of this server.
    server: Option<String>,
    /// Only the probes whose name contains this, in any case.
    q: Option<String>,
    /// Skip this many matching probes (by name).
    #[serde(default)]
    offset: usize,
    /// At most this many probes.
    limit: Option<usize>,
}

/// `state=` with the accepted values in the message (serde's own names the enum's variants
/// in their Rust spelling).
fn health<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Health>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.as_str() {
        "failing" => Ok(Some(Health::Failing)),
        "ok" => Ok(Some(Health::Ok)),
        "pending" => Ok(Some(Health::Pending)),
        _ => Err(serde::de::Error::custom(
            "state: expected one of failing, ok, pending",
        )),
    }
}

/// Lists longer than this are serialized on two threads, each building and writing the
/// views of half of them: at 10,000 probes the list is 7 MB of JSON and about 60 ms of CPU.
const SPLIT_ABOVE: usize = 64;

/// The answer of `GET /api/v1/probes`, `{"total":N,"offset":M,"probes":[...]}`, the views
/// serialized straight into the body (no `serde_json::Value` tree), the second half of a
/// long list on a second thread.
fn list_body(
    total: usize,
    offset: usize,
    probes: &[Arc<ProbeState>],
    history: Option<usize>,
) -> serde_json::Result<Vec<u8>> {
    let mut body = format!("{{\"total\":{total},\"offset\":{offset},\"probes\":[").into_bytes();
    if probes.len() > SPLIT_ABOVE {
        let (first, second) = probes.split_at(probes.len() / 2);
        let (first, second) = std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name("api-list".into())
                .spawn_scoped(scope, || {
                    super::lower_this_threads_priority();
                    elements(second, history)
                });
            let first = elements(first, history);
            let second = match thread {
                Ok(thread) => thread.join().unwrap_or_else(|_| {
                    Err(serde::ser::Error::custom(
                        "the second half's thread panicked",
                    ))
                }),
                // No second thread to be had: the second half is written here.
                Err(_) => elements(second, history),
            };
            (first, second)
        });
        body.extend(first?);
        body.push(b',');
        body.extend(second?);
    } else {
        body.extend(elements(probes, history)?);
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// The views of `probes`, comma-separated.
fn elements(probes: &[Arc<ProbeState>], history: Option<usize>) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(probes.len() * 768);
    for (index, probe) in probes.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut out, &probe.list_view(history))?;
    }
    Ok(out)
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

/// A query string that does not parse: 400 with the reason, as JSON like every other error.
fn bad_query(rejection: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, rejection.body_text())
}

/// `GET /api/v1/probes`.
pub async fn list(
    State(handles): State<Handles>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(rejection),
    };
    let filter = ProbeFilter {
        health: query.state,
        server: query.server,
        name_contains: query.q.filter(|q| !q.is_empty()),
    };
    super::off_the_serving_thread(move || {
        let (total, probes) =
            handles
                .probes
                .select(&filter, query.offset, query.limit.unwrap_or(usize::MAX));
        match list_body(total, query.offset, &probes, query.history) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(err) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write the list: {err}"),
            ),
        }
    })
    .await
}

/// `GET /api/v1/probes/{name}`.
pub async fn show(
    State(handles): State<Handles>,
    Path(name): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => return bad_query(rejection),
    };
    let limit = query.history.unwrap_or(usize::MAX);
    // One probe with a history of up to 10,000 results: built off the serving thread too.
    super::off_the_serving_thread(move || match handles.probes.view(&name, limit) {
        Some(probe) => Json(probe).into_response(),
        None => unknown(&handles, &name),
    })
    .await
}

/// `GET /api/v1/runs/{run_id}`: that run's result and probe, while it is in the probe's
/// history; 404 otherwise (a text that is not a run id included: no run can have it, and
/// it is not echoed back, whatever was pasted there).
pub async fn show_run(State(handles): State<Handles>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<RunId>() else {
        return error(
            StatusCode::NOT_FOUND,
            "no run has that id: a run id is 16 hex digits".to_owned(),
        );
    };
    // A scan of every probe's history (about 19 ms at 10,000 probes in a debug build).
    super::off_the_serving_thread(move || match handles.probes.find_run(id) {
        Some(run) => Json(run).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            format!(
                "no run \"{id}\" in any probe's history (a run is kept while it is among its probe's last history_size results)"
            ),
        ),
    })
    .await
}

/// `POST /api/v1/probes/{name}/run`: runs it now and answers the result, with
/// `"maintenance": true` and `maintenance_until` when a window of the probe is open (the run
/// still happens: on-demand runs are the operator's own).
pub async fn run(State(handles): State<Handles>, Path(name): Path<String>) -> Response {
    let window = handles.probes.get(&name).and_then(|p| p.maintenance());
    match (handles.run_now)(name.clone()).await {
        Ok(result) => Json(RunAnswer::new(result, window)).into_response(),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `count` probes that never ran, published in a read model.
    fn probes(count: usize) -> crate::state::Probes {
        let (probes, states) = crate::state::tests::probe_states(count, 10);
        probes.publish(states);
        probes
    }

    #[test]
    fn a_long_list_written_in_two_halves_is_the_list_in_order() {
        let probes = probes(301);
        for (offset, limit, history) in [(0, usize::MAX, None), (5, 200, Some(3)), (300, 9, None)] {
            let (total, page) = probes.select(&ProbeFilter::default(), offset, limit);
            let body = list_body(total, offset, &page, history).unwrap();
            let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let views: Vec<_> = page.iter().map(|probe| probe.list_view(history)).collect();
            let expected = serde_json::json!({ "total": 301, "offset": offset, "probes": views });
            assert_eq!(answer, expected, "offset {offset}, limit {limit}");
            assert_eq!(
                answer["probes"].as_array().unwrap().len(),
                limit.min(301 - offset)
            );
            let history_field = answer["probes"][0].get("history").is_some();
            assert_eq!(history_field, history.is_some());
        }
    }
}
