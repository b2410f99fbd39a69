//! The status page's handlers: the page at `GET /`, its view model as JSON at
//! `GET /status.json`, and its two static assets.
//!
//! The page is rendered on the server from an askama template (`templates/status_page.html`),
//! which escapes every value: the Divalto message comes from the ERP and may hold markup. It
//! shows every probe's status and last message without scripts; `assets/status.js` only
//! refreshes it from `/status.json` (the same view model, [`view`]) and adds the "Run now"
//! buttons. Everything is served
//! by the exporter itself (air-gapped sites), under a strict Content-Security-Policy that
//! allows no inline script or style — hence the CSS is an asset too.

mod chart;
mod view;

use askama::Template;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::Handles;

/// Runs drawn in each probe's history chart.
pub const HISTORY_BARS: usize = 30;

/// The page and its assets load nothing from elsewhere and run no inline code, so a
/// message that slipped through as markup still could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The script that refreshes the page and runs probes on demand.
const SCRIPT: &str = include_str!("../../../assets/status.js");
/// The page's style sheet (inline styles are refused by the policy).
const STYLE: &str = include_str!("../../../assets/status.css");

/// `GET /`: the status page.
pub async fn page(State(handles): State<Handles>) -> Response {
    super::off_the_serving_thread(move || render_page(&handles)).await
}

fn render_page(handles: &Handles) -> Response {
    match view::build(handles, Utc::now()).render() {
        Ok(html) => respond("text/html; charset=utf-8", "no-store", html),
        Err(error) => {
            tracing::error!(%error, "cannot render the status page");
            let mut response = respond(
                "text/plain; charset=utf-8",
                "no-store",
                "cannot render the status page\n".to_owned(),
            );
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

/// `GET /status.json`: the page's view model, every string formatted as the page shows it,
/// for the script to insert.
pub async fn json(State(handles): State<Handles>) -> Response {
    super::off_the_serving_thread(move || {
        let mut response = Json(view::build(&handles, Utc::now())).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    })
    .await
}

/// `GET /assets/{file}`: the page's script and style sheet, embedded in the binary.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (content_type, body) = match file.as_str() {
        "status.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "status.css" => ("text/css; charset=utf-8", STYLE),
        _ => {
            let mut response = respond(
                "text/plain; charset=utf-8",
                "no-store",
                "no such asset\n".to_owned(),
            );
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
    };
    // The page links them with `?v=VERSION`, so a new release is fetched anew; within one
    // release the browser revalidates (cheap, and a rebuilt binary is never half-cached).
    respond(content_type, "no-cache", body.to_owned())
}

/// A 200 answer with the security headers every page response carries.
fn respond(content_type: &'static str, cache: &'static str, body: String) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
