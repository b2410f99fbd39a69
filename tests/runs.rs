//! Run IDs and exemplars on the real binary against the fake Divalto server: every run's id
//! in the API, its log line, the status page and the `probe` trace; `GET /api/v1/runs/{id}`;
//! and `/metrics` in OpenMetrics, read through an OpenMetrics parser, whose exemplars lead
//! to runs the API answers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openmetrics_parser::{OpenMetricsType, OpenMetricsValue};
use serde_json::Value;

use common::{Exporter, FakeDivalto, SECRET_CODE};

/// The fake Divalto server on its own runtime while the test thread blocks.
struct Fake {
    _runtime: tokio::runtime::Runtime,
    server: FakeDivalto,
}

fn fake() -> Fake {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FakeDivalto::start());
    Fake {
        _runtime: runtime,
        server,
    }
}

/// A succeeding probe and one failing with `webhook_error`, every 500 ms; and one that only
/// runs when asked.
fn config(fake: &Fake) -> String {
    format!(
        r#"
defaults:
  interval: 500ms
  timeout: 2s
run_now_min_gap: 0s
servers:
  fake:
    base_url: "{base}"
probes:
  - {{name: ok, server: fake, code: "{SECRET_CODE}-ok"}}
  - {{name: failing, server: fake, code: "{SECRET_CODE}-body400"}}
  - {{name: on-demand, server: fake, code: "{SECRET_CODE}-ok", schedule: "0 0 1 1 *"}}
"#,
        base = fake.server.base_url()
    )
}

/// The exporter on [`config`], with its config directory and file.
fn start(fake: &Fake, extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, Exporter) {
    let (dir, path) = common::write_config(&config(fake));
    let mut args = vec![format!("--config.file={}", path.display())];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = Exporter::start(&args, &[]);
    (dir, path, exporter)
}

