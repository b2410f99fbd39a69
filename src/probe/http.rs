//! The request, driven step by step on one fresh connection: resolve, connect, TLS, HTTP/1.1
//! exchange, body. Driving each step by hand is what lets a run time every phase and name
//! precisely the step that failed.

use std::net::SocketAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use url::{Host, Url};

use super::verdict::{self, clean};
use super::{FailureReason, Outcome, Phases, TlsDetails};
use crate::config::{ProbeSpec, ProxyEndpoint};

/// Redirects followed in one attempt before the answer counts as invalid.
pub const MAX_REDIRECTS: u32 = 10;

/// `User-Agent` of every request, so ERP logs show who calls.
const USER_AGENT: &str = concat!("webhook-exporter/", env!("CARGO_PKG_VERSION"));

/// The step an attempt is in: a timeout message says which one ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Resolve,
    Connect,
    Tls,
    Processing,
    Transfer,
}

impl Step {
    fn waiting_for(self) -> &'static str {
        match self {
            Step::Resolve => "resolving the host name",
            Step::Connect => "connecting",
            Step::Tls => "in the TLS handshake",
            Step::Processing => "waiting for the answer",
            Step::Transfer => "reading the body",
        }
    }
}

/// What an attempt has done so far; kept outside the attempt's future so a timeout (which
/// drops that future) still knows the phases and the step.
#[derive(Debug, Default)]
struct Trace {
    phases: Phases,
    /// The step in progress and when it began.
    step: Option<(Step, Instant)>,
    status: Option<u16>,
    redirects: u32,
    tls: Option<TlsDetails>,
    http_version: Option<&'static str>,
}

impl Trace {
    /// Starts timing `step`.
    fn begin(&mut self, step: Step) {
        self.end();
        self.step = Some((step, Instant::now()));
    }

    /// Adds the time of the step in progress to its phase: called when a step completes,
    /// fails, or runs out of budget, so a failed run still shows where its time went.
    fn end(&mut self) {
        if let Some((step, started)) = self.step.take() {
            let phase = match step {
                Step::Resolve => &mut self.phases.resolve,
                Step::Connect => &mut self.phases.connect,
                Step::Tls => &mut self.phases.tls,
                Step::Processing => &mut self.phases.processing,
                Step::Transfer => &mut self.phases.transfer,
            };
            *phase += started.elapsed();
        }
    }
}

/// A failed attempt.
#[derive(Debug)]
struct Failure {
    reason: FailureReason,
    message: String,
}

fn fail(reason: FailureReason, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
    }
}

/// A complete answer.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// Runs a probe: attempts until one succeeds, the retries are used up, or the budget is spent.
pub(super) async fn run(spec: &ProbeSpec) -> Outcome {
    let started_at = SystemTime::now();
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut trace = Trace::default();
        let result = match tokio::time::timeout_at(deadline, attempt(spec, &mut trace)).await {
            Ok(result) => result,
            Err(_) => Err(fail(
                FailureReason::Timeout,
                format!(
                    "no complete answer within {} (timed out {})",
                    humantime::format_duration(spec.timeout),
                    trace
                        .step
                        .map_or(Step::Resolve, |(step, _)| step)
                        .waiting_for()
                ),
            )),
        };
        trace.end();
        let (reason, message, response_code) = match result {
            Ok(answer) => {
                let verdict = verdict::judge(
                    answer.status.as_u16(),
                    answer.status.canonical_reason().unwrap_or(""),
                    &answer.body,
                    &spec.expect,
                );
                (verdict.reason, verdict.message, verdict.response_code)
            }
            Err(failure) => (Some(failure.reason), failure.message, None),
        };
        let retry = reason.is_some()
            && attempts <= spec.retries
            // A retry never starts once the budget cannot cover its delay.
            && Instant::now() + spec.retry_delay < deadline;
        if retry {
            tokio::time::sleep(spec.retry_delay).await;
            continue;
        }
        return Outcome {
            success: reason.is_none(),
            reason,
            message: spec.redact(&message),
            http_status: trace.status,
            response_code,
            duration: start.elapsed(),
            phases: trace.phases,
            attempts,
            redirects: trace.redirects,
            tls: trace.tls,
            http_version: trace.http_version,
            started_at,
            finished_at: SystemTime::now(),
        };
    }
}

