//! Maintenance windows: when a probe's ERP must be left alone, as pure functions of the
//! windows and a wall-clock instant (the scheduler's timers and the gauge's edges use them).
//!
//! A window opens at every instant its cron expression fires (read in its zone) and stays
//! open for its `duration` of elapsed time, as the half-open span `[opening, opening +
//! duration)`. Windows that overlap or touch, of one entry or of several, merge into one
//! open span. Walks over openings are bounded ([`MAX_STEPS`]) so an always-open window
//! (`* * * * *` for 2m) costs a few milliseconds, never a hang.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;

use super::Schedule;

/// Openings looked at in one walk: a week of a window opening every minute.
pub const MAX_STEPS: usize = 10_000;

/// What a window does to the probe's scheduled runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaintenanceMode {
    /// No scheduled run starts while the window is open (on-demand runs still do).
    #[default]
    Skip,
    /// Runs go on; only the alerts are silenced (through `webhook_probe_maintenance`).
    Mute,
}

impl MaintenanceMode {
    /// `skip` or `mute`, as written in the config.
    pub const fn as_str(self) -> &'static str {
        match self {
            MaintenanceMode::Skip => "skip",
            MaintenanceMode::Mute => "mute",
        }
    }
}

/// One `maintenance` entry of a probe, merged and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// The cron expression as written, for display.
    pub source: String,
    /// When the window opens (boxed: it is large, and most probes have no window).
    pub cron: Box<Cron>,
    /// The zone the expression is read in.
    pub zone: Tz,
    /// How long it stays open (elapsed time, so a DST change does not stretch it).
    pub duration: Duration,
    /// Skip scheduled runs, or only mute.
    pub mode: MaintenanceMode,
}

impl fmt::Display for MaintenanceWindow {
    /// `0 22 * * * Europe/Paris for 2h (skip)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} for {} ({})",
            self.source,
            self.zone,
            crate::config::scalars::format_prometheus_duration(
                u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX)
            ),
            self.mode.as_str()
        )
    }
}

/// One nanosecond: "at or after `t`" is "strictly after `t - ONE`".
const ONE: TimeDelta = TimeDelta::nanoseconds(1);

impl MaintenanceWindow {
    /// The first opening strictly after `after`.
    pub fn next_opening(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    fn length(&self) -> TimeDelta {
        TimeDelta::from_std(self.duration).unwrap_or(TimeDelta::MAX)
    }

    /// The end of this window's span holding `at`, if one does: the latest opening at or
    /// before `at` plus the duration (of the openings less than a duration before `at`,
    /// the latest ends last).
    fn open_end(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let latest = self
            .cron
            .find_previous_occurrence(&at.with_timezone(&self.zone), true)
            .ok()?
            .with_timezone(&Utc);
        let end = latest.checked_add_signed(self.length())?;
        (latest <= at && at < end).then_some(end)
    }

    /// Whether this window is open at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.open_end(at).is_some()
    }
}

/// Whether any of `windows` is open at `at`.
pub fn is_open(windows: &[MaintenanceWindow], at: DateTime<Utc>) -> bool {
    windows.iter().any(|w| w.is_open(at))
}

/// The end of the merged open span holding `at` (windows that overlap or touch count as
/// one), or `None` when none of `windows` is open at `at`. After [`MAX_STEPS`] extensions
/// (a window that is always open) it answers the end reached so far: the window is open at
/// least until then.
pub fn open_until(windows: &[MaintenanceWindow], at: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut budget = MAX_STEPS;
    merged_end(windows, at, &mut budget)
}

/// [`open_until`], spending at most `budget` extensions (shared by the caller's walk).
fn merged_end(
    windows: &[MaintenanceWindow],
    at: DateTime<Utc>,
    budget: &mut usize,
) -> Option<DateTime<Utc>> {
    let latest_end = |t: DateTime<Utc>| windows.iter().filter_map(|w| w.open_end(t)).max();
    let mut end = latest_end(at)?;
    while *budget > 0 {
        *budget -= 1;
        match latest_end(end) {
            Some(later) if later > end => end = later,
            _ => break,
        }
    }
    Some(end)
}

/// The first instant strictly after `after` at which one of `windows` opens while none is
/// open just before (the gauge's next rising edge). `None` when no window opens again.
pub fn next_opening(windows: &[MaintenanceWindow], after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let mut from = after;
    let mut budget = MAX_STEPS;
    while budget > 0 {
        budget -= 1;
        let opening = windows.iter().filter_map(|w| w.next_opening(from)).min()?;
        // An opening inside an open span is no edge: look on from the span's end.
        match merged_end(windows, opening - ONE, &mut budget) {
            Some(end) if end > opening => from = end - ONE,
            _ => return Some(opening),
        }
    }
    None
}

