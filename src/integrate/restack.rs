//! `mpw restack`: a stacked workstream whose upstream's head changed (a fix
//! committed in the upstream's worktree, or the upstream integrated by
//! squash) is brought onto that new head, in memory: by one merge commit, or
//! with `--rebase` by replaying its own commits. Its branch moves by
//! compare-and-swap, and its worktree with it. `integrate` refuses a stale
//! stack through the same `stale_upstreams`. docs/ARCHITECTURE.md describes
//! the merge queue.

use super::{Result, open_run, order, take_lock};
use crate::git::{self, Excluded, MergeSession, Oid};
use crate::model::{EventData, RestackMode, Restacked, Strategy, WorkstreamState};
use crate::runner::{Listener, RunError};
use crate::store::WsRow;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct RestackOptions {
    pub run: Option<String>,
    /// One workstream; None: every stale stacked workstream of the run.
    pub workstream: Option<String>,
    /// Replay the workstream's own commits instead of merging.
    pub rebase: bool,
    pub no_wait: bool,
}

/// What `restack` did to one workstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RestackState {
    Restacked,
    UpToDate,
    /// Moving it would conflict: nothing moved.
    Conflict,
    /// Not restacked: integrated already, branch gone, or an upstream that
    /// could not be restacked.
    Skipped,
}

