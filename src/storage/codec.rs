//! The bytes of what the store keeps: one value per commit (a *batch*), holding one entry
//! per result: its sequence number, the probe's name, then the result followed by the
//! probe's summary as of that result (so a probe's latest entry says what its results
//! alone cannot). A hand-written, versioned little-endian layout (no serialization
//! framework needed for two small structs), read back defensively: bytes that do not
//! decode are a corrupt store, never a panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::FailureReason;
use crate::probe::tls::CertificateInfo;
use crate::probe::{Outcome, Phases, RunId, TlsDetails};

/// Layout version of both values; a store written by another layout is refused.
/// 2: the run id follows the version (so `/api/v1/runs/{id}` answers after a restart).
const VERSION: u8 = 2;

/// A probe's summary, as of one of its results: what the results alone cannot say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Digest of the probe's settings when these were recorded ([`super::digest`]).
    pub digest: [u8; 16],
    /// Failed runs since the last success (beyond the kept results too).
    pub consecutive_failures: u64,
    /// End of the last successful run (beyond the kept results too).
    pub last_success_ns: Option<i64>,
    /// The next planned run when the last result was recorded.
    pub next_run_ns: Option<i64>,
    /// HTTP version of the last answer.
    pub http_version: Option<String>,
    /// The last TLS details that carried a certificate (the expiry gauges keep those).
    pub tls: Option<TlsDetails>,
}

/// Nanoseconds since the Unix epoch (times are kept exact, so restored gauges read the
/// same as before the restart).
pub fn nanos(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The time `ns` nanoseconds after the Unix epoch.
pub fn time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(ns).unwrap_or(0))
}

/// The result of a run as stored: what its history record and the last-run gauges keep,
/// exactly, so that pushing it back gives the same record and the same gauges.
pub fn encode_result(outcome: &Outcome) -> Vec<u8> {
    let mut out = Vec::with_capacity(80 + outcome.message.len());
    out.push(VERSION);
    put_u64(&mut out, outcome.run_id.as_u64());
    out.extend_from_slice(&nanos(outcome.finished_at).to_le_bytes());
    put_u64(&mut out, duration_nanos(outcome.duration));
    for phase in outcome.phases.as_array() {
        put_u64(&mut out, duration_nanos(phase));
    }
    out.extend_from_slice(&outcome.http_status.unwrap_or(0).to_le_bytes());
    put_str(&mut out, outcome.reason.map_or("", FailureReason::as_label));
    out.extend_from_slice(&outcome.attempts.to_le_bytes());
    out.extend_from_slice(&outcome.redirects.to_le_bytes());
    put_opt_str(&mut out, outcome.response_code.as_deref());
    put_str(&mut out, &outcome.message);
    out
}

/// Layout version of a batch's framing.
const BATCH_VERSION: u8 = 1;

/// An empty batch value, to [`push_entry`] into.
pub fn new_batch() -> Vec<u8> {
    vec![BATCH_VERSION]
}

/// What locates an entry: which probe's result it is, and where that probe's results
/// started when it was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// The result's sequence number (the order of a probe's results).
    pub seq: u64,
    /// The sequence number of the oldest result in the probe's ring once this one was in:
    /// its older entries still in the store are not in its history any more.
    pub ring_start: u64,
    /// The probe's name.
    pub name: &'a str,
}

/// Appends to `batch` the entry of a result at `place`: the result ([`encode_result`]'s
/// bytes) and the probe's summary as of it.
pub fn push_entry(batch: &mut Vec<u8>, place: Place<'_>, result: &[u8], summary: &Summary) {
    put_u64(batch, place.seq);
    put_u64(batch, place.ring_start);
    put_str(batch, place.name);
    let length_at = batch.len();
    batch.extend_from_slice(&[0; 4]);
    batch.extend_from_slice(result);
    append_summary_fields(batch, summary);
    let length = u32::try_from(batch.len() - length_at - 4).unwrap_or(u32::MAX);
    batch[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
}

/// One entry of a batch, undecoded.
pub struct Entry<'a> {
    /// Whose result it is, and in which order.
    pub place: Place<'a>,
    /// The result and the summary ([`decode_body`]).
    pub body: &'a [u8],
    /// The whole entry, framing included, to copy it into another batch as it is.
    pub framed: &'a [u8],
}

