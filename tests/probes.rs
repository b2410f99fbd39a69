//! One run of one probe against real servers started by the test: every failure reason is
//! produced for real, and the verdict rules hold end to end.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FakeDivalto, SECRET_CODE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use webhook_exporter::config::{self, ProbeSpec};
use webhook_exporter::probe::{self, FailureReason, Outcome};

/// Parses a one-probe config whose probe body is `probe` (YAML lines indented by 4).
fn spec_from(servers: &str, probe: &str) -> Arc<ProbeSpec> {
    let text = format!(
        "defaults: {{timeout: 2s}}\nservers:\n{servers}\nprobes:\n  - name: under-test\n{probe}\n"
    );
    let config =
        config::parse(Path::new("test.yaml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.probes[0].clone()
}

/// A probe of the fake Divalto server calling the webhook whose behaviour is `behaviour`.
fn divalto_spec(fake: &FakeDivalto, behaviour: &str, extra: &str) -> Arc<ProbeSpec> {
    spec_from(
        &format!("  fake: {{base_url: \"{}\"}}", fake.base_url()),
        &format!("    server: fake\n    code: {SECRET_CODE}-{behaviour}\n{extra}"),
    )
}

fn url_spec(url: &str, extra: &str) -> Arc<ProbeSpec> {
    spec_from("  {}", &format!("    url: \"{url}\"\n{extra}"))
}

fn assert_failure(outcome: &Outcome, reason: FailureReason, message_part: &str) {
    assert!(!outcome.success, "{outcome:?}");
    assert_eq!(outcome.reason, Some(reason), "{outcome:?}");
    assert!(
        outcome.message.contains(message_part),
        "message {:?} lacks {message_part:?}",
        outcome.message
    );
    assert!(
        !outcome.message.contains(SECRET_CODE),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn a_divalto_success_is_a_success_with_its_code_and_message() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(&fake, "ok", "    params: {dos: \"998\"}")).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.http_status, Some(200));
    assert_eq!(outcome.response_code.as_deref(), Some("0"));
    assert_eq!(outcome.message, "Client C0000001 rafraîchi");
    assert_eq!(outcome.attempts, 1);
    assert_eq!(fake.last_query().as_deref(), Some("dos=998"));
    assert!(outcome.phases.processing > Duration::ZERO);
}

#[tokio::test]
async fn a_body_code_400_in_a_200_answer_is_a_webhook_error() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(&fake, "body400", "")).await;
    assert_failure(
        &outcome,
        FailureReason::WebhookError,
        "Divalto code 400: Dossier 998 verrouillé",
    );
    assert_eq!(outcome.http_status, Some(200));
    assert_eq!(outcome.response_code.as_deref(), Some("400"));
}

#[tokio::test]
async fn a_400_with_a_divalto_message_is_an_http_status_failure_carrying_the_message() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(&fake, "http400", "")).await;
    assert_failure(
        &outcome,
        FailureReason::HttpStatus,
        "HTTP 400 Bad Request (expected 200): Paramètre dos manquant",
    );
    assert_eq!(outcome.http_status, Some(400));
}

#[tokio::test]
async fn plain_text_codes_are_read() {
    let fake = FakeDivalto::start().await;
    assert!(probe::run(&divalto_spec(&fake, "plain0", "")).await.success);
    let outcome = probe::run(&divalto_spec(&fake, "plain400", "")).await;
    assert_failure(
        &outcome,
        FailureReason::WebhookError,
        "Divalto code 400: Client inconnu",
    );
}

#[tokio::test]
async fn a_closed_port_is_a_connect_failure() {
    let port = common::closed_port();
    let outcome = probe::run(&url_spec(&format!("http://127.0.0.1:{port}/health"), "")).await;
    assert_failure(&outcome, FailureReason::Connect, "Connection refused");
    assert_eq!(outcome.http_status, None);
}

