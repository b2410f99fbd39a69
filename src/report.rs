//! Text written for people by the `check-config` and `probe` subcommands.

use std::fmt::Write;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Config, ProbeSpec};
use crate::probe::{Outcome, PHASE_NAMES};
use crate::schedule::Schedule;
use crate::slo;

/// The `check-config` summary: one line per probe, URLs redacted, with the next run.
pub fn config_summary(config: &Config, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: valid, {} probe(s), {} server(s), max_concurrent_probes {}",
        config.source.display(),
        config.probes.len(),
        config.servers.len(),
        config.max_concurrent_probes
    );
    let rows: Vec<[String; 5]> = config
        .probes
        .iter()
        .map(|spec| {
            let next = spec.schedule.next_after(&spec.name, now).map_or_else(
                || "never".to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            );
            [
                spec.name.clone(),
                spec.schedule.to_string(),
                next,
                format!(
                    "{} {}",
                    spec.method,
                    humantime::format_duration(spec.timeout)
                ),
                spec.target.redacted(),
            ]
        })
        .collect();
    let header = ["PROBE", "SCHEDULE", "NEXT RUN", "METHOD TIMEOUT", "URL"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
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
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
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
            let place = spec.origin.probe.map_or_else(
                || config.source.display().to_string(),
                |at| format!("{}:{}:{}", config.source.display(), at.line, at.column),
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

/// The step-by-step trace printed by `probe NAME`.
pub fn probe_trace(spec: &ProbeSpec, outcome: &Outcome) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "probe {}", spec.name);
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
