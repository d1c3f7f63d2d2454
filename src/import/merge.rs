//! Merging a piece into this repository's database: checked first (same
//! plan, same base), then rows replaced by key and events added once.

use super::sql::{connect, insert, sql_value, update};
use super::{ImportError, Piece, Result, db, io};
use crate::store::Store;
use serde_json::{Map, Value, json};

/// Is this piece one of this run (same plan, same base)? Says why not.
pub fn check_piece(p: &Piece, run_id: &str, plan: &Value, base: &str) -> Result<()> {
    let what = format!("{}: piece of {}/{}", p.dir.display(), p.run_id, p.ws);
    if p.run_id != run_id {
        return Err(ImportError::Refused(format!(
            "{what} belongs to run {}, not {run_id}",
            p.run_id
        )));
    }
    if &p.plan != plan {
        return Err(ImportError::Refused(format!(
            "{what} comes from another plan than the one run {run_id} here was made from (they differ{}); refused",
            first_difference(&p.plan, plan)
                .map(|d| format!(" at {d}"))
                .unwrap_or_default()
        )));
    }
    if p.base != base {
        return Err(ImportError::Refused(format!(
            "{what} was run from base {}, but run {run_id} here starts from {base}: another base, refused",
            p.base
        )));
    }
    Ok(())
}

/// Where two plans first differ, as a JSON path, for the refusal message.
fn first_difference(a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) if u == v => {}
                    (Some(u), Some(v)) => {
                        return Some(match first_difference(u, v) {
                            Some(rest) => format!(".{k}{rest}"),
                            None => format!(".{k}"),
                        });
                    }
                    _ => return Some(format!(".{k}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (u, v)) in x.iter().zip(y).enumerate() {
                if u != v {
                    return Some(match first_difference(u, v) {
                        Some(rest) => format!("[{i}]{rest}"),
                        None => format!("[{i}]"),
                    });
                }
            }
            (x.len() != y.len()).then(|| format!("[{}]", x.len().min(y.len())))
        }
        _ => (a != b).then(String::new),
    }
}