#[tokio::test]
async fn an_unresolvable_host_is_a_dns_failure() {
    let outcome = probe::run(&url_spec("http://no-such-host.invalid/health", "")).await;
    assert_failure(
        &outcome,
        FailureReason::Dns,
        "cannot resolve no-such-host.invalid",
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_within_the_budget() {
    let address = common::silent_server().await;
    let spec = url_spec(
        &format!("http://{address}/"),
        "    timeout: 500ms\n    interval: 5s",
    );
    let started = std::time::Instant::now();
    let outcome = probe::run(&spec).await;
    let elapsed = started.elapsed();
    assert_failure(
        &outcome,
        FailureReason::Timeout,
        "no complete answer within 500ms (timed out waiting for the answer)",
    );
    assert!(
        elapsed >= Duration::from_millis(500) && elapsed < Duration::from_millis(1500),
        "{elapsed:?}"
    );
    assert!(
        outcome.phases.processing >= Duration::from_millis(450),
        "{:?}",
        outcome.phases
    );
}

#[tokio::test]
async fn a_garbage_answer_is_an_invalid_response() {
    let address = common::raw_server(b"SSH-2.0-OpenSSH_9.2\r\nthis is not http\r\n\r\n").await;
    let outcome = probe::run(&url_spec(&format!("http://{address}/"), "")).await;
    assert_failure(&outcome, FailureReason::InvalidResponse, "not valid HTTP");
}

#[tokio::test]
async fn a_connection_closed_before_an_answer_is_an_invalid_response() {
    let address = common::raw_server(b"").await;
    let outcome = probe::run(&url_spec(&format!("http://{address}/"), "")).await;
    assert_failure(
        &outcome,
        FailureReason::InvalidResponse,
        "closed before a complete answer",
    );
}

#[tokio::test]
async fn an_oversized_body_is_body_too_large() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(&fake, "big", "    max_body_bytes: 1MiB")).await;
    assert_failure(
        &outcome,
        FailureReason::BodyTooLarge,
        "larger than max_body_bytes (1048576 bytes)",
    );
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_tls_failure() {
    let (address, _) = common::tls_server().await;
    let outcome = probe::run(&url_spec(
        &format!("https://localhost:{}/", address.port()),
        "",
    ))
    .await;
    assert_failure(&outcome, FailureReason::Tls, "unknown issuer");
}

#[tokio::test]
async fn a_certificate_trusted_through_ca_file_succeeds() {
    let (address, cert_pem) = common::tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let spec = url_spec(
        &format!("https://localhost:{}/", address.port()),
        &format!("    tls: {{ca_file: \"{}\"}}", ca.display()),
    );
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.message, "OK over TLS");
    assert!(outcome.phases.tls > Duration::ZERO);
}

#[tokio::test]
async fn a_body_mismatch_is_reported() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(
        &fake,
        "ok",
        "    expect: {body_matches: \"commande\"}",
    ))
    .await;
    assert_failure(
        &outcome,
        FailureReason::BodyMismatch,
        "body does not match /commande/",
    );
}

#[tokio::test]
async fn redirects_are_followed_and_a_loop_is_an_invalid_response() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(&fake, "redirect", "")).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.redirects, 1);
    let looping = probe::run(&divalto_spec(&fake, "loop", "")).await;
    assert_failure(
        &looping,
        FailureReason::InvalidResponse,
        "more than 10 redirects",
    );
    assert_eq!(fake.calls("loop"), 11);
}

#[tokio::test]
async fn a_failure_then_success_inside_one_run_is_a_success_after_two_attempts() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(
        &fake,
        "flaky",
        "    retries: 2\n    retry_delay: 100ms\n    retry_on: [http_status]",
    ))
    .await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.attempts, 2);
}

#[tokio::test]
async fn retries_that_would_outlast_the_timeout_stop_within_the_budget() {
    // Every attempt fails at once (HTTP 500, retried because retry_on names it); 50 retries
    // 200 ms apart would take 10 s, the budget is 700 ms: a retry starts only while its
    // delay still fits, so at most 4 attempts (at 0, 200, 400, 600 ms) and no more time.
    let fake = FakeDivalto::start().await;
    let spec = divalto_spec(
        &fake,
        "http500",
        "    timeout: 700ms\n    interval: 5s\n    retries: 50\n    retry_delay: 200ms\n    retry_on: [http_status]",
    );
    let started = std::time::Instant::now();
    let outcome = probe::run(&spec).await;
    let elapsed = started.elapsed();
    assert_failure(&outcome, FailureReason::HttpStatus, "HTTP 500");
    assert!(
        (2..=4).contains(&outcome.attempts),
        "attempts {} (the budget allows 2 to 4)",
        outcome.attempts
    );
    assert_eq!(fake.calls("http500"), u64::from(outcome.attempts));
    assert!(elapsed < Duration::from_millis(700), "{elapsed:?}");
    assert!(outcome.duration < Duration::from_millis(700), "{outcome:?}");
}