/// One attempt: the request, then each redirect by hand (phases summed).
async fn attempt(spec: &ProbeSpec, trace: &mut Trace) -> Result<Answer, Failure> {
    let mut url = spec.target.url.clone();
    let mut method = spec.method.clone();
    let mut same_origin = true;
    loop {
        let (status, location, body) = exchange(spec, &url, &method, same_origin, trace).await?;
        trace.status = Some(status.as_u16());
        let redirect = spec.follow_redirects && status.is_redirection() && location.is_some();
        if !redirect {
            return Ok(Answer { status, body });
        }
        if trace.redirects >= MAX_REDIRECTS {
            return Err(fail(
                FailureReason::InvalidResponse,
                format!("more than {MAX_REDIRECTS} redirects"),
            ));
        }
        let location = location.unwrap_or_default();
        let next = url.join(&location).map_err(|e| {
            fail(
                FailureReason::InvalidResponse,
                format!(
                    "redirect to an invalid location \"{}\": {e}",
                    clean(&location)
                ),
            )
        })?;
        if !matches!(next.scheme(), "http" | "https") {
            return Err(fail(
                FailureReason::InvalidResponse,
                format!("redirect to a non-HTTP location {}", next.scheme()),
            ));
        }
        // Like browsers: 303 (and 301/302 after a POST) continue with GET; 307/308 keep the method.
        if status == StatusCode::SEE_OTHER
            || (matches!(status.as_u16(), 301 | 302) && method == http::Method::POST)
        {
            method = http::Method::GET;
        }
        same_origin &= next.origin() == spec.target.url.origin();
        trace.redirects += 1;
        url = next;
    }
}

/// One request on one fresh connection (through the probe's proxy, if any). Returns the
/// status, the `Location` header and the body.
///
/// Through a proxy, `resolve` and `connect` are those of the proxy, and `connect` includes
/// the CONNECT tunnel for https targets; `tls` is then the handshake with the target.
async fn exchange(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
    trace: &mut Trace,
) -> Result<(StatusCode, Option<String>, Bytes), Failure> {
    let host = url
        .host()
        .ok_or_else(|| fail(FailureReason::Other, "the URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let proxy = spec.proxy.route(url);
    let https = url.scheme() == "https";

    trace.begin(Step::Resolve);
    let addresses = match proxy {
        None => resolve(&host, port).await?,
        Some(proxy) => {
            let proxy_host = proxy
                .url
                .host()
                .ok_or_else(|| fail(FailureReason::Other, "the proxy URL has no host"))?;
            resolve(&proxy_host, proxy.url.port_or_known_default().unwrap_or(80)).await?
        }
    };

    trace.begin(Step::Connect);
    let mut tcp = connect(&addresses).await?;
    if let (Some(proxy), true) = (proxy, https) {
        tunnel(&mut tcp, &format!("{}:{port}", host_name(&host)), proxy).await?;
    }

    if https {
        trace.begin(Step::Tls);
        let name = spec
            .tls
            .settings
            .server_name
            .clone()
            .unwrap_or_else(|| host_name(&host));
        let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|e| {
            fail(
                FailureReason::Tls,
                format!("invalid TLS server name \"{name}\": {e}"),
            )
        })?;
        let (config, chain) = super::tls::capturing_config(&spec.tls);
        let handshake = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await;
        let certificate = super::tls::certificate_info(
            &chain
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let stream = match handshake {
            Ok(stream) => stream,
            Err(error) => {
                let failure = tls_failure(&error, &name, certificate.as_ref());
                trace.tls = Some(TlsDetails {
                    version: None,
                    certificate,
                });
                return Err(failure);
            }
        };
        let version = stream
            .get_ref()
            .1
            .protocol_version()
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        trace.tls = Some(TlsDetails {
            version,
            certificate,
        });
        http_exchange(spec, url, method, same_origin, None, stream, trace).await
    } else {
        http_exchange(spec, url, method, same_origin, proxy, tcp, trace).await
    }
}

/// Longest CONNECT answer head read from a proxy.
const MAX_PROXY_HEAD: usize = 16 * 1024;

/// Opens a CONNECT tunnel to `authority` through the proxy on `stream`.
async fn tunnel(
    stream: &mut TcpStream,
    authority: &str,
    proxy: &ProxyEndpoint,
) -> Result<(), Failure> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: {USER_AGENT}\r\n"
    );
    if let Some(credentials) = &proxy.authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(credentials.to_str().unwrap_or_default());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let broken = |e: std::io::Error| {
        fail(
            FailureReason::Connect,
            format!("proxy {} broke the CONNECT exchange: {e}", proxy.address()),
        )
    };
    stream.write_all(request.as_bytes()).await.map_err(broken)?;
    // Read the answer head byte by byte: nothing after it may be consumed (it is TLS).
    let mut head = Vec::with_capacity(256);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_PROXY_HEAD {
            return Err(fail(
                FailureReason::Connect,
                format!("proxy {} sent an oversized CONNECT answer", proxy.address()),
            ));
        }
        let byte = stream.read_u8().await.map_err(broken)?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status_line = head.lines().next().unwrap_or_default().trim().to_owned();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(fail(
            FailureReason::Connect,
            format!(
                "proxy {} refused to CONNECT to {authority}: {}",
                proxy.address(),
                clean(&status_line)
            ),
        )),
    }
}

