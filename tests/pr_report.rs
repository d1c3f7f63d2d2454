//! `mpw pr`, `mpw report --html`, `mpw status --watch`.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A run with a normal workstream A, B stacked on A, and C whose second
/// task fails after its first succeeded.
fn run_three(repo: &TestRepo) {
    let plan = repo.plan(
        "pr",
        r#"{ "run_id": "PR1", "name": "Phase 9", "description": "Make the parser faster.",
             "workstreams": [
            { "id": "A", "name": "Tokenizer speedup", "description": "Split the lexer.",
              "metadata": { "issue": "https://example.invalid/issues/7" },
              "tasks": [ { "id": "T1", "name": "Split", "run": "printf 'one\ntwo\n' > lex.txt" },
                         { "id": "T2", "run": "echo three >> lex.txt", "depends_on": ["T1"] } ] },
            { "id": "B", "depends_on": ["A"], "tasks": [ { "id": "T1", "run": "echo b > b.txt" } ] },
            { "id": "C", "tasks": [ { "id": "T1", "run": "echo c > c.txt" },
                                   { "id": "T2", "run": "echo half > h.txt; exit 9", "depends_on": ["T1"] } ] }
        ] }"#,
    );
    let out = repo.mpw().arg("run").arg(&plan).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
}

fn body(repo: &TestRepo, ws: &str) -> String {
    std::fs::read_to_string(repo.mpw_dir().join(format!("runs/PR1/pr/{ws}.md"))).unwrap()
}

