//! The per-probe families in the Prometheus text format (version 0.0.4) or OpenMetrics 1.0
//! (the same sample lines, with exemplars; headers and the end marker from
//! `openmetrics.rs`), written by hand.
//!
//! Why by hand rather than through the `prometheus` crate's encoder: speed and memory at
//! 10,000 probes. That encoder only takes `MetricFamily` protobuf objects, so a custom
//! collector would build, on every scrape, one `Metric` with owned label-pair strings per
//! series (420,029 series at 10,000 probes), then encode them all into one buffer. This
//! writer takes the list of probes when the scrape starts ([`Page`]), then writes the page
//! in [`Part`]s (in order, or several at once on other threads), each probe's label string
//! rendered once per scrape and each family's samples of a probe read under one hold of
//! that probe's lock (so a histogram's buckets, sum and count agree; a run that lands while
//! the page is written may show in the later families only, as with any exporter's scrape).
//! Copying every probe's values first cost about 14 MB per scrape at 10,000 probes. Measured by
//! `bench/run.py` (last figures in the issue notes): at 10,000 probes the page is 30,959 KiB,
//! written in 60-82 ms (1,997 KiB gzipped in 55-69 ms) on the two render threads; writing it
//! whole into one buffer, as the crate's encoder does, left a 30 MB allocation that the
//! allocator kept between scrapes.
//! The crate's encoder, fed the same series, has not been measured side by side.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::{Arc, LazyLock};

use crate::probe::{FailureReason, PHASE_NAMES};

use super::openmetrics;
use super::store::{Exemplar, LastRun, ProbeMetrics, ProbeValues};
use super::{FamilyDef, Format, PROBE_FAMILIES, ProbeFamily, names};

/// `result` labels of `webhook_probe_runs_total`, in [`ProbeValues::runs`] order.
static RESULT_LABELS: LazyLock<[String; 2]> =
    LazyLock::new(|| ["success", "failure"].map(|result| label_pair(names::RESULT, result)));

/// `phase` labels, in [`crate::probe::PHASE_NAMES`] order.
static PHASE_LABELS: LazyLock<[String; 5]> =
    LazyLock::new(|| PHASE_NAMES.map(|phase| label_pair(names::PHASE, phase)));

/// `reason` labels, in [`FailureReason::ALL`] order.
static REASON_LABELS: LazyLock<[String; FailureReason::ALL.len()]> =
    LazyLock::new(|| FailureReason::ALL.map(|reason| label_pair(names::REASON, reason.as_label())));

/// Appends `name="value"` (comma-separated) with the text format's escaping.
pub(super) fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `name="value"` alone, with the text format's escaping.
fn label_pair(name: &str, value: &str) -> String {
    let mut pair = String::new();
    push_label(&mut pair, name, value);
    pair
}