/// The entries of a batch value, in the order they were pushed; `None` when the framing
/// does not decode (a corrupt store).
pub fn entries(batch: &[u8]) -> Option<Vec<Entry<'_>>> {
    let mut input = Input(batch);
    if input.u8()? != BATCH_VERSION {
        return None;
    }
    let mut entries = Vec::new();
    while !input.0.is_empty() {
        let start = input.0;
        let seq = input.u64()?;
        let ring_start = input.u64()?;
        let name = input.str()?;
        let len = usize::try_from(input.u32()?).ok()?;
        let body = input.take(len)?;
        let framed = &start[..start.len() - input.0.len()];
        entries.push(Entry {
            place: Place {
                seq,
                ring_start,
                name,
            },
            body,
            framed,
        });
    }
    Some(entries)
}

/// An entry's body back: the outcome, which gives the same history record and gauges
/// (without TLS and HTTP version, which the summary keeps), and the summary.
pub fn decode_body(bytes: &[u8]) -> Option<(Outcome, Summary)> {
    let mut input = Input(bytes);
    if input.u8()? != VERSION {
        return None;
    }
    let run_id = RunId::from_u64(input.u64()?);
    let finished_at = time(input.i64()?);
    let duration = Duration::from_nanos(input.u64()?);
    let mut phases = [Duration::ZERO; 5];
    for phase in &mut phases {
        *phase = Duration::from_nanos(input.u64()?);
    }
    let [resolve, connect, tls, processing, transfer] = phases;
    let http_status = input.u16()?;
    let reason = match input.str()? {
        "" => None,
        label => Some(
            FailureReason::ALL
                .into_iter()
                .find(|r| r.as_label() == label)?,
        ),
    };
    let attempts = input.u32()?;
    let redirects = input.u32()?;
    let response_code = input.opt_str()?.map(str::to_owned);
    let message = input.str()?.to_owned();
    let summary = decode_summary(&mut input)?;
    input.end()?;
    let outcome = Outcome {
        run_id,
        success: reason.is_none(),
        reason,
        message,
        http_status: (http_status != 0).then_some(http_status),
        response_code,
        duration,
        phases: Phases {
            resolve,
            connect,
            tls,
            processing,
            transfer,
        },
        attempts,
        redirects,
        tls: None,
        http_version: None,
        started_at: finished_at.checked_sub(duration).unwrap_or(finished_at),
        finished_at,
    };
    Some((outcome, summary))
}

fn append_summary_fields(out: &mut Vec<u8>, summary: &Summary) {
    out.extend_from_slice(&summary.digest);
    put_u64(out, summary.consecutive_failures);
    put_opt_i64(out, summary.last_success_ns);
    put_opt_i64(out, summary.next_run_ns);
    put_opt_str(out, summary.http_version.as_deref());
    match &summary.tls {
        None => out.push(0),
        Some(tls) => {
            out.push(1);
            put_opt_str(out, tls.version.as_deref());
            match &tls.certificate {
                None => out.push(0),
                Some(cert) => {
                    out.push(1);
                    out.extend_from_slice(&cert.earliest_not_after.to_le_bytes());
                    put_str(out, &cert.subject);
                    put_str(out, &cert.issuer);
                    put_u64(out, cert.names.len() as u64);
                    for name in &cert.names {
                        put_str(out, name);
                    }
                }
            }
        }
    }
}

fn decode_summary(input: &mut Input<'_>) -> Option<Summary> {
    let digest = input.take(16)?.try_into().ok()?;
    let consecutive_failures = input.u64()?;
    let last_success_ns = input.opt_i64()?;
    let next_run_ns = input.opt_i64()?;
    let http_version = input.opt_str()?.map(str::to_owned);
    let tls = match input.u8()? {
        0 => None,
        _ => {
            let version = input.opt_str()?.map(str::to_owned);
            let certificate = match input.u8()? {
                0 => None,
                _ => {
                    let earliest_not_after = input.i64()?;
                    let subject = input.str()?.to_owned();
                    let issuer = input.str()?.to_owned();
                    let count = input.u64()?;
                    let mut names = Vec::new();
                    for _ in 0..count.min(1024) {
                        names.push(input.str()?.to_owned());
                    }
                    Some(CertificateInfo {
                        earliest_not_after,
                        subject,
                        issuer,
                        names,
                    })
                }
            };
            Some(TlsDetails {
                version,
                certificate,
            })
        }
    };
    Some(Summary {
        digest,
        consecutive_failures,
        last_success_ns,
        next_run_ns,
        http_version,
        tls,
    })
}

fn duration_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_opt_i64(out: &mut Vec<u8>, value: Option<i64>) {
    match value {
        None => out.push(0),
        Some(value) => {
            out.push(1);
            out.extend_from_slice(&value.to_le_bytes());
        }
    }
}