async fn resolve(host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    // IP literals need no lookup (and no trip to the blocking pool).
    match host {
        Host::Ipv4(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
        Host::Ipv6(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
        Host::Domain(name) => {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((*name, port))
                .await
                .map_err(|e| fail(FailureReason::Dns, format!("cannot resolve {name}: {e}")))?
                .collect();
            if found.is_empty() {
                return Err(fail(
                    FailureReason::Dns,
                    format!("{name} resolves to no address"),
                ));
            }
            Ok(found)
        }
    }
}

async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, Failure> {
    let mut errors = Vec::new();
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => {
                // Small request, wait for nothing.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => errors.push(format!("{address}: {e}")),
        }
    }
    Err(fail(
        FailureReason::Connect,
        format!("cannot connect to {}", errors.join("; ")),
    ))
}

fn host_name(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => (*name).to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

fn tls_failure(
    error: &std::io::Error,
    host: &str,
    certificate: Option<&super::tls::CertificateInfo>,
) -> Failure {
    let message = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => super::tls::describe_error(tls, host, certificate),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!(
                "{host} closed the connection during the TLS handshake (not a TLS server, or it refused our client certificate)"
            )
        }
        None => format!("TLS handshake with {host} failed: {error}"),
    };
    fail(FailureReason::Tls, message)
}

async fn http_exchange<S>(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
    proxy: Option<&ProxyEndpoint>,
    stream: S,
    trace: &mut Trace,
) -> Result<(StatusCode, Option<String>, Bytes), Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    trace.begin(Step::Processing);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| response_failure(&e))?;
    // The connection is driven here, alongside the request, rather than in a task of its
    // own: one task per run, and it ends (closing the socket) when the exchange does.
    let mut connection = Driver {
        connection: std::pin::pin!(connection),
        done: false,
    };
    let request = build_request(spec, url, method, same_origin, proxy)?;
    let response = connection
        .alongside(sender.send_request(request))
        .await
        .map_err(|e| response_failure(&e))?;
    trace.status = Some(response.status().as_u16());
    trace.http_version = Some(match response.version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    });

    trace.begin(Step::Transfer);
    let status = response.status();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(response.into_body(), spec.max_body_bytes, &mut connection).await?;
    trace.end();
    Ok((status, location, body))
}