fn get_json(exporter: &Exporter, path: &str) -> (u16, Value) {
    let (status, body) = exporter.get(path);
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// Waits until both scheduled probes kept at least `runs` results; answers their views.
fn wait_for_history(exporter: &Exporter, runs: usize) -> BTreeMap<String, Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let views: BTreeMap<String, Value> = ["ok", "failing"]
            .iter()
            .map(|name| {
                let (_, view) = get_json(exporter, &format!("/api/v1/probes/{name}"));
                ((*name).to_owned(), view)
            })
            .collect();
        if views
            .values()
            .all(|v| v["history"].as_array().is_some_and(|h| h.len() >= runs))
        {
            return views;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "fewer than {runs} runs: {views:?}\n{}",
            exporter.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn is_run_id(text: &str) -> bool {
    text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn every_run_has_its_own_id_and_the_runs_endpoint_answers_it_with_its_probe() {
    // Arrange
    let fake = fake();
    let (_dir, _, exporter) = start(&fake, &[]);
    let views = wait_for_history(&exporter, 3);

    // Act: every kept result of both probes, and an on-demand run.
    let mut ids = BTreeSet::new();
    let mut kept = Vec::new();
    for (name, view) in &views {
        for result in view["history"].as_array().unwrap() {
            let id = result["run_id"].as_str().unwrap().to_owned();
            assert!(is_run_id(&id), "{result}");
            assert!(ids.insert(id.clone()), "{id} given twice");
            kept.push((name.clone(), id, result.clone()));
        }
        let last = &view["last_result"];
        assert_eq!(
            Some(last["run_id"].clone()),
            view["history"]
                .as_array()
                .unwrap()
                .last()
                .map(|r| r["run_id"].clone()),
        );
    }
    let answer = common::http_request(
        exporter.address,
        "POST",
        "/api/v1/probes/on-demand/run",
        &[],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let on_demand: Value = serde_json::from_str(&answer.body).unwrap();
    let on_demand_id = on_demand["run_id"].as_str().unwrap().to_owned();
    assert!(
        is_run_id(&on_demand_id) && !ids.contains(&on_demand_id),
        "{on_demand}"
    );

    // Assert: each id answers its run, with its probe.
    for (name, id, result) in &kept {
        let (status, run) = get_json(&exporter, &format!("/api/v1/runs/{id}"));
        if status == 404 {
            // Dropped from the history since (the probes keep running): fine.
            continue;
        }
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["probe"], name.as_str());
        for field in [
            "run_id",
            "success",
            "reason",
            "message",
            "finished_at",
            "duration_seconds",
        ] {
            assert_eq!(run[field], result[field], "{field} of {run}");
        }
    }
    let (status, run) = get_json(&exporter, &format!("/api/v1/runs/{on_demand_id}"));
    assert_eq!(
        (status, &run["probe"]),
        (200, &Value::from("on-demand")),
        "{run}"
    );
    assert_eq!(run["message"], on_demand["message"]);
}

#[test]
fn a_run_no_history_keeps_is_a_404_with_a_json_error() {
    let fake = fake();
    let (_dir, _, exporter) = start(&fake, &[]);
    for id in ["0123456789abcdef", "not-a-run-id", "00"] {
        let (status, body) = get_json(&exporter, &format!("/api/v1/runs/{id}"));
        assert_eq!(status, 404, "{id}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("no run")),
            "{body}"
        );
    }
}

#[test]
fn the_log_line_the_status_page_and_the_probe_trace_name_the_run() {
    // Arrange
    let fake = fake();
    let (_dir, config, exporter) = start(&fake, &["--log.format=json", "--log.level=debug"]);
    let views = wait_for_history(&exporter, 1);

    // Act
    let logs = exporter.logs();
    let (_, page) = exporter.get("/");

    // Assert: the failing run's warning and the successful run's debug line carry their ids.
    for (name, view) in &views {
        let ids: Vec<&str> = view["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["run_id"].as_str().unwrap())
            .collect();
        let logged: BTreeSet<String> = logs
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|line| line["probe"] == name.as_str())
            .filter_map(|line| line["run_id"].as_str().map(str::to_owned))
            .collect();
        assert!(
            ids.iter().all(|id| logged.contains(*id)),
            "{name}: {ids:?} not all in {logged:?}\n{logs}"
        );
    }
    // The page shows each probe's last run id (at least one of the two still current).
    let last_ids: Vec<String> = get_json(&exporter, "/api/v1/probes?history=0").1["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["last_result"]["run_id"].as_str().map(str::to_owned))
        .collect();
    let (_, page_now) = exporter.get("/");
    assert!(
        last_ids.iter().any(
            |id| page.contains(&format!("run {id}")) || page_now.contains(&format!("run {id}"))
        ),
        "{last_ids:?} not on the page"
    );
    assert!(
        page_now.contains("href=\"/api/v1/runs/"),
        "no link to the run"
    );

    let (code, stdout, _) = common::run_binary(
        &[
            "probe",
            "ok",
            &format!("--config.file={}", config.display()),
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{stdout}");
    let id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("  run id        "))
        .unwrap_or_else(|| panic!("no run id in the trace:\n{stdout}"));
    assert!(is_run_id(id), "{stdout}");
}

/// `/metrics` asked for in OpenMetrics, with the answer's headers.
fn openmetrics(exporter: &Exporter, accept: &str) -> common::HttpResponse {
    let answer = common::http_request(exporter.address, "GET", "/metrics", &[("Accept", accept)]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer
}

/// The reference parser, `prometheus_client.openmetrics.parser` (PyPI `prometheus-client`;
/// scripts/test installs it): strict on every rule of the format (`# EOF`, `_total`, units,
/// exemplar placement and size, histogram consistency). Fails, never skips, without it.
fn python_openmetrics_parser_accepts(text: &str) {
    let script = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
families = list(text_string_to_metric_families(sys.stdin.read()))\n\
exemplars = sum(1 for f in families for s in f.samples if s.exemplar)\n\
print(len(families), exemplars)\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 must be installed");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named"),
        "the OpenMetrics check needs PyPI's prometheus-client (python3 -m pip install prometheus-client; scripts/test installs it): {stderr}"
    );
    assert!(
        output.status.success(),
        "the Python OpenMetrics parser refused the page: {stderr}\n{text}"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let exemplars: usize = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(exemplars >= 2, "{stdout}");
}

/// The run id of an exemplar.
fn exemplar_run(exemplar: &openmetrics_parser::Exemplar) -> String {
    assert_eq!(
        exemplar.labels.keys().collect::<Vec<_>>(),
        vec!["run_id"],
        "{exemplar:?}"
    );
    let id = exemplar.labels["run_id"].clone();
    assert!(is_run_id(&id), "{id}");
    id
}

#[test]
fn openmetrics_output_parses_and_its_exemplars_lead_to_runs_the_api_answers() {
    // Arrange
    let fake = fake();
    let (_dir, _, exporter) = start(&fake, &[]);
    wait_for_history(&exporter, 2);

    // Act: the header Prometheus sends.
    let answer = openmetrics(
        &exporter,
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );

    // Assert: the format, its end marker, its counter and unit rules.
    assert_eq!(
        answer.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = &answer.body;
    assert!(
        text.ends_with("# EOF\n"),
        "{}",
        &text[text.len().saturating_sub(200)..]
    );
    assert!(
        text.contains("# TYPE webhook_probe_failures counter\n"),
        "{text}"
    );
    assert!(text.contains("# TYPE webhook_probe_runs counter\n"));
    assert!(text.contains("# UNIT webhook_probe_duration_seconds seconds\n"));
    assert!(text.contains("# TYPE process_cpu_seconds counter\n"));
    assert!(!text.contains("# TYPE webhook_probe_runs_total"));
    python_openmetrics_parser_accepts(text);
    // openmetrics-parser refuses a `# UNIT` on a histogram (the specification forbids units
    // on info and stateset only, and the Python parser above took them): left out for it.
    let without_histogram_units: String = text
        .lines()
        .filter(|line| *line != "# UNIT webhook_probe_duration_seconds seconds")
        .filter(|line| *line != "# UNIT webhook_exporter_schedule_lag_seconds seconds")
        .map(|line| format!("{line}\n"))
        .collect();
    let exposition = openmetrics_parser::openmetrics::parse_openmetrics(&without_histogram_units)
        .unwrap_or_else(|e| panic!("{e:?}\n{text}"));

    // Each probe's duration buckets: an exemplar on the buckets its runs landed in, its
    // value within the bucket.
    let durations = &exposition.families["webhook_probe_duration_seconds"];
    assert_eq!(durations.family_type, OpenMetricsType::Histogram);
    assert_eq!(durations.unit, "seconds");
    let mut exemplars: Vec<(String, String)> = Vec::new();
    for sample in durations.iter_samples() {
        let probe = sample
            .get_labelset()
            .unwrap()
            .get_label_value("probe")
            .unwrap()
            .to_owned();
        let OpenMetricsValue::Histogram(histogram) = &sample.value else {
            panic!("{sample:?}")
        };
        let mut lower = f64::NEG_INFINITY;
        let mut with_exemplar = 0;
        for bucket in &histogram.buckets {
            if let Some(exemplar) = &bucket.exemplar {
                assert!(
                    exemplar.id > lower && exemplar.id <= bucket.upper_bound,
                    "{exemplar:?} outside ({lower}, {}]",
                    bucket.upper_bound
                );
                assert!(exemplar.timestamp.is_some(), "{exemplar:?}");
                exemplars.push((probe.clone(), exemplar_run(exemplar)));
                with_exemplar += 1;
            }
            lower = bucket.upper_bound;
        }
        let runs = histogram.count.unwrap_or(0);
        assert_eq!(with_exemplar > 0, runs > 0, "{probe}: {histogram:?}");
    }
    // The failing probe's webhook_error counter, and no other reason of it.
    let failures = &exposition.families["webhook_probe_failures"];
    for sample in failures.iter_samples() {
        let labels = sample.get_labelset().unwrap();
        let (probe, reason) = (
            labels.get_label_value("probe").unwrap(),
            labels.get_label_value("reason").unwrap(),
        );
        let OpenMetricsValue::Counter(counter) = &sample.value else {
            panic!("{sample:?}")
        };
        let failing_here = probe == "failing" && reason == "webhook_error";
        assert_eq!(counter.exemplar.is_some(), failing_here, "{probe} {reason}");
        if let Some(exemplar) = &counter.exemplar {
            assert_eq!(exemplar.id, 1.0, "a failure counts one");
            exemplars.push((probe.to_owned(), exemplar_run(exemplar)));
        }
    }
    assert!(
        exemplars.iter().any(|(probe, _)| probe == "ok")
            && exemplars.iter().any(|(probe, _)| probe == "failing"),
        "{exemplars:?}"
    );
    // Each exemplar's run is answered by the API, under its probe (the newest runs are
    // the exemplars, well within the history kept).
    for (probe, id) in &exemplars {
        let (status, run) = get_json(&exporter, &format!("/api/v1/runs/{id}"));
        assert_eq!(status, 200, "{id}: {run}");
        assert_eq!(run["probe"], probe.as_str(), "{run}");
    }
}

#[test]
fn plain_text_stays_the_default_and_carries_no_exemplar() {
    let fake = fake();
    let (_dir, _, exporter) = start(&fake, &[]);
    wait_for_history(&exporter, 1);
    for accept in [
        None,
        Some("text/plain"),
        Some("*/*"),
        Some("application/openmetrics-text;q=0.1,text/plain"),
    ] {
        let headers: Vec<(&str, &str)> = accept.map(|a| ("Accept", a)).into_iter().collect();
        let answer = common::http_request(exporter.address, "GET", "/metrics", &headers);
        assert_eq!(
            answer.header("content-type"),
            Some("text/plain; version=0.0.4; charset=utf-8"),
            "{accept:?}"
        );
        assert!(!answer.body.contains("# EOF"), "{accept:?}");
        assert!(
            !answer.body.contains(" # {"),
            "{accept:?}: an exemplar in plain text"
        );
        assert!(
            answer
                .body
                .contains("# TYPE webhook_probe_runs_total counter\n")
        );
    }
    // Any version of OpenMetrics is answered in 1.0.0.
    let answer = openmetrics(&exporter, "application/openmetrics-text; version=0.0.1");
    assert!(answer.body.ends_with("# EOF\n"));
}
