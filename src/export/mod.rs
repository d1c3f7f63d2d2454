//! `mpw export`: a plan as a GitHub Actions workflow or an Argo Workflow,
//! one job per workstream, each running `mpw run --workstream` on its own
//! runner. The records come back with `mpw import` (see docs/ARCHITECTURE.md,
//! "Scaling out").

mod argo;
mod github;

use crate::error::LayerError;
use crate::git::{self, GitError};
use crate::plan::{self, LoadOptions, Loaded};
use std::collections::BTreeSet;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    /// The plan or the options cannot be expressed on the target; nothing written.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Env(String),
}

crate::error::from_layers!(ExportError);

type Result<T, E = ExportError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    GithubActions,
    Argo,
}

/// What `mpw export` was asked to do.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub plan: PathBuf,
    pub repo: Option<PathBuf>,
    pub target: Target,
    /// Fixed run id; without it every workflow run gets its own.
    pub run_id: Option<String>,
    /// How a runner gets mpw.
    pub install: String,
    pub integrate_into: Option<String>,
    pub gate: Option<String>,
    /// How the plan is read.
    pub load: LoadOptions,
    pub argo: ArgoOptions,
}

/// What only an Argo Workflow needs (`mpw export --to argo`); also the
/// command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ArgoOptions {
    /// Argo: the container image of every step (needs git and bash).
    #[arg(long, value_name = "IMAGE", default_value = "rust:1")]
    pub image: String,
    /// Argo: the Kubernetes secret with keys `username` and `password` for git.
    #[arg(long, value_name = "NAME", default_value = "mpw-git")]
    pub git_secret: String,
    /// Argo: the repository URL pods clone (default: the `origin` remote's).
    #[arg(long, value_name = "URL")]
    pub repo_url: Option<String>,
}

pub const DEFAULT_INSTALL: &str = "cargo install --locked mpw";

/// One workstream as a job of the exported graph.
pub(crate) struct Job {
    pub ws: String,
    pub name: Option<String>,
    /// Job (or task) id on the target, unique there.
    pub key: String,
    /// `refs/heads/<its branch>`, as a word for a POSIX shell (`$MPW_RUN_ID` expanded there).
    pub ref_sh: String,
    /// Workstreams this job waits for (workstream dependencies and
    /// cross-workstream task dependencies, collapsed), as job indices.
    pub needs: Vec<usize>,
    /// Every workstream upstream of it, transitively: their records are its input.
    pub upstream: Vec<usize>,
    /// Worst-case seconds of its tasks and setup commands, retries included.
    pub budget_s: u64,
}

/// The plan, checked for the target and laid out as jobs.
pub(crate) struct Exported {
    pub loaded: Loaded,
    /// Main worktree of the repository holding the plan.
    pub main: PathBuf,
    pub jobs: Vec<Job>,
    /// The plan's path inside the repository, `/`-separated.
    pub plan_rel: String,
    pub base: String,
    pub opts: ExportOptions,
}

/// Write the workflow for `opts.target` as YAML.
pub fn export(opts: &ExportOptions) -> Result<String> {
    let e = prepare(opts)?;
    match opts.target {
        Target::GithubActions => github::render(&e),
        Target::Argo => argo::render(&e),
    }
}

