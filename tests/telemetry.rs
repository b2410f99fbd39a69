//! Deep probe telemetry against real servers started by the tests: where the time goes,
//! certificates (valid, expired, untrusted, wrong name, mutual TLS), retries, proxies and
//! redirects — checked on the outcome and on the rendered metrics.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{FakeDivalto, SECRET_CODE, Scrape};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use webhook_exporter::config::{self, ProbeSpec};
use webhook_exporter::metrics::Metrics;
use webhook_exporter::probe::{self, FailureReason, Outcome};

fn spec(text: &str) -> Arc<ProbeSpec> {
    let config =
        config::parse(Path::new("test.yaml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    config.probes[0].clone()
}

/// Records `outcome` for `spec` and returns the parsed exposition.
fn scrape_after(spec: &Arc<ProbeSpec>, outcome: &Outcome) -> Scrape {
    let metrics = Metrics::new().unwrap();
    let handle = metrics.register_probe(spec, &[0.1, 1.0]);
    metrics.record(&handle, outcome);
    Scrape::parse(&metrics.encode())
}

/// A raw HTTP server answering every request `200` with a Divalto body, after `delay`,
/// writing the body one byte every `trickle`.
async fn timed_server(delay: Duration, trickle: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                tokio::time::sleep(delay).await;
                let body = br#"{"code":"0","message":"OK"}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                if trickle.is_zero() {
                    // At once: a zero sleep per byte still costs a timer tick each.
                    let _ = stream.write_all(body).await;
                    return;
                }
                for byte in body {
                    let _ = stream.write_all(&[*byte]).await;
                    let _ = stream.flush().await;
                    tokio::time::sleep(trickle).await;
                }
            });
        }
    });
    address
}

fn phases_sum(outcome: &Outcome) -> Duration {
    outcome.phases.as_array().iter().sum()
}

fn assert_phases_add_up(outcome: &Outcome) {
    let sum = phases_sum(outcome).as_secs_f64();
    let total = outcome.duration.as_secs_f64();
    assert!(
        (total - sum).abs() <= total * 0.05,
        "phases {sum} s vs total {total} s: {:?}",
        outcome.phases
    );
}

#[tokio::test]
async fn a_server_that_thinks_before_answering_shows_in_processing() {
    let address = timed_server(Duration::from_millis(300), Duration::ZERO).await;
    let outcome = probe::run(&spec(&format!(
        "probes:\n  - {{name: p, url: 'http://{address}/'}}\n"
    )))
    .await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        outcome.phases.processing >= Duration::from_millis(290),
        "{:?}",
        outcome.phases
    );
    assert!(
        outcome.phases.processing.as_secs_f64() > 0.9 * outcome.duration.as_secs_f64(),
        "{:?}",
        outcome.phases
    );
    assert_phases_add_up(&outcome);
}

#[tokio::test]
async fn a_body_that_trickles_shows_in_transfer() {
    let address = timed_server(Duration::ZERO, Duration::from_millis(15)).await;
    let outcome = probe::run(&spec(&format!(
        "probes:\n  - {{name: p, url: 'http://{address}/'}}\n"
    )))
    .await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        outcome.phases.transfer >= Duration::from_millis(300),
        "{:?}",
        outcome.phases
    );
    assert!(
        outcome.phases.transfer > outcome.phases.processing * 5,
        "{:?}",
        outcome.phases
    );
    assert_phases_add_up(&outcome);
}

/// Certificates for the TLS tests.
struct Certs {
    ca_pem: String,
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Certs {
    fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Divalto Test CA");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        Self {
            ca_pem: ca.pem(),
            ca,
        }
    }

    /// A leaf for `names` valid between the two dates (year, month, day), signed by the CA.
    fn leaf(
        &self,
        names: &[&str],
        from: (i32, u8, u8),
        to: (i32, u8, u8),
        client: bool,
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An HTTPS server presenting `cert`; with `client_ca`, it requires a client certificate.
async fn https_server(cert: &(String, String), client_ca: Option<&str>) -> SocketAddr {
    common::https_server(&cert.0, &cert.1, client_ca, common::OK_OVER_TLS).await
}

/// A probe of `https://localhost:PORT/` trusting the test CA, with `extra` YAML keys.
fn https_spec(dir: &Path, certs: &Certs, address: SocketAddr, extra: &str) -> Arc<ProbeSpec> {
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &certs.ca_pem).unwrap();
    spec(&format!(
        "probes:\n  - name: tls-probe\n    url: 'https://localhost:{}/'\n    tls: {{ca_file: '{}'{extra}}}\n",
        address.port(),
        ca.display()
    ))
}

