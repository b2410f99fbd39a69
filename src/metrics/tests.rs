//! Tests of the `/metrics` page as a whole: every family, its name on each sample, its
//! label names, and the pieces it is written in.

use std::collections::BTreeSet;

use crate::probe::FailureReason;

use super::*;

/// The per-probe family that sets label `label` (`url`: the info family, `result`: runs).
fn family_setting(label: &str) -> &'static FamilyDef {
    PROBE_FAMILIES
        .iter()
        .map(|family| &family.def)
        .find(|family| family.labels.contains(&label))
        .unwrap()
}

#[test]
fn a_page_larger_than_a_piece_keeps_every_family_whole_and_in_order() {
    let mut text = String::from("probes:\n");
    for i in 0..2000 {
        text.push_str(&format!(
            "  - {{name: p{i:04}, url: 'http://127.0.0.1:1/', labels: {{n: '{i}'}}}}\n"
        ));
    }
    let config = crate::config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
    let metrics = Metrics::new().unwrap();
    for spec in &config.probes {
        metrics.register_probe(spec, &[0.1, 1.0]);
    }
    let pieces: Vec<String> = metrics.render().collect();
    assert!(pieces.len() > 5, "{} pieces", pieces.len());
    let page = pieces.concat();
    for family in PROBE_FAMILIES {
        let family = &family.def;
        assert_eq!(
            page.matches(&format!("# TYPE {} ", family.name)).count(),
            1,
            "{}",
            family.name
        );
    }
    // Each family's samples follow its own header, never another's.
    let info = family_setting(names::URL).name;
    let header = page.find(&format!("# TYPE {info} ")).unwrap();
    assert!(page[header..].contains(&format!("{info}{{probe=\"p1999\",n=\"1999\",url=")));
    let runs = family_setting(names::RESULT).name;
    assert_eq!(page.matches(&format!("{runs}{{")).count(), 4000);
    assert!(page.ends_with('\n'));
}

#[test]
fn an_empty_config_still_lists_every_family_once() {
    let page = Metrics::new().unwrap().encode();
    for family in PROBE_FAMILIES {
        let family = &family.def;
        assert_eq!(
            page.matches(&format!("# TYPE {} ", family.name)).count(),
            1,
            "{}",
            family.name
        );
    }
}

/// A run that fills every per-probe family (TLS, Divalto code, redirects, retries).
fn full_outcome(success: bool) -> Outcome {
    let now = SystemTime::now();
    Outcome {
        run_id: crate::probe::RunId::next(),
        success,
        reason: (!success).then_some(FailureReason::WebhookError),
        message: "Divalto code 400".into(),
        http_status: Some(200),
        response_code: Some("400".into()),
        duration: Duration::from_millis(5),
        phases: crate::probe::Phases::default(),
        attempts: 2,
        redirects: 1,
        tls: Some(crate::probe::TlsDetails {
            version: Some("TLSv1.3".into()),
            certificate: Some(crate::probe::tls::CertificateInfo {
                earliest_not_after: 2_000_000_000,
                subject: "erp.example.com".into(),
                issuer: "Example CA".into(),
                names: vec!["erp.example.com".into()],
            }),
        }),
        http_version: Some("1.1"),
        started_at: now,
        finished_at: now,
    }
}

/// A page where every family has samples: one probe labelled `team=erp`, two full runs.
fn full_page() -> String {
    full_page_as(Format::Text)
}

/// [`full_page`] in `format`.
fn full_page_as(format: Format) -> String {
    let config = crate::config::parse(
        std::path::Path::new("t.yaml"),
        "probes:\n  - {name: a, url: 'https://127.0.0.1:1/', labels: {team: erp}, objective: 99.5%}\n",
    )
    .unwrap();
    let metrics = Metrics::new().unwrap();
    metrics.observe_lag(Duration::from_millis(1));
    metrics.config_loaded(true);
    let probe = metrics.register_probe(&config.probes[0], &[0.1, 1.0]);
    metrics.record(&probe, &full_outcome(true));
    metrics.record(&probe, &full_outcome(false));
    probe.skipped();
    probe.set_next_run(Some(std::time::SystemTime::now()));
    metrics.render_as(format).collect()
}

