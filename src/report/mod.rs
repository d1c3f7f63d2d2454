//! Everything users read about runs: live progress (bars or plain lines),
//! the status table, the final summary. Listeners only listen to events.

pub mod html;
mod progress;
#[cfg(test)]
mod test_support;

pub use progress::{Progress, WsProgress};

use crate::model::{
    Event, EventData, EventKind, RunState, TaskState, WorkstreamFacts, WorkstreamState,
};
use crate::runner::Listener;
use crate::store::{GateRunRow, Layout, RunStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, Instant};

/// Colours, or none.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
    pub fn state(&self, s: &str) -> String {
        self.paint(state_colour(s), s)
    }
    pub fn dim(&self, s: &str) -> String {
        self.paint("2", s)
    }
    pub fn bold(&self, s: &str) -> String {
        self.paint("1", s)
    }
}

/// What a state's colour says, the same in the terminal and in the HTML
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    Done,
    Failed,
    Quarantined,
    Active,
    Stopped,
    Waiting,
    /// Not a state.
    Plain,
}

impl Tone {
    pub(crate) fn of(state: &str) -> Tone {
        match state {
            "SUCCEEDED" | "COMPLETED" | "INTEGRATED" | "PASSED" | "CLEAN" | "RESTACKED"
            | "UP_TO_DATE" => Tone::Done,
            "FAILED" | "CONFLICT" | "GATE_FAILED" => Tone::Failed,
            "QUARANTINED" => Tone::Quarantined,
            "RUNNING" | "READY" => Tone::Active,
            "SKIPPED" | "CANCELLED" | "INTERRUPTED" => Tone::Stopped,
            "PENDING" => Tone::Waiting,
            _ => Tone::Plain,
        }
    }

    /// The SGR code of a terminal.
    fn ansi(self) -> &'static str {
        match self {
            Tone::Done => "32",
            Tone::Failed => "31",
            Tone::Quarantined => "35",
            Tone::Active => "36",
            Tone::Stopped => "33",
            Tone::Waiting => "2",
            Tone::Plain => "0",
        }
    }

    /// The same hue for a web page.
    pub(crate) fn css(self) -> &'static str {
        match self {
            Tone::Done => "#2e9e5b",
            Tone::Failed => "#d64545",
            Tone::Quarantined => "#9b4dca",
            Tone::Active => "#3b82c4",
            Tone::Stopped => "#e09b2d",
            Tone::Waiting | Tone::Plain => "#9aa5b1",
        }
    }
}

fn state_colour(s: &str) -> &'static str {
    Tone::of(s).ansi()
}

