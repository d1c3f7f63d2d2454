//! `mpw report --html`: one self-contained HTML file (inline CSS and SVG, no
//! scripts, no network) with the run's summary, workstreams, a timeline of
//! every attempt, the concurrency over time, and the integration results.

use crate::store::{AttemptRow, IntegrationRow, RunStatus};
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms_of(ts: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts)
        .ok()
        .map(|t| t.timestamp_millis())
}

fn color(state: &str) -> &'static str {
    crate::report::Tone::of(state).css()
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#1f2933;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #e4e7eb;padding-bottom:4px}
.muted{color:#616e7c} code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f5f7fa;padding:1px 4px;border-radius:3px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{border:1px solid #e4e7eb;border-radius:6px;padding:8px 14px;min-width:90px}
.card b{display:block;font-size:20px}
table{border-collapse:collapse;font-size:13px} th,td{text-align:left;padding:3px 10px;border-bottom:1px solid #eef0f2;vertical-align:top}
th{background:#f5f7fa;font-weight:600}
.st{display:inline-block;padding:0 6px;border-radius:3px;color:#fff;font-size:11px;font-weight:600}
svg text{font:11px system-ui,sans-serif;fill:#1f2933}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.scroll{overflow-x:auto;border:1px solid #e4e7eb;border-radius:6px;padding:6px}
"#;

fn badge(state: &str) -> String {
    format!(
        r#"<span class="st" style="background:{}">{}</span>"#,
        color(state),
        esc(state)
    )
}

fn human(ms: i64) -> String {
    crate::report::human_ms(ms)
}

/// Render the report.
pub fn render(st: &RunStatus, attempts: &[AttemptRow], integrations: &[IntegrationRow]) -> String {
    let mut h = String::with_capacity(64 * 1024 + attempts.len() * 300);
    let title = st
        .name
        .clone()
        .unwrap_or_else(|| format!("run {}", st.run_id));
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>mpw: {}</title><style>{CSS}</style></head><body>",
        esc(&title)
    );
    let took = st.duration_ms.map(human).unwrap_or_else(|| "-".into());
    let _ = write!(
        h,
        "<h1>{} {}</h1><div class=\"muted\">run <code>{}</code> · base {}<code>{}</code> · started {} · took {took}<br>repository <code>{}</code></div>",
        esc(&title),
        badge(st.state.as_str()),
        esc(&st.run_id),
        st.base_ref
            .as_deref()
            .map(|b| format!("<code>{}</code> @ ", esc(b)))
            .unwrap_or_default(),
        esc(&st.base[..st.base.len().min(10)]),
        esc(st.started_at.as_deref().unwrap_or("-")),
        esc(&st.repo)
    );
    // Summary cards.
    h.push_str("<div class=\"cards\">");
    let _ = write!(
        h,
        "<div class=\"card\"><b>{}</b>workstreams</div>",
        st.workstreams.len()
    );
    let _ = write!(
        h,
        "<div class=\"card\"><b>{}</b>tasks</div>",
        st.counts.tasks
    );
    for (k, v) in &st.counts.by_state {
        let _ = write!(
            h,
            "<div class=\"card\" style=\"border-left:4px solid {}\"><b>{v}</b>{}</div>",
            color(k),
            esc(&k.to_lowercase())
        );
    }
    let _ = write!(
        h,
        "<div class=\"card\"><b>{}</b>attempts</div>",
        attempts.len()
    );
    h.push_str("</div>");

    timeline(&mut h, st, attempts);

    // Workstream table.
    h.push_str("<h2>Workstreams</h2><table><tr><th>Workstream</th><th>State</th><th>Tasks</th><th>Branch</th><th>Head</th><th>Detail</th></tr>");
    for w in &st.workstreams {
        let ok = w.counts.get(crate::model::TaskState::Succeeded);
        let _ = write!(
            h,
            "<tr><td><b>{}</b>{}</td><td>{}</td><td>{ok}/{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&w.id),
            w.name
                .as_deref()
                .map(|n| format!("<br><span class=\"muted\">{}</span>", esc(n)))
                .unwrap_or_default(),
            badge(w.state.as_str()),
            w.counts.tasks,
            esc(&w.branch),
            esc(&w.head.as_deref().unwrap_or("-")
                [..w.head.as_deref().map(|x| x.len().min(10)).unwrap_or(1)]),
            esc(w.reason.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>");

    // Problems: tasks that did not succeed.
    let bad: Vec<_> = st
        .workstreams
        .iter()
        .flat_map(|w| w.tasks.iter().map(move |t| (w, t)))
        .filter(|(_, t)| t.state != crate::model::TaskState::Succeeded)
        .collect();
    if !bad.is_empty() {
        h.push_str("<h2>Tasks that did not succeed</h2><table><tr><th>Task</th><th>State</th><th>Attempts</th><th>Exit</th><th>Reason</th><th>Work kept in</th></tr>");
        for (w, t) in bad.iter().take(500) {
            let _ = write!(
                h,
                "<tr><td><code>{}/{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w.id),
                esc(&t.id),
                badge(t.state.as_str()),
                t.attempts,
                t.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                esc(t.reason.as_deref().unwrap_or("")),
                t.preserved_ref
                    .as_deref()
                    .map(|r| format!("<code>{}</code>", esc(r)))
                    .unwrap_or_default()
            );
        }
        h.push_str("</table>");
        if bad.len() > 500 {
            let _ = write!(h, "<p class=\"muted\">and {} more</p>", bad.len() - 500);
        }
    }

    // Integration.
    h.push_str("<h2>Integration</h2>");
    if integrations.is_empty() {
        let _ = write!(
            h,
            "<p class=\"muted\">Not integrated yet (<code>mpw integrate {}</code>).</p>",
            esc(&st.run_id)
        );
    } else {
        h.push_str("<table><tr><th>When</th><th>Workstream</th><th>Into</th><th>Result</th><th>Commit</th><th>Detail</th></tr>");
        for i in integrations {
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td><td>{}{}</td></tr>",
                esc(&i.at),
                esc(&i.ws),
                esc(&i.into_branch),
                badge(i.state.as_str()),
                esc(i
                    .commit
                    .as_deref()
                    .map(|c| &c[..c.len().min(10)])
                    .unwrap_or("-")),
                esc(i.reason.as_deref().unwrap_or("")),
                if i.conflicts.is_empty() {
                    String::new()
                } else {
                    format!(
                        "<br>conflicts: <code>{}</code>",
                        esc(&i.conflicts.join(", "))
                    )
                }
            );
        }
        h.push_str("</table>");
    }
    if !st.gate_runs.is_empty() {
        // The same tree as `mpw status` draws.
        let tree = super::gate_tree(&st.gate_runs, super::Style { color: false });
        let _ = write!(h, "<h3>Gate runs</h3><pre>{}</pre>", esc(&tree));
    }
    let _ = write!(
        h,
        "<p class=\"muted\" style=\"margin-top:28px\">Generated by mpw {} from <code>run_status.json</code> schema {}.</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        st.schema
    );
    h
}

/// One lane per workstream, a bar per attempt; then the concurrency chart.
fn timeline(h: &mut String, st: &RunStatus, attempts: &[AttemptRow]) {
    h.push_str("<h2>Timeline</h2>");
    let spans: Vec<(usize, i64, i64, &AttemptRow)> = attempts
        .iter()
        .filter_map(|a| {
            let lane = st.workstreams.iter().position(|w| w.id == a.ws)?;
            let s = ms_of(&a.started_at)?;
            // The time it ran: an attempt cut short by a dead coordinator
            // ends when that was last seen, not when the run was resumed.
            let e = a
                .duration_ms
                .map(|d| s + d)
                .or_else(|| a.finished_at.as_deref().and_then(ms_of))
                .unwrap_or(s);
            Some((lane, s, e.max(s), a))
        })
        .collect();
    if spans.is_empty() {
        h.push_str("<p class=\"muted\">No task has run yet.</p>");
        return;
    }
    let t0 = spans.iter().map(|s| s.1).min().unwrap();
    let t1 = spans.iter().map(|s| s.2).max().unwrap().max(t0 + 1);
    let total = (t1 - t0) as f64;
    let label_w = 150.0;
    let plot_w = 1000.0;
    let lanes = st.workstreams.len();
    let lane_h = if lanes > 40 { 10.0 } else { 20.0 };
    let top = 22.0;
    let height = top + lanes as f64 * lane_h + 8.0;
    let x = |t: i64| label_w + (t - t0) as f64 / total * plot_w;
    h.push_str("<div class=\"legend\">");
    for s in [
        "SUCCEEDED",
        "FAILED",
        "QUARANTINED",
        "CANCELLED",
        "INTERRUPTED",
        "RUNNING",
    ] {
        let _ = write!(
            h,
            "<span><i style=\"background:{}\"></i>{}</span>",
            color(s),
            s.to_lowercase()
        );
    }
    h.push_str("<span class=\"muted\">hover a bar for the task, times and exit code</span></div><div class=\"scroll\">");
    let _ = write!(
        h,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{height:.0}\" role=\"img\" aria-label=\"timeline\">",
        label_w + plot_w + 20.0
    );
    // Time axis.
    for k in 0..=5 {
        let t = t0 + (total * k as f64 / 5.0) as i64;
        let px = x(t);
        let _ = write!(
            h,
            "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{height:.0}\" stroke=\"#eef0f2\"/><text x=\"{px:.1}\" y=\"12\" text-anchor=\"middle\">{}</text>",
            top - 4.0,
            human(t - t0)
        );
    }
    for (i, w) in st.workstreams.iter().enumerate() {
        let y = top + i as f64 * lane_h;
        if i % 2 == 0 {
            let _ = write!(
                h,
                "<rect x=\"0\" y=\"{y:.1}\" width=\"{:.0}\" height=\"{lane_h}\" fill=\"#f8f9fb\"/>",
                label_w + plot_w
            );
        }
        if lane_h >= 14.0 || i % 2 == 0 {
            let _ = write!(
                h,
                "<text x=\"4\" y=\"{:.1}\" font-size=\"{}\">{}</text>",
                y + lane_h * 0.75,
                if lane_h < 14.0 { 9 } else { 11 },
                esc(&w.id)
            );
        }
    }
    for (lane, s, e, a) in &spans {
        let y = top + *lane as f64 * lane_h + 2.0;
        let w = (x(*e) - x(*s)).max(1.0);
        let state = a.state.as_str();
        let _ = write!(
            h,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" rx=\"2\" fill=\"{}\" fill-opacity=\"0.9\"><title>{}/{} attempt {} {state}\n{} .. {}\n{}exit {}{}{}</title></rect>",
            x(*s),
            lane_h - 4.0,
            color(state),
            esc(&a.ws),
            esc(&a.task),
            a.attempt,
            esc(&a.started_at),
            esc(a.finished_at.as_deref().unwrap_or("running")),
            a.duration_ms
                .map(|d| format!("{} · ", human(d)))
                .unwrap_or_default(),
            a.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            // The process that ran it; for a worker task, the warm worker's pid.
            a.pid.map(|p| format!(" · pid {p}")).unwrap_or_default(),
            a.reason
                .as_deref()
                .map(|r| format!("\n{}", esc(r)))
                .unwrap_or_default()
        );
    }
    h.push_str("</svg></div>");

    // Concurrency: tasks running at each moment, as a step chart.
    let mut edges: Vec<(i64, i32)> = spans
        .iter()
        .flat_map(|(_, s, e, _)| [(*s, 1), (*e, -1)])
        .collect();
    edges.sort();
    let mut level = 0;
    let mut peak = 0;
    let mut pts = Vec::with_capacity(edges.len() * 2);
    for (t, d) in &edges {
        pts.push((*t, level));
        level += d;
        pts.push((*t, level));
        peak = peak.max(level);
    }
    let ch = 90.0;
    let scale = |l: i32| 10.0 + ch - (l as f64 / peak.max(1) as f64) * ch;
    let _ = write!(
        h,
        "<h2>Concurrency</h2><p class=\"muted\">Tasks running at once; peak {peak}.</p><div class=\"scroll\"><svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{:.0}\" height=\"{:.0}\" role=\"img\" aria-label=\"concurrency\">",
        label_w + plot_w + 20.0,
        ch + 30.0
    );
    for l in 0..=peak {
        if peak > 10 && l % (peak / 5).max(1) != 0 {
            continue;
        }
        let y = scale(l);
        let _ = write!(
            h,
            "<line x1=\"{label_w}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eef0f2\"/><text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{l}</text>",
            label_w + plot_w,
            label_w - 6.0,
            y + 4.0
        );
    }
    let path: String = pts
        .iter()
        .map(|(t, l)| format!("{:.1},{:.1}", x(*t), scale(*l)))
        .collect::<Vec<_>>()
        .join(" ");
    let _ = write!(
        h,
        "<polyline points=\"{path}\" fill=\"none\" stroke=\"#3b82c4\" stroke-width=\"1.5\"/></svg></div>"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AttemptState, RunState, TaskState, WorkstreamState};
    use crate::report::test_support::ws_status;
    use crate::store::{Counts, TaskStatus};

    /// 100 workstreams x 100 tasks, one attempt each, 50 ms apart.
    fn big() -> (RunStatus, Vec<AttemptRow>) {
        let ts = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(1_790_000_000_000 + ms)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        let mut wss = Vec::new();
        let mut attempts = Vec::new();
        for w in 0..100 {
            let mut tasks = Vec::new();
            for t in 0..100 {
                let start = (w * 7 + t * 50) as i64;
                let state = if (w + t) % 37 == 0 {
                    AttemptState::Failed
                } else {
                    AttemptState::Succeeded
                };
                attempts.push(AttemptRow {
                    ws: format!("W{w:03}"),
                    task: format!("T{t}"),
                    attempt: 1,
                    state,
                    start_commit: None,
                    pid: None,
                    pgid: None,
                    proc_start: None,
                    exit_code: Some(0),
                    reason: None,
                    started_at: ts(start),
                    finished_at: Some(ts(start + 40)),
                    duration_ms: Some(40),
                });
                tasks.push(TaskStatus {
                    ws: format!("W{w:03}"),
                    id: format!("T{t}"),
                    idx: t as usize,
                    name: None,
                    state: TaskState::Succeeded,
                    attempts: 1,
                    exit_code: Some(0),
                    commit: None,
                    preserved_ref: None,
                    reason: None,
                    started_at: Some(ts(start)),
                    finished_at: Some(ts(start + 40)),
                    duration_ms: Some(40),
                });
            }
            wss.push(ws_status(
                &format!("W{w:03}"),
                WorkstreamState::Completed,
                tasks,
            ));
        }
        let st = RunStatus {
            schema: 1,
            run_id: "R".into(),
            name: Some("big <plan>".into()),
            state: RunState::Completed,
            repo: "/tmp/repo".into(),
            base: "0".repeat(40),
            base_ref: Some("main".into()),
            started_at: Some(ts(0)),
            finished_at: Some(ts(6000)),
            duration_ms: Some(6000),
            counts: Counts::default(),
            workstreams: wss,
            gate_runs: vec![],
        };
        (st, attempts)
    }

    #[test]
    fn a_100_by_100_run_renders_every_attempt_compactly() {
        let (st, attempts) = big();
        let html = render(&st, &attempts, &[]);
        // One bar per attempt, each with its hover text.
        assert_eq!(
            html.matches("attempt 1 SUCCEEDED").count() + html.matches("attempt 1 FAILED").count(),
            10_000
        );
        assert!(html.contains("big &lt;plan&gt;"), "names are escaped");
        assert!(!html.contains("<script"));
        // Compact lanes keep 100 workstreams on about one screen height.
        let h: f64 = html
            .split("aria-label=\"timeline\"")
            .next()
            .unwrap()
            .rsplit("height=\"")
            .next()
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(h <= 1100.0, "timeline height {h}");
        assert!(html.len() < 5_000_000, "{} bytes", html.len());
    }
}
