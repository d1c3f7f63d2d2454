//! `mpw integrate`: a small merge queue. Under an exclusive lock, finished
//! workstreams are merged into the target branch one at a time, in memory,
//! optionally gated, and the target moves by compare-and-swap only.

use crate::exec::{self, Cancel, Program, Spec, Verdict};
use crate::git::{self, Excluded, GitError, MergeSession, Oid};
use crate::lock;
use crate::model::{
    EventData, Integration, IntegrationCancelled, IntegrationDone, IntegrationStarted,
    WorkstreamState, now,
};
use crate::plan::Plan;
use crate::runner::{Listener, RunError, open_repo};
use crate::signals::Signals;
use crate::store::{Store, WsPatch, WsRow};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

type Result<T, E = RunError> = std::result::Result<T, E>;

pub use crate::model::Strategy;

#[derive(Debug, Clone)]
pub struct Options {
    pub run: Option<String>,
    pub into: Option<String>,
    pub gate: Option<String>,
    pub gate_timeout: Duration,
    pub strategy: Strategy,
    pub no_wait: bool,
    pub grace: Duration,
}

/// What happened to one workstream: its state after integrating, or in a
/// forecast what would happen.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome<S = WorkstreamState> {
    pub workstream: String,
    pub state: S,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub into: String,
    pub strategy: Strategy,
    pub before: String,
    pub after: String,
    pub outcomes: Vec<Outcome>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Report {
    /// A conflict or a gate failure: exit 1.
    pub fn failed(&self) -> bool {
        self.outcomes.iter().any(|o| {
            matches!(
                o.state,
                WorkstreamState::Conflict | WorkstreamState::GateFailed
            )
        })
    }
}

/// The run, its plan and the target branch.
struct Setup {
    store: Store,
    repo: PathBuf,
    run_id: String,
    plan: Plan,
    ws_deps: Vec<Vec<usize>>,
    into: String,
    /// With a gate: the runtime it runs on and the stop requests of
    /// Ctrl-C / SIGTERM, as for `mpw run`.
    gate_rt: Option<GateRuntime>,
    /// Trouble that changes no verdict, told at the end.
    warnings: Vec<String>,
}

struct GateRuntime {
    rt: tokio::runtime::Runtime,
    stop: watch::Receiver<Cancel>,
}

impl GateRuntime {
    fn new() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(RunError::runtime("cannot start the runtime"))?;
        let signals = {
            let _in_rt = rt.enter();
            Signals::new()
                .map_err(RunError::runtime("cannot listen for signals"))?
                .watch()
        };
        Ok(GateRuntime { rt, stop: signals })
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow() != Cancel::No
    }
}

fn interrupted(s: &Setup, what: &str) -> RunError {
    let mut m = format!(
        "interrupted {what}; {} and the workstreams not yet merged are unchanged",
        s.into
    );
    for w in &s.warnings {
        m.push_str(&format!("\nwarning: {w}"));
    }
    RunError::Interrupted(m)
}

/// The target's tip now; it may have been deleted while we waited for the lock.
fn target_tip(s: &Setup) -> Result<Oid> {
    git::branch_tip(&s.repo, &s.into)?.ok_or_else(|| RunError::TargetGone {
        branch: s.into.clone(),
    })
}

/// Record that an integration stopped on Ctrl-C / SIGTERM, and pass the error on.
fn record_cancelled(s: &mut Setup, listener: &mut dyn Listener, err: RunError) -> Result<RunError> {
    if let RunError::Interrupted(reason) = &err {
        let data = EventData::IntegrationCancelled(IntegrationCancelled {
            into: s.into.clone(),
            reason: reason.clone(),
        });
        let ev = s.store.event(&s.run_id, None, None, None, data)?;
        listener.event(&ev);
    }
    s.store.write_status_files(&s.run_id)?;
    Ok(err)
}

fn setup(repo: Option<&Path>, run: Option<&str>, into: Option<&str>) -> Result<Setup> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let row = store.run_or_latest(run)?;
    if !row.state.is_terminal() {
        return Err(RunError::NotFinished {
            run: row.id,
            state: row.state,
        });
    }
    let into = match (into, &row.base_ref) {
        (Some(i), _) => i.to_string(),
        (None, Some(b)) => b.clone(),
        (None, None) => return Err(RunError::NoTarget { run: row.id }),
    };
    // The repository as found now (it may have moved since the run).
    let main = rc.info.main_workdir.clone();
    if git::branch_tip(&main, &into)?.is_none() {
        return Err(RunError::NoSuchBranch { branch: into });
    }
    let loaded = crate::runner::stored_plan(&store.layout, &row.id)?;
    Ok(Setup {
        store,
        repo: main,
        run_id: row.id,
        plan: loaded.plan,
        ws_deps: loaded.dag.ws_deps,
        into,
        gate_rt: None,
        warnings: Vec::new(),
    })
}