fn timestamp(year: i32, month: u32, day: u32) -> f64 {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp() as f64
}

#[tokio::test]
async fn a_valid_chain_exports_its_earliest_expiry_and_tls_info() {
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2024, 1, 1), (2031, 6, 15), false);
    let address = https_server(&leaf, None).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = https_spec(dir.path(), &certs, address, "");
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    let tls = outcome.tls.as_ref().unwrap();
    assert_eq!(tls.version.as_deref(), Some("TLSv1_3"));
    let cert = tls.certificate.as_ref().unwrap();
    assert_eq!(
        (cert.subject.as_str(), cert.issuer.as_str()),
        ("localhost", "Divalto Test CA")
    );
    assert!(outcome.phases.tls > Duration::ZERO);

    let scrape = scrape_after(&spec, &outcome);
    let probe = [("probe", "tls-probe")];
    assert_eq!(
        scrape.value("webhook_probe_tls_cert_expiry_timestamp_seconds", &probe),
        Some(timestamp(2031, 6, 15))
    );
    let info = scrape.label_sets("webhook_probe_tls_info");
    assert_eq!(info[0]["subject"], "localhost");
    assert_eq!(info[0]["issuer"], "Divalto Test CA");
    assert_eq!(info[0]["version"], "TLSv1_3");
    assert_eq!(
        scrape.value("webhook_probe_http_version", &probe),
        Some(1.1)
    );
}

#[tokio::test]
async fn an_expired_certificate_is_a_tls_failure_that_still_reports_its_expiry() {
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2019, 1, 1), (2021, 3, 1), false);
    let address = https_server(&leaf, None).await;
    let dir = tempfile::tempdir().unwrap();
    let spec = https_spec(dir.path(), &certs, address, "");
    let outcome = probe::run(&spec).await;
    assert_eq!(outcome.reason, Some(FailureReason::Tls), "{outcome:?}");
    assert_eq!(
        outcome.message,
        "the certificate of localhost expired on 2021-03-01T00:00:00Z"
    );
    let scrape = scrape_after(&spec, &outcome);
    assert_eq!(
        scrape.value(
            "webhook_probe_tls_cert_expiry_timestamp_seconds",
            &[("probe", "tls-probe")]
        ),
        Some(timestamp(2021, 3, 1))
    );
}

#[tokio::test]
async fn a_certificate_not_valid_yet_says_from_when() {
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2039, 1, 1), (2039, 12, 1), false);
    let address = https_server(&leaf, None).await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = probe::run(&https_spec(dir.path(), &certs, address, "")).await;
    assert_eq!(outcome.reason, Some(FailureReason::Tls));
    assert_eq!(
        outcome.message,
        "the certificate of localhost is not valid before 2039-01-01T00:00:00Z"
    );
}

#[tokio::test]
async fn an_untrusted_self_signed_certificate_names_the_unknown_issuer() {
    let (address, _) = common::tls_server().await;
    let outcome = probe::run(&spec(&format!(
        "probes:\n  - {{name: p, url: 'https://localhost:{}/'}}\n",
        address.port()
    )))
    .await;
    assert_eq!(outcome.reason, Some(FailureReason::Tls));
    assert!(
        outcome
            .message
            .starts_with("the certificate of localhost is signed by an unknown issuer"),
        "{}",
        outcome.message
    );
    assert!(
        outcome.tls.unwrap().certificate.is_some(),
        "the chain is read even when untrusted"
    );
}

