//! The concurrency caps of the running config: a server slot for runs against a capped
//! server, then a global slot for every run; both waits give way to a cancellation.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

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

    /// The semaphores a run of `spec` needs, in the order it takes them: its server's first,
    /// then the global one. A run waiting for a capped server so holds no global slot, and a
    /// slow server never delays the probes of the others.
    pub(super) fn for_probe(&self, spec: &ProbeSpec) -> [Option<Arc<Semaphore>>; 2] {
        let server = spec
            .server
            .as_ref()
            .and_then(|name| self.servers.get(name))
            .map(|(_, s)| s.clone());
        [server, self.global.as_ref().map(|(_, s)| s.clone())]
    }
}

/// Waits for each of `semaphores` in turn; `None` (and nothing held) when `cancel` fires
/// first, so a run still waiting at shutdown never starts. The wait belongs to the run's
/// lag, not to its timeout.
pub(super) async fn acquire(
    semaphores: [Option<Arc<Semaphore>>; 2],
    cancel: &CancellationToken,
) -> Option<Permits> {
    let mut permits = Vec::with_capacity(2);
    for semaphore in semaphores.into_iter().flatten() {
        tokio::select! {
            biased;
            () = cancel.cancelled() => return None,
            // Our semaphores are never closed, so acquiring cannot fail.
            permit = semaphore.acquire_owned() => permits.extend(permit.ok()),
        }
    }
    Some(Permits { _held: permits })
}
