//! One run of one probe. Knows no schedule and no metrics: it takes a [`ProbeSpec`] and
//! returns an [`Outcome`]. A failure is never an `Err`; it is an outcome with a
//! [`FailureReason`] from a closed set, because every failure must be counted by reason.

mod exchange;
mod run;
pub mod tls;
mod transport;
pub mod verdict;

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::ProbeSpec;

pub use run::MAX_REDIRECTS;

/// Why a run failed: the `reason` label values of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The host name could not be resolved.
    Dns,
    /// No TCP connection could be opened (refused, unreachable, reset while connecting).
    Connect,
    /// The TLS handshake failed (certificate, protocol).
    Tls,
    /// The run's budget was spent before a complete answer.
    Timeout,
    /// The HTTP status is not among the accepted ones.
    HttpStatus,
    /// The Divalto code is not a success code (or missing with `divalto: on`).
    WebhookError,
    /// A body expectation failed.
    BodyMismatch,
    /// The body is larger than `max_body_bytes`.
    BodyTooLarge,
    /// The answer is not valid HTTP, or the connection broke before it was complete.
    InvalidResponse,
    /// Anything else (a request we could not even build).
    Other,
}

impl FailureReason {
    /// Every reason, in the order the metrics list them.
    pub const ALL: [FailureReason; 10] = [
        FailureReason::Dns,
        FailureReason::Connect,
        FailureReason::Tls,
        FailureReason::Timeout,
        FailureReason::HttpStatus,
        FailureReason::WebhookError,
        FailureReason::BodyMismatch,
        FailureReason::BodyTooLarge,
        FailureReason::InvalidResponse,
        FailureReason::Other,
    ];

    /// The `reason` label value.
    pub fn as_label(self) -> &'static str {
        match self {
            FailureReason::Dns => "dns",
            FailureReason::Connect => "connect",
            FailureReason::Tls => "tls",
            FailureReason::Timeout => "timeout",
            FailureReason::HttpStatus => "http_status",
            FailureReason::WebhookError => "webhook_error",
            FailureReason::BodyMismatch => "body_mismatch",
            FailureReason::BodyTooLarge => "body_too_large",
            FailureReason::InvalidResponse => "invalid_response",
            FailureReason::Other => "other",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_label())
    }
}

/// Phases of the `webhook_probe_phase_duration_seconds` gauge.
pub const PHASE_NAMES: [&str; 5] = ["resolve", "connect", "tls", "processing", "transfer"];

/// Where the time of a run went (summed over redirects, final attempt only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// DNS resolution.
    #[serde(serialize_with = "seconds")]
    pub resolve: Duration,
    /// TCP connection set-up.
    #[serde(serialize_with = "seconds")]
    pub connect: Duration,
    /// TLS handshake.
    #[serde(serialize_with = "seconds")]
    pub tls: Duration,
    /// From sending the request to the response head.
    #[serde(serialize_with = "seconds")]
    pub processing: Duration,
    /// Reading the body.
    #[serde(serialize_with = "seconds")]
    pub transfer: Duration,
}

impl Phases {
    /// The phases in [`PHASE_NAMES`] order.
    pub fn as_array(&self) -> [Duration; 5] {
        [
            self.resolve,
            self.connect,
            self.tls,
            self.processing,
            self.transfer,
        ]
    }
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What the TLS handshake of the final connection showed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsDetails {
    /// Negotiated protocol (`TLSv1.3`), when the handshake completed.
    pub version: Option<String>,
    /// The presented chain, read even when it failed verification.
    pub certificate: Option<tls::CertificateInfo>,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Whether the run succeeded.
    pub success: bool,
    /// Why it failed (`None` on success).
    pub reason: Option<FailureReason>,
    /// Divalto's message, or the error text; secrets redacted.
    pub message: String,
    /// Last HTTP status seen.
    pub http_status: Option<u16>,
    /// Divalto code read from the body.
    pub response_code: Option<String>,
    /// Whole run, retries included.
    pub duration: Duration,
    /// Phases of the final attempt.
    pub phases: Phases,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
    /// Redirects followed on the final attempt.
    pub redirects: u32,
    /// TLS of the final connection (`None` for plain HTTP or a failure before TLS).
    pub tls: Option<TlsDetails>,
    /// HTTP version of the last answer (`1.1`).
    pub http_version: Option<&'static str>,
    /// Wall-clock start.
    pub started_at: SystemTime,
    /// Wall-clock end.
    pub finished_at: SystemTime,
}

/// Runs `spec` once (with its retries), within its timeout.
pub async fn run(spec: &ProbeSpec) -> Outcome {
    run::run(spec).await
}