/// When the next scheduled run of a probe may start, its skip windows considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStart {
    /// The planned start of the next run that will start.
    At(DateTime<Utc>),
    /// Every planned run up to this instant falls in a skip window (an always-open window):
    /// plan again from here.
    Blocked(DateTime<Utc>),
    /// The schedule never fires again.
    Never,
}

impl NextStart {
    /// The planned start, when there is one.
    pub fn at(self) -> Option<DateTime<Utc>> {
        match self {
            NextStart::At(at) => Some(at),
            NextStart::Blocked(_) | NextStart::Never => None,
        }
    }
}

/// Whether a `skip` window of `windows` is open at `at`.
pub fn skips_at(windows: &[MaintenanceWindow], at: DateTime<Utc>) -> bool {
    windows
        .iter()
        .any(|w| w.mode == MaintenanceMode::Skip && w.is_open(at))
}

/// The first planned instant of `schedule` strictly after `after` that is outside every
/// `skip` window of `windows`: for an interval, the first tick of its phase at or after the
/// window closes; for cron, its next firing outside the windows.
pub fn next_start(
    schedule: &Schedule,
    name: &str,
    windows: &[MaintenanceWindow],
    after: DateTime<Utc>,
) -> NextStart {
    let skip: Vec<MaintenanceWindow> = windows
        .iter()
        .filter(|w| w.mode == MaintenanceMode::Skip)
        .cloned()
        .collect();
    let Some(mut planned) = schedule.next_after(name, after) else {
        return NextStart::Never;
    };
    if skip.is_empty() {
        return NextStart::At(planned);
    }
    let mut budget = MAX_STEPS;
    while budget > 0 {
        budget -= 1;
        let Some(end) = merged_end(&skip, planned, &mut budget) else {
            return NextStart::At(planned);
        };
        match schedule.next_after(name, end - ONE) {
            Some(next) => planned = next,
            None => return NextStart::Never,
        }
    }
    NextStart::Blocked(planned - ONE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn window(cron: &str, zone: Tz, minutes: u64, mode: MaintenanceMode) -> MaintenanceWindow {
        MaintenanceWindow {
            source: cron.to_owned(),
            cron: Box::new(super::super::parse_cron(cron).unwrap()),
            zone,
            duration: Duration::from_secs(minutes * 60),
            mode,
        }
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    #[test]
    fn a_window_is_open_from_its_opening_to_just_before_its_end() {
        let nightly = [window(
            "0 22 * * *",
            chrono_tz::UTC,
            120,
            MaintenanceMode::Skip,
        )];
        assert!(!is_open(&nightly, utc(2026, 12, 1, 21, 59, 59)));
        assert!(is_open(&nightly, utc(2026, 12, 1, 22, 0, 0)));
        assert!(is_open(&nightly, utc(2026, 12, 1, 23, 59, 59)));
        assert!(!is_open(&nightly, utc(2026, 12, 2, 0, 0, 0)), "half-open");
        assert_eq!(
            open_until(&nightly, utc(2026, 12, 1, 23, 0, 0)),
            Some(utc(2026, 12, 2, 0, 0, 0))
        );
        assert_eq!(open_until(&nightly, utc(2026, 12, 1, 12, 0, 0)), None);
        assert_eq!(
            next_opening(&nightly, utc(2026, 12, 1, 12, 0, 0)),
            Some(utc(2026, 12, 1, 22, 0, 0))
        );
    }

    #[test]
    fn overlapping_and_touching_windows_merge_into_one_span() {
        let windows = [
            window("0 22 * * *", chrono_tz::UTC, 90, MaintenanceMode::Skip),
            // Opens inside the first, ends later.
            window("0 23 * * *", chrono_tz::UTC, 60, MaintenanceMode::Mute),
            // Opens exactly where the second ends.
            window("0 0 * * *", chrono_tz::UTC, 30, MaintenanceMode::Skip),
        ];
        assert_eq!(
            open_until(&windows, utc(2026, 12, 1, 22, 10, 0)),
            Some(utc(2026, 12, 2, 0, 30, 0))
        );
        // The opening at 23:00 and 00:00 are no rising edges: the next one is 22:00 again.
        assert_eq!(
            next_opening(&windows, utc(2026, 12, 1, 22, 10, 0)),
            Some(utc(2026, 12, 2, 22, 0, 0))
        );
        // A window longer than its period never closes between openings.
        let dense = [window(
            "* * * * *",
            chrono_tz::UTC,
            2,
            MaintenanceMode::Skip,
        )];
        let at = utc(2026, 12, 1, 10, 0, 30);
        assert!(open_until(&dense, at).unwrap() > at + TimeDelta::days(1));
    }

    #[test]
    fn a_window_in_a_zone_follows_its_wall_clock_across_dst_and_lasts_elapsed_time() {
        // 02:30 Paris does not exist on 2027-03-28: the window opens at 03:00 CEST (01:00 UTC).
        let paris = [window(
            "30 2 * * *",
            chrono_tz::Europe::Paris,
            60,
            MaintenanceMode::Skip,
        )];
        assert_eq!(
            next_opening(&paris, utc(2027, 3, 27, 12, 0, 0)),
            Some(utc(2027, 3, 28, 1, 0, 0))
        );
        assert_eq!(
            open_until(&paris, utc(2027, 3, 28, 1, 30, 0)),
            Some(utc(2027, 3, 28, 2, 0, 0))
        );
        // Autumn: 22:00 Paris is 20:00 UTC before 2026-10-25 and 21:00 UTC after.
        let evening = [window(
            "0 22 * * *",
            chrono_tz::Europe::Paris,
            120,
            MaintenanceMode::Skip,
        )];
        assert!(is_open(&evening, utc(2026, 10, 24, 20, 0, 0)));
        assert!(!is_open(&evening, utc(2026, 10, 25, 20, 30, 0)));
        assert!(is_open(&evening, utc(2026, 10, 25, 21, 0, 0)));
        assert_eq!(
            open_until(&evening, utc(2026, 10, 25, 21, 0, 0)),
            Some(utc(2026, 10, 25, 23, 0, 0)),
            "two hours of elapsed time"
        );
    }

    #[test]
    fn an_interval_probe_resumes_at_the_first_tick_of_its_phase_after_the_window() {
        let schedule = Schedule::Interval(Duration::from_secs(60));
        let name = "p";
        let offset = super::super::phase_offset(name, Duration::from_secs(60));
        let windows = [window(
            "0 22 * * *",
            chrono_tz::UTC,
            120,
            MaintenanceMode::Skip,
        )];
        let NextStart::At(next) = next_start(&schedule, name, &windows, utc(2026, 12, 1, 22, 0, 0))
        else {
            panic!("a start is planned");
        };
        let expected = utc(2026, 12, 2, 0, 0, 0) + TimeDelta::from_std(offset).unwrap();
        assert_eq!(next, expected);
        // Mute windows do not move runs.
        let muted = [window(
            "0 22 * * *",
            chrono_tz::UTC,
            120,
            MaintenanceMode::Mute,
        )];
        assert_eq!(
            next_start(&schedule, name, &muted, utc(2026, 12, 1, 22, 30, 0)),
            NextStart::At(
                schedule
                    .next_after(name, utc(2026, 12, 1, 22, 30, 0))
                    .unwrap()
            )
        );
    }

    #[test]
    fn a_cron_probe_resumes_at_its_next_firing_outside_the_window() {
        let schedule = Schedule::Cron {
            source: "*/15 * * * *".into(),
            cron: Box::new(super::super::parse_cron("*/15 * * * *").unwrap()),
            zone: chrono_tz::UTC,
        };
        let windows = [window(
            "0 22 * * *",
            chrono_tz::UTC,
            50,
            MaintenanceMode::Skip,
        )];
        // 22:00, 22:15, 22:30, 22:45 are inside; 23:00 is not.
        assert_eq!(
            next_start(&schedule, "", &windows, utc(2026, 12, 1, 21, 50, 0)),
            NextStart::At(utc(2026, 12, 1, 23, 0, 0))
        );
        // A firing exactly where the window ends starts (the span is half-open).
        let exact = [window(
            "0 22 * * *",
            chrono_tz::UTC,
            45,
            MaintenanceMode::Skip,
        )];
        assert_eq!(
            next_start(&schedule, "", &exact, utc(2026, 12, 1, 21, 50, 0)),
            NextStart::At(utc(2026, 12, 1, 22, 45, 0))
        );
    }

    #[test]
    fn an_always_open_skip_window_blocks_without_hanging() {
        let schedule = Schedule::Interval(Duration::from_secs(60));
        let dense = [window(
            "* * * * *",
            chrono_tz::UTC,
            2,
            MaintenanceMode::Skip,
        )];
        let at = utc(2026, 12, 1, 10, 0, 30);
        match next_start(&schedule, "p", &dense, at) {
            NextStart::Blocked(until) => assert!(until > at),
            other => panic!("{other:?}"),
        }
    }
}