/// Dependencies first, then priority, then plan order.
fn order(plan: &Plan, deps: &[Vec<usize>]) -> Vec<usize> {
    let n = plan.workstreams.len();
    let mut done = vec![false; n];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = (0..n)
            .filter(|&i| !done[i] && deps[i].iter().all(|&d| done[d]))
            .min_by_key(|&i| (plan.workstreams[i].priority, i));
        let Some(i) = next else { break };
        done[i] = true;
        out.push(i);
    }
    out
}

fn take_lock(path: &Path, no_wait: bool, on_wait: &mut dyn FnMut(&str)) -> Result<File> {
    if no_wait {
        return lock::try_acquire(path)?.ok_or_else(|| RunError::IntegrationLocked {
            lock: path.to_path_buf(),
        });
    }
    Ok(lock::acquire(path, &mut || {
        on_wait(&format!(
            "waiting for another mpw integrate to finish (lock {})",
            path.display()
        ))
    })?)
}

/// The worktree that has `branch` checked out, if any; refuse if it has changes.
/// The worktree that has the target checked out, and its untracked files
/// (which may stay, as with `git merge`, unless a merge would write there).
struct Checkout {
    path: PathBuf,
    untracked: BTreeSet<String>,
}

fn checked_out_clean(repo: &Path, branch: &str) -> Result<Option<Checkout>> {
    let wt = git::list_worktrees(repo)?
        .into_iter()
        .find(|w| w.branch.as_deref() == Some(branch));
    let Some(wt) = wt else { return Ok(None) };
    let (untracked, dirty): (Vec<_>, Vec<_>) = git::changes(&wt.path, &Excluded::default())?
        .into_iter()
        .partition(|c| c.kind == git::ChangeKind::Added);
    if !dirty.is_empty() {
        return Err(RunError::DirtyTarget {
            branch: branch.into(),
            worktree: wt.path,
            more: dirty.len() > 20,
            paths: dirty.into_iter().take(20).map(|c| c.path).collect(),
        });
    }
    Ok(Some(Checkout {
        path: wt.path,
        untracked: untracked.into_iter().map(|c| c.path).collect(),
    }))
}

