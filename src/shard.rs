//! Sharding: N replicas with one shared config split the probes, so every probe is called by
//! exactly one replica (a webhook call runs an ERP action: two replicas must never both call
//! it).
//!
//! A replica is told its [`Shard`] (`--shard.count=N` with `--shard.index=I` or
//! `--shard.index-from-hostname`, the StatefulSet ordinal) and runs the probes [`owner`]
//! gives to its index. The owner is a pure function of the probe name and the count: no
//! coordination between replicas, no dependence on the config order or on the file a probe
//! comes from. [`Placement`] is what the running exporter keeps of it: its shard, and the
//! names of the probes the other shards run, so the API can say where a probe lives.
//!
//! Names here say *shard* for a replica's share of the probes; the threads a replica runs
//! its probes on are *runtimes* ([`crate::scheduler::ProbeRuntimes`]).

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// One replica's share of the probes: shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    count: u32,
}

impl Default for Shard {
    /// Unsharded: the one replica runs every probe.
    fn default() -> Self {
        Self::UNSHARDED
    }
}

impl Shard {
    /// A single replica running every probe (index 0 of 1).
    pub const UNSHARDED: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// A zero count, or an index not below the count.
    pub fn new(index: u32, count: u32) -> Result<Self, ShardError> {
        if count == 0 {
            return Err(ShardError::ZeroCount);
        }
        if index >= count {
            return Err(ShardError::IndexOutOfRange { index, count });
        }
        Ok(Self { index, count })
    }

    /// This replica's index, `0..count`.
    pub fn index(self) -> u32 {
        self.index
    }

    /// How many replicas share the config.
    pub fn count(self) -> u32 {
        self.count
    }

    /// Whether this replica runs probe `name`.
    pub fn runs(self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

/// The sharding flags as given on the command line, before they are checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ShardFlags {
    /// `--shard.count=N`.
    pub count: Option<u32>,
    /// `--shard.index=I`.
    pub index: Option<u32>,
    /// `--shard.index-from-hostname`.
    pub index_from_hostname: bool,
}

impl ShardFlags {
    /// The shard these flags name; `host_name` is asked only for
    /// `--shard.index-from-hostname` (production passes [`host_name`]).
    ///
    /// # Errors
    /// A flag combination or value that names no shard; each message says the fix.
    pub fn resolve(self, host_name: impl FnOnce() -> Option<String>) -> Result<Shard, ShardError> {
        match (self.count, self.index, self.index_from_hostname) {
            (None, None, false) => Ok(Shard::UNSHARDED),
            (None, _, _) => Err(ShardError::IndexWithoutCount),
            (Some(_), Some(_), true) => Err(ShardError::BothIndexes),
            (Some(count), None, false) => Err(ShardError::NoIndex { count }),
            (Some(count), Some(index), false) => Shard::new(index, count),
            (Some(count), None, true) => {
                let host = host_name().ok_or(ShardError::NoHostName)?;
                let index =
                    ordinal(&host).ok_or_else(|| ShardError::NoOrdinal { host: host.clone() })?;
                Shard::new(index, count).map_err(|_| ShardError::OrdinalOutOfRange {
                    host,
                    index,
                    count,
                })
            }
        }
    }
}

/// Why the sharding flags name no shard (a usage error: exit code 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--shard.count=0`.
    #[error("--shard.count must be at least 1")]
    ZeroCount,
    /// `--shard.index` not below `--shard.count`.
    #[error(
        "--shard.index={index} is out of range for --shard.count={count}: give an index from 0 to {}",
        count - 1
    )]
    IndexOutOfRange {
        /// The index given.
        index: u32,
        /// The count given.
        count: u32,
    },
    /// An index flag without `--shard.count`.
    #[error(
        "--shard.index and --shard.index-from-hostname need --shard.count=N (how many replicas share the config)"
    )]
    IndexWithoutCount,
    /// Both ways of giving the index.
    #[error("give either --shard.index=I or --shard.index-from-hostname, not both")]
    BothIndexes,
    /// `--shard.count` without an index, when the exporter runs probes.
    #[error(
        "--shard.count={count} needs this replica's index: --shard.index=I (0 to {}) or --shard.index-from-hostname",
        count - 1
    )]
    NoIndex {
        /// The count given.
        count: u32,
    },
    /// No host name to read the index from.
    #[error(
        "--shard.index-from-hostname: no host name ($HOSTNAME is unset and /proc/sys/kernel/hostname cannot be read); give --shard.index=I instead"
    )]
    NoHostName,
    /// A host name without a trailing `-<number>`.
    #[error(
        "--shard.index-from-hostname: host name \"{host}\" does not end in -<number> (as the StatefulSet pod webhook-exporter-2 does); give --shard.index=I instead"
    )]
    NoOrdinal {
        /// The host name read.
        host: String,
    },
    /// A host name whose number is not below the count.
    #[error(
        "--shard.index-from-hostname: host name \"{host}\" gives index {index}, out of range for --shard.count={count} (0 to {}): set --shard.count to the number of replicas",
        count - 1
    )]
    OrdinalOutOfRange {
        /// The host name read.
        host: String,
        /// The number it ends in.
        index: u32,
        /// The count given.
        count: u32,
    },
}

