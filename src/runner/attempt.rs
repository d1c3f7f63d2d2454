//! One attempt of one task: run it, judge it, and put its work where it
//! belongs (a commit on the branch, a preserved ref, or discarded for a retry).

use super::ctx::{AttemptResult, RunCtx, Settled, Work};
use super::workers::{Pools, request_env};
use crate::exec::{self, Cancel, ProcInfo, Program, Request, Spec, Verdict};
use crate::git::{self, CommitTarget, Excluded, Oid};
use std::sync::Arc;
use tokio::sync::watch;

/// The commit message of a task's snapshot, with the trailers that let
/// `resume` recognise it.
pub(crate) fn commit_message(ctx: &RunCtx, i: usize, attempt: u32) -> String {
    let t = &ctx.tasks[i];
    let ws = &ctx.ws[t.ws].id;
    format!(
        "{}\n\nMpw-Run: {}\nMpw-Task: {ws}/{}\nMpw-Attempt: {attempt}\n",
        t.message.trim_end(),
        ctx.run_id,
        t.id
    )
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_attempt(
    ctx: Arc<RunCtx>,
    pools: Arc<Pools>,
    i: usize,
    attempt: u32,
    start: Oid,
    excluded: Arc<Excluded>,
    will_retry: bool,
    cancel: watch::Receiver<Cancel>,
    on_start: impl FnOnce(ProcInfo),
) -> AttemptResult {
    let t = &ctx.tasks[i];
    let ws = &ctx.ws[t.ws];
    let mut env = t.env.clone();
    env.extend(ws.mpw_env(&ctx.run_id, &t.id, attempt));
    let spec = Spec {
        program: match &t.work {
            Work::Process(p) => p.clone(),
            Work::Worker { args, .. } => Program::Argv(args.clone()),
        },
        cwd: match &t.cwd {
            Some(c) => ws.worktree.join(c),
            None => ws.worktree.clone(),
        },
        env,
        timeout: Some(t.timeout),
        grace: ctx.grace,
        stdout: ctx.layout.log(&ctx.run_id, &ws.id, &t.id, attempt, false),
        stderr: ctx.layout.log(&ctx.run_id, &ws.id, &t.id, attempt, true),
        guards: t.guards.clone(),
    };
    // A process or a worker's request: the same files, rules and judging after.
    let outcome = match &t.work {
        Work::Process(_) => {
            let js = ctx.jobserver.as_ref().filter(|_| t.jobserver);
            exec::run_with(&spec, js, cancel, on_start).await
        }
        Work::Worker { pool, args } => {
            let req = Request {
                arguments: args.clone(),
                mpw: serde_json::json!({
                    "env": request_env(&spec.env),
                    "run": ctx.run_id,
                    "workstream": ws.id,
                    "task": t.id,
                    "attempt": attempt,
                }),
            };
            pools.run(*pool, t.ws, &req, &spec, cancel, on_start).await
        }
    };
    let verdict = outcome.verdict();
    let exit_code = outcome.exit_code;
    let duration = outcome.duration;
    let c2 = ctx.clone();
    let settled = tokio::task::spawn_blocking(move || {
        settle(&c2, i, attempt, start, &excluded, verdict, will_retry)
    })
    .await
    .unwrap_or_else(|e| {
        Settled::only(Verdict::Failed(format!(
            "recording the task's work panicked: {e}"
        )))
    });
    AttemptResult {
        settled,
        exit_code,
        duration,
    }
}

/// Check the worktree against the task's rules and put its changes away.
/// Returns the final verdict, the commit on the branch, the preserved ref.
/// `mpw cancel` of a crashed run keeps a running attempt's work through here too.
pub(super) fn settle(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    start: Oid,
    excluded: &Excluded,
    verdict: Verdict,
    will_retry: bool,
) -> Settled {
    match settle_inner(ctx, i, attempt, start, excluded, verdict, will_retry) {
        Ok(r) => r,
        Err(e) => Settled::only(Verdict::Failed(format!(
            "could not record the task's changes: {e}"
        ))),
    }
}

fn settle_inner(
    ctx: &RunCtx,
    i: usize,
    attempt: u32,
    start: Oid,
    excluded: &Excluded,
    mut verdict: Verdict,
    will_retry: bool,
) -> std::result::Result<Settled, git::GitError> {
    let t = &ctx.tasks[i];
    let ws = &ctx.ws[t.ws];
    let repo = ws.repo()?;
    // One status read serves the checks and the commit.
    let changes = repo.changes(excluded)?;
    if verdict == Verdict::Succeeded {
        if t.read_only && !changes.is_empty() {
            verdict = Verdict::Quarantined(format!(
                "read-only task changed {} path(s): {}",
                changes.len(),
                list(changes.iter().map(|c| c.path.as_str()))
            ));
        } else if let Some(allowed) = &ws.allowed {
            let outside: Vec<&str> = changes
                .iter()
                .map(|c| c.path.as_str())
                .filter(|p| !allowed.is_match(p))
                .collect();
            if !outside.is_empty() {
                verdict = Verdict::Quarantined(format!(
                    "changed path(s) outside allowed_paths: {}",
                    list(outside.into_iter())
                ));
            }
        }
    }
    let message = commit_message(ctx, i, attempt);
    let preserve = |kind: &str| -> std::result::Result<Option<String>, git::GitError> {
        let name = format!("refs/mpw/{}/{kind}/{}/{}", ctx.run_id, ws.id, t.id);
        let kept = repo.commit_changes(&changes, &message, CommitTarget::Ref(&name))?;
        if !changes.is_empty() {
            repo.reset_worktree(start, excluded)?;
        }
        Ok(kept.map(|_| name))
    };
    Ok(match &verdict {
        Verdict::Succeeded => {
            let c = repo.commit_changes(&changes, &message, CommitTarget::Head)?;
            crate::fault::kill_point(format_args!("kill-after-commit:{}/{}", ws.id, t.id));
            let hint = c.and_then(|_| generated_output_hint(&changes));
            Settled {
                commit: c,
                hint,
                ..Settled::only(verdict)
            }
        }
        Verdict::Failed(_) if will_retry => {
            if !changes.is_empty() {
                repo.reset_worktree(start, excluded)?;
            }
            Settled::only(verdict)
        }
        Verdict::Failed(_) => {
            let r = preserve("failed")?;
            Settled {
                preserved_ref: r,
                ..Settled::only(verdict)
            }
        }
        Verdict::Quarantined(_) => {
            let r = preserve("quarantine")?;
            Settled {
                preserved_ref: r,
                ..Settled::only(verdict)
            }
        }
        Verdict::Cancelled => {
            let r = preserve("cancelled")?;
            Settled {
                preserved_ref: r,
                ..Settled::only(verdict)
            }
        }
    })
}

/// At most ten paths, then a count.
fn list<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<&str> = paths.collect();
    let mut s = all.iter().take(10).copied().collect::<Vec<_>>().join(", ");
    if all.len() > 10 {
        s.push_str(&format!(" and {} more", all.len() - 10));
    }
    s
}

