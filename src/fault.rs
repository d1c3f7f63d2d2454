//! Fault injection for the crash tests, in the spirit of failpoints: the
//! environment variable `MPW_FAULT` names one point, and only that one acts.
//!
//! - `kill-between-plan-and-run-row`: `mpw run` wrote the run's plan.json,
//!   not yet its row
//! - `kill-after-recover`: `mpw resume` recovered the run, before it goes on
//! - `kill-after-commit:WS/T`: between a task's commit and its database row
//! - `kill-before-proc:NAME`: a process started (it wrote its own `.proc`
//!   line), before mpw's record of it; NAME is its log's stem (`T2.1`, `A.1`)
//! - `kill-before-pid:WS/T`: between a task's start and the row with its pid
//! - `kill-before-launch:WS/T`: a task recorded RUNNING (committed, its
//!   event's line written), its process not started yet
//! - `kill-adding-worktree:NAME`: half-way through creating a worktree
//!   (registered, not checked out; NAME is a workstream or `_gate-…`)
//! - `kill-removing-worktree:NAME`: half-way through removing one (folder
//!   gone, registration not yet)
//! - `checkout-update`: an integration's checkout update fails once
//! - `kill-updating-checkout`: an integration's checkout update, after the
//!   branch moved and the deleted files went, before the new ones are written
//! - `kill-before-event-line:KIND`: after an event's commit, before its line
//!   in `events.jsonl` (e.g. `kill-before-event-line:TASK_SUCCEEDED`)
//! - `log-write`: every write to a task's log fails as on a full disk

/// The point the crash test asked for, read once: the checks sit on every
/// task's path.
fn asked() -> Option<&'static str> {
    static ASKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ASKED
        .get_or_init(|| std::env::var("MPW_FAULT").ok())
        .as_deref()
}

/// Is `name` the point the crash test asked for?
pub fn armed(name: &str) -> bool {
    asked() == Some(name)
}

/// Die at `name` the way a power cut would: no cleanup, no destructors.
/// `name` is only put together when a point was asked for
/// (`format_args!`).
pub fn kill_point(name: impl std::fmt::Display) {
    if asked().is_some_and(|a| a == name.to_string()) {
        #[cfg(unix)]
        // SAFETY: plain syscall.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
        std::process::abort();
    }
}

/// Is `name` armed, and is this the first time this process asks? A fault
/// that hits once lets the undo after it go through.
pub fn armed_once(name: &str) -> bool {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    armed(name) && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
}
