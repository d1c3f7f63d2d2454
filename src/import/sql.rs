//! Rows copied column by column as JSON objects, so the piece format
//! follows the schema.

use super::{Result, db};
use crate::store::Layout;
use rusqlite::{Connection, params_from_iter, types::ValueRef};
use serde_json::{Map, Value, json};

pub(super) fn connect(layout: &Layout) -> Result<Connection> {
    let conn = Connection::open(layout.db()).map_err(|e| db(layout, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| db(layout, e))?;
    Ok(conn)
}

/// Rows as JSON objects keyed by column name.
pub(super) fn rows(
    conn: &Connection,
    sql: &str,
    args: &[&str],
) -> rusqlite::Result<Vec<Map<String, Value>>> {
    let mut st = conn.prepare(sql)?;
    let cols: Vec<String> = st.column_names().map(|c| c.to_string()).collect();
    let mut out = Vec::new();
    let mut q = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = q.next()? {
        let mut m = Map::new();
        for (i, c) in cols.iter().enumerate() {
            let v = match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(n) => json!(n),
                ValueRef::Real(f) => json!(f),
                ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                ValueRef::Blob(_) => continue,
            };
            m.insert(c.clone(), v);
        }
        out.push(m);
    }
    Ok(out)
}

fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    st.query_map([], |r| r.get::<_, String>(1))?.collect()
}

pub(super) fn sql_value(v: Option<&Value>) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        None | Some(Value::Null) => S::Null,
        Some(Value::Bool(b)) => S::Integer(*b as i64),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => S::Integer(i),
            None => S::Real(n.as_f64().unwrap_or(0.0)),
        },
        Some(Value::String(s)) => S::Text(s.clone()),
        Some(other) => S::Text(other.to_string()),
    }
}

/// `UPDATE table SET <the row's columns known here, but not `keep`> WHERE keys`.
pub(super) fn update(
    conn: &Connection,
    table: &str,
    row: &Map<String, Value>,
    keep: &[&str],
    keys: &[(&str, &str)],
) -> rusqlite::Result<usize> {
    let known = columns(conn, table)?;
    let set: Vec<&String> = known
        .iter()
        .filter(|c| !keep.contains(&c.as_str()) && row.contains_key(c.as_str()))
        .collect();
    if set.is_empty() {
        return Ok(1);
    }
    let mut sql = format!("UPDATE {table} SET ");
    sql.push_str(
        &set.iter()
            .enumerate()
            .map(|(i, c)| format!("{c} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(", "),
    );
    sql.push_str(" WHERE ");
    sql.push_str(
        &keys
            .iter()
            .enumerate()
            .map(|(i, (k, _))| format!("{k} = ?{}", set.len() + i + 1))
            .collect::<Vec<_>>()
            .join(" AND "),
    );
    let mut args: Vec<rusqlite::types::Value> =
        set.iter().map(|c| sql_value(row.get(c.as_str()))).collect();
    args.extend(
        keys.iter()
            .map(|(_, v)| rusqlite::types::Value::Text(v.to_string())),
    );
    conn.execute(&sql, params_from_iter(args))
}

/// `INSERT INTO table (<the row's columns known here>) VALUES (...)`.
pub(super) fn insert(
    conn: &Connection,
    table: &str,
    row: &Map<String, Value>,
) -> rusqlite::Result<usize> {
    let known = columns(conn, table)?;
    let cols: Vec<&String> = known
        .iter()
        .filter(|c| row.contains_key(c.as_str()))
        .collect();
    let sql = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        cols.iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    conn.execute(
        &sql,
        params_from_iter(cols.iter().map(|c| sql_value(row.get(c.as_str())))),
    )
}
