//! Events: one typed payload per kind, so that a fact cannot be written under
//! one key and read under another. The wire format (one line of
//! `events.jsonl`, one row of the events table) is described in
//! docs/ARCHITECTURE.md and pinned by the golden test below.

use super::{EventKind, Strategy};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use serde_with::skip_serializing_none;

/// One line of `events.jsonl` and one row of the events table.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub ts: String,
    pub run: String,
    pub workstream: Option<String>,
    pub task: Option<String>,
    pub attempt: Option<u32>,
    pub data: EventData,
}

impl Event {
    pub fn kind(&self) -> EventKind {
        self.data.kind()
    }
}

/// What happened, with the facts of that kind of event. Its JSON is the
/// event's `kind` and, after the event's header, these fields in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventData {
    RunStarted,
    RunResumed(StaleLocks),
    WorktreeCreated(WorktreeCreated),
    SetupFailed(SetupFailed),
    TaskReady(TaskFacts),
    TaskStarted(TaskFacts),
    TaskRetry(TaskFacts),
    TaskInterrupted(TaskFacts),
    TaskSucceeded(TaskFacts),
    TaskFailed(TaskFacts),
    TaskQuarantined(TaskFacts),
    TaskSkipped(TaskFacts),
    TaskCancelled(TaskFacts),
    /// READY, held back by the machine pool (`reason` says who holds it).
    TaskWaiting(TaskFacts),
    WorkstreamStarted(WorkstreamFacts),
    WorkstreamCompleted(WorkstreamFacts),
    WorkstreamFailed(WorkstreamFacts),
    WorkstreamQuarantined(WorkstreamFacts),
    WorkstreamSkipped(WorkstreamFacts),
    RunCompleted,
    RunFailed,
    RunCancelled(StaleLocks),
    IntegrationStarted(IntegrationStarted),
    WorkstreamIntegrated(WsIntegration),
    WorkstreamConflict(WsIntegration),
    GateFailed(WsIntegration),
    IntegrationCompleted(IntegrationDone),
    BatchStarted(BatchStarted),
    GatePassed(GatePassed),
    BisectSplit(BisectSplit),
    Restacked(Restacked),
    WorkerStarted(WorkerFacts),
    WorkerExited(WorkerFacts),
    WorkerRecycled(WorkerFacts),
    IntegrationCancelled(IntegrationCancelled),
}

impl EventData {
    pub fn kind(&self) -> EventKind {
        use EventData as D;
        use EventKind as K;
        match self {
            D::RunStarted => K::RunStarted,
            D::RunResumed(_) => K::RunResumed,
            D::WorktreeCreated(_) => K::WorktreeCreated,
            D::SetupFailed(_) => K::SetupFailed,
            D::TaskReady(_) => K::TaskReady,
            D::TaskStarted(_) => K::TaskStarted,
            D::TaskRetry(_) => K::TaskRetry,
            D::TaskInterrupted(_) => K::TaskInterrupted,
            D::TaskSucceeded(_) => K::TaskSucceeded,
            D::TaskFailed(_) => K::TaskFailed,
            D::TaskQuarantined(_) => K::TaskQuarantined,
            D::TaskSkipped(_) => K::TaskSkipped,
            D::TaskCancelled(_) => K::TaskCancelled,
            D::TaskWaiting(_) => K::TaskWaiting,
            D::WorkstreamStarted(_) => K::WorkstreamStarted,
            D::WorkstreamCompleted(_) => K::WorkstreamCompleted,
            D::WorkstreamFailed(_) => K::WorkstreamFailed,
            D::WorkstreamQuarantined(_) => K::WorkstreamQuarantined,
            D::WorkstreamSkipped(_) => K::WorkstreamSkipped,
            D::RunCompleted => K::RunCompleted,
            D::RunFailed => K::RunFailed,
            D::RunCancelled(_) => K::RunCancelled,
            D::IntegrationStarted(_) => K::IntegrationStarted,
            D::WorkstreamIntegrated(_) => K::WorkstreamIntegrated,
            D::WorkstreamConflict(_) => K::WorkstreamConflict,
            D::GateFailed(_) => K::GateFailed,
            D::IntegrationCompleted(_) => K::IntegrationCompleted,
            D::BatchStarted(_) => K::BatchStarted,
            D::GatePassed(_) => K::GatePassed,
            D::BisectSplit(_) => K::BisectSplit,
            D::Restacked(_) => K::Restacked,
            D::WorkerStarted(_) => K::WorkerStarted,
            D::WorkerExited(_) => K::WorkerExited,
            D::WorkerRecycled(_) => K::WorkerRecycled,
            D::IntegrationCancelled(_) => K::IntegrationCancelled,
        }
    }

