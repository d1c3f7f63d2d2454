//! The run's cpu budget: how cpu-class tasks, and the tools they start, share
//! `cpu_slots` through a jobserver, and several mpw processes share the
//! machine. See docs/ARCHITECTURE.md, "Slots, jobserver and the machine pool".
//!
//! Accounting (own jobserver): every token in circulation is one of the
//! run's `cpu_slots`. The coordinator takes a token from the pool for each cpu
//! task it starts and holds it while the task runs: that is the task's
//! implicit token (make's own job). What the task's tools take come from the
//! same pool. So running cpu tasks plus their tools' tokens never exceed
//! `cpu_slots`, and a token a tool holds keeps the next cpu task waiting.
//!
//! A killed task's tools can take tokens with them. When no task that has the
//! jobserver runs, the pool holds all tokens but the ones lent to running
//! tasks: the coordinator drains it, and puts back `cpu_slots` minus those,
//! so lost tokens come back then.
//!
//! Under an outer jobserver mpw holds make's implicit token for its first cpu
//! task and takes one from the outer pool for each further one; its tasks use
//! that pool directly. Lost tokens are the outer pool owner's to count.
//!
//! With the machine pool, every token in circulation is backed by a machine
//! slot the run holds: the pool grows as slots are taken, and shrinks (slots
//! given back) when no task with the jobserver runs.

pub mod jobserver;
pub mod machine;

pub use jobserver::{Jobserver, inherit, withhold};

use jobserver::{Kind, Outer, Own};
use std::io;
use std::sync::Arc;

/// Where the run's tokens come from.
enum Source {
    /// Its own pool: `put` tokens in circulation (in the pool, lent to tasks,
    /// or held by their tools).
    Own {
        put: usize,
        machine: Option<machine::Pool>,
    },
    /// The jobserver mpw was started under; `implicit` is mpw's own token, free.
    Outer { outer: Outer, implicit: bool },
}

/// What a running cpu task holds; given back with `Budget::give_back`.
#[derive(Debug)]
pub struct Unit {
    kind: UnitKind,
    jobserver: bool,
    task: String,
}

#[derive(Debug)]
enum UnitKind {
    Own,
    Implicit,
    Outer(::jobserver::Acquired),
}

/// The run's cpu budget.
pub struct Budget {
    js: Jobserver,
    source: Source,
    cap: usize,
    /// Units lent to running tasks, by task name (for `mpw slots`).
    lent: Vec<String>,
    /// Running tasks that have the jobserver.
    js_running: usize,
    /// A task with the jobserver ended since the pool was last counted.
    dirty: bool,
    /// A task waited for a unit in the last `take` round.
    waiting: bool,
    /// The machine pool had no slot free when the run wanted one more.
    machine_full: bool,
}

impl Budget {
    /// The budget of run `run` with `cap` cpu slots: the outer jobserver if
    /// mpw runs under one, else its own pool, fed by the machine pool unless
    /// that is off.
    pub fn new(run: &str, cap: usize) -> Result<Budget, String> {
        let cap = cap.max(1);
        if let Some(outer) = jobserver::outer()
            .map_err(|e| format!("cannot join the jobserver mpw runs under: {e}"))?
        {
            let js = Jobserver(Arc::new(Kind::Outer(outer.client().clone())));
            return Ok(Budget::with(
                js,
                Source::Outer {
                    outer,
                    implicit: true,
                },
                cap,
            ));
        }
        let own = Own::new(cap).map_err(|e| format!("cannot create the jobserver: {e}"))?;
        let size = machine::size()?;
        let machine = match (size, machine::dir()) {
            (0, _) | (_, None) => None,
            (n, Some(dir)) => Some(
                machine::Pool::new(dir.clone(), n, run)
                    .map_err(|e| format!("machine slots {}: {e}", dir.display()))?,
            ),
        };
        let js = Jobserver(Arc::new(Kind::Own(own)));
        Ok(Budget::with(js, Source::Own { put: 0, machine }, cap))
    }

    fn with(js: Jobserver, source: Source, cap: usize) -> Budget {
        Budget {
            js,
            source,
            cap,
            lent: Vec::new(),
            js_running: 0,
            dirty: false,
            waiting: false,
            machine_full: false,
        }
    }

    /// What a task with the jobserver is given.
    pub fn jobserver(&self) -> Jobserver {
        self.js.clone()
    }

    fn own(&self) -> &Own {
        self.js.own().expect("own pool")
    }

