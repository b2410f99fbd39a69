//! Run IDs and exemplars on the real binary against the fake Divalto server: every run's id
//! in the API, its log line, the status page and the `probe` trace; `GET /api/v1/runs/{id}`;
//! and `/metrics` in OpenMetrics, read through the reference OpenMetrics parser, whose
//! exemplars lead to runs the API answers.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use common::{Exporter, Fake, SECRET_CODE, fake};

/// A succeeding probe and one failing with `webhook_error`, every 500 ms; and one that only
/// runs when asked.
fn config(fake: &Fake) -> String {
    format!(
        r#"
defaults:
  interval: 500ms
  timeout: 400ms
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

/// An OpenMetrics page parsed by the reference parser, `prometheus_client.openmetrics.parser`
/// (PyPI `prometheus-client`; scripts/test installs it), strict on every rule of the format
/// (`# EOF`, `_total`, units, exemplar placement and size, histogram consistency): its
/// families as JSON, `{name: {type, unit, samples: [{name, labels, value, exemplar}]}}`.
/// Fails, never skips, without it. (openmetrics-parser, the Rust crate, cannot read a page
/// with a family that has no sample yet: its grammar folds the next family's header in.)
fn parse_openmetrics(text: &str) -> Value {
    let script = r#"
import json, math, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
def number(v):
    v = float(v)
    return v if math.isfinite(v) else str(v)
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = {"type": f.type, "unit": f.unit, "samples": [
        {"name": s.name, "labels": s.labels, "value": number(s.value),
         "exemplar": s.exemplar and {"labels": s.exemplar.labels,
                                     "value": number(s.exemplar.value),
                                     "timestamp": number(s.exemplar.timestamp)}}
        for s in f.samples]}
print(json.dumps(out))
"#;
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
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The run id of an exemplar, its only label.
fn exemplar_run(exemplar: &Value) -> String {
    let labels = exemplar["labels"].as_object().unwrap();
    assert_eq!(
        labels.keys().collect::<Vec<_>>(),
        vec!["run_id"],
        "{exemplar}"
    );
    let id = labels["run_id"].as_str().unwrap().to_owned();
    assert!(is_run_id(&id), "{id}");
    id
}

/// A bucket bound as the page spells it.
fn bound(le: &str) -> f64 {
    if le == "+Inf" {
        f64::INFINITY
    } else {
        le.parse().unwrap()
    }
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
    let families = parse_openmetrics(text);
    assert_eq!(families["webhook_probe_runs"]["type"], "counter");
    assert_eq!(families["process_cpu_seconds"]["unit"], "seconds");
    assert_eq!(
        families["webhook_probe_duration_seconds"]["type"],
        "histogram"
    );
    assert_eq!(
        families["webhook_probe_duration_seconds"]["unit"],
        "seconds"
    );
    assert_eq!(
        families["webhook_probe_last_run_timestamp_seconds"]["unit"],
        "seconds"
    );
    assert!(families.get("webhook_probe_runs_total").is_none());

    // Each probe's duration buckets: an exemplar on a bucket its runs landed in, its value
    // within the bucket, its timestamp the run's end.
    let mut exemplars: Vec<(String, String)> = Vec::new();
    let mut lower: BTreeMap<String, f64> = BTreeMap::new();
    for sample in families["webhook_probe_duration_seconds"]["samples"]
        .as_array()
        .unwrap()
    {
        let probe = sample["labels"]["probe"].as_str().unwrap().to_owned();
        let Some(le) = sample["labels"]["le"].as_str() else {
            assert!(sample["exemplar"].is_null(), "{sample}");
            continue;
        };
        let below = lower
            .insert(probe.clone(), bound(le))
            .unwrap_or(f64::NEG_INFINITY);
        let exemplar = &sample["exemplar"];
        if exemplar.is_null() {
            continue;
        }
        let value = exemplar["value"].as_f64().unwrap();
        assert!(value > below && value <= bound(le), "{sample}");
        assert!(exemplar["timestamp"].as_f64().unwrap() > 1.7e9, "{sample}");
        exemplars.push((probe, exemplar_run(exemplar)));
    }
    for probe in ["ok", "failing"] {
        assert!(
            exemplars.iter().any(|(p, _)| p == probe),
            "{probe}: {exemplars:?}"
        );
    }
    // The failing probe's webhook_error counter, and no other reason of it.
    for sample in families["webhook_probe_failures"]["samples"]
        .as_array()
        .unwrap()
    {
        let (probe, reason) = (
            sample["labels"]["probe"].as_str().unwrap(),
            sample["labels"]["reason"].as_str().unwrap(),
        );
        let failing_here = probe == "failing" && reason == "webhook_error";
        let exemplar = &sample["exemplar"];
        assert_eq!(!exemplar.is_null(), failing_here, "{sample}");
        if failing_here {
            assert_eq!(exemplar["value"], 1.0, "a failure counts one");
            exemplars.push((probe.to_owned(), exemplar_run(exemplar)));
        }
    }
    // Nothing else carries one.
    let carrying: BTreeSet<&str> = families
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, f)| {
            f["samples"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| !s["exemplar"].is_null())
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert_eq!(
        carrying,
        BTreeSet::from(["webhook_probe_duration_seconds", "webhook_probe_failures"])
    );

    // Each exemplar's run is answered by the API, under its probe (exemplars are the newest
    // runs, well within the history kept).
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

/// `/metrics` over a bare HTTP/1.0 connection (so the body is not chunked) asking for gzip:
/// the headers and the body, gunzipped.
fn gzipped_metrics(exporter: &Exporter, accept: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(exporter.address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: localhost\r\nAccept: {accept}\r\nAccept-Encoding: gzip\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let end = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&answer[..end]).to_lowercase();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let mut body = String::new();
    flate2::read::GzDecoder::new(&answer[end + 4..])
        .read_to_string(&mut body)
        .unwrap();
    (head, body)
}

#[test]
fn both_formats_are_gzipped_when_asked() {
    let fake = fake();
    let (_dir, _, exporter) = start(&fake, &[]);
    wait_for_history(&exporter, 1);

    let (head, text) = gzipped_metrics(&exporter, "text/plain");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    assert!(text.contains("# TYPE webhook_probe_runs_total counter\n"));

    let (head, openmetrics) = gzipped_metrics(&exporter, "application/openmetrics-text");
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(openmetrics.ends_with("# EOF\n"));
    parse_openmetrics(&openmetrics);
}
