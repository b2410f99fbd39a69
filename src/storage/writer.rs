//! The writer thread: the only code that writes the store. The scheduler hands it updates
//! through an unbounded channel (a send never waits), and it commits them in batches: after
//! the first update of a batch it sleeps [`BATCH`], then takes what came meanwhile, so a
//! crash loses at most about that much, and a commit is one fsync for many results.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::Duration;

use chrono::{DateTime, Utc};
use redb::Table;

use super::codec::{self, Summary};
use super::{LOG, Saved, digest};
use crate::config::ProbeSpec;
use crate::probe::Outcome;

/// How long the first update of a batch waits for others before the commit: what a crash
/// may lose at most (one second, the promise, with room for the commit itself).
const BATCH: Duration = Duration::from_millis(800);

/// Entries fallen out of their rings deleted together: a few pages of the log's old end
/// per batch, rather than one page per result.
const GARBAGE: usize = 4096;

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
        saved: &BTreeMap<String, Saved>,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = channel();
        let next_seq = saved
            .values()
            .filter_map(|saved| saved.seqs.last())
            .max()
            .map_or(0, |last| last + 1);
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
                let probe = Probe {
                    summary,
                    seqs: saved.seqs.iter().copied().collect(),
                };
                (name.clone(), probe)
            })
            .collect();
        let state = WriterState {
            db,
            file,
            probes,
            digests: HashMap::new(),
            kept: None,
            history_size: usize::MAX,
            next_seq,
            garbage: Vec::new(),
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
    /// The keys of its ring's entries, oldest first.
    seqs: VecDeque<u64>,
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
    /// The key of the next entry.
    next_seq: u64,
    /// Keys of entries fallen out of their probe's ring, deleted [`GARBAGE`] at a time.
    garbage: Vec<u64>,
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

    fn commit(&mut self, batch: Vec<Update>) -> Result<(), redb::Error> {
        let mut tx = self.db.begin_write()?;
        tx.set_quick_repair(true);
        {
            let mut log = tx.open_table(LOG)?;
            for update in batch {
                match update {
                    Update::Result(result) => self.append(&mut log, result)?,
                    Update::Keep {
                        specs,
                        history_size,
                    } => self.keep(&mut log, &specs, history_size)?,
                    Update::Flush(_) | Update::Close => {}
                }
            }
            if self.garbage.len() >= GARBAGE {
                // In key order: the entries of one page go together.
                self.garbage.sort_unstable();
                for seq in self.garbage.drain(..) {
                    log.remove(seq)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn append(
        &mut self,
        log: &mut Table<u64, &[u8]>,
        result: ResultUpdate,
    ) -> Result<(), redb::Error> {
        let ResultUpdate {
            spec,
            mut result,
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
            return Ok(());
        }
        if self
            .probes
            .get(&spec.name)
            .is_some_and(|probe| probe.summary.digest != digest)
            && let Some(old) = self.probes.remove(&spec.name)
        {
            forget(log, old.seqs)?;
        }
        let probe = self
            .probes
            .entry(spec.name.clone())
            .or_insert_with(|| Probe {
                summary: Summary {
                    digest,
                    ..Summary::default()
                },
                seqs: VecDeque::new(),
            });
        let summary = &mut probe.summary;
        if success {
            summary.consecutive_failures = 0;
            summary.last_success_ns = Some(finished_ns);
        } else {
            summary.consecutive_failures += 1;
        }
        summary.next_run_ns = next_run_ns;
        summary.http_version = http_version.map(str::to_owned);
        if tls.is_some() {
            summary.tls = tls;
        }
        codec::append_summary(&mut result, summary, &spec.name);
        let seq = self.next_seq;
        self.next_seq += 1;
        log.insert(seq, result.as_slice())?;
        probe.seqs.push_back(seq);
        while probe.seqs.len() > self.history_size {
            self.garbage.extend(probe.seqs.pop_front());
        }
        Ok(())
    }

    /// The running probes are `specs`: forgets the others and those whose settings changed,
    /// and trims every ring to `history_size`.
    fn keep(
        &mut self,
        log: &mut Table<u64, &[u8]>,
        specs: &[Arc<ProbeSpec>],
        history_size: usize,
    ) -> Result<(), redb::Error> {
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
        // Deleted now, not with the garbage: a restart must not find them.
        for name in gone {
            if let Some(probe) = self.probes.remove(&name) {
                forget(log, probe.seqs)?;
            }
        }
        for probe in self.probes.values_mut() {
            while probe.seqs.len() > history_size {
                self.garbage.extend(probe.seqs.pop_front());
            }
        }
        self.history_size = history_size;
        self.kept = Some(kept);
        Ok(())
    }
}

/// Deletes the entries `seqs`.
fn forget(log: &mut Table<u64, &[u8]>, seqs: VecDeque<u64>) -> Result<(), redb::Error> {
    for seq in seqs {
        log.remove(seq)?;
    }
    Ok(())
}
