//! Wall-clock time for plans: the system clock, or one that follows tokio's (possibly
//! paused) clock, so cron and interval plans are testable.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// Wall-clock source. `System` in production; `Simulated` follows tokio's (possibly paused)
/// clock from a fixed wall-clock origin, so cron and interval plans are testable.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The real clock.
    System,
    /// `origin_wall` at `origin`, advancing with tokio time.
    Simulated {
        /// Tokio instant of the origin.
        origin: Instant,
        /// Wall-clock time at the origin.
        origin_wall: DateTime<Utc>,
    },
}

impl Clock {
    /// A simulated clock starting now at `wall`.
    pub fn simulated(wall: DateTime<Utc>) -> Self {
        Clock::Simulated {
            origin: Instant::now(),
            origin_wall: wall,
        }
    }

    /// The current wall-clock time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Simulated {
                origin,
                origin_wall,
            } => {
                let elapsed = Instant::now().saturating_duration_since(*origin);
                *origin_wall + chrono::TimeDelta::from_std(elapsed).unwrap_or_default()
            }
        }
    }

    /// The tokio instant at which the wall clock reads `wall` (now, if that is past).
    pub fn instant_at(&self, wall: DateTime<Utc>) -> Instant {
        let ahead = (wall - self.now()).to_std().unwrap_or_default();
        Instant::now() + ahead
    }
}
