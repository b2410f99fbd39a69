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
use super::{FailureReason, Outcome, Phases};
use crate::config::ProbeSpec;

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

/// One request on one fresh connection. Returns the status, the `Location` header and the body.
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

    trace.begin(Step::Resolve);
    let addresses = resolve(&host, port).await?;

    trace.begin(Step::Connect);
    let tcp = connect(&addresses).await?;

    if url.scheme() == "https" {
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
        let connector = tokio_rustls::TlsConnector::from(spec.tls.config.clone());
        let stream = connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| tls_failure(&e, &name))?;
        http_exchange(spec, url, method, same_origin, stream, trace).await
    } else {
        http_exchange(spec, url, method, same_origin, tcp, trace).await
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

fn tls_failure(error: &std::io::Error, host: &str) -> Failure {
    let message = match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => super::tls::describe_error(tls, host),
        None if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!(
                "{host} closed the connection during the TLS handshake (not a TLS server, or it refused our client certificate)"
            )
        }
        None => format!("TLS handshake with {host} failed: {error}"),
    };
    fail(FailureReason::Tls, message)
}

/// Aborts the task driving a connection when the exchange ends or is dropped by a timeout.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_exchange<S>(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
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
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let request = build_request(spec, url, method, same_origin)?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| response_failure(&e))?;
    trace.status = Some(response.status().as_u16());

    trace.begin(Step::Transfer);
    let status = response.status();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(response.into_body(), spec.max_body_bytes).await?;
    trace.end();
    Ok((status, location, body))
}

fn build_request(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
) -> Result<http::Request<Empty<Bytes>>, Failure> {
    let mut target = url.path().to_owned();
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
        .header(
            http::header::ACCEPT,
            "application/json, text/plain;q=0.9, */*;q=0.5",
        );
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
async fn read_body(mut body: hyper::body::Incoming, limit: u64) -> Result<Bytes, Failure> {
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
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
fn response_failure(error: &hyper::Error) -> Failure {
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
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
