//! A panic anywhere in the exporter is logged in the chosen log format, once, without its
//! payload (a panic message may quote a URL with a webhook code), instead of the default
//! hook's free-text "thread '…' panicked at" line on stderr.
//!
//! Runs without the test harness: the test re-executes its own binary as the process that
//! panics, so the global subscriber and the panic hook are those of a real process.

use std::process::Command;

const SECRET: &str = "MONWEBHOOKACADEMY123456789012363F53";
const CHILD: &str = "WEBHOOK_EXPORTER_PANIC_LOG_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    for format in ["json", "logfmt"] {
        a_panic_is_one_log_line_in_the_chosen_format_without_its_payload(format);
    }
    println!("panic_log: 2 passed");
}

/// The process under test: logs as the exporter does, then a thread panics with a secret.
fn child() {
    use webhook_exporter::logging::{self, LogFormat, LogLevel};
    let format = match std::env::var(CHILD).as_deref() {
        Ok("json") => LogFormat::Json,
        _ => LogFormat::Logfmt,
    };
    logging::init(LogLevel::Info, format);
    logging::log_panics();
    let joined = std::thread::Builder::new()
        .name("probes-0".into())
        .spawn(|| panic!("cannot parse https://erp.example/api/v1/WebHook/{SECRET}"))
        .expect("spawn a thread")
        .join();
    assert!(joined.is_err(), "the thread panicked");
}

fn a_panic_is_one_log_line_in_the_chosen_format_without_its_payload(format: &str) {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .env(CHILD, format)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run the child");
    assert!(
        output.status.success(),
        "{format}: child failed: {output:?}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(SECRET),
        "{format}: the secret leaked:\n{stderr}"
    );
    assert!(
        !stderr.contains("MONW"),
        "{format}: part of the secret leaked:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked at"),
        "{format}: the default hook's line is still printed:\n{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{format}: one line expected:\n{stderr}");
    let line = lines[0];
    match format {
        "json" => {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert_eq!(event["level"], "ERROR", "{line}");
            assert_eq!(event["thread"], "probes-0", "{line}");
            assert!(
                event["location"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("panic_log.rs"),
                "{line}"
            );
        }
        _ => {
            assert!(line.starts_with("ts="), "{line}");
            assert!(line.contains(" level=error "), "{line}");
            assert!(line.contains(" thread=probes-0"), "{line}");
            assert!(line.contains("panic_log.rs"), "{line}");
        }
    }
}
