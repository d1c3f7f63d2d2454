//! What the report tests build their run status from.

use crate::model::WorkstreamState;
use crate::store::{Counts, TaskStatus, WsStatus};

/// Workstream `id` of run `R` on its default branch, with nothing recorded
/// but its state and tasks.
pub(crate) fn ws_status(id: &str, state: WorkstreamState, tasks: Vec<TaskStatus>) -> WsStatus {
    WsStatus {
        id: id.into(),
        name: None,
        state,
        branch: format!("mpw/R/{id}"),
        worktree: format!("/w/{id}"),
        base: None,
        head: None,
        reason: None,
        started_at: None,
        finished_at: None,
        duration_ms: None,
        counts: Counts::default(),
        integration: None,
        tasks,
    }
}
