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
pub(super) struct GateRun {
    pub id: i64,
    /// Why it failed, with its log; None when it passed.
    pub failure: Option<String>,
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
    let gate = opts.gate.as_deref().expect("a gate to run");
    let run_row = s.store.run(&s.run_id)?;
    let scratch = PathBuf::from(&run_row.worktree_root)
        .join(&s.run_id)
        .join(format!("_gate-{key}"));
    if scratch.exists() {
        remove_scratch(s, &scratch);
    }
    git::add_detached_worktree(&s.repo, &scratch, commit)?;
    let logs = s
        .store
        .layout
        .run_dir(&s.run_id)
        .join("logs")
        .join("_integrate");
    let started = std::time::Instant::now();
    let mut attempts = 0;
    let (failure, log) = loop {
        attempts += 1;
        let name = match attempts {
            1 => key.to_string(),
            k => format!("{key}.try{k}"),
        };
        let spec = Spec {
            program: Program::Shell {
                shell: crate::runner::plan_shell(&s.plan),
                script: gate.to_string(),
            },
            cwd: scratch.clone(),
            env: vec![
                ("MPW_RUN_ID".into(), s.run_id.clone()),
                (
                    "MPW_WORKSTREAM".into(),
                    covered.last().cloned().unwrap_or_default(),
                ),
                ("MPW_GATE_COVERS".into(), covered.join(" ")),
                (
                    "MPW_WORKTREE".into(),
                    scratch.to_string_lossy().into_owned(),
                ),
            ],
            timeout: Some(opts.gate_timeout),
            grace: opts.grace,
            stdout: logs.join(format!("{name}.out")),
            stderr: logs.join(format!("{name}.err")),
            guards: Default::default(),
        };
        let gate_rt = s
            .gate_rt
            .as_ref()
            .expect("integrate starts a runtime for a gate");
        let out = gate_rt
            .rt
            .block_on(exec::run(&spec, gate_rt.stop.clone(), |_| {}));
        if gate_rt.stopped() {
            remove_scratch(s, &scratch);
            let on = covered.join(", ");
            return Err(interrupted(s, &format!("while the gate ran on {on}")));
        }
        let failure = match out.verdict() {
            Verdict::Succeeded => None,
            Verdict::Failed(r) | Verdict::Quarantined(r) => {
                // A one-workstream run is what `mpw logs RUN integrate/WS` shows.
                let (out, err) = (&spec.stdout, &spec.stderr);
                let see = match (covered, batch, Layout::log_with_content(out, err)) {
                    ([ws], None, Some(e)) => format!(
                        "see mpw logs {} integrate/{ws}{}",
                        s.run_id,
                        if e { " --stderr" } else { "" }
                    ),
                    (_, _, Some(e)) => format!("log: {}", if e { err } else { out }.display()),
                    (_, _, None) => format!("it printed nothing (log: {})", err.display()),
                };
                Some(format!("gate `{gate}` failed: {r}; {see}"))
            }
            Verdict::Cancelled => Some(format!("gate `{gate}` was cancelled")),
        };
        if failure.is_none() || attempts > opts.gate_retries {
            break (failure, spec.stderr);
        }
    };
    remove_scratch(s, &scratch);
    let duration_ms = started.elapsed().as_millis() as i64;
    let flaky = failure.is_none() && attempts > 1;
    let id = s.store.record_gate_run(
        &s.run_id,
        &GateRunRow {
            id: 0,
            into_branch: s.into.clone(),
            batch,
            covered: covered.to_vec(),
            commit: commit.to_string(),
            passed: failure.is_none(),
            attempts,
            flaky,
            duration_ms,
            log: log.to_string_lossy().into_owned(),
            at: now(),
        },
    )?;
    if failure.is_none() {
        let data = EventData::GatePassed(GatePassed {
            gate_run: id,
            covered: covered.to_vec(),
            duration_ms,
            flaky,
        });
        let ev = s.store.event(&s.run_id, None, None, None, data)?;
        listener.event(&ev);
    }
    Ok(GateRun { id, failure })
}

/// A killed integration may have left its gate running and its scratch
/// worktree registered; holding the lock, we know both are stale.
pub(super) fn end_stale_gates(s: &mut Setup, grace: Duration) -> Result<()> {
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