/// Merge a checked piece's rows, events and logs into run `run_id`.
pub fn merge_piece(store: &mut Store, run_id: &str, p: &Piece) -> Result<()> {
    let layout = store.layout.clone();
    let mut conn = connect(&layout)?;
    let e = |err: rusqlite::Error| db(&layout, err);
    // The piece names a workstream or task this run does not have.
    let missing = |what: String| {
        ImportError::Refused(format!("{}: run {run_id} has no {what}", p.dir.display()))
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(e)?;
    let known: i64 = tx
        .query_row(
            "SELECT COUNT(*) FROM workstreams WHERE run_id = ?1 AND id = ?2",
            [run_id, &p.ws],
            |r| r.get(0),
        )
        .map_err(e)?;
    if known != 1 {
        return Err(missing(format!("workstream {}", p.ws)));
    }
    // This repository's own facts stay: position, worktree path, branch.
    update(
        &tx,
        "workstreams",
        &p.row,
        &["run_id", "id", "idx", "worktree", "branch"],
        &[("run_id", run_id), ("id", &p.ws)],
    )
    .map_err(e)?;
    for t in &p.tasks {
        let id = t.get("id").and_then(Value::as_str).unwrap_or_default();
        let n = update(
            &tx,
            "tasks",
            t,
            &["run_id", "ws", "id", "idx"],
            &[("run_id", run_id), ("ws", &p.ws), ("id", id)],
        )
        .map_err(e)?;
        if n != 1 {
            return Err(missing(format!("task {}/{id}", p.ws)));
        }
    }
    tx.execute(
        "DELETE FROM attempts WHERE run_id = ?1 AND ws = ?2",
        [run_id, &p.ws],
    )
    .map_err(e)?;
    for a in &p.attempts {
        let mut a = a.clone();
        a.insert("run_id".into(), json!(run_id));
        a.insert("ws".into(), json!(p.ws));
        // Process ids of another machine mean nothing here.
        for k in ["pid", "pgid", "proc_start"] {
            a.insert(k.into(), Value::Null);
        }
        insert(&tx, "attempts", &a).map_err(e)?;
    }
    let mut new_events = Vec::new();
    for ev in &p.events {
        let mut ev = ev.clone();
        ev.insert("run_id".into(), json!(run_id));
        ev.insert("ws".into(), json!(p.ws));
        let seen: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND ts IS ?2 AND kind IS ?3 AND ws IS ?4
                 AND task IS ?5 AND attempt IS ?6 AND data IS ?7",
                rusqlite::params![
                    run_id,
                    sql_value(ev.get("ts")),
                    sql_value(ev.get("kind")),
                    p.ws,
                    sql_value(ev.get("task")),
                    sql_value(ev.get("attempt")),
                    sql_value(ev.get("data")),
                ],
                |r| r.get(0),
            )
            .map_err(e)?;
        if seen == 0 {
            insert(&tx, "events", &ev).map_err(e)?;
            new_events.push(ev);
        }
    }
    tx.commit().map_err(e)?;
    // The same events to events.jsonl, after the commit, as the store does.
    if !new_events.is_empty() {
        let path = layout.events_jsonl(run_id);
        let mut text = String::new();
        for ev in &new_events {
            text.push_str(&jsonl_line(run_id, ev).to_string());
            text.push('\n');
        }
        use std::io::Write;
        std::fs::create_dir_all(layout.run_dir(run_id)).map_err(|e| io(&path, e))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| io(&path, e))?;
    }
    let logs = p.dir.join("logs");
    if let Ok(entries) = std::fs::read_dir(&logs) {
        let dst = layout.ws_logs(run_id, &p.ws);
        std::fs::create_dir_all(&dst).map_err(|e| io(&dst, e))?;
        for f in entries.flatten() {
            if f.file_type().is_ok_and(|t| t.is_file()) {
                let to = dst.join(f.file_name());
                std::fs::copy(f.path(), &to).map_err(|e| io(&to, e))?;
            }
        }
    }
    Ok(())
}

/// An event row as `events.jsonl` holds it.
fn jsonl_line(run_id: &str, row: &Map<String, Value>) -> Value {
    let mut o = Map::new();
    o.insert("ts".into(), row.get("ts").cloned().unwrap_or(Value::Null));
    o.insert(
        "kind".into(),
        row.get("kind").cloned().unwrap_or(Value::Null),
    );
    o.insert("run".into(), json!(run_id));
    for (col, key) in [
        ("ws", "workstream"),
        ("task", "task"),
        ("attempt", "attempt"),
    ] {
        if let Some(v) = row.get(col).filter(|v| !v.is_null()) {
            o.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(d)) = row
        .get("data")
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
    {
        o.extend(d);
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_difference_of_two_plans_is_named() {
        let a = json!({ "workstreams": [ { "id": "a", "tasks": [ { "run": "x" } ] } ] });
        let b = json!({ "workstreams": [ { "id": "a", "tasks": [ { "run": "y" } ] } ] });
        assert_eq!(
            first_difference(&a, &b).as_deref(),
            Some(".workstreams[0].tasks[0].run")
        );
        assert_eq!(first_difference(&a, &a), None);
        let c = json!({ "workstreams": [], "name": "n" });
        assert_eq!(first_difference(&a, &c).as_deref(), Some(".workstreams[0]"));
    }

    #[test]
    fn event_rows_become_events_jsonl_lines() {
        let row = json!({ "ts": "t", "kind": "TASK_FAILED", "ws": "w", "task": "T",
            "attempt": 2, "data": "{\"exit_code\":3}" });
        let line = jsonl_line("R", row.as_object().unwrap());
        assert_eq!(
            line,
            json!({ "ts": "t", "kind": "TASK_FAILED", "run": "R", "workstream": "w",
                "task": "T", "attempt": 2, "exit_code": 3 })
        );
    }
}