#[tokio::test]
async fn a_wrong_host_name_lists_the_names_the_certificate_holds() {
    let certs = Certs::new();
    let leaf = certs.leaf(
        &["erp.example.com", "www.erp.example.com"],
        (2024, 1, 1),
        (2031, 1, 1),
        false,
    );
    let address = https_server(&leaf, None).await;
    let dir = tempfile::tempdir().unwrap();
    let outcome = probe::run(&https_spec(dir.path(), &certs, address, "")).await;
    assert_eq!(outcome.reason, Some(FailureReason::Tls));
    assert_eq!(
        outcome.message,
        "the certificate is not valid for localhost: it holds erp.example.com, www.erp.example.com"
    );

    // tls.server_name checks the name the certificate does hold.
    let fixed = probe::run(&https_spec(
        dir.path(),
        &certs,
        address,
        ", server_name: erp.example.com",
    ))
    .await;
    assert!(fixed.success, "{fixed:?}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_an_untrusted_certificate() {
    let (address, _) = common::tls_server().await;
    let outcome = probe::run(&spec(&format!(
        "probes:\n  - {{name: p, url: 'https://localhost:{}/', tls: {{insecure_skip_verify: true}}}}\n",
        address.port()
    )))
    .await;
    assert!(outcome.success, "{outcome:?}");
}

#[tokio::test]
async fn mutual_tls_succeeds_with_a_client_certificate_and_fails_as_tls_without() {
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2024, 1, 1), (2031, 1, 1), false);
    let client = certs.leaf(&["webhook-exporter"], (2024, 1, 1), (2031, 1, 1), true);
    let address = https_server(&leaf, Some(&certs.ca_pem)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.pem"), &client.0).unwrap();
    std::fs::write(dir.path().join("client.key"), &client.1).unwrap();
    let with = https_spec(
        dir.path(),
        &certs,
        address,
        &format!(
            ", cert_file: '{}', key_file: '{}'",
            dir.path().join("client.pem").display(),
            dir.path().join("client.key").display()
        ),
    );
    let outcome = probe::run(&with).await;
    assert!(outcome.success, "{outcome:?}");

    let without = probe::run(&https_spec(dir.path(), &certs, address, "")).await;
    assert_eq!(without.reason, Some(FailureReason::Tls), "{without:?}");
    assert!(
        without.message.contains("refused the TLS handshake")
            || without.message.contains("client certificate"),
        "{}",
        without.message
    );
}

#[tokio::test]
async fn a_run_that_succeeds_on_a_retry_is_a_success_with_its_retries_counted() {
    let fake = FakeDivalto::start().await;
    let spec = spec(&format!(
        "servers:\n  fake: {{base_url: '{}'}}\nprobes:\n  - {{name: flaky, server: fake, code: '{SECRET_CODE}-flaky', retries: 2, retry_delay: 50ms, retry_on: [http_status]}}\n",
        fake.base_url()
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.attempts, 2);
    let scrape = scrape_after(&spec, &outcome);
    assert_eq!(
        scrape.value("webhook_probe_retries_total", &[("probe", "flaky")]),
        Some(1.0)
    );
    assert_eq!(
        scrape.value("webhook_probe_success", &[("probe", "flaky")]),
        Some(1.0)
    );
}

#[tokio::test]
async fn redirects_are_counted_and_headers_stay_on_their_origin() {
    let first = FakeDivalto::start().await;
    let second = FakeDivalto::start().await;
    // `first` answers 302 to the same path on `second` (another origin: another port).
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_address = redirector.local_addr().unwrap();
    let target = format!("{}/api/v1/WebHook/{SECRET_CODE}-ok", second.base_url());
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = redirector.accept().await else {
                return;
            };
            let target = target.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n"
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    let spec = spec(&format!(
        "probes:\n  - {{name: r, url: 'http://{redirect_address}/start', headers: {{Authorization: 'Bearer s3cr3t'}}}}\n"
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert_eq!(outcome.redirects, 1);
    assert!(
        second
            .last_headers()
            .unwrap()
            .get("authorization")
            .is_none(),
        "a secret header crossed origins"
    );
    assert_eq!(
        scrape_after(&spec, &outcome).value("webhook_probe_redirects", &[("probe", "r")]),
        Some(1.0)
    );
    drop(first);

    // On the same origin, headers follow.
    let same = FakeDivalto::start().await;
    let outcome = probe::run(&self::spec(&format!(
        "servers:\n  fake: {{base_url: '{}'}}\nprobes:\n  - {{name: r, server: fake, code: '{SECRET_CODE}-redirect', headers: {{Authorization: 'Bearer s3cr3t'}}}}\n",
        same.base_url()
    )))
    .await;
    assert!(outcome.success);
    assert_eq!(
        same.last_headers().unwrap().get("authorization").unwrap(),
        "Bearer s3cr3t"
    );
}

/// A forward proxy: CONNECT tunnels and absolute-form HTTP; logs each request head.
async fn proxy_server() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let log = sink.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let Ok(byte) = client.read_u8().await else {
                        return;
                    };
                    head.push(byte);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                log.lock().unwrap().push(head.clone());
                let request_line = head.lines().next().unwrap_or_default().to_owned();
                let mut parts = request_line.split_whitespace();
                let (method, target) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                if method == "CONNECT" {
                    let Ok(mut upstream) =
                        TcpStream::connect(target.replace("localhost", "127.0.0.1")).await
                    else {
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                } else {
                    let url = url::Url::parse(target).unwrap();
                    let Ok(mut upstream) =
                        TcpStream::connect((url.host_str().unwrap(), url.port().unwrap())).await
                    else {
                        return;
                    };
                    let path = &url[url::Position::BeforePath..];
                    let rest = head.split_once("\r\n").map(|(_, r)| r).unwrap_or_default();
                    let _ = upstream
                        .write_all(format!("{method} {path} HTTP/1.1\r\n{rest}").as_bytes())
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
            });
        }
    });
    (address, log)
}

