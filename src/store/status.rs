//! `run_status.json` and `workstreams/<ws>.json`: summaries derived from the
//! database and rewritten atomically (docs/ARCHITECTURE.md).

use super::layout::write_atomic_with;
use super::rows::{GateRunRow, RunRow, TaskRow, WsRow};
use super::{Result, Store};
use crate::model::{Event, EventData, Integration, RunState, TaskState, WorkstreamState};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

impl Store {
    /// The `run_status.json` object (docs/ARCHITECTURE.md), from the database.
    pub fn run_status(&self, run: &str) -> Result<RunStatus> {
        let r = self.run(run)?;
        let wss = self.workstreams(run)?;
        // In plan order, as the workstreams: each takes its run of rows.
        let mut tasks = self.tasks(run)?.into_iter().peekable();
        let active = self.active(run)?;
        let mut counts = Counts::default();
        let mut out = Vec::with_capacity(wss.len());
        for ws in wss {
            let mut trs = Vec::new();
            while let Some(t) = tasks.next_if(|t| t.ws == ws.id) {
                trs.push(t);
            }
            let wc = Counts::of(&trs);
            counts.merge(&wc);
            out.push(ws_status(ws, &active, wc, trs));
        }
        Ok(run_status(r, &active, counts, out, self.gate_runs(run, 0)?))
    }

    /// When the run ran, as of now.
    fn active(&self, run: &str) -> Result<Active> {
        let now = ms_of(&crate::model::now()).unwrap_or(0);
        Ok(Active::of(&self.run_events(run)?, now))
    }

    /// Rewrite `run_status.json` and every `workstreams/<ws>.json` atomically.
    pub fn write_status_files(&self, run: &str) -> Result<RunStatus> {
        let st = self.run_status(run)?;
        write_atomic_with(&self.layout.run_status(run), |w| pretty(w, &st))?;
        for ws in &st.workstreams {
            write_atomic_with(&self.layout.ws_json(run, &ws.id), |w| pretty(w, ws))?;
        }
        Ok(st)
    }

    /// Keep each workstream's tasks as serialised in `run_status.json`
    /// between writes of `run` (None: stop, and let them go). For a
    /// coordinator, which writes the file at every workstream end.
    pub fn keep_status(&mut self, run: Option<&str>) {
        self.kept = run.map(|r| Kept {
            run: r.to_string(),
            ws: HashMap::new(),
        });
    }

    /// A task row of `ws` changed: its kept tasks are stale.
    pub(super) fn task_changed(&mut self, ws: &str) {
        if let Some(k) = &mut self.kept {
            k.ws.remove(ws);
        }
    }

    /// Rewrite `run_status.json` and the one workstream's file. Kept tasks
    /// (see `keep_status`) are written as they are; only the workstreams
    /// whose tasks changed since are read and serialised again, so a write
    /// costs about the size of the file rather than a read of every row
    /// (docs/ARCHITECTURE.md, "Per-task cost"). The bytes are those of
    /// `write_status_files`.
    pub fn write_status_files_of(&mut self, run: &str, only: &str) -> Result<()> {
        let Some(mut kept) = self.kept.take_if(|k| k.run == run) else {
            self.write_status_files(run)?;
            return Ok(());
        };
        let written = self.write_kept(run, only, &mut kept);
        self.kept = Some(kept);
        written
    }

    fn write_kept(&self, run: &str, only: &str, kept: &mut Kept) -> Result<()> {
        let r = self.run(run)?;
        let wss = self.workstreams(run)?;
        let active = self.active(run)?;
        let mut counts = Counts::default();
        let mut out = Vec::with_capacity(wss.len());
        let mut only_tasks = None;
        for ws in wss {
            let fresh = !kept.ws.contains_key(&ws.id);
            if fresh || ws.id == only {
                let trs = self.ws_tasks(run, &ws.id)?;
                if fresh {
                    kept.ws.insert(ws.id.clone(), Fragment::of(&trs));
                }
                if ws.id == only {
                    only_tasks = Some(trs);
                }
            }
            let f = &kept.ws[&ws.id];
            counts.merge(&f.counts);
            out.push(ws_status(ws, &active, f.counts.clone(), Vec::new()));
        }
        let mut st = run_status(r, &active, counts, out, self.gate_runs(run, 0)?);
        // The file with every workstream's tasks left empty, then each
        // `"tasks": []` in turn filled with the kept ones: only a key can
        // hold that text (in a string its quotes would be escaped).
        let head = serde_json::to_vec_pretty(&st).expect("status serialises");
        let marks: Vec<usize> = (0..head.len())
            .filter(|&i| head[i..].starts_with(EMPTY_TASKS))
            .collect();
        if marks.len() != st.workstreams.len() {
            self.write_status_files(run)?;
            return Ok(());
        }
        write_atomic_with(&self.layout.run_status(run), |w| {
            let mut at = 0;
            for (m, ws) in marks.iter().zip(&st.workstreams) {
                w.write_all(&head[at..*m])?;
                w.write_all(b"\"tasks\": ")?;
                w.write_all(&kept.ws[&ws.id].json)?;
                at = m + EMPTY_TASKS.len();
            }
            w.write_all(&head[at..])
        })?;
        if let Some(ws) = st.workstreams.iter_mut().find(|w| w.id == only) {
            ws.tasks = only_tasks.unwrap_or_default();
            write_atomic_with(&self.layout.ws_json(run, only), |w| pretty(w, ws))?;
        }
        Ok(())
    }
}