/// A hyper connection polled alongside whatever waits on it.
struct Driver<'a, C> {
    connection: std::pin::Pin<&'a mut C>,
    done: bool,
}

impl<C> Driver<'_, C>
where
    C: std::future::Future<Output = hyper::Result<()>>,
{
    /// Awaits `work` while keeping the connection going. A connection error ends the wait;
    /// a connection that simply finishes leaves `work` to resolve on its own.
    async fn alongside<T>(
        &mut self,
        work: impl std::future::Future<Output = hyper::Result<T>>,
    ) -> hyper::Result<T> {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                biased;
                result = &mut work => return result,
                result = self.connection.as_mut(), if !self.done => {
                    self.done = true;
                    result?;
                }
            }
        }
    }
}

/// The request: origin-form target (`/path?query`), or absolute-form through a plain-HTTP
/// proxy, which also gets its credentials.
fn build_request(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
    proxy: Option<&ProxyEndpoint>,
) -> Result<http::Request<Empty<Bytes>>, Failure> {
    let mut target = match proxy {
        Some(_) => url[..url::Position::AfterPath].to_owned(),
        None => url.path().to_owned(),
    };
    if let Some(query) = url.query() {
        target.push('?');
        target.push_str(query);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(target)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, USER_AGENT)
        // One connection per run: say so, and the server closes first (no TIME_WAIT here).
        .header(http::header::CONNECTION, "close")
        .header(
            http::header::ACCEPT,
            "application/json, text/plain;q=0.9, */*;q=0.5",
        );
    if let Some(credentials) = proxy.and_then(|p| p.authorization.as_ref()) {
        builder = builder.header(http::header::PROXY_AUTHORIZATION, credentials.clone());
    }
    for (name, value) in &spec.headers {
        // Configured headers often carry credentials: never send them to another origin.
        if same_origin {
            builder = builder.header(name, value.clone());
        }
    }
    builder.body(Empty::new()).map_err(|e| {
        fail(
            FailureReason::Other,
            format!("cannot build the request: {e}"),
        )
    })
}

/// Reads at most `limit` bytes; one byte more is `body_too_large`.
async fn read_body<C>(
    mut body: hyper::body::Incoming,
    limit: u64,
    connection: &mut Driver<'_, C>,
) -> Result<Bytes, Failure>
where
    C: std::future::Future<Output = hyper::Result<()>>,
{
    let mut collected = Vec::new();
    while let Some(frame) = connection
        .alongside(async { body.frame().await.transpose() })
        .await
        .transpose()
    {
        let frame = frame.map_err(|e| response_failure(&e))?;
        if let Ok(data) = frame.into_data() {
            if (collected.len() + data.len()) as u64 > limit {
                return Err(fail(
                    FailureReason::BodyTooLarge,
                    format!("the body is larger than max_body_bytes ({limit} bytes)"),
                ));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}

/// Classifies an error of the HTTP exchange: anything the server did wrong after the
/// connection was up (garbage, a close or reset before a complete answer) is
/// `invalid_response`.
///
/// A TLS alert arriving after the handshake (TLS 1.3 servers reject a missing or unknown
/// client certificate only then) is still `tls`.
fn response_failure(error: &hyper::Error) -> Failure {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(tls) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return fail(
                FailureReason::Tls,
                super::tls::describe_error(tls, "the server", None),
            );
        }
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    let message = if error.is_parse() {
        format!("the server's answer is not valid HTTP ({detail})")
    } else if error.is_incomplete_message() || error.is_closed() || error.is_canceled() {
        format!("the connection closed before a complete answer ({detail})")
    } else {
        format!("the HTTP exchange failed ({detail})")
    };
    fail(FailureReason::InvalidResponse, message)
}
