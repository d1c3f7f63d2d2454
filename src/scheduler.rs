//! Which tasks may start now: a pure function of the current states, the DAG
//! and the slots. No I/O, so it is tested exhaustively on its own.

use crate::model::TaskState;
use crate::plan::{Dag, TaskClass};

/// How many tasks may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slots {
    pub max: usize,
    pub cpu: usize,
    pub io: usize,
}

/// What the scheduler needs to know of a task that never changes.
#[derive(Debug, Clone, Copy)]
pub struct TaskInfo {
    pub class: TaskClass,
    pub read_only: bool,
    pub allow_failure: bool,
}

/// How a dependency stands for a task waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DepStatus {
    Satisfied,
    Waiting,
    /// Failed for good: the dependant will never run.
    Blocked,
}

pub struct Scheduler<'a> {
    dag: &'a Dag,
    info: &'a [TaskInfo],
    slots: Slots,
    /// Every task, best first: the longest chain of tasks from it to a sink
    /// (long chains first), then plan order.
    order: Vec<usize>,
}

impl<'a> Scheduler<'a> {
    pub fn new(dag: &'a Dag, info: &'a [TaskInfo], slots: Slots) -> Self {
        let n = dag.tasks.len();
        let dependants = dag.dependants();
        // Reverse topological order: higher level first.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(dag.levels.get(i).copied().unwrap_or(0)));
        let mut rank = vec![1usize; n];
        for &i in &order {
            rank[i] = 1 + dependants[i].iter().map(|&d| rank[d]).max().unwrap_or(0);
        }
        let mut best: Vec<usize> = (0..n).collect();
        best.sort_by_key(|&i| (std::cmp::Reverse(rank[i]), i));
        Scheduler {
            dag,
            info,
            slots,
            order: best,
        }
    }

    fn dep_status(&self, dep: usize, states: &[TaskState]) -> DepStatus {
        match states[dep] {
            TaskState::Succeeded => DepStatus::Satisfied,
            TaskState::Failed | TaskState::Quarantined if self.info[dep].allow_failure => {
                DepStatus::Satisfied
            }
            TaskState::Failed
            | TaskState::Quarantined
            | TaskState::Skipped
            | TaskState::Cancelled => DepStatus::Blocked,
            TaskState::Pending | TaskState::Ready | TaskState::Running => DepStatus::Waiting,
        }
    }

    /// Pending tasks that can never run because a dependency failed for good.
    pub fn blocked(&self, states: &[TaskState]) -> Vec<usize> {
        (0..states.len())
            .filter(|&i| matches!(states[i], TaskState::Pending | TaskState::Ready))
            .filter(|&i| self.blocking_dep(i, states).is_some())
            .collect()
    }

    /// The first dependency of task `i` that failed for good, if any: why it
    /// is blocked.
    pub fn blocking_dep(&self, i: usize, states: &[TaskState]) -> Option<usize> {
        self.dag.tasks[i]
            .deps
            .iter()
            .copied()
            .find(|&d| self.dep_status(d, states) == DepStatus::Blocked)
    }

    /// Pending tasks whose dependencies are all satisfied and whose
    /// workstream is open (worktree provisioned): they become READY.
    pub fn newly_ready(&self, states: &[TaskState], ws_open: &[bool]) -> Vec<usize> {
        (0..states.len())
            .filter(|&i| states[i] == TaskState::Pending && ws_open[self.dag.tasks[i].ws])
            .filter(|&i| {
                self.dag.tasks[i]
                    .deps
                    .iter()
                    .all(|&d| self.dep_status(d, states) == DepStatus::Satisfied)
            })
            .collect()
    }

