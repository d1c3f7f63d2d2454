//! Property tests: no input makes plan parsing or validation panic.
//! Arbitrary bytes, arbitrary JSON, and mutations of real plans.

use mpw::plan::{LoadOptions, parse_str};
use proptest::prelude::*;
use std::path::Path;

fn check(text: &str) {
    for lenient in [false, true] {
        // Ok or a list of diagnostics; never a panic.
        let _ = parse_str(text, Path::new("fuzz.jsonc"), LoadOptions { lenient });
    }
}

/// JSON values biased towards the plan's own keys, so validation runs deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("id".to_string()),
        Just("workstreams".to_string()),
        Just("tasks".to_string()),
        Just("depends_on".to_string()),
        Just("run".to_string()),
        Just("argv".to_string()),
        Just("globals".to_string()),
        Just("max_concurrency".to_string()),
        Just("cwd".to_string()),
        Just("guardrails".to_string()),
        Just("fail_on".to_string()),
        Just("allowed_paths".to_string()),
        Just("metadata".to_string()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        "[A-Za-z0-9/._ *\\[(\\\\-]{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::from("WS-1/T1")),
        Just(serde_json::Value::from("..")),
    ];
    leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().collect())),
        ]
    })
}

const BASE: &str = r#"{
  // a comment
  "name": "p", "globals": { "max_concurrency": 2, "env": { "A": "1" } },
  "workstreams": [
    { "id": "WS-1", "allowed_paths": ["src/**"], "tasks": [
      { "id": "T1", "run": "echo", "guardrails": { "fail_on": ["err"] } },
      { "id": "T2", "argv": ["true"], "depends_on": ["T1", "WS-2/T1"], "cwd": "src" } ] },
    { "id": "WS-2", "depends_on": [], "tasks": [ { "id": "T1", "run": "x", }, ], },
  ],
}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        check(&s);
    }

    #[test]
    fn arbitrary_json_never_panics(v in json()) {
        check(&v.to_string());
        check(&serde_json::json!({ "workstreams": [v.clone()] }).to_string());
        check(&serde_json::json!({ "workstreams": [{ "id": "W", "tasks": [v] }] }).to_string());
    }

    #[test]
    fn mutated_plans_never_panic(cut in 0..BASE.len(), insert in "[\\]\\[{}\",:/*a-z0-9 \n]{0,6}", drop in 0usize..8) {
        let mut s = BASE.as_bytes().to_vec();
        let end = (cut + drop).min(s.len());
        s.splice(cut..end, insert.bytes());
        check(&String::from_utf8_lossy(&s));
    }
}

#[test]
fn the_base_plan_is_valid() {
    parse_str(BASE, Path::new("base.jsonc"), LoadOptions::default()).unwrap();
}