impl RestackState {
    pub fn as_str(self) -> &'static str {
        match self {
            RestackState::Restacked => "RESTACKED",
            RestackState::UpToDate => "UP_TO_DATE",
            RestackState::Conflict => "CONFLICT",
            RestackState::Skipped => "SKIPPED",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RestackOutcome {
    pub workstream: String,
    pub state: RestackState,
    /// The upstreams whose new heads it was (or would be) brought onto.
    pub upstreams: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<RestackMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestackReport {
    pub run_id: String,
    pub outcomes: Vec<RestackOutcome>,
}

impl RestackReport {
    /// Exit 1 when a workstream could not be restacked for a conflict (or
    /// stacks on one that could not).
    pub fn failed(&self) -> bool {
        self.outcomes
            .iter()
            .any(|o| matches!(o.state, RestackState::Conflict | RestackState::Skipped))
    }
}

/// Where upstream `d` is now: its branch's tip, or after an integration by
/// squash the squash commit (its original commits are not in the target).
struct Upstream {
    d: usize,
    head: Oid,
    /// The squash commit replaced the branch: its commits must be dropped.
    squashed: bool,
}

fn upstream(repo: &Path, rows: &[WsRow], d: usize) -> Result<Option<Upstream>> {
    let row = &rows[d];
    if row.state == WorkstreamState::Integrated
        && let Some(i) = &row.integration
        && i.strategy == Strategy::Squash
        && let Some(c) = i.commit.as_deref().and_then(|c| c.parse().ok())
    {
        return Ok(Some(Upstream {
            d,
            head: c,
            squashed: true,
        }));
    }
    Ok(git::branch_tip(repo, &row.branch)?.map(|head| Upstream {
        d,
        head,
        squashed: false,
    }))
}

/// The upstreams of workstream `w` whose current head its branch at `head`
/// does not contain: the stack is stale.
fn stale_upstreams(
    repo: &Path,
    rows: &[WsRow],
    deps: &[usize],
    head: Oid,
) -> Result<Vec<Upstream>> {
    let mut stale = Vec::new();
    for &d in deps {
        if let Some(u) = upstream(repo, rows, d)?
            && !git::is_ancestor(repo, u.head, head)?
        {
            stale.push(u);
        }
    }
    Ok(stale)
}

/// For `integrate`: why workstream `w` (at `head`) must be restacked before
/// it is merged, if it must. `rows` are as the integration found them, so an
/// upstream squashed by this same integration is not counted.
pub(super) fn stale_stack(
    repo: &Path,
    run_id: &str,
    rows: &[WsRow],
    deps: &[usize],
    w: usize,
    head: Oid,
) -> Result<Option<String>> {
    let stale = stale_upstreams(repo, rows, deps, head)?;
    let Some(u) = stale.first() else {
        return Ok(None);
    };
    let (ws, up) = (&rows[w].id, &rows[u.d].id);
    let squashed = match u.squashed {
        true => format!(" ({up} was integrated by squash as {})", short(u.head)),
        false => String::new(),
    };
    Ok(Some(format!(
        "not merged: {ws} is stacked on {up}, whose head changed; run mpw restack {run_id} {ws}{squashed}"
    )))
}

fn short(c: Oid) -> String {
    c.to_string()[..10].to_string()
}

/// Restack one workstream of the run, or every stale stacked one in stack order.
pub fn restack(
    repo: Option<&Path>,
    opts: &RestackOptions,
    listener: &mut dyn Listener,
    on_wait: &mut dyn FnMut(&str),
) -> Result<RestackReport> {
    let (mut store, run_row, repo) = open_run(repo, opts.run.as_deref())?;
    let run = run_row.id.clone();
    let loaded = crate::runner::stored_plan(&store.layout, &run)?;
    let deps = loaded.dag.ws_deps;
    // Not while an integration reads the branches, nor two restacks at once.
    let _lock = take_lock(&store.layout.integrate_lock(), opts.no_wait, on_wait)?;
    let rows = store.workstreams(&run)?;
    let targets: Vec<usize> = match &opts.workstream {
        Some(name) => {
            let w = rows.iter().position(|r| &r.id == name).ok_or_else(|| {
                RunError::NoSuchWorkstreamInRun {
                    name: name.clone(),
                    run: run.clone(),
                }
            })?;
            if deps[w].is_empty() {
                return Err(RunError::NotStacked {
                    ws: name.clone(),
                    run: run.clone(),
                });
            }
            vec![w]
        }
        None => order(&loaded.plan, &deps)
            .into_iter()
            .filter(|&w| !deps[w].is_empty())
            .collect(),
    };
    refuse_dirty(&repo, &rows, &deps, &targets)?;
    let mut r = Restacker {
        repo: &repo,
        run: &run,
        rows: &rows,
        deps: &deps,
        rebase: opts.rebase,
        session: MergeSession::open(&repo)?,
        not_moved: BTreeSet::new(),
    };
    let mut outcomes = Vec::new();
    for w in targets {
        let o = r.one(w)?;
        if let Some(ev) = o.1 {
            let ev = store.event(&run, Some(&rows[w].id), None, None, ev)?;
            listener.event(&ev);
        }
        outcomes.push(o.0);
    }
    store.write_status_files(&run)?;
    Ok(RestackReport {
        run_id: run,
        outcomes,
    })
}

/// The worktree that has `branch` checked out, if any.
fn checkout_of(repo: &Path, branch: &str) -> Result<Option<PathBuf>> {
    Ok(git::list_worktrees(repo)?
        .into_iter()
        .find(|w| w.branch.as_deref() == Some(branch))
        .map(|w| w.path))
}

/// Refuse, before anything moves, when a workstream that will (or may, once
/// its upstream moved) be restacked has uncommitted changes in its worktree.
fn refuse_dirty(repo: &Path, rows: &[WsRow], deps: &[Vec<usize>], targets: &[usize]) -> Result<()> {
    let mut moving: BTreeSet<usize> = BTreeSet::new();
    for &w in targets {
        let row = &rows[w];
        if row.state == WorkstreamState::Integrated {
            continue;
        }
        let Some(head) = git::branch_tip(repo, &row.branch)? else {
            continue;
        };
        let follows = deps[w].iter().any(|d| moving.contains(d));
        if !follows && stale_upstreams(repo, rows, &deps[w], head)?.is_empty() {
            continue;
        }
        moving.insert(w);
        let Some(wt) = checkout_of(repo, &row.branch)? else {
            continue;
        };
        // Untracked files stay, as with `git merge`, unless tracked ones
        // would be written over them (checked when it moves).
        let dirty: Vec<String> = git::changes(&wt, &Excluded::default())?
            .into_iter()
            .filter(|c| c.kind != git::ChangeKind::Added)
            .map(|c| c.path)
            .collect();
        if !dirty.is_empty() {
            return Err(RunError::DirtyWorktree {
                ws: row.id.clone(),
                worktree: wt,
                more: dirty.len() > 20,
                paths: dirty.into_iter().take(20).collect(),
            });
        }
    }
    Ok(())
}

struct Restacker<'a> {
    repo: &'a Path,
    run: &'a str,
    rows: &'a [WsRow],
    deps: &'a [Vec<usize>],
    rebase: bool,
    session: MergeSession,
    /// Workstreams this restack could not move; their dependants wait.
    not_moved: BTreeSet<usize>,
}

type One = (RestackOutcome, Option<EventData>);

impl Restacker<'_> {
    fn outcome(&self, w: usize, state: RestackState, detail: String) -> RestackOutcome {
        RestackOutcome {
            workstream: self.rows[w].id.clone(),
            state,
            upstreams: vec![],
            mode: None,
            from: None,
            to: None,
            conflicts: vec![],
            detail,
        }
    }

    fn one(&mut self, w: usize) -> Result<One> {
        let row = &self.rows[w];
        if row.state == WorkstreamState::Integrated {
            return Ok((
                self.outcome(w, RestackState::UpToDate, "already integrated".into()),
                None,
            ));
        }
        let Some(head) = git::branch_tip(self.repo, &row.branch)? else {
            self.not_moved.insert(w);
            let detail = format!("branch {} is gone", row.branch);
            return Ok((self.outcome(w, RestackState::Skipped, detail), None));
        };
        if let Some(&d) = self.deps[w].iter().find(|d| self.not_moved.contains(d)) {
            self.not_moved.insert(w);
            let detail = format!(
                "not restacked: it stacks on {}, which could not be restacked",
                self.rows[d].id
            );
            return Ok((self.outcome(w, RestackState::Skipped, detail), None));
        }
        let stale = stale_upstreams(self.repo, self.rows, &self.deps[w], head)?;
        if stale.is_empty() {
            let ups: Vec<&str> = self.deps[w]
                .iter()
                .map(|&d| self.rows[d].id.as_str())
                .collect();
            let detail = format!("up to date with {}", ups.join(", "));
            return Ok((self.outcome(w, RestackState::UpToDate, detail), None));
        }
        let names: Vec<String> = stale.iter().map(|u| self.rows[u.d].id.clone()).collect();
        // A merge cannot drop the squashed commits: they are replayed away.
        let mode = match self.rebase || stale.iter().any(|u| u.squashed) {
            true => RestackMode::Rebase,
            false => RestackMode::Merge,
        };
        let moved = match mode {
            RestackMode::Merge => self.merge(w, head, &stale)?,
            RestackMode::Rebase => self.replay(w, head)?,
        };
        let mut o = RestackOutcome {
            upstreams: names.clone(),
            mode: Some(mode),
            from: Some(head.to_string()),
            ..self.outcome(w, RestackState::Restacked, String::new())
        };
        let new = match moved {
            Ok(new) => new,
            Err((conflicts, detail)) => {
                self.not_moved.insert(w);
                o.state = RestackState::Conflict;
                o.conflicts = conflicts;
                o.detail = detail;
                return Ok((o, None));
            }
        };
        self.session.persist()?;
        let checkout = checkout_of(self.repo, &row.branch)?;
        if let Some(wt) = &checkout {
            untracked_in_the_way(self.repo, row, wt, head, new)?;
        }
        git::advance_branch(
            self.repo,
            &format!("refs/heads/{}", row.branch),
            head,
            new,
            &format!("mpw restack: onto {}", names.join(", ")),
            checkout.as_deref(),
        )?;
        o.to = Some(new.to_string());
        o.detail = format!(
            "{} onto the new head of {}: {} -> {}",
            match mode {
                RestackMode::Merge => "merged",
                RestackMode::Rebase => "rebased",
            },
            names.join(", "),
            short(head),
            short(new)
        );
        let ev = EventData::Restacked(Restacked {
            upstreams: names,
            mode,
            from: head.to_string(),
            to: new.to_string(),
        });
        Ok((o, Some(ev)))
    }

    /// One merge commit per stale upstream's new head.
    fn merge(
        &mut self,
        w: usize,
        head: Oid,
        stale: &[Upstream],
    ) -> Result<std::result::Result<Oid, (Vec<String>, String)>> {
        let row = &self.rows[w];
        let mut acc = head;
        for u in stale {
            let up = &self.rows[u.d];
            let m = self.session.merge(acc, u.head, &row.branch, &up.branch)?;
            if !m.is_clean() {
                let detail = format!(
                    "merging the new head of {} conflicts on {}; nothing moved. Resolve it in {}: git merge {}, fix the conflicts, commit; then run mpw integrate",
                    up.id,
                    m.conflicts.join(", "),
                    row.worktree,
                    up.branch
                );
                return Ok(Err((m.conflicts, detail)));
            }
            let message = format!(
                "Restack workstream {} on {} (run {})\n\nMerge the new head of {} ({}).\n\nMpw-Run: {}\nMpw-Workstream: {}\n",
                row.id,
                up.id,
                self.run,
                up.id,
                short(u.head),
                self.run,
                row.id
            );
            acc = self.session.commit(m.tree, &[acc, u.head], &message)?;
        }
        Ok(Ok(acc))
    }

    /// Its own commits replayed onto the upstreams' new heads, as
    /// `git rebase --onto NEW OLD` would: what any upstream's branch (old or
    /// new) or its start contains is dropped, and so are merges.
    fn replay(
        &mut self,
        w: usize,
        head: Oid,
    ) -> Result<std::result::Result<Oid, (Vec<String>, String)>> {
        let row = &self.rows[w];
        let mut hidden = Vec::new();
        let mut news = Vec::new();
        for &d in &self.deps[w] {
            let up = &self.rows[d];
            hidden.extend(git::branch_tip(self.repo, &up.branch)?);
            if let Some(u) = upstream(self.repo, self.rows, d)? {
                hidden.push(u.head);
                news.push(u.head);
            }
        }
        hidden.extend(
            row.start_commit
                .as_deref()
                .and_then(|c| c.parse::<Oid>().ok()),
        );
        let ups: Vec<&str> = self.deps[w]
            .iter()
            .map(|&d| self.rows[d].id.as_str())
            .collect();
        let message = format!(
            "Merge dependencies of workstream {}\n\nMpw-Run: {}\n",
            row.id, self.run
        );
        let base = match self.session.merge_heads(&news, &message)? {
            Ok(b) => b,
            Err(conflicts) => {
                let detail = format!(
                    "the new heads of {} conflict with each other on {}; nothing moved",
                    ups.join(", "),
                    conflicts.join(", ")
                );
                return Ok(Err((conflicts, detail)));
            }
        };
        let mut acc = base;
        for c in git::commits_to_replay(self.repo, head, &hidden)? {
            let m = self
                .session
                .cherry_pick(acc, c, &ups.join("+"), &short(c))?;
            if !m.is_clean() {
                let detail = format!(
                    "replaying {} onto the new head of {} conflicts on {}; nothing moved. Resolve it in {}: git rebase {}, fix the conflicts, git rebase --continue; then run mpw integrate",
                    short(c),
                    ups.join(", "),
                    m.conflicts.join(", "),
                    row.worktree,
                    self.rows[self.deps[w][0]].branch
                );
                return Ok(Err((m.conflicts, detail)));
            }
            // A change the new head already has leaves nothing: dropped, as
            // `git rebase` drops a commit that became empty.
            if m.tree == self.session.tree_of(acc)? {
                continue;
            }
            acc = self.session.replay(m.tree, &[acc], c)?;
        }
        Ok(Ok(acc))
    }
}

/// Untracked files of the workstream's worktree that moving it would write
/// over: refuse, as `git merge` does (exit 3, nothing moved).
fn untracked_in_the_way(repo: &Path, row: &WsRow, wt: &Path, from: Oid, to: Oid) -> Result<()> {
    let untracked: BTreeSet<String> = git::changes(wt, &Excluded::default())?
        .into_iter()
        .filter(|c| c.kind == git::ChangeKind::Added)
        .map(|c| c.path)
        .collect();
    if untracked.is_empty() {
        return Ok(());
    }
    let in_the_way: Vec<String> = git::diffstat(repo, from, to)?
        .files
        .into_iter()
        .map(|f| f.path)
        .filter(|p| untracked.contains(p))
        .collect();
    if in_the_way.is_empty() {
        return Ok(());
    }
    Err(RunError::DirtyWorktree {
        ws: row.id.clone(),
        worktree: wt.to_path_buf(),
        more: false,
        paths: in_the_way,
    })
}
