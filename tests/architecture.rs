//! The map in docs/ARCHITECTURE.md must agree with the code: each state
//! machine drawn there is the transition table in `mpw::model`, arrow for
//! arrow, and no comment cites a document the repository does not have.

use mpw::model::{RunState, StateMachine, TaskState, WorkstreamState};
use std::collections::BTreeSet;
use std::path::Path;

fn doc() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The arrows of the Mermaid block that follows `heading`.
fn drawn(doc: &str, heading: &str) -> BTreeSet<(String, String)> {
    let at = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/ARCHITECTURE.md has no heading {heading:?}"));
    let rest = &doc[at..];
    let start = rest
        .find("```mermaid")
        .expect("a mermaid block after the heading")
        + 10;
    let end = start + rest[start..].find("```").expect("the block ends");
    rest[start..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let (from, to) = l.split_once("-->")?;
            let to = to.split(':').next().unwrap_or(to);
            let (from, to) = (from.trim(), to.trim());
            (from != "[*]" && to != "[*]").then(|| (from.to_string(), to.to_string()))
        })
        .collect()
}

fn table<S: StateMachine>() -> BTreeSet<(String, String)> {
    S::transitions()
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// The block the doc should hold, printed when it does not.
fn mermaid(arrows: &BTreeSet<(String, String)>, first: &str) -> String {
    let mut s = format!("```mermaid\nstateDiagram-v2\n    [*] --> {first}\n");
    for (a, b) in arrows {
        s.push_str(&format!("    {a} --> {b}\n"));
    }
    s + "```"
}

fn check<S: StateMachine>(heading: &str, first: S) {
    let doc = doc();
    let (got, want) = (drawn(&doc, heading), table::<S>());
    assert!(
        got == want,
        "the {heading} diagram in docs/ARCHITECTURE.md disagrees with its transition table\n\
         drawn but not in the table: {:?}\nin the table but not drawn: {:?}\nthe block should read:\n{}",
        got.difference(&want).collect::<Vec<_>>(),
        want.difference(&got).collect::<Vec<_>>(),
        mermaid(&want, &first.to_string())
    );
}

#[test]
fn the_task_state_machine_in_the_docs_is_its_transition_table() {
    check("### Task", TaskState::Pending);
}

#[test]
fn the_workstream_state_machine_in_the_docs_is_its_transition_table() {
    check("### Workstream", WorkstreamState::Pending);
}

#[test]
fn the_run_state_machine_in_the_docs_is_its_transition_table() {
    check("### Run", RunState::Pending);
}

#[test]
fn a_changed_arrow_is_caught() {
    // The check itself must see a difference: drop one arrow from the drawing.
    let doc = doc().replacen("PENDING --> READY", "PENDING --> RUNNING", 1);
    assert_ne!(drawn(&doc, "### Task"), table::<TaskState>());
}

#[test]
fn comments_point_to_the_architecture_doc_not_to_a_missing_design_file() {
    let mut bad = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for (n, line) in text.lines().enumerate() {
                    if line.contains("DESIGN.md") || line.contains("DESIGN section") {
                        bad.push(format!("{}:{}", p.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(bad.is_empty(), "cite docs/ARCHITECTURE.md instead: {bad:?}");
}
