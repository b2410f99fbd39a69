//! The status page's handlers: the page at `GET /`, its view model as JSON at
//! `GET /status.json`, and its two static assets.
//!
//! The page is rendered on the server from an askama template (`templates/status_page.html`),
//! which escapes every value: the Divalto message comes from the ERP and may hold markup. It
//! shows without scripts every failing probe's status and last message first, then the
//! never-run ones, then the healthy ones counted per server with their first rows (at
//! 10,000 probes every row would be 22 MB of HTML); a GET search form (`q`, `server`,
//! `state`) lists any of them. `assets/status.js` only refreshes the rows shown from
//! `/status.json?<the same query>` (the same view model, [`view`]) and adds the "Run now"
//! buttons. Everything is served
//! by the exporter itself (air-gapped sites), under a strict Content-Security-Policy that
//! allows no inline script or style — hence the CSS is an asset too.

mod chart;
mod view;

use askama::Template;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::Handles;
use crate::state::{Health, ProbeFilter};

/// Runs drawn in each probe's history chart.
pub const HISTORY_BARS: usize = 30;

/// The page and its assets load nothing from elsewhere and run no inline code, so a
/// message that slipped through as markup still could not run. Forms may submit only to
/// the exporter itself: the search form is a GET to `/` (it changes nothing), and every
/// POST is still refused cross-site by the CSRF middleware.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The script that refreshes the page and runs probes on demand.
const SCRIPT: &str = include_str!("../../../assets/status.js");
/// The page's style sheet (inline styles are refused by the policy).
const STYLE: &str = include_str!("../../../assets/status.css");

/// The search form's fields (`GET /?q=&server=&state=`); the form sends empty fields for
/// "any", so empty means absent.
#[derive(serde::Deserialize, Default)]
pub struct PageQuery {
    q: Option<String>,
    server: Option<String>,
    state: Option<String>,
    /// Rows skipped in each paged list of a narrowed view.
    offset: Option<usize>,
}

impl PageQuery {
    /// The filter, or why `state` is refused.
    fn filter(self) -> Result<view::PageFilter, &'static str> {
        let given = |value: Option<String>| value.filter(|v| !v.trim().is_empty());
        let health = match given(self.state).as_deref() {
            None => None,
            Some("failing") => Some(Health::Failing),
            Some("ok") => Some(Health::Ok),
            Some("pending") => Some(Health::Pending),
            Some(_) => return Err("state: expected one of failing, ok, pending\n"),
        };
        Ok(view::PageFilter {
            probes: ProbeFilter {
                health,
                server: given(self.server),
                name_contains: given(self.q).map(|q| q.trim().to_owned()),
            },
            offset: self.offset.unwrap_or(0),
        })
    }
}

/// The filter of a request, or why its query is refused (a query that does not parse
/// included).
fn filter_of(
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<view::PageFilter, String> {
    let Query(query) = query.map_err(|rejection| format!("{}\n", rejection.body_text()))?;
    query.filter().map_err(str::to_owned)
}

/// 400 with why the query is refused.
fn refuse(text: String) -> Response {
    let mut response = respond("text/plain; charset=utf-8", "no-store", text);
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// `GET /`: the status page, narrowed by the search form's query.
pub async fn page(
    State(handles): State<Handles>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match filter_of(query) {
        Ok(filter) => filter,
        Err(text) => return refuse(text),
    };
    super::off_the_serving_thread(move || render_page(&handles, &filter)).await
}

fn render_page(handles: &Handles, filter: &view::PageFilter) -> Response {
    match view::build(handles, Utc::now(), filter).render() {
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

/// `GET /status.json`: the page's view model for the same query, every string formatted as
/// the page shows it, for the script to insert: only the rows the page shows, so one poll
/// stays small at any probe count.
pub async fn json(
    State(handles): State<Handles>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match filter_of(query) {
        Ok(filter) => filter,
        Err(text) => return refuse(text),
    };
    super::off_the_serving_thread(move || {
        let mut response = Json(view::build(&handles, Utc::now(), &filter)).into_response();
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
