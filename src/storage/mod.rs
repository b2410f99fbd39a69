//! State that survives a restart (`--storage.path=DIR`): each probe's recent results, its
//! failure streak, last success, HTTP version and TLS seen, and next planned run, in one
//! embedded `redb` file, `DIR/webhook-exporter.redb`.
//!
//! Why redb: a maintained, pure-Rust embedded database whose commits are atomic and
//! checksummed, so a crash at any moment leaves the last committed state (never a torn
//! one) and a damaged file is detected on open, which an append-only log of our own would
//! have to re-implement (framing, checksums, compaction). The narrow interface:
//! [`Storage::open`] (a clear [`StorageError`] for a store that cannot be used),
//! [`Storage::load`] (what was kept, by probe), and [`Storage::start_writer`], whose
//! [`Recorder`] the scheduler feeds; the writer thread batches what it is fed and commits
//! about twice a second, so the probe loop never waits for the disk.

mod codec;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::ProbeSpec;
use crate::probe::{Outcome, TlsDetails};

pub use writer::{Recorder, Writer};

/// The store's file name inside `--storage.path`.
pub const FILE_NAME: &str = "webhook-exporter.redb";

/// Batch key -> the results of one commit ([`codec::push_entry`]): each commit writes
/// one value, so recording a run costs a few bytes appended to a buffer rather than a
/// B-tree insertion (and its later deletion) of its own. A batch is deleted once none of
/// its results is in a probe's ring any more; the writer moves the few results still kept
/// out of old batches when the dead ones would make the file grow ([`writer`]).
const BATCHES: TableDefinition<u64, &[u8]> = TableDefinition::new("batches");

/// Probe name -> where its results start: its entries with a lower sequence number still
/// in a batch are not its results any more (it was removed, its settings changed, or its
/// ring was cut by a smaller `history_size`), so a restart does not bring them back.
const STARTS: TableDefinition<&str, u64> = TableDefinition::new("starts");

/// The table of an earlier development layout (one value per result), never released:
/// dropped on open.
const OLD_LOG: &str = "log";

/// redb's page cache: small, since the store is written far more than read (it is read
/// whole once, at start).
const CACHE_BYTES: usize = 4 << 20;

/// Why the store cannot be used; the exporter does not start.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The directory cannot be created or is not a directory.
    #[error(
        "cannot use {dir} as --storage.path: {reason}; create it as a writable directory or pass another --storage.path"
    )]
    Directory {
        /// The `--storage.path`.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file exists but is no store this exporter can read.
    #[error(
        "the store {file} is corrupt ({reason}): move it away (or delete it) to start with an empty store; the exporter does not overwrite it"
    )]
    Corrupt {
        /// The store file.
        file: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Another process holds the store.
    #[error(
        "the store {file} is in use by another process: give each exporter its own --storage.path"
    )]
    InUse {
        /// The store file.
        file: PathBuf,
    },
    /// The file cannot be created, read or written.
    #[error(
        "cannot open the store {file} for writing: {reason}; make the --storage.path directory writable by the exporter or pass another --storage.path"
    )]
    Unwritable {
        /// The store file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What was kept of one probe.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Digest of its settings then ([`digest`]).
    pub digest: [u8; 16],
    /// Its recent results, oldest first, as outcomes (no TLS, no HTTP version).
    pub results: Vec<Outcome>,
    /// Failed runs since the last success.
    pub consecutive_failures: u64,
    /// End of the last successful run.
    pub last_success: Option<std::time::SystemTime>,
    /// The next run that was planned.
    pub next_run: Option<std::time::SystemTime>,
    /// HTTP version of the last answer.
    pub http_version: Option<&'static str>,
    /// The last TLS details with a certificate.
    pub tls: Option<TlsDetails>,
    /// Where its results are in the store, in order.
    pub(crate) slots: Vec<Slot>,
}

/// Where a result is in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Its sequence number: the order of a probe's results.
    pub seq: u64,
    /// The batch holding it.
    pub batch: u64,
}

/// An open store.
pub struct Storage {
    db: Arc<redb::Database>,
    file: PathBuf,
    /// How many entries each batch holds, live or not, as [`Storage::load`] found them.
    batch_sizes: BTreeMap<u64, u32>,
    /// Starts ([`STARTS`]) below which [`Storage::load`] found nothing: no longer needed.
    needless_starts: Vec<String>,
    /// Above every sequence number the store holds or refers to: the next result's.
    next_seq: u64,
}

