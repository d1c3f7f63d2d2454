//! Writing a workstream's records as a piece, and reading pieces back.

use super::sql::{connect, rows};
use super::{ImportError, PIECE_FILE, Piece, Result, db, io};
use crate::plan;
use crate::store::{Layout, Store};
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};

const KIND: &str = "mpw-piece";
const SCHEMA: u64 = 1;

/// Write a piece per workstream in `wss` into `out/<ws>/`.
pub fn write_pieces(
    layout: &Layout,
    run_id: &str,
    wss: &[String],
    plan: &Value,
    out: &Path,
) -> Result<Vec<PathBuf>> {
    let store = Store::open_existing(layout.clone())?;
    let run = store.run(run_id)?;
    drop(store);
    let conn = connect(layout)?;
    let mut written = Vec::new();
    for ws in wss {
        let e = |e: rusqlite::Error| db(layout, e);
        let row = rows(
            &conn,
            "SELECT * FROM workstreams WHERE run_id = ?1 AND id = ?2",
            &[run_id, ws],
        )
        .map_err(e)?
        .pop()
        .ok_or_else(|| ImportError::Refused(format!("run {run_id} has no workstream {ws}")))?;
        let tasks = rows(
            &conn,
            "SELECT * FROM tasks WHERE run_id = ?1 AND ws = ?2 ORDER BY idx",
            &[run_id, ws],
        )
        .map_err(e)?;
        let attempts = rows(
            &conn,
            "SELECT * FROM attempts WHERE run_id = ?1 AND ws = ?2 ORDER BY task, attempt",
            &[run_id, ws],
        )
        .map_err(e)?;
        let mut events = rows(
            &conn,
            "SELECT * FROM events WHERE run_id = ?1 AND ws = ?2 ORDER BY seq",
            &[run_id, ws],
        )
        .map_err(e)?;
        for ev in &mut events {
            ev.remove("seq");
        }
        let dir = out.join(ws);
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(|e| io(&logs, e))?;
        let src = layout.ws_logs(run_id, ws);
        if let Ok(entries) = std::fs::read_dir(&src) {
            for f in entries.flatten() {
                if f.file_type().is_ok_and(|t| t.is_file()) {
                    let to = logs.join(f.file_name());
                    std::fs::copy(f.path(), &to).map_err(|e| io(&to, e))?;
                }
            }
        }
        let piece = json!({
            "kind": KIND,
            "schema": SCHEMA,
            "run_id": run_id,
            "workstream": ws,
            "name": run.name,
            "base": run.base,
            "base_ref": run.base_ref,
            "plan": plan,
            "row": row,
            "tasks": tasks,
            "attempts": attempts,
            "events": events,
        });
        let file = dir.join(PIECE_FILE);
        crate::store::write_atomic(&file, &serde_json::to_vec_pretty(&piece).unwrap())?;
        written.push(file);
    }
    Ok(written)
}

// ---------------------------------------------------------------- reading

/// Every piece under these directories (or piece files), in a stable order.
pub fn read_pieces(paths: &[PathBuf]) -> Result<Vec<Piece>> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_file() {
            files.push(p.clone());
        } else if p.is_dir() {
            find_pieces(p, &mut files)?;
        } else {
            return Err(ImportError::Refused(format!(
                "{}: no such file or directory",
                p.display()
            )));
        }
    }
    files.sort();
    files.dedup();
    files.iter().map(|f| read_piece(f)).collect()
}

fn find_pieces(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| io(&d, e))?.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if e.file_name() == PIECE_FILE {
                out.push(path);
            }
        }
    }
    Ok(())
}

fn read_piece(file: &Path) -> Result<Piece> {
    let bad =
        |why: &str| ImportError::Refused(format!("{}: not an mpw piece: {why}", file.display()));
    let text = std::fs::read_to_string(file).map_err(|e| io(file, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
    if v.get("kind").and_then(Value::as_str) != Some(KIND) {
        return Err(bad("no \"kind\": \"mpw-piece\""));
    }
    if v.get("schema").and_then(Value::as_u64) != Some(SCHEMA) {
        return Err(bad(&format!(
            "schema {} (this mpw reads {SCHEMA}); import it with the mpw version that wrote it",
            v.get("schema").unwrap_or(&Value::Null)
        )));
    }
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let obj = |k: &str| v.get(k).and_then(Value::as_object).cloned();
    let list = |k: &str| -> Vec<Map<String, Value>> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|x| x.as_object().cloned()).collect())
            .unwrap_or_default()
    };
    let run_id = s("run_id").ok_or_else(|| bad("no run_id"))?;
    let ws = s("workstream").ok_or_else(|| bad("no workstream"))?;
    let row = obj("row").ok_or_else(|| bad("no workstream row"))?;
    if plan::id_problem(&run_id).is_some() || plan::id_problem(&ws).is_some() {
        return Err(bad("its run or workstream id is not a valid id"));
    }
    Ok(Piece {
        dir: file.parent().unwrap_or(Path::new(".")).to_path_buf(),
        run_id,
        ws,
        name: s("name"),
        base: s("base").ok_or_else(|| bad("no base"))?,
        base_ref: s("base_ref"),
        plan: v.get("plan").cloned().ok_or_else(|| bad("no plan"))?,
        row,
        tasks: list("tasks"),
        attempts: list("attempts"),
        events: list("events"),
    })
}
