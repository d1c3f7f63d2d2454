//! Reading a plan: JSONC text → AST (with positions) → `serde_json::Value`
//! → typed [`Plan`] → checks → [`Loaded`].

use super::source::{LineIndex, esc, offset_of, pointer_segments};
use super::validate::{self, Finding};
use super::{Diagnostic, LoadOptions, Loaded, Plan, PlanError, Severity, keys, suggest};
use jsonc_parser::{CollectOptions, ParseOptions, ast, parse_to_ast};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::path::Path;

/// Reads and validates the plan at `path`.
pub fn load(path: &Path, opts: LoadOptions) -> Result<Loaded, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, path, opts)
}

/// JSONC as VS Code writes it: comments and trailing commas, nothing looser
/// (no single quotes, missing commas, bare keys, hex numbers ...), so a plan
/// that passes here is one edit away from plain JSON.
pub(crate) fn jsonc_options() -> ParseOptions {
    ParseOptions {
        allow_comments: true,
        allow_trailing_commas: true,
        allow_loose_object_property_names: false,
        allow_missing_commas: false,
        allow_single_quoted_strings: false,
        allow_hexadecimal_numbers: false,
        allow_unary_plus_numbers: false,
        allow_bare_decimal_point_numbers: false,
        allow_non_finite_numbers: false,
        allow_extended_string_escapes: false,
    }
}

/// Parses and validates plan text; `path` is only used in messages and
/// kept in [`Loaded::path`].
///
/// Each form of a plan of 10,000 tasks (syntax tree, value, typed plan)
/// takes several MiB, so no two of them are kept at once: the tree is
/// consumed into the value, the value into the plan, and the tree is made
/// again only to place findings (docs/ARCHITECTURE.md, "Per-task cost").
pub fn parse_str(text: &str, path: &Path, opts: LoadOptions) -> Result<Loaded, PlanError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut findings = Vec::new();
    let value = to_value(
        syntax_tree(text, path)?,
        &mut Vec::new(),
        false,
        &mut findings,
    );
    let again = || {
        let tree = syntax_tree(text, path).expect("the text parsed before");
        to_value(tree, &mut Vec::new(), false, &mut Vec::new())
    };
    let (plan, dead) = deserialize(value, again, opts, &mut findings);
    let dag = plan.as_ref().and_then(|p| {
        let mut semantic = Vec::new();
        let dag = validate::validate(p, &mut semantic);
        findings.extend(
            semantic
                .into_iter()
                .filter(|f| !under(&f.diag.pointer, &dead)),
        );
        dag
    });
    let diags = if findings.is_empty() {
        Vec::new()
    } else {
        place(text, path, findings)?
    };
    let has_errors = diags.iter().any(|d| d.severity == Severity::Error);
    match (plan, dag) {
        (Some(plan), Some(dag)) if !has_errors => Ok(Loaded {
            path: path.to_path_buf(),
            plan,
            dag,
            warnings: diags,
        }),
        _ => Err(PlanError::Invalid(diags)),
    }
}

/// The text's syntax tree, or the syntax error.
fn syntax_tree<'t>(text: &'t str, path: &Path) -> Result<ast::Value<'t>, PlanError> {
    let syntax = |offset: usize, message: String, help: &str| {
        PlanError::Invalid(vec![Diagnostic {
            severity: Severity::Error,
            pointer: String::new(),
            location: Some(LineIndex::new(text).location(path, offset)),
            message,
            help: Some(help.to_string()),
        }])
    };
    let parsed = parse_to_ast(text, &CollectOptions::default(), &jsonc_options()).map_err(|e| {
        syntax(
            e.range().start,
            format!("invalid JSON: {}", e.kind()),
            "JSON with comments and trailing commas is accepted, nothing looser: \
                 double quotes around keys and strings, commas between items",
        )
    })?;
    parsed.value.ok_or_else(|| {
        syntax(
            0,
            "the plan is empty: expected a JSON object".into(),
            "`mpw init` writes a starter plan",
        )
    })
}

/// Findings with their places in the text: errors first, each kind in file order.
fn place(text: &str, path: &Path, findings: Vec<Finding>) -> Result<Vec<Diagnostic>, PlanError> {
    let ast = syntax_tree(text, path)?;
    let lines = LineIndex::new(text);
    let mut diags: Vec<(usize, Diagnostic)> = findings
        .into_iter()
        .map(|f| {
            let offset = offset_of(&ast, &f.diag.pointer, f.at_key);
            let mut d = f.diag;
            if let Some(rel) = &f.related {
                let (l, c) = lines.line_col(offset_of(&ast, rel, false));
                d.message.push_str(&format!(" (first at {l}:{c})"));
            }
            d.location = Some(lines.location(path, offset));
            (offset, d)
        })
        .collect();
    diags.sort_by_key(|(offset, d)| (d.severity != Severity::Error, *offset));
    Ok(diags.into_iter().map(|(_, d)| d).collect())
}