impl Storage {
    /// Opens (or creates) the store in `dir`, creating `dir` if needed, and checks it can
    /// be written.
    ///
    /// # Errors
    /// A directory that cannot be used, a corrupt file, a file held by another process, or
    /// one that cannot be written.
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let directory = |reason: String| StorageError::Directory {
            dir: dir.to_owned(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| directory(e.to_string()))?;
        if !dir.is_dir() {
            return Err(directory("not a directory".to_owned()));
        }
        let file = dir.join(FILE_NAME);
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&file)
            .map_err(|e| open_error(&file, e))?;
        let storage = Self {
            db: Arc::new(db),
            file,
            batch_sizes: BTreeMap::new(),
            needless_starts: Vec::new(),
            next_seq: 0,
        };
        // Creates the tables, and proves a commit reaches the disk before anything runs.
        let unwritable = |reason: String| StorageError::Unwritable {
            file: storage.file.clone(),
            reason,
        };
        let mut tx = storage
            .db
            .begin_write()
            .map_err(|e| unwritable(e.to_string()))?;
        tx.set_quick_repair(true);
        tx.open_table(BATCHES)
            .map_err(|e| table_error(&storage.file, e))?;
        tx.open_table(STARTS)
            .map_err(|e| table_error(&storage.file, e))?;
        let old_log = redb::TableDefinition::<u64, &[u8]>::new(OLD_LOG);
        if tx
            .delete_table(old_log)
            .map_err(|e| table_error(&storage.file, e))?
        {
            tracing::warn!(file = %storage.file.display(), "the store held results in a layout of a development build: they are dropped");
        }
        tx.commit().map_err(|e| unwritable(e.to_string()))?;
        Ok(storage)
    }

    /// The store file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many results the file holds, in a ring or not, as the last [`Storage::load`]
    /// found them: what its size follows.
    pub fn stored_results(&self) -> u64 {
        self.batch_sizes.values().map(|&size| u64::from(size)).sum()
    }

    /// Everything kept, by probe name.
    ///
    /// # Errors
    /// A value that does not decode: the store is corrupt.
    pub fn load(&mut self) -> Result<BTreeMap<String, Saved>, StorageError> {
        let corrupt = |reason: String| StorageError::Corrupt {
            file: self.file.clone(),
            reason,
        };
        let tx = self.db.begin_read().map_err(|e| corrupt(e.to_string()))?;
        self.next_seq = 0;
        let mut starts: HashMap<String, (u64, bool)> = HashMap::new();
        let table = tx.open_table(STARTS).map_err(|e| corrupt(e.to_string()))?;
        for start in table.iter().map_err(|e| corrupt(e.to_string()))? {
            let (name, seq) = start.map_err(|e| corrupt(e.to_string()))?;
            self.next_seq = self.next_seq.max(seq.value());
            starts.insert(name.value().to_owned(), (seq.value(), false));
        }
        let table = tx.open_table(BATCHES).map_err(|e| corrupt(e.to_string()))?;
        // A result, where its probe's ring started then, its outcome and summary.
        type Found = (Slot, u64, Outcome, codec::Summary);
        let mut found: BTreeMap<String, Vec<Found>> = BTreeMap::new();
        self.batch_sizes.clear();
        for batch in table.iter().map_err(|e| corrupt(e.to_string()))? {
            let (key, value) = batch.map_err(|e| corrupt(e.to_string()))?;
            let key = key.value();
            let undecodable = || corrupt(format!("batch {key} does not decode"));
            let entries = codec::entries(value.value()).ok_or_else(undecodable)?;
            self.batch_sizes
                .insert(key, u32::try_from(entries.len()).unwrap_or(u32::MAX));
            for entry in entries {
                let codec::Place {
                    seq,
                    ring_start,
                    name,
                } = entry.place;
                self.next_seq = self.next_seq.max(seq + 1);
                if let Some((start, below)) = starts.get_mut(name)
                    && seq < *start
                {
                    *below = true;
                    continue;
                }
                let (outcome, summary) = codec::decode_body(entry.body).ok_or_else(undecodable)?;
                let slot = Slot { seq, batch: key };
                let result = (slot, ring_start, outcome, summary);
                match found.get_mut(name) {
                    Some(results) => results.push(result),
                    None => {
                        found.insert(name.to_owned(), vec![result]);
                    }
                }
            }
        }
        self.needless_starts = starts
            .into_iter()
            .filter(|(_, (_, below))| !below)
            .map(|(name, _)| name)
            .collect();
        let mut saved = BTreeMap::new();
        for (name, mut results) in found {
            // Batches come in commit order, but a result the writer moved out of an old
            // batch sits in a later one: the sequence numbers give the order.
            results.sort_by_key(|(slot, ..)| slot.seq);
            // Older results the ring had let go of before the last one came.
            let ring_start = results.last().map_or(0, |(_, start, ..)| *start);
            results.retain(|(slot, ..)| slot.seq >= ring_start);
            let mut probe = Saved {
                digest: [0; 16],
                results: Vec::new(),
                consecutive_failures: 0,
                last_success: None,
                next_run: None,
                http_version: None,
                tls: None,
                slots: Vec::new(),
            };
            for (slot, _, outcome, summary) in results {
                if probe.digest != summary.digest {
                    // Settings changed by a reload: only what came after counts.
                    probe.results.clear();
                    probe.slots.clear();
                }
                // A probe's last result has its latest summary.
                probe.digest = summary.digest;
                probe.consecutive_failures = summary.consecutive_failures;
                probe.last_success = summary.last_success_ns.map(codec::time);
                probe.next_run = summary.next_run_ns.map(codec::time);
                probe.http_version = summary.http_version.as_deref().and_then(static_version);
                probe.tls = summary.tls;
                probe.slots.push(slot);
                probe.results.push(outcome);
            }
            saved.insert(name, probe);
        }
        Ok(saved)
    }

    /// Starts the writer thread over this store: what `saved` (the store's content, from
    /// [`Storage::load`]) holds is its starting point.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start_writer(self, saved: &BTreeMap<String, Saved>) -> std::io::Result<Writer> {
        Writer::start(
            self.db,
            self.file,
            &self.batch_sizes,
            self.needless_starts,
            self.next_seq,
            saved,
        )
    }
}