fn header(out: &mut String, family: &FamilyDef, format: Format) {
    let (name, kind, help) = (family.name, family.kind.as_str(), family.help);
    match format {
        Format::Text => {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        Format::OpenMetrics => openmetrics::header(out, name, kind, help),
    }
}

/// Writes one sample line of `family`: `name{labels,extra} value`, the name followed by
/// `suffix` (`_bucket`, `_sum`, `_count` of a histogram, else empty).
fn sample(
    out: &mut String,
    family: &FamilyDef,
    suffix: &str,
    labels: &str,
    extra: &str,
    value: impl SampleValue,
) {
    sample_with(out, family, suffix, labels, extra, value, None);
}

/// A sample's value, written without the formatting machinery where it can be: most values
/// of the page are counts, and `write!` was about a fifth of a scrape's CPU.
pub(super) trait SampleValue {
    fn write_to(self, out: &mut String);
}

impl SampleValue for u64 {
    fn write_to(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl SampleValue for u8 {
    fn write_to(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

impl SampleValue for i32 {
    fn write_to(self, out: &mut String) {
        out.push_str(itoa::Buffer::new().format(self));
    }
}

/// Whole numbers below 2^53 in magnitude (a status, a version, a ratio of 1) written as
/// integers, as `Display` writes them (`200`, not `200.0`); the rest through `Display`.
impl SampleValue for f64 {
    fn write_to(self, out: &mut String) {
        const EXACT: f64 = 9_007_199_254_740_992.0;
        let negative_zero = self == 0.0 && self.is_sign_negative();
        if self.fract() == 0.0 && self.abs() < EXACT && !negative_zero {
            // Exact: a whole number below 2^53 converts without loss.
            #[allow(clippy::cast_possible_truncation)]
            out.push_str(itoa::Buffer::new().format(self as i64));
        } else {
            let _ = write!(out, "{self}");
        }
    }
}

/// [`sample`] with an exemplar (given only for OpenMetrics output).
fn sample_with(
    out: &mut String,
    family: &FamilyDef,
    suffix: &str,
    labels: &str,
    extra: &str,
    value: impl SampleValue,
    exemplar: Option<&Exemplar>,
) {
    out.push_str(family.name);
    out.push_str(suffix);
    out.push('{');
    out.push_str(labels);
    if !extra.is_empty() {
        out.push(',');
        out.push_str(extra);
    }
    out.push_str("} ");
    value.write_to(out);
    if let Some(exemplar) = exemplar {
        openmetrics::exemplar(out, exemplar);
    }
    out.push('\n');
}

/// One probe at render time: its label pairs (`probe="a",dossier="998"`) and its series. Its
/// values are read under its lock family by family, not copied: a copy of every probe's
/// values was about 14 MB at 10,000 probes for every scrape.
pub(crate) struct Row {
    labels: String,
    probe: Arc<ProbeMetrics>,
    /// Index into [`Page::le_labels`] of this probe's bucket list.
    le: usize,
}

/// How one per-probe family writes the samples of one probe, under the family's name, from
/// the probe's values as they are (its lock held).
pub(super) type WriteRow = fn(&mut String, &FamilyDef, &Page, &Row, &ProbeValues);

/// Writes a gauge of the last run, when there was one and it has a value.
fn last_gauge(
    out: &mut String,
    family: &FamilyDef,
    row: &Row,
    values: &ProbeValues,
    value: fn(&LastRun) -> Option<f64>,
) {
    if let Some(v) = values.last.as_ref().and_then(value) {
        sample(out, family, "", &row.labels, "", v);
    }
}

// The writers of the per-probe families, named in [`PROBE_FAMILIES`].

pub(super) fn success(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| {
        Some(f64::from(u8::from(l.success)))
    });
}

pub(super) fn duration_histogram(
    out: &mut String,
    family: &FamilyDef,
    page: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    let exemplars = page.format == Format::OpenMetrics;
    let mut cumulative = 0;
    for (le, bucket) in page.le_labels[row.le].1.iter().zip(&values.buckets) {
        cumulative += bucket.count;
        let exemplar = bucket.exemplar.as_ref().filter(|_| exemplars);
        sample_with(
            out,
            family,
            "_bucket",
            &row.labels,
            le,
            cumulative,
            exemplar,
        );
    }
    // The overflow bucket, after one per bound, holds the runs above them all.
    let overflow = values.buckets.last().and_then(|b| b.exemplar.as_ref());
    sample_with(
        out,
        family,
        "_bucket",
        &row.labels,
        "le=\"+Inf\"",
        values.count,
        overflow.filter(|_| exemplars),
    );
    sample(out, family, "_sum", &row.labels, "", values.sum);
    sample(out, family, "_count", &row.labels, "", values.count);
}

pub(super) fn last_duration(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| Some(l.duration));
}

pub(super) fn phase_durations(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if let Some(last) = &values.last {
        for (phase, seconds) in PHASE_LABELS.iter().zip(last.phases) {
            sample(out, family, "", &row.labels, phase, seconds);
        }
    }
}

pub(super) fn http_status(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| Some(f64::from(l.http_status)));
}

pub(super) fn response_code(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| l.response_code);
}

pub(super) fn runs(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    for (result, count) in RESULT_LABELS.iter().zip(values.runs) {
        sample(out, family, "", &row.labels, result, count);
    }
}

pub(super) fn failures(
    out: &mut String,
    family: &FamilyDef,
    page: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    let exemplars = page.format == Format::OpenMetrics;
    for (index, (reason, count)) in REASON_LABELS.iter().zip(values.failures).enumerate() {
        let exemplar = values
            .failure_exemplars
            .as_ref()
            .and_then(|seen| seen.get(index)?.as_ref())
            .filter(|_| exemplars);
        sample_with(out, family, "", &row.labels, reason, count, exemplar);
    }
}

pub(super) fn consecutive_failures(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if values.last.is_some() {
        let count = values.consecutive_failures;
        sample(out, family, "", &row.labels, "", count);
    }
}

pub(super) fn last_run(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| Some(l.finished));
}

