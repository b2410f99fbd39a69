//! One run of one probe. Knows no schedule and no metrics: it takes a [`ProbeSpec`] and
//! returns an [`Outcome`]. A failure is never an `Err`; it is an outcome with a
//! [`FailureReason`] from a closed set, because every failure must be counted by reason.

mod exchange;
mod run;
mod run_id;
pub mod tls;
mod transport;
pub mod verdict;

use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use crate::config::FailureReason;
use crate::config::ProbeSpec;

pub use run::MAX_REDIRECTS;
pub use run_id::{InvalidRunId, RunId};

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
    /// This run's id (API, logs, exemplars, status page).
    pub run_id: RunId,
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