    /// Bring the pool to what the run wants now: `ready` cpu tasks wait,
    /// `ready_js` of them with the jobserver. Call before `take`.
    pub fn settle(&mut self, ready: usize, ready_js: bool) -> io::Result<()> {
        let cap = self.cap;
        let want = if self.js_running > 0 || ready_js {
            cap
        } else {
            cap.min(self.lent.len() + ready)
        };
        let quiet = self.js_running == 0;
        let lent = self.lent.len();
        let own = self.js.clone();
        match &mut self.source {
            Source::Outer { outer, .. } => {
                if ready == 0 {
                    outer.release_spare();
                }
            }
            Source::Own { put, machine } => {
                let own = own.own().expect("own pool");
                let want = match machine.as_ref() {
                    None => cap,
                    // Others wait: keep only what tasks run on and wait for.
                    // (Asked only when there is a spare slot to give: it
                    // reads the slots folder, and this runs at every step.)
                    Some(m) if want > lent + ready && m.others_want() => lent + ready,
                    Some(_) => want,
                };
                // Tokens free in the pool now go back with their slots.
                if let Some(m) = machine.as_mut() {
                    while !quiet && *put > want && own.try_take()? {
                        *put -= 1;
                        m.keep(*put);
                    }
                }
                // Nobody else reads the pool now: what is in it is exact.
                if quiet && (self.dirty || *put > want) {
                    while own.try_take()? {}
                    *put = lent;
                    self.dirty = false;
                    if let Some(m) = machine.as_mut() {
                        m.keep(lent);
                    }
                }
                self.machine_full = false;
                while *put < want {
                    if let Some(m) = machine.as_mut()
                        && !m.take()?
                    {
                        self.machine_full = true;
                        break;
                    }
                    own.put()?;
                    *put += 1;
                }
                if let Some(m) = machine.as_mut() {
                    m.label(&self.lent)?;
                    m.want(self.machine_full && ready > 0)?;
                }
            }
        }
        self.waiting = false;
        Ok(())
    }

    /// A unit for cpu task `task` if one is free now; `jobserver`: the task
    /// will be given the jobserver.
    pub fn take(&mut self, task: &str, jobserver: bool) -> io::Result<Option<Unit>> {
        let kind = match &mut self.source {
            Source::Own { .. } => self
                .js
                .own()
                .expect("own pool")
                .try_take()?
                .then_some(UnitKind::Own),
            Source::Outer { implicit, .. } if *implicit => {
                *implicit = false;
                Some(UnitKind::Implicit)
            }
            Source::Outer { outer, .. } => outer.try_take().map(UnitKind::Outer),
        };
        let Some(kind) = kind else {
            self.waiting = true;
            return Ok(None);
        };
        self.lent.push(task.to_string());
        if jobserver {
            self.js_running += 1;
        }
        Ok(Some(Unit {
            kind,
            jobserver,
            task: task.to_string(),
        }))
    }

    /// A task ended: its unit goes back.
    pub fn give_back(&mut self, unit: Unit) -> io::Result<()> {
        if let Some(k) = self.lent.iter().position(|t| *t == unit.task) {
            self.lent.remove(k);
        }
        if unit.jobserver {
            self.js_running -= 1;
            self.dirty = true;
        }
        match (unit.kind, &mut self.source) {
            (UnitKind::Own, _) => self.own().put()?,
            (UnitKind::Implicit, Source::Outer { implicit, .. }) => *implicit = true,
            (UnitKind::Implicit, Source::Own { .. }) => {
                unreachable!("own pools have no implicit token")
            }
            (UnitKind::Outer(token), _) => drop(token),
        }
        Ok(())
    }

    /// A cpu task could not start for want of a unit.
    pub fn waiting(&self) -> bool {
        self.waiting
    }

    /// Why a task waits, when it is the machine pool that is full:
    /// "waiting for a slot: 4/4 held by run 01J…".
    pub fn machine_wait(&self, run: &str) -> Option<String> {
        let Source::Own {
            machine: Some(m), ..
        } = &self.source
        else {
            return None;
        };
        if !self.machine_full {
            return None;
        }
        let dir = machine::dir()?;
        Some(format!(
            "waiting for a slot: {}",
            machine::describe_full(&dir, m.size(), run)
        ))
    }
}

/// Run `f` as one cpu task of a budget of its own, for work outside a run's
/// coordinator (an integration gate): it waits for a machine slot, and the
/// tools it starts share the machine pool through the jobserver `f` is given.
/// The budget is the machine's size (its physical cores with the pool off).
/// `None` when `stopped` turned true while waiting.
pub fn as_cpu_task<T>(
    owner: &str,
    stopped: &dyn Fn() -> bool,
    f: impl FnOnce(&Jobserver) -> T,
) -> Result<Option<T>, String> {
    let cap = match machine::size()? {
        0 => machine::physical_cores(),
        n => n,
    };
    let mut budget = Budget::new(owner, cap)?;
    let e = |e: io::Error| format!("jobserver: {e}");
    loop {
        budget.settle(1, true).map_err(e)?;
        if let Some(unit) = budget.take("integrate gate", true).map_err(e)? {
            let out = f(&budget.jobserver());
            budget.give_back(unit).map_err(e)?;
            return Ok(Some(out));
        }
        if stopped() {
            return Ok(None);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