    /// The facts without the kind: the events table's `data` column.
    pub fn facts(&self) -> Map<String, Value> {
        let mut m = match serde_json::to_value(self) {
            Ok(Value::Object(m)) => m,
            _ => unreachable!("an internally tagged enum serialises to an object"),
        };
        m.shift_remove("kind");
        m
    }

    /// Back from the events table's `kind` and `data` columns.
    pub fn from_facts(kind: EventKind, mut facts: Map<String, Value>) -> serde_json::Result<Self> {
        facts.insert("kind".into(), kind.as_str().into());
        serde_json::from_value(Value::Object(facts))
    }

    /// The facts a task's event carries, when it is a task's event.
    pub fn task(&self) -> Option<&TaskFacts> {
        use EventData as D;
        match self {
            D::TaskReady(f)
            | D::TaskStarted(f)
            | D::TaskRetry(f)
            | D::TaskInterrupted(f)
            | D::TaskSucceeded(f)
            | D::TaskFailed(f)
            | D::TaskQuarantined(f)
            | D::TaskSkipped(f)
            | D::TaskCancelled(f)
            | D::TaskWaiting(f) => Some(f),
            _ => None,
        }
    }
}

/// The facts of every task event (fields left out when unknown).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskFacts {
    pub exit_code: Option<i32>,
    pub commit: Option<String>,
    pub preserved_ref: Option<String>,
    pub reason: Option<String>,
    pub duration_ms: Option<i64>,
    /// Advice, e.g. committed files that look like build or cache output.
    pub hint: Option<String>,
}

/// A workstream starting or finishing its run.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkstreamFacts {
    pub head: Option<String>,
    pub reason: Option<String>,
}

/// Git lock files a killed process had left, removed before going on.
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StaleLocks {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_locks_removed: Vec<String>,
    /// When the run's coordinator had died: the time of its last event, where
    /// its running time ended (durations leave out the gap until now).
    pub coordinator_last_seen: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorktreeCreated {
    pub path: String,
    pub branch: String,
    pub commit: String,
    /// `copy` entries of the plan that were not there to copy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_copies: Vec<String>,
}

/// A warm worker process of a pool (`globals.workers`).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerFacts {
    pub worker: String,
    pub pid: u32,
    /// Requests it served.
    #[serde(default)]
    pub requests: u64,
    /// Why it exited (or why it could not start).
    pub reason: Option<String>,
}

impl EventData {
    /// The facts of a worker's event, when it is one.
    pub fn worker(&self) -> Option<&WorkerFacts> {
        match self {
            EventData::WorkerStarted(f)
            | EventData::WorkerExited(f)
            | EventData::WorkerRecycled(f) => Some(f),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupFailed {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationStarted {
    pub into: String,
    pub strategy: Strategy,
    /// The target's commit before.
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationDone {
    pub into: String,
    /// The target's commit after.
    pub target: String,
}

/// An integration stopped by Ctrl-C / SIGTERM: the target is as it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationCancelled {
    pub into: String,
    pub reason: String,
}

/// One workstream's integration result, as its event tells it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WsIntegration {
    pub into: String,
    pub conflicts: Vec<String>,
    pub detail: String,
    /// For a gate failure: the workstreams the failing gate run covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered: Vec<String>,
}

/// A batch of `mpw integrate --batch`: its candidates in integration order,
/// and those the pairwise forecast took out before any gate ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchStarted {
    pub into: String,
    pub batch: u32,
    pub candidates: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken_out: Vec<String>,
}

/// A gate run that passed, on the merge of the workstreams it covered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatePassed {
    pub gate_run: i64,
    pub covered: Vec<String>,
    pub duration_ms: i64,
    /// It failed before it passed (`--gate-retries`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flaky: bool,
}

/// A failed gate run over more than one workstream: the search goes on in
/// `first` (gated next) and then in `rest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BisectSplit {
    pub gate_run: i64,
    pub first: Vec<String>,
    pub rest: Vec<String>,
}

/// `mpw restack`: a stacked workstream's branch moved from `from` to `to`
/// onto the new heads of the workstreams it stacks on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restacked {
    pub upstreams: Vec<String>,
    pub mode: RestackMode,
    pub from: String,
    pub to: String,
}