/// A workstream's task list's indentation in `run_status.json`: the file's
/// object, `workstreams`' list, a workstream's object, two spaces each.
const INDENT: &[u8] = b"      ";

/// How an empty task list of a workstream reads in `run_status.json`.
const EMPTY_TASKS: &[u8] = b"\"tasks\": []";

/// What a coordinator keeps of `run_status.json` between its writes.
pub(super) struct Kept {
    run: String,
    /// By workstream id; absent: to read again.
    ws: HashMap<String, Fragment>,
}

/// One workstream's tasks as they stand in `run_status.json`.
struct Fragment {
    counts: Counts,
    /// The list, indented for its place in the file.
    json: Vec<u8>,
}

impl Fragment {
    fn of(tasks: &[TaskStatus]) -> Fragment {
        let flat = serde_json::to_vec_pretty(tasks).expect("tasks serialise");
        // Indented for its place; a string holds no raw newline.
        let lines = flat.iter().filter(|&&b| b == b'\n').count();
        // Exactly its size: every workstream's is kept for the whole run.
        let mut json = Vec::with_capacity(flat.len() + INDENT.len() * lines);
        for line in flat.split_inclusive(|&b| b == b'\n') {
            json.extend_from_slice(line);
            if line.ends_with(b"\n") {
                json.extend_from_slice(INDENT);
            }
        }
        Fragment {
            counts: Counts::of(tasks),
            json,
        }
    }
}

fn ws_status(ws: WsRow, active: &Active, counts: Counts, tasks: Vec<TaskStatus>) -> WsStatus {
    WsStatus {
        id: ws.id,
        name: ws.name,
        state: ws.state,
        branch: ws.branch,
        worktree: ws.worktree,
        base: ws.start_commit,
        head: ws.head,
        reason: ws.reason,
        duration_ms: active.within(ws.started_at.as_deref(), ws.finished_at.as_deref()),
        started_at: ws.started_at,
        finished_at: ws.finished_at,
        counts,
        integration: ws.integration,
        tasks,
    }
}

fn run_status(
    r: RunRow,
    active: &Active,
    counts: Counts,
    workstreams: Vec<WsStatus>,
    gate_runs: Vec<GateRunRow>,
) -> RunStatus {
    RunStatus {
        schema: 1,
        run_id: r.id,
        name: r.name,
        state: r.state,
        repo: r.repo,
        base: r.base,
        base_ref: r.base_ref,
        duration_ms: r.started_at.as_ref().map(|_| active.total()),
        started_at: r.started_at,
        finished_at: r.finished_at,
        counts,
        workstreams,
        gate_runs,
    }
}

/// The same bytes as `serde_json::to_vec_pretty`, streamed.
fn pretty(w: &mut dyn std::io::Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer_pretty(w, value).map_err(std::io::Error::from)
}

fn ms_of(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The spans of time a run's coordinator was running it, in ms since the
/// epoch: from each RUN_STARTED to the run's end, or, when the coordinator
/// died, to its last event (which resume or cancel records). The gap
/// between a run's end and its resume is no running time.
#[derive(Debug, Clone, PartialEq)]
pub struct Active(pub Vec<(i64, i64)>);

impl Active {
    /// From the run's events in order; a span still open ends at `now`.
    pub fn of(events: &[Event], now: i64) -> Active {
        let mut spans = Vec::new();
        let (mut open, mut last): (Option<i64>, Option<i64>) = (None, None);
        for ev in events {
            let Some(t) = ms_of(&ev.ts) else { continue };
            match &ev.data {
                EventData::RunResumed(l) | EventData::RunCancelled(l)
                    if l.coordinator_last_seen.is_some() =>
                {
                    if let (Some(a), Some(seen)) = (
                        open.take(),
                        l.coordinator_last_seen.as_deref().and_then(ms_of),
                    ) {
                        spans.push((a, seen.max(a)));
                    }
                }
                EventData::RunStarted => {
                    // Started again with no end recorded (a coordinator
                    // that died before ends were recorded): its last
                    // recorded run event is all that is known.
                    if let Some(a) = open.take() {
                        spans.push((a, last.unwrap_or(a).max(a)));
                    }
                    open = Some(t);
                }
                EventData::RunCompleted | EventData::RunFailed | EventData::RunCancelled(_) => {
                    if let Some(a) = open.take() {
                        spans.push((a, t.max(a)));
                    }
                }
                _ => {}
            }
            last = Some(t);
        }
        if let Some(a) = open {
            spans.push((a, now.max(a)));
        }
        Active(spans)
    }

    /// All the running time.
    pub fn total(&self) -> i64 {
        self.0.iter().map(|(a, b)| b - a).sum()
    }

    /// The running time between two timestamps (`to` None: up to now).
    pub fn within(&self, from: Option<&str>, to: Option<&str>) -> Option<i64> {
        let from = ms_of(from?)?;
        let to = match to {
            Some(t) => ms_of(t)?,
            None => i64::MAX,
        };
        Some(
            self.0
                .iter()
                .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
                .sum(),
        )
    }
}

/// Task counts by state; `tasks` is the total.
/// Task counts: `tasks` is the total, then one count per state present.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, JsonSchema)]
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
    fn of(tasks: &[TaskStatus]) -> Counts {
        let mut c = Counts::default();
        for t in tasks {
            c.add(t.state);
        }
        c
    }
    fn merge(&mut self, other: &Counts) {
        self.tasks += other.tasks;
        for (state, n) in &other.by_state {
            *self.by_state.entry(state.clone()).or_default() += n;
        }
    }
    pub fn get(&self, s: TaskState) -> usize {
        self.by_state.get(s.as_str()).copied().unwrap_or(0)
    }
}

