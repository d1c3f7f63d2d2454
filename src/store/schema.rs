//! The database's schema, its migrations and its connection settings.

use rusqlite::Connection;
use std::time::Duration;

pub(super) const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    name TEXT,
    state TEXT NOT NULL,
    repo TEXT NOT NULL,
    base TEXT NOT NULL,
    base_ref TEXT,
    plan_path TEXT,
    worktree_root TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    coordinator_pid INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    options TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE workstreams (
    run_id TEXT NOT NULL,
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    branch TEXT NOT NULL,
    worktree TEXT NOT NULL,
    start_commit TEXT,
    head TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    integration TEXT,
    baseline TEXT,
    PRIMARY KEY (run_id, id)
);
CREATE TABLE tasks (
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER,
    commit_id TEXT,
    preserved_ref TEXT,
    reason TEXT,
    started_at TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, ws, id)
);
CREATE TABLE attempts (
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    task TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    start_commit TEXT,
    pid INTEGER,
    pgid INTEGER,
    proc_start INTEGER,
    exit_code INTEGER,
    reason TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    PRIMARY KEY (run_id, ws, task, attempt)
);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ts TEXT NOT NULL,
    kind TEXT NOT NULL,
    ws TEXT,
    task TEXT,
    attempt INTEGER,
    data TEXT NOT NULL
);
CREATE INDEX events_run ON events (run_id, seq);
CREATE TABLE integrations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    ws TEXT NOT NULL,
    into_branch TEXT NOT NULL,
    state TEXT NOT NULL,
    branch_head TEXT NOT NULL,
    commit_id TEXT,
    conflicts TEXT NOT NULL,
    reason TEXT,
    at TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE gate_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    into_branch TEXT NOT NULL,
    batch INTEGER,
    covered TEXT NOT NULL,
    commit_id TEXT NOT NULL,
    result TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    flaky INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    log TEXT NOT NULL,
    at TEXT NOT NULL
);
"#,
    // The run's own events (RUN_*, when it ran), found without reading
    // every task's: `mpw status` and each status write need them.
    r#"
CREATE INDEX events_run_level ON events (run_id, seq) WHERE ws IS NULL;
"#,
];

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Several processes (a run, `mpw status`, a second run) share the file.
    conn.busy_timeout(Duration::from_secs(30))?;
    // Switching to WAL needs the file to itself and answers BUSY without
    // consulting the busy handler; once set it persists, so retry only
    // while another process is mid-switch (first use, several runs at once).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
        if mode.eq_ignore_ascii_case("wal") {
            break;
        }
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get::<_, String>(0)) {
            Ok(_) => break,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A run's writes touch the last pages of each table: 512 KiB of page
    // cache (default 2 MiB) keeps the coordinator small on big plans.
    conn.pragma_update(None, "cache_size", -512)?;
    // Every statement of a coordinator's hot path stays parsed (the default
    // keeps 16, fewer than one task's changes use).
    conn.set_prepared_statement_cache_capacity(48);
    Ok(())
}

pub(super) fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version as usize;
    if version >= MIGRATIONS.len() {
        return Ok(());
    }
    // IMMEDIATE: two processes migrating at once serialise here.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = version as usize;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version) {
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()
}
