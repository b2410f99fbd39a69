//! The connection under a request: resolve the name, connect, and open a CONNECT tunnel
//! through a proxy.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::{Host, Url};

use super::FailureReason;
use super::run::{Failure, USER_AGENT, fail};
use super::verdict::clean;
use crate::config::{ProxyConfig, ProxyEndpoint};

/// The proxy of `proxy` to use for `url`, if any. Whether `url`'s host bypasses it is
/// hyper-util's `NO_PROXY` matcher's call (names and domain suffixes, `*`, IPv4 and IPv6
/// addresses and CIDR ranges); a `:port` written in an entry is ignored, as it always was.
pub(super) fn route<'a>(proxy: &'a ProxyConfig, url: &Url) -> Option<&'a ProxyEndpoint> {
    let endpoint = if url.scheme() == "https" {
        proxy.https.as_ref()
    } else {
        proxy.http.as_ref()
    }?;
    if proxy.no_proxy.is_empty() {
        return Some(endpoint);
    }
    let no_proxy: Vec<&str> = proxy.no_proxy.iter().map(|e| without_port(e)).collect();
    // The matcher only decides the bypass: the proxy it is given is a placeholder that it
    // always parses, and `endpoint` (address and credentials) is what is used.
    let matcher = hyper_util::client::proxy::matcher::Matcher::builder()
        .all("http://proxy.invalid:1")
        .no(no_proxy.join(","))
        .build();
    // Only the scheme and host matter to the matcher: the rest of the URL (a webhook code)
    // is not handed over.
    let destination: http::Uri = format!("{}://{}/", url.scheme(), url.host_str()?)
        .parse()
        .ok()?;
    matcher.intercept(&destination).map(|_| endpoint)
}

/// A `NO_PROXY` entry without the `:port` people sometimes write (`erp.example.com:443`,
/// `[::1]:443`); addresses and CIDR ranges stay as they are.
fn without_port(entry: &str) -> &str {
    let entry = entry.trim();
    if entry.parse::<std::net::IpAddr>().is_ok() || entry.contains('/') {
        return entry;
    }
    match entry.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.starts_with('[')) =>
        {
            host.trim_start_matches('[').trim_end_matches(']')
        }
        _ => entry,
    }
}

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

/// Name lookups in flight at once. `getaddrinfo` cannot be cancelled: a lookup that hangs
/// keeps its blocking thread until the system resolver gives up, so the number of such
/// threads is capped here rather than growing with every run that meets a dead resolver.
const MAX_PENDING_LOOKUPS: usize = 16;

/// Longest wait for a name lookup (glibc's own per-try timeout): a resolver that does not
/// answer is a `dns` failure, and a run with a longer budget keeps time for a retry.
pub(super) const RESOLVE_LIMIT: Duration = Duration::from_secs(5);

/// RFC 8305's "Connection Attempt Delay": the next address is tried when the one before
/// has neither connected nor failed within this time.
pub(super) const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

static LOOKUPS: Semaphore = Semaphore::const_new(MAX_PENDING_LOOKUPS);

/// The addresses of `host` (no lookup for an IP literal), through the system resolver,
/// within [`RESOLVE_LIMIT`].
pub(super) async fn resolve(host: &Host<&str>, port: u16) -> Result<Vec<SocketAddr>, Failure> {
    match host {
        Host::Ipv4(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
        Host::Ipv6(ip) => Ok(vec![SocketAddr::from((*ip, port))]),
        Host::Domain(name) => {
            resolve_name(name, port, RESOLVE_LIMIT, &LOOKUPS, |name, port| {
                std::net::ToSocketAddrs::to_socket_addrs(&(name, port)).map(Iterator::collect)
            })
            .await
        }
    }
}

/// Looks `name` up with `lookup` on the blocking pool, holding one of `lookups`' permits
/// until `lookup` returns (even after this run gave up on it), and waiting at most `limit`
/// for a permit and the answer together.
async fn resolve_name<L>(
    name: &str,
    port: u16,
    limit: Duration,
    lookups: &'static Semaphore,
    lookup: L,
) -> Result<Vec<SocketAddr>, Failure>
where
    L: FnOnce(&str, u16) -> std::io::Result<Vec<SocketAddr>> + Send + 'static,
{
    let deadline = Instant::now() + limit;
    let within = humantime::format_duration(limit);
    let Ok(Ok(permit)) = tokio::time::timeout_at(deadline, lookups.acquire()).await else {
        return Err(fail(
            FailureReason::Dns,
            format!(
                "cannot resolve {name}: the resolver has not answered the lookups already pending (at most {MAX_PENDING_LOOKUPS}); none started within {within}"
            ),
        ));
    };
    let owned = name.to_owned();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        lookup(&owned, port)
    });
    let found = match tokio::time::timeout_at(deadline, task).await {
        Err(_) => {
            return Err(fail(
                FailureReason::Dns,
                format!("cannot resolve {name}: no answer from the resolver within {within}"),
            ));
        }
        Ok(Err(e)) => {
            return Err(fail(
                FailureReason::Dns,
                format!("cannot resolve {name}: the lookup failed ({e})"),
            ));
        }
        Ok(Ok(Err(e))) => {
            return Err(fail(
                FailureReason::Dns,
                format!("cannot resolve {name}: {e}"),
            ));
        }
        Ok(Ok(Ok(found))) => found,
    };
    if found.is_empty() {
        return Err(fail(
            FailureReason::Dns,
            format!("{name} resolves to no address"),
        ));
    }
    Ok(found)
}