#[tokio::test]
async fn a_webhook_error_or_http_status_answer_is_not_retried_by_default() {
    // The ERP already ran the call: a retry would run its action again.
    let fake = FakeDivalto::start().await;
    for behaviour in ["body400", "http400"] {
        let outcome = probe::run(&divalto_spec(
            &fake,
            behaviour,
            "    retries: 2\n    retry_delay: 10ms",
        ))
        .await;
        assert!(!outcome.success, "{outcome:?}");
        assert_eq!(outcome.attempts, 1, "{behaviour}: {outcome:?}");
        assert_eq!(fake.calls(behaviour), 1, "{behaviour} was called again");
    }
}

#[tokio::test]
async fn a_failure_named_in_retry_on_is_retried() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(
        &fake,
        "body400",
        "    retries: 2\n    retry_delay: 10ms\n    retry_on: [webhook_error]",
    ))
    .await;
    assert_failure(&outcome, FailureReason::WebhookError, "Divalto code 400");
    assert_eq!(outcome.attempts, 3);
    assert_eq!(fake.calls("body400"), 3);
}

#[tokio::test]
async fn retry_on_set_on_the_server_replaces_the_default_and_a_probe_replaces_it() {
    let fake = FakeDivalto::start().await;
    let servers = format!(
        "  fake: {{base_url: \"{}\", retry_on: [webhook_error]}}",
        fake.base_url()
    );
    let server_wide = spec_from(
        &servers,
        &format!(
            "    server: fake\n    code: {SECRET_CODE}-body400\n    retries: 1\n    retry_delay: 10ms"
        ),
    );
    assert_eq!(probe::run(&server_wide).await.attempts, 2);
    let probe_own = spec_from(
        &servers,
        &format!(
            "    server: fake\n    code: {SECRET_CODE}-body400\n    retries: 1\n    retry_delay: 10ms\n    retry_on: [connect]"
        ),
    );
    assert_eq!(probe::run(&probe_own).await.attempts, 1);
    assert_eq!(fake.calls("body400"), 3);
}

#[tokio::test]
async fn a_connect_failure_is_retried_by_default() {
    let port = common::closed_port();
    let outcome = probe::run(&url_spec(
        &format!("http://127.0.0.1:{port}/health"),
        "    retries: 2\n    retry_delay: 10ms",
    ))
    .await;
    assert_failure(&outcome, FailureReason::Connect, "Connection refused");
    assert_eq!(outcome.attempts, 3);
}

#[test]
fn an_unknown_reason_in_retry_on_is_a_config_error_with_its_position() {
    let text = "probes:\n  - name: p\n    url: http://127.0.0.1/\n    retry_on: [dns, conect]\n";
    let error = config::parse(Path::new("test.yaml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("test.yaml:4:"),
        "no position in {error:?}"
    );
    assert!(
        error.contains("unknown failure reason \"conect\": use one of dns, connect, tls"),
        "{error}"
    );
}

#[tokio::test]
async fn configured_headers_are_sent() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(
        &fake,
        "ok",
        "    headers: {Authorization: \"Bearer s3cr3t-token\"}",
    ))
    .await;
    assert!(outcome.success);
    let headers = fake.last_headers().unwrap();
    assert_eq!(headers.get("authorization").unwrap(), "Bearer s3cr3t-token");
    assert!(
        headers
            .get("user-agent")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("webhook-exporter/")
    );
}

#[tokio::test]
async fn a_wrong_status_class_is_accepted_when_configured() {
    let fake = FakeDivalto::start().await;
    let outcome = probe::run(&divalto_spec(
        &fake,
        "http500",
        "    expect: {status: [\"5xx\"], divalto: off}",
    ))
    .await;
    assert!(outcome.success, "{outcome:?}");
}

/// A raw HTTP server that records each request head as received and answers a Divalto
/// success, or `411 Length Required` (as IIS / HTTP.sys does) to a POST, PUT or PATCH
/// without `Content-Length`.
async fn capturing_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let sink = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(byte) = stream.read_u8().await else {
                        return;
                    };
                    head.push(byte);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let needs_length = ["POST ", "PUT ", "PATCH "]
                    .iter()
                    .any(|m| head.starts_with(m));
                let answer = if needs_length && header_values(&head, "content-length").is_empty() {
                    "HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                } else {
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 12\r\nconnection: close\r\n\r\n{\"code\":\"0\"}"
                };
                sink.lock().unwrap().push(head);
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    (address, heads)
}

