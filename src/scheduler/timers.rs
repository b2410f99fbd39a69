//! The planned instants of the probes of one thread, in one queue, and the one task per
//! thread that sleeps until the earliest and handles every instant due: a run started (or
//! skipped and counted, the probe still busy), then the probe's next instant queued.
//!
//! Why not a task per probe: each idle timer task held about a kilobyte (its future, its
//! timer entry, its cancellation waiter), 10 MB at 10,000 probes, to do what one sorted
//! queue does. Runs get a task of their own only while they run.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::ProbeState;
use crate::sync::lock;

/// One planned instant of one probe.
pub(super) struct Due {
    pub(super) state: Arc<ProbeState>,
    /// Fired when the probe is removed or changed: the instant is then dropped unhandled.
    pub(super) cancel: CancellationToken,
    /// The planned wall-clock instant.
    pub(super) wall: DateTime<Utc>,
    /// Whether a run is planned at it (`false`: the end of an always-open skip window, when
    /// the plan is only made again).
    pub(super) runs: bool,
}

/// The queue of one thread.
#[derive(Default)]
pub(super) struct Timers {
    /// By instant, then by order of queueing (instants shared by many probes are common:
    /// every phase is on a 10 ms grid, cron probes share whole minutes).
    queue: Mutex<Queue>,
    /// Woken when an instant earlier than every other was queued from outside the task.
    earlier: Notify,
}

#[derive(Default)]
struct Queue {
    due: BTreeMap<(Instant, u64), Due>,
    queued: u64,
}

impl Timers {
    /// Queues `due` at `at`.
    pub(super) fn insert(&self, at: Instant, due: Due) {
        let first = {
            let mut queue = lock(&self.queue);
            queue.queued += 1;
            let key = (at, queue.queued);
            queue.due.insert(key, due);
            queue
                .due
                .first_key_value()
                .is_some_and(|(first, _)| *first == key)
        };
        if first {
            self.earlier.notify_one();
        }
    }

    /// Takes every instant due at `now` into `into`, earliest first.
    pub(super) fn take_due(&self, now: Instant, into: &mut Vec<(Instant, Due)>) {
        let mut queue = lock(&self.queue);
        while let Some(first) = queue.due.first_entry() {
            if first.key().0 > now {
                break;
            }
            let ((at, _), due) = first.remove_entry();
            into.push((at, due));
        }
    }

    /// The earliest instant queued.
    fn earliest(&self) -> Option<Instant> {
        lock(&self.queue)
            .due
            .first_key_value()
            .map(|((at, _), _)| *at)
    }

    /// Drops the instants of probes that were removed or changed, so a probe whose next run
    /// is months away is not kept until then.
    pub(super) fn forget_cancelled(&self) {
        lock(&self.queue)
            .due
            .retain(|_, due| !due.cancel.is_cancelled());
    }

    /// Empties the queue at shutdown: no probe has a next run any more.
    pub(super) fn clear(&self) {
        let due = std::mem::take(&mut lock(&self.queue).due);
        for due in due.into_values() {
            due.state.set_next_run(None);
        }
    }

    /// Sleeps until an instant is due (or until an earlier one is queued, then looks again);
    /// `false` when `stop` fired first.
    pub(super) async fn wait(&self, stop: &CancellationToken) -> bool {
        loop {
            let earlier = self.earlier.notified();
            tokio::pin!(earlier);
            // Registered before the queue is read, so an insert in between still wakes us.
            earlier.as_mut().enable();
            let next = self.earliest();
            tokio::select! {
                biased;
                () = stop.cancelled() => return false,
                () = &mut earlier => {}
                () = super::sleep_until_some(next) => return true,
            }
        }
    }

    /// How many instants are queued (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.queue).due.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn due(runs: bool) -> (Due, CancellationToken) {
        let state = crate::state::tests::probe_states(1, 10).1.remove(0);
        let cancel = CancellationToken::new();
        let due = Due {
            state,
            cancel: cancel.clone(),
            wall: Utc::now(),
            runs,
        };
        (due, cancel)
    }

    #[tokio::test(start_paused = true)]
    async fn instants_come_out_in_order_of_time_then_of_queueing_and_only_when_due() {
        let timers = Timers::default();
        let t0 = Instant::now();
        for (offset, runs) in [(20, true), (10, true), (10, false), (30, true)] {
            timers.insert(t0 + Duration::from_millis(offset), due(runs).0);
        }
        let mut taken = Vec::new();
        timers.take_due(t0 + Duration::from_millis(9), &mut taken);
        assert!(taken.is_empty());
        timers.take_due(t0 + Duration::from_millis(20), &mut taken);
        let order: Vec<(u128, bool)> = taken
            .iter()
            .map(|(at, due)| ((*at - t0).as_millis(), due.runs))
            .collect();
        assert_eq!(order, [(10, true), (10, false), (20, true)]);
        assert_eq!(timers.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_instant_queued_while_waiting_shortens_the_wait() {
        let timers = Arc::new(Timers::default());
        let t0 = Instant::now();
        timers.insert(t0 + Duration::from_secs(3600), due(true).0);
        let waiting = {
            let timers = timers.clone();
            tokio::spawn(async move {
                let stop = CancellationToken::new();
                timers.wait(&stop).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        timers.insert(t0 + Duration::from_secs(5), due(true).0);
        let woke = waiting.await.unwrap();
        assert_eq!((woke - t0).as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_probes_are_forgotten_and_a_stop_ends_the_wait() {
        let timers = Timers::default();
        let (kept, _) = due(true);
        let (gone, cancel) = due(true);
        let far = Instant::now() + Duration::from_secs(86_400 * 30);
        timers.insert(far, kept);
        timers.insert(far, gone);
        cancel.cancel();
        timers.forget_cancelled();
        assert_eq!(timers.len(), 1);
        let stop = CancellationToken::new();
        stop.cancel();
        assert!(!timers.wait(&stop).await);
    }
}