/// Connects to the first of `addresses` that answers, Happy Eyeballs style (RFC 8305): the
/// families alternate, and the next address is tried as soon as the one before fails or
/// after [`CONNECTION_ATTEMPT_DELAY`] without an answer, while earlier attempts go on. A
/// blackholed address (an IPv6 route that drops everything) so costs 250 ms, not the budget.
///
/// One address (an IP literal, most names) has nothing to race: it is connected in the
/// run's own task, with no task spawned, no set to join and no timer, which is most of what
/// a run costs outside the kernel besides HTTP itself.
pub(super) async fn connect(addresses: &[SocketAddr]) -> Result<TcpStream, Failure> {
    match addresses {
        [address] => match TcpStream::connect(*address).await {
            Ok(stream) => Ok(ready(stream)),
            Err(e) => Err(fail(
                FailureReason::Connect,
                format!("cannot connect to {address}: {e}"),
            )),
        },
        _ => connect_racing(addresses, CONNECTION_ATTEMPT_DELAY).await,
    }
}

/// A connected stream, set up for a small request: sent at once, waiting for nothing.
fn ready(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    stream
}

async fn connect_racing(
    addresses: &[SocketAddr],
    attempt_delay: Duration,
) -> Result<TcpStream, Failure> {
    let mut waiting = interleave_families(addresses).into_iter();
    let mut racing = tokio::task::JoinSet::new();
    let mut errors = Vec::new();
    loop {
        if let Some(address) = waiting.next() {
            racing.spawn(async move { (address, TcpStream::connect(address).await) });
        }
        if racing.is_empty() {
            break;
        }
        let finished = if waiting.len() > 0 {
            match tokio::time::timeout(attempt_delay, racing.join_next()).await {
                Ok(finished) => finished,
                // No answer yet: start the next address beside it.
                Err(_) => continue,
            }
        } else {
            racing.join_next().await
        };
        match finished {
            // Dropping the set aborts the attempts still going.
            Some(Ok((_, Ok(stream)))) => return Ok(ready(stream)),
            Some(Ok((address, Err(e)))) => errors.push(format!("{address}: {e}")),
            Some(Err(e)) => errors.push(format!("a connection attempt failed ({e})")),
            None => {}
        }
    }
    Err(fail(
        FailureReason::Connect,
        format!("cannot connect to {}", errors.join("; ")),
    ))
}