#[test]
fn pr_bodies_for_normal_stacked_and_partly_failed_workstreams() {
    let repo = repo().with_file("README.md", "hi\n").commit("init");
    run_three(&repo);
    let out = repo.mpw().args(["pr", "PR1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    // Only finished workstreams by default; the exact gh line is printed.
    assert!(
        text.contains(
            "gh pr create --base main --head mpw/PR1/A --title 'Tokenizer speedup' --body-file"
        ),
        "{text}"
    );
    assert!(
        text.contains("--base mpw/PR1/A --head mpw/PR1/B"),
        "stacked PR base: {text}"
    );
    assert!(!text.contains("mpw/PR1/C"), "{text}");

    let a = body(&repo, "A");
    assert!(
        a.contains("Split the lexer.") && a.contains("Make the parser faster."),
        "{a}"
    );
    assert!(a.contains("| `T1` Split | SUCCEEDED | 1 |"), "{a}");
    assert!(
        a.contains("1 file(s) changed, +3 -0") && a.contains("| `lex.txt` | 3 | 0 |"),
        "{a}"
    );
    assert!(a.contains("## Commits") && a.contains("A: Split"), "{a}");
    assert!(
        a.contains("https://example.invalid/issues/7"),
        "metadata: {a}"
    );

    let b = body(&repo, "B");
    assert!(b.contains("Stacked on `mpw/PR1/A`"), "{b}");
    // B's diffstat is against A's head: only its own file.
    assert!(
        b.contains("1 file(s) changed, +1 -0") && b.contains("`b.txt`") && !b.contains("lex.txt"),
        "{b}"
    );

    let out = repo
        .mpw()
        .args(["pr", "PR1", "--workstream", "C"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let c = body(&repo, "C");
    assert!(c.contains("state **FAILED**"), "{c}");
    assert!(c.contains("| `T2` | FAILED: exited with code 9 |"), "{c}");
    assert!(c.contains("refs/mpw/PR1/failed/C/T2"), "{c}");
    assert!(c.contains("`c.txt`") && !c.contains("h.txt"), "{c}");
}

#[test]
fn pr_push_sets_upstream_on_a_local_bare_remote() {
    let repo = repo().commit("init");
    run_three(&repo);
    let bare = repo.dir.path().join("remote.git");
    run_git(
        repo.dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    repo.git(&["remote", "add", "origin", bare.to_str().unwrap()]);
    let out = repo
        .mpw()
        .args(["pr", "PR1", "--workstream", "A", "--push", "origin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("pushed mpw/PR1/A to origin"));
    assert_eq!(
        run_git(&bare, &["rev-parse", "mpw/PR1/A"]),
        repo.head("mpw/PR1/A")
    );
    assert_eq!(repo.git(&["config", "branch.mpw/PR1/A.remote"]), "origin");
}

#[test]
fn pr_create_without_gh_says_so() {
    if Command::new("gh").arg("--version").output().is_ok() {
        eprintln!("skipped: gh is installed here");
        return;
    }
    let repo = repo().commit("init");
    run_three(&repo);
    let out = repo
        .mpw()
        .args(["pr", "PR1", "--create"])
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr_of(&out).contains("`gh` (the GitHub CLI) is not installed"),
        "{}",
        stderr_of(&out)
    );
    // Nothing was printed before the error: the error itself gives the lines.
    assert_eq!(stdout_of(&out), "");
    let err = stderr_of(&out);
    assert!(!err.contains("printed above"), "{err}");
    assert!(
        err.contains("\n  gh pr create --base main --head mpw/PR1/A "),
        "{err}"
    );
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|_| PathBuf::from(c))
        })
}

/// Headless Chromium screenshot of an HTML file.
pub fn screenshot(browser: &Path, html: &Path, png: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(png.exists(), "no screenshot: {}", stderr_of(&out));
}

#[test]
fn html_report_is_self_contained_and_renders() {
    let repo = repo().commit("init");
    run_three(&repo);
    // C failed, so integrate leaves it unmerged and exits 1.
    assert_eq!(
        repo.mpw().arg("integrate").output().unwrap().status.code(),
        Some(1)
    );
    let html = repo.dir.path().join("report.html");
    let out = repo
        .mpw()
        .args(["report", "PR1", "--html"])
        .arg(&html)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let text = std::fs::read_to_string(&html).unwrap();
    #[cfg(unix)]
    {
        // An ordinary file, as the umask makes it, not a private temp file.
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode();
        let plain = repo.dir.path().join("plain.txt");
        std::fs::write(&plain, "x").unwrap();
        assert_eq!(mode(&html), mode(&plain));
    }
    assert!(text.contains("<svg") && text.contains("Timeline") && text.contains("Concurrency"));
    assert!(
        text.contains("C/T2 attempt 1 FAILED"),
        "hover text for each attempt"
    );
    assert!(text.contains("INTEGRATED") && text.contains("Integration"));
    assert!(
        !text.contains("<script") && !text.contains("src=\"http") && !text.contains("href=\"http")
    );
    let Some(browser) = chromium() else {
        eprintln!("skipped the screenshot: no chromium on this machine");
        return;
    };
    let png = repo.dir.path().join("report.png");
    screenshot(&browser, &html, &png);
    let bytes = std::fs::read(&png).unwrap();
    // Not blank: a blank page compresses to almost nothing.
    assert!(bytes.len() > 20_000, "screenshot is {} bytes", bytes.len());
}

#[test]
fn status_watch_redraws_until_the_run_ends() {
    let repo = repo().commit("init");
    let plan = repo.plan(
        "w",
        r#"{ "run_id": "WAT", "workstreams": [ { "id": "A", "tasks": [ { "id": "T", "run": "sleep 1.5" } ] } ] }"#,
    );
    let mut run = repo
        .mpw_process()
        .args(["-q", "run"])
        .arg(&plan)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the run to be recorded, then watch it.
    let db = repo.mpw_dir().join("runs/WAT");
    let t = std::time::Instant::now();
    while !db.exists() && t.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = repo
        .mpw()
        .args(["status", "WAT", "--watch"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    run.wait().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let s = stdout_of(&out);
    assert!(s.matches("\x1b[2J").count() >= 2, "redrew at least twice");
    assert!(s.contains("COMPLETED"), "{s}");
}
