//! `mpw init` and `mpw completions`, driven through the real binary.

mod common;

use common::{mpw, stderr_of, stdout_of};
use std::process::Command;

#[test]
fn init_writes_a_starter_plan_that_runs_as_is() {
    let repo = common::repo().commit("init");
    let out = repo.mpw().arg("init").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("wrote plans/mpw-plan.jsonc"));
    let plan = repo.read("plans/mpw-plan.jsonc");
    assert!(plan.contains("\"$schema\": \"./mpw-plan.schema.json\""));
    assert!(plan.contains("// "), "the starter plan explains itself");
    // the schema it links to is the one `mpw plan schema` prints
    let schema = repo.mpw().args(["plan", "schema"]).output().unwrap();
    assert_eq!(repo.read("plans/mpw-plan.schema.json"), stdout_of(&schema));
    assert!(!repo.path.join(".github").exists());

    let out = repo
        .mpw()
        .args(["run", "plans/mpw-plan.jsonc"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let run_id = stdout_of(&out).lines().next().unwrap().trim().to_string();
    let st = repo.run_status(&run_id);
    assert_eq!(st["state"], "COMPLETED", "{st:#}");
    // the writing task committed on its branch, nothing else did
    let log = repo.git(&["log", "--format=%s", &format!("mpw/{run_id}/review"), "-2"]);
    assert_eq!(log.lines().next(), Some("Add the starter note"), "{log}");
}

#[test]
fn init_refuses_to_overwrite_without_force_and_writes_nothing() {
    let repo = common::repo().commit("init");
    repo.write("plans/mpw-plan.jsonc", "my own plan\n");
    let out = repo.mpw().args(["init", "--copilot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr_of(&out);
    assert!(err.contains("mpw-plan.jsonc already exists"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(repo.read("plans/mpw-plan.jsonc"), "my own plan\n");
    assert!(!repo.path.join("plans/mpw-plan.schema.json").exists());
    assert!(!repo.path.join(".github").exists());

    let out = repo
        .mpw()
        .args(["init", "--copilot", "--force"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_ne!(repo.read("plans/mpw-plan.jsonc"), "my own plan\n");
}

#[test]
fn init_copilot_writes_instructions_with_valid_frontmatter_and_a_valid_example() {
    let repo = common::repo().commit("init");
    let out = repo.mpw().args(["init", "--copilot"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = repo.read(".github/instructions/mpw-plans.instructions.md");
    let rest = text.strip_prefix("---\n").expect("frontmatter first");
    let (front, body) = rest.split_once("\n---\n").expect("frontmatter closed");
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(front).unwrap();
    assert_eq!(yaml["applyTo"].as_str(), Some("plans/**"));
    assert!(body.contains("Unknown keys are errors"));

    // the example it teaches passes `mpw plan check`
    let example = body
        .split_once("```jsonc\n")
        .and_then(|(_, r)| r.split_once("```"))
        .map(|(e, _)| e)
        .expect("one example");
    let plan = repo.plan("example", example);
    let out = repo.plan_check(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}

#[test]
fn completions_for_all_five_shells_and_bash_loads_them() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef mpw"),
        ("fish", "complete -c mpw"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "edit:completion:arg-completer[mpw]"),
    ] {
        let out = mpw().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr_of(&out));
        let script = stdout_of(&out);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in ["integrate", "completions", "init"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("mpw.bash");
    let out = mpw().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&script, &out.stdout).unwrap();
    let out = Command::new("bash")
        .arg("--norc")
        .arg("-c")
        .arg(format!(
            "source '{}' && complete -p mpw && COMP_WORDS=(mpw inte) && COMP_CWORD=1 && _mpw mpw inte mpw && echo \"${{COMPREPLY[@]}}\"",
            script.display()
        ))
        .output()
        .unwrap();
    let stdout = stdout_of(&out);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout.contains("-F _mpw mpw"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap().contains("integrate"),
        "{stdout}"
    );
}

#[test]
fn unknown_shell_is_a_usage_error() {
    let out = mpw().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("tcsh"));
}
