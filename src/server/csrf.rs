//! Refuses cross-site requests that change something (every method but `GET`, `HEAD` and
//! `OPTIONS`): any web page an operator opens could otherwise make the browser POST to
//! `/api/v1/probes/{name}/run` or `/-/reload`, with the basic-auth credentials it cached,
//! and so call the ERP.
//!
//! A request is cross-site when its `Origin` names another scheme-less authority than its
//! own `Host` (`Origin: null` included), or when `Sec-Fetch-Site` says `cross-site` or
//! `same-site` (another port or subdomain is another application). Requests with neither
//! header (curl, scripts, Prometheus) pass, as do `Sec-Fetch-Site: same-origin` (the status
//! page's own button) and `none` (typed by the user).

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The middleware: `403` with a JSON error for a cross-site request that changes state.
pub async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return next.run(request).await;
    }
    let own = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match cross_site(request.headers(), own) {
        None => next.run(request).await,
        Some(why) => (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({
                "error": format!("cross-site request refused: {why}; send it from the status page or without a browser (curl)")
            })),
        )
            .into_response(),
    }
}

/// Why the request is cross-site, or `None`.
fn cross_site(headers: &HeaderMap, own_authority: Option<&str>) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or_default();
        if !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none") {
            return Some(format!("Sec-Fetch-Site is {site:?}"));
        }
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or_default();
    let Some(own) = own_authority else {
        return Some("the request names no Host to compare its Origin with".to_owned());
    };
    if same_origin_as_host(origin, own) {
        None
    } else {
        Some(format!("Origin {origin:?} is not this exporter ({own})"))
    }
}

/// Whether the serialized origin (`https://host:port`; `null` never is) names the host and
/// port of the `Host` header; a `Host` without a port means the origin scheme's default.
fn same_origin_as_host(origin: &str, host: &str) -> bool {
    let Ok(url) = url::Url::parse(origin) else {
        return false;
    };
    let (Some(origin_host), Some(origin_port)) = (url.host_str(), url.port_or_known_default())
    else {
        return false;
    };
    if !matches!(url.scheme(), "http" | "https") {
        return false;
    }
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host_name, host_port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, port.parse::<u16>().ok()),
        _ => (host, Some(origin_port)),
    };
    host_port == Some(origin_port) && host_name.eq_ignore_ascii_case(origin_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn the_origin_is_compared_with_the_host_by_authority() {
        let host = Some("exporter:8916");
        assert!(cross_site(&headers(&[("origin", "http://exporter:8916")]), host).is_none());
        assert!(cross_site(&headers(&[("origin", "https://EXPORTER:8916")]), host).is_none());
        assert!(cross_site(&headers(&[("origin", "http://exporter:8917")]), host).is_some());
        assert!(cross_site(&headers(&[("origin", "http://exporter")]), host).is_some());
        assert!(cross_site(&headers(&[("origin", "null")]), host).is_some());
        assert!(
            cross_site(
                &headers(&[("origin", "http://[::1]:8916")]),
                Some("[::1]:8916")
            )
            .is_none()
        );
        assert!(
            cross_site(
                &headers(&[("origin", "https://exporter")]),
                Some("exporter:443")
            )
            .is_none()
        );
        assert!(cross_site(&headers(&[("origin", "https://exporter")]), None).is_some());
        assert!(cross_site(&headers(&[]), None).is_none());
    }
}
