//! The connection under a request: resolve the name, connect, and open a CONNECT tunnel
//! through a proxy.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use url::Host;

use super::FailureReason;
use super::run::{Failure, USER_AGENT, fail};
use super::verdict::clean;
use crate::config::ProxyEndpoint;

/// Longest CONNECT answer head read from a proxy.
const MAX_PROXY_HEAD: usize = 16 * 1024;

/// Opens a CONNECT tunnel to `authority` through the proxy on `stream`.
pub(super) async fn tunnel(
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

pub(super) async fn resolve(host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, Failure> {
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

pub(super) async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, Failure> {
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

pub(super) fn host_name(host: &Host<&str>) -> String {
    match host {
        Host::Domain(name) => (*name).to_owned(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    }
}

pub(super) fn tls_failure(
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
