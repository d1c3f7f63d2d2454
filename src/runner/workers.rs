//! Warm worker pools (`globals.workers`): processes started when a request
//! needs one, one request at a time each, kept between requests without
//! holding a slot, replaced when they crash, time out or reach
//! `max_requests`. A request goes preferably to a worker that last served
//! the same workstream. See docs/ARCHITECTURE.md, "Module map"; the
//! protocol is in the README, "Warm workers".

use super::ctx::Msg;
use crate::exec::{Cancel, Ending, Health, Outcome, ProcInfo, Request, Spec, Worker, WorkerSpec};
use crate::model::{EventData, WorkerFacts};
use crate::plan::{Adapter, Plan, TaskClass};
use crate::store::Layout;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, watch};

/// The Python adapter, carried by the binary so that a plan written for it
/// runs in any repository.
pub const PYTHON_ADAPTER: &str = include_str!("../../adapters/python/mpw_worker.py");

/// All pools of a run, in the order of `globals.workers` (BTreeMap: by name).
pub(crate) struct Pools {
    pools: Vec<Pool>,
    events: mpsc::UnboundedSender<Msg>,
    grace: Duration,
}

struct Pool {
    spec: WorkerSpec,
    logs: PathBuf,
    max: usize,
    max_requests: u64,
    state: Mutex<State>,
    freed: Notify,
}

#[derive(Default)]
struct State {
    /// Idle workers and the workstream each served last.
    idle: Vec<(Worker, usize)>,
    /// Idle, busy and starting.
    alive: usize,
}

/// The adapter's interpreter when the plan names none.
fn default_python() -> Vec<String> {
    vec![if cfg!(windows) { "python" } else { "python3" }.to_string()]
}