enum Seg<'a> {
    Key(std::borrow::Cow<'a, str>),
    Index(usize),
}

fn prop_name<'t>(name: ast::ObjectPropName<'t>) -> std::borrow::Cow<'t, str> {
    match name {
        ast::ObjectPropName::String(s) => s.value,
        ast::ObjectPropName::Word(w) => w.value.into(),
    }
}

fn trail_pointer(trail: &[Seg<'_>]) -> String {
    let mut s = String::new();
    for seg in trail {
        s.push('/');
        match seg {
            Seg::Key(k) => s.push_str(&esc(k)),
            Seg::Index(i) => s.push_str(&i.to_string()),
        }
    }
    s
}

/// AST → Value, freeing each node once converted; duplicate keys (outside
/// `metadata`) are errors: which one counts would be a guess.
fn to_value<'t>(
    v: ast::Value<'t>,
    trail: &mut Vec<Seg<'t>>,
    in_meta: bool,
    out: &mut Vec<Finding>,
) -> Value {
    match v {
        ast::Value::StringLit(s) => Value::String(s.value.into_owned()),
        ast::Value::NumberLit(n) => match n.value.parse::<serde_json::Number>() {
            Ok(num) => Value::Number(num),
            Err(_) => Value::String(n.value.to_string()),
        },
        ast::Value::BooleanLit(b) => Value::Bool(b.value),
        ast::Value::NullKeyword(_) => Value::Null,
        ast::Value::Array(a) => Value::Array(
            a.elements
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    trail.push(Seg::Index(i));
                    let v = to_value(e, trail, in_meta, out);
                    trail.pop();
                    v
                })
                .collect(),
        ),
        ast::Value::Object(o) => {
            let mut map = Map::with_capacity(o.properties.len());
            for p in o.properties {
                let name = prop_name(p.name);
                let meta = in_meta || name == "metadata";
                trail.push(Seg::Key(name));
                let v = to_value(p.value, trail, meta, out);
                let Some(Seg::Key(name)) = trail.last() else {
                    unreachable!("pushed above")
                };
                if map.insert(name.to_string(), v).is_some() && !in_meta {
                    let mut f = Finding::error(
                        trail_pointer(trail),
                        format!("duplicate key `{name}`: which one counts would be a guess"),
                    )
                    .help("keep one of them");
                    f.at_key = true;
                    out.push(f);
                }
                trail.pop();
            }
            Value::Object(map)
        }
    }
}

/// Who a pointer is about (`task `WS-1/T1``) and how many segments that took.
fn context(root: &Value, segs: &[String]) -> (String, usize) {
    let id = |v: Option<&Value>, i: &str| {
        v.and_then(|v| v.get("id"))
            .and_then(Value::as_str)
            .map_or_else(|| format!("#{i}"), str::to_string)
    };
    if segs.len() >= 2 && segs[0] == "workstreams" {
        let ws = root
            .get("workstreams")
            .and_then(|a| a.get(segs[1].parse::<usize>().ok()?));
        let wid = id(ws, &segs[1]);
        if segs.len() >= 4 && segs[2] == "tasks" {
            let t = ws
                .and_then(|w| w.get("tasks"))
                .and_then(|a| a.get(segs[3].parse::<usize>().ok()?));
            return (format!("task `{wid}/{}`", id(t, &segs[3])), 4);
        }
        return (format!("workstream `{wid}`"), 2);
    }
    if segs.len() >= 2 && segs[0] == "globals" {
        return ("globals".into(), 1);
    }
    (String::new(), 0)
}

/// Dotted key path (`guardrails.fail_on[0]`) of pointer segments.
fn dotted(segs: &[String]) -> String {
    let mut s = String::new();
    for seg in segs {
        if seg.parse::<usize>().is_ok() && !s.is_empty() {
            s.push_str(&format!("[{seg}]"));
        } else {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(seg);
        }
    }
    s
}

fn describe(root: &Value, pointer: &str) -> (String, String) {
    let segs = pointer_segments(pointer);
    let (ctx, used) = context(root, &segs);
    (ctx, dotted(&segs[used..]))
}

