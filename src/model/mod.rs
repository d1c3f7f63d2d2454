//! States and events: the vocabulary shared by the store, the runner and the reporters.
//! docs/ARCHITECTURE.md draws the state machines from the tables here.

mod event;

pub use event::{
    BatchStarted, BisectSplit, Event, EventData, GatePassed, Integration, IntegrationCancelled,
    IntegrationDone, IntegrationStarted, RestackMode, Restacked, SetupFailed, StaleLocks,
    TaskFacts, WorkerFacts, WorkstreamFacts, WorktreeCreated, WsIntegration,
};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
        pub enum $name { $(#[serde(rename = $text)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s { $($text => Ok($name::$variant),)+ other => Err(format!("unknown {} {other:?}", stringify!($name))) }
            }
        }
    };
}

state_enum!(
    /// Lifecycle of a task (drawn in docs/ARCHITECTURE.md).
    TaskState {
        Pending = "PENDING",
        Ready = "READY",
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Quarantined = "QUARANTINED",
        Skipped = "SKIPPED",
        Cancelled = "CANCELLED",
    }
);

state_enum!(
    /// Outcome of one attempt of a task; every attempt is its own row.
    AttemptState {
        Running = "RUNNING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
        Quarantined = "QUARANTINED",
        Cancelled = "CANCELLED",
        Interrupted = "INTERRUPTED",
    }
);

state_enum!(
    /// Derived from its tasks while running; set by integration afterwards.
    WorkstreamState {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Quarantined = "QUARANTINED",
        Skipped = "SKIPPED",
        Integrated = "INTEGRATED",
        Conflict = "CONFLICT",
        GateFailed = "GATE_FAILED",
    }
);

state_enum!(
    RunState {
        Pending = "PENDING",
        Running = "RUNNING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Cancelled = "CANCELLED",
    }
);

state_enum!(
    EventKind {
        RunStarted = "RUN_STARTED",
        RunResumed = "RUN_RESUMED",
        WorktreeCreated = "WORKTREE_CREATED",
        SetupFailed = "SETUP_FAILED",
        TaskReady = "TASK_READY",
        TaskStarted = "TASK_STARTED",
        TaskRetry = "TASK_RETRY",
        TaskInterrupted = "TASK_INTERRUPTED",
        TaskSucceeded = "TASK_SUCCEEDED",
        TaskFailed = "TASK_FAILED",
        TaskQuarantined = "TASK_QUARANTINED",
        TaskSkipped = "TASK_SKIPPED",
        TaskCancelled = "TASK_CANCELLED",
        TaskWaiting = "TASK_WAITING",
        WorkstreamStarted = "WORKSTREAM_STARTED",
        WorkstreamCompleted = "WORKSTREAM_COMPLETED",
        WorkstreamFailed = "WORKSTREAM_FAILED",
        WorkstreamQuarantined = "WORKSTREAM_QUARANTINED",
        WorkstreamSkipped = "WORKSTREAM_SKIPPED",
        RunCompleted = "RUN_COMPLETED",
        RunFailed = "RUN_FAILED",
        RunCancelled = "RUN_CANCELLED",
        IntegrationStarted = "INTEGRATION_STARTED",
        WorkstreamIntegrated = "WORKSTREAM_INTEGRATED",
        WorkstreamConflict = "WORKSTREAM_CONFLICT",
        GateFailed = "GATE_FAILED",
        IntegrationCompleted = "INTEGRATION_COMPLETED",
        BatchStarted = "BATCH_STARTED",
        GatePassed = "GATE_PASSED",
        BisectSplit = "BISECT_SPLIT",
        Restacked = "RESTACKED",
        WorkerStarted = "WORKER_STARTED",
        WorkerExited = "WORKER_EXITED",
        WorkerRecycled = "WORKER_RECYCLED",
        IntegrationCancelled = "INTEGRATION_CANCELLED",
    }
);

/// A state machine whose every allowed change is listed as data, so that
/// docs/ARCHITECTURE.md can draw it and a test can compare the two.
pub trait StateMachine: Copy + Eq + std::hash::Hash + fmt::Debug + fmt::Display + 'static {
    /// Every allowed change of state, `(from, to)`; staying put is no change.
    fn transitions() -> &'static [(Self, Self)];

    /// Anything outside the table is a bug in the caller.
    fn can_become(self, next: Self) -> bool {
        Self::transitions().contains(&(self, next))
    }
}

/// `StateMachine` for a state type, from its table of allowed changes.
macro_rules! transitions {
    ($name:ident, [$(($from:ident, $to:ident)),+ $(,)?]) => {
        impl StateMachine for $name {
            fn transitions() -> &'static [(Self, Self)] {
                use $name::*;
                &[$(($from, $to)),+]
            }
        }
    };
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded
                | TaskState::Failed
                | TaskState::Quarantined
                | TaskState::Skipped
                | TaskState::Cancelled
        )
    }
}