/// `1.2s`, `3m04s`, `1h02m`.
pub fn human_ms(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

fn short(id: &Option<String>) -> String {
    id.as_deref()
        .map(|s| s.chars().take(10).collect())
        .unwrap_or_else(|| "-".into())
}

fn elapsed_ms(from: &Option<String>, to: &Option<String>) -> Option<i64> {
    let parse = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
    let a = parse(from.as_deref()?)?;
    let b = match to {
        Some(t) => parse(t)?,
        None => chrono::Utc::now().into(),
    };
    Some((b - a).num_milliseconds())
}

/// A run's state as `status` and `runs` show it: a RUNNING run whose
/// coordinator is gone says how to continue it.
pub fn run_state_label(state: RunState, run_id: &str, coordinator_gone: bool) -> String {
    if coordinator_gone {
        format!("{state} (coordinator gone: mpw resume {run_id})")
    } else {
        state.to_string()
    }
}

/// The status table of `mpw status` and of the end of `mpw run`.
pub fn status_table(st: &RunStatus, style: Style, coordinator_gone: bool) -> String {
    let mut out = String::new();
    let took = st
        .duration_ms
        .map(|ms| format!(", {}", human_ms(ms)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{} {}{} {}  {}",
        style.bold("run"),
        st.run_id,
        st.name
            .as_ref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default(),
        style.paint(
            state_colour(st.state.as_str()),
            &run_state_label(st.state, &st.run_id, coordinator_gone)
        ),
        style.dim(&format!(
            "base {}{}{}",
            st.base_ref
                .as_deref()
                .map(|b| format!("{b} @ "))
                .unwrap_or_default(),
            &st.base[..st.base.len().min(10)],
            took
        ))
    );
    let w_id = st
        .workstreams
        .iter()
        .flat_map(|w| std::iter::once(w.id.len()).chain(w.tasks.iter().map(|t| t.id.len() + 2)))
        .max()
        .unwrap_or(4)
        .max(10);
    let _ = writeln!(
        out,
        "{}",
        style.dim(&format!(
            "{:<w_id$}  {:<12}  {:>7}  {:>8}  DETAIL",
            "WORKSTREAM", "STATE", "TRIES", "TIME"
        ))
    );
    for w in &st.workstreams {
        let done = w.counts.get(TaskState::Succeeded);
        let detail = match (&w.integration, &w.reason) {
            (Some(i), _) => format!(
                "{} into {}{}",
                w.branch,
                i.into,
                if i.conflicts.is_empty() {
                    String::new()
                } else {
                    format!("; conflicts: {}", i.conflicts.join(", "))
                }
            ),
            (None, Some(r)) if w.state != WorkstreamState::Completed => {
                format!("{}; {r}", w.branch)
            }
            _ => w.branch.clone(),
        };
        let flaky = st
            .gate_runs
            .iter()
            .any(|g| g.flaky && g.covered.contains(&w.id));
        let detail = match flaky {
            true => format!("{detail}; {}", style.state("gate flaky")),
            false => detail,
        };
        let time = w.duration_ms.map(human_ms).unwrap_or_default();
        let _ = writeln!(
            out,
            "{}  {}  {:>7}  {:>8}  {}",
            style.bold(&format!("{:<w_id$}", w.id)),
            pad(&style.state(w.state.as_str()), w.state.as_str().len(), 12),
            format!("{done}/{}", w.counts.tasks),
            time,
            detail
        );
        for t in &w.tasks {
            let time = t
                .duration_ms
                .or_else(|| {
                    (t.state == TaskState::Running)
                        .then(|| elapsed_ms(&t.started_at, &None))
                        .flatten()
                })
                .map(human_ms)
                .unwrap_or_default();
            let detail = match t.state {
                TaskState::Succeeded => match &t.commit {
                    Some(_) => format!("commit {}", short(&t.commit)),
                    None => style.dim("no change"),
                },
                _ => {
                    let mut d = t.reason.clone().unwrap_or_default();
                    if let Some(r) = &t.preserved_ref {
                        let _ = write!(d, "; work kept in {r}");
                    }
                    d
                }
            };
            let _ = writeln!(
                out,
                "  {:<w$}  {}  {:>7}  {:>8}  {}",
                t.id,
                pad(&style.state(t.state.as_str()), t.state.as_str().len(), 12),
                t.attempts,
                time,
                detail,
                w = w_id - 2
            );
        }
    }
    out.push_str(&gate_tree(&st.gate_runs, style));
    out
}

/// The gate runs of `mpw integrate` as a small tree: in a batch, a run sits
/// under the latest earlier run whose workstreams include its own, as the
/// bisection narrowed the search.
pub fn gate_tree(runs: &[GateRunRow], style: Style) -> String {
    let mut out = String::new();
    if runs.is_empty() {
        return out;
    }
    let _ = writeln!(out, "{}", style.dim("GATE RUNS"));
    let mut depth: Vec<usize> = Vec::with_capacity(runs.len());
    for (i, g) in runs.iter().enumerate() {
        let parent = (0..i).rev().find(|&j| {
            let p = &runs[j];
            g.batch.is_some()
                && p.batch == g.batch
                && p.covered.len() > g.covered.len()
                && g.covered.iter().all(|c| p.covered.contains(c))
        });
        let d = parent.map_or(0, |j| depth[j] + 1);
        depth.push(d);
        let result = style.state(if g.passed { "PASSED" } else { "FAILED" });
        let flaky = if g.flaky { " (flaky)" } else { "" };
        let batch = g.batch.map(|b| format!("batch {b} ")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{}#{} {batch}{result}{flaky}  {}  {}{}",
            "  ".repeat(d + 1),
            g.id,
            human_ms(g.duration_ms),
            g.covered.join(" "),
            if g.passed {
                String::new()
            } else {
                format!("  log {}", g.log)
            }
        );
    }
    out
}

/// A state name coloured and padded to a column of 12.
pub fn pad_state(style: &Style, s: &str) -> String {
    let word = s.split(' ').next().unwrap_or(s);
    pad(&style.paint(state_colour(word), s), s.len(), 12)
}

fn pad(s: &str, visible: usize, width: usize) -> String {
    format!("{s}{}", " ".repeat(width.saturating_sub(visible)))
}

/// The hints the run's task events carry ("ws/task: hint"), in order.
pub fn task_hints<'a>(events: impl IntoIterator<Item = &'a Event>) -> Vec<String> {
    events
        .into_iter()
        .filter_map(|ev| {
            let h = ev.data.task()?.hint.as_ref()?;
            let who = match (&ev.workstream, &ev.task) {
                (Some(w), Some(t)) => format!("{w}/{t}"),
                _ => ev.run.clone(),
            };
            Some(format!("{who}: {h}"))
        })
        .collect()
}

/// What the closing lines need besides the status.
pub struct Closing<'a> {
    /// The tasks' hints ("ws/task: hint"), see `task_hints`.
    pub hints: Vec<String>,
    /// Where the logs are, to name the one with content.
    pub layout: &'a Layout,
    /// The plan the run was started from, for the commands to suggest.
    pub plan: Option<String>,
}

