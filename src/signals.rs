//! Ctrl-C and SIGTERM for every command that starts child processes (`run`,
//! `resume`, `integrate --gate`): the first asks for a graceful stop (TERM,
//! grace, KILL), any later one for an immediate kill. See docs/ARCHITECTURE.md,
//! "Module map".

use crate::exec::Cancel;
use tokio::sync::watch;

/// The signals of this process, as a stream of stop requests. Create it
/// inside a tokio runtime; from then on the signals no longer end the process.
pub struct Signals {
    // Streams held for the whole life of the listener, so that a signal that
    // arrives while the caller is busy is not missed.
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(windows)]
    ctrl_c: tokio::signal::windows::CtrlC,
    seen: u32,
}

impl Signals {
    pub fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            #[cfg(unix)]
            int: signal(SignalKind::interrupt())?,
            #[cfg(unix)]
            term: signal(SignalKind::terminate())?,
            #[cfg(windows)]
            ctrl_c: tokio::signal::windows::ctrl_c()?,
            seen: 0,
        })
    }

    /// Wait for the next signal: `Graceful` the first time, `Immediate` after.
    pub async fn next(&mut self) -> Cancel {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(windows)]
        self.ctrl_c.recv().await;
        self.seen += 1;
        if self.seen == 1 {
            Cancel::Graceful
        } else {
            Cancel::Immediate
        }
    }

    /// Listen in the background of the current runtime: the receiver reads
    /// `No` until the first signal, then `Graceful`, then `Immediate`.
    pub fn watch(mut self) -> watch::Receiver<Cancel> {
        let (tx, rx) = watch::channel(Cancel::No);
        tokio::spawn(async move {
            loop {
                let level = self.next().await;
                if tx.send(level).is_err() {
                    break;
                }
            }
        });
        rx
    }
}
