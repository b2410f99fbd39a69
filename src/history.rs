//! Bounded per-probe ring buffer of recent results, for the API and the status page.
//!
//! Ten thousand probes keeping a hundred results each is a million entries, so an entry is a
//! compact [`Record`] (56 bytes): times in micro- and milliseconds, and the Divalto code and
//! message in one shared string, shared with the previous entry when they are the same (they
//! usually are).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::probe::{FailureReason, Outcome, Phases};

/// One past run, compactly.
#[derive(Debug, Clone)]
pub struct Record {
    finished_at_ms: i64,
    duration_us: u32,
    phases_us: [u32; 5],
    /// 0 when no answer came.
    http_status: u16,
    reason: Option<FailureReason>,
    attempts: u8,
    redirects: u8,
    /// Length of the Divalto code at the start of `text`; `u8::MAX` when there is none.
    code_len: u8,
    /// The Divalto code followed by the message.
    text: Arc<str>,
}

/// `code_len` of a record without a Divalto code.
const NO_CODE: u8 = u8::MAX;

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

impl Record {
    /// Whether the run succeeded.
    pub fn success(&self) -> bool {
        self.reason.is_none()
    }

    /// Why it failed.
    pub fn reason(&self) -> Option<FailureReason> {
        self.reason
    }

    /// Divalto's message or the error text.
    pub fn message(&self) -> &str {
        match self.code_len {
            NO_CODE => &self.text,
            len => &self.text[usize::from(len)..],
        }
    }

    /// The HTTP status, when an answer came.
    pub fn http_status(&self) -> Option<u16> {
        (self.http_status != 0).then_some(self.http_status)
    }

    /// The Divalto code, when the body carried one.
    pub fn response_code(&self) -> Option<&str> {
        (self.code_len != NO_CODE).then(|| &self.text[..usize::from(self.code_len)])
    }

    /// Duration of the whole run (microsecond precision).
    pub fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.duration_us))
    }

    /// Phases of the final attempt (microsecond precision).
    pub fn phases(&self) -> Phases {
        let [resolve, connect, tls, processing, transfer] = self
            .phases_us
            .map(|us| Duration::from_micros(u64::from(us)));
        Phases {
            resolve,
            connect,
            tls,
            processing,
            transfer,
        }
    }

    /// Attempts made (saturates at 255).
    pub fn attempts(&self) -> u32 {
        u32::from(self.attempts)
    }

    /// Redirects followed (saturates at 255).
    pub fn redirects(&self) -> u32 {
        u32::from(self.redirects)
    }

    /// End of the run (millisecond precision).
    pub fn finished_at(&self) -> SystemTime {
        let ms = u64::try_from(self.finished_at_ms).unwrap_or(0);
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    /// Start of the run.
    pub fn started_at(&self) -> SystemTime {
        self.finished_at() - self.duration()
    }
}

/// The last `capacity` results of one probe, oldest first.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    entries: VecDeque<Record>,
}

