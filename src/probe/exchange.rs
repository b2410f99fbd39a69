//! One request and its answer on one fresh connection: TLS on top of the transport, the
//! HTTP/1.1 exchange driven by hand, the body read up to its cap. Driving each step by hand
//! is what lets a run time every phase and name precisely the step that failed.

use bytes::Bytes;
use http::Method;
use http::header::{
    ACCEPT, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue,
    PROXY_AUTHORIZATION, USER_AGENT as USER_AGENT_HEADER,
};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use super::FailureReason;
use super::TlsDetails;
use super::run::{Failure, Step, Trace, USER_AGENT, fail};
use super::transport::{connect, host_name, resolve, route, tls_failure, tunnel};
use crate::config::{ProbeSpec, ProxyEndpoint};

/// What one request brought back.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    /// The `Location` header, for a redirect.
    pub(super) location: Option<String>,
    /// The `Content-Type` header, for the body's charset.
    pub(super) content_type: Option<String>,
    pub(super) body: Bytes,
}

/// One request on one fresh connection (through the probe's proxy, if any).
///
/// Through a proxy, `resolve` and `connect` are those of the proxy, and `connect` includes
/// the CONNECT tunnel for https targets; `tls` is then the handshake with the target.
pub(super) async fn exchange(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    same_origin: bool,
    send_body: bool,
    trace: &mut Trace,
) -> Result<Reply, Failure> {
    let host = url
        .host()
        .ok_or_else(|| fail(FailureReason::Other, "the URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let proxy = route(&spec.proxy, url);
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
        // `host` displays an IPv6 address in brackets, as an authority needs.
        tunnel(&mut tcp, &format!("{host}:{port}"), proxy).await?;
    }

    if https {
        trace.begin(Step::Tls);
        // The client was built when the config was loaded (a lookup); the URL host, which a
        // redirect may change, is parsed here when no name is configured.
        let client = crate::tls::client(&spec.tls).map_err(|failure| {
            fail(
                FailureReason::Tls,
                format!("tls.{}: {}", failure.field.key(), failure.message),
            )
        })?;
        let (name, server_name) = match (&spec.tls.server_name, &client.server_name) {
            (Some(name), Some(parsed)) => (name.as_str().to_owned(), parsed.clone()),
            _ => {
                let name = host_name(&host);
                let parsed = crate::tls::server_name(&name)
                    .map_err(|message| fail(FailureReason::Tls, message))?;
                (name, parsed)
            }
        };
        let (config, chain) = crate::tls::capturing_config(&client);
        let handshake = tokio_rustls::TlsConnector::from(config)
            .connect(server_name, tcp)
            .await;
        let certificate = super::tls::certificate_info(&crate::sync::lock(&chain));
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
        http_exchange(
            spec,
            url,
            method,
            (same_origin, send_body),
            None,
            stream,
            trace,
        )
        .await
    } else {
        http_exchange(
            spec,
            url,
            method,
            (same_origin, send_body),
            proxy,
            tcp,
            trace,
        )
        .await
    }
}

async fn http_exchange<S>(
    spec: &ProbeSpec,
    url: &Url,
    method: &http::Method,
    (same_origin, send_body): (bool, bool),
    proxy: Option<&ProxyEndpoint>,
    stream: S,
    trace: &mut Trace,
) -> Result<Reply, Failure>
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
    let request = build_request(spec, url, method, (same_origin, send_body), proxy)?;
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
    let content_type = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_body(response.into_body(), spec.max_body_bytes, &mut connection).await?;
    trace.end();
    Ok(Reply {
        status,
        location,
        content_type,
        body,
    })
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
    (same_origin, send_body): (bool, bool),
    proxy: Option<&ProxyEndpoint>,
) -> Result<http::Request<Full<Bytes>>, Failure> {
    let body = spec.body.as_ref().filter(|_| send_body);
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
    let mut request =
        http::Request::new(Full::new(body.map_or_else(Bytes::new, |b| b.bytes.clone())));
    *request.method_mut() = method.clone();
    *request.uri_mut() = target.parse().map_err(|e| {
        fail(
            FailureReason::Other,
            format!("cannot build the request: {e}"),
        )
    })?;
    // `insert`, never `append`: a configured header replaces ours, so a request never
    // carries two `Host` or `User-Agent` lines.
    let headers = request.headers_mut();
    let own = |text: &str| {
        HeaderValue::from_str(text).map_err(|e| {
            fail(
                FailureReason::Other,
                format!("cannot build the request: {e}"),
            )
        })
    };
    headers.insert(HOST, own(&host)?);
    headers.insert(USER_AGENT_HEADER, HeaderValue::from_static(USER_AGENT));
    // One connection per run: say so, and the server closes first (no TIME_WAIT here).
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    headers.insert(
        ACCEPT,
        HeaderValue::from_static("application/json, text/plain;q=0.9, */*;q=0.5"),
    );
    // Without a body, say so: servers behind IIS / HTTP.sys answer 411 otherwise.
    if let Some(body) = body {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if body.json {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    } else if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    }
    if let Some(credentials) = proxy.and_then(|p| p.authorization.as_ref()) {
        headers.insert(PROXY_AUTHORIZATION, credentials.clone());
    }
    // Credentials, configured or from the URL: never sent to another origin. The URL's
    // `user:password@` is the probe's own, so it wins over `basic_auth`/`authorization`
    // inherited from the server or the defaults (the probe setting both is a config error);
    // a configured `Authorization` header wins over both.
    if same_origin {
        if let Some(credentials) = &spec.credentials {
            headers.insert(AUTHORIZATION, credentials.clone());
        }
        if let Some(credentials) = &spec.target.basic_auth {
            headers.insert(AUTHORIZATION, credentials.clone());
        }
        for (name, value) in &spec.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
    Ok(request)
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
