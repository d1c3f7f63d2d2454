//! The map in docs/ARCHITECTURE.md must agree with the code: each state
//! machine drawn there is the transition table in `mpw::model`, arrow for
//! arrow, and no comment cites a document the repository does not have.
//! The shape the architecture pass gave the code stays: no file grows past
//! about 800 lines of code, and the runner's files import each other
//! without a cycle.

use mpw::model::{RunState, StateMachine, TaskState, WorkstreamState};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

/// Every `.rs` file below `dir` (relative to the crate), with its text.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                out.push((p, text));
            }
        }
    }
    out.sort();
    out
}

/// A file's code: what comes before its unit tests' module.
fn code_of(text: &str) -> &str {
    let tests =
        regex::Regex::new(r"(?m)^#\[cfg\([^\]]*\btest\b[^\]]*\)\]\s*\n(pub )?mod ").unwrap();
    tests.find(text).map_or(text, |m| &text[..m.start()])
}

#[test]
fn comments_point_to_the_architecture_doc_not_to_a_missing_design_file() {
    let mut bad = Vec::new();
    for (p, text) in sources("src") {
        for (n, line) in text.lines().enumerate() {
            if line.contains("DESIGN.md") || line.contains("DESIGN section") {
                bad.push(format!("{}:{}", p.display(), n + 1));
            }
        }
    }
    assert!(bad.is_empty(), "cite docs/ARCHITECTURE.md instead: {bad:?}");
}

#[test]
fn no_source_file_is_over_800_lines_of_code() {
    let mut long = Vec::new();
    for (p, text) in sources("src") {
        let name = p.file_stem().unwrap().to_string_lossy();
        // Test modules in files of their own are tests.
        if name.starts_with("tests") || name == "test_support" {
            continue;
        }
        let n = code_of(&text).lines().count();
        if n > 800 {
            long.push(format!("{}: {n} lines", p.display()));
        }
    }
    assert!(long.is_empty(), "split these by job: {long:?}");
}

/// The sibling modules a file of `src/runner/` names through `super::`.
fn siblings_named(code: &str, siblings: &BTreeSet<String>) -> BTreeSet<String> {
    let one = regex::Regex::new(r"super::(\w+)").unwrap();
    let list = regex::Regex::new(r"super::\{([^}]*)\}").unwrap();
    let mut named: BTreeSet<String> = one.captures_iter(code).map(|c| c[1].to_string()).collect();
    for c in list.captures_iter(code) {
        for item in c[1].split(',') {
            let first = item.trim().split("::").next().unwrap_or("").trim();
            named.insert(first.to_string());
        }
    }
    named.retain(|n| siblings.contains(n));
    named
}

#[test]
fn the_runners_files_import_each_other_without_a_cycle() {
    let files: BTreeMap<String, String> = sources("src/runner")
        .into_iter()
        .map(|(p, text)| (p.file_stem().unwrap().to_string_lossy().into_owned(), text))
        .filter(|(name, _)| name != "mod")
        .collect();
    let siblings: BTreeSet<String> = files.keys().cloned().collect();
    let edges: BTreeMap<&str, BTreeSet<String>> = files
        .iter()
        .map(|(n, text)| (n.as_str(), siblings_named(code_of(text), &siblings)))
        .collect();
    // The executors and the context import nothing from the coordinator.
    for (n, to) in &edges {
        assert!(!to.contains("coordinator"), "{n} imports the coordinator");
    }
    // Depth-first, with the path so far: a file met again on it is a cycle.
    fn visit<'a>(
        n: &'a str,
        edges: &'a BTreeMap<&'a str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if let Some(i) = path.iter().position(|p| *p == n) {
            panic!("import cycle: {} -> {n}", path[i..].join(" -> "));
        }
        if !done.insert(n) {
            return;
        }
        path.push(n);
        for m in &edges[n] {
            visit(m, edges, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        visit(n, &edges, &mut Vec::new(), &mut done);
    }
    assert!(edges["coordinator"].contains("attempt"), "{edges:?}");
}