    /// READY tasks to start now, best first, within the slots and one
    /// mutating task at a time per workstream (read-only tasks may overlap
    /// each other). `held` says which READY tasks must wait (retry backoff).
    pub fn startable(&self, states: &[TaskState], held: &dyn Fn(usize) -> bool) -> Vec<usize> {
        let mut running = 0;
        let mut cpu = 0;
        let mut io = 0;
        let nws = self.dag.ws_tasks.len();
        let mut ws_mutating = vec![false; nws];
        let mut ws_readers = vec![0usize; nws];
        for (i, s) in states.iter().enumerate() {
            if *s == TaskState::Running {
                running += 1;
                match self.info[i].class {
                    TaskClass::Cpu => cpu += 1,
                    TaskClass::Io => io += 1,
                }
                let ws = self.dag.tasks[i].ws;
                if self.info[i].read_only {
                    ws_readers[ws] += 1;
                } else {
                    ws_mutating[ws] = true;
                }
            }
        }
        let mut out = Vec::new();
        for &i in &self.order {
            if running >= self.slots.max {
                break;
            }
            if states[i] != TaskState::Ready || held(i) {
                continue;
            }
            let info = self.info[i];
            let class_room = match info.class {
                TaskClass::Cpu => cpu < self.slots.cpu,
                TaskClass::Io => io < self.slots.io,
            };
            let ws = self.dag.tasks[i].ws;
            let ws_room = if info.read_only {
                !ws_mutating[ws]
            } else {
                !ws_mutating[ws] && ws_readers[ws] == 0
            };
            if !class_room || !ws_room {
                continue;
            }
            running += 1;
            match info.class {
                TaskClass::Cpu => cpu += 1,
                TaskClass::Io => io += 1,
            }
            if info.read_only {
                ws_readers[ws] += 1;
            } else {
                ws_mutating[ws] = true;
            }
            out.push(i);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::TaskNode;
    use TaskState::*;

    /// `ws_sizes` tasks per workstream; `deps` as (task, dep) global indices.
    fn dag(ws_sizes: &[usize], deps: &[(usize, usize)]) -> Dag {
        let mut d = Dag::default();
        let mut g = 0;
        for (w, &n) in ws_sizes.iter().enumerate() {
            d.ws_tasks.push(g..g + n);
            for t in 0..n {
                d.tasks.push(TaskNode {
                    ws: w,
                    task: t,
                    deps: vec![],
                });
            }
            g += n;
        }
        for &(t, dep) in deps {
            d.tasks[t].deps.push(dep);
        }
        d.levels = vec![0; g];
        for _ in 0..g {
            for i in 0..g {
                let l = d.tasks[i]
                    .deps
                    .iter()
                    .map(|&x| d.levels[x] + 1)
                    .max()
                    .unwrap_or(0);
                d.levels[i] = l;
            }
        }
        d.ws_deps = vec![vec![]; ws_sizes.len()];
        d
    }

    const fn slots(max: usize, cpu: usize, io: usize) -> Slots {
        Slots { max, cpu, io }
    }

    fn io(n: usize) -> Vec<TaskInfo> {
        vec![
            TaskInfo {
                class: TaskClass::Io,
                read_only: false,
                allow_failure: false
            };
            n
        ]
    }

    const SLOTS: Slots = slots(2, 2, 2);

    #[test]
    fn one_mutating_task_per_workstream() {
        let d = dag(&[3, 1], &[]);
        let info = io(4);
        let s = Scheduler::new(&d, &info, SLOTS);
        let st = vec![Ready, Ready, Ready, Ready];
        assert_eq!(s.startable(&st, &|_| false), vec![0, 3]);
        let st = vec![Running, Ready, Ready, Succeeded];
        assert!(s.startable(&st, &|_| false).is_empty());
    }

    #[test]
    fn read_only_tasks_overlap_each_other_only() {
        let d = dag(&[3], &[]);
        let mut info = io(3);
        info[0].read_only = true;
        info[1].read_only = true;
        let s = Scheduler::new(&d, &info, slots(3, 3, 3));
        assert_eq!(s.startable(&[Ready, Ready, Ready], &|_| false), vec![0, 1]);
        assert!(s.startable(&[Ready, Ready, Running], &|_| false).is_empty());
    }

    #[test]
    fn class_slots_and_max_are_honoured() {
        let d = dag(&[1, 1, 1, 1], &[]);
        let mut info = io(4);
        info[0].class = TaskClass::Cpu;
        info[1].class = TaskClass::Cpu;
        let s = Scheduler::new(&d, &info, slots(3, 1, 3));
        assert_eq!(s.startable(&[Ready; 4], &|_| false), vec![0, 2, 3]);
        let s = Scheduler::new(&d, &info, slots(1, 1, 1));
        assert_eq!(s.startable(&[Ready; 4], &|_| false).len(), 1);
    }

    #[test]
    fn dependencies_gate_readiness_and_failures_block() {
        // ws0: t0 <- t1 ; ws1: t2 depends on t1 (cross-workstream)
        let d = dag(&[2, 1], &[(1, 0), (2, 1)]);
        let mut info = io(3);
        let s = Scheduler::new(&d, &info, SLOTS);
        assert_eq!(s.newly_ready(&[Pending; 3], &[true, true]), vec![0]);
        assert_eq!(
            s.newly_ready(&[Succeeded, Pending, Pending], &[true, true]),
            vec![1]
        );
        assert_eq!(
            s.newly_ready(&[Succeeded, Succeeded, Pending], &[true, false]),
            Vec::<usize>::new()
        );
        assert_eq!(s.blocked(&[Failed, Pending, Pending]), vec![1]);
        assert_eq!(s.blocked(&[Failed, Skipped, Pending]), vec![2]);
        info[0].allow_failure = true;
        let s = Scheduler::new(&d, &info, SLOTS);
        assert!(s.blocked(&[Failed, Pending, Pending]).is_empty());
        assert_eq!(
            s.newly_ready(&[Failed, Pending, Pending], &[true, true]),
            vec![1]
        );
    }

    #[test]
    fn long_chains_start_first_and_held_tasks_wait() {
        // ws0: t0 (chain of 3 behind it in ws1), ws2: t4 alone
        let d = dag(&[1, 3, 1], &[(2, 1), (3, 2)]);
        let info = io(5);
        let s = Scheduler::new(&d, &info, slots(1, 1, 1));
        assert_eq!(
            s.startable(&[Ready, Ready, Pending, Pending, Ready], &|_| false),
            vec![1]
        );
        assert_eq!(
            s.startable(&[Ready, Ready, Pending, Pending, Ready], &|i| i == 1),
            vec![0]
        );
    }
}
