//! HTTP proxy settings of a probe: an explicit `proxy_url`, or the standard environment
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`), and the hosts that bypass it.

use std::fmt;

use base64::Engine;
use http::HeaderValue;
use url::Url;

/// One proxy: where to connect and how to authenticate.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// `http://proxy:3128` (credentials removed).
    pub url: Url,
    /// `Proxy-Authorization` value, from the URL's user and password.
    pub authorization: Option<HeaderValue>,
}

impl ProxyEndpoint {
    /// Parses a proxy URL; `what` names its origin in messages (`proxy_url`, `HTTPS_PROXY`).
    ///
    /// # Errors
    /// Anything but an `http://` URL with a host.
    pub fn parse(text: &str, what: &str) -> Result<Self, String> {
        // Environment proxies are often written without a scheme (`proxy:3128`).
        let full = if text.contains("://") {
            text.to_owned()
        } else {
            format!("http://{text}")
        };
        let mut url = Url::parse(&full).map_err(|e| {
            format!("{what}: invalid proxy URL ({e}); write e.g. http://proxy.example:3128")
        })?;
        if url.scheme() != "http" || !url.has_host() {
            return Err(format!(
                "{what}: only http:// proxies are supported (https targets go through a CONNECT tunnel)"
            ));
        }
        let authorization = if url.username().is_empty() {
            None
        } else {
            let decode = super::secret::percent_decoded;
            let credentials = format!(
                "{}:{}",
                decode(url.username()),
                decode(url.password().unwrap_or(""))
            );
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .map_err(|e| format!("{what}: {e}"))?;
            value.set_sensitive(true);
            Some(value)
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self { url, authorization })
    }

    /// `proxy.example:3128`, for messages.
    pub fn address(&self) -> String {
        format!(
            "{}:{}",
            self.url.host_str().unwrap_or_default(),
            self.url.port_or_known_default().unwrap_or(80)
        )
    }
}

impl fmt::Debug for ProxyEndpoint {
    /// Credentials never show.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyEndpoint({})", self.address())
    }
}

/// Which proxy a probe uses for each scheme, and who bypasses it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyConfig {
    /// Proxy for `http://` targets.
    pub http: Option<ProxyEndpoint>,
    /// Proxy for `https://` targets (tunnelled with CONNECT).
    pub https: Option<ProxyEndpoint>,
    /// Host names, domain suffixes (`.example.com` or `example.com`), IPs, CIDR ranges
    /// (`10.0.0.0/8`), or `*`; a `:port` is ignored.
    pub no_proxy: Vec<String>,
}

impl ProxyConfig {
    /// The proxy of the standard environment variables (lower- or upper-case).
    ///
    /// # Errors
    /// A variable holding an invalid proxy URL.
    pub fn from_environment() -> Result<Self, String> {
        let var = |names: [&'static str; 2]| {
            names.into_iter().find_map(|n| {
                std::env::var(n)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (n, v))
            })
        };
        let endpoint = |names| {
            var(names)
                .map(|(name, value)| ProxyEndpoint::parse(value.trim(), name))
                .transpose()
        };
        Ok(Self {
            http: endpoint(["HTTP_PROXY", "http_proxy"])?,
            https: endpoint(["HTTPS_PROXY", "https_proxy"])?,
            no_proxy: var(["NO_PROXY", "no_proxy"])
                .map(|(_, v)| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_become_a_proxy_authorization_header_and_leave_the_url() {
        let proxy =
            ProxyEndpoint::parse("http://probe:p%40ss@proxy.example:3128", "proxy_url").unwrap();
        assert_eq!(proxy.url.as_str(), "http://proxy.example:3128/");
        assert_eq!(
            proxy.authorization.unwrap().to_str().unwrap(),
            "Basic cHJvYmU6cEBzcw=="
        );
        assert!(ProxyEndpoint::parse("socks5://proxy:1080", "proxy_url").is_err());
    }
}
