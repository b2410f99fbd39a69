//! The SVG geometry of a probe's history chart: one bar per run, successes rising above a
//! baseline by duration, failures hanging below it. The template draws it, and the script
//! redraws it from the same numbers in the page's JSON.

use serde::Serialize;

use super::HISTORY_BARS;
use super::view::{clock, duration};
use crate::state::ResultView;

/// Width of one bar of the history chart.
pub(super) const BAR_WIDTH: u32 = 5;
/// Gap after each bar.
pub(super) const BAR_GAP: u32 = 1;
/// Chart height.
pub(super) const CHART_HEIGHT: u32 = 36;
/// Successes rise above this line and failures hang below it, so they differ by shape as
/// well as colour.
pub(super) const BASELINE: u32 = 26;
/// Tallest success bar (the slowest success of the chart).
pub(super) const MAX_BAR: u32 = 24;
/// Height of a failure mark.
pub(super) const FAILURE_MARK: u32 = 9;

/// The latency/result history as SVG bars, oldest left, newest right.
#[derive(Serialize)]
pub(super) struct Chart {
    /// Width in pixels: room for [`HISTORY_BARS`] runs.
    pub(super) width: u32,
    /// Height in pixels.
    pub(super) height: u32,
    /// Where successes rise from and failures hang from.
    pub(super) baseline: u32,
    /// The text alternative of the whole chart.
    pub(super) label: String,
    /// One per run, oldest first.
    pub(super) bars: Vec<Bar>,
}

/// One run in the chart.
#[derive(Serialize)]
pub(super) struct Bar {
    /// Left edge.
    pub(super) x: u32,
    /// Top edge.
    pub(super) y: u32,
    /// Bar width.
    pub(super) width: u32,
    /// Bar height: the duration for a success, fixed for a failure.
    pub(super) height: u32,
    /// `ok` or `failed`.
    pub(super) class: &'static str,
    /// Tooltip: when, result, duration.
    pub(super) title: String,
}

impl Chart {
    /// The chart of `runs`, oldest first (at most [`HISTORY_BARS`]).
    pub(super) fn new(runs: &[ResultView]) -> Self {
        let slowest = runs
            .iter()
            .filter(|o| o.success)
            .map(|o| o.duration_seconds)
            .fold(0.0_f64, f64::max);
        let first_slot = HISTORY_BARS.saturating_sub(runs.len());
        let bars = runs
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let x = ((first_slot + i) as u32) * (BAR_WIDTH + BAR_GAP);
                let at = clock(o.finished_at);
                let took = duration(o.duration_seconds);
                if o.success {
                    let share = if slowest > 0.0 {
                        o.duration_seconds / slowest
                    } else {
                        0.0
                    };
                    let height = 2 + (share * f64::from(MAX_BAR - 2)).round() as u32;
                    Bar {
                        x,
                        y: BASELINE - height,
                        width: BAR_WIDTH,
                        height,
                        class: "ok",
                        title: format!("{at}: success, {took}"),
                    }
                } else {
                    let reason = o.reason.unwrap_or("other");
                    Bar {
                        x,
                        y: BASELINE + 1,
                        width: BAR_WIDTH,
                        height: FAILURE_MARK,
                        class: "failed",
                        title: format!("{at}: failed ({reason}), {took}"),
                    }
                }
            })
            .collect();
        let failed = runs.iter().filter(|o| !o.success).count();
        let label = if runs.is_empty() {
            "No runs yet".to_owned()
        } else {
            let mut label = format!(
                "Last {} {}, oldest first: {} succeeded, {} failed",
                runs.len(),
                if runs.len() == 1 { "run" } else { "runs" },
                runs.len() - failed,
                failed
            );
            if slowest > 0.0 {
                label.push_str(&format!("; slowest success {}", duration(slowest)));
            }
            label
        };
        Self {
            width: HISTORY_BARS as u32 * (BAR_WIDTH + BAR_GAP),
            height: CHART_HEIGHT,
            baseline: BASELINE,
            label,
            bars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn record(success: bool, millis: u64) -> ResultView {
        ResultView {
            run_id: crate::probe::RunId::next(),
            success,
            reason: (!success).then_some("webhook_error"),
            message: String::new(),
            http_status: Some(200),
            response_code: None,
            duration_seconds: millis as f64 / 1000.0,
            phases: Default::default(),
            attempts: 1,
            redirects: 0,
            tls: None,
            http_version: None,
            started_at: DateTime::UNIX_EPOCH,
            finished_at: DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn failed_runs_hang_below_the_baseline_and_are_named_in_the_label() {
        let chart = Chart::new(&[record(true, 10), record(false, 5), record(true, 20)]);
        assert_eq!(chart.bars.len(), 3);
        let failed = &chart.bars[1];
        assert_eq!(failed.class, "failed");
        assert!(failed.y > BASELINE);
        assert!(failed.title.contains("failed (webhook_error)"));
        // The slowest success is the tallest bar; the newest run is at the right edge.
        assert_eq!(chart.bars[2].height, MAX_BAR);
        assert_eq!(chart.bars[2].x + BAR_WIDTH + BAR_GAP, chart.width);
        assert_eq!(
            chart.label,
            "Last 3 runs, oldest first: 2 succeeded, 1 failed; slowest success 20 ms"
        );
    }
}
