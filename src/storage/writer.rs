//! The writer thread: the only code that writes the store. The scheduler hands it updates
//! through an unbounded channel (a send never waits), and it commits them in batches: after
//! the first update of a batch it sleeps [`BATCH`], then takes what came meanwhile, so a
//! crash loses at most about that much, and a commit is one fsync and one value for many
//! results.
//!
//! A batch is deleted once none of its results is in a probe's ring. A probe that runs
//! rarely keeps results in batches whose other results are long gone: when the entries no
//! ring holds would outnumber the kept ones (plus [`SLACK`]), each commit moves the kept
//! results of the oldest batches into its own (at most [`MOVES_PER_COMMIT`]), so the file
//! stays within about twice what it keeps.

use std::collections::{BTreeMap, HashMap, VecDeque, btree_map};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redb::Table;

use super::codec::{self, Summary};
use super::{BATCHES, STARTS, Saved, Slot, digest};
use crate::config::ProbeSpec;
use crate::probe::Outcome;

/// How long the first update of a batch waits for others before the commit: what a crash
/// may lose at most (one second, the promise, with room for the commit itself).
const BATCH: Duration = Duration::from_millis(800);

/// Entries no ring holds that the store may carry beyond as many as the rings hold,
/// before commits start moving kept results out of old batches.
const SLACK: u64 = 10_000;

/// At most this many kept results are moved per commit, so one commit stays short.
const MOVES_PER_COMMIT: usize = 4_096;

enum Update {
    /// A run's result.
    Result(ResultUpdate),
    /// The probes of the running config and `history_size`: the others are forgotten, and
    /// each probe keeps at most that many results.
    Keep {
        specs: Vec<Arc<ProbeSpec>>,
        history_size: usize,
    },
    /// Commit what came before, then say so.
    Flush(Sender<()>),
    /// Commit what came before, then stop.
    Close,
}

/// A run's result, as the writer gets it.
struct ResultUpdate {
    spec: Arc<ProbeSpec>,
    /// [`codec::encode_result`]'s bytes, made on the probe's thread.
    result: Vec<u8>,
    success: bool,
    finished_ns: i64,
    next_run_ns: Option<i64>,
    http_version: Option<&'static str>,
    tls: Option<crate::probe::TlsDetails>,
}

/// The scheduler's side of the writer: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    sender: Sender<Update>,
    /// The writer thread, woken by a flush.
    thread: std::thread::Thread,
}

impl Recorder {
    /// Queues the result of a run of `spec`, with the run planned next.
    pub fn result(
        &self,
        spec: &Arc<ProbeSpec>,
        outcome: &Outcome,
        next_run: Option<DateTime<Utc>>,
    ) {
        let _ = self.sender.send(Update::Result(ResultUpdate {
            spec: spec.clone(),
            result: codec::encode_result(outcome),
            success: outcome.success,
            finished_ns: codec::nanos(outcome.finished_at),
            next_run_ns: next_run.and_then(|at| at.timestamp_nanos_opt()),
            http_version: outcome.http_version,
            tls: outcome.tls.clone().filter(|tls| tls.certificate.is_some()),
        }));
    }

    /// Waits until everything queued before is committed (tests and measurements).
    pub fn flush(&self) {
        let (done, wait) = channel();
        if self.sender.send(Update::Flush(done)).is_ok() {
            self.thread.unpark();
            let _ = wait.recv();
        }
    }

    /// Queues the set of running probes (after each config): the store forgets the others
    /// and those whose settings changed, and keeps `history_size` results per probe.
    pub fn keep(&self, specs: Vec<Arc<ProbeSpec>>, history_size: usize) {
        let _ = self.sender.send(Update::Keep {
            specs,
            history_size,
        });
    }
}

