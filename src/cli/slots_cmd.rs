//! `mpw slots`: who holds the machine's slots (pid, run, task).

use super::{CliError, CliResult, Ctx, Exit};
use crate::slots::machine;
use clap::Args;

#[derive(Debug, Args)]
pub struct SlotsArgs {
    /// Print the pool as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn slots(a: SlotsArgs, _ctx: &Ctx) -> CliResult {
    let size = machine::size().map_err(CliError::env)?;
    let dir = machine::dir().ok_or_else(|| {
        CliError::env("no state directory: set XDG_STATE_HOME or HOME (LOCALAPPDATA on Windows)")
    })?;
    let held = machine::holders(&dir, size)
        .map_err(|e| CliError::env(format!("{}: {e}", dir.display())))?;
    if a.json {
        let v = serde_json::json!({
            "size": size,
            "dir": dir.to_string_lossy(),
            "held": held,
        });
        outln!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        return Ok(Exit::Ok);
    }
    if size == 0 {
        outln!("machine pool off (MPW_MACHINE_SLOTS=0 or machine_slots 0)");
        return Ok(Exit::Ok);
    }
    outln!(
        "{}/{size} machine slots held ({})",
        held.len(),
        dir.display()
    );
    if !held.is_empty() {
        outln!("{:<5} {:<8} {:<28} TASK", "SLOT", "PID", "RUN");
        for h in &held {
            let task = h.task.as_deref().unwrap_or("(jobserver pool)");
            outln!("{:<5} {:<8} {:<28} {task}", h.slot, h.pid, h.run);
        }
    }
    Ok(Exit::Ok)
}