/// The closing lines of `mpw run`: counts, the tasks' hints, and for each
/// task that did not succeed the log with content and one next step.
pub fn summary(st: &RunStatus, closing: &Closing, style: Style) -> String {
    let hints = &closing.hints;
    let mut out = status_table(st, style, false);
    let c = &st.counts;
    let _ = writeln!(
        out,
        "\n{} tasks: {} succeeded, {} failed, {} quarantined, {} skipped, {} cancelled",
        c.tasks,
        c.get(TaskState::Succeeded),
        c.get(TaskState::Failed),
        c.get(TaskState::Quarantined),
        c.get(TaskState::Skipped),
        c.get(TaskState::Cancelled)
    );
    for h in hints {
        let _ = writeln!(out, "  hint: {h}");
    }
    for w in &st.workstreams {
        for t in &w.tasks {
            if !matches!(
                t.state,
                TaskState::Failed | TaskState::Quarantined | TaskState::Cancelled
            ) {
                continue;
            }
            let who = format!("{}/{}", w.id, t.id);
            let attempt = t.attempts.max(1);
            let log = |err| closing.layout.log(&st.run_id, &w.id, &t.id, attempt, err);
            let see = match Layout::log_with_content(&log(false), &log(true)) {
                Some(true) => format!("mpw logs {} {who} --stderr", st.run_id),
                Some(false) => format!("mpw logs {} {who}", st.run_id),
                None => "it printed nothing".into(),
            };
            let _ = writeln!(out, "  {who} {}: {see}", t.state);
            let plan = closing.plan.as_deref().unwrap_or("PLAN");
            // A new run: it needs a run id of its own when the plan fixes one.
            let rerun = format!(
                "mpw run {plan} --workstream {} (a new run; change the plan's run_id if it sets one)",
                w.id
            );
            let kept = t
                .preserved_ref
                .as_ref()
                .map(|r| format!("its work is kept at {r}; "))
                .unwrap_or_default();
            let next = match t.state {
                TaskState::Quarantined => format!(
                    "{kept}widen allowed_paths or ignore in the plan, or drop the change from the task, then: {rerun}"
                ),
                TaskState::Failed => format!("{kept}fix the cause, then: {rerun}"),
                _ => format!(
                    "{kept}it was stopped; mpw resume {} runs it again",
                    st.run_id
                ),
            };
            let _ = writeln!(out, "    next: {next}");
        }
    }
    match st.state {
        RunState::Completed => {
            let _ = writeln!(out, "next: mpw integrate {}", st.run_id);
        }
        RunState::Cancelled => {
            let _ = writeln!(out, "continue with: mpw resume {}", st.run_id);
        }
        _ => {}
    }
    out
}

