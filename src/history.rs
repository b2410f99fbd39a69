//! Bounded per-probe ring buffer of recent results, for the API and the status page.
//!
//! Ten thousand probes keeping a hundred results each is a million entries, so an entry is a
//! compact [`Record`] (40 bytes): the run id, times in micro- and milliseconds, phases as
//! 16-bit floating microseconds, and the Divalto code and message in one string, shared with
//! one of the last few entries when they are the same (they usually are). A probe's buffer
//! is reserved whole at its first result, so memory does not creep up (nor fragment) as
//! histories fill.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::probe::{FailureReason, MAX_REDIRECTS, Outcome, Phases, RunId};

/// One past run, compactly.
#[derive(Debug, Clone)]
pub struct Record {
    /// [`RunId::as_u64`] of the run.
    run_id: u64,
    /// The end of the run, the HTTP status, redirects and the failure reason in one word
    /// (see [`Packed`]).
    packed: Packed,
    duration_us: u32,
    /// Phases in [`encode_micros`] form.
    phases: [u16; 5],
    attempts: u8,
    /// Length of the Divalto code at the start of `text`; `u8::MAX` when there is none.
    code_len: u8,
    /// The Divalto code followed by the message. A thin pointer (to a boxed string) rather
    /// than a fat `Arc<str>`: the 8 bytes it saves keep a record within 40 bytes; the
    /// second allocation is made once per distinct text only.
    text: Arc<Box<str>>,
}

/// Bits of the end of a run in milliseconds since 1970: enough until the year 2527.
const FINISHED_BITS: u32 = 44;
/// Bits of the HTTP status (0 when no answer came; statuses are three digits).
const STATUS_BITS: u32 = 10;
/// Bits of the redirects followed (at most [`MAX_REDIRECTS`], 10).
const REDIRECT_BITS: u32 = 4;
/// Bits of the failure reason: 0 for none, else its discriminant plus 1.
const REASON_BITS: u32 = 6;
const _: () = assert!(FINISHED_BITS + STATUS_BITS + REDIRECT_BITS + REASON_BITS == 64);
const _: () = assert!(FailureReason::ALL.len() < 1 << REASON_BITS);
const _: () = assert!(MAX_REDIRECTS < 1 << REDIRECT_BITS);

/// Four fields in one `u64`, each saturating at its width: the 8 bytes this saves on every
/// kept result are 8 MB at 10,000 probes.
#[derive(Debug, Clone, Copy)]
struct Packed(u64);

impl Packed {
    fn new(
        finished_ms: u128,
        http_status: u16,
        redirects: u32,
        reason: Option<FailureReason>,
    ) -> Self {
        let field = |value: u64, bits: u32| value.min((1 << bits) - 1);
        // The discriminant, not a search of `ALL`: a failure is never stored as none.
        let reason = reason.map_or(0, |reason| reason as u64 + 1);
        let finished = field(
            u64::try_from(finished_ms).unwrap_or(u64::MAX),
            FINISHED_BITS,
        );
        let status = field(u64::from(http_status), STATUS_BITS);
        let redirects = field(u64::from(redirects), REDIRECT_BITS);
        Self(
            finished
                | status << FINISHED_BITS
                | redirects << (FINISHED_BITS + STATUS_BITS)
                | reason << (FINISHED_BITS + STATUS_BITS + REDIRECT_BITS),
        )
    }

    fn get(self, shift: u32, bits: u32) -> u64 {
        (self.0 >> shift) & ((1 << bits) - 1)
    }

    fn finished_ms(self) -> u64 {
        self.get(0, FINISHED_BITS)
    }

    fn http_status(self) -> u16 {
        u16::try_from(self.get(FINISHED_BITS, STATUS_BITS)).unwrap_or(u16::MAX)
    }

    fn redirects(self) -> u32 {
        u32::try_from(self.get(FINISHED_BITS + STATUS_BITS, REDIRECT_BITS)).unwrap_or(u32::MAX)
    }

    fn reason(self) -> Option<FailureReason> {
        let index = self.get(FINISHED_BITS + STATUS_BITS + REDIRECT_BITS, REASON_BITS);
        let index = usize::try_from(index).ok()?.checked_sub(1)?;
        // `ALL` is in declaration order (a test checks it); a reason missing from it is
        // still a failure.
        Some(
            FailureReason::ALL
                .get(index)
                .copied()
                .unwrap_or(FailureReason::Other),
        )
    }
}