/// The values of every `name` header line in a raw request head (name in any case).
fn header_values(head: &str, name: &str) -> Vec<String> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn a_post_put_or_patch_without_a_body_sends_content_length_zero() {
    let (address, heads) = capturing_server().await;
    for method in ["POST", "PUT", "PATCH"] {
        let outcome = probe::run(&url_spec(
            &format!("http://{address}/hook"),
            &format!("    method: {method}"),
        ))
        .await;
        assert!(outcome.success, "{method}: {outcome:?}");
        let head = heads.lock().unwrap().last().cloned().unwrap();
        assert!(head.starts_with(&format!("{method} /hook ")), "{head}");
        assert_eq!(header_values(&head, "content-length"), ["0"], "{head}");
    }
}

#[tokio::test]
async fn configured_headers_replace_the_exporters_own() {
    let (address, heads) = capturing_server().await;
    let outcome = probe::run(&url_spec(
        &format!("http://{address}/hook"),
        "    headers: {User-Agent: erp-monitor/2, Host: erp.example.com, accept: application/xml}",
    ))
    .await;
    assert!(outcome.success, "{outcome:?}");
    let head = heads.lock().unwrap()[0].clone();
    assert_eq!(
        header_values(&head, "user-agent"),
        ["erp-monitor/2"],
        "{head}"
    );
    assert_eq!(header_values(&head, "host"), ["erp.example.com"], "{head}");
    assert_eq!(
        header_values(&head, "accept"),
        ["application/xml"],
        "{head}"
    );
    assert_eq!(header_values(&head, "connection"), ["close"], "{head}");
}

/// A raw HTTP/1.1 answer `200` with `content_type` and `body` (any bytes), leaked for
/// [`common::raw_server`].
fn raw_answer(content_type: &str, body: &[u8]) -> &'static [u8] {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body);
    Box::leak(answer.into_boxed_slice())
}

#[tokio::test]
async fn a_bom_prefixed_divalto_failure_is_a_webhook_error() {
    let body = "\u{feff}{\"code\":\"400\",\"message\":\"Dossier 998 verrouillé\"}";
    let address = common::raw_server(raw_answer("application/json", body.as_bytes())).await;
    let outcome = probe::run(&url_spec(&format!("http://{address}/"), "")).await;
    assert_failure(
        &outcome,
        FailureReason::WebhookError,
        "Divalto code 400: Dossier 998 verrouillé",
    );
    assert_eq!(outcome.response_code.as_deref(), Some("400"));
}

#[tokio::test]
async fn a_body_in_a_declared_latin_charset_is_decoded() {
    // "Échec de la requête" in Windows-1252 / ISO-8859-1: É = C9, ê = EA.
    let body: &[u8] = b"{\"code\":\"500\",\"message\":\"\xC9chec de la requ\xEAte\"}";
    for charset in ["windows-1252", "ISO-8859-1"] {
        let address = common::raw_server(raw_answer(
            &format!("application/json; charset={charset}"),
            body,
        ))
        .await;
        let outcome = probe::run(&url_spec(&format!("http://{address}/"), "")).await;
        assert_failure(
            &outcome,
            FailureReason::WebhookError,
            "Divalto code 500: Échec de la requête",
        );
    }
}

#[test]
fn an_invalid_tls_server_name_is_a_config_error_with_its_position() {
    let text = "probes:\n  - name: p\n    url: https://127.0.0.1/\n    tls:\n      server_name: \"erp example.com\"\n";
    let error = config::parse(Path::new("test.yaml"), text)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("test.yaml:5:20: probes[0] \"p\".tls.server_name: \"erp example.com\" is not a valid TLS server name"),
        "{error}"
    );
}

#[tokio::test]
async fn a_valid_tls_server_name_is_sent_and_checked() {
    // The certificate is for localhost; the URL names 127.0.0.1.
    let (address, cert_pem) = common::tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, cert_pem).unwrap();
    let spec = url_spec(
        &format!("https://127.0.0.1:{}/", address.port()),
        &format!(
            "    tls: {{ca_file: \"{}\", server_name: localhost}}",
            ca.display()
        ),
    );
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
}