/// The host name: `$HOSTNAME` (which Kubernetes and Docker set to the pod or container
/// name, and which a test can set), else `/proc/sys/kernel/hostname` (Linux), so no
/// dependency is needed for `gethostname`.
pub fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// The StatefulSet ordinal of a host name: its trailing `-<number>`
/// (`webhook-exporter-2` → 2), read from the first label of a dotted name
/// (`webhook-exporter-2.webhook-exporter.monitoring.svc` → 2).
pub fn ordinal(host: &str) -> Option<u32> {
    let first_label = host.split('.').next().unwrap_or(host);
    let (_, digits) = first_label.rsplit_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The shard that runs probe `name` among `count` shards (a count of 0 is taken as 1).
///
/// Rendezvous (highest random weight) hashing: each shard draws a weight from a hash of the
/// name and the shard's index, and the highest weight wins. Chosen over jump consistent
/// hashing because its two guarantees are plain to see and to test: going from N to N+1
/// shards, a probe moves only when the new shard's weight beats the old winner's, which
/// happens for about 1/(N+1) of the probes, and then only onto the new shard (never between
/// two old shards); and the same holds in reverse when a shard goes. Its cost, one hash per
/// shard, is nothing at the shard counts replicas come in (a config of 100,000 probes over
/// 10 shards takes a million hashes, milliseconds, at load).
///
/// The hash is fixed forever (a change would move probes between replicas on an upgrade):
/// FNV-1a 64 of the name ([`crate::schedule::stable_hash`]), mixed with the shard index by
/// the SplitMix64 finalizer, so neighbouring names and indexes get independent weights and
/// the choice of shard is unrelated to the choice of probe thread (FNV-1a modulo the
/// thread count). A unit test pins known owners.
pub fn owner(name: &str, count: u32) -> u32 {
    let name_hash = crate::schedule::stable_hash(name);
    let mut best = (0, 0);
    for shard in 0..count.max(1) {
        let weight = weight(name_hash, shard);
        // Strictly greater: a tie (a 2^-64 chance) goes to the lowest index, stable too.
        if shard == 0 || weight > best.1 {
            best = (shard, weight);
        }
    }
    best.0
}

/// The weight shard `shard` draws for the name hashed to `name_hash`.
fn weight(name_hash: u64, shard: u32) -> u64 {
    let shard_key = mix((u64::from(shard) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    mix(name_hash ^ shard_key)
}

/// The SplitMix64 finalizer (Stafford's "Mix13"): a bijection of `u64` whose every output
/// bit depends on every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a running replica knows of the sharding: its shard, and the names of the probes of
/// the config that other shards run (kept from the last config applied), so
/// `/api/v1/probes/{name}` can tell "runs elsewhere" from "unknown".
#[derive(Debug, Default)]
pub struct Placement {
    shard: Shard,
    /// Probes of the running config that this replica does not run.
    elsewhere: RwLock<Arc<HashSet<String>>>,
}

impl Placement {
    /// The placement of a replica running `shard`.
    pub fn new(shard: Shard) -> Self {
        Self {
            shard,
            elsewhere: RwLock::default(),
        }
    }

    /// This replica's shard.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Whether this replica runs probe `name`.
    pub fn runs(&self, name: &str) -> bool {
        self.shard.runs(name)
    }

    /// Keeps the names of `config`'s probes that other shards run (call it with each
    /// config applied).
    pub fn remember(&self, config: &Config) {
        let elsewhere: HashSet<String> = config
            .probes
            .iter()
            .filter(|spec| !self.runs(&spec.name))
            .map(|spec| spec.name.clone())
            .collect();
        *crate::sync::write(&self.elsewhere) = Arc::new(elsewhere);
    }

    /// The shard that runs probe `name`, when it is in the config but not on this replica.
    pub fn elsewhere(&self, name: &str) -> Option<u32> {
        crate::sync::read(&self.elsewhere)
            .contains(name)
            .then(|| owner(name, self.shard.count))
    }
}

/// The `check-config --shard.count=N` report: which replica runs each probe, and the
/// balance (probes per shard, largest over smallest). Names only: nothing secret.
pub fn assignment_report(config: &Config, count: u32) -> String {
    let count = count.max(1);
    let mut per_shard: BTreeMap<u32, usize> = (0..count).map(|shard| (shard, 0)).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "shard assignment for --shard.count={count} (rendezvous hashing of the probe name):"
    );
    let width = config
        .probes
        .iter()
        .map(|spec| spec.name.chars().count())
        .chain(std::iter::once("PROBE".len()))
        .max()
        .unwrap_or(0);
    let mut line = |name: &str, shard: &str| {
        // Padded by hand: `{:<width$}` panics on widths over 65,535.
        let padding = width - name.chars().count() + 2;
        let _ = writeln!(out, "{name}{}{shard}", " ".repeat(padding));
    };
    line("PROBE", "SHARD");
    for spec in &config.probes {
        let shard = owner(&spec.name, count);
        *per_shard.entry(shard).or_default() += 1;
        line(&spec.name, &shard.to_string());
    }
    let _ = writeln!(out, "balance:");
    for (shard, probes) in &per_shard {
        let _ = writeln!(out, "  shard {shard}: {probes} probe(s)");
    }
    let largest = per_shard.values().copied().max().unwrap_or(0);
    let smallest = per_shard.values().copied().min().unwrap_or(0);
    if smallest == 0 {
        let _ = writeln!(
            out,
            "  largest/smallest: {largest}/{smallest} (a shard runs no probe)"
        );
    } else {
        // Probe counts are far below 2^52: exact as floats.
        #[allow(clippy::cast_precision_loss)]
        let ratio = largest as f64 / smallest as f64;
        let _ = writeln!(out, "  largest/smallest: {largest}/{smallest} = {ratio:.2}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("probe-{i}")).collect()
    }

    #[test]
    fn owners_are_pinned_so_a_change_of_algorithm_is_caught() {
        // A change here moves probes between replicas on an upgrade: it must be deliberate.
        let pinned: Vec<u32> = ["refresh-customer", "erp-front", "order-sync", "a", ""]
            .iter()
            .map(|name| owner(name, 3))
            .collect();
        assert_eq!(pinned, PINNED_OWNERS_OF_3);
        assert_eq!(owner("refresh-customer", 10), PINNED_REFRESH_CUSTOMER_OF_10);
    }

    // Computed by an independent implementation (Python) of FNV-1a 64 + SplitMix64
    // rendezvous, as written in `owner`'s doc comment.
    const PINNED_OWNERS_OF_3: [u32; 5] = [1, 1, 0, 1, 2];
    const PINNED_REFRESH_CUSTOMER_OF_10: u32 = 7;

    #[test]
    fn one_shard_runs_every_probe() {
        assert!(names(100).iter().all(|name| owner(name, 1) == 0));
        assert!(names(100).iter().all(|name| Shard::UNSHARDED.runs(name)));
    }

    #[test]
    fn ten_thousand_names_spread_evenly_within_ten_percent() {
        for count in [2u32, 3, 4, 5, 7, 10] {
            let mut per_shard = vec![0usize; count as usize];
            for name in names(10_000) {
                per_shard[owner(&name, count) as usize] += 1;
            }
            let fair = 10_000.0 / f64::from(count);
            for (shard, &n) in per_shard.iter().enumerate() {
                let off = (n as f64 - fair).abs() / fair;
                assert!(
                    off <= 0.10,
                    "count {count}: shard {shard} has {n} probes, fair is {fair}: {per_shard:?}"
                );
            }
        }
    }

    #[test]
    fn going_from_n_to_n_plus_one_moves_about_one_in_n_plus_one_and_only_onto_the_new_shard() {
        for count in 1u32..=8 {
            let all = names(10_000);
            let mut moved = 0;
            for name in &all {
                let before = owner(name, count);
                let after = owner(name, count + 1);
                if before != after {
                    assert_eq!(after, count, "{name} moved from {before} to an old shard");
                    moved += 1;
                }
            }
            let expected = 10_000.0 / f64::from(count + 1);
            let off = (f64::from(moved) - expected).abs() / expected;
            assert!(
                off <= 0.10,
                "{count} -> {}: {moved} moved, expected about {expected}",
                count + 1
            );
        }
    }

    #[test]
    fn the_owner_does_not_depend_on_anything_but_the_name_and_the_count() {
        let first: Vec<u32> = names(50).iter().map(|n| owner(n, 4)).collect();
        let again: Vec<u32> = names(50).iter().rev().map(|n| owner(n, 4)).rev().collect();
        assert_eq!(first, again);
    }

    #[test]
    fn the_ordinal_is_the_trailing_number_of_the_host_name() {
        assert_eq!(ordinal("webhook-exporter-2"), Some(2));
        assert_eq!(ordinal("webhook-exporter-10"), Some(10));
        assert_eq!(
            ordinal("webhook-exporter-1.webhook-exporter.monitoring.svc"),
            Some(1)
        );
        assert_eq!(ordinal("webhook-exporter"), None);
        assert_eq!(ordinal("webhook-exporter-"), None);
        assert_eq!(ordinal("host7"), None);
        assert_eq!(ordinal("webhook-exporter-5d8f7"), None);
        assert_eq!(ordinal("webhook-exporter--1"), Some(1));
    }

    #[test]
    fn flags_resolve_to_a_shard_or_say_what_is_wrong() {
        let flags = |count, index, from_host| ShardFlags {
            count,
            index,
            index_from_hostname: from_host,
        };
        let host = || Some("webhook-exporter-2".to_owned());
        assert_eq!(flags(None, None, false).resolve(host), Ok(Shard::UNSHARDED));
        assert_eq!(
            flags(Some(3), Some(1), false).resolve(host),
            Shard::new(1, 3)
        );
        assert_eq!(flags(Some(3), None, true).resolve(host), Shard::new(2, 3));
        assert_eq!(
            flags(Some(3), Some(3), false).resolve(host),
            Err(ShardError::IndexOutOfRange { index: 3, count: 3 })
        );
        assert_eq!(
            flags(Some(0), Some(0), false).resolve(host),
            Err(ShardError::ZeroCount)
        );
        assert_eq!(
            flags(None, Some(0), false).resolve(host),
            Err(ShardError::IndexWithoutCount)
        );
        assert_eq!(
            flags(Some(2), Some(0), true).resolve(host),
            Err(ShardError::BothIndexes)
        );
        assert_eq!(
            flags(Some(2), None, false).resolve(host),
            Err(ShardError::NoIndex { count: 2 })
        );
        assert_eq!(
            flags(Some(2), None, true).resolve(host),
            Err(ShardError::OrdinalOutOfRange {
                host: "webhook-exporter-2".into(),
                index: 2,
                count: 2
            })
        );
        assert_eq!(
            flags(Some(2), None, true).resolve(|| Some("myhost".into())),
            Err(ShardError::NoOrdinal {
                host: "myhost".into()
            })
        );
        assert_eq!(
            flags(Some(2), None, true).resolve(|| None),
            Err(ShardError::NoHostName)
        );
    }
}
