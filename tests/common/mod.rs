//! Test helpers: a fake Divalto server, raw misbehaving TCP servers, a TLS server with a
//! generated certificate, an HTTP(S) client (ureq), the real binary under a guard, and
//! `/metrics` parsed by a real exposition parser.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A webhook code long enough to be redacted as `MONW…3F53`.
pub const SECRET_CODE: &str = "MONWEBHOOKACADEMY123456789012363F53";

/// A fake Divalto REST server. The path after `/api/v1/WebHook/` picks the behaviour: the
/// code must end with one of the behaviour names below (so tests can also use long,
/// secret-looking codes such as `MONWEBHOOK...-ok`).
pub struct FakeDivalto {
    /// Where it listens.
    pub address: SocketAddr,
    calls: Arc<Calls>,
}

#[derive(Default)]
struct Calls {
    total: AtomicU64,
    by_code: Mutex<HashMap<String, u64>>,
    last_query: Mutex<Option<String>>,
    last_headers: Mutex<Option<HeaderMap>>,
    /// The headers of the last call for each code.
    headers_by_code: Mutex<HashMap<String, HeaderMap>>,
    last_body: Mutex<Option<Vec<u8>>>,
    /// When the last call arrived.
    last_call_at: Mutex<Option<std::time::SystemTime>>,
    /// By code, the `X-Replica` header value of each of its calls in arrival order (which
    /// exporter called it, when several share one config and each sets the header from its
    /// environment).
    replicas_by_code: Mutex<HashMap<String, Vec<String>>>,
    /// When each call arrived, with its code.
    arrivals: Mutex<Vec<(String, std::time::SystemTime)>>,
}

impl FakeDivalto {
    /// Starts the server on a free loopback port.
    pub async fn start() -> Self {
        let calls = Arc::new(Calls::default());
        let app = Router::new()
            .route("/erp/api/v1/WebHook/{code}", any(webhook))
            .route("/erp/api/v1/Webhook/{code}", any(webhook))
            .with_state(calls.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { address, calls }
    }

    /// The `base_url` of this server.
    pub fn base_url(&self) -> String {
        format!("http://{}/erp", self.address)
    }

    /// Calls received for codes ending in `behaviour`.
    pub fn calls(&self, behaviour: &str) -> u64 {
        self.calls
            .by_code
            .lock()
            .unwrap()
            .iter()
            .filter(|(code, _)| code.ends_with(behaviour))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every code called so far, with its number of calls.
    pub fn calls_by_code(&self) -> HashMap<String, u64> {
        self.calls.by_code.lock().unwrap().clone()
    }

    /// The `X-Replica` values the calls of `code` carried (`-` for a call without one).
    pub fn replicas_calling(&self, code: &str) -> BTreeSet<String> {
        self.replica_sequence(code).into_iter().collect()
    }

    /// The `X-Replica` value of each call of `code`, in the order the calls arrived.
    pub fn replica_sequence(&self, code: &str) -> Vec<String> {
        self.calls
            .replicas_by_code
            .lock()
            .unwrap()
            .get(code)
            .cloned()
            .unwrap_or_default()
    }

    /// The query string of the last call.
    pub fn last_query(&self) -> Option<String> {
        self.calls.last_query.lock().unwrap().clone()
    }

    /// When the last call arrived (wall clock).
    #[allow(dead_code)] // not every test binary uses it
    pub fn last_call_at(&self) -> Option<std::time::SystemTime> {
        *self.calls.last_call_at.lock().unwrap()
    }

    /// When each call for a code ending in `behaviour` arrived (wall clock), oldest first.
    pub fn arrivals(&self, behaviour: &str) -> Vec<std::time::SystemTime> {
        self.calls
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(code, _)| code.ends_with(behaviour))
            .map(|(_, at)| *at)
            .collect()
    }

    /// The headers of the last call.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.calls.last_headers.lock().unwrap().clone()
    }

    /// The headers of the last call for a code ending in `suffix`.
    #[allow(dead_code)] // not every test binary uses it
    pub fn last_headers_for(&self, suffix: &str) -> Option<HeaderMap> {
        let by_code = self.calls.headers_by_code.lock().unwrap();
        by_code
            .iter()
            .find(|(code, _)| code.ends_with(suffix))
            .map(|(_, headers)| headers.clone())
    }

    /// The request body of the last call.
    pub fn last_body(&self) -> Option<Vec<u8>> {
        self.calls.last_body.lock().unwrap().clone()
    }
}

fn json(status: StatusCode, body: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_owned(),
    )
        .into_response()
}

