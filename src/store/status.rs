//! `run_status.json` and `workstreams/<ws>.json`: summaries derived from the
//! database and rewritten atomically (docs/ARCHITECTURE.md).

use super::layout::write_atomic;
use super::rows::{GateRunRow, TaskRow};
use super::{Result, Store};
use crate::model::{Integration, RunState, TaskState, WorkstreamState};
use serde::{Deserialize, Serialize};

impl Store {
    /// The `run_status.json` object (docs/ARCHITECTURE.md), from the database.
    pub fn run_status(&self, run: &str) -> Result<RunStatus> {
        let r = self.run(run)?;
        let wss = self.workstreams(run)?;
        let tasks = self.tasks(run)?;
        let mut counts = Counts::default();
        let mut out = Vec::with_capacity(wss.len());
        for ws in wss {
            let mut wc = Counts::default();
            let trs: Vec<TaskStatus> = tasks.iter().filter(|t| t.ws == ws.id).cloned().collect();
            for t in &trs {
                wc.add(t.state);
                counts.add(t.state);
            }
            out.push(WsStatus {
                id: ws.id,
                name: ws.name,
                state: ws.state,
                branch: ws.branch,
                worktree: ws.worktree,
                base: ws.start_commit,
                head: ws.head,
                reason: ws.reason,
                started_at: ws.started_at,
                finished_at: ws.finished_at,
                counts: wc,
                integration: ws.integration,
                tasks: trs,
            });
        }
        Ok(RunStatus {
            schema: 1,
            run_id: r.id,
            name: r.name,
            state: r.state,
            repo: r.repo,
            base: r.base,
            base_ref: r.base_ref,
            started_at: r.started_at,
            finished_at: r.finished_at,
            counts,
            workstreams: out,
            gate_runs: self.gate_runs(run, 0)?,
        })
    }

    /// Rewrite `run_status.json` and every `workstreams/<ws>.json` atomically.
    pub fn write_status_files(&self, run: &str) -> Result<RunStatus> {
        self.write_status_files_of(run, None)
    }

    /// Rewrite `run_status.json` and the one workstream's file (all when None).
    pub fn write_status_files_of(&self, run: &str, only: Option<&str>) -> Result<RunStatus> {
        let st = self.run_status(run)?;
        let text = serde_json::to_vec_pretty(&st).expect("status serialises");
        write_atomic(&self.layout.run_status(run), &text)?;
        for ws in st
            .workstreams
            .iter()
            .filter(|w| only.is_none_or(|o| o == w.id))
        {
            let text = serde_json::to_vec_pretty(ws).expect("status serialises");
            write_atomic(&self.layout.ws_json(run, &ws.id), &text)?;
        }
        Ok(st)
    }
}

/// Task counts by state; `tasks` is the total.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub tasks: usize,
    #[serde(flatten)]
    pub by_state: std::collections::BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, s: TaskState) {
        self.tasks += 1;
        *self.by_state.entry(s.as_str().into()).or_default() += 1;
    }
    pub fn get(&self, s: TaskState) -> usize {
        self.by_state.get(s.as_str()).copied().unwrap_or(0)
    }
}

/// `run_status.json`, schema 1. Fields may be added, never renamed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunStatus {
    pub schema: u32,
    pub run_id: String,
    pub name: Option<String>,
    pub state: RunState,
    pub repo: String,
    pub base: String,
    #[serde(default)]
    pub base_ref: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub counts: Counts,
    pub workstreams: Vec<WsStatus>,
    /// Every gate run of `mpw integrate`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_runs: Vec<GateRunRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsStatus {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    pub state: WorkstreamState,
    pub branch: String,
    pub worktree: String,
    /// Commit the workstream started from.
    #[serde(default)]
    pub base: Option<String>,
    pub head: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub started_at: Option<String>,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<Integration>,
    pub tasks: Vec<TaskStatus>,
}

/// A task's entry in `run_status.json` is its row.
pub type TaskStatus = TaskRow;