/// The writer thread.
pub struct Writer {
    sender: Sender<Update>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(
        db: Arc<redb::Database>,
        file: PathBuf,
        batch_sizes: &BTreeMap<u64, u32>,
        needless_starts: Vec<String>,
        next_seq: u64,
        saved: &BTreeMap<String, Saved>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel();
        let mut batches = Batches::new(batch_sizes);
        let probes = saved
            .iter()
            .map(|(name, saved)| {
                let summary = Summary {
                    digest: saved.digest,
                    consecutive_failures: saved.consecutive_failures,
                    last_success_ns: saved.last_success.map(codec::nanos),
                    next_run_ns: saved.next_run.map(codec::nanos),
                    http_version: saved.http_version.map(str::to_owned),
                    tls: saved.tls.clone(),
                };
                for slot in &saved.slots {
                    batches.keep(slot.batch);
                }
                let probe = Probe {
                    summary,
                    ring: saved.slots.iter().copied().collect(),
                };
                (name.clone(), probe)
            })
            .collect();
        // Batches that hold nothing kept (results of settings since changed): deleted by
        // the first commit.
        batches.release_unkept();
        let state = WriterState {
            db,
            file,
            probes,
            digests: HashMap::new(),
            kept: None,
            history_size: usize::MAX,
            next_seq,
            batches,
            new_starts: Vec::new(),
            needless_starts,
            fallen: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("storage-writer".to_owned())
            .spawn(move || state.run(&receiver))?;
        Ok(Self {
            sender,
            thread: Some(thread),
        })
    }

    /// A handle to feed it.
    pub fn recorder(&self) -> Recorder {
        Recorder {
            sender: self.sender.clone(),
            thread: self
                .thread
                .as_ref()
                .map_or_else(std::thread::current, |t| t.thread().clone()),
        }
    }

    /// Commits everything queued so far and stops the thread (SIGTERM's last step).
    pub fn close(mut self) {
        let _ = self.sender.send(Update::Close);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// What the writer knows of one stored probe.
struct Probe {
    /// As of its last stored result.
    summary: Summary,
    /// Where its ring's results are, oldest first.
    ring: VecDeque<Slot>,
}

/// What the writer knows of one stored batch.
struct Batch {
    /// Its entries, kept or not.
    entries: u64,
    /// Its entries still in a probe's ring.
    kept: u64,
}

/// The stored batches and how much of each is still kept.
struct Batches {
    /// Every stored batch (and the one being made), by key.
    by_key: BTreeMap<u64, Batch>,
    /// Entries in all batches, kept or not.
    entries: u64,
    /// Entries in a probe's ring.
    kept: u64,
    /// Batches left with nothing kept, to delete in this commit.
    emptied: Vec<u64>,
    /// The key of the batch the running commit makes, if one runs.
    making: Option<u64>,
    /// The key of the next batch.
    next_key: u64,
}

impl Batches {
    /// The batches found in the store, with their sizes, none kept yet.
    fn new(sizes: &BTreeMap<u64, u32>) -> Self {
        let by_key: BTreeMap<u64, Batch> = sizes
            .iter()
            .map(|(&key, &entries)| {
                let entries = u64::from(entries);
                (key, Batch { entries, kept: 0 })
            })
            .collect();
        Self {
            entries: by_key.values().map(|batch| batch.entries).sum(),
            kept: 0,
            by_key,
            emptied: Vec::new(),
            making: None,
            next_key: sizes.keys().next_back().map_or(0, |last| last + 1),
        }
    }

    /// Counts an entry of batch `key` as kept (at start).
    fn keep(&mut self, key: u64) {
        if let Some(batch) = self.by_key.get_mut(&key) {
            batch.kept += 1;
            self.kept += 1;
        }
    }

    /// Lets go of the batches of which nothing is kept (at start).
    fn release_unkept(&mut self) {
        let unkept: Vec<u64> = self
            .by_key
            .iter()
            .filter(|(_, batch)| batch.kept == 0)
            .map(|(&key, _)| key)
            .collect();
        for key in unkept {
            self.drop(key);
            self.emptied.push(key);
        }
    }

    /// Starts a new batch; returns its key.
    fn open(&mut self) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.making = Some(key);
        self.by_key.insert(
            key,
            Batch {
                entries: 0,
                kept: 0,
            },
        );
        key
    }

    /// Counts one more kept entry in the batch being made.
    fn add(&mut self) {
        if let Some(batch) = self.making.and_then(|key| self.by_key.get_mut(&key)) {
            batch.entries += 1;
            batch.kept += 1;
            self.entries += 1;
            self.kept += 1;
        }
    }

    /// Ends the batch being made: whether anything it holds is kept (else it is not
    /// written).
    fn close(&mut self) -> bool {
        let Some(key) = self.making.take() else {
            return false;
        };
        let kept = self.by_key.get(&key).is_some_and(|batch| batch.kept > 0);
        if !kept {
            self.drop(key);
        }
        kept
    }

    /// Counts `slot` as no longer in its ring; its batch goes when nothing in it is kept.
    fn release(&mut self, slot: Slot) {
        let btree_map::Entry::Occupied(mut batch) = self.by_key.entry(slot.batch) else {
            return;
        };
        batch.get_mut().kept -= 1;
        self.kept -= 1;
        // The batch being made stays until the commit ends: more may come into it.
        if batch.get().kept == 0 && Some(slot.batch) != self.making {
            self.entries -= batch.remove().entries;
            self.emptied.push(slot.batch);
        }
    }

    /// Forgets batch `key` (its kept entries moved elsewhere or lost).
    fn drop(&mut self, key: u64) {
        if let Some(batch) = self.by_key.remove(&key) {
            self.entries -= batch.entries;
            self.kept -= batch.kept;
        }
    }

    /// The oldest batch, unless it is the one being made.
    fn oldest(&self) -> Option<u64> {
        let (&key, _) = self.by_key.first_key_value()?;
        (Some(key) != self.making).then_some(key)
    }

    /// Whether the entries no ring holds outnumber the kept ones by more than [`SLACK`].
    fn too_many_unkept(&self) -> bool {
        self.entries - self.kept > self.kept + SLACK
    }
}

struct WriterState {
    db: Arc<redb::Database>,
    file: PathBuf,
    /// Every stored probe, as committed (or about to be).
    probes: HashMap<String, Probe>,
    /// The digest of each spec seen, by name (the spec held so its address is not reused).
    digests: HashMap<String, (Arc<ProbeSpec>, [u8; 16])>,
    /// The running probes' digests, once the scheduler said which they are.
    kept: Option<HashMap<String, [u8; 16]>>,
    history_size: usize,
    /// The sequence number of the next result.
    next_seq: u64,
    batches: Batches,
    /// Where the results of these probes start now ([`super::STARTS`]), to write.
    new_starts: Vec<(String, u64)>,
    /// Starts no longer needed, to delete.
    needless_starts: Vec<String>,
    /// Slots fallen out of a ring, to release (kept to spare an allocation per result).
    fallen: Vec<Slot>,
}

impl WriterState {
    fn run(mut self, receiver: &Receiver<Update>) {
        loop {
            let Ok(first) = receiver.recv() else { return };
            let mut closing = matches!(first, Update::Close);
            if !closing && !matches!(first, Update::Flush(_)) {
                // Parked rather than waiting on the channel: a waiting receiver is woken
                // by every send, which cost both sides a context switch per result. A
                // flush or the close unparks it.
                std::thread::park_timeout(BATCH);
            }
            let mut batch = vec![first];
            loop {
                match receiver.try_recv() {
                    Ok(Update::Close) | Err(TryRecvError::Disconnected) => {
                        closing = true;
                        break;
                    }
                    Ok(update) => batch.push(update),
                    Err(TryRecvError::Empty) => break,
                }
            }
            let flushes: Vec<Sender<()>> = batch
                .iter()
                .filter_map(|update| match update {
                    Update::Flush(done) => Some(done.clone()),
                    _ => None,
                })
                .collect();
            if let Err(error) = self.commit(batch) {
                tracing::error!(file = %self.file.display(), error = %error, "cannot write the store: these results are not kept");
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closing {
                return;
            }
        }
    }

    fn digest_of(&mut self, spec: &Arc<ProbeSpec>) -> [u8; 16] {
        match self.digests.get(&spec.name) {
            Some((known, digest)) if Arc::ptr_eq(known, spec) => *digest,
            _ => {
                let digest = digest(spec);
                self.digests
                    .insert(spec.name.clone(), (spec.clone(), digest));
                digest
            }
        }
    }

    fn commit(&mut self, updates: Vec<Update>) -> Result<(), redb::Error> {
        let key = self.batches.open();
        let mut batch = codec::new_batch();
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(true);
        {
            let mut table = tx.open_table(BATCHES)?;
            for update in updates {
                match update {
                    Update::Result(result) => self.append(&mut batch, key, result),
                    Update::Keep {
                        specs,
                        history_size,
                    } => self.keep(&specs, history_size),
                    Update::Flush(_) | Update::Close => {}
                }
            }
            self.move_kept_out_of_old_batches(&mut table, &mut batch, key)?;
            if self.batches.close() {
                table.insert(key, batch.as_slice())?;
            }
            for emptied in std::mem::take(&mut self.batches.emptied) {
                table.remove(emptied)?;
            }
            let mut starts = tx.open_table(STARTS)?;
            for name in std::mem::take(&mut self.needless_starts) {
                starts.remove(name.as_str())?;
            }
            for (name, seq) in std::mem::take(&mut self.new_starts) {
                starts.insert(name.as_str(), seq)?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Adds the result to its probe's ring and its entry to `batch` (key `key`).
    fn append(&mut self, batch: &mut Vec<u8>, key: u64, result: ResultUpdate) {
        let ResultUpdate {
            spec,
            result,
            success,
            finished_ns,
            next_run_ns,
            http_version,
            tls,
        } = result;
        let digest = self.digest_of(&spec);
        // A run of a probe no longer running (removed or changed by a reload) finishing
        // late: not the running probe's result.
        if let Some(kept) = &self.kept
            && kept.get(&spec.name) != Some(&digest)
        {
            return;
        }
        let known = self.probes.get(&spec.name);
        if known.is_none_or(|probe| probe.summary.digest != digest) {
            self.start_probe(&spec.name, digest);
        }
        let Some(probe) = self.probes.get_mut(&spec.name) else {
            return;
        };
        let summary = &mut probe.summary;
        if success {
            summary.consecutive_failures = 0;
            summary.last_success_ns = Some(finished_ns);
        } else {
            summary.consecutive_failures += 1;
        }
        summary.next_run_ns = next_run_ns;
        if summary.http_version.as_deref() != http_version {
            summary.http_version = http_version.map(str::to_owned);
        }
        if tls.is_some() {
            summary.tls = tls;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        probe.ring.push_back(Slot { seq, batch: key });
        let fallen = probe.ring.len().saturating_sub(self.history_size);
        self.fallen.extend(probe.ring.drain(..fallen));
        let ring_start = probe.ring.front().map_or(seq + 1, |first| first.seq);
        let place = codec::Place {
            seq,
            ring_start,
            name: &spec.name,
        };
        codec::push_entry(batch, place, &result, &probe.summary);
        self.batches.add();
        for slot in self.fallen.drain(..) {
            self.batches.release(slot);
        }
    }

    /// A fresh probe `name` of settings `digest`, in place of what was stored of it.
    fn start_probe(&mut self, name: &str, digest: [u8; 16]) {
        self.forget(name);
        let probe = Probe {
            summary: Summary {
                digest,
                ..Summary::default()
            },
            ring: VecDeque::new(),
        };
        self.probes.insert(name.to_owned(), probe);
    }

    /// Drops a probe and counts its results as no longer kept.
    fn forget(&mut self, name: &str) {
        if let Some(probe) = self.probes.remove(name) {
            for slot in probe.ring {
                self.batches.release(slot);
            }
            self.new_starts.push((name.to_owned(), self.next_seq));
        }
    }

    /// The running probes are `specs`: forgets the others and those whose settings changed,
    /// and trims every ring to `history_size`.
    fn keep(&mut self, specs: &[Arc<ProbeSpec>], history_size: usize) {
        let kept: HashMap<String, [u8; 16]> = specs
            .iter()
            .map(|spec| (spec.name.clone(), self.digest_of(spec)))
            .collect();
        self.digests.retain(|name, _| kept.contains_key(name));
        let gone: Vec<String> = self
            .probes
            .iter()
            .filter(|(name, probe)| kept.get(*name) != Some(&probe.summary.digest))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            self.forget(&name);
        }
        for (name, probe) in &mut self.probes {
            if probe.ring.len() > history_size {
                let cut = probe.ring.len() - history_size;
                self.fallen.extend(probe.ring.drain(..cut));
                let start = probe.ring.front().map_or(self.next_seq, |first| first.seq);
                self.new_starts.push((name.clone(), start));
            }
        }
        for slot in self.fallen.drain(..) {
            self.batches.release(slot);
        }
        self.history_size = history_size;
        self.kept = Some(kept);
    }

    /// While the entries no ring holds outnumber the kept ones by more than [`SLACK`],
    /// copies the kept results of the oldest batches into `batch` (the one being made,
    /// `key`) and deletes those batches, at most [`MOVES_PER_COMMIT`] results a commit.
    fn move_kept_out_of_old_batches(
        &mut self,
        table: &mut Table<u64, &[u8]>,
        batch: &mut Vec<u8>,
        key: u64,
    ) -> Result<(), redb::Error> {
        let mut moved = 0;
        while self.batches.too_many_unkept() && moved < MOVES_PER_COMMIT {
            let Some(oldest) = self.batches.oldest() else {
                break;
            };
            let removed = table.remove(oldest)?;
            // None: lost by a failed commit, nothing of it is on disk to move.
            let value = removed
                .map(|value| value.value().to_vec())
                .unwrap_or_default();
            let entries = codec::entries(&value).unwrap_or_else(|| {
                tracing::error!(file = %self.file.display(), batch = oldest, "a batch of the store does not decode: its results are dropped");
                Vec::new()
            });
            for entry in entries {
                let Some(slot) = self.probes.get_mut(entry.place.name).and_then(|probe| {
                    let at = probe
                        .ring
                        .binary_search_by_key(&entry.place.seq, |slot| slot.seq)
                        .ok()?;
                    let slot = &mut probe.ring[at];
                    (slot.batch == oldest).then_some(slot)
                }) else {
                    continue;
                };
                slot.batch = key;
                batch.extend_from_slice(entry.framed);
                self.batches.add();
                moved += 1;
            }
            self.batches.drop(oldest);
        }
        Ok(())
    }
}
