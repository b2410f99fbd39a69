//! The arithmetic of the shipped SLO alerts (`config/slo.yml`) that `check-config` needs:
//! whether a single failed run already pages, and which objective or interval would not.
//!
//! # Why one failure can page
//! The page of `config/slo.yml` is the SRE workbook's multi-window, multi-burn-rate alert:
//! it fires when the error ratio of a long window AND of its short window are both above
//! `factor × budget`, with `budget = 1 − objective`, for either pair
//! (1h, 5m, 14.4) or (6h, 30m, 6). The workbook assumes many requests per window; a probe is
//! a low, fixed-rate event stream instead. With a run every `I` seconds a window of `W`
//! seconds holds about `W / I` runs, so one failed run in it is an error ratio of
//! `min(1, I / W)` (capped: a window shorter than the interval holds that run alone).
//!
//! Right after the failure both windows of a pair hold it (the short one for its own
//! length), and the short window's ratio `min(1, I / S)` is never below the long one's
//! `min(1, I / L)` since `S < L`. So one failure pages through a pair exactly when
//!
//! ```text
//! min(1, I / L) > factor × (1 − objective)
//! ```
//!
//! - pair (1h, 5m, 14.4): `I > 51,840 s × budget` (under an hour). At 99.9 % (budget 0.001):
//!   `I > 51.84 s`, so the default 60 s interval pages on one failure (1/60 = 1.67 % >
//!   1.44 %);
//! - pair (6h, 30m, 6): `I > 129,600 s × budget` (under six hours): always a longer interval
//!   than the first pair's bound, so it only matters once the first pair's ratio is capped;
//! - capped: a probe running at most hourly pages on one failure whenever
//!   `14.4 × budget < 1` (an objective above 93.06 %).
//!
//! Nothing pages when both pairs stay quiet, that is when
//! `budget ≥ max(min(1, I/3600) / 14.4, min(1, I/21600) / 6)` (the highest objective
//! that does not page), or when `I ≤ L × factor × budget` for every pair whose
//! `factor × budget < 1` (the longest interval that does not page).
//!
//! The numbers are approximate the way PromQL's `rate()` is (it extrapolates to the window's
//! edges), and a cron schedule is weighed by its shortest gap: after a longer pause (a
//! night) the first failed run is a bigger share still of the runs in the window.

use std::time::Duration;

/// The page pairs of `config/slo.yml`: long window, short window (seconds), burn-rate factor.
pub const PAGE_PAIRS: [(u64, u64, f64); 2] = [(3_600, 300, 14.4), (21_600, 1_800, 6.0)];

/// Why one failed run pages, and what would not.
#[derive(Debug, Clone, PartialEq)]
pub struct OneFailurePage {
    /// Long window of the first pair that pages (seconds).
    pub long_window: u64,
    /// Its burn-rate factor.
    pub factor: f64,
    /// The error ratio one failure gives in that window.
    pub error_ratio: f64,
    /// The highest objective (a ratio, rounded down to 0.01 %) at which one failure does not
    /// page.
    pub max_objective: f64,
    /// The longest time between runs at which one failure does not page (whole seconds, or
    /// milliseconds under a second); `None` when even 1 ms would page.
    pub max_interval: Option<Duration>,
}

/// The error ratio one failed run gives in a window of `window` seconds, with a run every
/// `gap`.
fn one_failure_ratio(gap: Duration, window: u64) -> f64 {
    (gap.as_secs_f64() / window as f64).min(1.0)
}

/// `1 − objective`, rounded to 1e-12 so that `1 − 0.9` is 0.1 and boundaries written in
/// decimal (an interval of exactly `L × factor × budget`) fall where arithmetic puts them.
fn budget(objective: f64) -> f64 {
    ((1.0 - objective) * 1e12).round() / 1e12
}

/// Whether one failed run pages through any pair (see the module comment).
fn pages(gap: Duration, objective: f64) -> bool {
    let budget = budget(objective);
    PAGE_PAIRS
        .iter()
        .any(|&(long, _, factor)| one_failure_ratio(gap, long) > factor * budget)
}

