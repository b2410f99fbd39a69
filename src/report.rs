//! Text written for people by the `check-config` and `probe` subcommands.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Config, FileStatus, Layout, ProbeSpec};
use crate::probe::{Outcome, PHASE_NAMES};
use crate::schedule::{NextStart, Schedule, maintenance};
use crate::slo;

/// The `check-config` summary: a line per config file (valid or refused, its counts), then
/// the probes grouped per file, one line each, URLs redacted, with the next run. The columns
/// are one list (`columns`) so a new one is one more entry there.
pub fn config_summary(layout: &Layout, now: DateTime<Utc>) -> String {
    let config = &layout.config;
    let mut out = String::new();
    let probes_of = |file: &FileStatus| {
        config
            .probes
            .iter()
            .filter(|spec| spec.origin.file == file.file)
            .collect::<Vec<_>>()
    };
    for (i, file) in layout.files.iter().enumerate() {
        let probes = probes_of(file).len();
        let verdict = if file.ok() {
            "valid".to_owned()
        } else {
            format!("refused, {} error(s) (on stderr)", file.errors.len())
        };
        let _ = write!(
            out,
            "{}: {verdict}, {probes} probe(s), {} server(s)",
            file.file.display(),
            file.servers,
        );
        if i == 0 {
            let _ = write!(
                out,
                ", max_concurrent_probes {}; in all {} probe(s), {} server(s)",
                config.max_concurrent_probes,
                config.probes.len(),
                config.servers.len()
            );
        }
        out.push('\n');
    }
    if layout.files.is_empty() {
        let _ = writeln!(
            out,
            "{}: valid, {} probe(s), {} server(s), max_concurrent_probes {}",
            config.source.display(),
            config.probes.len(),
            config.servers.len(),
            config.max_concurrent_probes
        );
    }
    let header = columns().map(|(title, _)| title.to_owned());
    let mut groups: Vec<(String, Vec<[String; COLUMNS]>)> = Vec::new();
    for spec in &config.probes {
        let row = columns().map(|(_, cell)| cell(spec, now));
        let file = spec.origin.file.display().to_string();
        match groups.iter_mut().find(|(f, _)| *f == file) {
            Some((_, rows)) => rows.push(row),
            None => groups.push((file, vec![row])),
        }
    }
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in groups.iter().flat_map(|(_, rows)| rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for (file, rows) in &groups {
        let _ = writeln!(out, "\n{file}");
        for row in std::iter::once(&header).chain(rows) {
            let _ = writeln!(out, "{}", padded(row, &widths));
        }
    }
    for spec in config.probes.iter().filter(|s| !s.maintenance.is_empty()) {
        let _ = writeln!(out, "maintenance of {}:", spec.name);
        for window in &spec.maintenance {
            let next = window
                .next_opening(now)
                .map_or_else(|| "never".to_owned(), utc_text);
            let _ = writeln!(out, "  {window}, next opening {next}");
        }
        if let Some(until) = maintenance::open_until(&spec.maintenance, now) {
            let _ = writeln!(out, "  open now, until {}", utc_text(until));
        }
    }
    out
}

/// Columns of the `check-config` table.
const COLUMNS: usize = 8;

/// How a probe fills one `check-config` cell, given the time now.
type Cell = fn(&ProbeSpec, DateTime<Utc>) -> String;

/// The `check-config` columns: a title and how a probe fills it.
fn columns() -> [(&'static str, Cell); COLUMNS] {
    [
        ("PROBE", |spec, _| spec.name.clone()),
        ("SCHEDULE", |spec, _| spec.schedule.to_string()),
        // The next run that will start: after any skip window open then.
        ("NEXT RUN", |spec, now| match spec.next_start(now) {
            NextStart::At(t) => utc_text(t),
            NextStart::Blocked(_) => "none (maintenance)".to_owned(),
            NextStart::Never => "never".to_owned(),
        }),
        ("METHOD TIMEOUT", |spec, _| {
            format!(
                "{} {}",
                spec.method,
                humantime::format_duration(spec.timeout)
            )
        }),
        // Sizes and schemes only: a body or a credential is never shown.
        ("BODY", |spec, _| match &spec.body {
            None => "-".to_owned(),
            Some(body) if body.json => format!("{} B json", body.len()),
            Some(body) => format!("{} B", body.len()),
        }),
        ("CREDENTIALS", |spec, _| credentials_set(spec)),
        ("MAINTENANCE", |spec, now| maintenance_cell(spec, now)),
        ("URL", |spec, _| spec.target.redacted()),
    ]
}

/// Which credentials a probe sends, by scheme (`Basic`, `Bearer`, `Basic (url)` for a
/// `user:password@` in its URL), `-` for none.
fn credentials_set(spec: &ProbeSpec) -> String {
    let scheme = |value: &http::HeaderValue| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.split(' ').next())
            .unwrap_or("?")
            .to_owned()
    };
    // The URL's own password wins over inherited credentials, as the request sends it.
    match (&spec.target.basic_auth, &spec.credentials) {
        (Some(_), _) => "Basic (url)".to_owned(),
        (None, Some(value)) => scheme(value),
        (None, None) => "-".to_owned(),
    }
}

