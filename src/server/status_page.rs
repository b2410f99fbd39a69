//! The status page at `GET /` and its two static assets.
//!
//! The page is rendered on the server from an askama template (`templates/status_page.html`),
//! which escapes every value: the Divalto message comes from the ERP and may hold markup. It
//! shows every probe's status and last message without scripts; `assets/status.js` only
//! refreshes it from `/api/v1/probes` and adds the "Run now" buttons. Everything is served
//! by the exporter itself (air-gapped sites), under a strict Content-Security-Policy that
//! allows no inline script or style — hence the CSS is an asset too.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, SecondsFormat, Utc};

use super::Handles;
use crate::state::{ProbeView, ResultView};

/// Runs drawn in each probe's history chart; `assets/status.js` reads it from the page.
pub const HISTORY_BARS: usize = 30;

/// The page and its assets load nothing from elsewhere and run no inline code, so a
/// message that slipped through as markup still could not run.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The script that refreshes the page and runs probes on demand.
const SCRIPT: &str = include_str!("../../assets/status.js");
/// The page's style sheet (inline styles are refused by the policy).
const STYLE: &str = include_str!("../../assets/status.css");

/// Width of one bar of the history chart.
const BAR_WIDTH: u32 = 5;
/// Gap after each bar.
const BAR_GAP: u32 = 1;
/// Chart height.
const CHART_HEIGHT: u32 = 36;
/// Successes rise above this line and failures hang below it, so they differ by shape as
/// well as colour.
const BASELINE: u32 = 26;
/// Tallest success bar (the slowest success of the chart).
const MAX_BAR: u32 = 24;
/// Height of a failure mark.
const FAILURE_MARK: u32 = 9;

/// `GET /`: the status page.
pub async fn page(State(handles): State<Handles>) -> Response {
    match render(&handles, Utc::now()) {
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

/// Renders the page for the exporter's current state, as seen at `now`.
///
/// # Errors
/// When the template cannot be rendered (a formatting error).
pub fn render(handles: &Handles, now: DateTime<Utc>) -> askama::Result<String> {
    let reload_time = handles.metrics.reload_success_timestamp.get();
    let reload_time = (reload_time > 0.0)
        .then(|| DateTime::<Utc>::from_timestamp_millis((reload_time * 1000.0) as i64))
        .flatten()
        .map(|t| Stamp::new(t, now));
    let rows: Vec<Row> = handles
        .probes
        .list(HISTORY_BARS)
        .into_iter()
        .map(|p| Row::new(p, now))
        .collect();
    let count = |status: Status| rows.iter().filter(|r| r.status == status).count();
    let summary = Summary {
        up: count(Status::Up),
        down: count(Status::Down),
        never: count(Status::Never),
        total: rows.len(),
    };
    StatusPage {
        version: env!("CARGO_PKG_VERSION"),
        generated: Stamp::new(now, now),
        reload_successful: handles.metrics.reload_successful.get() == 1,
        reload_time,
        history_bars: HISTORY_BARS,
        summary,
        groups: group(rows),
    }
    .render()
}

/// Probes under their server, servers by name, URL probes last.
fn group(rows: Vec<Row>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut url_probes = Vec::new();
    for row in rows {
        match row.server.clone() {
            None => url_probes.push(row),
            Some(server) => match groups.iter_mut().find(|g| g.server == server) {
                Some(group) => group.probes.push(row),
                None => groups.push(Group {
                    title: format!("Server {server}"),
                    server,
                    probes: vec![row],
                }),
            },
        }
    }
    groups.sort_by(|a, b| a.server.cmp(&b.server));
    if !url_probes.is_empty() {
        groups.push(Group {
            title: "URL probes".to_owned(),
            server: String::new(),
            probes: url_probes,
        });
    }
    groups
}

#[derive(Template)]
#[template(path = "status_page.html", whitespace = "minimize")]
struct StatusPage {
    /// The exporter's version.
    version: &'static str,
    /// When the page was rendered.
    generated: Stamp,
    /// Whether the last config load or reload was accepted.
    reload_successful: bool,
    /// Last successful config load.
    reload_time: Option<Stamp>,
    /// Read by the script, so its charts match the server's.
    history_bars: usize,
    /// The counts at the top.
    summary: Summary,
    /// One table per server, then the URL probes.
    groups: Vec<Group>,
}

/// The counts at the top of the page.
struct Summary {
    /// Probes whose last run succeeded.
    up: usize,
    /// Probes whose last run failed.
    down: usize,
    /// Probes that have not run yet.
    never: usize,
    /// All probes.
    total: usize,
}

/// One table: the probes of one server, or the URL probes.
struct Group {
    /// Caption.
    title: String,
    /// Sort key (empty for URL probes).
    server: String,
    /// Its probes, by name.
    probes: Vec<Row>,
}

/// Status of a probe, from its last run. Shown as text; the colour only repeats it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// The last run succeeded.
    Up,
    /// The last run failed.
    Down,
    /// No run yet.
    Never,
}

impl Status {
    /// CSS class (and the script's key).
    fn key(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Never => "never",
        }
    }

    /// What the page says.
    fn text(self) -> &'static str {
        match self {
            Status::Up => "up",
            Status::Down => "down",
            Status::Never => "never run",
        }
    }
}