fn prepare(opts: &ExportOptions) -> Result<Exported> {
    let loaded = plan::load(&opts.plan, opts.load)?;
    let start = match &opts.repo {
        Some(r) => r.clone(),
        None => std::env::current_dir()
            .map_err(|e| ExportError::Env(format!("current directory: {e}")))?,
    };
    let info = git::discover(&start)?;
    let main = info.main_workdir.clone();
    let plan_abs = std::fs::canonicalize(&opts.plan)
        .map_err(|e| ExportError::Env(format!("{}: {e}", opts.plan.display())))?;
    let main_abs = std::fs::canonicalize(&main).unwrap_or(main.clone());
    let plan_rel = plan_abs
        .strip_prefix(&main_abs)
        .map_err(|_| {
            ExportError::Usage(format!(
                "{}: the plan must be inside the repository {} (and committed), so that runners find it in their checkout",
                opts.plan.display(),
                main.display()
            ))
        })?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    if loaded
        .plan
        .globals
        .repo_root
        .as_deref()
        .is_some_and(|r| r != ".")
    {
        return Err(ExportError::Usage(format!(
            "{}: globals.repo_root points away from the plan's repository; an exported workflow runs in the repository that holds the plan",
            opts.plan.display()
        )));
    }
    let base_rev = loaded.plan.base.clone().unwrap_or_else(|| "HEAD".into());
    let base = git::resolve_commit(&main, &base_rev).map_err(|e| match e {
        GitError::UnknownRev { .. } => ExportError::Usage(format!(
            "{}: base {base_rev:?} does not resolve to a commit in {}",
            opts.plan.display(),
            main.display()
        )),
        e => e.into(),
    })?;
    if let Some(id) = &opts.run_id
        && let Some(p) = plan::id_problem(id)
    {
        return Err(ExportError::Usage(format!("--run-id {id:?}: {p}")));
    }
    for (what, v) in [
        ("--install", Some(&opts.install)),
        ("--gate", opts.gate.as_ref()),
        ("--integrate-into", opts.integrate_into.as_ref()),
    ] {
        if v.is_some_and(|v| v.contains("${{")) {
            return Err(ExportError::Usage(format!(
                "{what}: `${{{{` would be read as a workflow expression; put the command in a script in the repository"
            )));
        }
    }
    if let Some(b) = &opts.integrate_into
        && !git::is_valid_branch_name(b)
    {
        return Err(ExportError::Usage(format!(
            "--integrate-into {b:?}: not a valid branch name"
        )));
    }
    let jobs = jobs(&loaded)?;
    Ok(Exported {
        loaded,
        main,
        jobs,
        plan_rel,
        base: base.to_string(),
        opts: opts.clone(),
    })
}

/// Per workstream: its key, what it waits for, its worst-case duration.
fn jobs(loaded: &Loaded) -> Result<Vec<Job>> {
    let plan = &loaded.plan;
    let dag = &loaded.dag;
    let n = plan.workstreams.len();
    let mut needs: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); n];
    for (w, deps) in needs.iter_mut().enumerate() {
        deps.extend(dag.ws_deps[w].iter().copied());
        for t in dag.ws_tasks[w].clone() {
            deps.extend(
                dag.tasks[t]
                    .deps
                    .iter()
                    .map(|&d| dag.tasks[d].ws)
                    .filter(|&d| d != w),
            );
        }
    }
    if let Some(cycle) = find_cycle(&needs) {
        let names: Vec<&str> = cycle
            .iter()
            .map(|&w| plan.workstreams[w].id.as_str())
            .collect();
        return Err(ExportError::Usage(format!(
            "{}: workstreams {} wait for each other through task dependencies; one runner per workstream cannot run them (merge them into one workstream)",
            loaded.path.display(),
            names.join(" -> ")
        )));
    }
    let mut keys = BTreeSet::new();
    let mut out = Vec::with_capacity(n);
    for (w, ws) in plan.workstreams.iter().enumerate() {
        let mut up = BTreeSet::new();
        let mut stack: Vec<usize> = needs[w].iter().copied().collect();
        while let Some(d) = stack.pop() {
            if up.insert(d) {
                stack.extend(needs[d].iter().copied());
            }
        }
        let default_timeout = plan.globals.timeout_s.unwrap_or(1800);
        let setup = plan.globals.setup.len() + ws.setup.len();
        let mut budget = setup as u64 * default_timeout;
        for t in &ws.tasks {
            let tries = 1 + t.retries.or(plan.globals.retries).unwrap_or(0) as u64;
            // Retries wait 1, 2, 4 ... at most 30 s before starting again.
            budget += tries * t.timeout_s.unwrap_or(default_timeout) + (tries - 1) * 30;
        }
        let mut key: String = format!("ws-{}", ws.id)
            .chars()
            .map(|c| if c == '.' { '_' } else { c })
            .collect();
        let base = key.clone();
        let mut i = 2;
        while !keys.insert(key.to_ascii_lowercase()) {
            key = format!("{base}-{i}");
            i += 1;
        }
        out.push(Job {
            ws: ws.id.clone(),
            name: ws.name.clone(),
            key,
            ref_sh: match &ws.branch {
                Some(b) => format!("refs/heads/{}", sq(b)),
                None => format!("\"refs/heads/mpw/$MPW_RUN_ID/\"{}", sq(&ws.id)),
            },
            needs: needs[w].iter().copied().collect(),
            upstream: up.into_iter().collect(),
            budget_s: budget,
        });
    }
    Ok(out)
}