/// `-`, `open until T`, or how many windows and the next opening.
fn maintenance_cell(spec: &ProbeSpec, now: DateTime<Utc>) -> String {
    if spec.maintenance.is_empty() {
        return "-".to_owned();
    }
    if let Some(until) = maintenance::open_until(&spec.maintenance, now) {
        return format!("open until {}", utc_text(until));
    }
    let count = spec.maintenance.len();
    let windows = if count == 1 { "window" } else { "windows" };
    let next = maintenance::next_opening(&spec.maintenance, now)
        .map_or_else(|| "never".to_owned(), utc_text);
    format!("{count} {windows}, next opening {next}")
}

/// The cells of a row, each padded to its column's width but the last.
fn padded(row: &[String], widths: &[usize]) -> String {
    let mut line = String::new();
    for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
        line.push_str(cell);
        if i + 1 < row.len() {
            // Padded by hand: `{:<width$}` panics on widths over 65,535, and a probe name
            // may be longer than that.
            let padding = width - cell.chars().count() + 2;
            line.extend(std::iter::repeat_n(' ', padding));
        }
    }
    line.trim_end().to_owned()
}

fn utc_text(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The `check-config` warnings about objectives too strict for their probe's schedule: one
/// line per probe whose single failed run would already page through `config/slo.yml`
/// (see [`crate::slo`] for the condition), with the objective and the interval that would not.
pub fn slo_warnings(config: &Config, now: DateTime<Utc>) -> Vec<String> {
    config
        .probes
        .iter()
        .filter_map(|spec| {
            let objective = spec.objective?;
            let gap = spec.schedule.shortest_gap(now)?;
            let page = slo::one_failure_page(gap, objective)?;
            // The file the probe is written in (the main file or an included one).
            let file = spec.origin.file.display();
            let place = spec.origin.probe.map_or_else(
                || file.to_string(),
                |at| format!("{file}:{}:{}", at.line, at.column),
            );
            let runs = match &spec.schedule {
                Schedule::Interval(_) => {
                    format!("a run every {}", humantime::format_duration(gap))
                }
                Schedule::Cron { .. } => format!(
                    "runs at least {} apart ({})",
                    humantime::format_duration(gap),
                    spec.schedule
                ),
            };
            let window = humantime::format_duration(Duration::from_secs(page.long_window));
            let interval = page.max_interval.map_or_else(String::new, |interval| {
                format!(
                    ", or an interval of {} or shorter",
                    humantime::format_duration(interval)
                )
            });
            Some(format!(
                "{place}: warning: {}: objective {} with {runs}: one failed run would page (it is {:.2}% of the runs of the {window} window, above {} × the {} error budget); use objective {} or lower{interval}",
                spec.origin.label,
                slo::percent(objective),
                page.error_ratio * 100.0,
                page.factor,
                slo::percent(1.0 - objective),
                slo::percent(page.max_objective),
            ))
        })
        .collect()
}

fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The step-by-step trace printed by `probe NAME`; `started` is when the run began (a
/// maintenance window open then is noted: the on-demand run went on anyway).
pub fn probe_trace(spec: &ProbeSpec, outcome: &Outcome, started: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "probe {}", spec.name);
    let _ = writeln!(out, "  run id        {}", outcome.run_id);
    if let Some(until) = maintenance::open_until(&spec.maintenance, started) {
        let _ = writeln!(
            out,
            "  maintenance   a window is open until {} (scheduled runs {}); this on-demand run went on",
            utc_text(until),
            if maintenance::skips_at(&spec.maintenance, started) {
                "are skipped"
            } else {
                "go on, muted"
            }
        );
    }
    let _ = writeln!(
        out,
        "  request       {} {}",
        spec.method,
        spec.target.redacted()
    );
    if !spec.headers.is_empty() {
        let names: Vec<&str> = spec.headers.iter().map(|(name, _)| name.as_str()).collect();
        let _ = writeln!(out, "  headers       {} (values hidden)", names.join(", "));
    }
    if let Some(body) = &spec.body {
        let kind = if body.json { " (json)" } else { "" };
        let _ = writeln!(
            out,
            "  body          {} bytes{kind} (content hidden)",
            body.len()
        );
    }
    if let Some(credentials) = &spec.credentials {
        // The scheme only (`Basic`, `Bearer`, ...): never the credentials.
        let scheme = credentials
            .to_str()
            .ok()
            .and_then(|v| v.split(' ').next())
            .unwrap_or("?");
        let _ = writeln!(out, "  credentials   Authorization: {scheme} (hidden)");
    }
    let _ = writeln!(
        out,
        "  timeout       {}",
        humantime::format_duration(spec.timeout)
    );
    for (name, value) in PHASE_NAMES.iter().zip(outcome.phases.as_array()) {
        let _ = writeln!(out, "  {name:<13} {}", millis(value));
    }
    if let Some(tls) = &outcome.tls {
        if let Some(version) = &tls.version {
            let _ = writeln!(out, "  TLS version   {version}");
        }
        if let Some(cert) = &tls.certificate {
            let expiry = chrono::DateTime::from_timestamp(cert.earliest_not_after, 0).map_or_else(
                || cert.earliest_not_after.to_string(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
            let _ = writeln!(
                out,
                "  certificate   subject \"{}\", issuer \"{}\"",
                cert.subject, cert.issuer
            );
            let _ = writeln!(out, "  valid for     {}", cert.names.join(", "));
            let _ = writeln!(out, "  chain expires {expiry}");
        }
    }
    if let Some(version) = outcome.http_version {
        let _ = writeln!(out, "  HTTP version  {version}");
    }
    if outcome.redirects > 0 {
        let _ = writeln!(out, "  redirects     {}", outcome.redirects);
    }
    let status = outcome
        .http_status
        .map_or_else(|| "none".to_owned(), |s| s.to_string());
    let _ = writeln!(out, "  HTTP status   {status}");
    let _ = writeln!(
        out,
        "  Divalto code  {}",
        outcome.response_code.as_deref().unwrap_or("none")
    );
    let _ = writeln!(out, "  message       {}", outcome.message);
    let retries = outcome.attempts.saturating_sub(1);
    let _ = writeln!(
        out,
        "  attempts      {} ({retries} retr{})",
        outcome.attempts,
        if retries == 1 { "y" } else { "ies" }
    );
    let verdict = match outcome.reason {
        None => "success".to_owned(),
        Some(reason) => format!("failure (reason {})", reason.as_label()),
    };
    let _ = writeln!(
        out,
        "  verdict       {verdict} in {}",
        millis(outcome.duration)
    );
    out
}
