//! Log set-up: logfmt or JSON on stderr, every line in the chosen format.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// `--log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `ts=... level=info msg="..." key=value`, as Prometheus' own tools log.
    Logfmt,
    /// One JSON object per line.
    Json,
}

/// `--log.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    /// Every run.
    Debug,
    /// Start, reloads, failures.
    Info,
    /// Failures and problems.
    Warn,
    /// Errors only.
    Error,
}

impl LogLevel {
    fn as_directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Installs the global subscriber. Libraries below us (hyper, rustls) stay at warn so a
/// debug log shows our runs, not their internals.
pub fn init(level: LogLevel, format: LogFormat) {
    let directive = format!(
        "{},hyper=warn,rustls=warn,axum=warn,tower=warn",
        level.as_directive()
    );
    let filter = EnvFilter::try_new(&directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
}

/// Makes every panic one error line in the chosen log format, in place of the default hook's
/// free-text `thread '…' panicked at …` on stderr. The payload is left out: a panic message
/// may quote what the code was handling (a URL with its webhook code, a header), and it
/// cannot be redacted here. The thread and the source location are enough to find the bug;
/// a run that panicked is also recorded as a failure with reason `other` by the scheduler.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %location,
            "panic (its message is not logged: it may quote a secret)"
        );
    }));
}

/// The logfmt event format.
struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        write!(
            writer,
            "ts={now} level={}",
            meta.level().as_str().to_ascii_lowercase()
        )?;
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Some(message) = &fields.message {
            write!(writer, " msg={}", quote(message))?;
        }
        for (key, value) in &fields.pairs {
            write!(writer, " {key}={}", quote(value))?;
        }
        writeln!(writer)
    }
}

#[derive(Default)]
struct Fields {
    message: Option<String>,
    pairs: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.pairs.push((field.name(), value.to_owned()));
        }
    }
}

/// Quotes a logfmt value when it holds spaces, quotes, `=` or nothing.
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control());
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn values_with_spaces_or_quotes_are_quoted() {
        assert_eq!(quote("connect"), "connect");
        assert_eq!(quote("Divalto code 400"), "\"Divalto code 400\"");
        assert_eq!(quote("say \"hi\""), "\"say \\\"hi\\\"\"");
        assert_eq!(quote(""), "\"\"");
    }
}