#[test]
fn every_sample_carries_the_name_of_the_family_whose_header_it_follows() {
    let page = full_page();
    let mut family: Option<(&str, &str)> = None;
    let mut samples = 0;
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            family = Some((name, kind));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap();
        let (family, kind) = family.unwrap_or_else(|| panic!("{name} before any header"));
        let own = name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_suffix(suffix) == Some(family)));
        assert!(own, "{name} is written under the header of {family}");
        samples += 1;
    }
    assert!(samples > 40, "{samples} samples");
}

#[test]
fn every_label_name_on_a_full_page_is_refused_as_a_static_label() {
    // Arrange: a page where every family has samples.
    let page = full_page();
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&page)
        .unwrap_or_else(|e| panic!("{e:?}\n{page}"));
    for family in PROBE_FAMILIES {
        let family = &family.def;
        let samples = exposition
            .families
            .get(family.name)
            .map_or(0, |f| f.iter_samples().count());
        assert!(
            samples > 0,
            "{} has no sample: populate it here",
            family.name
        );
    }

    // Act: every label name the page carries (the parser folds `le` into histograms).
    let mut on_page = BTreeSet::new();
    for family in exposition.families.values() {
        if family.family_type == openmetrics_parser::PrometheusType::Histogram {
            on_page.insert("le".to_owned());
        }
        on_page.extend(family.get_label_names().iter().cloned());
    }
    on_page.remove("team");

    // Assert: none of them can be a static label.
    assert!(on_page.len() > 10, "{on_page:?}");
    let accepted: Vec<&String> = on_page
        .iter()
        .filter(|name| {
            let text = format!(
                "probes:\n  - {{name: a, url: 'http://127.0.0.1:1/', labels: {{{name}: x}}}}\n"
            );
            match crate::config::parse(std::path::Path::new("t.yaml"), &text) {
                Ok(_) => true,
                Err(errors) => !errors.to_string().contains("is set by the exporter itself"),
            }
        })
        .collect();
    assert!(
        accepted.is_empty(),
        "accepted as static labels: {accepted:?}"
    );
}

#[test]
fn each_family_sets_the_label_names_its_definition_lists() {
    let page = full_page();
    let exposition = openmetrics_parser::prometheus::parse_prometheus(&page)
        .unwrap_or_else(|e| panic!("{e:?}\n{page}"));
    let exporter_wide = [
        &CONFIG_LAST_RELOAD_SUCCESSFUL,
        &CONFIG_LAST_RELOAD_SUCCESS_TIMESTAMP,
        &PROBES_CONFIGURED,
        &PROBES_IN_FLIGHT,
        &SCHEDULE_LAG,
        &BUILD_INFO,
        &SHARD_INFO,
    ];
    let per_probe = PROBE_FAMILIES.iter().map(|family| &family.def);
    for (family, per_probe) in exporter_wide
        .into_iter()
        .map(|f| (f, false))
        .chain(per_probe.map(|f| (f, true)))
    {
        let mut expected: BTreeSet<&str> = family.labels.iter().copied().collect();
        if per_probe {
            expected.extend([names::PROBE, "team"]);
        }
        // The parser folds `le` into its histogram samples.
        if family.kind == Kind::Histogram {
            assert!(expected.remove(names::LE), "{} lists no le", family.name);
        }
        let on_page: BTreeSet<&str> = exposition
            .families
            .get(family.name)
            .unwrap_or_else(|| panic!("{} is not on the page", family.name))
            .get_label_names()
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(on_page, expected, "{}", family.name);
    }
}

/// Parses an OpenMetrics page with `openmetrics-parser`, which refuses a `# UNIT` on a
/// histogram (the OpenMetrics specification forbids units on info and stateset families
/// only): those lines are checked here, then left out of what it parses.
fn parse_openmetrics(
    page: &str,
) -> openmetrics_parser::MetricsExposition<
    openmetrics_parser::OpenMetricsType,
    openmetrics_parser::OpenMetricsValue,
> {
    let mut histograms = BTreeSet::new();
    let mut kept = String::new();
    for line in page.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" histogram"))
        {
            histograms.insert(name.to_owned());
        }
        match line.strip_prefix("# UNIT ") {
            Some(rest) if histograms.contains(rest.split(' ').next().unwrap_or("")) => {
                let (name, unit) = rest.split_once(' ').unwrap();
                assert!(name.ends_with(&format!("_{unit}")), "{line}");
            }
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    openmetrics_parser::openmetrics::parse_openmetrics(&kept)
        .unwrap_or_else(|e| panic!("{e:?}\n{page}"))
}