/// The HTTP version names the probe reports, as the `&'static str` outcomes carry.
fn static_version(text: &str) -> Option<&'static str> {
    ["1.0", "1.1", "2"].into_iter().find(|v| *v == text)
}

fn open_error(file: &Path, error: redb::DatabaseError) -> StorageError {
    use redb::DatabaseError as E;
    match error {
        E::DatabaseAlreadyOpen => StorageError::InUse {
            file: file.to_owned(),
        },
        E::Storage(redb::StorageError::Io(io))
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) || io.raw_os_error() == Some(30) =>
        {
            StorageError::Unwritable {
                file: file.to_owned(),
                reason: io.to_string(),
            }
        }
        E::Storage(redb::StorageError::Io(io)) if io.kind() != std::io::ErrorKind::InvalidData => {
            StorageError::Unwritable {
                file: file.to_owned(),
                reason: io.to_string(),
            }
        }
        other => StorageError::Corrupt {
            file: file.to_owned(),
            reason: other.to_string(),
        },
    }
}

fn table_error(file: &Path, error: redb::TableError) -> StorageError {
    StorageError::Corrupt {
        file: file.to_owned(),
        reason: error.to_string(),
    }
}

/// A digest of the settings of `spec` that decide how it runs, to tell after a restart
/// whether the stored state is still this probe's (a changed probe starts fresh, as a
/// reload does). Made from the settings as `Debug` shows them, that is without the
/// secrets (the webhook code, passwords, tokens, bodies): nothing derived from a secret is
/// written to disk, so a rotated secret alone keeps the stored state. The probe's place in
/// the config files does not count either.
pub fn digest(spec: &ProbeSpec) -> [u8; 16] {
    let ProbeSpec {
        name,
        server,
        target,
        method,
        headers,
        labels,
        schedule,
        timeout,
        retries,
        retry_delay,
        retry_on,
        follow_redirects,
        max_body_bytes,
        tls,
        proxy,
        expect,
        origin: _,
        body,
        credentials,
        maintenance,
        objective,
    } = spec;
    // Header values as names only: a header may carry a token.
    let header_names: Vec<&str> = headers.iter().map(|(name, _)| name.as_str()).collect();
    let target = (target.masked(), target.basic_auth.is_some());
    let text = format!(
        "{name:?}|{server:?}|{target:?}|{method:?}|{header_names:?}|{labels:?}|{schedule:?}|{timeout:?}|{retries:?}|{retry_delay:?}|{retry_on:?}|{follow_redirects:?}|{max_body_bytes:?}|{tls:?}|{proxy:?}|{expect:?}|{}|{}|{maintenance:?}|{objective:?}",
        body.as_ref().map_or(0, |b| b.bytes.len()),
        credentials.is_some(),
    );
    let hash = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&hash.as_ref()[..16]);
    out
}

#[cfg(test)]
mod tests {
    use super::digest;
    use crate::config::{Config, ProbeSpec};

    fn load(text: &str) -> Config {
        let dir = std::env::temp_dir().join(format!(
            "webhook-exporter-digest-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.yaml");
        std::fs::write(&path, text).unwrap();
        let config = crate::config::load(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        config
    }

    fn probe(config: &Config) -> &ProbeSpec {
        &config.probes[0]
    }

    const BASE: &str = "servers:\n  erp: {base_url: 'https://erp.example/erp'}\nprobes:\n";

    #[test]
    fn the_digest_ignores_secrets_and_place_but_not_settings() {
        let first = load(&format!(
            "{BASE}  - {{name: p, server: erp, code: MONWEBHOOKACADEMY1234567890123, interval: 1m, basic_auth: {{username: u, password: one}}}}\n"
        ));
        let rotated = load(&format!(
            "{BASE}  - {{name: q, server: erp, code: ZZZZOTHERCODE99999999999999999, interval: 1m, basic_auth: {{username: u, password: two}}}}\n  - {{name: p, server: erp, code: XYZWEBHOOKROTATED000000000000, interval: 1m, basic_auth: {{username: u, password: two}}}}\n"
        ));
        let changed = load(&format!(
            "{BASE}  - {{name: p, server: erp, code: MONWEBHOOKACADEMY1234567890123, interval: 2m, basic_auth: {{username: u, password: one}}}}\n"
        ));
        let moved = &rotated.probes[1];
        assert_eq!(moved.name, "p");
        assert_eq!(
            digest(probe(&first)),
            digest(moved),
            "a rotated secret or a move keeps the state"
        );
        assert_ne!(
            digest(probe(&first)),
            digest(probe(&changed)),
            "a changed interval starts fresh"
        );
    }
}
