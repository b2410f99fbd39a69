//! When a probe should run: pure functions of the schedule, the probe name and a wall-clock
//! instant. No tasks, no timers (those are [`crate::scheduler`]'s job), so every rule here is
//! testable with plain dates. Maintenance windows, which move scheduled runs, are in
//! [`maintenance`].

pub mod maintenance;

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;

pub use maintenance::{MaintenanceMode, MaintenanceWindow, NextStart};

/// How often a probe runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// Every `period`, at a stable offset derived from the probe name.
    Interval(Duration),
    /// At the instants of a cron expression, read in `zone`.
    Cron {
        /// The expression as the operator wrote it.
        source: String,
        /// The parsed expression (boxed: it is large and probes mostly use intervals).
        cron: Box<Cron>,
        /// The zone the expression is read in.
        zone: Tz,
    },
}

/// Parses a cron expression with crontab semantics (5 fields, optional seconds and year,
/// 0 or 7 = Sunday, names, `@hourly`-style shorthands), refusing one that never fires (from
/// now on: `0 0 30 2 *`, or a year already past), since its probe would silently never run.
///
/// # Errors
/// What is wrong, without the expression (the caller quotes it, cut to a sane length): how
/// many fields are expected, the parser's complaint, or that it never fires.
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    if !text.starts_with('@') && !(5..=7).contains(&fields) {
        return Err(format!(
            "expected 5 fields (minute hour day month weekday), or 6-7 with seconds and year; \
             found {fields}"
        ));
    }
    let cron = text.parse::<Cron>().map_err(|e| e.to_string())?;
    if cron.find_next_occurrence(&Utc::now(), false).is_err() {
        return Err(
            "it never fires (no date from now on matches all its fields); check the day, month and year"
                .to_owned(),
        );
    }
    Ok(cron)
}

/// A hash of `name` that never changes: FNV-1a (64-bit), because std's hasher is not
/// guaranteed stable across Rust releases. It places a probe in its period
/// ([`phase_offset`]) and on its probe thread, so both survive restarts and rebuilds.
pub fn stable_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A stable offset of `name` inside `period`, so a probe keeps its phase across restarts and
/// probes with the same period spread over it instead of firing at one instant.
///
/// Offsets are whole steps of [`PHASE_GRID`] (of a hundredth of the period if that is
/// shorter): the probes of one thread whose offsets share a step start on one wake-up of
/// that thread instead of one each. At 1,000 probes/s (about ten per step), bench/cpuab-style
/// runs measured 116 µs of CPU per probe with nanosecond offsets and 86 µs on the grid,
/// schedule lag unchanged: a thread that sleeps and wakes for every probe spends a quarter of
/// its time switching (`finish_task_switch` was 18 % of the probe thread's samples).
pub fn phase_offset(name: &str, period: Duration) -> Duration {
    let grid = PHASE_GRID.min(period / 100).as_nanos().max(1);
    let slots = (period.as_nanos() / grid).max(1);
    let offset = (u128::from(stable_hash(name)) % slots) * grid;
    // The offset is below the period, which came from a Duration, so it fits.
    Duration::from_nanos(u64::try_from(offset).unwrap_or(0))
}

/// The step of the phases: probes of one period start on a grid of it, so the ones whose
/// offsets share a step start on one wake-up of their thread.
const PHASE_GRID: Duration = Duration::from_millis(10);

impl Schedule {
    /// The first planned instant strictly after `after`.
    ///
    /// Interval probes are aligned on the Unix epoch plus their offset, so the plan does not
    /// depend on when the exporter started. `None` when a cron expression never fires again.
    pub fn next_after(&self, name: &str, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(period) => {
                let period_ns = i128::try_from(period.as_nanos()).ok()?.max(1);
                let offset_ns = i128::try_from(phase_offset(name, *period).as_nanos()).ok()?;
                let now_ns = i128::from(after.timestamp_nanos_opt()?);
                let slots = (now_ns - offset_ns).div_euclid(period_ns) + 1;
                let next_ns = slots * period_ns + offset_ns;
                Some(DateTime::from_timestamp_nanos(i64::try_from(next_ns).ok()?))
            }
            Schedule::Cron { cron, zone, .. } => cron
                .find_next_occurrence(&after.with_timezone(zone), false)
                .ok()
                .map(|next| next.with_timezone(&Utc)),
        }
    }

    /// The shortest gap between two planned runs, looked up over the coming year for cron
    /// expressions (bounded, so a sparse expression costs little).
    pub fn shortest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        match self {
            Schedule::Interval(period) => Some(*period),
            Schedule::Cron { .. } => {
                let horizon = from + TimeDelta::days(366);
                let mut previous = self.next_after("", from)?;
                let mut shortest: Option<TimeDelta> = None;
                for _ in 0..2_000 {
                    let Some(next) = self.next_after("", previous) else {
                        break;
                    };
                    if next > horizon {
                        break;
                    }
                    let gap = next - previous;
                    shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
                    previous = next;
                }
                shortest.and_then(|gap| gap.to_std().ok())
            }
        }
    }
}