/// Merge the run's finished workstreams into the target branch.
pub fn integrate(
    repo: Option<&Path>,
    opts: &Options,
    listener: &mut dyn Listener,
    on_wait: &mut dyn FnMut(&str),
) -> Result<Report> {
    let mut s = setup(repo, opts.run.as_deref(), opts.into.as_deref())?;
    let _lock = take_lock(&s.store.layout.integrate_lock(), opts.no_wait, on_wait)?;
    // Only now: Ctrl-C while waiting for the lock ends mpw at once, as
    // nothing has been touched yet.
    if opts.gate.is_some() {
        s.gate_rt = Some(GateRuntime::new()?);
    }
    end_stale_gates(&mut s, opts.grace)?;
    let checkout = checked_out_clean(&s.repo, &s.into)?;
    let target_ref = format!("refs/heads/{}", s.into);
    let before = target_tip(&s)?;
    let run = s.run_id.clone();
    let started = EventData::IntegrationStarted(IntegrationStarted {
        into: s.into.clone(),
        strategy: opts.strategy,
        target: before.to_string(),
    });
    let ev = s.store.event(&run, None, None, None, started)?;
    listener.event(&ev);

    let rows = s.store.workstreams(&run)?;
    let history = s.store.integrations(&run)?;
    let tasks = s.store.tasks(&run)?;
    let mut session = MergeSession::open(&s.repo)?;
    let mut outcomes = Vec::new();
    let mut integrated: BTreeSet<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.state == WorkstreamState::Integrated)
        .map(|(i, _)| i)
        .collect();
    for w in order(&s.plan, &s.ws_deps) {
        if s.gate_rt.as_ref().is_some_and(GateRuntime::stopped) {
            let e = interrupted(&s, "between two merges");
            return Err(record_cancelled(&mut s, listener, e)?);
        }
        let row = &rows[w];
        let name = s.plan.workstreams[w]
            .name
            .clone()
            .unwrap_or_else(|| row.id.clone());
        let skip = |state: WorkstreamState, detail: String| Outcome {
            workstream: row.id.clone(),
            state,
            commit: None,
            conflicts: vec![],
            detail,
        };
        if row.state == WorkstreamState::Integrated {
            outcomes.push(skip(row.state, "already integrated".into()));
            continue;
        }
        if !row.state.is_mergeable() {
            outcomes.push(skip(
                row.state,
                format!(
                    "not merged: workstream is {}{}",
                    row.state,
                    row.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ),
            ));
            continue;
        }
        if let Some(&d) = s.ws_deps[w].iter().find(|d| !integrated.contains(d)) {
            outcomes.push(skip(
                row.state,
                format!(
                    "not merged: it stacks on {}, which is not integrated",
                    rows[d].id
                ),
            ));
            continue;
        }
        let Some(head) = git::branch_tip(&s.repo, &row.branch)? else {
            outcomes.push(skip(
                row.state,
                format!("not merged: branch {} is gone", row.branch),
            ));
            continue;
        };
        // A conflict or gate failure is tried again once the branch has moved.
        if matches!(
            row.state,
            WorkstreamState::Conflict | WorkstreamState::GateFailed
        ) && history
            .iter()
            .rev()
            .find(|h| h.ws == row.id)
            .is_some_and(|h| h.branch_head.parse::<Oid>().ok() == Some(head))
        {
            outcomes.push(skip(
                row.state,
                format!(
                    "unchanged since it was {}; fix it in {}, commit, and run mpw integrate again",
                    row.state, row.worktree
                ),
            ));
            continue;
        }
        let task_lines: String = tasks
            .iter()
            .filter(|t| t.ws == row.id)
            .map(|t| {
                format!(
                    "- {} {}: {}\n",
                    t.id,
                    t.state,
                    t.name.clone().unwrap_or_default()
                )
            })
            .collect();
        let message = format!(
            "Merge workstream {}: {name} (run {run})\n\nTasks:\n{task_lines}\nMpw-Run: {run}\nMpw-Workstream: {}\n",
            row.id, row.id
        );
        let result = merge_one(
            &mut s,
            &mut session,
            opts,
            &target_ref,
            row,
            head,
            &message,
            checkout.as_ref(),
        );
        let (state, commit, conflicts, detail) = match result {
            Ok(r) => r,
            Err(e) => {
                // What was integrated before stays recorded for other tools.
                return Err(record_cancelled(&mut s, listener, e)?);
            }
        };
        let at = now();
        let integration = Integration {
            into: s.into.clone(),
            commit: commit.map(|c| c.to_string()),
            conflicts: conflicts.clone(),
            at,
            strategy: opts.strategy,
            branch_head: head.to_string(),
            detail: detail.clone(),
        };
        let ev = s.store.transition_ws(
            &run,
            &row.id,
            state,
            WsPatch {
                integration: Some(integration),
                ..Default::default()
            },
        )?;
        if let Some(ev) = ev {
            listener.event(&ev);
        }
        if state == WorkstreamState::Integrated {
            integrated.insert(w);
        }
        outcomes.push(Outcome {
            workstream: row.id.clone(),
            state,
            commit: commit.map(|c| c.to_string()),
            conflicts,
            detail,
        });
    }
    let after = target_tip(&s)?;
    let done = EventData::IntegrationCompleted(IntegrationDone {
        into: s.into.clone(),
        target: after.to_string(),
    });
    let ev = s.store.event(&run, None, None, None, done)?;
    listener.event(&ev);
    s.store.write_status_files(&run)?;
    Ok(Report {
        run_id: run,
        into: s.into.clone(),
        strategy: opts.strategy,
        before: before.to_string(),
        after: after.to_string(),
        outcomes,
        warnings: std::mem::take(&mut s.warnings),
    })
}

type Merged = (WorkstreamState, Option<Oid>, Vec<String>, String);

