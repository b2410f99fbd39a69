//! A minimal status page: every probe with its last result. Every string is escaped.

use std::fmt::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::scheduler::ProbeState;

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the page.
pub fn render(probes: &[Arc<ProbeState>]) -> String {
    let mut rows = String::new();
    for probe in probes {
        let spec = &probe.spec;
        let history = probe
            .history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (status, reason, message, duration, when) = match history.last() {
            None => (
                "never run".to_owned(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ),
            Some(last) => (
                if last.success {
                    "up".to_owned()
                } else {
                    "DOWN".to_owned()
                },
                last.reason
                    .map(|r| r.as_label().to_owned())
                    .unwrap_or_default(),
                last.message.clone(),
                format!("{:.3} s", last.duration.as_secs_f64()),
                DateTime::<Utc>::from(last.finished_at)
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string(),
            ),
        };
        let next = probe
            .next_run()
            .map(|t| t.format("%H:%M:%S UTC").to_string())
            .unwrap_or_default();
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&spec.name),
            escape(&status),
            escape(&reason),
            escape(&message),
            escape(&duration),
            escape(&when),
            escape(&next),
            escape(&spec.target.redacted()),
        );
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>webhook-exporter</title></head>\
         <body><h1>webhook-exporter</h1><table><thead><tr><th>Probe</th><th>Status</th><th>Reason</th>\
         <th>Message</th><th>Duration</th><th>Last run</th><th>Next run</th><th>URL</th></tr></thead>\
         <tbody>{rows}</tbody></table><p><a href=\"/metrics\">Metrics</a></p></body></html>"
    )
}
