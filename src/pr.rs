//! `mpw pr`: a pull request per workstream, ready to open: title, body
//! (tasks, diffstat, commits, integration), the exact `gh` line; optionally
//! push the branch and open the PR.

use crate::git::{self, Oid};
use crate::model::{TaskState, WorkstreamState};
use crate::plan::Plan;
use crate::report::human_ms;
use crate::runner::{RunError, open_repo};
use crate::store::{Store, WsStatus};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T, E = RunError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub run: Option<String>,
    pub workstreams: Vec<String>,
    pub push: Option<String>,
    pub create: bool,
    pub out: Option<PathBuf>,
}

/// One pull request, as `mpw pr --json` lists it.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Draft {
    pub workstream: String,
    pub title: String,
    /// Branch the PR merges into: the run's base branch, or for a stacked
    /// workstream the branch it stacks on.
    pub base: String,
    pub head: String,
    /// The PR body, written to a file.
    pub body_file: PathBuf,
    /// The `gh pr create` arguments that open it.
    pub gh: Vec<String>,
    /// `--push`: the branch was pushed.
    pub pushed: bool,
    /// `--create`: the new PR's address.
    pub created: Option<String>,
}

impl Draft {
    /// The `gh pr create ...` line, quoted for a POSIX shell.
    pub fn gh_line(&self) -> String {
        self.gh
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub fn prepare(repo: Option<&Path>, opts: &Options) -> Result<Vec<Draft>> {
    let rc = open_repo(repo)?;
    let store = Store::open_existing(rc.layout.clone())?;
    let run = store.run_or_latest(opts.run.as_deref())?;
    // The repository as found now (it may have moved since the run).
    let main = rc.info.main_workdir.clone();
    let loaded = crate::runner::stored_plan(&store.layout, &run.id)?;
    let status = store.run_status(&run.id)?;
    for name in &opts.workstreams {
        if !status.workstreams.iter().any(|w| &w.id == name) {
            return Err(RunError::NoSuchWorkstreamInRun {
                name: name.clone(),
                run: run.id.clone(),
            });
        }
    }
    let selected: Vec<usize> = status
        .workstreams
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            if opts.workstreams.is_empty() {
                w.state == WorkstreamState::Integrated || w.state.is_mergeable()
            } else {
                opts.workstreams.contains(&w.id)
            }
        })
        .map(|(i, _)| i)
        .collect();
    if selected.is_empty() {
        return Err(RunError::NothingToPropose {
            run: run.id.clone(),
        });
    }
    let out_dir = opts
        .out
        .clone()
        .unwrap_or_else(|| store.layout.run_dir(&run.id).join("pr"));
    std::fs::create_dir_all(&out_dir).map_err(RunError::io(&out_dir))?;
    let run_base = run.base_ref.clone().unwrap_or_else(|| "main".into());
    let mut drafts = Vec::new();
    for i in selected {
        let ws = &status.workstreams[i];
        let Some(head) = git::branch_tip(&main, &ws.branch)? else {
            return Err(RunError::BadWorkstream {
                ws: ws.id.clone(),
                problem: format!(
                    "branch {} does not exist (never started, or cleaned)",
                    ws.branch
                ),
            });
        };
        let stacked_on: Option<&WsStatus> = loaded.dag.ws_deps[i]
            .first()
            .map(|&d| &status.workstreams[d]);
        let base_branch = stacked_on
            .map(|d| d.branch.clone())
            .unwrap_or_else(|| run_base.clone());
        let from: Oid = match stacked_on.and_then(|d| d.head.as_deref()) {
            Some(h) => h.parse().unwrap_or(head),
            None => match ws.base.as_deref().and_then(|b| b.parse().ok()) {
                Some(b) => b,
                None => run.base.parse().map_err(|_| RunError::BadRecord {
                    run: run.id.clone(),
                    problem: format!("bad base commit {}", run.base),
                })?,
            },
        };
        let wsp = &loaded.plan.workstreams[i];
        let title = wsp
            .name
            .clone()
            .unwrap_or_else(|| format!("{}: changes from run {}", ws.id, run.id));
        let body = body(
            &loaded.plan,
            i,
            ws,
            &status.run_id,
            &main,
            from,
            head,
            stacked_on,
            &store,
        )?;
        let body_file = out_dir.join(format!("{}.md", ws.id));
        std::fs::write(&body_file, body)
            .map_err(|e| RunError::Env(format!("{}: {e}", body_file.display())))?;
        let gh = vec![
            "gh".into(),
            "pr".into(),
            "create".into(),
            "--base".into(),
            base_branch.clone(),
            "--head".into(),
            ws.branch.clone(),
            "--title".into(),
            title.clone(),
            "--body-file".into(),
            body_file.to_string_lossy().into_owned(),
        ];
        drafts.push(Draft {
            workstream: ws.id.clone(),
            title,
            base: base_branch,
            head: ws.branch.clone(),
            body_file,
            gh,
            pushed: false,
            created: None,
        });
    }
    // Before pushing anything: without gh, nothing is half done.
    if opts.create && !gh_available() {
        let lines: String = drafts
            .iter()
            .map(|d| format!("\n  {}", d.gh_line()))
            .collect();
        return Err(RunError::Env(format!(
            "`gh` (the GitHub CLI) is not installed or not on PATH; install it, or open the PRs yourself (the bodies are written):{lines}"
        )));
    }
    if let Some(remote) = &opts.push {
        for d in &mut drafts {
            push(&main, remote, &d.head)?;
            d.pushed = true;
        }
    }
    if opts.create {
        for d in &mut drafts {
            let out = Command::new(&d.gh[0])
                .args(&d.gh[1..])
                .current_dir(&main)
                .output()
                .map_err(|e| RunError::Env(format!("running gh: {e}")))?;
            if !out.status.success() {
                return Err(RunError::Env(format!(
                    "gh pr create for {} failed: {}",
                    d.workstream,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            d.created = Some(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
    }
    Ok(drafts)
}

pub fn gh_available() -> bool {
    Command::new("gh")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Push a branch with upstream set. gix cannot push yet, so this is the one
/// place mpw runs the git binary.
fn push(repo: &Path, remote: &str, branch: &str) -> Result<()> {
    let out = Command::new("git")
        .args([
            "push",
            "--set-upstream",
            remote,
            &format!("refs/heads/{branch}:refs/heads/{branch}"),
        ])
        .current_dir(repo)
        .output()
        .map_err(|e| RunError::Env(format!("running git push: {e}")))?;
    if !out.status.success() {
        return Err(RunError::Env(format!(
            "git push {remote} {branch} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn body(
    plan: &Plan,
    i: usize,
    ws: &WsStatus,
    run_id: &str,
    repo: &Path,
    from: Oid,
    head: Oid,
    stacked_on: Option<&WsStatus>,
    store: &Store,
) -> Result<String> {
    let wsp = &plan.workstreams[i];
    let mut b = String::new();
    if let Some(d) = &wsp.description {
        let _ = writeln!(b, "{d}\n");
    }
    if let Some(d) = &plan.description {
        let _ = writeln!(
            b,
            "Part of **{}**: {d}\n",
            plan.name.as_deref().unwrap_or("the plan")
        );
    } else if let Some(n) = &plan.name {
        let _ = writeln!(b, "Part of **{n}**.\n");
    }
    let _ = writeln!(
        b,
        "Workstream `{}` of mpw run `{run_id}`, branch `{}`, state **{}**.\n",
        ws.id, ws.branch, ws.state
    );
    if let Some(s) = stacked_on {
        let _ = writeln!(
            b,
            "Stacked on `{}` (workstream {}): this PR's base is that branch; merge it first.\n",
            s.branch, s.id
        );
    }
    let _ = writeln!(
        b,
        "## Tasks\n\n| Task | State | Attempts | Duration | Commit |\n| --- | --- | --- | --- | --- |"
    );
    for t in &ws.tasks {
        let name = t
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let mut state = t.state.to_string();
        if matches!(
            t.state,
            TaskState::Failed | TaskState::Quarantined | TaskState::Skipped | TaskState::Cancelled
        ) && let Some(r) = &t.reason
        {
            let _ = write!(state, ": {}", r.replace('|', "\\|"));
        }
        let _ = writeln!(
            b,
            "| `{}`{name} | {state} | {} | {} | {} |",
            t.id,
            t.attempts,
            t.duration_ms.map(human_ms).unwrap_or_else(|| "-".into()),
            t.commit
                .as_deref()
                .map(|c| format!("`{}`", &c[..c.len().min(10)]))
                .unwrap_or_else(|| "-".into())
        );
    }
    let kept: Vec<String> = ws
        .tasks
        .iter()
        .filter_map(|t| {
            t.preserved_ref
                .as_ref()
                .map(|r| format!("- `{}`: `{r}`", t.id))
        })
        .collect();
    if !kept.is_empty() {
        let _ = writeln!(
            b,
            "\nWork of tasks that did not succeed is kept, not in this PR:\n{}",
            kept.join("\n")
        );
    }
    let stat = git::diffstat(repo, from, head)?;
    let _ = writeln!(
        b,
        "\n## Changes\n\n{} file(s) changed, +{} -{}\n",
        stat.files.len(),
        stat.added,
        stat.removed
    );
    if !stat.files.is_empty() {
        let _ = writeln!(b, "| File | + | - |\n| --- | ---: | ---: |");
        for f in stat.files.iter().take(200) {
            if f.binary {
                let _ = writeln!(b, "| `{}` | bin | bin |", f.path);
            } else {
                let _ = writeln!(b, "| `{}` | {} | {} |", f.path, f.added, f.removed);
            }
        }
        if stat.files.len() > 200 {
            let _ = writeln!(b, "| ... and {} more | | |", stat.files.len() - 200);
        }
    }
    let commits = git::log_range(repo, from, head)?;
    let _ = writeln!(b, "\n## Commits\n");
    for c in &commits {
        let _ = writeln!(b, "- `{}` {}", &c.id.to_string()[..10], c.summary);
    }
    let integ: Vec<_> = store
        .integrations(run_id)?
        .into_iter()
        .filter(|r| r.ws == ws.id)
        .collect();
    if !integ.is_empty() {
        let _ = writeln!(b, "\n## Integration\n");
        for r in integ {
            let _ = writeln!(
                b,
                "- {} into `{}` at {}{}: {}",
                r.state,
                r.into_branch,
                r.at,
                r.commit
                    .as_deref()
                    .map(|c| format!(" (`{}`)", &c[..10]))
                    .unwrap_or_default(),
                r.reason.unwrap_or_default()
            );
        }
    }
    if let Some(m) = &wsp.metadata {
        let _ = writeln!(
            b,
            "\n## Metadata\n\n```json\n{}\n```",
            serde_json::to_string_pretty(m).unwrap()
        );
    }
    let _ = writeln!(b, "\n---\nPrepared by mpw from run `{run_id}`.");
    Ok(b)
}