#[tokio::test]
async fn an_https_probe_goes_through_a_connect_proxy_with_credentials() {
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2024, 1, 1), (2031, 1, 1), false);
    let target = https_server(&leaf, None).await;
    let (proxy, log) = proxy_server().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &certs.ca_pem).unwrap();
    let spec = spec(&format!(
        "defaults:\n  proxy_url: 'http://probe:pr0xy-pass@{proxy}'\nprobes:\n  - {{name: p, url: 'https://localhost:{}/', tls: {{ca_file: '{}'}}}}\n",
        target.port(),
        dir.path().join("ca.pem").display()
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with(&format!("CONNECT localhost:{} HTTP/1.1\r\n", target.port())),
        "{log:?}"
    );
    assert!(
        log[0].contains("Proxy-Authorization: Basic cHJvYmU6cHIweHktcGFzcw=="),
        "{log:?}"
    );
    assert!(outcome.phases.connect > Duration::ZERO && outcome.phases.tls > Duration::ZERO);
}

#[tokio::test]
async fn an_http_probe_through_a_proxy_uses_the_absolute_form_and_no_proxy_bypasses_it() {
    let fake = FakeDivalto::start().await;
    let (proxy, log) = proxy_server().await;
    let through = spec(&format!(
        "servers:\n  fake: {{base_url: '{}', proxy_url: 'http://{proxy}'}}\nprobes:\n  - {{name: p, server: fake, code: '{SECRET_CODE}-ok'}}\n",
        fake.base_url()
    ));
    let outcome = probe::run(&through).await;
    assert!(outcome.success, "{outcome:?}");
    let first = log.lock().unwrap()[0].clone();
    assert!(
        first.starts_with(&format!(
            "GET {}/api/v1/WebHook/{SECRET_CODE}-ok HTTP/1.1",
            fake.base_url()
        )),
        "{first}"
    );

    let bypass = spec(&format!(
        "servers:\n  fake: {{base_url: '{}', proxy_url: 'http://{proxy}', no_proxy: [127.0.0.1]}}\nprobes:\n  - {{name: p, server: fake, code: '{SECRET_CODE}-ok'}}\n",
        fake.base_url()
    ));
    assert!(probe::run(&bypass).await.success);
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "no_proxy host went through the proxy"
    );
}

#[tokio::test]
async fn an_https_probe_of_an_ipv6_address_sends_a_bracketed_connect_authority() {
    let (proxy, log) = proxy_server().await;
    let spec = spec(&format!(
        "probes:\n  - {{name: p, url: 'https://[::1]:8443/', proxy_url: 'http://{proxy}'}}\n"
    ));
    let _ = probe::run(&spec).await;
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        log[0].starts_with("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n"),
        "{log:?}"
    );
}