impl History {
    /// An empty history keeping at most `capacity` results (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: VecDeque::new(),
        }
    }

    /// Adds a result, dropping the oldest when full.
    pub fn push(&mut self, outcome: &Outcome) {
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        } else if self.entries.len() == self.entries.capacity() {
            // Grow by doubling as results come (a young probe holds little), but never past
            // the capacity: no slack once full.
            let target = (self.entries.capacity() * 2).max(4).min(self.capacity);
            self.entries.reserve_exact(target - self.entries.len());
        }
        // A code too long to index (never seen from Divalto) is kept in the message.
        let (code, code_len) = match outcome.response_code.as_deref() {
            Some(code) if code.len() < usize::from(NO_CODE) => {
                (code, u8::try_from(code.len()).unwrap_or(NO_CODE))
            }
            _ => ("", NO_CODE),
        };
        let same = |p: &Record| {
            p.code_len == code_len
                && p.text.starts_with(code)
                && p.text[code.len()..] == *outcome.message
        };
        let text = match self.entries.back() {
            Some(previous) if same(previous) => previous.text.clone(),
            _ => Arc::from(format!("{code}{}", outcome.message)),
        };
        let finished_ms = outcome
            .finished_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.entries.push_back(Record {
            finished_at_ms: i64::try_from(finished_ms).unwrap_or(i64::MAX),
            duration_us: micros(outcome.duration),
            phases_us: outcome.phases.as_array().map(micros),
            http_status: outcome.http_status.unwrap_or(0),
            reason: outcome.reason,
            attempts: u8::try_from(outcome.attempts).unwrap_or(u8::MAX),
            redirects: u8::try_from(outcome.redirects).unwrap_or(u8::MAX),
            code_len,
            text,
        });
    }

    /// Changes how many results are kept, dropping the oldest ones beyond it.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
        self.entries.shrink_to(self.capacity);
    }

    /// The most recent result.
    pub fn last(&self) -> Option<&Record> {
        self.entries.back()
    }

    /// All kept results, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Record> {
        self.entries.iter()
    }

    /// The last `count` results, oldest first.
    pub fn recent(&self, count: usize) -> impl DoubleEndedIterator<Item = &Record> {
        self.entries
            .iter()
            .skip(self.entries.len().saturating_sub(count))
    }

    /// Failed runs since the last success, within the kept results.
    pub fn consecutive_failures(&self) -> usize {
        self.entries
            .iter()
            .rev()
            .take_while(|r| !r.success())
            .count()
    }

    /// Number of kept results.
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

    fn outcome(attempts: u32, message: &str) -> Outcome {
        Outcome {
            success: true,
            reason: None,
            message: message.to_owned(),
            http_status: Some(200),
            response_code: Some("0".to_owned()),
            duration: Duration::from_micros(1234),
            phases: Phases {
                processing: Duration::from_micros(1000),
                ..Phases::default()
            },
            attempts,
            redirects: 0,
            tls: None,
            http_version: None,
            started_at: UNIX_EPOCH,
            finished_at: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        }
    }

    #[test]
    fn the_oldest_result_is_dropped_when_full() {
        let mut history = History::new(3);
        for i in 1..=5 {
            history.push(&outcome(i, "OK"));
        }
        let kept: Vec<u32> = history.iter().map(Record::attempts).collect();
        assert_eq!(kept, vec![3, 4, 5]);
        assert_eq!(history.last().unwrap().attempts(), 5);
        assert_eq!(
            history.entries.capacity(),
            3,
            "no slack beyond the capacity"
        );
    }

    #[test]
    fn a_record_gives_back_what_the_outcome_said() {
        let mut history = History::new(2);
        history.push(&outcome(1, "Client rafraîchi"));
        let record = history.last().unwrap();
        assert!(record.success());
        assert_eq!(record.message(), "Client rafraîchi");
        assert_eq!(record.http_status(), Some(200));
        assert_eq!(record.response_code(), Some("0"));
        assert_eq!(record.duration(), Duration::from_micros(1234));
        assert_eq!(record.phases().processing, Duration::from_micros(1000));
        assert_eq!(
            record.finished_at(),
            UNIX_EPOCH + Duration::from_millis(1_795_000_000_123)
        );
    }

    #[test]
    fn a_record_without_a_code_has_none() {
        let mut history = History::new(2);
        let mut failed = outcome(1, "cannot connect to 127.0.0.1:1: Connection refused");
        failed.response_code = None;
        history.push(&failed);
        history.push(&outcome(1, "OK"));
        let records: Vec<&Record> = history.iter().collect();
        assert_eq!(records[0].response_code(), None);
        assert_eq!(
            records[0].message(),
            "cannot connect to 127.0.0.1:1: Connection refused"
        );
        assert_eq!(
            (records[1].response_code(), records[1].message()),
            (Some("0"), "OK")
        );
    }

    #[test]
    fn a_repeated_message_is_stored_once() {
        let mut history = History::new(4);
        history.push(&outcome(1, "OK"));
        history.push(&outcome(1, "OK"));
        let records: Vec<&Record> = history.iter().collect();
        assert!(Arc::ptr_eq(&records[0].text, &records[1].text));
        assert!(
            std::mem::size_of::<Record>() <= 56,
            "{}",
            std::mem::size_of::<Record>()
        );
    }
}