/// An instant, machine-readable and as people read it.
struct Stamp {
    /// RFC 3339, for `<time datetime>` and the script.
    iso: String,
    /// `2025-01-31 12:00:05 UTC`.
    text: String,
    /// `12 s ago`, `in 3 min`.
    relative: String,
}

impl Stamp {
    fn new(at: DateTime<Utc>, now: DateTime<Utc>) -> Self {
        Self {
            iso: at.to_rfc3339_opts(SecondsFormat::Millis, true),
            text: at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            relative: relative((at - now).num_seconds()),
        }
    }
}

/// One probe's row.
struct Row {
    /// The probe's name.
    name: String,
    /// Its server, which picks its table.
    server: Option<String>,
    /// The URL with its code redacted: the code is a secret.
    url: String,
    /// HTTP method.
    method: String,
    /// `every 1m` or the cron expression and zone.
    schedule: String,
    /// From the last run.
    status: Status,
    /// A run is waiting for a slot or in progress.
    running: bool,
    /// The last run, if any.
    last: Option<LastRun>,
    /// The most recent failure in the history, shown while the probe is up again.
    earlier_failure: Option<Failure>,
    /// Failed runs since the last success (within the kept history, like the API).
    consecutive_failures: usize,
    /// The next planned run.
    next_run: Option<Stamp>,
    /// The recent runs.
    chart: Chart,
}

/// What the last run did.
struct LastRun {
    /// When it ended.
    at: Stamp,
    /// How long it took, retries included.
    duration: String,
    /// Why it failed (`None` on success).
    reason: Option<&'static str>,
    /// `HTTP 400 · code 400`.
    detail: String,
    /// Divalto's message or the error text (escaped by the template).
    message: String,
}

/// A past failure.
struct Failure {
    /// When it ended.
    at: Stamp,
    /// Why it failed.
    reason: &'static str,
    /// Divalto's message or the error text.
    message: String,
}

impl Row {
    fn new(probe: ProbeView, now: DateTime<Utc>) -> Self {
        let status = match &probe.last_result {
            None => Status::Never,
            Some(o) if o.success => Status::Up,
            Some(_) => Status::Down,
        };
        let earlier_failure = match &probe.last_result {
            Some(last) if last.success => probe.last_failure.as_ref(),
            _ => None,
        };
        Self {
            status,
            running: probe.running,
            last: probe.last_result.as_ref().map(|o| LastRun {
                at: Stamp::new(o.finished_at, now),
                duration: duration(o.duration_seconds),
                reason: o.reason,
                detail: detail(o),
                message: o.message.clone(),
            }),
            earlier_failure: earlier_failure.map(|o| Failure {
                at: Stamp::new(o.finished_at, now),
                reason: o.reason.unwrap_or("other"),
                message: o.message.clone(),
            }),
            consecutive_failures: probe.consecutive_failures,
            next_run: probe.next_run.map(|t| Stamp::new(t, now)),
            chart: Chart::new(&probe.history),
            name: probe.name,
            server: probe.server,
            url: probe.url,
            method: probe.method,
            schedule: probe.schedule,
        }
    }
}

/// `HTTP 400 · code 400`, from what the answer carried.
fn detail(result: &ResultView) -> String {
    let mut parts = Vec::new();
    if let Some(status) = result.http_status {
        parts.push(format!("HTTP {status}"));
    }
    if let Some(code) = &result.response_code {
        parts.push(format!("code {code}"));
    }
    if result.attempts > 1 {
        parts.push(format!("{} attempts", result.attempts));
    }
    parts.join(" · ")
}

/// The latency/result history as SVG bars, oldest left, newest right.
struct Chart {
    /// Width in pixels: room for [`HISTORY_BARS`] runs.
    width: u32,
    /// Height in pixels.
    height: u32,
    /// Where successes rise from and failures hang from.
    baseline: u32,
    /// The text alternative of the whole chart.
    label: String,
    /// One per run, oldest first.
    bars: Vec<Bar>,
}

