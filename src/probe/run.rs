//! The run: its budget, its attempts (and which failures `retry_on` retries), and the
//! redirects of each attempt, followed by hand. One attempt's request is in
//! [`super::exchange`], its connection in [`super::transport`].

use std::time::SystemTime;

use bytes::Bytes;
use hyper::StatusCode;
use tokio::time::Instant;

use super::exchange::{Reply, exchange};
use super::verdict::{self, clean};
use super::{FailureReason, Outcome, Phases, TlsDetails};
use crate::config::ProbeSpec;

/// Redirects followed in one attempt before the answer counts as invalid.
pub const MAX_REDIRECTS: u32 = 10;

/// `User-Agent` of every request, so ERP logs show who calls.
pub(super) const USER_AGENT: &str = concat!("webhook-exporter/", env!("CARGO_PKG_VERSION"));

/// The step an attempt is in: a timeout message says which one ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Resolve,
    Connect,
    Tls,
    Processing,
    Transfer,
}

impl Step {
    pub(super) fn waiting_for(self) -> &'static str {
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
pub(super) struct Trace {
    pub(super) phases: Phases,
    /// The step in progress and when it began.
    pub(super) step: Option<(Step, Instant)>,
    pub(super) status: Option<u16>,
    pub(super) redirects: u32,
    pub(super) tls: Option<TlsDetails>,
    pub(super) http_version: Option<&'static str>,
}

impl Trace {
    /// Starts timing `step`.
    pub(super) fn begin(&mut self, step: Step) {
        self.end();
        self.step = Some((step, Instant::now()));
    }

    /// Adds the time of the step in progress to its phase: called when a step completes,
    /// fails, or runs out of budget, so a failed run still shows where its time went.
    pub(super) fn end(&mut self) {
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
pub(super) struct Failure {
    pub(super) reason: FailureReason,
    pub(super) message: String,
}

pub(super) fn fail(reason: FailureReason, message: impl Into<String>) -> Failure {
    Failure {
        reason,
        message: message.into(),
    }
}

/// A complete answer.
struct Answer {
    status: StatusCode,
    content_type: Option<String>,
    body: Bytes,
}

/// Runs a probe: attempts until one succeeds, the retries are used up, or the budget is spent.
pub(super) async fn run(spec: &ProbeSpec) -> Outcome {
    let run_id = super::RunId::next();
    let started_at = SystemTime::now();
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut trace = Trace::default();
        let result = match tokio::time::timeout_at(deadline, attempt(spec, &mut trace)).await {
            Ok(result) => result,
            // A budget spent on a name lookup is the resolver's failure, not the server's.
            Err(_) if matches!(trace.step, Some((Step::Resolve, _))) => Err(fail(
                FailureReason::Dns,
                format!(
                    "no address within {}: the name lookup did not finish",
                    humantime::format_duration(spec.timeout)
                ),
            )),
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
                let verdict = verdict::judge_answer(
                    answer.status.as_u16(),
                    answer.status.canonical_reason().unwrap_or(""),
                    answer.content_type.as_deref(),
                    &answer.body,
                    &spec.expect,
                );
                (verdict.reason, verdict.message, verdict.response_code)
            }
            Err(failure) => (Some(failure.reason), failure.message, None),
        };
        // Only the reasons `retry_on` names: by default failures before the request reached
        // the server, so a retry never runs an ERP action twice unasked.
        let retry = reason.is_some_and(|r| spec.retry_on.contains(&r))
            && attempts <= spec.retries
            // A retry never starts once the budget cannot cover its delay.
            && Instant::now() + spec.retry_delay < deadline;
        if retry {
            tokio::time::sleep(spec.retry_delay).await;
            continue;
        }
        return Outcome {
            run_id,
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
    // Sent again on a 307/308, dropped on a 301/302/303 as browsers do.
    let mut send_body = true;
    loop {
        let Reply {
            status,
            location,
            content_type,
            body,
        } = exchange(spec, &url, &method, same_origin, send_body, trace).await?;
        trace.status = Some(status.as_u16());
        let redirect = spec.follow_redirects && status.is_redirection() && location.is_some();
        if !redirect {
            return Ok(Answer {
                status,
                content_type,
                body,
            });
        }
        if trace.redirects >= MAX_REDIRECTS {
            return Err(fail(
                FailureReason::InvalidResponse,
                format!("more than {MAX_REDIRECTS} redirects"),
            ));
        }
        let location = location.unwrap_or_default();
        let mut next = url.join(&location).map_err(|e| {
            fail(
                FailureReason::InvalidResponse,
                format!(
                    "redirect to an invalid location \"{}\": {e}",
                    clean(&location)
                ),
            )
        })?;
        // Credentials in a Location are never written into a request line.
        let _ = next.set_username("");
        let _ = next.set_password(None);
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
        if matches!(status.as_u16(), 301..=303) {
            send_body = false;
        }
        same_origin &= next.origin() == spec.target.url.origin();
        trace.redirects += 1;
        url = next;
    }
}
