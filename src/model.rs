//! States and events: the vocabulary shared by the store, the runner and the reporters.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

macro_rules! state_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// Lifecycle of a task (DESIGN section 3).
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
    }
);

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

    /// The transitions DESIGN section 3 allows; anything else is a bug in the runner.
    pub fn can_become(self, next: TaskState) -> bool {
        use TaskState::*;
        match (self, next) {
            (Pending, Ready | Skipped) => true,
            (Ready, Running | Skipped | Pending) => true,
            (Running, Succeeded | Failed | Quarantined | Cancelled | Ready) => true,
            // resume: an interrupted attempt sends the task back to be run again
            (Running, Pending) => true,
            // resume reopens what a cancel stopped or skipped
            (Skipped | Cancelled, Pending) => true,
            _ => false,
        }
    }

    /// The event that records arriving in this state.
    pub fn event(self) -> Option<EventKind> {
        Some(match self {
            TaskState::Ready => EventKind::TaskReady,
            TaskState::Running => EventKind::TaskStarted,
            TaskState::Succeeded => EventKind::TaskSucceeded,
            TaskState::Failed => EventKind::TaskFailed,
            TaskState::Quarantined => EventKind::TaskQuarantined,
            TaskState::Skipped => EventKind::TaskSkipped,
            TaskState::Cancelled => EventKind::TaskCancelled,
            TaskState::Pending => return None,
        })
    }
}

impl WorkstreamState {
    pub fn is_terminal(self) -> bool {
        !matches!(self, WorkstreamState::Pending | WorkstreamState::Running)
    }

    pub fn event(self) -> Option<EventKind> {
        Some(match self {
            WorkstreamState::Running => EventKind::WorkstreamStarted,
            WorkstreamState::Completed => EventKind::WorkstreamCompleted,
            WorkstreamState::Failed => EventKind::WorkstreamFailed,
            WorkstreamState::Quarantined => EventKind::WorkstreamQuarantined,
            WorkstreamState::Skipped => EventKind::WorkstreamSkipped,
            WorkstreamState::Integrated => EventKind::WorkstreamIntegrated,
            WorkstreamState::Conflict => EventKind::WorkstreamConflict,
            WorkstreamState::GateFailed => EventKind::GateFailed,
            WorkstreamState::Pending => return None,
        })
    }

    /// Finished running with all its work committed: may be merged.
    pub fn is_mergeable(self) -> bool {
        matches!(
            self,
            WorkstreamState::Completed | WorkstreamState::Conflict | WorkstreamState::GateFailed
        )
    }
}

impl RunState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunState::Completed | RunState::Failed | RunState::Cancelled
        )
    }
    pub fn event(self) -> Option<EventKind> {
        Some(match self {
            RunState::Running => EventKind::RunStarted,
            RunState::Completed => EventKind::RunCompleted,
            RunState::Failed => EventKind::RunFailed,
            RunState::Cancelled => EventKind::RunCancelled,
            RunState::Pending => return None,
        })
    }
}

/// One line of `events.jsonl` and one row of the events table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub ts: String,
    pub kind: EventKind,
    pub run: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub workstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub task: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attempt: Option<u32>,
    /// Extra facts of the event (exit code, commit, reason, ...).
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
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
}