async fn webhook(
    State(calls): State<Arc<Calls>>,
    UrlPath(code): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    *calls.last_body.lock().unwrap() = Some(body.to_vec());
    let now = std::time::SystemTime::now();
    *calls.last_call_at.lock().unwrap() = Some(now);
    calls.arrivals.lock().unwrap().push((code.clone(), now));
    let call = calls.total.fetch_add(1, Ordering::SeqCst);
    *calls
        .by_code
        .lock()
        .unwrap()
        .entry(code.clone())
        .or_default() += 1;
    let replica = headers
        .get("x-replica")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    calls
        .replicas_by_code
        .lock()
        .unwrap()
        .entry(code.clone())
        .or_default()
        .push(replica);
    *calls.last_query.lock().unwrap() = query;
    calls
        .headers_by_code
        .lock()
        .unwrap()
        .insert(code.clone(), headers.clone());
    *calls.last_headers.lock().unwrap() = Some(headers);
    let behaviour = code.rsplit('-').next().unwrap_or_default();
    match behaviour {
        "ok" => json(
            StatusCode::OK,
            r#"{"code":"0","message":"Client C0000001 rafraîchi"}"#,
        ),
        "body400" => json(
            StatusCode::OK,
            r#"{"Code":"400","Message":"Dossier 998 verrouillé"}"#,
        ),
        "http400" => json(
            StatusCode::BAD_REQUEST,
            r#"{"code":"400","message":"Paramètre dos manquant"}"#,
        ),
        "http500" => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"code":"500","message":"Erreur interne"}"#,
        ),
        "plain0" => "0".into_response(),
        "plain400" => "400 Client inconnu".into_response(),
        "xss" => json(
            StatusCode::OK,
            r#"{"code":"400","message":"<img src=x onerror=alert(1)>"}"#,
        ),
        "big" => "0".repeat(2 * 1024 * 1024).into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            json(StatusCode::OK, r#"{"code":"0","message":"late"}"#)
        }
        "sleep2s" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            json(StatusCode::OK, r#"{"code":"0","message":"OK after 2 s"}"#)
        }
        "sleep300ms" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            json(StatusCode::OK, r#"{"code":"0","message":"OK"}"#)
        }
        "flaky" if call % 2 == 0 => json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"code":"503","message":"busy"}"#,
        ),
        "flaky" => json(StatusCode::OK, r#"{"code":"0","message":"OK"}"#),
        "redirect" => (
            StatusCode::FOUND,
            [("location", code.replace("-redirect", "-ok"))],
        )
            .into_response(),
        "r307" => (
            StatusCode::TEMPORARY_REDIRECT,
            [("location", code.replace("-r307", "-ok"))],
        )
            .into_response(),
        "r303" => (
            StatusCode::SEE_OTHER,
            [("location", code.replace("-r303", "-ok"))],
        )
            .into_response(),
        // `-to<port>`: 307 to the same code ending in `-ok` on 127.0.0.1:<port>.
        to if to.starts_with("to") && to[2..].parse::<u16>().is_ok() => (
            StatusCode::TEMPORARY_REDIRECT,
            [(
                "location",
                format!(
                    "http://127.0.0.1:{}/erp/api/v1/WebHook/{}-ok",
                    &to[2..],
                    code.rsplit_once('-').map_or("", |(head, _)| head)
                ),
            )],
        )
            .into_response(),
        "loop" => (StatusCode::FOUND, [("location", code.clone())]).into_response(),
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"code":"404","message":"Webhook inconnu"}"#,
        ),
    }
}

/// The fake Divalto server on its own runtime, so a test thread may block on HTTP calls to
/// the exporter while the fake answers it.
#[allow(dead_code)] // not every test binary uses it
pub struct Fake {
    _runtime: tokio::runtime::Runtime,
    /// The server.
    pub server: FakeDivalto,
}

/// Starts a [`Fake`].
#[allow(dead_code)] // not every test binary uses it
pub fn fake() -> Fake {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(FakeDivalto::start());
    Fake {
        _runtime: runtime,
        server,
    }
}

/// A loopback port with nothing listening (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A server that answers every connection with `answer` (raw bytes), then closes.
pub async fn raw_server(answer: &'static [u8]) -> SocketAddr {
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
                let _ = stream.write_all(answer).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    address
}

/// A server that accepts connections and never answers.
pub async fn silent_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            held.push(stream);
        }
    });
    address
}

/// An HTTPS server with a self-signed certificate for `localhost`, answering a Divalto
/// success; returns its address and the certificate (PEM) so a test may trust it.
pub async fn tls_server() -> (SocketAddr, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let address = https_server(
        &cert_pem,
        &certified.signing_key.serialize_pem(),
        None,
        OK_OVER_TLS,
    )
    .await;
    (address, cert_pem)
}

