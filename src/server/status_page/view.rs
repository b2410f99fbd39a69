//! The status page's view model: every string the page shows (ages, durations, labels,
//! status words) is formatted here, once. The template renders it to HTML, and the script
//! inserts the same strings from its JSON (`GET /status.json`): the script formats nothing.

use askama::Template;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

use super::HISTORY_BARS;
use super::chart::Chart;
use crate::server::Handles;
use std::collections::HashMap;
use std::sync::Arc;

use crate::state::{Health, ProbeFilter, ProbeState, ProbeView, ResultView};

/// Healthy rows rendered per server in the full page: enough to glance at.
pub(super) const HEALTHY_ROWS: usize = 50;
/// Healthy rows rendered in the full page, all servers together: with many servers, the
/// later ones show only their line. About 250 KB of HTML and 100 KB of JSON.
pub(super) const HEALTHY_ROWS_TOTAL: usize = 100;
/// Never-run rows rendered in the full page (at start-up every probe is one of them).
pub(super) const PENDING_ROWS: usize = 50;
/// Rows per page once the view is narrowed by the search form (`q`, `server`, `state`),
/// in the never-run list and in the healthy rows (all servers in a row); `offset` pages on.
pub(super) const PAGE_ROWS: usize = 100;
/// A server's healthy rows start expanded up to this many (small sites see every row).
const OPEN_UP_TO: usize = 20;

/// What the search form asks for: the page's rows and its JSON's are the probes it keeps.
#[derive(Debug, Clone, Default)]
pub(super) struct PageFilter {
    /// The conditions, as the API applies them.
    pub(super) probes: ProbeFilter,
    /// Rows skipped in each paged list (narrowed views only).
    pub(super) offset: usize,
}

impl PageFilter {
    /// Whether the form narrowed the view (paged lists, every section open).
    fn narrowed(&self) -> bool {
        let f = &self.probes;
        f.health.is_some() || f.server.is_some() || f.name_contains.is_some()
    }

    /// `/?q=..&server=..&state=..&offset=N`: this view at another offset.
    fn link(&self, offset: usize) -> String {
        let f = &self.probes;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(q) = &f.name_contains {
            query.append_pair("q", q);
        }
        if let Some(server) = &f.server {
            query.append_pair("server", server);
        }
        if let Some(state) = f.health.map(health_key) {
            query.append_pair("state", state);
        }
        if offset > 0 {
            query.append_pair("offset", &offset.to_string());
        }
        format!("/?{}", query.finish())
    }
}

/// The form's word for a state.
fn health_key(health: Health) -> &'static str {
    match health {
        Health::Failing => "failing",
        Health::Ok => "ok",
        Health::Pending => "pending",
    }
}

/// The healthy probes of one server as found, before any row is built.
struct Found {
    server: Option<String>,
    probes: Vec<Arc<ProbeState>>,
}

