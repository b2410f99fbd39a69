//! The operational artifacts against the real thing: a real Prometheus scraping the real
//! exporter evaluates every PromQL expression of the Grafana dashboard, of the alert rules
//! (issue 6, part 6) and of the SLO rules (issue 15: their recorded ratios and budget, and the
//! burn-rate page, checked on the exporter's real series), and a real Alertmanager delivers
//! the page for a webhook that starts failing, then the resolved notification when it
//! recovers (part 7). Sharded replicas (issue 13): three, then four after a safe rolling
//! scale-up, each webhook called by one replica only, and a lost replica raising the
//! shard-missing alert.
//!
//! Prometheus, promtool and Alertmanager come from the Debian packages `prometheus` and
//! `prometheus-alertmanager` (scripts/test installs them). When they are missing these tests
//! fail, they never skip: an alert chain that is not tested is not known to work.
//!
//! Every server binds a free loopback port and keeps its data in a temporary directory; every
//! process is killed when its guard drops.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{any, post};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Expr, MatrixSelector, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde::Deserialize;
use serde_json::{Value, json};

use common::{Exporter, FakeDivalto};
use webhook_exporter::shard::owner;

/// The dashboard under test.
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dashboards/webhook-exporter.json"
);

/// The alert rules under test.
const ALERTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/alerts.yml");

/// The SLO rules under test.
const SLO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/slo.yml");

/// The scrape job of the tests; the alert rules match jobs containing "webhook".
const JOB: &str = "webhook-exporter";

/// Expressions that may legitimately return no series in the part-6 scenario, by where they
/// come from, with the reason. Everything else must return at least one series with a value.
/// The metric names these use are still checked one by one (see [`SELECTORS_MAY_BE_EMPTY`]),
/// so a renamed metric fails the test even here.
const MAY_BE_EMPTY: &[(&str, &str)] = &[
    (
        "alert WebhookProbeNotRunning",
        "needs an interval probe without a completed run for 15 minutes; the test lasts seconds",
    ),
    (
        "alert WebhookExporterAbsent",
        "absent() is empty while the exporter is a target, which it is throughout the test",
    ),
    (
        "alert WebhookProbeRunByTwoReplicas",
        "needs one probe exported by two replicas; the scenario's exporters share no probe",
    ),
    (
        "alert WebhookExporterShardMissing",
        "needs a sharded job with a shard down; the scenario's exporters are unsharded (shard 0 \
         of 1 each)",
    ),
    (
        "annotation \"Exporter restarts\"",
        "the exporter is not restarted in this scenario (a restart would change its port, \
         hence its instance)",
    ),
];

/// Metric names that may have no series at all in the part-6 scenario, with the reason.
const SELECTORS_MAY_BE_EMPTY: &[(&str, &str)] = &[(
    "webhook_probe_maintenance",
    "the SLO alerts end with `unless ... webhook_probe_maintenance == 1`; the series comes with \
     maintenance windows (issue 15's maintenance work), and an empty `unless` side keeps every alert",
)];