fn ignored_pointer(path: &serde_ignored::Path<'_>, out: &mut String) {
    use serde_ignored::Path as P;
    match path {
        P::Root => {}
        P::Seq { parent, index } => {
            ignored_pointer(parent, out);
            out.push('/');
            out.push_str(&index.to_string());
        }
        P::Map { parent, key } => {
            ignored_pointer(parent, out);
            out.push('/');
            out.push_str(&esc(key));
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_pointer(parent, out)
        }
    }
}

fn error_pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment as S;
    let mut s = String::new();
    for seg in path.iter() {
        match seg {
            S::Seq { index } => s.push_str(&format!("/{index}")),
            S::Map { key } => s.push_str(&format!("/{}", esc(key))),
            S::Enum { .. } | S::Unknown => {}
        }
    }
    s
}

/// Deserializes one piece of the plan at `base`; unknown keys go to `unknown`.
/// On failure: the culprit's pointer and serde's message.
fn de_piece<'de, T: DeserializeOwned>(
    value: impl serde::Deserializer<'de>,
    base: &str,
    unknown: &mut Vec<String>,
) -> Result<T, (String, String)> {
    let mut cb = |path: serde_ignored::Path<'_>| {
        let mut p = base.to_string();
        ignored_pointer(&path, &mut p);
        unknown.push(p);
    };
    let de = serde_ignored::Deserializer::new(value, &mut cb);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let pointer = format!("{base}{}", error_pointer(e.path()));
        // serde_path_to_error's Display prefixes the path; we name it ourselves.
        (pointer, e.into_inner().to_string())
    })
}

fn type_finding(root: &Value, (pointer, msg): (String, String)) -> Finding {
    let (ctx, key) = describe(root, &pointer);
    let message = match (ctx.is_empty(), key.is_empty()) {
        (true, true) => msg.to_string(),
        (true, false) => format!("`{key}`: {msg}"),
        (false, true) => format!("{ctx}: {msg}"),
        (false, false) => format!("`{key}` of {ctx}: {msg}"),
    };
    let help = type_help(&msg, &key);
    Finding::error(pointer, message).maybe_help(help)
}

/// serde's "expected u64" in words a plan author uses.
fn type_help(msg: &str, key: &str) -> Option<String> {
    if let Some(field) = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
    {
        return Some(format!("add `\"{field}\"`"));
    }
    let expected = msg.rsplit_once("expected ")?.1;
    let kind = match expected.trim_start_matches("one of ").split(' ').next()? {
        "u64" | "u32" | "usize" => "a whole number, without quotes".to_string(),
        "i64" | "i32" => "a whole number".to_string(),
        "a" if expected.contains("string") => "a string".into(),
        "a" if expected.contains("sequence") => "a list (`[...]`)".into(),
        "a" if expected.contains("boolean") => "`true` or `false`".into(),
        "struct" | "a" => "an object (`{...}`)".into(),
        _ => format!("one of {}", expected.trim_start_matches("one of ")),
    };
    let what = if key.is_empty() {
        "it".into()
    } else {
        format!("`{key}`")
    };
    Some(format!("write {what} as {kind}"))
}

fn unknown_finding(root: &Value, pointer: String, lenient: bool) -> Option<Finding> {
    let segs = pointer_segments(&pointer);
    // `metadata` is free-form wherever it appears.
    if segs.last().is_some_and(|s| s == "metadata") {
        return None;
    }
    let (ctx, key) = describe(root, &pointer);
    let place = if ctx.is_empty() {
        "the plan".to_string()
    } else {
        ctx
    };
    let (severity, tail) = if lenient {
        (Severity::Warning, "; ignored (--lenient)")
    } else {
        (Severity::Error, "")
    };
    let (last, parent) = segs.split_last()?;
    let help = keys::known_keys(parent)
        .and_then(|known| suggest::hint(last, known))
        .or_else(|| {
            (!lenient).then(|| {
                "remove it, move it under `metadata`, or pass --lenient to ignore unknown keys"
                    .to_string()
            })
        });
    let mut f = Finding::error(pointer, format!("unknown key `{key}` in {place}{tail}"));
    f.diag.severity = severity;
    f.at_key = true;
    Some(f.maybe_help(help))
}

fn under(pointer: &str, dead: &[String]) -> bool {
    dead.iter().any(|d| {
        pointer == d || (pointer.starts_with(d.as_str()) && pointer[d.len()..].starts_with('/'))
    })
}

fn parent_of(pointer: &str) -> Option<(&str, &str)> {
    pointer
        .rfind('/')
        .map(|i| (&pointer[..i], &pointer[i + 1..]))
}

