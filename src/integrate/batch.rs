//! `mpw integrate --gate CMD --batch [N]`: the merge queue's batches. The
//! candidates are merged in memory one after another, exactly as one by one
//! integration would merge them; the gate runs once on the top of the stack,
//! and on failure the stack is bisected until each culprit is isolated on a
//! good prefix. The target then moves once per batch, by compare-and-swap.
//! docs/ARCHITECTURE.md describes the merge queue.

use super::gate::{GateJob, GateRun, run_gates};
use super::{
    Checkout, Merged, Outcome, Result, Setup, candidate, conflict_detail, conflicting_pairs,
    interrupted, merge_message, order, record, untracked_in_the_way,
};
use crate::git::{self, GitError, MergeSession, Oid};
use crate::model::{BatchStarted, BisectSplit, EventData, Strategy, WorkstreamState};
use crate::runner::{Listener, RunError};
use crate::store::{IntegrationRow, TaskRow, WsRow};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the batches share with the rest of `integrate`.
pub(super) struct Queue<'a> {
    pub opts: &'a super::Options,
    pub rows: &'a [WsRow],
    pub history: &'a [IntegrationRow],
    pub tasks: &'a [TaskRow],
    pub checkout: Option<&'a Checkout>,
    pub target_ref: &'a str,
    pub listener: &'a mut dyn Listener,
}

impl Queue<'_> {
    /// The gate: batches exist only with one.
    fn gate(&self) -> &super::Gate {
        self.opts.gate.as_ref().expect("--batch goes with --gate")
    }

    /// Record candidate `cand`'s result (row, state change, event) through the
    /// same `record` as one-by-one integration.
    fn record(
        &mut self,
        s: &mut Setup,
        cand: &Cand,
        merged: Merged,
        covered: Vec<String>,
    ) -> Result<Outcome> {
        let row = &self.rows[cand.w];
        let strategy = self.opts.strategy;
        record(s, self.listener, row, cand.head, strategy, merged, covered)
    }
}

/// A workstream due for merging: its index, branch head and merge message.
struct Cand {
    w: usize,
    head: Oid,
    message: String,
}

/// One search of a batch: what it has accepted and what it has left out.
struct Search<'q, 'a> {
    q: &'q mut Queue<'a>,
    session: &'q mut MergeSession,
    batch: u32,
    cands: Vec<Cand>,
    /// Merged onto the good prefix, in order, with their merge commits.
    accepted: Vec<(usize, Oid, String)>,
    /// Workstreams taken out (conflicts, culprits); their dependants follow.
    out: BTreeSet<usize>,
    outcomes: BTreeMap<usize, Outcome>,
    /// Gate results by good prefix and the workstreams merged on it,
    /// including those `--gate-jobs` gated ahead of the search.
    gated: HashMap<(Oid, Vec<String>), GateRun>,
}

/// A failed gate run: its id, what it covered, and why it failed.
#[derive(Clone)]
struct Failure {
    id: i64,
    covered: Vec<String>,
    reason: String,
}