/// `run_status.json`, schema 1. Fields may be added, never renamed.
/// An `Option` field that an older file lacks reads as `None`.
/// The MCP server advertises this type's schema.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct RunStatus {
    pub schema: u32,
    pub run_id: String,
    pub name: Option<String>,
    /// RUNNING until the run ends.
    pub state: RunState,
    pub repo: String,
    pub base: String,
    pub base_ref: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Time the run actually ran: across resumes, without the gaps between.
    pub duration_ms: Option<i64>,
    pub counts: Counts,
    pub workstreams: Vec<WsStatus>,
    /// Every gate run of `mpw integrate`, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gate_runs: Vec<GateRunRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct WsStatus {
    pub id: String,
    pub name: Option<String>,
    pub state: WorkstreamState,
    pub branch: String,
    pub worktree: String,
    /// Commit the workstream started from.
    pub base: Option<String>,
    pub head: Option<String>,
    pub reason: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Its time between `started_at` and `finished_at` while the run ran.
    pub duration_ms: Option<i64>,
    pub counts: Counts,
    /// Set once `integrate` has tried the workstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integration: Option<Integration>,
    pub tasks: Vec<TaskStatus>,
}

/// A task's entry in `run_status.json` is its row.
pub type TaskStatus = TaskRow;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::StaleLocks;

    #[test]
    fn a_status_file_without_its_optional_fields_reads() {
        let file = serde_json::json!({
            "schema": 1, "run_id": "R", "state": "COMPLETED", "repo": "/r", "base": "b",
            "counts": { "tasks": 1 },
            "workstreams": [ { "id": "W", "state": "COMPLETED", "branch": "mpw/R/W",
                "worktree": "/w", "counts": { "tasks": 1 },
                "tasks": [ { "id": "T", "state": "SUCCEEDED", "attempts": 1 } ] } ],
        });
        let st: RunStatus = serde_json::from_value(file).unwrap();
        assert_eq!((st.name, st.duration_ms), (None, None));
        let ws = &st.workstreams[0];
        assert_eq!(
            (&ws.base, &ws.reason, &ws.integration),
            (&None, &None, &None)
        );
        assert_eq!(ws.tasks[0].name, None);
    }

    /// An event of the run at `s` seconds.
    fn at(s: i64, data: EventData) -> Event {
        let t = chrono::DateTime::from_timestamp_millis(s * 1000).unwrap();
        Event {
            ts: t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            run: "R".into(),
            workstream: None,
            task: None,
            attempt: None,
            data,
        }
    }

    fn last_seen(s: i64) -> StaleLocks {
        StaleLocks {
            coordinator_last_seen: Some(at(s, EventData::RunStarted).ts),
            ..Default::default()
        }
    }

    #[test]
    fn running_time_leaves_out_the_gaps_before_each_resume() {
        // Ran 4 s and failed; resumed an hour later, ran 5 s, was killed
        // (last seen at 3605 s); resumed at 7200 s and completed 2 s later.
        let events = [
            at(0, EventData::RunStarted),
            at(4, EventData::RunFailed),
            at(3600, EventData::RunResumed(StaleLocks::default())),
            at(3600, EventData::RunStarted),
            at(7200, EventData::RunResumed(last_seen(3605))),
            at(7200, EventData::RunStarted),
            at(7202, EventData::RunCompleted),
        ];
        let a = Active::of(&events, 99_999_000);
        assert_eq!(a.total(), 11_000);
        // A workstream from 3601 s to 7201 s ran 4 s + 1 s of it.
        let ts = |s| at(s, EventData::RunStarted).ts;
        assert_eq!(a.within(Some(&ts(3601)), Some(&ts(7201))), Some(5_000));
        assert_eq!(a.within(None, None), None);
    }

    #[test]
    fn a_running_run_counts_up_to_now_and_a_cancel_after_a_crash_ends_at_last_seen() {
        let running = [at(10, EventData::RunStarted)];
        assert_eq!(Active::of(&running, 13_000).total(), 3_000);
        let cancelled = [
            at(10, EventData::RunStarted),
            at(500, EventData::RunCancelled(last_seen(12))),
        ];
        assert_eq!(Active::of(&cancelled, 999_000).total(), 2_000);
    }
}