#[tokio::test]
async fn a_cidr_no_proxy_entry_bypasses_the_proxy() {
    let fake = FakeDivalto::start().await;
    let (proxy, log) = proxy_server().await;
    let spec = spec(&format!(
        "servers:\n  fake: {{base_url: '{}', proxy_url: 'http://{proxy}', no_proxy: ['10.0.0.0/8', '127.0.0.0/8']}}\nprobes:\n  - {{name: p, server: fake, code: '{SECRET_CODE}-ok'}}\n",
        fake.base_url()
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        log.lock().unwrap().is_empty(),
        "127.0.0.0/8 went through the proxy"
    );
}

#[tokio::test]
async fn user_and_password_in_a_url_are_sent_as_basic_auth_and_never_in_the_request_line() {
    let fake = FakeDivalto::start().await;
    let (proxy, log) = proxy_server().await;
    let password = "Pr0be-Passw0rd-123";
    let spec = spec(&format!(
        "probes:\n  - {{name: p, url: 'http://probe-user:{password}@{}/erp/api/v1/WebHook/{SECRET_CODE}-ok', proxy_url: 'http://{proxy}'}}\n",
        fake.address
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    let head = log.lock().unwrap()[0].clone();
    let request_line = head.lines().next().unwrap();
    assert_eq!(
        request_line,
        format!(
            "GET http://{}/erp/api/v1/WebHook/{SECRET_CODE}-ok HTTP/1.1",
            fake.address
        ),
        "userinfo in the request line to the proxy"
    );
    assert!(!head.contains(password), "{head}");
    // base64("probe-user:Pr0be-Passw0rd-123")
    assert_eq!(
        fake.last_headers().unwrap().get("authorization").unwrap(),
        "Basic cHJvYmUtdXNlcjpQcjBiZS1QYXNzdzByZC0xMjM="
    );
    let shown = spec.target.redacted();
    assert!(
        !shown.contains("Passw0rd") && !shown.contains('@'),
        "{shown}"
    );
    assert!(!format!("{spec:?}").contains("Passw0rd"));
}

#[tokio::test]
async fn basic_auth_from_a_url_is_dropped_on_a_cross_origin_redirect() {
    let second = FakeDivalto::start().await;
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_address = redirector.local_addr().unwrap();
    let target = format!("{}/api/v1/WebHook/{SECRET_CODE}-ok", second.base_url());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let sink = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = redirector.accept().await else {
                return;
            };
            let mut buffer = [0u8; 4096];
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            sink.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
            let answer =
                format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let spec = spec(&format!(
        "probes:\n  - {{name: r, url: 'http://probe-user:Pr0be-Passw0rd-123@{redirect_address}/start'}}\n"
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    assert!(
        heads.lock().unwrap()[0]
            .contains("authorization: Basic cHJvYmUtdXNlcjpQcjBiZS1QYXNzdzByZC0xMjM="),
        "{:?}",
        heads.lock().unwrap()
    );
    assert!(
        second
            .last_headers()
            .unwrap()
            .get("authorization")
            .is_none(),
        "the URL's credentials crossed origins"
    );
}

#[tokio::test]
async fn credentials_in_a_redirect_location_never_reach_a_request_line() {
    let fake = FakeDivalto::start().await;
    let (proxy, log) = proxy_server().await;
    let redirector = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirect_address = redirector.local_addr().unwrap();
    let target = format!(
        "http://someone:L0cation-Secret@{}/erp/api/v1/WebHook/{SECRET_CODE}-ok",
        fake.address
    );
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = redirector.accept().await else {
                return;
            };
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let answer =
                format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n");
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    let spec = spec(&format!(
        "probes:\n  - {{name: r, url: 'http://{redirect_address}/start', proxy_url: 'http://{proxy}'}}\n"
    ));
    let outcome = probe::run(&spec).await;
    assert!(outcome.success, "{outcome:?}");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[1].starts_with(&format!("GET http://{}/erp/api/v1/WebHook/", fake.address)),
        "{log:?}"
    );
    assert!(!log[1].contains("L0cation-Secret"), "{log:?}");
}

#[test]
fn proxy_from_environment_reads_https_proxy_and_the_trace_shows_the_certificate() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let certs = Certs::new();
    let leaf = certs.leaf(&["localhost"], (2024, 1, 1), (2031, 1, 1), false);
    let (target, (proxy, log)) =
        runtime.block_on(async { (https_server(&leaf, None).await, proxy_server().await) });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &certs.ca_pem).unwrap();
    let (_config_dir, path) = common::write_config(&format!(
        "probes:\n  - {{name: via-env, url: 'https://localhost:{}/', proxy_from_environment: true, tls: {{ca_file: '{}'}}}}\n",
        target.port(),
        dir.path().join("ca.pem").display()
    ));
    let (code, stdout, stderr) = common::run_binary(
        &[
            "probe",
            "via-env",
            &format!("--config.file={}", path.display()),
        ],
        &[
            ("HTTPS_PROXY", &format!("http://{proxy}")),
            ("NO_PROXY", ""),
        ],
        None,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(log.lock().unwrap().len(), 1);
    assert!(stdout.contains("  TLS version   TLSv1_3"), "{stdout}");
    assert!(
        stdout.contains("  certificate   subject \"localhost\", issuer \"Divalto Test CA\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("  chain expires 2031-01-01 00:00:00 UTC"),
        "{stdout}"
    );
    assert!(stdout.contains("  attempts      1 (0 retries)"), "{stdout}");
    println!("{stdout}");
}