/// One line of text for an event, as the plain log shows it.
pub fn event_line(ev: &Event) -> String {
    let who = match (&ev.workstream, &ev.task) {
        (Some(w), Some(t)) => format!("{w}/{t}"),
        (Some(w), None) => w.clone(),
        _ => format!("run {}", ev.run),
    };
    let mut line = format!("{who} {}", ev.kind().as_str());
    let (task, ws) = (ev.data.task(), ws_facts(&ev.data));
    if let Some(ms) = task.and_then(|f| f.duration_ms) {
        let _ = write!(line, " in {}", human_ms(ms));
    }
    if let Some(a) = ev
        .attempt
        .filter(|a| *a > 1 || ev.kind() == EventKind::TaskRetry)
    {
        let _ = write!(line, " (attempt {a})");
    }
    let commit = match &ev.data {
        EventData::WorktreeCreated(w) => Some(&w.commit),
        d => d.task().and_then(|f| f.commit.as_ref()),
    };
    if let Some(c) = commit {
        let _ = write!(line, " commit {}", &c[..c.len().min(10)]);
    }
    let reason = match &ev.data {
        EventData::SetupFailed(s) => Some(&s.reason),
        _ => task
            .and_then(|f| f.reason.as_ref())
            .or(ws.and_then(|f| f.reason.as_ref())),
    };
    if let Some(r) = reason {
        let _ = write!(line, ": {r}");
    }
    if let Some(h) = task.and_then(|f| f.hint.as_ref()) {
        let _ = write!(line, "; {h}");
    }
    if let EventData::WorktreeCreated(w) = &ev.data {
        let _ = write!(line, " at {}", w.path);
    }
    match &ev.data {
        EventData::BatchStarted(b) => {
            let _ = write!(line, " {}: {}", b.batch, b.candidates.join(", "));
            if !b.taken_out.is_empty() {
                let _ = write!(
                    line,
                    "; taken out before gating (the forecast says they conflict with an earlier one): {}",
                    b.taken_out.join(", ")
                );
            }
        }
        EventData::GatePassed(g) => {
            let _ = write!(
                line,
                " gate run {} over {} in {}",
                g.gate_run,
                g.covered.join(", "),
                human_ms(g.duration_ms)
            );
            if g.flaky {
                let _ = write!(line, " (flaky: it failed before it passed)");
            }
        }
        EventData::BisectSplit(b) => {
            let _ = write!(
                line,
                " gate run {} failed: search {} then {}",
                b.gate_run,
                b.first.join(", "),
                b.rest.join(", ")
            );
        }
        EventData::Restacked(r) => {
            let _ = write!(
                line,
                " onto {} by {}: {} -> {}",
                r.upstreams.join(", "),
                match r.mode {
                    crate::model::RestackMode::Merge => "merge",
                    crate::model::RestackMode::Rebase => "rebase",
                },
                &r.from[..r.from.len().min(10)],
                &r.to[..r.to.len().min(10)]
            );
        }
        EventData::GateFailed(g) if !g.covered.is_empty() => {
            let _ = write!(line, " (gate run over {})", g.covered.join(", "));
        }
        _ => {}
    }
    if let Some(w) = ev.data.worker() {
        let _ = write!(line, " {} pid {}", w.worker, w.pid);
        if ev.kind() != EventKind::WorkerStarted {
            let _ = write!(line, " after {} request(s)", w.requests);
        }
        if let Some(r) = &w.reason {
            let _ = write!(line, ": {r}");
        }
    }
    if let EventData::RunResumed(l) | EventData::RunCancelled(l) = &ev.data
        && !l.stale_locks_removed.is_empty()
    {
        let _ = write!(
            line,
            "; removed git lock files a killed process left: {}",
            l.stale_locks_removed.join(", ")
        );
    }
    line
}

/// The facts of a workstream's run-phase event.
fn ws_facts(d: &EventData) -> Option<&WorkstreamFacts> {
    match d {
        EventData::WorkstreamStarted(f)
        | EventData::WorkstreamCompleted(f)
        | EventData::WorkstreamFailed(f)
        | EventData::WorkstreamQuarantined(f)
        | EventData::WorkstreamSkipped(f) => Some(f),
        _ => None,
    }
}

/// Plain timestamped lines on stderr (no terminal, `-q`, or `--json`).
pub struct LineListener {
    quiet: bool,
}

impl LineListener {
    pub fn new(quiet: bool) -> Self {
        LineListener { quiet }
    }
}