/// Whether a probe run every `gap` (an interval, or the shortest gap of a cron schedule)
/// with `objective` (a ratio) pages on one failed run, and if so why and what would not.
pub fn one_failure_page(gap: Duration, objective: f64) -> Option<OneFailurePage> {
    let budget = budget(objective);
    let &(long_window, _, factor) = PAGE_PAIRS
        .iter()
        .find(|&&(long, _, factor)| one_failure_ratio(gap, long) > factor * budget)?;
    let needed_budget = PAGE_PAIRS
        .iter()
        .map(|&(long, _, factor)| one_failure_ratio(gap, long) / factor)
        .fold(0.0, f64::max);
    // Rounded down to 0.01 %, then stepped down while float rounding still makes it page.
    let mut hundredths = ((1.0 - needed_budget) * 10_000.0).floor();
    while hundredths > 0.0 && pages(gap, hundredths / 10_000.0) {
        hundredths -= 1.0;
    }
    let longest = PAGE_PAIRS
        .iter()
        .filter(|&&(_, _, factor)| factor * budget < 1.0)
        .map(|&(long, _, factor)| long as f64 * factor * budget)
        .fold(f64::INFINITY, f64::min);
    let max_interval = if longest >= 1.0 {
        Some(Duration::from_secs(longest.floor() as u64))
    } else {
        Some(Duration::from_millis((longest * 1000.0).floor() as u64)).filter(|d| !d.is_zero())
    };
    Some(OneFailurePage {
        long_window,
        factor,
        error_ratio: one_failure_ratio(gap, long_window),
        max_objective: hundredths / 10_000.0,
        max_interval,
    })
}

/// `ratio` as a percentage, as an operator writes it: `99.9%`, `99.88%`, `1.67%`, `93%`.
pub fn percent(ratio: f64) -> String {
    let text = format!("{:.4}", ratio * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_run_a_minute_at_99_9_percent_pages_on_one_failure_through_the_1h_window() {
        let page = one_failure_page(MINUTE, 0.999).unwrap();
        assert_eq!((page.long_window, page.factor), (3_600, 14.4));
        assert!((page.error_ratio - 1.0 / 60.0).abs() < 1e-12);
        assert_eq!(percent(page.max_objective), "99.88%");
        assert_eq!(page.max_interval, Some(Duration::from_secs(51)));
        assert!(!pages(Duration::from_secs(51), 0.999));
        assert!(pages(Duration::from_secs(52), 0.999));
    }

    #[test]
    fn the_suggested_objective_and_interval_do_not_page() {
        for gap in [1, 30, 60, 300, 900, 3_600, 7_200, 86_400] {
            for objective in [0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 0.99999] {
                let gap = Duration::from_secs(gap);
                let Some(page) = one_failure_page(gap, objective) else {
                    assert!(!pages(gap, objective));
                    continue;
                };
                assert!(!pages(gap, page.max_objective), "{gap:?} {objective}");
                assert!(page.max_objective < objective);
                if let Some(interval) = page.max_interval {
                    assert!(!pages(interval, objective), "{gap:?} {objective}");
                    assert!(interval < gap);
                }
            }
        }
    }

    #[test]
    fn a_relaxed_objective_or_a_frequent_probe_does_not_page() {
        assert_eq!(one_failure_page(MINUTE, 0.995), None);
        assert_eq!(one_failure_page(Duration::from_secs(10), 0.999), None);
    }

    #[test]
    fn past_an_hour_the_ratio_is_capped_and_the_6h_pair_matters_too() {
        // Every 2h at 90 %: the 1h pair needs a ratio above 1.44 (impossible), the 6h pair
        // one above 0.6, and one failure in 6h is 1/3.
        assert_eq!(one_failure_page(Duration::from_secs(7_200), 0.9), None);
        // Every 4h at 90 %: 4/6 = 0.67 > 0.6 pages through the 6h pair.
        let page = one_failure_page(Duration::from_secs(14_400), 0.9).unwrap();
        assert_eq!(page.long_window, 21_600);
        assert_eq!(page.max_interval, Some(Duration::from_secs(12_960)));
    }

    #[test]
    fn percentages_are_written_without_float_noise() {
        assert_eq!(percent(0.999), "99.9%");
        assert_eq!(percent(0.93), "93%");
        assert_eq!(percent(1.0 / 60.0), "1.6667%");
    }
}