pub(super) fn last_success(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if let Some(at) = values.last_success {
        sample(out, family, "", &row.labels, "", at);
    }
}

pub(super) fn skipped(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    sample(out, family, "", &row.labels, "", values.skipped);
}

pub(super) fn retries(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    sample(out, family, "", &row.labels, "", values.retries);
}

pub(super) fn redirects(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| Some(f64::from(l.redirects)));
}

pub(super) fn http_version(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    last_gauge(out, family, row, values, |l| l.http_version);
}

pub(super) fn tls_cert_expiry(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if let Some(tls) = &values.tls {
        sample(out, family, "", &row.labels, "", tls.earliest_not_after);
    }
}

pub(super) fn tls_info(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if let Some(tls) = &values.tls {
        sample(out, family, "", &row.labels, &tls.info_labels, 1);
    }
}

pub(super) fn probe_info(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    _: &ProbeValues,
) {
    sample(out, family, "", &row.labels, &row.probe.info_labels, 1);
}

pub(super) fn maintenance(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    let open = u8::from(values.maintenance);
    sample(out, family, "", &row.labels, "", open);
}

pub(super) fn next_run(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    values: &ProbeValues,
) {
    if let Some(at) = values.next_run {
        sample(out, family, "", &row.labels, "", at);
    }
}

/// From the config rather than a run: present from registration, and gone with the probe's
/// series when a reload removes the objective (the probe is registered anew then).
pub(super) fn objective(
    out: &mut String,
    family: &FamilyDef,
    _: &Page,
    row: &Row,
    _: &ProbeValues,
) {
    if let Some(ratio) = row.probe.spec.objective {
        sample(out, family, "", &row.labels, "", ratio);
    }
}

/// Size of the pieces [`Rendering`] writes: memory stays bounded whatever the probe count,
/// and no piece is large enough for the allocator to keep it around.
const CHUNK_BYTES: usize = 64 * 1024;

/// Bytes a family's `# HELP` and `# TYPE` lines are counted as when a page is split.
const HEADER_ESTIMATE: usize = 256;

/// Rows sampled per family to estimate its size when a page is split.
const ROWS_SAMPLED: usize = 16;

/// A `/metrics` page to write: the exporter-wide families, rendered when the scrape started,
/// then every per-probe family over the probes there were then. It is written in [`Part`]s,
/// one after the other ([`Rendering`]) or several at once on other threads: each part reads
/// the probes' values as they are when it is written.
///
/// A page is a list of positions: the exporter-wide families first, then, for each
/// per-probe family, its header and one position per probe.
pub struct Page {
    /// The exporter-wide families, written first.
    head: String,
    rows: Vec<Row>,
    /// Distinct bucket lists with their rendered `le` labels.
    le_labels: Vec<(Arc<[f64]>, Vec<String>)>,
    /// Text or OpenMetrics (exemplars, `# EOF`).
    format: Format,
}

/// Positions `start..end` of a [`Page`]: written alone, the parts of a page make it whole
/// when joined in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    start: usize,
    end: usize,
}

impl Part {
    /// Whether this part ends the page (OpenMetrics' `# EOF` is written with it).
    pub fn is_last_of(&self, page: &Page) -> bool {
        self.end == page.positions()
    }
}