/// The page's view model for the exporter's current state, as seen at `now`, showing the
/// probes `filter` keeps: every failing one with its full row first, then the never-run
/// ones, then the healthy ones counted per server with their first rows (or, narrowed, a
/// page of them). Only the rows shown are built (a probe's view costs its history; at
/// 10,000 probes the full page shows about a hundred).
pub(super) fn build(handles: &Handles, now: DateTime<Utc>, filter: &PageFilter) -> StatusPage {
    let reload_time = handles.metrics.reload_success_timestamp.get();
    let reload_time = (reload_time > 0.0)
        .then(|| DateTime::<Utc>::from_timestamp_millis((reload_time * 1000.0) as i64))
        .flatten()
        .map(|t| Stamp::new(t, now));
    let narrowed = filter.narrowed();
    let mut summary = Summary::default();
    let mut servers = std::collections::BTreeSet::new();
    let mut failing = Vec::new();
    let mut pending = Vec::new();
    let mut found: Vec<Found> = Vec::new();
    // Where each server's probes are in `found` (thousands of servers stay cheap).
    let mut found_at: HashMap<Option<String>, usize> = HashMap::new();
    let mut matching = 0;
    for probe in handles.probes.all() {
        let health = probe.health();
        summary.total += 1;
        match health {
            Health::Ok => summary.up += 1,
            Health::Failing => summary.down += 1,
            Health::Pending => summary.never += 1,
        }
        if let Some(server) = &probe.spec.server {
            servers.insert(server.clone());
        }
        if !filter.probes.keeps(&probe) {
            continue;
        }
        matching += 1;
        // Every server with a probe shown has its line (its list may be empty), so a probe
        // that comes up moves into a list already on the page.
        let server = &probe.spec.server;
        let index = match found_at.get(server) {
            Some(&index) => Some(index),
            None if filter.probes.health.is_none_or(|h| h == Health::Ok) => {
                found_at.insert(server.clone(), found.len());
                found.push(Found {
                    server: server.clone(),
                    probes: Vec::new(),
                });
                Some(found.len() - 1)
            }
            None => None,
        };
        match health {
            Health::Failing => failing.push(probe),
            Health::Pending => pending.push(probe),
            Health::Ok => {
                if let Some(index) = index {
                    found[index].probes.push(probe);
                }
            }
        }
    }
    // Servers by name, URL probes last.
    found.sort_by(|a, b| match (&a.server, &b.server) {
        (Some(a), Some(b)) => a.cmp(b),
        (a, b) => b.is_some().cmp(&a.is_some()),
    });
    let row = |probe: &Arc<ProbeState>| Row::new(probe.view(HISTORY_BARS), now);
    let offset = if narrowed { filter.offset } else { 0 };
    let pending_total = pending.len();
    let (pending_rows, healthy) = if narrowed {
        // One page: the never-run rows and the healthy rows (servers in a row) from `offset`.
        let window = offset..offset.saturating_add(PAGE_ROWS);
        let pending_rows = pending
            .iter()
            .skip(offset)
            .take(PAGE_ROWS)
            .map(row)
            .collect();
        let mut index = 0;
        let healthy = found
            .iter()
            .map(|f| {
                let rows = f
                    .probes
                    .iter()
                    .filter(|_| {
                        index += 1;
                        window.contains(&(index - 1))
                    })
                    .map(row)
                    .collect();
                Group::new(f, rows, None, true)
            })
            .collect();
        (pending_rows, healthy)
    } else {
        let pending_rows = pending.iter().take(PENDING_ROWS).map(row).collect();
        let mut budget = HEALTHY_ROWS_TOTAL;
        let healthy = found
            .iter()
            .map(|f| {
                let take = HEALTHY_ROWS.min(budget);
                budget -= take.min(f.probes.len());
                let rows: Vec<Row> = f.probes.iter().take(take).map(row).collect();
                let link = f.server.as_ref().map(|server| {
                    PageFilter {
                        probes: ProbeFilter {
                            server: Some(server.clone()),
                            ..ProbeFilter::default()
                        },
                        offset: 0,
                    }
                    .link(0)
                });
                Group::new(f, rows, link, false)
            })
            .collect();
        (pending_rows, healthy)
    };
    let failing: Vec<Row> = failing.iter().map(row).collect();
    let pending: Vec<Row> = pending_rows;
    let pending_more = if narrowed {
        0
    } else {
        pending_total - pending.len()
    };
    let pager = narrowed.then(|| {
        let longest = found
            .iter()
            .map(|f| f.probes.len())
            .sum::<usize>()
            .max(pending_total);
        Pager::new(filter, offset, longest)
    });
    let f = &filter.probes;
    StatusPage {
        version: env!("CARGO_PKG_VERSION"),
        generated: Stamp::new(now, now),
        reload_successful: handles.metrics.reload_successful.get() == 1,
        refused_files: handles.metrics.refused_files(),
        reload_time,
        summary,
        filter: FilterEcho {
            q: f.name_contains.clone().unwrap_or_default(),
            server: f.server.clone().unwrap_or_default(),
            state: f.health.map_or("", health_key),
            narrowed,
            matching,
        },
        servers: servers.into_iter().collect(),
        failing,
        pending,
        pending_total,
        pending_more,
        pending_link: (f.health != Some(Health::Pending)).then_some("/?state=pending"),
        healthy,
        pager,
    }
}

