//! What the OpenMetrics 1.0 text format writes differently from the Prometheus text format:
//! family headers (a counter's family is named without `_total`; `# UNIT`), exemplars, the
//! exporter-wide families of the `prometheus` registry (its crate only encodes the older
//! format), and the `# EOF` end marker. The per-probe samples are written by `text.rs` for
//! both formats: their lines are the same but for the exemplars.
//!
//! Label values and `le` bounds are spelled exactly as in the text format, so a Prometheus
//! that starts scraping OpenMetrics keeps the same series (`le="1"`, not `le="1.0"`: 2.x
//! does not normalize them).

use std::fmt::{self, Write};

use prometheus::proto::{MetricFamily, MetricType};

use super::store::Exemplar;
use super::text::push_label;

/// The end of an OpenMetrics page.
pub(super) const EOF: &str = "# EOF\n";

/// The unit a family name ends with, written as `# UNIT` (OpenMetrics requires the name to
/// end with it). Only the base units the exporter's names use.
fn unit(family: &str) -> Option<&'static str> {
    ["seconds", "bytes"].into_iter().find(|unit| {
        family
            .strip_suffix(unit)
            .is_some_and(|rest| rest.ends_with('_'))
    })
}

/// The family name of a metric: a counter's samples end in `_total`, its family does not.
pub(super) fn family_name<'a>(name: &'a str, kind: &str) -> &'a str {
    match kind {
        "counter" => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

/// `# HELP`, `# TYPE` and, where it applies, `# UNIT` of a family whose samples are named
/// `name` (with `_total` for a counter).
pub(super) fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let family = family_name(name, kind);
    out.push_str("# HELP ");
    out.push_str(family);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {family} {kind}");
    if let Some(unit) = unit(family) {
        let _ = writeln!(out, "# UNIT {family} {unit}");
    }
}

/// A number as OpenMetrics spells it (`+Inf`, `-Inf`, `NaN`; Rust writes `inf`).
pub(super) struct Number(pub(super) f64);

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            v if v.is_nan() => f.write_str("NaN"),
            v if v == f64::INFINITY => f.write_str("+Inf"),
            v if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            v => write!(f, "{v}"),
        }
    }
}

/// ` # {run_id="..."} value timestamp`: appended to a sample line, before its newline.
pub(super) fn exemplar(out: &mut String, exemplar: &Exemplar) {
    let _ = write!(
        out,
        " # {{{}=\"{}\"}} {} {:.3}",
        super::names::RUN_ID,
        exemplar.run_id,
        Number(exemplar.value),
        exemplar.timestamp
    );
}

/// The registry's families (exporter-wide, `process_*`) in OpenMetrics.
pub(super) fn encode_families(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "unknown",
        };
        // A counter's samples end in `_total` in OpenMetrics: a name without it would be a
        // different series than in the text format (a test checks that none lacks it).
        let sample_name = match kind {
            "counter" if !name.ends_with("_total") => format!("{name}_total"),
            _ => name.to_owned(),
        };
        header(&mut out, &sample_name, kind, family.help());
        for metric in family.get_metric() {
            let mut labels = String::new();
            for pair in metric.get_label() {
                push_label(&mut labels, pair.name(), pair.value());
            }
            let line = |out: &mut String, suffix: &str, extra: Option<(&str, &str)>, value| {
                let mut labels = labels.clone();
                if let Some((label, label_value)) = extra {
                    push_label(&mut labels, label, label_value);
                }
                let labels = if labels.is_empty() {
                    labels
                } else {
                    format!("{{{labels}}}")
                };
                let _ = writeln!(out, "{sample_name}{suffix}{labels} {}", Number(value));
            };
            match family.get_field_type() {
                MetricType::COUNTER => line(&mut out, "", None, metric.get_counter().get_value()),
                MetricType::GAUGE => line(&mut out, "", None, metric.get_gauge().get_value()),
                // No untyped family is registered; the crate marks its accessor deprecated.
                #[allow(deprecated)]
                MetricType::UNTYPED => line(&mut out, "", None, metric.get_untyped().get_value()),
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let mut has_inf = false;
                    for bucket in histogram.get_bucket() {
                        let bound = bucket.upper_bound();
                        has_inf |= bound == f64::INFINITY;
                        // The text encoder's spelling of a bound, for the same series.
                        let le = if bound == f64::INFINITY {
                            "+Inf".to_owned()
                        } else {
                            bound.to_string()
                        };
                        let count = bucket.cumulative_count() as f64;
                        line(&mut out, "_bucket", Some(("le", &le)), count);
                    }
                    let count = histogram.get_sample_count() as f64;
                    if !has_inf {
                        line(&mut out, "_bucket", Some(("le", "+Inf")), count);
                    }
                    line(&mut out, "_sum", None, histogram.get_sample_sum());
                    line(&mut out, "_count", None, count);
                }
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for quantile in summary.get_quantile() {
                        let q = quantile.quantile().to_string();
                        line(&mut out, "", Some(("quantile", &q)), quantile.value());
                    }
                    line(&mut out, "_sum", None, summary.sample_sum());
                    line(&mut out, "_count", None, summary.sample_count() as f64);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_base_unit_a_family_name_ends_with() {
        assert_eq!(unit("webhook_probe_duration_seconds"), Some("seconds"));
        assert_eq!(unit("process_resident_memory_bytes"), Some("bytes"));
        assert_eq!(unit("process_cpu_seconds"), Some("seconds"));
        assert_eq!(unit("webhook_probe_success"), None);
        assert_eq!(unit("seconds"), None, "a name that is only a unit");
        assert_eq!(unit("webhook_probe_nanoseconds"), None);
    }

    #[test]
    fn a_counter_family_drops_total_and_a_help_text_is_escaped() {
        let mut out = String::new();
        header(
            &mut out,
            "process_cpu_seconds_total",
            "counter",
            "a \"b\"\nc\\",
        );
        assert_eq!(
            out,
            "# HELP process_cpu_seconds a \\\"b\\\"\\nc\\\\\n# TYPE process_cpu_seconds counter\n# UNIT process_cpu_seconds seconds\n"
        );
        assert_eq!(Number(f64::INFINITY).to_string(), "+Inf");
        assert_eq!(Number(0.25).to_string(), "0.25");
    }
}