/// Entries, newest first, searched for a text to share with a new one.
const RECENT_TEXTS: usize = 8;

/// `code_len` of a record without a Divalto code.
const NO_CODE: u8 = u8::MAX;

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

/// Bits of mantissa in a 16-bit duration: exact below 2.048 ms, within 0.1 % above.
const MANTISSA_BITS: u32 = 11;

/// A duration in 16 bits: an 11-bit count of microseconds shifted left by a 5-bit exponent
/// (up to about 50 days).
fn encode_micros(duration: Duration) -> u16 {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let mut exponent: u32 = 0;
    while micros >> exponent >= 1 << MANTISSA_BITS && exponent < 31 {
        exponent += 1;
    }
    let mantissa = (micros >> exponent).min((1 << MANTISSA_BITS) - 1);
    // Both parts are masked to their widths above, so the sum fits 16 bits.
    u16::try_from((u64::from(exponent) << MANTISSA_BITS) | mantissa).unwrap_or(u16::MAX)
}

fn decode_micros(encoded: u16) -> Duration {
    let mantissa = u64::from(encoded) & ((1 << MANTISSA_BITS) - 1);
    Duration::from_micros(mantissa << (u32::from(encoded) >> MANTISSA_BITS))
}

impl Record {
    /// The run's id.
    pub fn run_id(&self) -> RunId {
        RunId::from_u64(self.run_id)
    }

    /// Whether the run succeeded.
    pub fn success(&self) -> bool {
        self.packed.reason().is_none()
    }

    /// Why it failed.
    pub fn reason(&self) -> Option<FailureReason> {
        self.packed.reason()
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
        let status = self.packed.http_status();
        (status != 0).then_some(status)
    }

    /// The Divalto code, when the body carried one.
    pub fn response_code(&self) -> Option<&str> {
        (self.code_len != NO_CODE).then(|| &self.text[..usize::from(self.code_len)])
    }

    /// Duration of the whole run (microsecond precision).
    pub fn duration(&self) -> Duration {
        Duration::from_micros(u64::from(self.duration_us))
    }