/// How `mpw restack` brings a dependant onto its upstream's new head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestackMode {
    /// One merge commit of the upstream's new head.
    Merge,
    /// Its own commits replayed onto the new head (`--rebase`, and always
    /// after the upstream was integrated by squash).
    Rebase,
}

/// A workstream's last integration, kept on its row and in `run_status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Integration {
    pub into: String,
    pub commit: Option<String>,
    pub conflicts: Vec<String>,
    pub at: String,
    pub strategy: Strategy,
    pub branch_head: String,
    pub detail: String,
    /// For a gate failure: the workstreams the failing gate run covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covered: Vec<String>,
}

impl From<&Integration> for WsIntegration {
    fn from(i: &Integration) -> Self {
        WsIntegration {
            into: i.into.clone(),
            conflicts: i.conflicts.clone(),
            detail: i.detail.clone(),
            covered: i.covered.clone(),
        }
    }
}

impl Serialize for Event {
    /// The header first (`ts`, `kind`, `run`, then where it happened), then the facts.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("ts", &self.ts)?;
        m.serialize_entry("kind", &self.kind())?;
        m.serialize_entry("run", &self.run)?;
        if let Some(w) = &self.workstream {
            m.serialize_entry("workstream", w)?;
        }
        if let Some(t) = &self.task {
            m.serialize_entry("task", t)?;
        }
        if let Some(a) = &self.attempt {
            m.serialize_entry("attempt", a)?;
        }
        for (k, v) in self.data.facts() {
            m.serialize_entry(&k, &v)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            ts: String,
            run: String,
            #[serde(default)]
            workstream: Option<String>,
            #[serde(default)]
            task: Option<String>,
            #[serde(default)]
            attempt: Option<u32>,
            #[serde(flatten)]
            data: EventData,
        }
        let w = Wire::deserialize(d)?;
        Ok(Event {
            ts: w.ts,
            run: w.run,
            workstream: w.workstream,
            task: w.task,
            attempt: w.attempt,
            data: w.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ws: bool, task: bool, data: EventData) -> Event {
        Event {
            ts: "2026-01-02T03:04:05.678Z".into(),
            run: "R".into(),
            workstream: ws.then(|| "W".into()),
            task: task.then(|| "T".into()),
            attempt: task.then_some(2),
            data,
        }
    }

    fn all_task_facts() -> TaskFacts {
        TaskFacts {
            exit_code: Some(3),
            commit: Some("c0ffee".into()),
            preserved_ref: Some("refs/mpw/R/cancelled/W/T".into()),
            reason: Some("why".into()),
            duration_ms: Some(42),
            hint: Some("committed 1 file under build/: add them to globals.ignore?".into()),
        }
    }

    fn ws_integration() -> WsIntegration {
        WsIntegration {
            into: "main".into(),
            conflicts: vec!["a.txt".into()],
            detail: "d".into(),
            covered: vec![],
        }
    }

    /// Every kind of event with every fact set, and its exact line in
    /// `events.jsonl`. Renaming or reordering a key breaks this test, and
    /// with it every reader of `events.jsonl` outside mpw.
    fn worker_facts(reason: Option<&str>) -> WorkerFacts {
        WorkerFacts {
            worker: "py".into(),
            pid: 42,
            requests: 0,
            reason: reason.map(String::from),
        }
    }

    fn golden() -> Vec<(Event, String)> {
        const H: &str = r#""ts":"2026-01-02T03:04:05.678Z""#;
        let locks = || StaleLocks {
            stale_locks_removed: vec!["/r/.git/index.lock".into()],
            coordinator_last_seen: Some("2026-01-02T03:00:00.000Z".into()),
        };
        let wsf = || WorkstreamFacts {
            head: Some("abc".into()),
            reason: Some("why".into()),
        };
        let task_line = |kind: &str| {
            format!(
                r#"{{{H},"kind":"{kind}","run":"R","workstream":"W","task":"T","attempt":2,"exit_code":3,"commit":"c0ffee","preserved_ref":"refs/mpw/R/cancelled/W/T","reason":"why","duration_ms":42,"hint":"committed 1 file under build/: add them to globals.ignore?"}}"#
            )
        };
        let ws_line = |kind: &str| {
            format!(
                r#"{{{H},"kind":"{kind}","run":"R","workstream":"W","head":"abc","reason":"why"}}"#
            )
        };
        let locks_line = |kind: &str| {
            format!(
                r#"{{{H},"kind":"{kind}","run":"R","stale_locks_removed":["/r/.git/index.lock"],"coordinator_last_seen":"2026-01-02T03:00:00.000Z"}}"#
            )
        };
        let wsi_line = |kind: &str| {
            format!(
                r#"{{{H},"kind":"{kind}","run":"R","workstream":"W","into":"main","conflicts":["a.txt"],"detail":"d"}}"#
            )
        };
        use EventData as D;
        let run_ev = |data| ev(false, false, data);
        let ws_ev = |data| ev(true, false, data);
        let mut out: Vec<(Event, String)> = vec![
            (
                run_ev(D::RunStarted),
                format!(r#"{{{H},"kind":"RUN_STARTED","run":"R"}}"#),
            ),
            (run_ev(D::RunResumed(locks())), locks_line("RUN_RESUMED")),
            (
                ws_ev(D::WorktreeCreated(WorktreeCreated {
                    path: "/wt/W".into(),
                    branch: "mpw/R/W".into(),
                    commit: "abc".into(),
                    missing_copies: vec![".env".into()],
                })),
                format!(
                    r#"{{{H},"kind":"WORKTREE_CREATED","run":"R","workstream":"W","path":"/wt/W","branch":"mpw/R/W","commit":"abc","missing_copies":[".env"]}}"#
                ),
            ),
            (
                ws_ev(D::SetupFailed(SetupFailed {
                    reason: "why".into(),
                })),
                format!(
                    r#"{{{H},"kind":"SETUP_FAILED","run":"R","workstream":"W","reason":"why"}}"#
                ),
            ),
            (
                run_ev(D::RunCompleted),
                format!(r#"{{{H},"kind":"RUN_COMPLETED","run":"R"}}"#),
            ),
            (
                run_ev(D::RunFailed),
                format!(r#"{{{H},"kind":"RUN_FAILED","run":"R"}}"#),
            ),
            (
                run_ev(D::RunCancelled(locks())),
                locks_line("RUN_CANCELLED"),
            ),
            (
                run_ev(D::IntegrationStarted(IntegrationStarted {
                    into: "main".into(),
                    strategy: Strategy::Squash,
                    target: "abc".into(),
                })),
                format!(
                    r#"{{{H},"kind":"INTEGRATION_STARTED","run":"R","into":"main","strategy":"squash","target":"abc"}}"#
                ),
            ),
            (
                run_ev(D::IntegrationCompleted(IntegrationDone {
                    into: "main".into(),
                    target: "def".into(),
                })),
                format!(
                    r#"{{{H},"kind":"INTEGRATION_COMPLETED","run":"R","into":"main","target":"def"}}"#
                ),
            ),
            (
                run_ev(D::WorkerStarted(worker_facts(None))),
                format!(
                    r#"{{{H},"kind":"WORKER_STARTED","run":"R","worker":"py","pid":42,"requests":0}}"#
                ),
            ),
            (
                run_ev(D::WorkerExited(worker_facts(Some("crashed")))),
                format!(
                    r#"{{{H},"kind":"WORKER_EXITED","run":"R","worker":"py","pid":42,"requests":0,"reason":"crashed"}}"#
                ),
            ),
            (
                run_ev(D::WorkerRecycled(worker_facts(None))),
                format!(
                    r#"{{{H},"kind":"WORKER_RECYCLED","run":"R","worker":"py","pid":42,"requests":0}}"#
                ),
            ),
            (
                run_ev(D::IntegrationCancelled(IntegrationCancelled {
                    into: "main".into(),
                    reason: "interrupted".into(),
                })),
                format!(
                    r#"{{{H},"kind":"INTEGRATION_CANCELLED","run":"R","into":"main","reason":"interrupted"}}"#
                ),
            ),
        ];
        out.extend([
            (
                run_ev(D::BatchStarted(BatchStarted {
                        into: "main".into(),
                        batch: 1,
                        candidates: vec!["A".into(), "B".into()],
                        taken_out: vec!["C".into()],
                    }),
                ),
                format!(
                    r#"{{{H},"kind":"BATCH_STARTED","run":"R","into":"main","batch":1,"candidates":["A","B"],"taken_out":["C"]}}"#
                ),
            ),
            (
                run_ev(D::GatePassed(GatePassed {
                        gate_run: 7,
                        covered: vec!["A".into(), "B".into()],
                        duration_ms: 42,
                        flaky: true,
                    }),
                ),
                format!(
                    r#"{{{H},"kind":"GATE_PASSED","run":"R","gate_run":7,"covered":["A","B"],"duration_ms":42,"flaky":true}}"#
                ),
            ),
            (
                run_ev(D::BisectSplit(BisectSplit {
                        gate_run: 7,
                        first: vec!["A".into()],
                        rest: vec!["B".into()],
                    }),
                ),
                format!(
                    r#"{{{H},"kind":"BISECT_SPLIT","run":"R","gate_run":7,"first":["A"],"rest":["B"]}}"#
                ),
            ),
            (
                ws_ev(D::Restacked(Restacked {
                        upstreams: vec!["A".into()],
                        mode: RestackMode::Rebase,
                        from: "c1".into(),
                        to: "c2".into(),
                    }),
                ),
                format!(
                    r#"{{{H},"kind":"RESTACKED","run":"R","workstream":"W","upstreams":["A"],"mode":"rebase","from":"c1","to":"c2"}}"#
                ),
            ),
            (
                ws_ev(D::GateFailed(WsIntegration {
                        covered: vec!["A".into(), "W".into()],
                        ..ws_integration()
                    }),
                ),
                format!(
                    r#"{{{H},"kind":"GATE_FAILED","run":"R","workstream":"W","into":"main","conflicts":["a.txt"],"detail":"d","covered":["A","W"]}}"#
                ),
            ),
        ]);
        let tf = all_task_facts;
        let wsi = ws_integration;
        let per_workstream = [
            (D::TaskReady(tf()), task_line("TASK_READY")),
            (D::TaskStarted(tf()), task_line("TASK_STARTED")),
            (D::TaskRetry(tf()), task_line("TASK_RETRY")),
            (D::TaskInterrupted(tf()), task_line("TASK_INTERRUPTED")),
            (D::TaskSucceeded(tf()), task_line("TASK_SUCCEEDED")),
            (D::TaskFailed(tf()), task_line("TASK_FAILED")),
            (D::TaskQuarantined(tf()), task_line("TASK_QUARANTINED")),
            (D::TaskSkipped(tf()), task_line("TASK_SKIPPED")),
            (D::TaskCancelled(tf()), task_line("TASK_CANCELLED")),
            (D::TaskWaiting(tf()), task_line("TASK_WAITING")),
            (D::WorkstreamStarted(wsf()), ws_line("WORKSTREAM_STARTED")),
            (
                D::WorkstreamCompleted(wsf()),
                ws_line("WORKSTREAM_COMPLETED"),
            ),
            (D::WorkstreamFailed(wsf()), ws_line("WORKSTREAM_FAILED")),
            (
                D::WorkstreamQuarantined(wsf()),
                ws_line("WORKSTREAM_QUARANTINED"),
            ),
            (D::WorkstreamSkipped(wsf()), ws_line("WORKSTREAM_SKIPPED")),
            (
                D::WorkstreamIntegrated(wsi()),
                wsi_line("WORKSTREAM_INTEGRATED"),
            ),
            (
                D::WorkstreamConflict(wsi()),
                wsi_line("WORKSTREAM_CONFLICT"),
            ),
            (D::GateFailed(wsi()), wsi_line("GATE_FAILED")),
        ];
        for (data, line) in per_workstream {
            out.push((ev(true, data.task().is_some(), data), line));
        }
        out
    }

    #[test]
    fn every_event_kind_keeps_its_exact_line() {
        let samples = golden();
        for k in EventKind::ALL {
            assert!(
                samples.iter().any(|(e, _)| e.kind() == *k),
                "no golden line for {k}"
            );
        }
        for (e, line) in &samples {
            assert_eq!(serde_json::to_string(e).unwrap(), *line, "{}", e.kind());
            let back: Event = serde_json::from_str(line).unwrap();
            assert_eq!(&back, e, "{} reads back", e.kind());
            let from_row = EventData::from_facts(e.kind(), e.data.facts()).unwrap();
            assert_eq!(from_row, e.data, "{} from the events table", e.kind());
        }
    }

    #[test]
    fn facts_left_out_when_unknown() {
        let e = ev(true, true, EventData::TaskStarted(TaskFacts::default()));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"ts":"2026-01-02T03:04:05.678Z","kind":"TASK_STARTED","run":"R","workstream":"W","task":"T","attempt":2}"#
        );
        let e = ev(false, false, EventData::RunResumed(StaleLocks::default()));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"ts":"2026-01-02T03:04:05.678Z","kind":"RUN_RESUMED","run":"R"}"#
        );
    }

    #[test]
    fn the_kind_a_payload_serialises_under_is_its_kind() {
        for (e, _) in golden() {
            let v = serde_json::to_value(&e.data).unwrap();
            assert_eq!(v["kind"], e.kind().as_str());
        }
    }
}