/// Merge one workstream: in memory, gate, compare-and-swap, update the checkout.
#[allow(clippy::too_many_arguments)]
fn merge_one(
    s: &mut Setup,
    session: &mut MergeSession,
    opts: &Options,
    target_ref: &str,
    row: &WsRow,
    head: Oid,
    message: &str,
    checkout: Option<&Checkout>,
) -> Result<Merged> {
    for _ in 0..20 {
        let tip = target_tip(s)?;
        if git::is_ancestor(&s.repo, head, tip)? {
            return Ok((
                WorkstreamState::Integrated,
                Some(tip),
                vec![],
                format!("already contained in {}", s.into),
            ));
        }
        let m = session.merge(tip, head, &s.into, &row.branch)?;
        if !m.is_clean() {
            return Ok((
                WorkstreamState::Conflict,
                None,
                m.conflicts.clone(),
                format!(
                    "conflicts with {} on {}; fix it in {} (merge {} there, resolve, commit), then run mpw integrate again",
                    s.into,
                    m.conflicts.join(", "),
                    row.worktree,
                    s.into
                ),
            ));
        }
        let parents: Vec<Oid> = match opts.strategy {
            Strategy::Merge => vec![tip, head],
            Strategy::Squash => vec![tip],
        };
        let commit = session.commit(m.tree, &parents, message)?;
        session.persist()?;
        if let Some(gate) = &opts.gate
            && let Some(reason) = run_gate(s, row, commit, gate, opts)?
        {
            return Ok((WorkstreamState::GateFailed, None, vec![], reason));
        }
        if let Some(co) = checkout
            && !co.untracked.is_empty()
        {
            let in_the_way: Vec<String> = git::diffstat(&s.repo, tip, commit)?
                .files
                .into_iter()
                .map(|f| f.path)
                .filter(|p| co.untracked.contains(p))
                .collect();
            if !in_the_way.is_empty() {
                return Err(RunError::UntrackedInTheWay {
                    ws: row.id.clone(),
                    worktree: co.path.clone(),
                    paths: in_the_way,
                    into: s.into.clone(),
                });
            }
        }
        match git::advance_branch(
            &s.repo,
            target_ref,
            tip,
            commit,
            &format!("mpw integrate: workstream {}", row.id),
            checkout.map(|co| co.path.as_path()),
        ) {
            Ok(()) => {
                return Ok((
                    WorkstreamState::Integrated,
                    Some(commit),
                    vec![],
                    format!("merged into {}", s.into),
                ));
            }
            // Someone moved the target meanwhile: merge again on the new tip.
            Err(GitError::RefMoved { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(RunError::TargetKeptMoving {
        into: s.into.clone(),
        ws: row.id.clone(),
    })
}

/// Check the candidate out in a scratch worktree and run the gate there.
/// Returns why it failed, or None when it passed.
fn run_gate(
    s: &mut Setup,
    row: &WsRow,
    commit: Oid,
    gate: &str,
    opts: &Options,
) -> Result<Option<String>> {
    let run_row = s.store.run(&s.run_id)?;
    let n = s
        .store
        .integrations(&s.run_id)?
        .iter()
        .filter(|i| i.ws == row.id)
        .count()
        + 1;
    let scratch = PathBuf::from(&run_row.worktree_root)
        .join(&s.run_id)
        .join(format!("_gate-{}-{n}", row.id));
    if scratch.exists() {
        remove_scratch(s, &scratch);
    }
    git::add_detached_worktree(&s.repo, &scratch, commit)?;
    let layout = &s.store.layout;
    let spec = Spec {
        program: Program::Shell {
            shell: crate::runner::plan_shell(&s.plan),
            script: gate.to_string(),
        },
        cwd: scratch.clone(),
        env: vec![
            ("MPW_RUN_ID".into(), s.run_id.clone()),
            ("MPW_WORKSTREAM".into(), row.id.clone()),
            (
                "MPW_WORKTREE".into(),
                scratch.to_string_lossy().into_owned(),
            ),
        ],
        timeout: Some(opts.gate_timeout),
        grace: opts.grace,
        stdout: layout
            .run_dir(&s.run_id)
            .join("logs")
            .join("_integrate")
            .join(format!("{}.{n}.out", row.id)),
        stderr: layout
            .run_dir(&s.run_id)
            .join("logs")
            .join("_integrate")
            .join(format!("{}.{n}.err", row.id)),
        guards: Default::default(),
    };
    let gate_rt = s
        .gate_rt
        .as_ref()
        .expect("integrate starts a runtime for a gate");
    let out = gate_rt
        .rt
        .block_on(exec::run(&spec, gate_rt.stop.clone(), |_| {}));
    let stopped = gate_rt.stopped();
    remove_scratch(s, &scratch);
    if stopped {
        return Err(interrupted(s, &format!("while the gate ran on {}", row.id)));
    }
    Ok(match out.verdict() {
        Verdict::Succeeded => None,
        Verdict::Failed(r) | Verdict::Quarantined(r) => Some(format!(
            "gate `{gate}` failed: {r} (log: {})",
            spec.stderr.display()
        )),
        Verdict::Cancelled => Some(format!("gate `{gate}` was cancelled")),
    })
}

/// A killed integration may have left its gate running and its scratch
/// worktree registered; holding the lock, we know both are stale.
fn end_stale_gates(s: &mut Setup, grace: Duration) -> Result<()> {
    let logs = s
        .store
        .layout
        .run_dir(&s.run_id)
        .join("logs")
        .join("_integrate");
    exec::end_leftovers(&[logs], grace);
    let root = PathBuf::from(&s.store.run(&s.run_id)?.worktree_root).join(&s.run_id);
    let stale: Vec<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("_gate-"))
        .map(|e| e.path())
        .collect();
    for p in stale {
        remove_scratch(s, &p);
    }
    Ok(())
}

/// Remove a gate's scratch worktree; a failure does not change the verdict
/// but is told (the directory may need removing by hand).
fn remove_scratch(s: &mut Setup, scratch: &Path) {
    if let Err(e) = git::remove_worktree(&s.repo, scratch, true) {
        s.warnings.push(format!(
            "could not remove the gate's scratch worktree {}: {e}",
            scratch.display()
        ));
    }
}

/// The conflict forecast of `--dry-run`.
#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub run_id: String,
    pub into: String,
    pub target: String,
    /// Each candidate merged alone onto the target.
    pub against_target: BTreeMap<String, Vec<String>>,
    /// Pairs of candidates whose branches conflict with each other.
    pub pairs: Vec<PairConflict>,
    /// Candidates merged one after another in integration order.
    pub sequence: Vec<Outcome<WouldMerge>>,
}

/// What a forecast says of one candidate merged onto the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WouldMerge {
    Clean,
    Conflict,
}

#[derive(Debug, Clone, Serialize)]
pub struct PairConflict {
    pub a: String,
    pub b: String,
    pub paths: Vec<String>,
}

/// Merge everything in memory, move nothing, and say what would conflict.
pub fn forecast(repo: Option<&Path>, run: Option<&str>, into: Option<&str>) -> Result<Forecast> {
    let s = setup(repo, run, into)?;
    let tip = target_tip(&s)?;
    let rows = s.store.workstreams(&s.run_id)?;
    let mut session = MergeSession::open(&s.repo)?;
    let mut heads = Vec::new();
    for w in order(&s.plan, &s.ws_deps) {
        let r = &rows[w];
        if r.state.is_mergeable()
            && let Some(h) = git::branch_tip(&s.repo, &r.branch)?
        {
            heads.push((r.id.clone(), h));
        }
    }
    let mut against_target = BTreeMap::new();
    for (id, h) in &heads {
        let m = session.merge(tip, *h, &s.into, id)?;
        against_target.insert(id.clone(), m.conflicts);
    }
    let mut pairs = Vec::new();
    for (i, (a, ha)) in heads.iter().enumerate() {
        for (b, hb) in &heads[i + 1..] {
            if git::is_ancestor(&s.repo, *ha, *hb)? || git::is_ancestor(&s.repo, *hb, *ha)? {
                continue;
            }
            let m = session.merge(*ha, *hb, a, b)?;
            if !m.is_clean() {
                pairs.push(PairConflict {
                    a: a.clone(),
                    b: b.clone(),
                    paths: m.conflicts,
                });
            }
        }
    }
    let mut acc = tip;
    let mut sequence = Vec::new();
    for (id, h) in &heads {
        let m = session.merge(acc, *h, &s.into, id)?;
        if m.is_clean() {
            acc = session.commit(m.tree, &[acc, *h], &format!("forecast {id}"))?;
            sequence.push(Outcome {
                workstream: id.clone(),
                state: WouldMerge::Clean,
                commit: None,
                conflicts: vec![],
                detail: "would merge cleanly".into(),
            });
        } else {
            sequence.push(Outcome {
                workstream: id.clone(),
                state: WouldMerge::Conflict,
                commit: None,
                conflicts: m.conflicts.clone(),
                detail: format!("would conflict on {}", m.conflicts.join(", ")),
            });
        }
    }
    Ok(Forecast {
        run_id: s.run_id,
        into: s.into,
        target: tip.to_string(),
        against_target,
        pairs,
        sequence,
    })
}