/// The body, content type and content length the fake received last.
fn received(fake: &FakeDivalto) -> (String, Option<String>, Option<String>) {
    let headers = fake.last_headers().unwrap();
    let get = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    (
        String::from_utf8(fake.last_body().unwrap()).unwrap(),
        get("content-type"),
        get("content-length"),
    )
}

#[tokio::test]
async fn a_body_string_is_sent_with_variables_expanded_and_its_length() {
    // SAFETY: set once, read by this test only.
    unsafe { std::env::set_var("BODIES_TEST_EVT", "1102") };
    let fake = FakeDivalto::start().await;
    let spec = divalto_spec(
        &fake,
        "ok",
        "    method: POST\n    body: '{\"evenement\":{\"codeevt\":${BODIES_TEST_EVT}}}'",
    );
    assert!(!format!("{spec:?}").contains("evenement"));
    assert!(probe::run(&spec).await.success);
    let (body, content_type, length) = received(&fake);
    assert_eq!(body, r#"{"evenement":{"codeevt":1102}}"#);
    assert_eq!(content_type, None);
    assert_eq!(length.as_deref(), Some("30"));
}

#[tokio::test]
async fn a_json_body_is_sent_as_json_unless_a_header_sets_the_type() {
    let fake = FakeDivalto::start().await;
    let spec = divalto_spec(
        &fake,
        "ok",
        "    method: POST\n    json: {evenement: {codeevt: 1102}}",
    );
    assert!(probe::run(&spec).await.success);
    let (body, content_type, length) = received(&fake);
    assert_eq!(body, r#"{"evenement":{"codeevt":1102}}"#);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(length.as_deref(), Some("30"));

    let spec = divalto_spec(
        &fake,
        "ok",
        "    method: POST\n    json: [1, two]\n    headers: {Content-Type: application/vnd.divalto+json}",
    );
    assert!(probe::run(&spec).await.success);
    let (body, content_type, _) = received(&fake);
    assert_eq!(body, r#"[1,"two"]"#);
    assert_eq!(
        content_type.as_deref(),
        Some("application/vnd.divalto+json")
    );
}

#[tokio::test]
async fn variables_in_the_strings_of_a_json_body_are_expanded_and_an_unset_one_is_an_error() {
    // SAFETY: set once, read by this test only.
    unsafe { std::env::set_var("JSON_BODY_TEST_DOSSIER", "998") };
    let fake = FakeDivalto::start().await;
    let spec = divalto_spec(
        &fake,
        "ok",
        "    method: POST\n    json: {dos: '${JSON_BODY_TEST_DOSSIER}', price: '$$5', n: 1, list: ['x${JSON_BODY_TEST_DOSSIER}']}",
    );
    assert!(probe::run(&spec).await.success);
    let (body, _, _) = received(&fake);
    assert_eq!(body, r#"{"dos":"998","price":"$5","n":1,"list":["x998"]}"#);

    let text = "probes:\n  - name: p\n    url: http://127.0.0.1:1/\n    json: {a: {b: '${JSON_BODY_TEST_UNSET}'}}\n";
    let error = config::parse(Path::new("test.yaml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("test.yaml:4:11: probes[0] \"p\".json: a.b: environment variable JSON_BODY_TEST_UNSET is not set"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_file_is_read_relative_to_the_config_and_a_probe_replaces_the_defaults_body() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("body.xml"), "<evt code=\"1102\"/>").unwrap();
    let fake = FakeDivalto::start().await;
    let text = format!(
        "defaults: {{timeout: 2s, method: POST, json: {{from: defaults}}}}\nservers:\n  fake: {{base_url: \"{}\", body: from-server}}\nprobes:\n  - name: file\n    server: fake\n    code: {SECRET_CODE}-ok\n    body_file: body.xml\n  - name: server\n    server: fake\n    code: {SECRET_CODE}-ok\n",
        fake.base_url()
    );
    let path = dir.path().join("exporter.yaml");
    let config = config::parse(&path, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(probe::run(&config.probes[0]).await.success);
    let (body, _, length) = received(&fake);
    assert_eq!(body, "<evt code=\"1102\"/>");
    assert_eq!(length.as_deref(), Some("18"));
    assert!(probe::run(&config.probes[1]).await.success);
    assert_eq!(received(&fake).0, "from-server");
}

#[tokio::test]
async fn a_307_redirect_sends_the_body_again_and_a_303_drops_it() {
    let fake = FakeDivalto::start().await;
    let extra = "    method: POST\n    body: payload";
    assert!(
        probe::run(&divalto_spec(&fake, "r307", extra))
            .await
            .success
    );
    let (body, _, length) = received(&fake);
    assert_eq!(body, "payload");
    assert_eq!(length.as_deref(), Some("7"));
    assert!(
        probe::run(&divalto_spec(&fake, "r303", extra))
            .await
            .success
    );
    let (body, _, length) = received(&fake);
    assert_eq!(body, "");
    assert_eq!(length, None);
}

#[test]
fn two_body_keys_on_one_probe_are_a_config_error_with_its_position() {
    let text =
        "probes:\n  - name: both\n    url: http://127.0.0.1:1/\n    body: a\n    json: {b: 1}\n";
    let error = config::parse(Path::new("test.yaml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("probes[0] \"both\": has both body and json; keep one"),
        "{error}"
    );
    assert!(error.contains("test.yaml:"), "{error}");
}

#[tokio::test]
async fn the_probe_trace_and_check_config_give_the_body_size_never_the_body() {
    let fake = FakeDivalto::start().await;
    let spec = divalto_spec(
        &fake,
        "ok",
        "    method: POST\n    json: {evenement: {codeevt: 1102, token: no_secret_body}}\n    authorization: {credentials: no_secret_token}",
    );
    let outcome = probe::run(&spec).await;
    let trace = webhook_exporter::report::probe_trace(&spec, &outcome, chrono::Utc::now());
    assert!(
        trace.contains("  body          55 bytes (json) (content hidden)"),
        "{trace}"
    );
    assert!(
        trace.contains("  credentials   Authorization: Bearer (hidden)"),
        "{trace}"
    );
    assert!(!trace.contains("no_secret"), "{trace}");
    assert!(!format!("{outcome:?}{spec:?}").contains("no_secret_body"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exporter.yaml");
    std::fs::write(
        &path,
        "probes:\n  - name: b\n    url: http://127.0.0.1:1/\n    method: POST\n    body: no_secret_body\n  - name: c\n    url: http://127.0.0.1:1/\n    body: x\n    body_file: no_secret_file\n",
    )
    .unwrap();
    let (code, stdout, stderr) = common::run_binary(
        &["check-config", &format!("--config.file={}", path.display())],
        &[],
        None,
    );
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr
            .contains("exporter.yaml:9:16: probes[1] \"c\": has both body and body_file; keep one"),
        "{stderr}"
    );
    assert!(!format!("{stdout}{stderr}").contains("no_secret_body"));
}

/// The `Authorization` the fake received for `extra` on a probe of it.
async fn authorization_sent(fake: &FakeDivalto, extra: &str) -> Option<String> {
    let spec = divalto_spec(fake, "ok", extra);
    assert!(!format!("{spec:?}").contains("no_secret"), "{spec:?}");
    assert!(probe::run(&spec).await.success);
    fake.last_headers()
        .unwrap()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn basic_auth_and_authorization_are_sent_inline_or_from_a_file() {
    let fake = FakeDivalto::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    std::fs::write(&file, "  no_secret_f\n").unwrap();
    let file = file.display();
    assert_eq!(
        authorization_sent(
            &fake,
            "    basic_auth: {username: probe, password: no_secret_p}"
        )
        .await
        .as_deref(),
        // base64 of "probe:no_secret_p"
        Some("Basic cHJvYmU6bm9fc2VjcmV0X3A=")
    );
    assert_eq!(
        authorization_sent(
            &fake,
            &format!("    basic_auth: {{username: probe, password_file: {file}}}")
        )
        .await
        .as_deref(),
        // base64 of "probe:no_secret_f": the file is trimmed
        Some("Basic cHJvYmU6bm9fc2VjcmV0X2Y=")
    );
    assert_eq!(
        authorization_sent(&fake, "    authorization: {credentials: no_secret_t}")
            .await
            .as_deref(),
        Some("Bearer no_secret_t")
    );
    assert_eq!(
        authorization_sent(
            &fake,
            &format!("    authorization: {{type: Token, credentials_file: {file}}}")
        )
        .await
        .as_deref(),
        Some("Token no_secret_f")
    );
}

#[test]
fn a_password_in_the_url_and_credentials_on_the_same_probe_are_a_config_error() {
    let text = "probes:\n  - name: p\n    url: http://u:no_secret_u@127.0.0.1:1/\n    basic_auth: {username: u, password: no_secret_b}\n";
    let error = config::parse(Path::new("test.yaml"), text)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("test.yaml:3:10: probes[0] \"p\": the url holds user:password@ and basic_auth is set too; keep one"),
        "{error}"
    );
    assert!(!error.contains("no_secret"), "{error}");
}

#[tokio::test]
async fn a_password_in_the_url_wins_over_credentials_of_the_defaults() {
    let fake = FakeDivalto::start().await;
    let text = format!(
        "defaults:\n  authorization: {{credentials: no_secret_default}}\nprobes:\n  - name: p\n    url: http://probe:no_secret_u@{}/erp/api/v1/WebHook/X-ok\n",
        fake.address
    );
    let config = config::parse(Path::new("test.yaml"), &text).unwrap();
    assert!(probe::run(&config.probes[0]).await.success);
    let sent = fake.last_headers().unwrap();
    // base64 of "probe:no_secret_u"
    assert_eq!(
        sent.get("authorization").unwrap(),
        "Basic cHJvYmU6bm9fc2VjcmV0X3U="
    );
}

#[test]
fn credentials_with_two_sources_or_an_authorization_header_are_config_errors() {
    let parse_error = |probe: &str| {
        let text = format!("probes:\n  - name: p\n    url: http://127.0.0.1:1/\n{probe}\n");
        config::parse(Path::new("test.yaml"), &text)
            .unwrap_err()
            .to_string()
    };
    let error =
        parse_error("    basic_auth: {username: u, password: no_secret_a, password_file: f}");
    assert!(
        error.contains("test.yaml:4:17: probes[0] \"p\".basic_auth: has both password and password_file; keep one"),
        "{error}"
    );
    let error = parse_error("    authorization: {type: Bearer}");
    assert!(
        error.contains("probes[0] \"p\".authorization: needs credentials or credentials_file"),
        "{error}"
    );
    let error = parse_error(
        "    basic_auth: {username: u, password: x}\n    authorization: {credentials: y}",
    );
    assert!(
        error.contains("probes[0] \"p\": has both basic_auth and authorization; keep one"),
        "{error}"
    );
    let error = parse_error("    headers: {Authorization: x}\n    authorization: {credentials: y}");
    assert!(
        error.contains(
            "probes[0] \"p\": has both headers.Authorization and authorization; keep one"
        ),
        "{error}"
    );
    assert!(!error.contains("no_secret"));
}

#[tokio::test]
async fn credentials_are_dropped_on_a_cross_origin_redirect_and_a_307_keeps_the_body() {
    let first = FakeDivalto::start().await;
    let other = FakeDivalto::start().await;
    let spec = divalto_spec(
        &first,
        &format!("to{}", other.address.port()),
        "    method: POST\n    body: payload\n    authorization: {credentials: no_secret_t}",
    );
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.redirects, 1);
    let first_headers = first.last_headers().unwrap();
    assert_eq!(
        first_headers.get("authorization").unwrap(),
        "Bearer no_secret_t"
    );
    let other_headers = other.last_headers().unwrap();
    assert_eq!(other_headers.get("authorization"), None);
    assert_eq!(other.last_body().unwrap(), b"payload");
}

/// Politeness to the ERP: once the answer is read, the run closes its connection with a
/// FIN (the server reads an end of file), never an RST, even when the server answers and
/// waits for the client to hang up first.
#[tokio::test]
async fn a_run_hangs_up_with_a_fin_not_a_reset() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buffer = [0u8; 4096];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(raw_answer(
                "application/json",
                br#"{"code":"0","message":"OK"}"#,
            ))
            .await
            .unwrap();
        // The server does not close: the client hangs up, and how it does is what we see.
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await
    });
    let outcome = probe::run(&url_spec(&format!("http://{address}/webhook"), "")).await;
    assert!(outcome.success, "{outcome:?}");
    let hang_up = server.await.unwrap().expect("the client never hung up");
    assert_eq!(hang_up.unwrap(), 0, "an end of file (a FIN), nothing more");
}
