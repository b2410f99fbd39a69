//! One run of a claimed probe: its slots, the call (a panic inside is a failed run), and
//! the hand-over of its outcome to the read model; guards keep the probe's claim and the
//! in-flight gauge right however the run ends.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::FutureExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Runner, Shared};
use crate::config::ProbeSpec;
use crate::metrics::Metrics;
use crate::probe::{FailureReason, Outcome};
use crate::state::Claim;

/// A run counted in `webhook_exporter_probes_in_flight` while this lives (so a run that
/// unwinds or is dropped never leaks the gauge).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn start(metrics: &'a Metrics) -> Self {
        metrics.probes_in_flight.inc();
        Self(metrics)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.probes_in_flight.dec();
    }
}

/// One run of a claimed probe: wait for the slots, call the runner, record the outcome in
/// the read model.
/// `planned` is the scheduled start (lag is measured from it); `None` for on-demand runs.
/// Returns `None`, having called nothing, when `cancel` fires before the run got its slots.
pub(super) async fn run(
    claim: Claim,
    shared: Arc<Shared>,
    planned: Option<Instant>,
    cancel: CancellationToken,
) -> Option<Outcome> {
    let state = claim.probe().clone();
    let permits = shared.acquire(&state.spec, &cancel).await?;
    if cancel.is_cancelled() {
        // Cancelled just as the last slot came free: still not started.
        return None;
    }
    if let Some(planned) = planned {
        shared
            .metrics
            .observe_lag(Instant::now().saturating_duration_since(planned));
    }
    state.mark_started();
    let outcome = {
        let _in_flight = InFlight::start(&shared.metrics);
        call(&shared.runner, &state.spec).await
    };
    drop(permits);
    state.record(&outcome);
    if let Some(storage) = shared.storage.get() {
        storage.result(&state.spec, &outcome, state.next_run());
    }
    // The probe is free again only once its result is recorded.
    drop(claim);
    Some(outcome)
}

/// What a run that panicked reports. The panic's own text may quote a URL or a header, so
/// it is shown nowhere: the panic hook (`logging::log_panics`) logs only the thread and the
/// source location.
const PANICKED: &str = "the run panicked (a bug in the exporter or a library it uses): counted as a failure; the probe keeps its schedule";

/// Calls the runner. A panic inside it (hyper, rustls, x509-parser on a hostile answer)
/// becomes a failed run with reason `other`, so the probe's timer, its claim and the
/// in-flight gauge live on.
async fn call(runner: &Runner, spec: &Arc<ProbeSpec>) -> Outcome {
    let started_at = SystemTime::now();
    let started = Instant::now();
    // Unwind safety: the runner is handed only the probe's immutable spec, and its future is
    // dropped after a panic, so nothing half-updated is read again.
    let called = AssertUnwindSafe(async { runner(spec.clone()).await })
        .catch_unwind()
        .await;
    called.unwrap_or_else(|_| Outcome {
        run_id: crate::probe::RunId::next(),
        success: false,
        reason: Some(FailureReason::Other),
        message: PANICKED.to_owned(),
        http_status: None,
        response_code: None,
        duration: started.elapsed(),
        phases: crate::probe::Phases::default(),
        attempts: 1,
        redirects: 0,
        tls: None,
        http_version: None,
        started_at,
        finished_at: SystemTime::now(),
    })
}