/// One run in the chart.
struct Bar {
    /// Left edge.
    x: u32,
    /// Top edge.
    y: u32,
    /// Bar width.
    width: u32,
    /// Bar height: the duration for a success, fixed for a failure.
    height: u32,
    /// `ok` or `failed`.
    class: &'static str,
    /// Tooltip: when, result, duration.
    title: String,
}

impl Chart {
    fn new(runs: &[ResultView]) -> Self {
        let slowest = runs
            .iter()
            .filter(|o| o.success)
            .map(|o| o.duration_seconds)
            .fold(0.0_f64, f64::max);
        let first_slot = HISTORY_BARS.saturating_sub(runs.len());
        let bars = runs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let x = ((first_slot + i) as u32) * (BAR_WIDTH + BAR_GAP);
                let at = o.finished_at.format("%Y-%m-%d %H:%M:%S UTC");
                let took = duration(o.duration_seconds);
                if o.success {
                    let share = if slowest > 0.0 {
                        o.duration_seconds / slowest
                    } else {
                        0.0
                    };
                    let height = 2 + (share * f64::from(MAX_BAR - 2)).round() as u32;
                    Bar {
                        x,
                        y: BASELINE - height,
                        width: BAR_WIDTH,
                        height,
                        class: "ok",
                        title: format!("{at}: success, {took}"),
                    }
                } else {
                    let reason = o.reason.unwrap_or("other");
                    Bar {
                        x,
                        y: BASELINE + 1,
                        width: BAR_WIDTH,
                        height: FAILURE_MARK,
                        class: "failed",
                        title: format!("{at}: failed ({reason}), {took}"),
                    }
                }
            })
            .collect();
        let failed = runs.iter().filter(|o| !o.success).count();
        let label = if runs.is_empty() {
            "No runs yet".to_owned()
        } else {
            let mut label = format!(
                "Last {} {}, oldest first: {} succeeded, {} failed",
                runs.len(),
                if runs.len() == 1 { "run" } else { "runs" },
                runs.len() - failed,
                failed
            );
            if slowest > 0.0 {
                label.push_str(&format!("; slowest success {}", duration(slowest)));
            }
            label
        };
        Self {
            width: HISTORY_BARS as u32 * (BAR_WIDTH + BAR_GAP),
            height: CHART_HEIGHT,
            baseline: BASELINE,
            label,
            bars,
        }
    }
}

/// `12 ms`, `1.25 s`, `12.5 s` (the script formats the same way).
fn duration(seconds: f64) -> String {
    if seconds < 1.0 {
        format!("{} ms", (seconds * 1000.0).round())
    } else if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

/// `12 s ago`, `in 3 min`, `just now` (the script formats the same way).
fn relative(seconds: i64) -> String {
    let span = seconds.unsigned_abs();
    if span < 1 {
        return "just now".to_owned();
    }
    let amount = match span {
        0..60 => format!("{span} s"),
        60..3_600 => format!("{} min", span / 60),
        3_600..86_400 => format!("{} h", span / 3_600),
        _ => format!("{} d", span / 86_400),
    };
    if seconds < 0 {
        format!("{amount} ago")
    } else {
        format!("in {amount}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(success: bool, millis: u64) -> ResultView {
        ResultView {
            success,
            reason: (!success).then_some("webhook_error"),
            message: String::new(),
            http_status: Some(200),
            response_code: None,
            duration_seconds: millis as f64 / 1000.0,
            phases: Default::default(),
            attempts: 1,
            redirects: 0,
            tls: None,
            http_version: None,
            started_at: DateTime::UNIX_EPOCH,
            finished_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn durations_and_ages_read_like_people_write_them() {
        assert_eq!(duration(0.0123), "12 ms");
        assert_eq!(duration(1.234), "1.23 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(relative(0), "just now");
        assert_eq!(relative(-12), "12 s ago");
        assert_eq!(relative(150), "in 2 min");
        assert_eq!(relative(-7_200), "2 h ago");
    }

    #[test]
    fn failed_runs_hang_below_the_baseline_and_are_named_in_the_label() {
        let chart = Chart::new(&[record(true, 10), record(false, 5), record(true, 20)]);
        assert_eq!(chart.bars.len(), 3);
        let failed = &chart.bars[1];
        assert_eq!(failed.class, "failed");
        assert!(failed.y > BASELINE);
        assert!(failed.title.contains("failed (webhook_error)"));
        // The slowest success is the tallest bar; the newest run is at the right edge.
        assert_eq!(chart.bars[2].height, MAX_BAR);
        assert_eq!(chart.bars[2].x + BAR_WIDTH + BAR_GAP, chart.width);
        assert_eq!(
            chart.label,
            "Last 3 runs, oldest first: 2 succeeded, 1 failed; slowest success 20 ms"
        );
    }
}