/// A cycle among workstreams, if any, as the path around it.
fn find_cycle(deps: &[BTreeSet<usize>]) -> Option<Vec<usize>> {
    // 0 unvisited, 1 on the path, 2 done; iterative to bear long chains.
    let mut mark = vec![0u8; deps.len()];
    for root in 0..deps.len() {
        if mark[root] != 0 {
            continue;
        }
        let mut path: Vec<(usize, Vec<usize>)> = vec![(root, deps[root].iter().copied().collect())];
        mark[root] = 1;
        while let Some((v, rest)) = path.last_mut() {
            match rest.pop() {
                Some(d) if mark[d] == 1 => {
                    let from = path.iter().position(|(p, _)| *p == d).unwrap();
                    let mut cyc: Vec<usize> = path[from..].iter().map(|(p, _)| *p).collect();
                    cyc.push(d);
                    return Some(cyc);
                }
                Some(d) if mark[d] == 0 => {
                    mark[d] = 1;
                    path.push((d, deps[d].iter().copied().collect()));
                }
                Some(_) => {}
                None => {
                    mark[*v] = 2;
                    path.pop();
                }
            }
        }
    }
    None
}

/// A word for a POSIX shell: single-quoted unless plainly safe.
pub(crate) fn sq(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Text shown in a name field, where `${{` would start an expression.
pub(crate) fn inert(s: &str) -> String {
    s.replace("${{", "$ {{")
}

/// YAML of a JSON value; every string that could be misread is quoted.
pub(crate) fn to_yaml(v: &serde_json::Value) -> Result<String> {
    serde_yaml_ng::to_string(v).map_err(|e| ExportError::Env(format!("writing YAML: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_through_task_dependencies_are_found() {
        let deps = vec![
            BTreeSet::from([1]),
            BTreeSet::from([2]),
            BTreeSet::from([0]),
            BTreeSet::new(),
        ];
        assert_eq!(find_cycle(&deps), Some(vec![0, 1, 2, 0]));
        let ok = vec![BTreeSet::new(), BTreeSet::from([0]), BTreeSet::from([0, 1])];
        assert_eq!(find_cycle(&ok), None);
    }

    #[test]
    fn needs_collapse_task_dependencies_and_budgets_count_tries() {
        let text = r#"{ "globals": { "timeout_s": 100, "setup": ["true"] }, "workstreams": [
            { "id": "x", "tasks": [ { "id": "T", "run": "a", "retries": 2 } ] },
            { "id": "y", "depends_on": ["x"], "tasks": [ { "id": "T", "run": "a", "timeout_s": 10 } ] },
            { "id": "z.1", "tasks": [ { "id": "T", "run": "a", "depends_on": ["y/T"] } ] },
            { "id": "z_1", "tasks": [ { "id": "T", "run": "a" } ] } ] }"#;
        let loaded = plan::parse_str(text, Path::new("p.jsonc"), LoadOptions::default()).unwrap();
        let jobs = jobs(&loaded).unwrap();
        assert_eq!(jobs[1].needs, vec![0]);
        assert_eq!(jobs[2].needs, vec![1], "a task dependency becomes a need");
        assert_eq!(jobs[2].upstream, vec![0, 1], "and brings its upstreams");
        assert_eq!(
            jobs[0].budget_s,
            100 + 3 * 100 + 2 * 30,
            "setup, three tries, backoff"
        );
        assert_eq!(jobs[1].budget_s, 100 + 10);
        assert_eq!(jobs[2].key, "ws-z_1");
        assert_eq!(jobs[3].key, "ws-z_1-2", "keys stay unique");
        assert_eq!(jobs[0].ref_sh, "\"refs/heads/mpw/$MPW_RUN_ID/\"x");
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(sq("plans/demo.jsonc"), "plans/demo.jsonc");
        assert_eq!(sq("it's $HOME"), r"'it'\''s $HOME'");
        assert_eq!(sq(""), "''");
    }
}