transitions!(
    TaskState,
    [
        (Pending, Ready),
        (Pending, Skipped),
        (Ready, Running),
        (Ready, Skipped),
        (Ready, Pending),
        (Running, Succeeded),
        (Running, Failed),
        (Running, Quarantined),
        (Running, Cancelled),
        // a retry
        (Running, Ready),
        // resume: an interrupted attempt sends the task back to be run again
        (Running, Pending),
        // resume reopens what a cancel stopped or skipped
        (Skipped, Pending),
        (Cancelled, Pending),
    ]
);

impl WorkstreamState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, WorkstreamState::Pending | WorkstreamState::Running)
    }

    /// Finished running with all its work committed: may be merged.
    pub fn is_mergeable(self) -> bool {
        matches!(
            self,
            WorkstreamState::Completed | WorkstreamState::Conflict | WorkstreamState::GateFailed
        )
    }
}

transitions!(
    WorkstreamState,
    [
        // derived from its tasks: started, or decided before it opened
        // (setup failed, a dependency failed, a cancel)
        (Pending, Running),
        (Pending, Completed),
        (Pending, Failed),
        (Pending, Quarantined),
        (Pending, Skipped),
        (Running, Completed),
        (Running, Failed),
        (Running, Quarantined),
        (Running, Skipped),
        // integration
        (Completed, Integrated),
        (Completed, Conflict),
        (Completed, GateFailed),
        (Conflict, Integrated),
        (Conflict, GateFailed),
        (GateFailed, Integrated),
        (GateFailed, Conflict),
        // one that cannot start (setup or a dependency failed) ends
        // FAILED or SKIPPED after the state its skipped tasks gave it
        (Completed, Failed),
        (Completed, Skipped),
        (Failed, Skipped),
        (Quarantined, Failed),
        (Quarantined, Skipped),
        (Skipped, Failed),
        // resume reopens a workstream with tasks left to run, and writes it
        (Running, Pending),
        (Completed, Pending),
        (Failed, Pending),
        (Quarantined, Pending),
        (Skipped, Pending),
        (Integrated, Pending),
        (Conflict, Pending),
        (GateFailed, Pending),
    ]
);

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled
        )
    }
}

transitions!(
    RunState,
    [
        (Pending, Running),
        // `mpw cancel` of a run whose coordinator died before it started
        (Pending, Cancelled),
        (Running, Completed),
        (Running, Failed),
        (Running, Cancelled),
        // resume
        (Failed, Running),
        (Cancelled, Running),
    ]
);

/// How `mpw integrate` joins a workstream to the target.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// A two-parent merge commit per workstream.
    Merge,
    /// One single-parent commit per workstream.
    Squash,
}

impl Strategy {
    /// As the command line and JSON spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Merge => "merge",
            Strategy::Squash => "squash",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Current time as RFC 3339 UTC with milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        for s in EventKind::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }

    #[test]
    fn terminal_tasks_do_not_move_except_reopened_by_resume() {
        for s in TaskState::ALL.iter().filter(|s| s.is_terminal()) {
            for n in TaskState::ALL {
                let reopen = matches!(s, TaskState::Skipped | TaskState::Cancelled)
                    && *n == TaskState::Pending;
                assert_eq!(s.can_become(*n), reopen, "{s} -> {n}");
            }
        }
    }

    /// A table lists each change once and never a state to itself.
    fn well_formed<S: StateMachine>() {
        let mut seen = std::collections::HashSet::new();
        for (a, b) in S::transitions() {
            assert_ne!(a, b, "{a} -> {b}: staying put is not a transition");
            assert!(seen.insert((*a, *b)), "{a} -> {b} listed twice");
        }
    }

    #[test]
    fn tables_are_well_formed() {
        well_formed::<TaskState>();
        well_formed::<WorkstreamState>();
        well_formed::<RunState>();
    }

    #[test]
    fn a_run_ends_only_from_running_and_starts_again_only_by_resume() {
        use RunState::*;
        for s in RunState::ALL {
            for n in [Completed, Failed] {
                assert_eq!(s.can_become(n), *s == Running, "{s} -> {n}");
            }
        }
        assert!(Failed.can_become(Running) && Cancelled.can_become(Running));
        assert!(
            !Completed.can_become(Running),
            "a completed run is never resumed"
        );
        assert!(RunState::ALL.iter().all(|s| !s.can_become(Pending)));
    }

    #[test]
    fn only_finished_work_is_integrated_and_only_pending_work_starts() {
        use WorkstreamState::*;
        for s in WorkstreamState::ALL {
            // Resume writes a reopened workstream PENDING before it starts again.
            assert_eq!(s.can_become(Pending), *s != Pending, "{s} -> PENDING");
            assert_eq!(s.can_become(Running), *s == Pending, "{s} -> RUNNING");
            for n in [Integrated, Conflict, GateFailed] {
                assert_eq!(s.can_become(n), s.is_mergeable() && *s != n, "{s} -> {n}");
            }
        }
        assert!(Pending.can_become(Running) && Running.can_become(Completed));
        assert!(!Running.can_become(Integrated));
    }
}
