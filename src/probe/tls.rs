//! What a probe reports of TLS: the presented certificate chain, and the wording of
//! handshake failures. The client configuration itself is built by [`crate::tls`].

use rustls::pki_types::{CertificateDer, UnixTime};

/// What the exporter reports of a presented certificate chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// Earliest `notAfter` of the chain (Unix seconds): when the chain stops working.
    pub earliest_not_after: i64,
    /// Subject of the leaf (its common name, else the whole name).
    pub subject: String,
    /// Issuer of the leaf (common name, else the whole name).
    pub issuer: String,
    /// Names the leaf is valid for.
    pub names: Vec<String>,
}

/// Longest subject or issuer kept: they become label values.
const MAX_NAME_CHARS: usize = 64;

/// Reads the chain with x509-parser; `None` when nothing (parsable) was presented.
pub fn certificate_info(chain: &[CertificateDer<'_>]) -> Option<CertificateInfo> {
    let parsed: Vec<_> = chain
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    let leaf = parsed.first()?;
    let earliest_not_after = parsed
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()?;
    let name = |n: &x509_parser::x509::X509Name<'_>| -> String {
        let text = n
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map_or_else(|| n.to_string(), str::to_owned);
        text.chars().take(MAX_NAME_CHARS).collect()
    };
    let names = leaf
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => (*d).to_owned(),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                            .to_string(),
                        16 => {
                            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                                .to_string()
                        }
                        _ => String::new(),
                    },
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    Some(CertificateInfo {
        earliest_not_after,
        subject: name(leaf.subject()),
        issuer: name(leaf.issuer()),
        names,
    })
}

fn date(time: UnixTime) -> String {
    let seconds = i64::try_from(time.as_secs()).unwrap_or(i64::MAX);
    chrono::DateTime::from_timestamp(seconds, 0).map_or_else(
        || seconds.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}

/// Explains a handshake error to an operator: which check failed, with the dates or names.
pub fn describe_error(error: &rustls::Error, host: &str, info: Option<&CertificateInfo>) -> String {
    use rustls::CertificateError as C;
    let presented = || {
        info.map(|i| i.names.join(", "))
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "no name".to_owned())
    };
    match error {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::ExpiredContext { not_after, .. } => {
                format!("the certificate of {host} expired on {}", date(*not_after))
            }
            C::Expired => format!("the certificate of {host} has expired"),
            C::NotValidYetContext { not_before, .. } => {
                format!(
                    "the certificate of {host} is not valid before {}",
                    date(*not_before)
                )
            }
            C::NotValidYet => format!("the certificate of {host} is not valid yet"),
            C::UnknownIssuer => {
                let issuer = info
                    .map(|i| format!(" \"{}\"", i.issuer))
                    .unwrap_or_default();
                format!(
                    "the certificate of {host} is signed by an unknown issuer{issuer} \
                     (self-signed, or a private CA: trust it with tls.ca_file)"
                )
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!(
                    "the certificate is not valid for {host}: it holds {}",
                    presented()
                )
            }
            other => format!("invalid certificate from {host}: {other:?}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            format!("{host} requires a client certificate: set tls.cert_file and tls.key_file")
        }
        rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateUnknown),
        ) => format!("{host} refused our client certificate ({alert:?})"),
        rustls::Error::AlertReceived(alert) => format!(
            "{host} refused the TLS handshake ({alert:?}): protocol version, cipher, \
             or a client certificate it requires"
        ),
        rustls::Error::PeerIncompatible(why) => {
            format!("{host} speaks no TLS version or cipher we accept ({why:?})")
        }
        other => format!("TLS handshake with {host} failed: {other}"),
    }
}