fn put_str(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.push(0),
        Some(text) => {
            out.push(1);
            put_str(out, text);
        }
    }
}

/// Bytes being read; every read is `None` past the end.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, count: usize) -> Option<&'a [u8]> {
        if self.0.len() < count {
            return None;
        }
        let (head, rest) = self.0.split_at(count);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn opt_i64(&mut self) -> Option<Option<i64>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.i64().map(Some),
        }
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn str(&mut self) -> Option<&'a str> {
        let len = usize::try_from(self.u32()?).ok()?;
        std::str::from_utf8(self.take(len)?).ok()
    }

    fn opt_str(&mut self) -> Option<Option<&'a str>> {
        match self.u8()? {
            0 => Some(None),
            _ => self.str().map(Some),
        }
    }

    fn end(&self) -> Option<()> {
        self.0.is_empty().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{History, Record};

    fn outcome(reason: Option<FailureReason>, code: Option<&str>) -> Outcome {
        Outcome {
            run_id: RunId::next(),
            success: reason.is_none(),
            reason,
            message: "Client rafraîchi".to_owned(),
            http_status: Some(500),
            response_code: code.map(str::to_owned),
            duration: Duration::from_micros(52_431),
            phases: Phases {
                connect: Duration::from_micros(123),
                processing: Duration::from_micros(50_000),
                ..Phases::default()
            },
            attempts: 2,
            redirects: 1,
            tls: None,
            http_version: Some("1.1"),
            started_at: UNIX_EPOCH,
            finished_at: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
        }
    }

    #[test]
    fn a_record_comes_back_as_an_outcome_giving_the_same_record() {
        for (reason, code) in [(None, Some("0")), (Some(FailureReason::HttpStatus), None)] {
            let original = outcome(reason, code);
            let mut history = History::new(2);
            history.push(&original);
            let mut batch = new_batch();
            let place = Place {
                seq: 7,
                ring_start: 3,
                name: "p",
            };
            push_entry(
                &mut batch,
                place,
                &encode_result(&original),
                &Summary::default(),
            );
            let entries = entries(&batch).expect("decodes");
            assert_eq!(entries[0].place, place);
            assert_eq!(entries[0].framed, &batch[1..]);
            let (back, _) = decode_body(entries[0].body).expect("decodes");
            history.push(&back);
            let [first, second]: [&Record; 2] =
                history.iter().collect::<Vec<_>>().try_into().unwrap();
            assert_eq!(format!("{first:?}"), format!("{second:?}"));
        }
    }

    #[test]
    fn a_summary_comes_back_the_same() {
        let summary = Summary {
            digest: [7; 16],
            consecutive_failures: 3,
            last_success_ns: Some(1_795_000_000_123),
            next_run_ns: None,
            http_version: Some("1.1".to_owned()),
            tls: Some(TlsDetails {
                version: Some("TLSv1.3".to_owned()),
                certificate: Some(CertificateInfo {
                    earliest_not_after: 1_900_000_000,
                    subject: "erp.example".to_owned(),
                    issuer: "CA".to_owned(),
                    names: vec!["erp.example".to_owned()],
                }),
            }),
        };
        let mut history = History::new(1);
        let original = outcome(None, Some("0"));
        history.push(&original);
        let mut batch = new_batch();
        let place = |seq, name| Place {
            seq,
            ring_start: 0,
            name,
        };
        push_entry(
            &mut batch,
            place(1, "p"),
            &encode_result(&original),
            &summary,
        );
        let other = Summary::default();
        push_entry(&mut batch, place(2, "q"), &encode_result(&original), &other);
        let entries = entries(&batch).unwrap();
        assert_eq!(entries.len(), 2);
        let (_, back) = decode_body(entries[0].body).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn truncated_or_extended_bytes_do_not_decode() {
        let mut batch = new_batch();
        let place = Place {
            seq: 1,
            ring_start: 0,
            name: "p",
        };
        let result = encode_result(&outcome(None, Some("0")));
        push_entry(&mut batch, place, &result, &Summary::default());
        for len in 0..batch.len() {
            let whole = entries(&batch[..len]).is_some_and(|entries| entries.len() == 1);
            assert!(!whole, "{len}");
        }
        let body = entries(&batch).unwrap()[0].body.to_vec();
        for len in 0..body.len() {
            assert!(decode_body(&body[..len]).is_none(), "{len}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(decode_body(&longer).is_none());
    }
}
