//! The process's signals as the run loop consumes them: the SIGHUP stream, registered first
//! thing in `main` so a hang-up during start-up is kept for the reload loop instead of
//! killing the process (the default action of SIGHUP is to terminate).

/// Every SIGHUP since [`Hangups::register`]; one that arrives before the reload loop reads
/// it is kept (several collapse into one), so a config changed during start-up still loads.
pub struct Hangups {
    #[cfg(unix)]
    stream: Stream,
}

/// Where the hang-ups come from.
#[cfg(unix)]
enum Stream {
    /// Registered: every SIGHUP lands here.
    Listening(tokio::signal::unix::Signal),
    /// Registration failed (before logging was set up: reported by the first `recv`).
    Failed(std::io::Error),
    /// Nothing to wait for.
    None,
}

impl Hangups {
    /// Takes SIGHUP over from its default action. Call it inside a tokio runtime, before
    /// anything slow starts; it logs nothing (logging may not be set up yet).
    pub fn register() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let stream = match signal(SignalKind::hangup()) {
                Ok(stream) => Stream::Listening(stream),
                Err(error) => Stream::Failed(error),
            };
            Self { stream }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// No SIGHUP stream (tests, platforms without SIGHUP): [`Hangups::recv`] never returns.
    pub fn none() -> Self {
        Self {
            #[cfg(unix)]
            stream: Stream::None,
        }
    }

    /// Waits for the next SIGHUP; pending forever when none can come.
    pub async fn recv(&mut self) {
        #[cfg(unix)]
        match &mut self.stream {
            Stream::Listening(stream) => {
                if stream.recv().await.is_some() {
                    return;
                }
                // The signal driver is gone (the runtime is shutting down).
                self.stream = Stream::None;
            }
            Stream::Failed(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGHUP: reload with POST /-/reload");
                self.stream = Stream::None;
            }
            Stream::None => {}
        }
        std::future::pending::<()>().await;
    }
}