#[test]
fn every_counter_is_named_with_total_as_openmetrics_requires() {
    // A counter without it would be a different series in OpenMetrics than in text.
    let registry = Metrics::new().unwrap().registry.gather();
    let exporter_wide = registry
        .iter()
        .filter(|f| f.get_field_type() == prometheus::proto::MetricType::COUNTER)
        .map(|f| f.name().to_owned());
    let per_probe = PROBE_FAMILIES
        .iter()
        .filter(|f| f.def.kind == Kind::Counter)
        .map(|f| f.def.name.to_owned());
    let counters: Vec<String> = exporter_wide.chain(per_probe).collect();
    assert!(counters.len() >= 4, "{counters:?}");
    for name in counters {
        assert!(name.ends_with("_total"), "{name}");
    }
}

#[test]
fn a_full_openmetrics_page_parses_with_every_family_and_exemplars_naming_the_runs() {
    // Arrange: the full page, in OpenMetrics.
    let page = full_page_as(Format::OpenMetrics);

    // Act
    let exposition = parse_openmetrics(&page);

    // Assert: every family under its OpenMetrics name, with its samples.
    assert!(page.ends_with("\n# EOF\n"));
    assert_eq!(page.matches("# EOF").count(), 1);
    for family in PROBE_FAMILIES {
        let name = openmetrics::family_name(family.def.name, family.def.kind.as_str());
        let samples = exposition
            .families
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .iter_samples()
            .count();
        assert!(samples > 0, "{name}");
    }
    assert!(page.contains("# UNIT webhook_probe_duration_seconds seconds\n"));
    assert!(page.contains("# UNIT webhook_exporter_schedule_lag_seconds seconds\n"));
    assert_eq!(
        exposition.families["webhook_probe_last_duration_seconds"].unit,
        "seconds"
    );
    assert_eq!(exposition.families["process_cpu_seconds"].unit, "seconds");
    // Two runs of 5 ms: the 0.1 bucket holds the latest; the failure's webhook_error count.
    let bucket_exemplars: Vec<String> = page
        .lines()
        .filter(|l| l.starts_with("webhook_probe_duration_seconds_bucket") && l.contains(" # {"))
        .map(str::to_owned)
        .collect();
    assert_eq!(bucket_exemplars.len(), 1, "{bucket_exemplars:?}");
    assert!(
        bucket_exemplars[0].contains("le=\"0.1\"} 2 # {run_id=\""),
        "{bucket_exemplars:?}"
    );
    assert!(
        bucket_exemplars[0].contains("\"} 0.005 "),
        "{bucket_exemplars:?}"
    );
    let failure_exemplars: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("webhook_probe_failures_total") && l.contains(" # {"))
        .collect();
    assert_eq!(failure_exemplars.len(), 1, "{failure_exemplars:?}");
    assert!(failure_exemplars[0].contains("reason=\"webhook_error\"} 1 # {run_id=\""));
    // Nothing else carries one, and the text format none at all.
    assert_eq!(page.matches(" # {").count(), 2);
    assert!(!full_page().contains(" # {"));
}

/// Measures the page at 10,000 probes in both formats (`cargo test --lib -- --ignored
/// --nocapture rendering_ten_thousand`): what OpenMetrics and its exemplars cost over the
/// text format, and the text format against an older build.
#[test]
#[ignore = "a measurement, not a check"]
fn rendering_ten_thousand_probes_in_both_formats() {
    let mut text = String::from("probes:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  - {{name: p{i:05}, url: 'http://127.0.0.1:1/'}}\n"
        ));
    }
    let config = crate::config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
    let metrics = Metrics::new().unwrap();
    let buckets = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ];
    for spec in &config.probes {
        let probe = metrics.register_probe(spec, &buckets);
        metrics.record(&probe, &full_outcome(true));
        metrics.record(&probe, &full_outcome(false));
    }
    for format in [Format::Text, Format::OpenMetrics].repeat(3) {
        let started = std::time::Instant::now();
        let bytes: usize = metrics.render_as(format).map(|piece| piece.len()).sum();
        println!(
            "{format:?}: {} KiB in {:?}",
            bytes / 1024,
            started.elapsed()
        );
    }
}