/// Integrate every due workstream in batches of at most `size` (0: all).
pub(super) fn integrate(
    s: &mut Setup,
    session: &mut MergeSession,
    q: &mut Queue,
    size: usize,
    integrated: &mut BTreeSet<usize>,
) -> Result<Vec<Outcome>> {
    let ord = order(&s.plan, &s.ws_deps);
    let mut outcomes: BTreeMap<usize, Outcome> = BTreeMap::new();
    // Candidates, in integration order; a dependant may stack on a candidate
    // before it in the same batch.
    let mut due = integrated.clone();
    let mut cands = Vec::new();
    for &w in &ord {
        match candidate(s, q.rows, w, &due, q.history)? {
            Ok(head) => {
                due.insert(w);
                let message = merge_message(s, w, &q.rows[w], q.tasks);
                cands.push(Cand { w, head, message });
            }
            Err(skip) => {
                outcomes.insert(w, skip);
            }
        }
    }
    let size = if size == 0 { cands.len().max(1) } else { size };
    let mut out = BTreeSet::new();
    let mut batch = 0;
    let mut rest = cands.into_iter().peekable();
    while rest.peek().is_some() {
        batch += 1;
        let chunk: Vec<Cand> = rest.by_ref().take(size).collect();
        let mut search = Search {
            q: &mut *q,
            session,
            batch,
            cands: chunk,
            accepted: vec![],
            out: std::mem::take(&mut out),
            outcomes: BTreeMap::new(),
            gated: HashMap::new(),
        };
        let moved = search.run(s);
        out = std::mem::take(&mut search.out);
        let found = std::mem::take(&mut search.outcomes);
        outcomes.extend(found);
        for (w, o) in moved? {
            if o.state == WorkstreamState::Integrated {
                integrated.insert(w);
            }
            outcomes.insert(w, o);
        }
    }
    let pos: BTreeMap<usize, usize> = ord.iter().enumerate().map(|(i, &w)| (w, i)).collect();
    let mut v: Vec<(usize, Outcome)> = outcomes.into_iter().collect();
    v.sort_by_key(|(w, _)| pos[w]);
    Ok(v.into_iter().map(|(_, o)| o).collect())
}

impl Search<'_, '_> {
    /// Leave candidate `c` out of this batch with its result recorded; its
    /// dependants follow it out.
    fn take_out(
        &mut self,
        s: &mut Setup,
        c: usize,
        merged: Merged,
        covered: Vec<String>,
    ) -> Result<()> {
        let o = self.q.record(s, &self.cands[c], merged, covered)?;
        let w = self.cands[c].w;
        self.out.insert(w);
        self.outcomes.insert(w, o);
        Ok(())
    }

