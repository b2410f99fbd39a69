//! The status page's view model: every string the page shows (ages, durations, labels,
//! status words) is formatted here, once. The template renders it to HTML, and the script
//! inserts the same strings from its JSON (`GET /status.json`): the script formats nothing.

use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::HISTORY_BARS;
use super::chart::Chart;
use crate::server::Handles;
use crate::state::{ProbeView, ResultView};

/// The page's view model for the exporter's current state, as seen at `now`.
pub(super) fn build(handles: &Handles, now: DateTime<Utc>) -> StatusPage {
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
        refused_files: handles.metrics.refused_files(),
        reload_time,
        summary,
        groups: group(rows),
    }
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

#[derive(Template, Serialize)]
#[template(path = "status_page.html", whitespace = "minimize")]
pub(super) struct StatusPage {
    /// The exporter's version.
    version: &'static str,
    /// When the page was rendered.
    generated: Stamp,
    /// Whether the last config load or reload was accepted.
    reload_successful: bool,
    /// The config files refused at the last load (the operator's next fix).
    refused_files: Vec<String>,
    /// Last successful config load.
    reload_time: Option<Stamp>,
    /// The counts at the top.
    summary: Summary,
    /// One table per server, then the URL probes.
    groups: Vec<Group>,
}

/// The counts at the top of the page.
#[derive(Serialize)]
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
#[derive(Serialize)]
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

impl Serialize for Status {
    /// `{"key": "down", "text": "down"}`: the script's class and the word it shows.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut status = serializer.serialize_struct("Status", 2)?;
        status.serialize_field("key", self.key())?;
        status.serialize_field("text", self.text())?;
        status.end()
    }
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
#[derive(Serialize)]
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
            text: clock(at),
            relative: relative((at - now).num_seconds()),
        }
    }
}

/// One probe's row.
#[derive(Serialize)]
struct Row {
    /// The probe's name.
    name: String,
    /// Its server, which picks its table.
    server: Option<String>,
    /// The config file it is written in.
    file: String,
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
    /// While a maintenance window is open: when it closes.
    maintenance_until: Option<Stamp>,
    /// `skip` or `mute`, while a window is open.
    maintenance_mode: &'static str,
    /// The recent runs.
    chart: Chart,
}

/// What the last run did.
#[derive(Serialize)]
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
    /// The run's id, linking to its result in the API (exemplars on graphs name it too).
    run_id: String,
}

/// A past failure.
#[derive(Serialize)]
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
                run_id: o.run_id.to_string(),
            }),
            earlier_failure: earlier_failure.map(|o| Failure {
                at: Stamp::new(o.finished_at, now),
                reason: o.reason.unwrap_or("other"),
                message: o.message.clone(),
            }),
            consecutive_failures: probe.consecutive_failures,
            next_run: probe.next_run.map(|t| Stamp::new(t, now)),
            maintenance_until: probe.maintenance_until.map(|t| Stamp::new(t, now)),
            maintenance_mode: probe.maintenance_mode.unwrap_or(""),
            chart: Chart::new(probe.history.as_deref().unwrap_or_default()),
            name: probe.name,
            server: probe.server,
            file: probe.file,
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

/// `12 ms`, `1.25 s`, `12.5 s`.
pub(super) fn duration(seconds: f64) -> String {
    // A local webhook answers in well under a millisecond: "0 ms" would read as "no time".
    if seconds < 0.001 {
        format!("{:.1} ms", seconds * 1000.0)
    } else if seconds < 1.0 {
        format!("{} ms", (seconds * 1000.0).round())
    } else if seconds < 10.0 {
        format!("{seconds:.2} s")
    } else {
        format!("{seconds:.1} s")
    }
}

/// `12 s ago`, `in 3 min`, `just now`.
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

/// `2025-01-31 12:00:05 UTC`.
pub(super) fn clock(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_ages_read_like_people_write_them() {
        assert_eq!(duration(0.0123), "12 ms");
        assert_eq!(duration(0.00042), "0.4 ms");
        assert_eq!(duration(1.234), "1.23 s");
        assert_eq!(duration(12.34), "12.3 s");
        assert_eq!(relative(0), "just now");
        assert_eq!(relative(-12), "12 s ago");
        assert_eq!(relative(150), "in 2 min");
        assert_eq!(relative(-7_200), "2 h ago");
    }
}