impl Listener for LineListener {
    fn event(&mut self, ev: &Event) {
        let important = matches!(
            ev.kind(),
            EventKind::TaskFailed
                | EventKind::TaskQuarantined
                | EventKind::SetupFailed
                | EventKind::WorkstreamFailed
                | EventKind::WorkstreamQuarantined
        );
        if self.quiet && !important {
            return;
        }
        if matches!(ev.kind(), EventKind::TaskReady) {
            return;
        }
        let time = ev.ts.get(11..19).unwrap_or(&ev.ts);
        let _ = writeln!(std::io::stderr().lock(), "{time} {}", event_line(ev));
    }
}

/// Live bars on a terminal: one per workstream and one for the run, drawing
/// what [`Progress`] counts.
pub struct BarListener {
    multi: MultiProgress,
    total: ProgressBar,
    bars: Vec<ProgressBar>,
    progress: Option<Progress>,
    started: Instant,
}

impl BarListener {
    pub fn new() -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        // Drawn from `start` on, when the run's size is known.
        let total = ProgressBar::hidden();
        BarListener {
            multi,
            total,
            bars: Vec::new(),
            progress: None,
            started: Instant::now(),
        }
    }
}

impl Default for BarListener {
    fn default() -> Self {
        Self::new()
    }
}

impl Listener for BarListener {
    fn start(&mut self, st: &RunStatus) {
        let p = Progress::new(st);
        self.total = self.multi.add(ProgressBar::new(p.total() as u64));
        self.total.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} tasks  {elapsed}  {msg}",
            )
            .unwrap()
            .progress_chars("=> "),
        );
        self.total.set_prefix("run");
        self.total.set_position(p.done() as u64);
        self.total.enable_steady_tick(Duration::from_millis(200));
        self.total.set_message(st.run_id.clone());
        let w = p.workstreams.iter().map(|w| w.id.len()).max().unwrap_or(4);
        let style = ProgressStyle::with_template(&format!(
            "{{prefix:<{w}.bold}} [{{bar:20.green/white}}] {{pos}}/{{len}} {{elapsed:>4}}  {{msg}}"
        ))
        .unwrap()
        .progress_chars("=> ");
        for ws in &p.workstreams {
            let b = self.multi.add(ProgressBar::new(ws.total as u64));
            b.set_style(style.clone());
            b.set_prefix(ws.id.clone());
            b.enable_steady_tick(Duration::from_millis(500));
            b.set_position(ws.done() as u64);
            b.set_message(ws.message());
            self.bars.push(b);
        }
        self.progress = Some(p);
    }

    fn event(&mut self, ev: &Event) {
        if matches!(
            ev.kind(),
            EventKind::TaskFailed | EventKind::TaskQuarantined | EventKind::SetupFailed
        ) {
            let _ = self.multi.println(event_line(ev));
        }
        // Events before `start` (a resume's recovery) are in its status.
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        let Some(i) = p.apply(ev) else {
            return;
        };
        let (w, b) = (&p.workstreams[i], &self.bars[i]);
        if ev.kind() == EventKind::TaskStarted {
            b.reset_elapsed();
        }
        b.set_position(w.done() as u64);
        if w.finished {
            b.finish_with_message(w.label.clone());
        } else {
            b.set_message(w.message());
        }
        self.total.set_position(p.done() as u64);
    }

    fn finish(&mut self, _st: &RunStatus) {
        self.total.finish_with_message(format!(
            "done in {}",
            human_ms(self.started.elapsed().as_millis() as i64)
        ));
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::Tone;
    use crate::model::{AttemptState, RunState, TaskState, WorkstreamState};

    #[test]
    fn every_state_has_a_colour_of_its_own_kind() {
        let names = TaskState::ALL
            .iter()
            .map(|s| s.as_str())
            .chain(AttemptState::ALL.iter().map(|s| s.as_str()))
            .chain(WorkstreamState::ALL.iter().map(|s| s.as_str()))
            .chain(RunState::ALL.iter().map(|s| s.as_str()));
        for n in names {
            let tone = Tone::of(n);
            assert_ne!(tone, Tone::Plain, "{n} has no colour");
            assert_eq!(tone == Tone::Waiting, n == "PENDING", "{n}");
        }
        assert_eq!(Tone::of("gate flaky"), Tone::Plain);
    }
}
