//! `mpw integrate --dry-run`: every candidate merged in memory, alone onto
//! the target, pairwise, and in integration order; nothing moves. The
//! pairwise matrix also feeds `--batch`.

use super::{Outcome, Result, order, setup, target_tip};
use crate::git::{self, MergeSession, Oid};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The conflict forecast of `--dry-run`. The MCP server advertises this
/// type's schema.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Forecast {
    pub run_id: String,
    pub into: String,
    /// The target's commit.
    pub target: String,
    /// Each candidate merged alone onto the target: its conflicting paths.
    pub against_target: BTreeMap<String, Vec<String>>,
    /// Pairs of candidates whose branches conflict with each other.
    pub pairs: Vec<PairConflict>,
    /// Candidates merged one after another in integration order.
    pub sequence: Vec<Outcome<WouldMerge>>,
}

impl Forecast {
    /// A merge would conflict: `--dry-run` exits 1, as `git merge-tree` does.
    pub fn conflicts(&self) -> bool {
        self.against_target.values().any(|c| !c.is_empty())
            || self
                .sequence
                .iter()
                .any(|o| o.state == WouldMerge::Conflict)
    }
}

/// What a forecast says of one candidate merged onto the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WouldMerge {
    Clean,
    Conflict,
}

#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct PairConflict {
    pub a: String,
    pub b: String,
    pub paths: Vec<String>,
}

/// The pairs of branches that conflict with each other (a stacked pair
/// never does: one contains the other).
pub(super) fn conflicting_pairs(
    repo: &Path,
    session: &mut MergeSession,
    heads: &[(String, Oid)],
) -> Result<Vec<PairConflict>> {
    let mut pairs = Vec::new();
    for (i, (a, ha)) in heads.iter().enumerate() {
        for (b, hb) in &heads[i + 1..] {
            if git::is_ancestor(repo, *ha, *hb)? || git::is_ancestor(repo, *hb, *ha)? {
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
    Ok(pairs)
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
    let pairs = conflicting_pairs(&s.repo, &mut session, &heads)?;
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
