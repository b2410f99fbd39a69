//! The writer thread: the only code that writes the store. The scheduler hands it updates
//! through an unbounded channel (a send never waits), and it commits them in batches: the
//! first update of a batch waits at most [`BATCH`] for the others, so a crash loses at
//! most about that much, and a commit is one fsync for many results.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redb::Table;

use super::codec::{self, Summary};
use super::{RESULTS, Saved, digest};
use crate::config::ProbeSpec;
use crate::probe::Outcome;

/// How long the first update of a batch waits for others before the commit: what a crash
/// may lose at most (one second, the promise, with room for the commit itself).
const BATCH: Duration = Duration::from_millis(800);

enum Update {
    /// A run's result.
    Result {
        spec: Arc<ProbeSpec>,
        result: Vec<u8>,
        success: bool,
        finished_ns: i64,
        next_run_ns: Option<i64>,
        http_version: Option<&'static str>,
        tls: Option<crate::probe::TlsDetails>,
    },
    /// The probes of the running config and `history_size`: the others are forgotten, and
    /// each probe keeps at most that many results.
    Keep {
        specs: Vec<Arc<ProbeSpec>>,
        history_size: usize,
    },
    /// Commit what came before, then stop.
    Close,
}

/// The scheduler's side of the writer: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    sender: Sender<Update>,
}

impl Recorder {
    /// Queues the result of a run of `spec`, with the run planned next.
    pub fn result(
        &self,
        spec: &Arc<ProbeSpec>,
        outcome: &Outcome,
        next_run: Option<DateTime<Utc>>,
    ) {
        let _ = self.sender.send(Update::Result {
            spec: spec.clone(),
            result: codec::encode_result(outcome),
            success: outcome.success,
            finished_ns: codec::nanos(outcome.finished_at),
            next_run_ns: next_run.and_then(|at| at.timestamp_nanos_opt()),
            http_version: outcome.http_version,
            tls: outcome.tls.clone().filter(|tls| tls.certificate.is_some()),
        });
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
                // Results are numbered from 0 on: the next one follows the kept ones.
                let probe = Probe {
                    summary,
                    next_seq: saved.next_seq,
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
        }
    }

    /// Commits everything queued so far and stops the thread (SIGTERM's last step).
    pub fn close(mut self) {
        let _ = self.sender.send(Update::Close);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the writer knows of one stored probe.
struct Probe {
    /// As of its last stored result.
    summary: Summary,
    /// The number its next result gets.
    next_seq: u64,
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
}

impl WriterState {
    fn run(mut self, receiver: &Receiver<Update>) {
        loop {
            let Ok(first) = receiver.recv() else { return };
            let mut batch = vec![first];
            let deadline = Instant::now() + BATCH;
            let mut closing = matches!(batch[0], Update::Close);
            while !closing {
                match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(Update::Close) | Err(RecvTimeoutError::Disconnected) => closing = true,
                    Ok(update) => batch.push(update),
                    Err(RecvTimeoutError::Timeout) => break,
                }
            }
            if let Err(error) = self.commit(batch) {
                tracing::error!(file = %self.file.display(), error = %error, "cannot write the store: these results are not kept");
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
            let mut results = tx.open_table(RESULTS)?;
            for update in batch {
                match update {
                    Update::Result {
                        spec,
                        mut result,
                        success,
                        finished_ns,
                        next_run_ns,
                        http_version,
                        tls,
                    } => {
                        let digest = self.digest_of(&spec);
                        // A run of a probe no longer running (removed or changed by a
                        // reload) finishing late: not the running probe's result.
                        if let Some(kept) = &self.kept
                            && kept.get(&spec.name) != Some(&digest)
                        {
                            continue;
                        }
                        let probe = match self.probes.get_mut(&spec.name) {
                            Some(probe) if probe.summary.digest == digest => probe,
                            _ => {
                                forget(&mut results, &spec.name)?;
                                let fresh = Probe {
                                    summary: Summary {
                                        digest,
                                        ..Summary::default()
                                    },
                                    next_seq: 0,
                                };
                                self.probes
                                    .entry(spec.name.clone())
                                    .insert_entry(fresh)
                                    .into_mut()
                            }
                        };
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
                        codec::append_summary(&mut result, summary);
                        let seq = probe.next_seq;
                        probe.next_seq += 1;
                        results.insert((spec.name.as_str(), seq), result.as_slice())?;
                        // The ring: the result `history_size` before this one goes.
                        let keep = u64::try_from(self.history_size).unwrap_or(u64::MAX);
                        if let Some(oldest) = seq.checked_sub(keep) {
                            results.remove((spec.name.as_str(), oldest))?;
                        }
                    }
                    Update::Keep {
                        specs,
                        history_size,
                    } => {
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
                            forget(&mut results, &name)?;
                            self.probes.remove(&name);
                        }
                        if history_size < self.history_size {
                            let keep = u64::try_from(history_size).unwrap_or(u64::MAX);
                            for (name, probe) in &self.probes {
                                if let Some(oldest) = probe.next_seq.checked_sub(keep) {
                                    trim(&mut results, name, oldest)?;
                                }
                            }
                        }
                        self.history_size = history_size;
                        self.kept = Some(kept);
                    }
                    Update::Close => {}
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Deletes every result of `name`.
fn forget(results: &mut Table<(&str, u64), &[u8]>, name: &str) -> Result<(), redb::Error> {
    results.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
    Ok(())
}

/// Deletes the results of `name` numbered below `oldest`.
fn trim(
    results: &mut Table<(&str, u64), &[u8]>,
    name: &str,
    oldest: u64,
) -> Result<(), redb::Error> {
    if oldest > 0 {
        results.retain_in((name, 0)..(name, oldest), |_, _| false)?;
    }
    Ok(())
}