impl fmt::Display for Schedule {
    /// The `schedule` label of `webhook_probe_info`: `every 1m` or `*/5 7-19 * * 1-5 Europe/Paris`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Interval(period) => {
                write!(f, "every {}", humantime::format_duration(*period))
            }
            Schedule::Cron { source, zone, .. } => write!(f, "{source} {zone}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn paris_cron(text: &str) -> Schedule {
        Schedule::Cron {
            source: text.into(),
            cron: Box::new(parse_cron(text).unwrap()),
            zone: chrono_tz::Europe::Paris,
        }
    }

    #[test]
    fn the_offset_is_stable_and_inside_the_period() {
        let period = Duration::from_secs(60);
        let a = phase_offset("refresh-customer", period);
        assert_eq!(a, phase_offset("refresh-customer", period));
        assert!(a < period);
        assert_ne!(a, phase_offset("refresh-order", period));
    }

    #[test]
    fn phases_sit_on_a_grid_of_ten_milliseconds_and_still_spread_over_the_period() {
        let period = Duration::from_secs(10);
        let steps: std::collections::BTreeSet<u128> = (0..1_000)
            .map(|i| phase_offset(&format!("webhook-{i:05}"), period).as_nanos())
            .inspect(|offset| assert_eq!(offset % 10_000_000, 0, "{offset} ns"))
            .collect();
        // 1,000 names over 1,000 steps land on about 632 distinct ones if spread evenly.
        assert!(steps.len() > 550, "{} steps used", steps.len());
        assert!(steps.last().is_some_and(|last| *last < period.as_nanos()));
        // A short period gets a finer grid, a hundred steps at least.
        let short = Duration::from_millis(200);
        let offset = phase_offset("refresh-customer", short);
        assert!(offset < short);
        assert_eq!(offset.as_nanos() % 2_000_000, 0);
    }

    #[test]
    fn the_stable_hash_is_fnv_1a_so_phases_and_probe_threads_survive_a_rebuild() {
        // Published FNV-1a 64-bit values.
        assert_eq!(stable_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash("foobar"), 0x8594_4171_f739_67e8);
        // A probe's phase is pinned: a rebuild must not move it (release 0.2 moved every
        // phase once, onto the 10 ms grid: it was 37.094377887 s for this name).
        assert_eq!(
            phase_offset("refresh-customer", Duration::from_secs(60)),
            Duration::from_millis(18_870)
        );
    }

    #[test]
    fn interval_runs_are_one_period_apart_at_the_named_offset() {
        let schedule = Schedule::Interval(Duration::from_secs(60));
        let t0 = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        let first = schedule.next_after("p", t0).unwrap();
        let second = schedule.next_after("p", first).unwrap();
        assert_eq!(second - first, TimeDelta::seconds(60));
        let offset = phase_offset("p", Duration::from_secs(60));
        assert_eq!(
            u64::try_from(first.timestamp_nanos_opt().unwrap()).unwrap() % 60_000_000_000,
            u64::try_from(offset.as_nanos()).unwrap()
        );
    }

    #[test]
    fn weekday_one_to_five_is_monday_to_friday() {
        let schedule = paris_cron("0 9 * * 1-5");
        // Saturday 2026-11-28 10:00 UTC: next run is Monday 30th at 09:00 Paris (08:00 UTC).
        let saturday = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
        let next = schedule.next_after("", saturday).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 30, 8, 0, 0).unwrap());
        let sunday = paris_cron("0 9 * * 0");
        assert_eq!(
            sunday.next_after("", saturday).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 29, 8, 0, 0).unwrap()
        );
        let sunday_seven = paris_cron("0 9 * * 7");
        assert_eq!(
            sunday_seven.next_after("", saturday),
            sunday.next_after("", saturday)
        );
    }

    #[test]
    fn a_local_time_skipped_by_dst_runs_once_at_the_next_valid_instant() {
        // 2027-03-28: Paris jumps from 02:00 to 03:00; 02:30 does not exist that day.
        let schedule = paris_cron("30 2 * * *");
        let before = Utc.with_ymd_and_hms(2027, 3, 27, 12, 0, 0).unwrap();
        let next = schedule.next_after("", before).unwrap();
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2027, 3, 28, 1, 0, 0).unwrap(),
            "03:00 CEST"
        );
        let after = schedule.next_after("", next).unwrap();
        assert_eq!(
            after,
            Utc.with_ymd_and_hms(2027, 3, 29, 0, 30, 0).unwrap(),
            "02:30 CEST next day"
        );
    }

    #[test]
    fn cron_runs_follow_the_zone_across_the_autumn_change() {
        // 2026-10-25: Paris goes from CEST (+2) to CET (+1).
        let schedule = paris_cron("0 8 * * *");
        let before = Utc.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap();
        let sunday = schedule.next_after("", before).unwrap();
        assert_eq!(sunday, Utc.with_ymd_and_hms(2026, 10, 25, 7, 0, 0).unwrap());
        let monday = schedule.next_after("", sunday).unwrap();
        assert_eq!(monday, Utc.with_ymd_and_hms(2026, 10, 26, 7, 0, 0).unwrap());
        let saturday_before = schedule
            .next_after("", Utc.with_ymd_and_hms(2026, 10, 23, 12, 0, 0).unwrap())
            .unwrap();
        assert_eq!(
            saturday_before,
            Utc.with_ymd_and_hms(2026, 10, 24, 6, 0, 0).unwrap()
        );
    }

    #[test]
    fn the_shortest_cron_gap_is_found() {
        let schedule = paris_cron("*/5 7-19 * * Mon-Fri");
        let from = Utc.with_ymd_and_hms(2026, 11, 29, 10, 0, 0).unwrap();
        assert_eq!(schedule.shortest_gap(from), Some(Duration::from_secs(300)));
    }

    #[test]
    fn an_expression_that_never_fires_is_refused() {
        for text in ["0 0 30 2 *", "0 0 31 4 *", "0 0 0 1 1 * 2020"] {
            let err = parse_cron(text).unwrap_err();
            assert!(err.starts_with("it never fires"), "{text}: {err}");
        }
        assert!(parse_cron("0 0 29 2 *").is_ok(), "leap days exist");
    }

    #[test]
    fn a_four_field_expression_is_refused_with_the_expected_count() {
        let err = parse_cron("0 */5 * *").unwrap_err();
        assert!(err.contains("expected 5 fields"), "{err}");
    }
}
