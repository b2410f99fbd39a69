//! The concurrency caps of the running config: a global slot for every run, and a server
//! slot for runs against a capped server.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{Config, ProbeSpec};

/// The semaphores of the running config, each with the size it was built for.
#[derive(Default)]
pub(super) struct Slots {
    global: Option<(usize, Arc<Semaphore>)>,
    servers: HashMap<String, (usize, Arc<Semaphore>)>,
}

/// The slots one run holds; dropping it frees them.
pub(super) struct Permits {
    _held: Vec<OwnedSemaphorePermit>,
}

impl Slots {
    /// Moves to the caps of `config`, keeping every semaphore whose size did not change: its
    /// permits are in use by runs in flight.
    pub(super) fn update(&mut self, config: &Config) {
        let keep = |current: Option<&(usize, Arc<Semaphore>)>, size: usize| match current {
            Some((n, semaphore)) if *n == size => (size, semaphore.clone()),
            _ => (size, Arc::new(Semaphore::new(size))),
        };
        self.global = Some(keep(self.global.as_ref(), config.max_concurrent_probes));
        let servers = config
            .servers
            .values()
            .filter_map(|server| {
                server
                    .max_concurrent
                    .map(|n| (server.name.clone(), keep(self.servers.get(&server.name), n)))
            })
            .collect();
        self.servers = servers;
    }

    /// The semaphores a run of `spec` needs: the global one, then its server's.
    pub(super) fn for_probe(&self, spec: &ProbeSpec) -> [Option<Arc<Semaphore>>; 2] {
        let server = spec
            .server
            .as_ref()
            .and_then(|name| self.servers.get(name))
            .map(|(_, s)| s.clone());
        [self.global.as_ref().map(|(_, s)| s.clone()), server]
    }
}

/// Waits for each of `semaphores` in turn. The wait belongs to the run's lag, not to its
/// timeout.
pub(super) async fn acquire(semaphores: [Option<Arc<Semaphore>>; 2]) -> Permits {
    let mut permits = Vec::with_capacity(2);
    // Our semaphores are never closed, so acquiring cannot fail.
    for semaphore in semaphores.into_iter().flatten() {
        if let Ok(permit) = semaphore.acquire_owned().await {
            permits.push(permit);
        }
    }
    Permits { _held: permits }
}
