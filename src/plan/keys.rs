//! The keys each object of a plan may have, in schema order, read from the
//! JSON Schema that the plan types derive: one list for "did you mean" and
//! for `plan check --fix`'s key order.

use serde_json::Value;
use std::sync::OnceLock;

fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(super::schema)
}

/// Follows `$ref` and, for optional values, the non-null alternative.
fn resolve<'a>(root: &'a Value, mut node: &'a Value) -> &'a Value {
    for _ in 0..8 {
        if let Some(r) = node.get("$ref").and_then(Value::as_str) {
            let Some(target) = r.strip_prefix('#').and_then(|p| root.pointer(p)) else {
                return node;
            };
            node = target;
        } else if let Some(alt) = ["anyOf", "oneOf", "allOf"]
            .iter()
            .find_map(|k| node.get(*k).and_then(Value::as_array))
        {
            match alt
                .iter()
                .find(|a| a.get("type") != Some(&Value::from("null")))
            {
                Some(a) => node = a,
                None => return node,
            }
        } else {
            return node;
        }
    }
    node
}

/// The schema node of the value at `segments` (keys and array indices).
fn node_at(segments: &[String]) -> Option<&'static Value> {
    let root = schema();
    let mut node = resolve(root, root);
    for seg in segments {
        let next = if seg.parse::<usize>().is_ok() && node.get("items").is_some() {
            node.get("items")?
        } else {
            node.get("properties")?.get(seg.as_str())?
        };
        node = resolve(root, next);
    }
    Some(node)
}

/// Keys the object at `segments` may have, in schema order; `None` when it
/// is free-form (`metadata`, `env`) or not an object of the plan.
pub(crate) fn known_keys(segments: &[String]) -> Option<Vec<&'static str>> {
    let props = node_at(segments)?.get("properties")?.as_object()?;
    Some(props.keys().map(String::as_str).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_level_has_its_keys_in_schema_order() {
        let root = known_keys(&[]).unwrap();
        assert_eq!(root[..3], ["$schema", "schema", "run_id"]);
        assert!(root.contains(&"workstreams"));
        let ws = known_keys(&segs(&["workstreams", "0"])).unwrap();
        assert!(ws.contains(&"allowed_paths"), "{ws:?}");
        let task = known_keys(&segs(&["workstreams", "3", "tasks", "1"])).unwrap();
        assert_eq!(task[0], "id");
        assert!(task.contains(&"depends_on"));
        let g = known_keys(&segs(&["workstreams", "0", "tasks", "0", "guardrails"])).unwrap();
        assert_eq!(g, ["fail_on", "quarantine_on", "require"]);
        assert!(known_keys(&segs(&["globals"])).unwrap().contains(&"copy"));
        assert_eq!(known_keys(&segs(&["globals", "env"])), None);
        assert_eq!(known_keys(&segs(&["metadata"])), None);
    }
}