impl Page {
    pub(super) fn new(head: String, probes: Vec<Arc<ProbeMetrics>>, format: Format) -> Self {
        // Every row carries the union of the probes' static label names, empty where a probe
        // has none. The format does not require it (series of one family may carry different
        // label names, and an empty label equals an absent one): it costs bytes only, and
        // keeps the page as it has always been.
        let label_names: BTreeSet<String> = probes
            .iter()
            .flat_map(|probe| probe.spec.labels.keys().cloned())
            .collect();
        let mut le_labels: Vec<(Arc<[f64]>, Vec<String>)> = Vec::new();
        let rows = probes
            .into_iter()
            .map(|probe| {
                let mut labels = String::new();
                push_label(&mut labels, names::PROBE, &probe.spec.name);
                for name in &label_names {
                    push_label(
                        &mut labels,
                        name,
                        probe.spec.labels.get(name).map_or("", String::as_str),
                    );
                }
                let le = le_labels
                    .iter()
                    .position(|(b, _)| **b == *probe.buckets)
                    .unwrap_or_else(|| {
                        let rendered = probe
                            .buckets
                            .iter()
                            .map(|bound| label_pair(names::LE, &bound.to_string()));
                        le_labels.push((probe.buckets.clone(), rendered.collect()));
                        le_labels.len() - 1
                    });
                Row { labels, probe, le }
            })
            .collect();
        Self {
            head,
            rows,
            le_labels,
            format,
        }
    }

    /// The number of positions: the head, then a header and a position per probe for each
    /// per-probe family.
    fn positions(&self) -> usize {
        1 + PROBE_FAMILIES.len() * (self.rows.len() + 1)
    }

    /// Splits the page into parts of about `bytes` each (the last may be smaller), from each
    /// family's size over a few of its rows: a histogram's row is ten times a gauge's.
    pub fn parts(&self, bytes: usize) -> Vec<Part> {
        let bytes = bytes.max(1);
        let mut ends = Vec::new();
        let (mut position, mut filled) = (1, self.head.len());
        for family in PROBE_FAMILIES {
            let row_bytes = self.row_estimate(family);
            position += 1;
            filled += HEADER_ESTIMATE;
            let mut left = self.rows.len();
            while left > 0 {
                if filled >= bytes {
                    ends.push(position);
                    filled = 0;
                }
                let fitting = (bytes - filled).div_ceil(row_bytes).min(left);
                filled += fitting * row_bytes;
                position += fitting;
                left -= fitting;
            }
        }
        debug_assert_eq!(position, self.positions());
        if ends.last() != Some(&position) {
            ends.push(position);
        }
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let part = Part { start, end };
                start = end;
                part
            })
            .collect()
    }

    /// Bytes of one of `family`'s rows, on average over up to [`ROWS_SAMPLED`] probes spread
    /// over the page (at least one byte).
    fn row_estimate(&self, family: &ProbeFamily) -> usize {
        let sampled = self.rows.len().min(ROWS_SAMPLED);
        if sampled == 0 {
            return 1;
        }
        let mut scratch = String::new();
        for index in 0..sampled {
            let row = &self.rows[index * self.rows.len() / sampled];
            (family.write)(&mut scratch, &family.def, self, row, &row.probe.values());
        }
        (scratch.len() / sampled).max(1)
    }

    /// Appends `part` of the page to `out`.
    pub fn write(&self, part: Part, out: &mut String) {
        let stride = self.rows.len() + 1;
        for position in part.start..part.end {
            let Some(position) = position.checked_sub(1) else {
                out.push_str(&self.head);
                continue;
            };
            let Some(family) = PROBE_FAMILIES.get(position / stride) else {
                break;
            };
            match (position % stride).checked_sub(1) {
                None => header(out, &family.def, self.format),
                Some(row) => {
                    let row = &self.rows[row];
                    // One family's samples of a probe under one hold of its lock: a
                    // histogram's buckets, sum and count always agree.
                    let values = row.probe.values();
                    (family.write)(out, &family.def, self, row, &values);
                }
            }
        }
        if part.is_last_of(self) && self.format == Format::OpenMetrics {
            out.push_str(openmetrics::EOF);
        }
    }
}

/// A [`Page`] written part after part as it is read, on the reader's thread.
pub struct Rendering {
    page: Page,
    parts: std::vec::IntoIter<Part>,
}

impl From<Page> for Rendering {
    fn from(page: Page) -> Self {
        let parts = page.parts(CHUNK_BYTES).into_iter();
        Self { page, parts }
    }
}

impl Iterator for Rendering {
    type Item = String;

    /// The next piece of the page (about 64 KiB), `None` at the end.
    fn next(&mut self) -> Option<String> {
        let part = self.parts.next()?;
        let mut out = String::with_capacity(CHUNK_BYTES + 4096);
        self.page.write(part, &mut out);
        Some(out)
    }
}
