//! A workstream's branch and worktree: created (or found again on resume),
//! `copy` files brought in, `setup` commands run, the baseline recorded.

use super::ctx::{Provisioned, RunCtx};
use crate::exec::{self, Cancel, Program, Spec, Verdict};
use crate::git::{self, Excluded, MergeSession, Oid};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;

/// Make the workstream ready for its tasks. `from`: heads of the workstreams
/// it depends on; `known`: the baseline recorded by an earlier invocation.
pub(crate) async fn provision(
    ctx: Arc<RunCtx>,
    w: usize,
    from: Vec<Oid>,
    known: Option<Arc<Excluded>>,
    cancel: watch::Receiver<Cancel>,
) -> std::result::Result<Provisioned, String> {
    let c2 = ctx.clone();
    let prepared =
        tokio::task::spawn_blocking(move || prepare_worktree(&c2, w, &from, known.as_deref()))
            .await
            .map_err(|e| format!("provisioning panicked: {e}"))??;
    let ws = &ctx.ws[w];
    let (fresh, start) = match prepared {
        Prep::Ready(p) => return Ok(p),
        Prep::NeedsSetup { fresh, start } => (fresh, start),
    };
    let setup = &ws.setup;
    let mut copy = setup.copy.clone();
    copy.extend(crate::worktree_include::paths_to_copy(&ctx.repo).map_err(|e| e.to_string())?);
    // A large copy must not hold up the runtime that times other tasks out.
    let (repo, wt, list) = (ctx.repo.clone(), ws.worktree.clone(), copy.clone());
    let missing = tokio::task::spawn_blocking(move || copy_files(&repo, &wt, &list))
        .await
        .map_err(|e| format!("copying files panicked: {e}"))??;
    for (n, cmd) in setup.commands.iter().enumerate() {
        let layout = &ctx.layout;
        let task = format!("_setup{}", n + 1);
        let mut env = setup.env.clone();
        env.extend(ws.mpw_env(&ctx.run_id, &task, 1));
        let spec = Spec {
            program: Program::Shell {
                shell: setup.shell,
                script: cmd.clone(),
            },
            cwd: ws.worktree.clone(),
            env,
            timeout: Some(setup.timeout),
            grace: ctx.grace,
            stdout: layout.log(&ctx.run_id, &ws.id, &task, 1, false),
            stderr: layout.log(&ctx.run_id, &ws.id, &task, 1, true),
            guards: Default::default(),
        };
        let out = exec::run(&spec, cancel.clone(), |_| {}).await;
        match out.verdict() {
            Verdict::Succeeded => {}
            Verdict::Cancelled => return Err("cancelled during setup".into()),
            Verdict::Failed(r) | Verdict::Quarantined(r) => {
                return Err(format!(
                    "setup command `{cmd}` failed: {r} (see `mpw logs {} {}/{task}`)",
                    ctx.run_id, ws.id
                ));
            }
        }
    }
    let wt = ws.worktree.clone();
    // Nothing copied, nothing set up: the baseline is empty, no need to look.
    let baseline = if copy.is_empty() && setup.commands.is_empty() {
        Vec::new()
    } else {
        tokio::task::spawn_blocking(move || git::changes(&wt, &Excluded::default()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading the worktree after setup: {e}"))?
            .into_iter()
            .map(|c| c.path)
            .collect()
    };
    // Only a setup command can have moved HEAD from where the worktree started.
    let head = if ws.setup.commands.is_empty() {
        start
    } else {
        git::head_of(&ws.worktree).map_err(|e| e.to_string())?
    };
    Ok(Provisioned {
        start_commit: head,
        baseline,
        missing_copies: missing,
        created: true,
        fresh,
    })
}

enum Prep {
    Ready(Provisioned),
    NeedsSetup { fresh: bool, start: Oid },
}

/// Branch and worktree. `Ready` when an earlier invocation already finished
/// provisioning (resume): the worktree is only reset to the branch.
fn prepare_worktree(
    ctx: &RunCtx,
    w: usize,
    from: &[Oid],
    known: Option<&Excluded>,
) -> std::result::Result<Prep, String> {
    let ws = &ctx.ws[w];
    let repo = &ctx.repo;
    let e = |what: &str| {
        let what = what.to_string();
        move |err: git::GitError| format!("{what}: {err}")
    };
    let worktrees = ctx.worktrees().map_err(e("opening the repository"))?;
    let tip = worktrees
        .branch_tip(&ws.branch)
        .map_err(e("reading the branch"))?;
    let fresh = tip.is_none();
    let start = match tip {
        Some(t) => t,
        None => {
            let start = start_commit(ctx, w, from)?;
            worktrees
                .create_branch(&ws.branch, start)
                .map_err(e("creating the branch"))?;
            start
        }
    };
    // A branch made just now has no worktree yet: only a resumed run needs to look.
    let registered = if fresh {
        None
    } else {
        git::list_worktrees(repo)
            .map_err(e("listing worktrees"))?
            .into_iter()
            .find(|t| same_path(&t.path, &ws.worktree))
    };
    if let Some(t) = &registered {
        if !t.unfinished && t.branch.as_deref() != Some(ws.branch.as_str()) {
            return Err(format!(
                "{} is a worktree of branch {}, not {}",
                ws.worktree.display(),
                t.branch.as_deref().unwrap_or("(detached)"),
                ws.branch
            ));
        }
        if ws.worktree.exists()
            && !t.unfinished
            && let Some(excluded) = known
        {
            // Resume: set up before; drop whatever an interrupted attempt left.
            git::reset_worktree(&ws.worktree, start, excluded)
                .map_err(e("resetting the worktree"))?;
            return Ok(Prep::Ready(Provisioned {
                start_commit: start,
                baseline: excluded.paths.iter().cloned().collect(),
                missing_copies: Vec::new(),
                created: false,
                fresh: false,
            }));
        }
        git::remove_run_worktree(repo, &ws.worktree)
            .map_err(e("removing an unfinished worktree"))?;
    } else if ws.worktree.exists() {
        // An empty directory holds no one's work (a creation cut short leaves one).
        let empty = std::fs::read_dir(&ws.worktree).is_ok_and(|mut d| d.next().is_none());
        if !empty || std::fs::remove_dir(&ws.worktree).is_err() {
            return Err(format!(
                "worktree path {} already exists and is not mpw's; move it away",
                ws.worktree.display()
            ));
        }
    }
    let opened = worktrees
        .add_worktree(&ws.worktree, &ws.branch)
        .map_err(e("adding the worktree"))?;
    ws.keep_repo(opened);
    Ok(Prep::NeedsSetup { fresh, start })
}

fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    a == b || canon(a) == canon(b)
}

/// Where a workstream starts: the run's base, the head of the one workstream
/// it depends on, or those heads merged in memory.
fn start_commit(ctx: &RunCtx, w: usize, from: &[Oid]) -> std::result::Result<Oid, String> {
    match from {
        [] => Ok(ctx.base),
        [one] => Ok(*one),
        heads => {
            let mut s = MergeSession::open(&ctx.repo).map_err(|e| e.to_string())?;
            let msg = format!(
                "Merge dependencies of workstream {}\n\nMpw-Run: {}\n",
                ctx.ws[w].id, ctx.run_id
            );
            match s.merge_heads(heads, &msg).map_err(|e| e.to_string())? {
                Ok(acc) => {
                    s.persist().map_err(|e| e.to_string())?;
                    Ok(acc)
                }
                Err(conflicts) => Err(format!(
                    "the workstreams it depends on conflict with each other on {}",
                    conflicts.join(", ")
                )),
            }
        }
    }
}

/// Copy untracked files (or folders) from the main worktree; missing ones
/// are reported, not fatal (a `.env` that only some machines have).
fn copy_files(
    main: &Path,
    wt: &Path,
    entries: &[String],
) -> std::result::Result<Vec<String>, String> {
    let mut missing = Vec::new();
    for entry in entries {
        let src = main.join(entry);
        let dst = wt.join(entry);
        if !src.exists() {
            missing.push(entry.clone());
            continue;
        }
        copy_recursive(&src, &dst).map_err(|e| format!("copying {entry}: {e}"))?;
    }
    Ok(missing)
}

fn copy_recursive(src: &Path, dst: &Path) -> std::io::Result<()> {
    if src.is_dir() {
        std::fs::create_dir_all(dst)?;
        for e in std::fs::read_dir(src)? {
            let e = e?;
            copy_recursive(&e.path(), &dst.join(e.file_name()))?;
        }
        Ok(())
    } else {
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(src, dst).map(|_| ())
    }
}