/// Values of Grafana's built-in and template variables, as Grafana would send them with
/// "All" selected; `$window` takes the dashboard's current value. `$__rate_interval` is what
/// Grafana computes for a 15 s datasource scrape interval (4 × 15 s).
const BUILT_IN_VARIABLES: &[(&str, &str)] = &[
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

// ---------------------------------------------------------------------------------------
// Part 6: every dashboard and alert expression against a real Prometheus.
// ---------------------------------------------------------------------------------------

#[test]
fn every_dashboard_query_and_alert_expression_returns_data_from_a_real_prometheus() {
    // Arrange: the exporter probing webhooks that succeed, fail (each way the panels show),
    // run slow, get skipped, and one behind a certificate about to expire; an exporter with
    // no probe that reloads its config once, then refuses a broken one; a target that is down.
    let prometheus_bin = tool(&["prometheus"], "prometheus");
    let promtool = tool(&["promtool"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (fake, (tls_address, tls_cert)) =
        runtime.block_on(async { (FakeDivalto::start().await, expiring_tls_server().await) });
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, tls_cert).unwrap();
    let exporter_config = dir.path().join("webhook-exporter.yaml");
    std::fs::write(
        &exporter_config,
        scenario_config(&fake.base_url(), tls_address.port(), &ca),
    )
    .unwrap();
    let exporter = Exporter::start(
        &[&format!("--config.file={}", exporter_config.display())],
        &[],
    );
    let (_empty_dir, empty_config) = common::write_config("probes: []\n");
    let empty = Exporter::start(&[&format!("--config.file={}", empty_config.display())], &[]);
    let down = SocketAddr::from(([127, 0, 0, 1], common::closed_port()));

    // The SLO rules as shipped, but for the once-a-minute interval of their long group: at
    // one second, like the rest, its series appear in seconds.
    let slo_rules = dir.path().join("slo.yml");
    std::fs::write(
        &slo_rules,
        std::fs::read_to_string(SLO)
            .unwrap()
            .replace("    interval: 1m\n", "    interval: 1s\n"),
    )
    .unwrap();
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        prometheus_yml(
            &[exporter.address, empty.address, down],
            &[ALERTS, &slo_rules.display().to_string()],
            None,
        ),
    )
    .unwrap();
    promtool_ok(
        &promtool,
        &["check", "config", &prometheus_config.display().to_string()],
        None,
    );
    let prometheus = Daemon::start("prometheus", &prometheus_bin, dir.path(), |address| {
        prometheus_args(&prometheus_config, dir.path(), address)
    });
    wait_until(
        Duration::from_secs(30),
        "Prometheus scraped every target 3 times",
        || {
            let count = prometheus.query(&format!(
                "count(count_over_time(up{{job=\"{JOB}\"}}[1m]) >= 3) == 3"
            ));
            (!count.ok()?.is_empty()).then_some(())
        },
    )
    .unwrap_or_else(|| panic!("{}", prometheus.logs()));
    let (status, body) = http(empty.address, "POST", "/-/reload");
    assert_eq!(status, 200, "reload of an unchanged config: {body}");
    std::fs::write(&empty_config, "probes: []\nunknown_key: 1\n").unwrap();
    let (status, body) = http(empty.address, "POST", "/-/reload");
    assert_eq!(status, 500, "reload of a broken config: {body}");

    let expressions = dashboard_expressions()
        .into_iter()
        .chain(alert_expressions())
        .collect();
    let expressions = expand_repeats(&prometheus, expressions);
    for (location, _) in MAY_BE_EMPTY {
        assert!(
            expressions.iter().any(|e| e.location == *location),
            "MAY_BE_EMPTY names {location}, which is no longer in the dashboard or the rules"
        );
    }
    let mut selectors: BTreeMap<String, String> = BTreeMap::new();
    for expression in &expressions {
        for selector in vector_selectors(&expression.promql) {
            selectors
                .entry(selector)
                .or_insert_with(|| expression.location.clone());
        }
    }

    // Act: evaluate everything until every expected answer is there (the slow probe needs
    // one 6 s timeout before its latency and the skips behind it show).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (answers, selector_answers) = loop {
        let answers: Vec<(&Expression, Result<Vec<Value>, String>)> = expressions
            .iter()
            .map(|e| (e, prometheus.query(&e.promql)))
            .collect();
        for (expression, answer) in &answers {
            if let Err(error) = answer {
                panic!(
                    "{}: Prometheus rejects the expression: {error}\n{}",
                    expression.location, expression.promql
                );
            }
        }
        let selector_answers: Vec<(&String, &String, usize)> = selectors
            .iter()
            .map(|(selector, location)| {
                let series = prometheus.query(selector).unwrap_or_else(|error| {
                    panic!("{location}: selector {selector} is rejected: {error}")
                });
                (selector, location, series.len())
            })
            .collect();
        let missing = missing_data(&answers, &selector_answers);
        if missing.is_empty() || Instant::now() > deadline {
            break (answers, selector_answers);
        }
        std::thread::sleep(Duration::from_secs(1));
    };

    // Assert
    for (expression, answer) in &answers {
        let series = answer.as_ref().unwrap();
        eprintln!(
            "{:>3} series ({:>3} with a value)  {}\n      {}",
            series.len(),
            series.iter().filter(|s| has_value(s)).count(),
            expression.location,
            expression.promql
        );
    }
    let missing = missing_data(&answers, &selector_answers);
    assert!(
        missing.is_empty(),
        "no data for:\n{}\n\nexporter /metrics:\n{}\nPrometheus logs:\n{}",
        missing.join("\n"),
        exporter.scrape().text,
        prometheus.logs()
    );
    // The exposition with every kind of series in it (histograms observed, Divalto codes,
    // certificate expiry) passes promtool's lint.
    promtool_ok(
        &promtool,
        &["check", "metrics"],
        Some(&exporter.scrape().text),
    );
    for (location, reason) in MAY_BE_EMPTY {
        let returned = answers
            .iter()
            .any(|(e, a)| e.location == *location && a.as_ref().unwrap().iter().any(has_value));
        if returned {
            eprintln!(
                "note: {location} returns data now; its MAY_BE_EMPTY entry ({reason}) may go"
            );
        }
    }

    let rules = prometheus.get_json("/api/v1/rules");
    let mut rule_count = 0;
    for group in rules["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            rule_count += 1;
            assert_eq!(
                rule["health"], "ok",
                "rule {} does not evaluate cleanly: {}",
                rule["name"], rule["lastError"]
            );
        }
    }
    assert_eq!(
        rule_count,
        alert_expressions().len(),
        "Prometheus did not load every rule of {ALERTS} and {SLO}"
    );

    // The annotations' own queries (main failure reason, last Divalto code) work too. The
    // alerts are pending (their `for:` is minutes) and Prometheus renders the annotations of
    // pending alerts too; rule evaluation runs on its own clock, hence the wait.
    let expected = [
        (
            "WebhookProbeFailing",
            "export-invoices-locked",
            "Main failure reason over the last 15 minutes: webhook_error.",
        ),
        (
            "WebhookProbeFailing",
            "update-stock-bad-request",
            "Main failure reason over the last 15 minutes: http_status.",
        ),
        (
            "WebhookProbeWebhookError",
            "export-invoices-locked",
            "Last Divalto code: 400.",
        ),
        (
            "WebhookProbeTLSCertExpiringCritical",
            "erp-front",
            "The certificate chain served to probe erp-front",
        ),
    ];
    let active_alerts = || {
        prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let alerts = wait_until(
        Duration::from_secs(30),
        "annotations of the active alerts",
        || {
            let alerts = active_alerts();
            expected
                .iter()
                .all(|(alertname, probe, text)| {
                    description(&alerts, alertname, probe).is_some_and(|d| d.contains(text))
                })
                .then_some(alerts)
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "expected descriptions {expected:#?}\nactive alerts: {:#?}",
            active_alerts()
        )
    });
    for alert in &alerts {
        for (name, text) in alert["annotations"].as_object().unwrap() {
            assert!(
                !text.as_str().unwrap().contains("error expanding template"),
                "{} annotation {name}: {text}",
                alert["labels"]["alertname"]
            );
        }
    }

    // The SLO rules on the exporter's real series: the ratio of a probe failing every run is
    // 1, of a healthy one 0, a probe without an objective has none; the always-failing probe
    // burns its 99.5 % budget 200 times over and pages, the healthy one does not.
    let value = |promql: &str| -> Vec<(String, f64)> {
        prometheus
            .query(promql)
            .unwrap()
            .iter()
            .map(|series| {
                (
                    series["metric"]["probe"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    series["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    };
    let ratio = |probe: &str| {
        value(&format!(
            "probe:webhook_probe_errors:ratio_rate5m{{job=\"{JOB}\",probe=\"{probe}\"}}"
        ))
    };
    assert_eq!(
        ratio("update-stock-bad-request"),
        vec![("update-stock-bad-request".to_owned(), 1.0)]
    );
    assert_eq!(
        ratio("refresh-customer"),
        vec![("refresh-customer".to_owned(), 0.0)]
    );
    assert_eq!(ratio("erp-front"), vec![], "erp-front has no objective");
    assert_eq!(
        value(r#"webhook_probe_objective_ratio{probe="refresh-customer"}"#),
        vec![("refresh-customer".to_owned(), 0.995)]
    );
    let budget_left = value(
        r#"probe:webhook_probe_error_budget:remaining_ratio30d{probe="update-stock-bad-request"}"#,
    );
    assert!(
        budget_left.len() == 1 && (budget_left[0].1 - (1.0 - 1.0 / 0.005)).abs() < 1e-6,
        "all runs failed: the budget is spent 200 times, {budget_left:?}"
    );
    let firing = |alertname: &str, probe: &str| {
        active_alerts().iter().any(|a| {
            a["labels"]["alertname"] == alertname
                && a["labels"]["probe"] == probe
                && a["state"] == "firing"
        })
    };
    wait_until(
        Duration::from_secs(30),
        "the SLO page for the always-failing probe",
        || firing("WebhookProbeErrorBudgetBurn", "update-stock-bad-request").then_some(()),
    )
    .unwrap_or_else(|| panic!("active alerts: {:#?}", active_alerts()));
    assert!(!firing("WebhookProbeErrorBudgetBurn", "refresh-customer"));
    assert!(!firing("WebhookProbeErrorBudgetBurn", "erp-front"));
}

/// The part-6 exporter config: one probe per kind of data the panels and alerts show.
fn scenario_config(base_url: &str, tls_port: u16, ca: &Path) -> String {
    format!(
        r#"
defaults:
  interval: 1s
  timeout: 800ms
  params: {{dos: "998"}}
# The ERP's probes have an objective (the SLO rules and panels), erp-front has none.
servers:
  erp:
    base_url: "{base_url}"
    objective: 99.5%
  # One run at a time: close-month-slow holds the only slot for 6 s, so the runs of
  # queued-behind-slow wait for it and their next planned runs are skipped.
  busy-erp:
    base_url: "{base_url}"
    max_concurrent: 1
    objective: 99.5%
probes:
  - name: refresh-customer
    server: erp
    code: REFRESHCUSTOMERACADEMY00000001-ok
    params: {{refreshCustomer: C0000001}}
    labels: {{dossier: "998"}}
  - name: ping-plain-text
    server: erp
    code: PINGPLAINTEXTACADEMY0000000002-plain0
  # HTTP 200 with {{"Code":"400"}}: reason webhook_error.
  - name: export-invoices-locked
    server: erp
    code: EXPORTINVOICESACADEMY000000003-body400
    labels: {{dossier: "999"}}
  # HTTP 400: reason http_status.
  - name: update-stock-bad-request
    server: erp
    code: UPDATESTOCKACADEMY000000000004-http400
  # Never answers in time: reason timeout after 6 s, a p95 above the 5 s alert threshold.
  - name: close-month-slow
    server: busy-erp
    code: CLOSEMONTHACADEMY0000000000005-slow
    interval: 7s
    timeout: 6s
  - name: queued-behind-slow
    server: busy-erp
    code: QUEUEDBEHINDSLOWACADEMY0000006-ok
  - name: erp-front
    url: "https://localhost:{tls_port}/health"
    tls: {{ca_file: "{ca}"}}
    expect: {{status: ["2xx"], divalto: "off"}}
  # Always in a mute window (one opening every minute, lasting two): runs go on, its
  # alerts stay silent, the dashboard shades its maintenance.
  - name: nightly-batch-muted
    server: erp
    code: NIGHTLYBATCHACADEMY00000000007-ok
    maintenance:
      - {{schedule: "* * * * *", duration: 2m, mode: mute}}
"#,
        ca = ca.display()
    )
}

/// An HTTPS server like `common::tls_server`, but its self-signed certificate for `localhost`
/// expires at the first UTC midnight more than a day away: within both TLS alert thresholds
/// (3 and 14 days). Returns its address and the certificate (PEM), to trust it.
async fn expiring_tls_server() -> (SocketAddr, String) {
    use chrono::Datelike;
    let expiry = chrono::Utc::now() + chrono::TimeDelta::days(2);
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_after = rcgen::date_time_ymd(
        expiry.year(),
        u8::try_from(expiry.month()).unwrap(),
        u8::try_from(expiry.day()).unwrap(),
    );
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let address = common::https_server(&cert.pem(), &key.serialize_pem(), None, "OK").await;
    (address, cert.pem())
}

/// What is still missing: expressions without a value (outside [`MAY_BE_EMPTY`]) and metric
/// selectors without a series (outside [`SELECTORS_MAY_BE_EMPTY`]).
fn missing_data(
    answers: &[(&Expression, Result<Vec<Value>, String>)],
    selectors: &[(&String, &String, usize)],
) -> Vec<String> {
    let expressions = answers
        .iter()
        .filter(|(e, a)| {
            !MAY_BE_EMPTY.iter().any(|(l, _)| *l == e.location)
                && !a.as_ref().is_ok_and(|series| series.iter().any(has_value))
        })
        .map(|(e, _)| format!("  {}: {}", e.location, e.promql));
    let selectors = selectors
        .iter()
        .filter(|(selector, _, count)| {
            *count == 0
                && !SELECTORS_MAY_BE_EMPTY
                    .iter()
                    .any(|(name, _)| metric_name(selector) == *name)
        })
        .map(|(selector, location, _)| format!("  selector {selector} (used by {location})"));
    expressions.chain(selectors).collect()
}

/// True when a series (or scalar) of a query result holds a number (NaN shows as nothing).
fn has_value(series: &Value) -> bool {
    series["value"][1]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .is_some_and(|v| !v.is_nan())
}

/// The description of the active (pending or firing) `alertname` alert of `probe`.
fn description<'a>(alerts: &'a [Value], alertname: &str, probe: &str) -> Option<&'a str> {
    alerts
        .iter()
        .find(|a| a["labels"]["alertname"] == alertname && a["labels"]["probe"] == probe)
        .and_then(|a| a["annotations"]["description"].as_str())
}

/// One PromQL expression and where it comes from.
struct Expression {
    /// `panel "Title" A`, `annotation "Name"`, `variable "probe"`, `alert Name`.
    location: String,
    /// The expression, template variables substituted (but the repeat variable).
    promql: String,
    /// The variable a repeated panel repeats on: Grafana draws one panel per value, with
    /// that single value substituted; see [`expand_repeats`].
    repeat: Option<String>,
}

/// Every PromQL expression of the dashboard: panel targets (rows and nested panels included),
/// annotation queries and query variables, with the template variables substituted.
fn dashboard_expressions() -> Vec<Expression> {
    dashboard_expressions_with(&[])
}

/// [`dashboard_expressions`] with some variables set to a value picked in Grafana (a regex,
/// as Grafana sends it) instead of "All".
fn dashboard_expressions_with(picked: &[(&str, &str)]) -> Vec<Expression> {
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap())
        .unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let mut variables: BTreeMap<String, String> = BUILT_IN_VARIABLES
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let templating = dashboard["templating"]["list"].as_array().unwrap();
    for variable in templating {
        let name = variable["name"].as_str().unwrap().to_owned();
        let value = match variable["type"].as_str().unwrap() {
            "query" => variable["allValue"].as_str().unwrap_or(".*").to_owned(),
            "custom" | "interval" | "constant" | "textbox" => {
                let current = &variable["current"]["value"];
                current
                    .as_str()
                    .or_else(|| current[0].as_str())
                    .or_else(|| variable["query"].as_str())
                    .unwrap_or_else(|| panic!("variable {name} has no current value"))
                    .to_owned()
            }
            "datasource" => "prometheus".to_owned(),
            other => panic!("variable {name}: unsupported variable type {other}"),
        };
        variables.insert(name, value);
    }
    for (name, value) in picked {
        let old = variables.insert((*name).to_owned(), (*value).to_owned());
        assert!(old.is_some(), "the dashboard has no variable {name}");
    }

    let mut raw = Vec::new();
    walk_panels(&dashboard["panels"], &mut raw);
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        let expr = annotation["expr"]
            .as_str()
            .or_else(|| annotation["target"]["expr"].as_str());
        if let Some(expr) = expr {
            let name = annotation["name"].as_str().unwrap();
            raw.push((format!("annotation \"{name}\""), expr.to_owned(), None));
        }
    }
    let label_values = regex::Regex::new(r"^\s*label_values\((.*),\s*(\w+)\s*\)\s*$").unwrap();
    for variable in templating {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap();
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap();
        let captures = label_values
            .captures(query)
            .unwrap_or_else(|| panic!("variable {name}: unsupported query {query}"));
        // The series must carry the label the variable lists.
        raw.push((
            format!("variable \"{name}\""),
            format!("count by ({}) ({})", &captures[2], &captures[1]),
            None,
        ));
    }
    assert!(
        raw.len() > 20,
        "only {} expressions found in {DASHBOARD}",
        raw.len()
    );
    raw.into_iter()
        .map(|(location, expr, repeat)| Expression {
            promql: substitute(&expr, &variables, repeat.as_deref(), &location),
            location,
            repeat,
        })
        .collect()
}

/// Collects the `expr` of every target of `panels`, descending into rows.
fn walk_panels(panels: &Value, out: &mut Vec<(String, String, Option<String>)>) {
    for panel in panels.as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or_default();
        let repeat = panel["repeat"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        for target in panel["targets"].as_array().into_iter().flatten() {
            if target["hide"] == true {
                continue;
            }
            if let Some(expr) = target["expr"].as_str() {
                let ref_id = target["refId"].as_str().unwrap_or_default();
                out.push((
                    format!("panel \"{title}\" {ref_id}"),
                    expr.to_owned(),
                    repeat.clone(),
                ));
            }
        }
        walk_panels(&panel["panels"], out);
    }
}

/// Replaces `$name`, `${name}`, `${name:format}` and `[[name]]`, but `keep`; an unknown
/// variable fails.
fn substitute(
    expr: &str,
    variables: &BTreeMap<String, String>,
    keep: Option<&str>,
    location: &str,
) -> String {
    let reference =
        regex::Regex::new(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]").unwrap();
    reference
        .replace_all(expr, |captures: &regex::Captures| {
            let name = captures
                .get(1)
                .or_else(|| captures.get(2))
                .or_else(|| captures.get(3))
                .unwrap()
                .as_str();
            if Some(name) == keep {
                return captures[0].to_owned();
            }
            variables
                .get(name)
                .unwrap_or_else(|| panic!("{location}: unknown template variable ${name}: {expr}"))
                .clone()
        })
        .into_owned()
}

/// The alert rules file, as far as the tests read it.
#[derive(Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

/// A rule group; its name and interval do not matter here.
#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

/// One rule: what the tests evaluate (`expr`) and rewrite (`for`, `keep_firing_for`).
#[derive(Deserialize)]
struct Rule {
    /// The alert name (alerting rules).
    alert: Option<String>,
    /// The series name (recording rules).
    record: Option<String>,
    /// The PromQL expression.
    expr: String,
    /// How long the expression must hold before the alert fires.
    #[serde(rename = "for")]
    for_: Option<String>,
    /// How long the alert keeps firing after the expression stops holding.
    keep_firing_for: Option<String>,
}

/// Parses a rules file, failing the test when it is not one.
fn read_rules(text: &str) -> RuleFile {
    serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("alert rules: {e}"))
}

/// Replaces each expression of a repeated panel by one per value of its variable (as listed
/// by the variable's own query), as Grafana draws them.
fn expand_repeats(prometheus: &Daemon, expressions: Vec<Expression>) -> Vec<Expression> {
    let mut expanded = Vec::new();
    for expression in &expressions {
        let Some(variable) = &expression.repeat else {
            expanded.push(Expression {
                location: expression.location.clone(),
                promql: expression.promql.clone(),
                repeat: None,
            });
            continue;
        };
        let list = expressions
            .iter()
            .find(|e| e.location == format!("variable \"{variable}\""))
            .unwrap_or_else(|| panic!("{}: repeats on unknown ${variable}", expression.location));
        let values: BTreeSet<String> = prometheus
            .query(&list.promql)
            .unwrap()
            .iter()
            .filter_map(|series| series["metric"][variable].as_str().map(str::to_owned))
            .collect();
        assert!(
            !values.is_empty(),
            "{}: ${variable} has no value",
            list.location
        );
        for value in values {
            // A single value in `=~"..."`: Grafana escapes it as a regex.
            let escaped = regex::escape(&value).replace('\\', "\\\\");
            let single = BTreeMap::from([(variable.clone(), escaped)]);
            let location = format!("{} ({variable}={value})", expression.location);
            expanded.push(Expression {
                promql: substitute(&expression.promql, &single, None, &location),
                location,
                repeat: None,
            });
        }
    }
    expanded
}

/// The `expr` of every rule of `config/alerts.yml` and `config/slo.yml`.
fn alert_expressions() -> Vec<Expression> {
    [ALERTS, SLO]
        .into_iter()
        .flat_map(|file| read_rules(&std::fs::read_to_string(file).unwrap()).groups)
        .flat_map(|group| group.rules)
        .map(|rule| Expression {
            location: match (rule.alert, rule.record) {
                (Some(alert), _) => format!("alert {alert}"),
                (None, Some(record)) => format!("record {record}"),
                (None, None) => panic!("a rule with neither alert nor record"),
            },
            promql: rule.expr.trim().to_owned(),
            repeat: None,
        })
        .collect()
}

/// The vector selectors of `promql` (`name{matchers}`, in the order written, without their
/// `offset` and `@` modifiers): what must exist for the expression to mean anything. Found
/// by walking promql-parser's syntax tree, so strings, comments, ranges, subqueries,
/// modifiers and grouping keywords are told from selectors exactly.
fn vector_selectors(promql: &str) -> BTreeSet<String> {
    /// Collects every selector, instant or range, of the expressions it visits.
    struct Selectors(BTreeSet<String>);

    impl ExprVisitor for Selectors {
        type Error = std::convert::Infallible;

        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
            match expr {
                Expr::VectorSelector(selector) => {
                    self.0.insert(selector_text(selector));
                }
                Expr::MatrixSelector(MatrixSelector { vs, .. }) => {
                    self.0.insert(selector_text(vs));
                }
                _ => {}
            }
            Ok(true)
        }
    }

    let expr = promql_parser::parser::parse(promql)
        .unwrap_or_else(|error| panic!("promql-parser rejects {promql:?}: {error}"));
    let mut selectors = Selectors(BTreeSet::new());
    let Ok(_) = walk_expr(&mut selectors, &expr);
    selectors.0
}

