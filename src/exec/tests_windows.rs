//! `exec` on Windows, run under Wine in CI: `cmd` scripts, the job object,
//! process identity by creation time. PowerShell is not in Wine; its command
//! line is tested in `pwsh`.

use super::*;
use std::path::Path;
use tokio::sync::watch;

fn spec(dir: &Path, shell: Shell, script: &str) -> Spec {
    Spec {
        program: Program::Shell {
            shell,
            script: script.into(),
        },
        cwd: dir.to_path_buf(),
        env: vec![("MPW_X".into(), "val ue".into())],
        timeout: None,
        grace: Duration::from_millis(500),
        stdout: dir.join("logs/task.out"),
        stderr: dir.join("logs/task.err"),
        guards: Guards::default(),
    }
}

async fn run_plain(spec: &Spec) -> Outcome {
    let (tx, rx) = watch::channel(Cancel::No);
    let out = run(spec, rx, |_| {}).await;
    drop(tx);
    out
}

#[tokio::test]
async fn cmd_exit_code_is_the_tasks() {
    let d = tempfile::tempdir().unwrap();
    let out = run_plain(&spec(d.path(), Shell::Cmd, "echo hi& exit 3")).await;
    assert_eq!(out.ending, Ending::Exited(3));
    assert_eq!(
        std::fs::read(d.path().join("logs/task.out")).unwrap(),
        b"hi\r\n"
    );
}

#[tokio::test]
async fn cmd_script_reaches_cmd_verbatim() {
    let d = tempfile::tempdir().unwrap();
    let script = r#"echo "%MPW_X%" 'q' $y "a&b"> out.txt"#;
    let out = run_plain(&spec(d.path(), Shell::Cmd, script)).await;
    assert_eq!(out.ending, Ending::Exited(0));
    // cmd expands %VAR%; quotes, `'`, `$` and a quoted `&` pass untouched.
    assert_eq!(
        std::fs::read_to_string(d.path().join("out.txt")).unwrap(),
        "\"val ue\" 'q' $y \"a&b\"\r\n"
    );
}

#[tokio::test]
async fn timeout_ends_the_job_and_the_identity_says_so() {
    let d = tempfile::tempdir().unwrap();
    let mut s = spec(d.path(), Shell::Cmd, "ping -n 60 127.0.0.1 > nul");
    s.timeout = Some(Duration::from_secs(1));
    let mut started = None;
    let (tx, rx) = watch::channel(Cancel::No);
    let out = run(&s, rx, |p| started = Some(p)).await;
    drop(tx);
    assert_eq!(out.ending, Ending::TimedOut);
    let info = started.expect("on_start called");
    assert!(info.start_time.is_some(), "creation time recorded");
    assert!(!is_alive(&info), "the job was ended");
    assert!(!d.path().join("logs/task.proc").exists());
}

#[test]
fn creation_time_names_a_process_and_a_reused_pid_is_not_ours() {
    let me = std::process::id();
    let t = process_start_time(me).expect("own creation time");
    assert_eq!(process_start_time(me), Some(t), "stable");
    assert_eq!(process_start_time(0), None);
    let ours = ProcInfo {
        pid: me,
        pgid: None,
        start_time: Some(t),
    };
    assert!(is_alive(&ours));
    // Same pid, another creation time: a reused pid, left alone.
    let reused = ProcInfo {
        start_time: Some(t - 1),
        ..ours
    };
    assert!(!is_alive(&reused));
    assert!(!kill_stale(&reused, Duration::from_millis(10)));
}

#[test]
fn kill_stale_ends_a_live_process_once() {
    let mut child = std::process::Command::new("ping")
        .args(["-n", "60", "127.0.0.1"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let info = ProcInfo {
        pid: child.id(),
        pgid: None,
        start_time: process_start_time(child.id()),
    };
    assert!(info.start_time.is_some());
    assert!(is_alive(&info));
    assert!(kill_stale(&info, Duration::from_millis(200)));
    child.wait().unwrap();
    assert!(!is_alive(&info));
    assert!(
        !kill_stale(&info, Duration::from_millis(10)),
        "nothing left"
    );
}
