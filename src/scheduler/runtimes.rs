//! The threads probes run on: one single-threaded tokio runtime each, and which one a probe
//! belongs to.

/// Threads running probes, one single-threaded tokio runtime each. A probe's timer, run and
/// connection all live on one thread, so no step of a run wakes another thread: at a
/// thousand fresh connections a second, cross-thread wake-ups would cost more CPU than the
/// probes themselves.
pub struct ProbeRuntimes {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl ProbeRuntimes {
    /// Starts `count` probe threads.
    ///
    /// # Errors
    /// When a runtime or a thread cannot be created.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let mut runtimes = Self {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            runtimes.handles.push(runtime.handle().clone());
            runtimes.stops.push(stop);
            let thread = std::thread::Builder::new()
                .name(format!("probes-{index}"))
                .spawn(move || {
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            runtimes.threads.push(thread);
        }
        Ok(runtimes)
    }

    /// Handles to spawn probe work on.
    pub fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.handles.clone()
    }
}

impl Drop for ProbeRuntimes {
    /// Stops the threads (after the scheduler drained its runs) and waits for them.
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The runtime of probe `name` among `count`: a stable hash of the name, so a probe's timer,
/// runs and connections always share one thread.
pub(super) fn runtime_of(name: &str, count: usize) -> usize {
    usize::try_from(crate::schedule::stable_hash(name) % count as u64).unwrap_or(0)
}
