//! `mpw plan check --fix`: only the fixes that are certain. Keys are sorted
//! into schema order, and a dependency that names an id in the wrong case
//! gets the id's case when exactly one id matches. The text is edited
//! through a concrete syntax tree, so comments and formatting stay.

use super::keys::known_keys;
use super::load::jsonc_options;
use jsonc_parser::cst::{CstInputValue, CstNode, CstObject, CstRootNode};
use std::collections::HashMap;

/// The fixed text and what was done, one line per fix.
pub struct Fixed {
    pub text: String,
    pub changes: Vec<String>,
}

/// Fixes `text`; `Err` when it is not JSONC at all (checking says where).
pub fn fix(text: &str) -> Result<Fixed, String> {
    let root = CstRootNode::parse(text, &jsonc_options()).map_err(|e| e.to_string())?;
    let mut changes = Vec::new();
    let Some(obj) = root.object_value() else {
        return Ok(Fixed {
            text: text.to_string(),
            changes,
        });
    };
    normalise_id_case(&obj, &mut changes);
    let mut sorted = 0usize;
    sort_keys(&obj, &mut Vec::new(), &mut sorted);
    if sorted > 0 {
        changes.push(format!(
            "sorted the keys of {sorted} object(s) into schema order"
        ));
    }
    Ok(Fixed {
        text: root.to_string(),
        changes,
    })
}

fn names(obj: &CstObject) -> Vec<String> {
    obj.properties()
        .iter()
        .map(|p| p.decoded_name().unwrap_or_default())
        .collect()
}

/// Schema order for known keys; unknown ones keep their order after them.
fn sort_keys(obj: &CstObject, segs: &mut Vec<String>, sorted: &mut usize) {
    let Some(known) = known_keys(segs) else {
        return;
    };
    let before = names(obj);
    let rank = |name: &str| known.iter().position(|k| *k == name).unwrap_or(known.len());
    let original: HashMap<String, usize> = before
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    obj.sort_properties().pin_comment_headers().by_key(|p| {
        let n = p.decoded_name().unwrap_or_default();
        (rank(&n), original.get(&n).copied().unwrap_or(usize::MAX))
    });
    if names(obj) != before {
        *sorted += 1;
    }
    for p in obj.properties() {
        let name = p.decoded_name().unwrap_or_default();
        segs.push(name);
        if let Some(o) = p.object_value() {
            sort_keys(&o, segs, sorted);
        } else if let Some(a) = p.array_value() {
            for (i, e) in a.elements().iter().enumerate() {
                if let Some(o) = e.as_object() {
                    segs.push(i.to_string());
                    sort_keys(&o, segs, sorted);
                    segs.pop();
                }
            }
        }
        segs.pop();
    }
}

fn string_of(obj: &CstObject, key: &str) -> Option<String> {
    obj.get(key)?.value()?.as_string_lit()?.decoded_value().ok()
}

fn objects(obj: &CstObject, key: &str) -> Vec<CstObject> {
    obj.array_value(key)
        .map(|a| a.elements().iter().filter_map(CstNode::as_object).collect())
        .unwrap_or_default()
}

