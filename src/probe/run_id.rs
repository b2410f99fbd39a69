//! The identity of one run: the link from an exemplar on a graph, a log line or a status
//! page row to the run's result in the API.
//!
//! A 64-bit number written as 16 hex digits. Ids are a process-wide counter started at a
//! random point, so they are unique within a process by construction and, across restarts
//! (a store may keep a previous process's runs), collide only if two random starting points
//! fall within as many runs of each other: about one chance in 10^13 for a million runs. A
//! UUID crate would add a dependency for no better guarantee; a `u64` keeps the history
//! records compact.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The id of one run (scheduled, on demand, or `probe NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId(u64);

/// The next id to hand out, from a random start.
static NEXT: LazyLock<AtomicU64> = LazyLock::new(|| AtomicU64::new(random_start()));

/// A random 64-bit number without a dependency: std's hasher keys are drawn from the
/// operating system's randomness per process; the time and pid are mixed in for good
/// measure.
fn random_start() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

impl RunId {
    /// A new id, never handed out before by this process.
    pub fn next() -> Self {
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a number (how the history keeps it).
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// The id of a number kept by [`RunId::as_u64`].
    pub const fn from_u64(value: u64) -> Self {
        Self(value)
    }
}

/// 16 lower-case hex digits: the spelling in the API, logs, exemplars and pages.
impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A text that is not a run id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a run id is 16 hex digits")]
pub struct InvalidRunId;

impl FromStr for RunId {
    type Err = InvalidRunId;

    /// Exactly 16 hex digits (either case), as [`RunId`]'s `Display` writes them.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() != 16 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidRunId);
        }
        u64::from_str_radix(text, 16)
            .map(Self)
            .map_err(|_| InvalidRunId)
    }
}

impl serde::Serialize for RunId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_and_read_back_from_their_spelling() {
        let ids: Vec<RunId> = (0..1000).map(|_| RunId::next()).collect();
        let distinct: std::collections::BTreeSet<RunId> = ids.iter().copied().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in ids {
            let text = id.to_string();
            assert_eq!(text.len(), 16, "{text}");
            assert_eq!(text.parse::<RunId>(), Ok(id));
        }
        assert_eq!(
            RunId::from_u64(0xab).to_string(),
            "00000000000000ab",
            "zero-padded"
        );
    }

    #[test]
    fn anything_but_sixteen_hex_digits_is_not_a_run_id() {
        for text in [
            "",
            "ab",
            "+00000000000000a",
            "0000000000000000a",
            "zzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(text.parse::<RunId>(), Err(InvalidRunId), "{text}");
        }
        assert!("00000000000000AB".parse::<RunId>().is_ok());
    }
}