/// The body every test HTTPS server answers by default.
pub const OK_OVER_TLS: &str = r#"{"code":"0","message":"OK over TLS"}"#;

/// The certificates of a PEM text.
pub fn pem_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(Result::unwrap)
        .collect()
}

/// An HTTPS server presenting `cert_pem` (with `key_pem`), answering every request `200`
/// with `body`; with `client_ca_pem`, it requires a client certificate signed by that CA.
pub async fn https_server(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: Option<&str>,
    body: &'static str,
) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in pem_certs(ca) {
                roots.add(cert).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = builder.with_single_cert(pem_certs(cert_pem), key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buffer = [0u8; 4096];
                if tls.read(&mut buffer).await.unwrap_or(0) == 0 {
                    return;
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    address
}

/// Writes `text` as a config file in a fresh temporary directory.
pub fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("webhook-exporter.yaml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// Path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_webhook-exporter")
}

/// The real exporter process; killed when dropped. Its stderr (the logs) is collected.
pub struct Exporter {
    child: Child,
    /// Where it serves.
    pub address: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Exporter {
    /// Starts the binary with `args` (plus a loopback listen address) and waits until it
    /// logs the address it listens on.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .args(args)
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the exporter");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // logfmt `address=127.0.0.1:1234` or JSON `"address":"127.0.0.1:1234"`.
                let address = line
                    .split_whitespace()
                    .find_map(|field| field.strip_prefix("address="))
                    .or_else(|| {
                        line.split("\"address\":\"")
                            .nth(1)
                            .and_then(|rest| rest.split('"').next())
                    });
                if let Some(address) = address.and_then(|a| a.parse::<SocketAddr>().ok()) {
                    let _ = sender.send(address);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let address = receiver
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| {
                panic!(
                    "the exporter did not start; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                )
            });
        Self {
            child,
            address,
            logs,
        }
    }

    /// Everything it wrote so far (stdout and stderr).
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// GETs `path` and returns the status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_get(self.address, path)
    }

    /// Scrapes and parses `/metrics`.
    pub fn scrape(&self) -> Scrape {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Scrape::parse(&body)
    }

    /// Scrapes until `check` holds, or panics after `timeout` with the last scrape.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Scrape) -> bool,
    ) -> Scrape {
        let deadline = Instant::now() + timeout;
        loop {
            let scrape = self.scrape();
            if check(&scrape) {
                return scrape;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last scrape:\n{}\nlogs:\n{}",
                    scrape.text,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id, to send signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. "TERM") and waits for the exit code.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> Option<i32> {
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking GET: the status and body (the test fails when the server cannot be reached).
pub fn http_get(address: SocketAddr, path: &str) -> (u16, String) {
    let response = http_request(address, "GET", path, &[]);
    (response.status, response.body)
}

/// An HTTP answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, lower-cased names.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl HttpResponse {
    /// A header value by (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The tests' HTTP client (ureq): a new connection for every request (no pool), redirects
/// returned rather than followed, every status returned rather than turned into an error, no
/// proxy from the environment, and no header but the request's own and `Host` (no
/// `User-Agent`, `Accept` or `Accept-Encoding`: bodies arrive as the server sent them).
fn agent(tls: Option<ureq::tls::TlsConfig>) -> ureq::Agent {
    use ureq::config::AutoHeaderValue;
    let builder = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .user_agent(AutoHeaderValue::None)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .max_idle_connections(0)
        .allow_non_standard_methods(true)
        .timeout_connect(Some(Duration::from_secs(5)))
        .timeout_recv_response(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(30)));
    match tls {
        // Over TLS the URL names `localhost` (the certificates' name, sent as SNI); IPv4
        // only, so it is the 127.0.0.1 the servers under test listen on, never `::1`.
        Some(tls) => builder
            .tls_config(tls)
            .ip_family(ureq::config::IpFamily::Ipv4Only)
            .build()
            .into(),
        None => builder.build().into(),
    }
}

/// Sends a request without a body to `url` and reads the whole answer.
fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    let mut request = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Vec::<u8>::new()).map_err(|e| e.to_string())?;
    let mut response = agent.run(request).map_err(|e| e.to_string())?;
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok(HttpResponse {
        status: response.status().as_u16(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A blocking HTTP/1.1 request without a body; `Err` when the server cannot be reached or
/// does not answer HTTP.
pub fn try_http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, String> {
    send(
        &agent(None),
        method,
        &format!("http://{address}{path}"),
        headers,
    )
}

/// [`try_http_request`], failing the test when the server cannot be reached.
pub fn http_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    try_http_request(address, method, path, headers)
        .unwrap_or_else(|e| panic!("{method} http://{address}{path}: {e}"))
}

/// A blocking HTTPS request to `address` for the name `localhost`, trusting `ca_pem`,
/// optionally with a client certificate (`(cert_pem, key_pem)`); `Err` with the TLS or I/O
/// error.
pub fn https_request(
    address: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    ca_pem: &str,
    client: Option<(&str, &str)>,
) -> Result<HttpResponse, String> {
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};
    let certs = |pem: &str| -> Vec<Certificate<'static>> {
        pem_certs(pem)
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect()
    };
    let client = client.map(|(cert, key)| {
        ClientCert::new_with_certs(&certs(cert), PrivateKey::from_pem(key.as_bytes()).unwrap())
    });
    let tls = TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .root_certs(RootCerts::new_with_certs(&certs(ca_pem)))
        .client_cert(client)
        .build();
    assert_eq!(address.ip(), std::net::Ipv4Addr::LOCALHOST, "{address}");
    send(
        &agent(Some(tls)),
        method,
        &format!("https://localhost:{}{path}", address.port()),
        headers,
    )
}

/// A test CA with a server certificate for `localhost` and a client certificate, as PEM.
pub struct Pki {
    /// CA certificate.
    pub ca: String,
    /// Server certificate and key.
    pub server: (String, String),
    /// Client certificate and key, signed by the CA.
    pub client: (String, String),
}

impl Pki {
    /// Generates the three certificates.
    pub fn generate() -> Self {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "webhook-exporter test CA");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let leaf = |names: Vec<String>, usage: rcgen::ExtendedKeyUsagePurpose| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::new(names).unwrap();
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Self {
            server: leaf(
                vec!["localhost".into(), "127.0.0.1".into()],
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            ),
            client: leaf(
                vec!["prometheus".into()],
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ),
            ca: ca.pem(),
        }
    }
}

/// A parsed `/metrics` page.
pub struct Scrape {
    /// The raw text.
    pub text: String,
    exposition: MetricsExposition<PrometheusType, PrometheusValue>,
}

impl Scrape {
    /// Parses exposition text, failing the test if it is not valid.
    pub fn parse(text: &str) -> Self {
        let exposition = openmetrics_parser::prometheus::parse_prometheus(text)
            .unwrap_or_else(|e| panic!("invalid exposition format: {e:?}\n{text}"));
        Self {
            text: text.to_owned(),
            exposition,
        }
    }

    /// Samples of `family` whose labels include `labels`.
    fn samples<'a>(
        &'a self,
        family: &str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a PrometheusValue> + 'a {
        self.exposition
            .families
            .get(family)
            .into_iter()
            .flat_map(move |f| {
                f.iter_samples().filter_map(move |sample| {
                    let set = sample.get_labelset().ok()?;
                    labels
                        .iter()
                        .all(|(k, v)| set.get_label_value(k) == Some(*v))
                        .then_some(&sample.value)
                })
            })
    }

    /// The value of the one gauge or counter sample of `family` matching `labels`.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples(family, labels).find_map(|value| match value {
            PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
            PrometheusValue::Counter(c) => Some(c.value.as_f64()),
            _ => None,
        })
    }

    /// The observation count of the histogram `family` matching `labels`.
    pub fn histogram_count(&self, family: &str, labels: &[(&str, &str)]) -> Option<u64> {
        self.samples(family, labels).find_map(|value| match value {
            PrometheusValue::Histogram(h) => h.count,
            _ => None,
        })
    }

    /// The sum and the cumulative buckets `(le, count)` of the histogram `family` matching
    /// `labels`.
    pub fn histogram(
        &self,
        family: &str,
        labels: &[(&str, &str)],
    ) -> Option<(f64, Vec<(f64, f64)>)> {
        self.samples(family, labels).find_map(|value| match value {
            PrometheusValue::Histogram(h) => Some((
                h.sum.as_ref().map_or(0.0, |s| s.as_f64()),
                h.buckets
                    .iter()
                    .map(|b| (b.upper_bound, b.count.as_f64()))
                    .collect(),
            )),
            _ => None,
        })
    }

    /// Samples on the page, all families together (a histogram or summary counts once).
    pub fn sample_count(&self) -> usize {
        self.exposition
            .families
            .values()
            .map(|f| f.iter_samples().count())
            .sum()
    }

    /// Label sets of every sample of `family`.
    pub fn label_sets(&self, family: &str) -> Vec<HashMap<String, String>> {
        self.exposition
            .families
            .get(family)
            .map(|f| {
                f.iter_samples()
                    .filter_map(|s| s.get_labelset().ok())
                    .map(|set| set.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs a command and returns (exit code, stdout, stderr).
pub fn run_binary(
    args: &[&str],
    envs: &[(&str, &str)],
    dir: Option<&Path>,
) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}