/// Where a narrowed view's page is among its pages, with links to its neighbours.
#[derive(Serialize)]
struct Pager {
    /// `Page 2 of 10 (100 rows per list)`.
    text: String,
    /// The page before, if any.
    previous: Option<String>,
    /// The page after, if any.
    next: Option<String>,
}

impl Pager {
    /// The pager of the page at `offset` when the longest paged list has `longest` rows.
    fn new(filter: &PageFilter, offset: usize, longest: usize) -> Self {
        let pages = longest.div_ceil(PAGE_ROWS).max(1);
        let page = offset / PAGE_ROWS + 1;
        Self {
            text: format!(
                "Page {} of {} ({PAGE_ROWS} rows per list; every failing probe on each page)",
                thousands(page),
                thousands(pages)
            ),
            previous: (offset > 0).then(|| filter.link(offset.saturating_sub(PAGE_ROWS))),
            next: (offset.saturating_add(PAGE_ROWS) < longest)
                .then(|| filter.link(offset + PAGE_ROWS)),
        }
    }
}

/// `2,314`: counts as people read them.
pub(super) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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
    /// The counts at the top (every probe, whatever the filter).
    summary: Summary,
    /// What the search form asked for, to fill it in again.
    filter: FilterEcho,
    /// Every server, for the form's choice.
    servers: Vec<String>,
    /// Every failing probe the filter keeps, by name: never capped, so each one's status
    /// and message are in the HTML.
    failing: Vec<Row>,
    /// The first never-run probes the filter keeps (or a page of them), by name.
    pending: Vec<Row>,
    /// Never-run probes the filter keeps.
    pending_total: usize,
    /// Never-run probes kept but not listed (full page; a narrowed one has its pager).
    pending_more: usize,
    /// Where the never-run probes are all listed (`None` when this is that view).
    pending_link: Option<&'static str>,
    /// The healthy probes, per server, then the URL probes.
    healthy: Vec<Group>,
    /// A narrowed view's pages.
    pager: Option<Pager>,
}

/// The search form's values, as they were submitted.
#[derive(Serialize)]
struct FilterEcho {
    /// Part of a probe name.
    q: String,
    /// A server's name.
    server: String,
    /// `failing`, `ok`, `pending` or empty.
    state: &'static str,
    /// Whether any was given.
    narrowed: bool,
    /// Probes the filter keeps.
    matching: usize,
}

/// The counts at the top of the page.
#[derive(Serialize, Default)]
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

/// The healthy probes of one server (or the URL probes): a count, the first rows, and
/// where to see the rest.
#[derive(Serialize)]
struct Group {
    /// `acme`, or `URL probes`.
    title: String,
    /// The server (`None` for URL probes).
    server: Option<String>,
    /// The script's key for the list: `server:acme` or `url`.
    key: String,
    /// Healthy probes kept by the filter.
    up: usize,
    /// `2,314 probes up`.
    up_text: String,
    /// The first of them, by name.
    probes: Vec<Row>,
    /// How many are not listed.
    more: usize,
    /// `/?server=acme`: where they are listed (`None` for URL probes, or in that view).
    link: Option<String>,
    /// Whether the rows start expanded.
    open: bool,
}

impl Group {
    /// The line of `found`'s server, listing `probes` of them (`paged`: a narrowed view's
    /// page, whose pager leads to the rest).
    fn new(found: &Found, probes: Vec<Row>, link: Option<String>, paged: bool) -> Self {
        let up = found.probes.len();
        let server = found.server.clone();
        Self {
            title: server.clone().unwrap_or_else(|| "URL probes".to_owned()),
            key: server
                .as_ref()
                .map_or_else(|| "url".to_owned(), |s| format!("server:{s}")),
            server,
            up,
            up_text: match up {
                0 => "no probe up".to_owned(),
                1 => "1 probe up".to_owned(),
                n => format!("{} probes up", thousands(n)),
            },
            more: if paged { 0 } else { up - probes.len() },
            open: paged || up <= OPEN_UP_TO,
            probes,
            link,
        }
    }
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

    #[test]
    fn counts_carry_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(2_314), "2,314");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