/// The one id equal to `d` but for case, if `d` itself is not an id.
fn recase<'a>(d: &str, ids: impl IntoIterator<Item = &'a String> + Clone) -> Option<String> {
    if ids.clone().into_iter().any(|i| i == d) {
        return None;
    }
    let mut hits = ids.into_iter().filter(|i| i.eq_ignore_ascii_case(d));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

fn normalise_id_case(root: &CstObject, changes: &mut Vec<String>) {
    let wss = objects(root, "workstreams");
    let ws_ids: Vec<String> = wss.iter().filter_map(|w| string_of(w, "id")).collect();
    let tasks: HashMap<String, Vec<String>> = wss
        .iter()
        .filter_map(|w| {
            let id = string_of(w, "id")?;
            let t = objects(w, "tasks")
                .iter()
                .filter_map(|t| string_of(t, "id"))
                .collect();
            Some((id, t))
        })
        .collect();
    let none = Vec::new();
    for w in &wss {
        let wid = string_of(w, "id").unwrap_or_default();
        rewrite_deps(w, &format!("workstream `{wid}`"), changes, |d| {
            recase(d, &ws_ids)
        });
        let own = tasks.get(&wid).unwrap_or(&none);
        for t in objects(w, "tasks") {
            let tid = string_of(&t, "id").unwrap_or_default();
            rewrite_deps(&t, &format!("task `{wid}/{tid}`"), changes, |d| {
                if let Some((ws, task)) = d.split_once('/') {
                    let ws2 = if ws_ids.iter().any(|i| i == ws) {
                        ws.to_string()
                    } else {
                        recase(ws, &ws_ids)?
                    };
                    let in_ws = tasks.get(&ws2)?;
                    let task2 = if in_ws.iter().any(|i| i == task) {
                        task.to_string()
                    } else {
                        recase(task, in_ws)?
                    };
                    let fixed = format!("{ws2}/{task2}");
                    (fixed != d).then_some(fixed)
                } else {
                    // a task of its own workstream, or a workstream: only
                    // certain when exactly one of all those ids matches
                    recase(d, own.iter().chain(&ws_ids))
                }
            });
        }
    }
}

fn rewrite_deps(
    obj: &CstObject,
    who: &str,
    changes: &mut Vec<String>,
    fix: impl Fn(&str) -> Option<String>,
) {
    let Some(arr) = obj.array_value("depends_on") else {
        return;
    };
    for e in arr.elements() {
        let Some(s) = e.as_string_lit() else { continue };
        let Ok(d) = s.decoded_value() else { continue };
        if let Some(new) = fix(&d) {
            changes.push(format!("`{d}` -> `{new}` in the depends_on of {who}"));
            s.replace_with(CstInputValue::String(new));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_sorted_with_their_comments_and_ids_recased() {
        let text = r#"// my plan
{
  "workstreams": [
    {
      "tasks": [
        { "run": "true", "id": "T1" }, // first
        // the second one
        { "depends_on": ["t1"], "id": "T2", "run": "true", "metadata": { "z": 1, "a": 2 } },
      ],
      "id": "WS-1",
    },
    { "id": "B", "depends_on": ["ws-1"], "tasks": [ { "id": "x", "run": "true", "depends_on": ["Ws-1/T1"] } ] },
  ],
  "name": "n", // the name
}
"#;
        let f = fix(text).unwrap();
        assert_eq!(
            f.text,
            r#"// my plan
{
  "name": "n", // the name
  "workstreams": [
    {
      "id": "WS-1",
      "tasks": [
        { "id": "T1", "run": "true" }, // first
        // the second one
        { "id": "T2", "run": "true", "depends_on": ["T1"], "metadata": { "z": 1, "a": 2 } },
      ],
    },
    { "id": "B", "depends_on": ["WS-1"], "tasks": [ { "id": "x", "run": "true", "depends_on": ["WS-1/T1"] } ] },
  ],
}
"#
        );
        assert_eq!(
            f.changes,
            [
                "`t1` -> `T1` in the depends_on of task `WS-1/T2`",
                "`ws-1` -> `WS-1` in the depends_on of workstream `B`",
                "`Ws-1/T1` -> `WS-1/T1` in the depends_on of task `B/x`",
                // the plan, WS-1 and its two tasks
                "sorted the keys of 4 object(s) into schema order",
            ]
        );
        // fixed once, nothing left to fix
        assert!(fix(&f.text).unwrap().changes.is_empty());
    }

    #[test]
    fn an_ambiguous_case_is_left_alone() {
        let text = r#"{"workstreams": [
  {"id": "A", "tasks": [{"id": "T1", "run": "x"}, {"id": "t1", "run": "x"}, {"id": "T2", "run": "x", "depends_on": ["T1", "T3"]}]},
  {"id": "a", "tasks": [{"id": "T1", "run": "x", "depends_on": ["A/t1"]}]}
]}"#;
        let f = fix(text).unwrap();
        assert_eq!(f.text, text);
        assert!(f.changes.is_empty(), "{:?}", f.changes);
    }
}
