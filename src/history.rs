//! Bounded per-probe ring buffer of recent outcomes, for the API and the status page.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::probe::Outcome;

/// The last `capacity` outcomes of one probe, oldest first.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    entries: VecDeque<Arc<Outcome>>,
}

impl History {
    /// An empty history keeping at most `capacity` outcomes (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            entries: VecDeque::with_capacity(capacity.min(16)),
        }
    }

    /// Adds an outcome, dropping the oldest when full.
    pub fn push(&mut self, outcome: Arc<Outcome>) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back(outcome);
    }

    /// Changes how many outcomes are kept, dropping the oldest ones beyond it.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        self.entries.shrink_to(self.capacity);
    }

    /// The most recent outcome.
    pub fn last(&self) -> Option<&Arc<Outcome>> {
        self.entries.back()
    }

    /// All kept outcomes, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Arc<Outcome>> {
        self.entries.iter()
    }

    /// Number of kept outcomes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn outcome(attempts: u32) -> Arc<Outcome> {
        Arc::new(Outcome {
            success: true,
            reason: None,
            message: String::new(),
            http_status: Some(200),
            response_code: None,
            duration: Duration::ZERO,
            phases: Default::default(),
            attempts,
            redirects: 0,
            tls: None,
            http_version: None,
            started_at: SystemTime::UNIX_EPOCH,
            finished_at: SystemTime::UNIX_EPOCH,
        })
    }

    #[test]
    fn the_oldest_outcome_is_dropped_when_full() {
        let mut history = History::new(3);
        for i in 1..=5 {
            history.push(outcome(i));
        }
        let kept: Vec<u32> = history.iter().map(|o| o.attempts).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(history.last().unwrap().attempts, 5);
    }
}