/// `name{matchers}` of a selector, without its modifiers (the matchers keep their order).
fn selector_text(selector: &VectorSelector) -> String {
    let matchers = &selector.matchers;
    let groups = if matchers.or_matchers.is_empty() {
        std::slice::from_ref(&matchers.matchers)
    } else {
        matchers.or_matchers.as_slice()
    };
    let matchers = groups
        .iter()
        .filter(|group| !group.is_empty())
        .map(|group| {
            group
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(" or ");
    let name = selector.name.as_deref().unwrap_or_default();
    if matchers.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{matchers}}}")
    }
}

/// The metric name of a selector from [`vector_selectors`]: `name` of `name{...}`, or the
/// value of its `__name__="..."` matcher.
fn metric_name(selector: &str) -> String {
    let Ok(Expr::VectorSelector(selector)) = promql_parser::parser::parse(selector) else {
        panic!("not a vector selector: {selector}")
    };
    selector
        .name
        .clone()
        .or_else(|| {
            let names = selector.matchers.find_matchers("__name__");
            names
                .into_iter()
                .find(|matcher| matcher.op == MatchOp::Equal)
                .map(|matcher| matcher.value)
        })
        .unwrap_or_default()
}

#[test]
fn the_dashboard_shades_maintenance_and_every_probe_alert_is_silent_during_it() {
    let maintenance = dashboard_expressions()
        .into_iter()
        .find(|e| e.location == "annotation \"Maintenance windows\"")
        .expect("a \"Maintenance windows\" annotation in the dashboard");
    promql_parser::parser::parse(&maintenance.promql)
        .unwrap_or_else(|e| panic!("{}: {e}", maintenance.promql));
    assert!(
        maintenance.promql.trim_end().ends_with("== 1"),
        "shades only open windows: {}",
        maintenance.promql
    );
    assert!(
        vector_selectors(&maintenance.promql)
            .iter()
            .any(|s| metric_name(s) == "webhook_probe_maintenance"),
        "{}",
        maintenance.promql
    );
    // Every alert on a probe's series ends with the maintenance silence.
    let silence = "unless on (site, job, instance, probe) webhook_probe_maintenance == 1";
    let rules = read_rules(&std::fs::read_to_string(ALERTS).unwrap());
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        let Some(alert) = &rule.alert else { continue };
        // Two replicas calling one webhook matters in maintenance too (mute mode runs on).
        if alert.starts_with("WebhookProbe") && alert != "WebhookProbeRunByTwoReplicas" {
            assert!(
                rule.expr.trim_end().ends_with(silence),
                "{alert} is not silenced during maintenance: {}",
                rule.expr
            );
        }
    }
}

