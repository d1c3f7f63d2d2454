//! The gate of `mpw integrate --gate`: a merge commit checked out in a
//! scratch worktree, the gate command run there (again while it fails, up to
//! `--gate-retries`), each run recorded in `gate_runs`. docs/ARCHITECTURE.md
//! describes the merge queue.

use super::{Options, Result, Setup, interrupted};
use crate::exec::{self, Cancel, Program, Spec, Verdict};
use crate::git::{self, Oid};
use crate::model::{EventData, GatePassed, now};
use crate::runner::{Listener, RunError};
use crate::signals::Signals;
use crate::store::{GateRunRow, Layout};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

pub(super) struct GateRuntime {
    rt: tokio::runtime::Runtime,
    stop: watch::Receiver<Cancel>,
}

impl GateRuntime {
    pub(super) fn new() -> Result<Self> {
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

    pub(super) fn stopped(&self) -> bool {
        *self.stop.borrow() != Cancel::No
    }
}

/// One gate run, recorded in the gate_runs table.
#[derive(Clone)]
pub(super) struct GateRun {
    pub id: i64,
    /// Why it failed, with its log; None when it passed.
    pub failure: Option<String>,
}

/// One gate run to do: the merge commit of `covered` onto the target, and
/// the key naming its scratch worktree and logs.
pub(super) struct GateJob {
    pub key: String,
    pub covered: Vec<String>,
    pub commit: Oid,
}

/// What the attempts of one job ended with.
struct Ran {
    failure: Option<String>,
    log: PathBuf,
    attempts: u32,
    duration_ms: i64,
}

/// Check `commit` (the merge of `covered` onto the target) out in a scratch
/// worktree and run the gate there, again up to `--gate-retries` times while
/// it fails. `key` names the scratch worktree and the logs.
pub(super) fn run_gate(
    s: &mut Setup,
    opts: &Options,
    key: &str,
    covered: &[String],
    batch: Option<u32>,
    commit: Oid,
    listener: &mut dyn Listener,
) -> Result<GateRun> {
    let job = GateJob {
        key: key.to_string(),
        covered: covered.to_vec(),
        commit,
    };
    let mut runs = run_gates(s, opts, vec![job], batch, listener)?;
    Ok(runs.remove(0))
}

/// Run the gate on every job at once (`--gate-jobs`), each in its own
/// scratch worktree; they are recorded in the order given.
pub(super) fn run_gates(
    s: &mut Setup,
    opts: &Options,
    jobs: Vec<GateJob>,
    batch: Option<u32>,
    listener: &mut dyn Listener,
) -> Result<Vec<GateRun>> {
    let gate = opts.gate.as_ref().expect("a gate to run");
    let root = PathBuf::from(&s.store.run(&s.run_id)?.worktree_root).join(&s.run_id);
    let logs = s.store.layout.gate_logs(&s.run_id);
    let mut scratches: Vec<PathBuf> = Vec::new();
    for job in &jobs {
        let scratch = root.join(format!("_gate-{}", job.key));
        if scratch.exists() {
            remove_scratch(s, &scratch);
        }
        if let Err(e) = git::add_detached_worktree(&s.repo, &scratch, job.commit) {
            for sc in &scratches {
                remove_scratch(s, sc);
            }
            return Err(e.into());
        }
        scratches.push(scratch);
    }
    let gate_rt = s
        .gate_rt
        .as_ref()
        .expect("integrate starts a runtime for a gate");
    // The runs at once are one cpu task of the machine pool (see
    // docs/ARCHITECTURE.md); their tools share its jobserver, and
    // --gate-jobs is bounded by the run's cpu slots.
    let stopped = || gate_rt.stopped();
    let ran = crate::slots::as_cpu_task(&s.run_id, &stopped, |js| {
        let handles: Vec<_> = jobs
            .iter()
            .zip(&scratches)
            .map(|(job, scratch)| {
                let try_job = TryJob {
                    gate: gate.cmd.clone(),
                    shell: crate::runner::plan_shell(&s.plan),
                    run_id: s.run_id.clone(),
                    key: job.key.clone(),
                    covered: job.covered.clone(),
                    batch,
                    scratch: scratch.clone(),
                    logs: logs.clone(),
                    timeout: gate.timeout,
                    grace: opts.grace,
                    retries: gate.retries,
                    jobserver: js.clone(),
                };
                gate_rt.rt.spawn(try_job.run(gate_rt.stop.clone()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| gate_rt.rt.block_on(h))
            .collect::<std::result::Result<Vec<Ran>, _>>()
    })
    .map_err(RunError::Env)?;
    let ran = match ran {
        // Stopped while waiting for a machine slot: nothing ran.
        None => Vec::new(),
        Some(r) => r.map_err(|e| RunError::Env(format!("a gate run panicked: {e}")))?,
    };
    let stopped = gate_rt.stopped();
    for sc in &scratches {
        remove_scratch(s, sc);
    }
    if stopped {
        // The runs at once gate prefixes of one stack: the widest names all.
        let widest = jobs.iter().max_by_key(|j| j.covered.len());
        let on = widest.map(|j| j.covered.join(", ")).unwrap_or_default();
        return Err(interrupted(s, &format!("while the gate ran on {on}")));
    }
    let mut out = Vec::new();
    for (job, r) in jobs.iter().zip(ran) {
        let flaky = r.failure.is_none() && r.attempts > 1;
        let id = s.store.record_gate_run(
            &s.run_id,
            &GateRunRow {
                id: 0,
                into_branch: s.into.clone(),
                batch,
                covered: job.covered.clone(),
                commit: job.commit.to_string(),
                passed: r.failure.is_none(),
                attempts: r.attempts,
                flaky,
                duration_ms: r.duration_ms,
                log: r.log.to_string_lossy().into_owned(),
                at: now(),
            },
        )?;
        if r.failure.is_none() {
            let data = EventData::GatePassed(GatePassed {
                gate_run: id,
                covered: job.covered.clone(),
                duration_ms: r.duration_ms,
                flaky,
            });
            let ev = s.store.event(&s.run_id, None, None, None, data)?;
            listener.event(&ev);
        }
        out.push(GateRun {
            id,
            failure: r.failure,
        });
    }
    Ok(out)
}

/// One job's attempts, owned so that several run at once on the runtime.
struct TryJob {
    gate: String,
    shell: crate::plan::Shell,
    run_id: String,
    key: String,
    covered: Vec<String>,
    batch: Option<u32>,
    scratch: PathBuf,
    logs: PathBuf,
    timeout: Duration,
    grace: Duration,
    retries: u32,
    jobserver: crate::slots::Jobserver,
}

impl TryJob {
    async fn run(self, stop: watch::Receiver<Cancel>) -> Ran {
        let started = std::time::Instant::now();
        let mut attempts = 0;
        let (failure, log) = loop {
            attempts += 1;
            let name = match attempts {
                1 => self.key.clone(),
                k => format!("{}.try{k}", self.key),
            };
            let spec = Spec {
                program: Program::Shell {
                    shell: self.shell,
                    script: self.gate.clone(),
                },
                cwd: self.scratch.clone(),
                env: vec![
                    ("MPW_RUN_ID".into(), self.run_id.clone()),
                    (
                        "MPW_WORKSTREAM".into(),
                        self.covered.last().cloned().unwrap_or_default(),
                    ),
                    ("MPW_GATE_COVERS".into(), self.covered.join(" ")),
                    (
                        "MPW_WORKTREE".into(),
                        self.scratch.to_string_lossy().into_owned(),
                    ),
                ],
                timeout: Some(self.timeout),
                grace: self.grace,
                stdout: self.logs.join(format!("{name}.out")),
                stderr: self.logs.join(format!("{name}.err")),
                guards: Default::default(),
            };
            let out = exec::run_with(&spec, Some(&self.jobserver), stop.clone(), |_| {}).await;
            let stopped = *stop.borrow() != Cancel::No;
            let failure = match out.verdict() {
                Verdict::Succeeded => None,
                Verdict::Failed(r) | Verdict::Quarantined(r) => Some(self.failure(&spec, &r)),
                Verdict::Cancelled => Some(format!("gate `{}` was cancelled", self.gate)),
            };
            if stopped || failure.is_none() || attempts > self.retries {
                break (failure, spec.stderr);
            }
        };
        Ran {
            failure,
            log,
            attempts,
            duration_ms: started.elapsed().as_millis() as i64,
        }
    }

    /// Why a gate run failed, and where its log is.
    fn failure(&self, spec: &Spec, reason: &str) -> String {
        // A one-workstream run is what `mpw logs RUN integrate/WS` shows.
        let (out, err) = (&spec.stdout, &spec.stderr);
        let see = match (
            &self.covered[..],
            self.batch,
            Layout::log_with_content(out, err),
        ) {
            ([ws], None, Some(e)) => format!(
                "see mpw logs {} integrate/{ws}{}",
                self.run_id,
                if e { " --stderr" } else { "" }
            ),
            (_, _, Some(e)) => format!("log: {}", if e { err } else { out }.display()),
            (_, _, None) => format!("it printed nothing (log: {})", err.display()),
        };
        format!("gate `{}` failed: {reason}; {see}", self.gate)
    }
}

/// A killed integration may have left its gate running and its scratch
/// worktree registered; holding the lock, we know both are stale.
pub(super) fn end_stale_gates(s: &mut Setup, grace: Duration) -> Result<()> {
    let logs = s.store.layout.gate_logs(&s.run_id);
    exec::end_leftovers(&[logs], grace);
    let root = PathBuf::from(&s.store.run(&s.run_id)?.worktree_root).join(&s.run_id);
    let is_gate = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("_gate-"))
    };
    // Folders left, and registrations whose folder is already gone.
    let mut stale: BTreeSet<PathBuf> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_gate(p))
        .collect();
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    stale.extend(
        git::list_worktrees(&s.repo)?
            .into_iter()
            .map(|w| w.path)
            .filter(|p| is_gate(p) && p.parent() == Some(root.as_path())),
    );
    for p in stale {
        remove_scratch(s, &p);
    }
    Ok(())
}

/// Remove a gate's scratch worktree; a failure does not change the verdict
/// but is told (the directory may need removing by hand).
fn remove_scratch(s: &mut Setup, scratch: &Path) {
    if let Err(e) = git::remove_run_worktree(&s.repo, scratch) {
        s.warnings.push(format!(
            "could not remove the gate's scratch worktree {}: {e}",
            scratch.display()
        ));
    }
}