/// Folders and file endings of well-known build or cache output.
const GENERATED_DIRS: &[&str] = &[
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".tox",
    ".venv",
    "node_modules",
    ".cache",
    ".gradle",
    ".next",
    "target",
    "build",
    "dist",
    ".nyc_output",
    "coverage",
];
const GENERATED_EXTS: &[&str] = &[
    "pyc", "pyo", "o", "obj", "class", "so", "dll", "dylib", "exe", "log",
];

/// "committed 14 files under __pycache__/: add them to globals.ignore?"
/// when committed paths (not deletions) look like build or cache output.
pub(crate) fn generated_output_hint(changes: &[git::Change]) -> Option<String> {
    use std::collections::BTreeMap;
    let mut dirs: BTreeMap<&str, usize> = BTreeMap::new();
    let mut exts: BTreeMap<&str, usize> = BTreeMap::new();
    for c in changes
        .iter()
        .filter(|c| c.kind != git::ChangeKind::Deleted)
    {
        let mut parts: Vec<&str> = c.path.split('/').collect();
        let file = parts.pop().unwrap_or_default();
        if let Some(d) = parts.iter().find(|p| GENERATED_DIRS.contains(p)) {
            *dirs.entry(d).or_default() += 1;
        } else if let Some((_, ext)) = file.rsplit_once('.')
            && let Some(e) = GENERATED_EXTS.iter().find(|e| **e == ext)
        {
            *exts.entry(e).or_default() += 1;
        }
    }
    let files = |n: usize| if n == 1 { "file" } else { "files" };
    let mut what: Vec<String> = dirs
        .iter()
        .map(|(d, n)| format!("{n} {} under {d}/", files(*n)))
        .collect();
    what.extend(exts.iter().map(|(e, n)| format!("{n} *.{e} {}", files(*n))));
    if what.is_empty() {
        return None;
    }
    Some(format!(
        "committed {}: add them to globals.ignore?",
        what.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::{Change, ChangeKind};

    fn added(paths: &[&str]) -> Vec<Change> {
        paths
            .iter()
            .map(|p| Change {
                path: p.to_string(),
                kind: ChangeKind::Added,
            })
            .collect()
    }

    #[test]
    fn generated_output_is_named_by_folder_or_ending() {
        let hint = generated_output_hint(&added(&[
            "toolz/__pycache__/a.pyc",
            "toolz/__pycache__/b.pyc",
            "toolz/core.py",
            "out.log",
        ]))
        .unwrap();
        assert_eq!(
            hint,
            "committed 2 files under __pycache__/, 1 *.log file: add them to globals.ignore?"
        );
        assert_eq!(
            generated_output_hint(&added(&["src/lib.rs", "README.md"])),
            None
        );
    }
}