#[test]
fn the_selector_scanner_finds_metric_names_and_nothing_else() {
    let found = vector_selectors(
        r#"sum without (result) (increase(webhook_probe_runs_total{result="failure", reason=~"webhook_error|x{1}"}[1h]))
           / on (job) group_left() up{job=~".*"} > 0.2 and time() - 14 * 86400 < webhook_a offset 5m"#,
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [
            r#"up{job=~".*"}"#,
            "webhook_a",
            r#"webhook_probe_runs_total{result="failure", reason=~"webhook_error|x{1}"}"#,
        ]
    );
}

#[test]
fn the_selector_scanner_is_exact_on_modifiers_subqueries_comments_and_grouping_keywords() {
    let found = vector_selectors(
        r#"SUM BY (job) (rate({__name__="webhook_x", job!=""}[5m] @ start())) # webhook_comment
           * on (job) group_left webhook_y offset 1h
           + max_over_time(webhook_z{probe=~"a\\.b"}[10m:1m] offset 5m @ 1700000000)"#,
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        [
            r#"webhook_y"#,
            r#"webhook_z{probe=~"a\\.b"}"#,
            r#"{__name__="webhook_x", job!=""}"#,
        ]
    );
    assert_eq!(
        metric_name(r#"{__name__="webhook_x", job!=""}"#),
        "webhook_x"
    );
    assert_eq!(metric_name(r#"webhook_z{probe=~"a\\.b"}"#), "webhook_z");
}

// ---------------------------------------------------------------------------------------
// Issue 15 item 3: exemplars from a graph to the run.
// ---------------------------------------------------------------------------------------

#[test]
fn a_real_prometheus_stores_exemplars_that_name_runs_the_api_answers() {
    // Arrange: a succeeding and a failing webhook; Prometheus with exemplar storage,
    // scraping as it does by default (OpenMetrics first in its Accept header, gzip).
    let prometheus_bin = tool(&["prometheus"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let exporter_config = dir.path().join("webhook-exporter.yaml");
    std::fs::write(
        &exporter_config,
        format!(
            "defaults: {{interval: 1s, timeout: 900ms}}\nservers:\n  fake: {{base_url: \"{}\"}}\nprobes:\n  - {{name: ok, server: fake, code: \"{SECRET}-ok\"}}\n  - {{name: failing, server: fake, code: \"{SECRET}-body400\"}}\n",
            fake.base_url(),
            SECRET = common::SECRET_CODE,
        ),
    )
    .unwrap();
    let exporter = Exporter::start(
        &[&format!("--config.file={}", exporter_config.display())],
        &[],
    );
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        prometheus_yml(&[exporter.address], &[ALERTS], None),
    )
    .unwrap();
    let prometheus = Daemon::start("prometheus", &prometheus_bin, dir.path(), |address| {
        let mut args = prometheus_args(&prometheus_config, dir.path(), address);
        args.push("--enable-feature=exemplar-storage".to_owned());
        args
    });
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;

    // Act: the exemplars of both families, once each probe has some.
    let exemplars = |query: &str| -> Vec<(String, String)> {
        let encoded: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
        let until = since + 3600;
        let answer = prometheus.get_json(&format!(
            "/api/v1/query_exemplars?query={encoded}&start={since}&end={until}"
        ));
        let mut found = Vec::new();
        for series in answer["data"].as_array().unwrap() {
            let probe = series["seriesLabels"]["probe"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            for exemplar in series["exemplars"].as_array().unwrap() {
                let id = exemplar["labels"]["run_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                found.push((probe.clone(), id));
            }
        }
        found
    };
    let durations = wait_until(
        Duration::from_secs(30),
        "Prometheus stored duration exemplars of both probes",
        || {
            let found = exemplars("webhook_probe_duration_seconds_bucket");
            ["ok", "failing"]
                .iter()
                .all(|probe| found.iter().any(|(p, _)| p == probe))
                .then_some(found)
        },
    )
    .unwrap_or_else(|| panic!("{}", prometheus.logs()));
    let failures = wait_until(
        Duration::from_secs(15),
        "Prometheus stored a failure exemplar",
        || {
            let found = exemplars(r#"webhook_probe_failures_total{reason="webhook_error"}"#);
            (!found.is_empty()).then_some(found)
        },
    )
    .unwrap_or_else(|| panic!("{}", prometheus.logs()));

    // Assert: every exemplar names a 16-hex run id; the newest of each probe is answered by
    // the API under that probe (older ones may have left the history since).
    assert!(
        failures.iter().all(|(probe, _)| probe == "failing"),
        "{failures:?}"
    );
    let all: Vec<&(String, String)> = durations.iter().chain(&failures).collect();
    for (_, id) in &all {
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    let mut answered = BTreeSet::new();
    for (probe, id) in &all {
        let (status, body) = exporter.get(&format!("/api/v1/runs/{id}"));
        if status == 200 {
            let run: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(run["probe"], probe.as_str(), "{run}");
            assert_eq!(run["run_id"], id.as_str());
            answered.insert(probe.as_str());
        }
    }
    assert_eq!(
        answered,
        BTreeSet::from(["ok", "failing"]),
        "{all:?}\n{}",
        exporter.logs()
    );
    // No scrape error: Prometheus read the OpenMetrics page whole.
    let up = prometheus.query("up").unwrap();
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
}

#[test]
fn the_dashboard_has_a_latency_panel_showing_exemplars() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut panels = Vec::new();
    let mut stack: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = stack.pop() {
        if let Some(inner) = panel["panels"].as_array() {
            stack.extend(inner);
        }
        panels.push(panel);
    }
    let with_exemplars: Vec<&str> = panels
        .iter()
        .filter(|panel| {
            panel["targets"].as_array().is_some_and(|targets| {
                targets.iter().any(|t| {
                    t["exemplar"] == true
                        && t["expr"]
                            .as_str()
                            .is_some_and(|e| e.contains("webhook_probe_duration_seconds_bucket"))
                })
            })
        })
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    assert_eq!(with_exemplars.len(), 1, "{with_exemplars:?}");
}

// ---------------------------------------------------------------------------------------
// Part 7: the alerting chain, exporter -> Prometheus -> Alertmanager -> receiver.
// ---------------------------------------------------------------------------------------

#[test]
fn a_failing_webhook_pages_through_alertmanager_and_resolves_when_it_recovers() {
    // Arrange: a webhook that answers OK until told otherwise, probed every second; the
    // alert rules with their `for:` shortened; Alertmanager routing to a recording receiver.
    let prometheus_bin = tool(&["prometheus"], "prometheus");
    let promtool = tool(&["promtool"], "prometheus");
    let alertmanager_bin = tool(
        &["prometheus-alertmanager", "alertmanager"],
        "prometheus-alertmanager",
    );
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (webhook, receiver) =
        runtime.block_on(async { (SwitchableWebhook::start().await, Receiver::start().await) });
    let exporter_config = dir.path().join("webhook-exporter.yaml");
    std::fs::write(
        &exporter_config,
        format!(
            r#"
defaults:
  interval: 1s
  timeout: 800ms
servers:
  erp:
    base_url: "{base}"
probes:
  - name: refresh-customer
    server: erp
    code: REFRESHCUSTOMERACADEMY00000001-switch
    params: {{dos: "998", refreshCustomer: C0000001}}
    labels: {{dossier: "998"}}
  - name: ping-erp
    server: erp
    code: PINGERPACADEMY000000000000002-ok
"#,
            base = webhook.base_url()
        ),
    )
    .unwrap();
    let exporter = Exporter::start(
        &[&format!("--config.file={}", exporter_config.display())],
        &[],
    );

    let rules = dir.path().join("alerts.yml");
    std::fs::write(
        &rules,
        shorten_rule_timings(&std::fs::read_to_string(ALERTS).unwrap()),
    )
    .unwrap();
    promtool_ok(
        &promtool,
        &["check", "rules", &rules.display().to_string()],
        None,
    );
    let alertmanager_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &alertmanager_config,
        format!(
            r#"
route:
  receiver: recorder
  group_by: [alertname, job, instance, probe]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: recorder
    webhook_configs:
      - url: "http://{}/alerts"
        send_resolved: true
"#,
            receiver.address
        ),
    )
    .unwrap();
    let alertmanager = Daemon::start("alertmanager", &alertmanager_bin, dir.path(), |address| {
        vec![
            format!("--config.file={}", alertmanager_config.display()),
            format!(
                "--storage.path={}",
                dir.path().join("alertmanager").display()
            ),
            format!("--web.listen-address={address}"),
            "--cluster.listen-address=".to_owned(),
        ]
    });
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        prometheus_yml(
            &[exporter.address],
            &[&rules.display().to_string()],
            Some(alertmanager.address),
        ),
    )
    .unwrap();
    promtool_ok(
        &promtool,
        &["check", "config", &prometheus_config.display().to_string()],
        None,
    );
    let prometheus = Daemon::start("prometheus", &prometheus_bin, dir.path(), |address| {
        prometheus_args(&prometheus_config, dir.path(), address)
    });
    let logs = || {
        format!(
            "notifications: {:#?}\nPrometheus:\n{}\nAlertmanager:\n{}\nexporter:\n{}",
            receiver.notifications(),
            prometheus.logs(),
            alertmanager.logs(),
            exporter.logs()
        )
    };
    wait_until(
        Duration::from_secs(30),
        "Prometheus sees refresh-customer succeed",
        || {
            let up = prometheus.query(r#"webhook_probe_success{probe="refresh-customer"} == 1"#);
            (!up.ok()?.is_empty()).then_some(())
        },
    )
    .unwrap_or_else(|| panic!("{}", logs()));

    assert!(
        receiver
            .find("WebhookProbeFailing", "refresh-customer", "firing")
            .is_none(),
        "a page before any failure\n{}",
        logs()
    );

    // Act: the ERP starts rejecting the call.
    webhook.set_failing(true);

    // Assert: the page names the probe and the reason.
    let firing = |alertname: &'static str| {
        wait_until(Duration::from_secs(60), "firing notification", || {
            receiver.find(alertname, "refresh-customer", "firing")
        })
        .unwrap_or_else(|| panic!("no firing {alertname} for refresh-customer\n{}", logs()))
    };
    let failing = firing("WebhookProbeFailing");
    assert_eq!(failing["labels"]["severity"], "critical");
    assert_eq!(failing["labels"]["dossier"], "998");
    assert_eq!(
        failing["annotations"]["summary"],
        "Webhook probe refresh-customer is failing"
    );
    let description = failing["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("Probe refresh-customer on ")
            && description.contains("Main failure reason over the last 15 minutes: webhook_error."),
        "{description}"
    );
    let rejected = firing("WebhookProbeWebhookError");
    assert_eq!(rejected["labels"]["reason"], "webhook_error");
    assert_eq!(
        rejected["annotations"]["summary"],
        "Divalto rejects webhook probe refresh-customer (webhook_error)"
    );
    let description = rejected["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("is failing with reason webhook_error")
            && description.contains("Last Divalto code: 400."),
        "{description}"
    );

    // Act: the ERP accepts the call again.
    webhook.set_failing(false);

    // Assert: both alerts are resolved, and the healthy probe never paged.
    for alertname in ["WebhookProbeFailing", "WebhookProbeWebhookError"] {
        wait_until(Duration::from_secs(60), "resolved notification", || {
            receiver.find(alertname, "refresh-customer", "resolved")
        })
        .unwrap_or_else(|| panic!("no resolved {alertname} for refresh-customer\n{}", logs()));
    }
    for notification in receiver.notifications() {
        for alert in notification["alerts"].as_array().into_iter().flatten() {
            eprintln!(
                "received: {} {} probe={} {}",
                alert["status"],
                alert["labels"]["alertname"],
                alert["labels"]["probe"],
                alert["annotations"]["summary"]
            );
        }
    }
    for alertname in ["WebhookProbeFailing", "WebhookProbeWebhookError"] {
        assert!(
            receiver.find(alertname, "ping-erp", "firing").is_none(),
            "{}",
            logs()
        );
    }
}

/// `alerts` with every `for:` set to 1s and every `keep_firing_for:` to 0s, so the chain
/// fires and resolves within seconds. The thresholds in the expressions stay as shipped.
fn shorten_rule_timings(alerts: &str) -> String {
    let for_line = regex::Regex::new(r"(?m)^([ \t]+)for:[ \t]*\S+[ \t]*$").unwrap();
    let keep_line = regex::Regex::new(r"(?m)^([ \t]+)keep_firing_for:[ \t]*\S+[ \t]*$").unwrap();
    let shortened = for_line.replace_all(alerts, "${1}for: 1s");
    let shortened = keep_line
        .replace_all(&shortened, "${1}keep_firing_for: 0s")
        .into_owned();
    // The substitution must have reached every rule: check it through a YAML parser.
    for rule in read_rules(&shortened)
        .groups
        .into_iter()
        .flat_map(|g| g.rules)
    {
        assert!(
            rule.for_.is_none_or(|d| d == "1s") && rule.keep_firing_for.is_none_or(|d| d == "0s"),
            "the for:/keep_firing_for: of {:?} was not shortened",
            rule.alert
        );
    }
    shortened
}

/// A fake Divalto webhook whose answer the test switches for codes ending in `-switch`:
/// `{"code":"0"}`, or HTTP 200 with `{"code":"400","message":"Dossier verrouillé"}` (reason
/// webhook_error) while failing. Other codes always succeed.
struct SwitchableWebhook {
    /// Where it listens.
    address: SocketAddr,
    /// True while `-switch` codes fail; shared with the handler.
    failing: Arc<AtomicBool>,
}

impl SwitchableWebhook {
    /// Starts the server on a free loopback port, answering success.
    async fn start() -> Self {
        async fn webhook(
            State(failing): State<Arc<AtomicBool>>,
            UrlPath(code): UrlPath<String>,
        ) -> Json<Value> {
            if code.ends_with("-switch") && failing.load(Ordering::SeqCst) {
                Json(json!({"code": "400", "message": "Dossier verrouillé"}))
            } else {
                Json(json!({"code": "0", "message": "Client C0000001 rafraîchi"}))
            }
        }
        let failing = Arc::new(AtomicBool::new(false));
        let app = Router::new()
            .route("/erp/api/v1/WebHook/{code}", any(webhook))
            .with_state(failing.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, failing }
    }

    /// The `base_url` of this server.
    fn base_url(&self) -> String {
        format!("http://{}/erp", self.address)
    }

    /// From now on, `-switch` codes fail (`true`) or succeed (`false`).
    fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

/// Alertmanager's webhook receiver: records every notification it is sent.
struct Receiver {
    /// Where it listens (`/alerts`).
    address: SocketAddr,
    /// Every notification body received, in order.
    notifications: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    /// Starts the receiver on a free loopback port.
    async fn start() -> Self {
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/alerts",
                post(
                    |State(log): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                        log.lock().unwrap().push(body);
                        StatusCode::OK
                    },
                ),
            )
            .with_state(notifications.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            address,
            notifications,
        }
    }

    /// The notifications received so far.
    fn notifications(&self) -> Vec<Value> {
        self.notifications.lock().unwrap().clone()
    }

    /// The first alert of any notification with this name, probe and status.
    fn find(&self, alertname: &str, probe: &str, status: &str) -> Option<Value> {
        self.notifications()
            .iter()
            .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
            .find(|a| {
                a["labels"]["alertname"] == alertname
                    && a["labels"]["probe"] == probe
                    && a["status"] == status
            })
    }
}

// ---------------------------------------------------------------------------------------
// Issue 13, 5(i): sharded replicas under a real Prometheus.
// ---------------------------------------------------------------------------------------

/// Probes of the sharding scenario.
const SHARDED_PROBES: usize = 300;

/// The webhook code of sharded probe `name` (ends in `-ok`: the fake answers success).
fn sharded_code(name: &str) -> String {
    format!("SHARDEDACADEMY{}0123456789-ok", name.to_uppercase())
}

/// A replica of the sharding scenario: shard `index` of `count`, its calls marked
/// `X-Replica: index`.
fn sharded_replica(config: &Path, index: u32, count: u32) -> Exporter {
    Exporter::start(
        &[
            &format!("--config.file={}", config.display()),
            &format!("--shard.count={count}"),
            &format!("--shard.index={index}"),
        ],
        &[("REPLICA", &index.to_string())],
    )
}

/// Points Prometheus' file discovery at `replicas` (written whole, then renamed, so it never
/// reads half a file).
fn write_targets(path: &Path, replicas: &BTreeMap<u32, Exporter>) {
    let targets: Vec<String> = replicas.values().map(|r| r.address.to_string()).collect();
    let partial = path.with_extension("tmp");
    std::fs::write(&partial, json!([{ "targets": targets }]).to_string()).unwrap();
    std::fs::rename(&partial, path).unwrap();
}

/// The number of the query's single answer, if it has one.
fn single_number(prometheus: &Daemon, promql: &str) -> Option<f64> {
    let answer = prometheus.query(promql).ok()?;
    answer.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn three_sharded_replicas_then_a_fourth_call_every_webhook_from_one_replica_and_a_lost_shard_alerts()
 {
    // Arrange: 300 probes every 2 s, 3 replicas, Prometheus discovering them from a file and
    // evaluating the shipped rules with every `for:` shortened to 1 s (so a probe exported
    // twice for a single scrape would already leave an ALERTS series).
    let prometheus_bin = tool(&["prometheus"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let names: Vec<String> = (0..SHARDED_PROBES)
        .map(|i| format!("order-{i:03}"))
        .collect();
    let mut config_text = format!(
        "defaults:\n  interval: 2s\n  timeout: 1s\n  headers: {{X-Replica: \"${{REPLICA}}\"}}\n\
         servers:\n  erp: {{base_url: \"{}\"}}\nprobes:\n",
        fake.base_url()
    );
    for name in &names {
        config_text.push_str(&format!(
            "  - {{name: {name}, server: erp, code: {}}}\n",
            sharded_code(name)
        ));
    }
    let config = dir.path().join("webhook-exporter.yaml");
    std::fs::write(&config, config_text).unwrap();
    let mut replicas: BTreeMap<u32, Exporter> = (0..3)
        .map(|index| (index, sharded_replica(&config, index, 3)))
        .collect();
    let targets = dir.path().join("targets.json");
    write_targets(&targets, &replicas);
    let rules = dir.path().join("alerts.yml");
    std::fs::write(
        &rules,
        shorten_rule_timings(&std::fs::read_to_string(ALERTS).unwrap()),
    )
    .unwrap();
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{rules}"
scrape_configs:
  - job_name: {JOB}
    file_sd_configs:
      - files: ["{targets}"]
        refresh_interval: 1s
"#,
            rules = rules.display(),
            targets = targets.display()
        ),
    )
    .unwrap();
    let prometheus = Daemon::start("prometheus", &prometheus_bin, dir.path(), |address| {
        prometheus_args(&prometheus_config, dir.path(), address)
    });
    let started = Instant::now();
    let every_probe_once = |count: u32| {
        let probes = format!(
            "count(count by (probe) (webhook_probe_info) == 1) == {SHARDED_PROBES} \
             and on () count(webhook_exporter_shard_info{{count=\"{count}\"}}) == {count} \
             and on () count(webhook_exporter_shard_info) == {count}"
        );
        wait_until(
            Duration::from_secs(60),
            &format!("each of {SHARDED_PROBES} probes on one replica of {count}"),
            || single_number(&prometheus, &probes),
        )
        .unwrap_or_else(|| {
            panic!(
                "{}\n{:?}",
                prometheus.logs(),
                prometheus.query("count by (instance) (webhook_probe_info)")
            )
        });
    };
    let called_by_owner = |count: u32| {
        wait_until(
            Duration::from_secs(60),
            "every webhook called by its owner",
            || {
                names
                    .iter()
                    .all(|name| {
                        fake.replica_sequence(&sharded_code(name))
                            .last()
                            .is_some_and(|last| *last == owner(name, count).to_string())
                    })
                    .then_some(())
            },
        )
        .unwrap_or_else(|| panic!("some webhook is not called by its owner under {count}"));
    };

    // Assert: under 3 shards, Prometheus sees every probe on exactly one replica, and the
    // fake saw each webhook called by its owner only.
    every_probe_once(3);
    called_by_owner(3);
    for name in &names {
        assert_eq!(
            fake.replicas_calling(&sharded_code(name)),
            BTreeSet::from([owner(name, 3).to_string()]),
            "{name}"
        );
    }
    let per_shard = |count: u32| {
        let mut sizes = vec![0usize; count as usize];
        for name in &names {
            sizes[owner(name, count) as usize] += 1;
        }
        sizes
    };

    // Act: a 4th replica joins the safe way: first every replica is restarted with
    // --shard.count=4, one at a time (highest index first, as a StatefulSet rolls), then
    // replica 3 starts.
    for index in (0..3).rev() {
        let mut old = replicas.remove(&index).unwrap();
        assert_eq!(old.stop("TERM", Duration::from_secs(20)), Some(0));
        drop(old);
        replicas.insert(index, sharded_replica(&config, index, 4));
        write_targets(&targets, &replicas);
    }
    replicas.insert(3, sharded_replica(&config, 3, 4));
    write_targets(&targets, &replicas);

    // Assert: under 4 shards every probe is again on one replica and called by its owner;
    // the calls of each webhook came from its old owner, then (if it moved) from its new
    // one, never interleaved: no two replicas called one webhook in the same period.
    every_probe_once(4);
    called_by_owner(4);
    let mut moved = 0;
    for name in &names {
        let (before, after) = (owner(name, 3).to_string(), owner(name, 4).to_string());
        let sequence = fake.replica_sequence(&sharded_code(name));
        let switch = sequence
            .iter()
            .position(|replica| *replica != before)
            .unwrap_or(sequence.len());
        assert!(
            sequence[switch..].iter().all(|replica| *replica == after),
            "{name}: calls from {sequence:?}, owner {before} then {after}"
        );
        if before != after {
            assert_eq!(after, "3", "{name} moved between old shards");
            moved += 1;
        }
    }
    let fraction = f64::from(moved) / SHARDED_PROBES as f64;
    let (sizes3, sizes4) = (per_shard(3), per_shard(4));
    let balance =
        |sizes: &[usize]| *sizes.iter().max().unwrap() as f64 / *sizes.iter().min().unwrap() as f64;
    eprintln!(
        "3 -> 4 replicas: {moved} of {SHARDED_PROBES} probes moved ({:.1} %, 1/4 expected); \
         probes per shard under 3: {sizes3:?} (largest/smallest {:.2}), under 4: {sizes4:?} \
         (largest/smallest {:.2})",
        fraction * 100.0,
        balance(&sizes3),
        balance(&sizes4)
    );
    assert!((0.15..=0.35).contains(&fraction), "{moved} moved");
    let window = format!("{}s", started.elapsed().as_secs() + 5);
    assert_eq!(
        single_number(
            &prometheus,
            &format!("max_over_time((max(count by (probe) (webhook_probe_info)))[{window}:1s])")
        ),
        Some(1.0),
        "a probe was exported by two replicas at some instant"
    );
    assert_eq!(
        prometheus
            .query(&format!(
                "count_over_time(ALERTS{{alertname=\"WebhookProbeRunByTwoReplicas\"}}[{window}])"
            ))
            .unwrap(),
        Vec::<Value>::new(),
        "WebhookProbeRunByTwoReplicas was pending or firing at some point"
    );
    wait_until(
        Duration::from_secs(30),
        "no shard missing with 4 replicas of 4",
        || {
            prometheus
                .query(r#"ALERTS{alertname="WebhookExporterShardMissing"}"#)
                .ok()?
                .is_empty()
                .then_some(())
        },
    )
    .unwrap_or_else(|| panic!("{}", prometheus.logs()));

    // Act: replica 1 is killed and disappears from discovery (a pod gone for good).
    let mut lost = replicas.remove(&1).unwrap();
    assert_eq!(lost.stop("KILL", Duration::from_secs(10)), None);
    drop(lost);
    write_targets(&targets, &replicas);

    // Assert: the shard-missing alert fires, naming the count and the shards still up.
    let firing = wait_until(
        Duration::from_secs(60),
        "WebhookExporterShardMissing",
        || {
            prometheus.get_json("/api/v1/alerts")["data"]["alerts"]
                .as_array()?
                .iter()
                .find(|alert| {
                    alert["labels"]["alertname"] == "WebhookExporterShardMissing"
                        && alert["state"] == "firing"
                })
                .cloned()
        },
    )
    .unwrap_or_else(|| panic!("{}", prometheus.logs()));
    assert_eq!(firing["labels"]["count"], "4");
    assert_eq!(firing["labels"]["severity"], "critical");
    let description = firing["annotations"]["description"].as_str().unwrap();
    assert!(
        description.contains("--shard.count=4, but the shards up are 0, 2, 3 (by index)"),
        "{description}"
    );
}

// ---------------------------------------------------------------------------------------
// Prometheus, promtool, Alertmanager.
// ---------------------------------------------------------------------------------------
// Issue 13, item 5(ii): on-site probing, an agent remote-writing to a central Prometheus.
// ---------------------------------------------------------------------------------------

/// The shipped on-site agent config.
const ONSITE_AGENT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/prometheus/onsite-agent.yml"
);

#[test]
fn an_on_site_agent_delivers_the_probes_to_the_central_prometheus_with_site_and_tenant() {
    // Arrange: the exporter probing the fake Divalto server (one webhook fine, one the ERP
    // rejects), the central Prometheus taking remote write with the shipped alert rules
    // (their `for:` shortened), and a Prometheus in agent mode running the shipped on-site
    // config with only its addresses and intervals changed.
    let prometheus_bin = tool(&["prometheus"], "prometheus");
    let promtool = tool(&["promtool"], "prometheus");
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeDivalto::start());
    let (_config_dir, exporter_config) = common::write_config(&format!(
        r#"
defaults:
  interval: 1s
  timeout: 800ms
servers:
  erp:
    base_url: "{base}"
probes:
  - name: onsite-refresh-customer
    server: erp
    code: REFRESHCUSTOMERACADEMY00000001-ok
  - name: onsite-export-invoices
    server: erp
    code: EXPORTINVOICESACADEMY0000003-body400
"#,
        base = fake.base_url()
    ));
    let exporter = Exporter::start(
        &[&format!("--config.file={}", exporter_config.display())],
        &[],
    );

    let rules = dir.path().join("alerts.yml");
    std::fs::write(
        &rules,
        shorten_rule_timings(&std::fs::read_to_string(ALERTS).unwrap()),
    )
    .unwrap();
    let central_config = dir.path().join("central.yml");
    std::fs::write(
        &central_config,
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - \"{}\"\n",
            rules.display()
        ),
    )
    .unwrap();
    promtool_ok(
        &promtool,
        &["check", "config", &central_config.display().to_string()],
        None,
    );
    let central_dir = dir.path().join("central");
    std::fs::create_dir(&central_dir).unwrap();
    let central = Daemon::start("central", &prometheus_bin, &central_dir, |address| {
        let mut args = prometheus_args(&central_config, &central_dir, address);
        args.push("--web.enable-remote-write-receiver".to_owned());
        args
    });

    let shipped: Value = serde_saphyr::from_str(&std::fs::read_to_string(ONSITE_AGENT).unwrap())
        .unwrap_or_else(|e| panic!("{ONSITE_AGENT}: {e}"));
    let external = &shipped["global"]["external_labels"];
    let site = external["site"].as_str().expect("the agent sets site");
    let tenant = external["tenant"].as_str().expect("the agent sets tenant");
    let mut agent_yml = shipped.clone();
    agent_yml["global"]["scrape_interval"] = json!("1s");
    agent_yml["scrape_configs"][0]["scrape_timeout"] = json!("1s");
    agent_yml["scrape_configs"][0]["static_configs"] =
        json!([{"targets": [exporter.address.to_string()]}]);
    agent_yml["remote_write"] = json!([{
        "url": format!("http://{}/api/v1/write", central.address),
        "queue_config": {"batch_send_deadline": "1s"},
    }]);
    let agent_config = dir.path().join("agent.yml");
    // JSON is YAML: Prometheus reads it as it is.
    std::fs::write(&agent_config, agent_yml.to_string()).unwrap();
    promtool_ok(
        &promtool,
        &["check", "config", &agent_config.display().to_string()],
        None,
    );
    let agent_dir = dir.path().join("agent");
    std::fs::create_dir(&agent_dir).unwrap();
    let agent = Daemon::start("agent", &prometheus_bin, &agent_dir, |address| {
        vec![
            "--enable-feature=agent".to_owned(),
            format!("--config.file={}", agent_config.display()),
            format!("--storage.agent.path={}", agent_dir.join("wal").display()),
            format!("--web.listen-address={address}"),
        ]
    });
    let logs = || {
        format!(
            "{}\n{}\nexporter:\n{}",
            agent.logs(),
            central.logs(),
            exporter.logs()
        )
    };

    // Act: wait until both probes' series have arrived centrally.
    let arrived = wait_until(
        Duration::from_secs(60),
        "both probes' series in the central Prometheus",
        || {
            let series = central
                .query(&format!(
                    r#"webhook_probe_success{{site="{site}", tenant="{tenant}"}}"#
                ))
                .ok()?;
            (series.len() == 2).then_some(series)
        },
    )
    .unwrap_or_else(|| panic!("{}", logs()));

    // Assert: the series carry site and tenant (and the job and instance of the site).
    for series in &arrived {
        let labels = &series["metric"];
        assert_eq!(labels["site"], site, "{series}");
        assert_eq!(labels["tenant"], tenant, "{series}");
        assert_eq!(labels["job"], JOB, "{series}");
        assert_eq!(labels["instance"], exporter.address.to_string(), "{series}");
    }
    // The agent's own `up` of the exporter comes along: WebhookExporterDown works centrally.
    let up = central
        .query(&format!(r#"up{{job="{JOB}", site="{site}"}} == 1"#))
        .unwrap();
    assert_eq!(
        up.len(),
        1,
        "up of the on-site exporter: {up:?}\n{}",
        logs()
    );

    // The dashboard filtered on this site lists both probes, its site variable offers the
    // site, and filtered on another site it shows nothing of this one.
    let probes_of = |picked: &str| -> BTreeSet<String> {
        let expressions = dashboard_expressions_with(&[("site", picked)]);
        let table = expressions
            .iter()
            .find(|e| e.location == "panel \"Probes (worst first)\" A")
            .expect("the dashboard's probe table");
        assert!(
            table.promql.contains(&format!("site=~\"{picked}\"")),
            "the probe table is not filtered by site: {}",
            table.promql
        );
        central
            .query(&table.promql)
            .unwrap_or_else(|e| panic!("{}: {e}", table.promql))
            .iter()
            .filter_map(|s| s["metric"]["probe"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        probes_of(site),
        BTreeSet::from([
            "onsite-export-invoices".to_owned(),
            "onsite-refresh-customer".to_owned()
        ])
    );
    assert_eq!(probes_of("elsewhere"), BTreeSet::new());
    let variable = dashboard_expressions()
        .into_iter()
        .find(|e| e.location == "variable \"site\"")
        .expect("the dashboard's site variable");
    let offered: Vec<Value> = central
        .query(&variable.promql)
        .unwrap()
        .iter()
        .map(|s| s["metric"]["site"].clone())
        .collect();
    assert_eq!(offered, vec![json!(site)], "{}", variable.promql);

    // The central alert on the rejected webhook names the site, and its description's
    // query (run centrally, on this site's series) finds the reason once two samples of
    // the failure counter have arrived (annotations are rendered at every evaluation).
    let reason = "Main failure reason over the last 15 minutes: webhook_error.";
    let alerts = || {
        central.get_json("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let alert = wait_until(
        Duration::from_secs(60),
        "WebhookProbeFailing for onsite-export-invoices, centrally, with its reason",
        || {
            alerts().into_iter().find(|a| {
                a["labels"]["alertname"] == "WebhookProbeFailing"
                    && a["labels"]["probe"] == "onsite-export-invoices"
                    && a["annotations"]["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(reason))
            })
        },
    )
    .unwrap_or_else(|| panic!("active alerts: {:#?}\n{}", alerts(), logs()));
    assert_eq!(alert["labels"]["site"], site);
    assert_eq!(alert["labels"]["tenant"], tenant);
    assert_eq!(
        alert["annotations"]["summary"],
        format!("Webhook probe onsite-export-invoices is failing at site {site}")
    );
}

// ---------------------------------------------------------------------------------------

/// The first of `names` on PATH; fails (never skips) naming the Debian package to install.
fn tool(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{} not found on PATH: these end-to-end tests need the Debian package `{package}` \
                 (apt-get install --no-install-recommends {package}; scripts/test installs it)",
                names.join(" or ")
            )
        })
}

/// Runs promtool and fails the test unless it exits 0.
fn promtool_ok(promtool: &Path, args: &[&str], stdin: Option<&str>) {
    let mut child = Command::new(promtool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool {} failed:\n{}{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        stdin.unwrap_or_default()
    );
}

/// A Prometheus config: one job scraping `targets` every second, the rule files `rules`
/// evaluated every second, alerts sent to `alertmanager` when given.
fn prometheus_yml(
    targets: &[SocketAddr],
    rules: &[&str],
    alertmanager: Option<SocketAddr>,
) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    let rules: String = rules.iter().map(|r| format!("  - \"{r}\"\n")).collect();
    let alerting = alertmanager
        .map(|address| {
            format!(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: [\"{address}\"]\n"
            )
        })
        .unwrap_or_default();
    format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
{rules}{alerting}scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: [{targets}]
"#,
        targets = targets.join(", ")
    )
}

/// Prometheus' flags: its own config, data directory and loopback address.
fn prometheus_args(config: &Path, dir: &Path, address: SocketAddr) -> Vec<String> {
    vec![
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address={address}"),
    ]
}

/// A Prometheus or Alertmanager process on a free loopback port; killed when dropped.
struct Daemon {
    /// For messages.
    name: &'static str,
    /// The process, killed on drop.
    child: Child,
    /// Where it serves its HTTP API.
    address: SocketAddr,
    /// Its stdout and stderr.
    log: PathBuf,
}

impl Daemon {
    /// Starts `program` with `args(address)`, logging into `dir`, and waits until `/-/ready` answers 200. A
    /// port taken between choosing and binding it is retried with another one.
    fn start(
        name: &'static str,
        program: &Path,
        dir: &Path,
        args: impl Fn(SocketAddr) -> Vec<String>,
    ) -> Self {
        for attempt in 1..=3 {
            let address = common::closed_port();
            let address = SocketAddr::from(([127, 0, 0, 1], address));
            let log = dir.join(format!("{name}-{attempt}.log"));
            let output = File::create(&log).unwrap();
            let child = Command::new(program)
                .args(args(address))
                .stdin(Stdio::null())
                .stdout(output.try_clone().unwrap())
                .stderr(output)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
            let mut daemon = Self {
                name,
                child,
                address,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok((200, _)) = try_http(address, "GET", "/-/ready") {
                    return daemon;
                }
                if daemon.child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{name} not ready after 30 s:\n{}",
                    daemon.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let logs = daemon.logs();
            assert!(
                logs.contains("address already in use") && attempt < 3,
                "{name} exited:\n{logs}"
            );
        }
        unreachable!("the loop returns or panics")
    }

    /// What the process logged so far.
    fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        format!("--- {} log {} ---\n{text}", self.name, self.log.display())
    }

    /// Evaluates `promql` now: the result series (a scalar counts as one), or the error.
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let encoded: String = url::form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (_, body) = http(
            self.address,
            "GET",
            &format!("/api/v1/query?query={encoded}"),
        );
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("{}: {}", answer["errorType"], answer["error"]));
        }
        let data = &answer["data"];
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().unwrap().clone()),
            Some("scalar" | "string") => Ok(vec![json!({"value": data["result"]})]),
            other => Err(format!("unexpected result type {other:?}")),
        }
    }

    /// GETs an API path and parses its JSON.
    fn get_json(&self, path: &str) -> Value {
        let (status, body) = http(self.address, "GET", path);
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls `check` every 250 ms until it gives a value, or `None` after `timeout`. A `check`
/// answering `None` (not yet) or an error (printed) is tried again.
fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            eprintln!("timed out after {timeout:?} waiting for: {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A request without a body ([`common::try_http_request`]): status and body.
fn try_http(address: SocketAddr, method: &str, target: &str) -> Result<(u16, String), String> {
    common::try_http_request(address, method, target, &[])
        .map(|answer| (answer.status, answer.body))
}

/// [`try_http`], failing the test when the server cannot be reached.
fn http(address: SocketAddr, method: &str, target: &str) -> (u16, String) {
    try_http(address, method, target)
        .unwrap_or_else(|e| panic!("{method} http://{address}{target}: {e}"))
}