    /// Phases of the final attempt (to the microsecond below 2 ms, within 0.1 % above).
    pub fn phases(&self) -> Phases {
        let [resolve, connect, tls, processing, transfer] = self.phases.map(decode_micros);
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

    /// Redirects followed (at most [`MAX_REDIRECTS`]).
    pub fn redirects(&self) -> u32 {
        self.packed.redirects()
    }

    /// End of the run (millisecond precision).
    pub fn finished_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.packed.finished_ms())
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
        } else if self.entries.capacity() < self.capacity {
            // The whole buffer at once (a reload may also have resized it): growing step by
            // step left the allocator with freed holes it never gave back.
            self.entries
                .reserve_exact(self.capacity - self.entries.len());
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
        // Shared with a recent entry of the same text, not only the last one: a target
        // failing in rotating ways alternates a few messages, and each copy is two more
        // allocations kept as long as the entry.
        let mut recent = self.entries.iter().rev().take(RECENT_TEXTS);
        let text = match recent.find(|previous| same(previous)) {
            Some(previous) => previous.text.clone(),
            None => Arc::new(format!("{code}{}", outcome.message).into_boxed_str()),
        };
        let finished_ms = outcome
            .finished_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        self.entries.push_back(Record {
            run_id: outcome.run_id.as_u64(),
            packed: Packed::new(
                finished_ms,
                outcome.http_status.unwrap_or(0),
                outcome.redirects,
                outcome.reason,
            ),
            duration_us: micros(outcome.duration),
            phases: outcome.phases.as_array().map(encode_micros),
            attempts: u8::try_from(outcome.attempts).unwrap_or(u8::MAX),
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

    /// The kept result of run `id`, if it is still kept. A scan from the newest: a hundred
    /// comparisons at most with the default history size.
    pub fn find(&self, id: RunId) -> Option<&Record> {
        self.entries.iter().rev().find(|r| r.run_id == id.as_u64())
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
            run_id: RunId::next(),
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
    fn sixteen_bit_durations_are_exact_below_two_ms_and_close_above() {
        for micros in [0, 1, 999, 2047] {
            assert_eq!(
                decode_micros(encode_micros(Duration::from_micros(micros))),
                Duration::from_micros(micros)
            );
        }
        for micros in [2048_u64, 52_431, 1_234_567, 30_000_000, 3_600_000_000] {
            let back =
                decode_micros(encode_micros(Duration::from_micros(micros))).as_micros() as f64;
            let error = (micros as f64 - back).abs() / micros as f64;
            assert!(error < 0.001, "{micros} us came back as {back} us");
        }
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
    fn a_run_is_found_by_its_id_while_it_is_kept() {
        let mut history = History::new(2);
        let runs: Vec<Outcome> = (1..=3).map(|i| outcome(i, "OK")).collect();
        for run in &runs {
            history.push(run);
        }
        assert!(history.find(runs[0].run_id).is_none(), "dropped when full");
        for run in &runs[1..] {
            let record = history.find(run.run_id).unwrap();
            assert_eq!(
                (record.run_id(), record.attempts()),
                (run.run_id, run.attempts)
            );
        }
    }

    #[test]
    fn a_repeated_message_is_stored_once() {
        let mut history = History::new(4);
        history.push(&outcome(1, "OK"));
        history.push(&outcome(1, "OK"));
        let records: Vec<&Record> = history.iter().collect();
        assert!(Arc::ptr_eq(&records[0].text, &records[1].text));
    }

    #[test]
    fn messages_that_alternate_are_stored_once_each() {
        // A target failing in rotating ways (a 500, a timeout, a success between them).
        let messages = [
            "OK",
            "HTTP 500",
            "OK",
            "no answer within 900ms",
            "HTTP 500",
            "OK",
        ];
        let mut history = History::new(10);
        for message in messages {
            history.push(&outcome(1, message));
        }
        let records: Vec<&Record> = history.iter().collect();
        for (i, record) in records.iter().enumerate() {
            let first = records
                .iter()
                .find(|other| other.message() == record.message())
                .unwrap();
            assert!(
                Arc::ptr_eq(&first.text, &record.text),
                "record {i} ({:?}) has its own copy of the text",
                record.message()
            );
        }
        assert_eq!(records[3].message(), "no answer within 900ms");
    }

    #[test]
    fn failure_reasons_are_listed_in_declaration_order() {
        for (i, reason) in FailureReason::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason}");
        }
    }

    #[test]
    fn a_record_is_forty_bytes() {
        // 100 results × 10,000 probes: each 8 bytes is 8 MB of resident memory.
        assert_eq!(std::mem::size_of::<Record>(), 40);
    }

    #[test]
    fn packed_fields_come_back_at_their_limits() {
        let mut history = History::new(64);
        let times = [0, 1, 1_795_000_000_123, (1 << FINISHED_BITS) - 1];
        let statuses = [None, Some(100), Some(599), Some(999)];
        let reasons = std::iter::once(None).chain(FailureReason::ALL.map(Some));
        for (i, reason) in reasons.enumerate() {
            let mut run = outcome(1, "x");
            run.reason = reason;
            run.success = reason.is_none();
            run.http_status = statuses[i % statuses.len()];
            run.redirects = u32::try_from(i).unwrap().min(MAX_REDIRECTS);
            run.finished_at = UNIX_EPOCH + Duration::from_millis(times[i % times.len()]);
            history.push(&run);
            let record = history.last().unwrap();
            assert_eq!(record.reason(), reason);
            assert_eq!(record.success(), reason.is_none());
            assert_eq!(record.http_status(), run.http_status);
            assert_eq!(record.redirects(), run.redirects);
            assert_eq!(record.finished_at(), run.finished_at);
        }
        let mut late = outcome(1, "x");
        late.finished_at = UNIX_EPOCH + Duration::from_millis(1 << FINISHED_BITS);
        late.http_status = Some(1500);
        late.redirects = 99;
        history.push(&late);
        let record = history.last().unwrap();
        assert_eq!(
            record.finished_at(),
            UNIX_EPOCH + Duration::from_millis((1 << FINISHED_BITS) - 1),
            "saturates, does not wrap"
        );
        assert_eq!(record.http_status(), Some(1023));
        assert_eq!(record.redirects(), 15);
    }
}