/// Write the adapter under `adapters/` (only when its content differs) and
/// return its path.
pub(crate) fn write_adapter(layout: &Layout) -> std::io::Result<PathBuf> {
    let dir = layout.adapters();
    let path = dir.join("mpw_worker.py");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(PYTHON_ADAPTER) {
        std::fs::create_dir_all(&dir)?;
        crate::store::write_atomic(&path, PYTHON_ADAPTER.as_bytes())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    Ok(path)
}

impl Pools {
    /// The pools of `plan`; `slots(class)` gives the default `max`.
    pub fn new(
        plan: &Plan,
        layout: &Layout,
        run: &str,
        repo: &Path,
        grace: Duration,
        slots: impl Fn(TaskClass) -> usize,
        events: mpsc::UnboundedSender<Msg>,
    ) -> std::io::Result<Self> {
        let mut pools = Vec::new();
        for (name, def) in &plan.globals.workers {
            let argv = match (&def.argv, def.adapter) {
                (Some(argv), _) => argv.clone(),
                (None, Some(Adapter::Python)) => {
                    let adapter = write_adapter(layout)?;
                    let mut argv = def.python.clone().unwrap_or_else(default_python);
                    argv.push(adapter.to_string_lossy().into_owned());
                    argv.push("--persistent_worker".into());
                    argv
                }
                (None, None) => Vec::new(), // refused by validation
            };
            let class = def.class.unwrap_or(TaskClass::Cpu);
            pools.push(Pool {
                spec: WorkerSpec {
                    name: name.clone(),
                    argv,
                    env: def.env.clone().into_iter().collect(),
                    cwd: repo.to_path_buf(),
                    stderr: PathBuf::new(),
                    startup_timeout: Duration::from_secs(def.startup_timeout_s.unwrap_or(30)),
                },
                logs: layout.worker_logs(run),
                max: def
                    .max
                    .map(|m| m as usize)
                    .unwrap_or_else(|| slots(class))
                    .max(1),
                max_requests: def.max_requests,
                state: Mutex::new(State::default()),
                freed: Notify::new(),
            });
        }
        Ok(Pools {
            pools,
            events,
            grace,
        })
    }

    fn event(&self, data: EventData) {
        let _ = self.events.send(Msg::Worker(data));
    }

    fn facts(pool: &Pool, info: ProcInfo, requests: u64, reason: Option<String>) -> WorkerFacts {
        WorkerFacts {
            worker: pool.spec.name.clone(),
            pid: info.pid,
            requests,
            reason,
        }
    }

    /// Run one request of workstream `ws` on pool `p`; the outcome is judged
    /// like a process task's. `on_start` gets the worker's identity.
    pub async fn run(
        &self,
        p: usize,
        ws: usize,
        req: &Request,
        spec: &Spec,
        mut cancel: watch::Receiver<Cancel>,
        on_start: impl FnOnce(ProcInfo),
    ) -> Outcome {
        let pool = &self.pools[p];
        let began = Instant::now();
        let unstarted = |ending, code| Outcome::unstarted(ending, code, began, spec);
        let mut worker = match self.acquire(pool, ws, &mut cancel).await {
            Ok(Some(w)) => w,
            Ok(None) => return unstarted(Ending::Cancelled, None),
            Err(why) => return unstarted(Ending::Broken(why), None),
        };
        on_start(worker.info());
        let (outcome, health) = worker.request(req, spec, cancel).await;
        self.release(pool, worker, ws, health).await;
        outcome
    }

    /// An idle worker (one that last served `ws` first), a new one while
    /// fewer than `max` live, or wait until one is freed; None when
    /// cancelled while waiting. Starting is not cut short (it is bounded by
    /// `startup_timeout_s`), so the count of live workers stays right.
    async fn acquire(
        &self,
        pool: &Pool,
        ws: usize,
        cancel: &mut watch::Receiver<Cancel>,
    ) -> Result<Option<Worker>, String> {
        loop {
            let freed = pool.freed.notified();
            {
                let mut st = pool.state.lock().expect("worker pool lock");
                let pick = st
                    .idle
                    .iter()
                    .position(|(_, w)| *w == ws)
                    .or_else(|| (!st.idle.is_empty()).then_some(0));
                if let Some(i) = pick {
                    return Ok(Some(st.idle.swap_remove(i).0));
                }
                if st.alive < pool.max {
                    st.alive += 1;
                    break;
                }
            }
            tokio::select! {
                _ = freed => {}
                _ = cancel.wait_for(|c| *c != Cancel::No) => return Ok(None),
            }
        }
        let mut spec = pool.spec.clone();
        spec.stderr = match new_log(&pool.logs, &spec.name) {
            Ok(p) => p,
            Err(e) => {
                self.gone(pool);
                return Err(format!("worker {}: cannot create its log: {e}", spec.name));
            }
        };
        match Worker::start(&spec).await {
            Ok(w) => {
                self.event(EventData::WorkerStarted(Self::facts(
                    pool,
                    w.info(),
                    0,
                    None,
                )));
                Ok(Some(w))
            }
            Err(why) => {
                self.gone(pool);
                Err(why)
            }
        }
    }

    /// One fewer worker alive: a waiting request may start one.
    fn gone(&self, pool: &Pool) {
        pool.state.lock().expect("worker pool lock").alive -= 1;
        pool.freed.notify_one();
    }

    async fn release(&self, pool: &Pool, worker: Worker, ws: usize, health: Health) {
        let info = worker.info();
        let served = worker.served;
        match health {
            Health::Ready if pool.max_requests == 0 || served < pool.max_requests => {
                pool.state
                    .lock()
                    .expect("worker pool lock")
                    .idle
                    .push((worker, ws));
                pool.freed.notify_one();
            }
            Health::Ready => {
                worker.stop(self.grace).await;
                let facts = Self::facts(
                    pool,
                    info,
                    served,
                    Some(format!("served max_requests ({served})")),
                );
                self.event(EventData::WorkerRecycled(facts));
                self.gone(pool);
            }
            Health::Gone(reason) => {
                worker.kill().await;
                self.event(EventData::WorkerExited(Self::facts(
                    pool,
                    info,
                    served,
                    Some(reason),
                )));
                self.gone(pool);
            }
        }
    }

    /// The run is over: close every idle worker's stdin (the protocol's
    /// exit), grace, then end its group. Returns their events.
    pub async fn shutdown(&self) -> Vec<EventData> {
        let mut events = Vec::new();
        for pool in &self.pools {
            let idle = std::mem::take(&mut pool.state.lock().expect("worker pool lock").idle);
            for (w, _) in idle {
                let (info, served) = (w.info(), w.served);
                let code = w.stop(self.grace).await;
                let reason = match code {
                    Some(c) => format!("run ended; exited with code {c}"),
                    None => "run ended; ended by mpw".to_string(),
                };
                events.push(EventData::WorkerExited(Self::facts(
                    pool,
                    info,
                    served,
                    Some(reason),
                )));
            }
        }
        events
    }
}

/// `<name>.<n>.err`, the first n not yet used (a resumed run keeps the
/// earlier logs).
fn new_log(dir: &Path, name: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    for n in 1u32.. {
        let p = dir.join(format!("{name}.{n}.err"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(_) => return Ok(p),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    unreachable!("u32 log numbers exhausted")
}

/// The environment a request runs with: mpw's own, then the task's
/// (globals, workstream, task and `MPW_*` variables), as a process task gets.
pub(crate) fn request_env(
    task_env: &[(String, String)],
) -> serde_json::Map<String, serde_json::Value> {
    let mut env: serde_json::Map<String, serde_json::Value> =
        std::env::vars().map(|(k, v)| (k, v.into())).collect();
    for (k, v) in task_env {
        env.insert(k.clone(), v.clone().into());
    }
    env
}