#[test]
fn sample_values_are_written_as_display_writes_them() {
    use super::text::SampleValue;
    let floats = [
        0.0,
        -0.0,
        1.0,
        -3.0,
        200.0,
        1.1,
        0.000_012_345,
        1_795_000_000.123,
        1e20,
        9_007_199_254_740_991.0,
        9_007_199_254_740_993.0,
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::MAX,
        f64::MIN_POSITIVE,
    ];
    for value in floats {
        let mut out = String::new();
        value.write_to(&mut out);
        assert_eq!(out, value.to_string(), "{value:?}");
    }
    for value in [0, 1, 42, u64::MAX] {
        let mut out = String::new();
        value.write_to(&mut out);
        assert_eq!(out, value.to_string());
    }
    let (mut small, mut signed) = (String::new(), String::new());
    255u8.write_to(&mut small);
    (-7i32).write_to(&mut signed);
    assert_eq!((small.as_str(), signed.as_str()), ("255", "-7"));
}

/// A registry with `count` probes that ran (one success, one failure each), with labels.
pub(crate) fn ran_probes(count: usize) -> Metrics {
    let mut text = String::from("probes:\n");
    for i in 0..count {
        text.push_str(&format!(
            "  - {{name: p{i:05}, url: 'http://127.0.0.1:1/', labels: {{n: '{i}'}}}}\n"
        ));
    }
    let config = crate::config::parse(std::path::Path::new("t.yaml"), &text).unwrap();
    let metrics = Metrics::new().unwrap();
    for spec in &config.probes {
        let probe = metrics.register_probe(spec, &[0.1, 1.0]);
        metrics.record(&probe, &full_outcome(true));
        metrics.record(&probe, &full_outcome(false));
    }
    metrics
}

#[test]
fn a_page_split_into_parts_of_any_size_joins_into_the_same_page() {
    let metrics = ran_probes(300);
    // The exporter-wide head (process memory, open files) changes between two renders.
    let first_probe_family = format!("# HELP {} ", PROBE_FAMILIES[0].def.name);
    let per_probe = |page: &str| page[page.find(&first_probe_family).unwrap()..].to_string();
    for format in [Format::Text, Format::OpenMetrics] {
        let whole = per_probe(&metrics.render_as(format).collect::<String>());
        for bytes in [1, 100, 4096, 64 * 1024, usize::MAX / 2] {
            let page = metrics.page(format);
            let parts = page.parts(bytes);
            let mut joined = String::new();
            // A part may write nothing: a family without a value for its probes.
            for (index, part) in parts.iter().enumerate() {
                page.write(*part, &mut joined);
                assert_eq!(part.is_last_of(&page), index + 1 == parts.len());
            }
            assert_eq!(
                per_probe(&joined),
                whole,
                "{format:?} in parts of {bytes} bytes"
            );
        }
        if format == Format::OpenMetrics {
            assert!(whole.ends_with(openmetrics::EOF));
            assert_eq!(whole.matches(openmetrics::EOF).count(), 1);
        }
    }
}

#[test]
fn parts_are_about_the_size_asked_for_whatever_the_family() {
    let metrics = ran_probes(2000);
    let page = metrics.page(Format::OpenMetrics);
    let target = 256 * 1024;
    let parts = page.parts(target);
    let sizes: Vec<usize> = parts
        .iter()
        .map(|part| {
            let mut out = String::new();
            page.write(*part, &mut out);
            out.len()
        })
        .collect();
    let total: usize = sizes.iter().sum();
    assert!(
        parts.len() >= total / target && parts.len() <= total / target + 2,
        "{} parts for {total} bytes: {sizes:?}",
        parts.len()
    );
    for size in &sizes[..sizes.len() - 1] {
        assert!(
            *size > target / 2 && *size < target * 2,
            "a part of {size} bytes: {sizes:?}"
        );
    }
}

#[test]
fn a_page_without_probes_is_one_part() {
    let metrics = Metrics::new().unwrap();
    let page = metrics.page(Format::Text);
    assert_eq!(page.parts(64 * 1024).len(), 1);
}