/// Takes the culprit at `pointer` out of `v` so that the rest can be read:
/// a key is removed (its default applies), a workstream or task that is not
/// an object becomes `{}`, a bad element of any other list takes its list
/// with it. Returns the pointer of a stand-in, if one was made.
fn remove_culprit(v: &mut Value, pointer: &str) -> Result<Option<String>, ()> {
    let (parent, last) = parent_of(pointer).ok_or(())?;
    match v.pointer_mut(parent).ok_or(())? {
        Value::Object(m) => {
            let key = pointer_segments(pointer).pop().ok_or(())?;
            m.shift_remove(&key).map(|_| None).ok_or(())
        }
        Value::Array(a) => {
            let element = parent.ends_with("/tasks") || parent == "/workstreams";
            match a.get_mut(last.parse::<usize>().map_err(|_| ())?) {
                Some(slot) if element && !slot.is_object() => {
                    *slot = Value::Object(Map::new());
                    Ok(Some(pointer.to_string()))
                }
                _ => remove_culprit(v, parent),
            }
        }
        _ => Err(()),
    }
}

/// Stands in for a missing required field; returns the pointer whose
/// findings would be about the stand-in.
fn stand_in(v: &mut Value, pointer: &str, field: &str, n: &mut usize) -> Result<String, ()> {
    let Some(Value::Object(m)) = v.pointer_mut(pointer) else {
        return Err(());
    };
    *n += 1;
    let (value, dead) = match field {
        // a name no dependency can spell
        "id" => (Value::from(format!("?missing-{n}")), pointer.to_string()),
        "tasks" | "workstreams" => (Value::Array(Vec::new()), format!("{pointer}/{field}")),
        _ => return Err(()),
    };
    m.insert(field.to_string(), value);
    Ok(dead)
}

/// Typed plan. A type error does not stop the checks: its culprit is
/// recorded, then taken out (or, for a missing id or list, stood in for) and
/// the plan is read again, so the semantic checks still run and every
/// problem is reported in one pass. Returns the pointers of stand-ins, whose
/// own findings would be about the stand-in and are dropped.
/// `again` makes the value anew: the first read takes it by value (its
/// strings move into the plan); only a plan with problems is read again.
fn deserialize(
    value: Value,
    again: impl FnOnce() -> Value,
    opts: LoadOptions,
    out: &mut Vec<Finding>,
) -> (Option<Plan>, Vec<String>) {
    if !value.is_object() {
        // serde would take an array as the fields in order: a confusing message.
        let kind = match value {
            Value::Array(_) => "an array",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "null",
        };
        out.push(
            Finding::error("", format!("the plan must be a JSON object, not {kind}"))
                .help("a plan is an object: `{ \"workstreams\": [ ... ] }`"),
        );
        return (None, Vec::new());
    }
    let mut unknown = Vec::new();
    if let Ok(plan) = de_piece::<Plan>(value, "", &mut unknown)
        && unknown.is_empty()
    {
        return (Some(plan), Vec::new());
    }
    // A type error or an unknown key: its message needs the whole plan.
    let value = &again();
    let mut v = value.clone();
    let mut dead: Vec<String> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut stand_ins = 0usize;
    // Each round takes one culprit out; the bound only guards against a loop.
    for _ in 0..100_000 {
        let mut unknown = Vec::new();
        let (pointer, msg) = match de_piece::<Plan>(&v, "", &mut unknown) {
            Ok(plan) => {
                for p in unknown.into_iter().filter(|p| !under(p, &dead)) {
                    out.extend(unknown_finding(value, p, opts.lenient));
                }
                return (Some(plan), dead);
            }
            Err(e) => e,
        };
        let missing = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        // A required key removed for its type is not "missing" a second time.
        let echo = missing
            .as_ref()
            .is_some_and(|k| removed.contains(&format!("{pointer}/{}", esc(k))));
        if !echo && !under(&pointer, &dead) {
            out.push(type_finding(value, (pointer.clone(), msg)));
        }
        let repaired = match &missing {
            Some(field) => stand_in(&mut v, &pointer, field, &mut stand_ins).map(|d| dead.push(d)),
            None => remove_culprit(&mut v, &pointer).map(|d| {
                removed.push(pointer.clone());
                dead.extend(d);
            }),
        };
        if repaired.is_err() {
            for p in unknown.into_iter().filter(|p| !under(p, &dead)) {
                out.extend(unknown_finding(value, p, opts.lenient));
            }
            return (None, dead);
        }
    }
    (None, dead)
}