    /// Take out forecast conflicts, search the batch, move the target once.
    fn run(&mut self, s: &mut Setup) -> Result<Vec<(usize, Outcome)>> {
        let items = self.take_out_forecast_conflicts(s)?;
        for _ in 0..20 {
            if s.gate_rt.as_ref().is_some_and(|g| g.stopped()) {
                return Err(interrupted(s, "between two gate runs"));
            }
            let tip = git::branch_tip(&s.repo, &s.into)?.expect("target exists");
            let todo: Vec<usize> = match self.accepted.is_empty() {
                true => items.clone(),
                // The target moved under us: what passed is searched again on it.
                false => self.accepted.drain(..).map(|(c, _, _)| c).collect(),
            };
            let (top, _) = self.search(s, tip, todo, None)?;
            if top == tip {
                return self.integrated(s);
            }
            let last = &self.q.rows[self.cands[self.accepted.last().expect("moved").0].w];
            untracked_in_the_way(s, self.q.checkout, &last.id, tip, top)?;
            let names: Vec<&str> = self
                .accepted
                .iter()
                .map(|(c, _, _)| self.q.rows[self.cands[*c].w].id.as_str())
                .collect();
            match git::advance_branch(
                &s.repo,
                self.q.target_ref,
                tip,
                top,
                &format!("mpw integrate: batch {} ({})", self.batch, names.join(", ")),
                self.q.checkout.map(|co| co.path.as_path()),
            ) {
                Ok(()) => return self.integrated(s),
                Err(GitError::RefMoved { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let last = self.cands.last().expect("a batch has candidates").w;
        Err(RunError::TargetKeptMoving {
            into: s.into.clone(),
            ws: self.q.rows[last].id.clone(),
        })
    }

    /// Record the accepted workstreams as integrated into `top`.
    fn integrated(&mut self, s: &mut Setup) -> Result<Vec<(usize, Outcome)>> {
        let mut done = Vec::new();
        for (c, commit, detail) in std::mem::take(&mut self.accepted) {
            let cand = &self.cands[c];
            let merged: Merged = (WorkstreamState::Integrated, Some(commit), vec![], detail);
            let o = self.q.record(s, cand, merged, vec![])?;
            done.push((cand.w, o));
        }
        Ok(done)
    }

    /// The pairwise forecast: a candidate that conflicts with an earlier one
    /// still in the batch is taken out before any gate runs.
    fn take_out_forecast_conflicts(&mut self, s: &mut Setup) -> Result<Vec<usize>> {
        let heads: Vec<(String, Oid)> = self
            .cands
            .iter()
            .map(|c| (self.q.rows[c.w].id.clone(), c.head))
            .collect();
        let pairs = conflicting_pairs(&s.repo, self.session, &heads)?;
        let mut kept: Vec<usize> = Vec::new();
        let mut taken_out = Vec::new();
        for (i, c) in self.cands.iter().enumerate() {
            let id = &self.q.rows[c.w].id;
            let hit = pairs.iter().find(|p| {
                &p.b == id && kept.iter().any(|&k| self.q.rows[self.cands[k].w].id == p.a)
            });
            match hit {
                None => kept.push(i),
                Some(p) => taken_out.push((i, p.a.clone(), p.paths.clone())),
            }
        }
        let data = EventData::BatchStarted(BatchStarted {
            into: s.into.clone(),
            batch: self.batch,
            candidates: kept
                .iter()
                .map(|&k| self.q.rows[self.cands[k].w].id.clone())
                .collect(),
            taken_out: taken_out
                .iter()
                .map(|(i, _, _)| self.q.rows[self.cands[*i].w].id.clone())
                .collect(),
        });
        let ev = s.store.event(&s.run_id, None, None, None, data)?;
        self.q.listener.event(&ev);
        for (i, with, paths) in taken_out {
            let cand = &self.cands[i];
            let row = &self.q.rows[cand.w];
            let detail = format!(
                "taken out before gating: the pairwise forecast says it conflicts with {with} on {}; once {with} is in, fix it in {} (merge {} there, resolve, commit), then run mpw integrate again",
                paths.join(", "),
                row.worktree,
                s.into
            );
            let merged: Merged = (WorkstreamState::Conflict, None, paths, detail);
            self.take_out(s, i, merged, vec![])?;
        }
        Ok(kept)
    }

    /// Merge `items` one after another onto `base`, as one by one integration
    /// would: a conflict is recorded and left out, and so are the dependants
    /// of whatever was left out. The merged ones with their commits.
    fn build(
        &mut self,
        s: &mut Setup,
        base: Oid,
        items: Vec<usize>,
    ) -> Result<Vec<(usize, Oid, String)>> {
        let mut acc = base;
        let mut built = Vec::new();
        for c in items {
            let (w, head) = (self.cands[c].w, self.cands[c].head);
            let row = &self.q.rows[w];
            if let Some(&d) = s.ws_deps[w].iter().find(|d| self.out.contains(d)) {
                self.out.insert(w);
                self.outcomes.insert(
                    w,
                    Outcome {
                        workstream: row.id.clone(),
                        state: row.state,
                        commit: None,
                        conflicts: vec![],
                        detail: format!(
                            "not merged: it stacks on {}, which is not integrated",
                            self.q.rows[d].id
                        ),
                    },
                );
                continue;
            }
            if git::is_ancestor(&s.repo, head, acc)? {
                built.push((c, acc, format!("already contained in {}", s.into)));
                continue;
            }
            let m = self.session.merge(acc, head, &s.into, &row.branch)?;
            if !m.is_clean() {
                let detail = conflict_detail(s, row, &m.conflicts);
                let merged: Merged = (WorkstreamState::Conflict, None, m.conflicts, detail);
                self.take_out(s, c, merged, vec![])?;
                continue;
            }
            let parents: Vec<Oid> = match self.q.opts.strategy {
                Strategy::Merge => vec![acc, head],
                Strategy::Squash => vec![acc],
            };
            acc = self
                .session
                .commit(m.tree, &parents, &self.cands[c].message)?;
            // The ancestry check above reads from disk.
            self.session.persist()?;
            built.push((c, acc, format!("merged into {}", s.into)));
        }
        Ok(built)
    }

    /// Gate the stack `built` on `base`. With `--gate-jobs` K, the prefixes
    /// the bisection gates next should it fail (the first half's top, its
    /// first half's, ...) are gated at the same time, up to K runs and the
    /// run's cpu slots, and their results kept for the search.
    fn gate(
        &mut self,
        s: &mut Setup,
        base: Oid,
        built: &[(usize, Oid, String)],
        names: &[String],
    ) -> Result<GateRun> {
        let key = (base, names.to_vec());
        if let Some(g) = self.gated.get(&key) {
            return Ok(g.clone());
        }
        let jobs = self.q.gate().jobs.min(s.cpu_slots).max(1);
        let mut lens = vec![built.len()];
        let mut n = built.len();
        while lens.len() < jobs && n > 1 {
            n = n.div_ceil(2);
            if !self.gated.contains_key(&(base, names[..n].to_vec())) {
                lens.push(n);
            }
        }
        let next = s.store.last_gate_run()? + 1;
        let todo: Vec<GateJob> = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| GateJob {
                key: format!("batch{}-{}", self.batch, next + i as i64),
                covered: names[..l].to_vec(),
                commit: built[l - 1].1,
            })
            .collect();
        let runs = run_gates(s, self.q.opts, todo, Some(self.batch), self.q.listener)?;
        for (l, g) in lens.into_iter().zip(runs) {
            self.gated.insert((base, names[..l].to_vec()), g);
        }
        Ok(self.gated[&key].clone())
    }

    /// Find the good ones among `items` on the good prefix `base`; `failed`
    /// when their stack is known to fail. Returns the new good prefix and
    /// whether every item was good (then the prefix is their stack's top).
    fn search(
        &mut self,
        s: &mut Setup,
        base: Oid,
        items: Vec<usize>,
        failed: Option<Failure>,
    ) -> Result<(Oid, bool)> {
        let built = self.build(s, base, items)?;
        let Some(&(_, top, _)) = built.last() else {
            return Ok((base, true));
        };
        let names: Vec<String> = built
            .iter()
            .map(|(c, _, _)| self.q.rows[self.cands[*c].w].id.clone())
            .collect();
        let failure = match failed {
            Some(f) => f,
            None if top == base => {
                // Nothing new to gate: every item was already contained.
                self.accepted.extend(built);
                return Ok((top, true));
            }
            None => {
                let g = self.gate(s, base, &built, &names)?;
                match g.failure {
                    None => {
                        self.accepted.extend(built);
                        return Ok((top, true));
                    }
                    Some(reason) => Failure {
                        id: g.id,
                        covered: names.clone(),
                        reason,
                    },
                }
            }
        };
        if built.len() == 1 {
            // A single merge on a good prefix fails: the culprit.
            let (c, _, _) = built[0];
            let detail = if failure.covered.len() > 1 {
                format!(
                    "{} (isolated by gate run {} over {})",
                    failure.reason,
                    failure.id,
                    failure.covered.join(", ")
                )
            } else {
                failure.reason.clone()
            };
            let merged: Merged = (WorkstreamState::GateFailed, None, vec![], detail);
            self.take_out(s, c, merged, failure.covered.clone())?;
            return Ok((base, false));
        }
        let half = built.len().div_ceil(2);
        let first: Vec<usize> = built[..half].iter().map(|(c, _, _)| *c).collect();
        let rest: Vec<usize> = built[half..].iter().map(|(c, _, _)| *c).collect();
        let data = EventData::BisectSplit(BisectSplit {
            gate_run: failure.id,
            first: names[..half].to_vec(),
            rest: names[half..].to_vec(),
        });
        let ev = s.store.event(&s.run_id, None, None, None, data)?;
        self.q.listener.event(&ev);
        let (good, all) = self.search(s, base, first, None)?;
        // The first half all passed: the rest, merged onto it as before, is
        // what failed.
        let known = all.then_some(failure);
        let (good, _) = self.search(s, good, rest, known)?;
        Ok((good, false))
    }
}