/// `addresses` with the families alternating, starting with the family of the first one
/// (RFC 8305 section 4); the order within a family is kept.
fn interleave_families(addresses: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_is_v6 = addresses.first().is_some_and(SocketAddr::is_ipv6);
    let (mut first, mut second): (Vec<SocketAddr>, Vec<SocketAddr>) =
        addresses.iter().partition(|a| a.is_ipv6() == first_is_v6);
    let mut ordered = Vec::with_capacity(addresses.len());
    first.reverse();
    second.reverse();
    while !first.is_empty() || !second.is_empty() {
        ordered.extend(first.pop());
        ordered.extend(second.pop());
    }
    ordered
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};

    use super::*;

    /// A loopback address that never completes a TCP handshake: a listener whose accept
    /// queue (backlog 0) is already full drops every further SYN, as a blackholed route
    /// does. Returns the address and what must stay alive for it.
    fn blackholed() -> (SocketAddr, tokio::net::TcpListener, std::net::TcpStream) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(0).unwrap();
        let address = listener.local_addr().unwrap();
        let filler = std::net::TcpStream::connect(address).unwrap();
        (address, listener, filler)
    }

    #[tokio::test]
    async fn a_blackholed_first_address_costs_the_attempt_delay_not_the_budget() {
        let (dead, _listener, _filler) = blackholed();
        let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive_address = alive.local_addr().unwrap();
        let started = Instant::now();
        let stream = tokio::time::timeout(Duration::from_secs(3), connect(&[dead, alive_address]))
            .await
            .expect("the blackholed address ate the budget")
            .unwrap();
        let elapsed = started.elapsed();
        assert_eq!(stream.peer_addr().unwrap(), alive_address);
        assert!(
            elapsed >= CONNECTION_ATTEMPT_DELAY && elapsed < Duration::from_secs(2),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_refused_address_moves_on_at_once_and_all_failing_is_connect() {
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_address = refused.local_addr().unwrap();
        drop(refused);
        let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive_address = alive.local_addr().unwrap();
        let started = Instant::now();
        let stream = connect(&[refused_address, alive_address]).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), alive_address);
        assert!(
            started.elapsed() < CONNECTION_ATTEMPT_DELAY,
            "{:?}",
            started.elapsed()
        );
        let failure = connect(&[refused_address]).await.unwrap_err();
        assert_eq!(failure.reason, FailureReason::Connect);
        assert!(
            failure.message.contains("Connection refused"),
            "{}",
            failure.message
        );
    }

    /// One address is connected without the race (no task): the same stream settings and
    /// the same failure as through the race.
    #[tokio::test]
    async fn one_address_connects_like_the_race_does() {
        let alive = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let alive_address = alive.local_addr().unwrap();
        let stream = connect(&[alive_address]).await.unwrap();
        assert_eq!(stream.peer_addr().unwrap(), alive_address);
        assert!(
            stream.nodelay().unwrap(),
            "a small request waits for nothing"
        );
        let refused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_address = refused.local_addr().unwrap();
        drop(refused);
        let alone = connect(&[refused_address]).await.unwrap_err();
        let raced = connect_racing(&[refused_address], CONNECTION_ATTEMPT_DELAY)
            .await
            .unwrap_err();
        assert_eq!(alone.reason, raced.reason);
        assert_eq!(alone.message, raced.message);
        assert_eq!(
            alone.message,
            format!("cannot connect to {refused_address}: Connection refused (os error 111)")
        );
    }

    #[test]
    fn no_proxy_matches_hosts_domain_suffixes_addresses_and_ranges() {
        let proxy = ProxyEndpoint::parse("proxy:3128", "HTTPS_PROXY").unwrap();
        let config = ProxyConfig {
            http: None,
            https: Some(proxy),
            no_proxy: vec![
                ".internal".into(),
                "erp.example.com:443".into(),
                "10.0.0.0/8".into(),
                "[::1]:443".into(),
                "fd00::/8".into(),
            ],
        };
        let routed = |u: &str| route(&config, &Url::parse(u).unwrap()).is_some();
        assert!(routed("https://api.divaltocloud.com/x"));
        assert!(!routed("https://erp.example.com/x"));
        assert!(!routed("https://ERP.example.com/x"));
        assert!(routed("https://notexample.com/x"));
        assert!(!routed("https://db.internal/x"));
        assert!(!routed("https://10.1.2.3/x"));
        assert!(routed("https://11.1.2.3/x"));
        assert!(!routed("https://[::1]/x"));
        assert!(!routed("https://[fd12::1]/x"));
        assert!(routed("https://[2001:db8::1]/x"));
        assert!(
            !routed("http://api.divaltocloud.com/x"),
            "no http proxy set"
        );
    }

    #[test]
    fn families_alternate_from_the_first_one() {
        let a = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert_eq!(
            interleave_families(&[a("[::1]:1"), a("[::2]:1"), a("10.0.0.1:1"), a("10.0.0.2:1")]),
            [a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("10.0.0.2:1")]
        );
        assert_eq!(
            interleave_families(&[a("10.0.0.1:1"), a("[::1]:1")]),
            [a("10.0.0.1:1"), a("[::1]:1")]
        );
    }

    /// A gate the fake lookups wait on until the test opens it.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        changed: Condvar,
    }

    impl Gate {
        fn wait(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
        }
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.changed.notify_all();
        }
    }

    #[tokio::test]
    async fn a_hanging_lookup_is_dns_and_hung_lookups_are_capped() {
        static TWO: Semaphore = Semaphore::const_new(2);
        let gate = Arc::new(Gate::default());
        let started = Arc::new(AtomicUsize::new(0));
        let mut runs = Vec::new();
        for _ in 0..5 {
            let (gate, started) = (gate.clone(), started.clone());
            runs.push(tokio::spawn(async move {
                resolve_name(
                    "erp.example",
                    443,
                    Duration::from_millis(300),
                    &TWO,
                    move |_, _| {
                        started.fetch_add(1, Ordering::SeqCst);
                        gate.wait();
                        Ok(Vec::new())
                    },
                )
                .await
            }));
        }
        let mut messages = Vec::new();
        for run in runs {
            let failure = run.await.unwrap().unwrap_err();
            assert_eq!(failure.reason, FailureReason::Dns, "{}", failure.message);
            messages.push(failure.message);
        }
        // Only two lookups ever reached the resolver; the other three gave up waiting.
        assert_eq!(started.load(Ordering::SeqCst), 2);
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.contains("no answer from the resolver within 300ms"))
                .count(),
            2,
            "{messages:?}"
        );
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.contains("lookups already pending"))
                .count(),
            3,
            "{messages:?}"
        );
        gate.open();
    }
}
