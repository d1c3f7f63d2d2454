//! `exec` driven through `run` as the runner drives it: real shells, real
//! process groups, real files.

use super::capture::MAX_MATCH_CHARS;
use super::*;
use regex::bytes::Regex;
use std::path::Path;
use std::process::Stdio;
use tokio::sync::watch;

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn spec(&self, program: Program) -> Spec {
        Spec {
            program,
            cwd: self.dir.path().to_path_buf(),
            env: Vec::new(),
            timeout: None,
            grace: Duration::from_millis(500),
            stdout: self.path("logs/task.out"),
            stderr: self.path("logs/task.err"),
            guards: Guards::default(),
        }
    }
    fn sh(&self, script: &str) -> Spec {
        self.spec(Program::Shell {
            shell: Shell::Sh,
            script: script.into(),
        })
    }
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }
    fn pid_in(&self, name: &str) -> i32 {
        let text = std::fs::read_to_string(self.path(name)).unwrap();
        text.trim().parse().unwrap()
    }
}

fn no_cancel() -> watch::Receiver<Cancel> {
    let (tx, rx) = watch::channel(Cancel::No);
    // Keep the sender alive for the whole test process: a closed channel is
    // also handled, but tests should exercise the usual case.
    std::mem::forget(tx);
    rx
}

async fn run_plain(spec: &Spec) -> Outcome {
    run(spec, no_cancel(), |_| {}).await
}

fn res(p: &[&str]) -> Vec<Regex> {
    p.iter().map(|s| Regex::new(s).unwrap()).collect()
}

fn guards(fail_on: &[&str], quarantine_on: &[&str], require: &[&str]) -> Guards {
    Guards {
        fail_on: res(fail_on),
        quarantine_on: res(quarantine_on),
        require: res(require),
    }
}

fn pid_dead(pid: i32) -> bool {
    // Zombies of reparented processes are reaped by init; give it a
    // moment, a long one on a loaded 2-core machine.
    for _ in 0..250 {
        if !os::pid_alive(pid as u32) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

async fn wait_for_file(path: &Path) {
    // Generous: the suite runs many process-heavy tests at once.
    for _ in 0..2000 {
        if std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n')) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test]
async fn exit_zero_succeeds_and_files_exist() {
    let fx = Fixture::new();
    let mut started = None;
    let out = run(&fx.sh("true"), no_cancel(), |p| started = Some(p)).await;
    assert_eq!(out.ending, Ending::Exited(0));
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.verdict(), Verdict::Succeeded);
    let info = started.expect("on_start called");
    assert_eq!(out.proc, Some(info));
    assert_eq!(info.pgid, Some(i64::from(info.pid)));
    assert!(info.start_time.is_some());
    assert_eq!(fx.read("logs/task.out"), b"");
    assert_eq!(fx.read("logs/task.err"), b"");
}

/// The child writes its `.proc` line before it runs anything; on Linux the
/// line is whole (the parent writes none): what the parent reports. Stdin is
/// `/dev/null` for every task (one kept file, duplicated per task).
#[tokio::test]
async fn a_running_task_finds_its_whole_proc_line_and_null_stdin() {
    let fx = Fixture::new();
    for n in 0..2 {
        let seen = format!("seen{n}");
        let script =
            format!("cat; cp logs/task.proc {seen}; readlink /proc/$$/fd/0 > {seen}.stdin || true");
        let out = run_plain(&fx.sh(&script)).await;
        assert_eq!(out.verdict(), Verdict::Succeeded, "{out:?}");
        let info = out.proc.unwrap();
        let start = info.start_time.map_or("-".into(), |t| t.to_string());
        let line = format!("{} {} {start}\n", info.pid, info.pid);
        let got = std::fs::read_to_string(fx.path(&seen)).unwrap();
        assert!(!fx.path("logs/task.proc").exists(), "removed at the end");
        if cfg!(target_os = "linux") {
            assert_eq!(got, line);
            assert!(info.start_time.is_some());
            assert_eq!(
                std::fs::read_to_string(fx.path(&format!("{seen}.stdin"))).unwrap(),
                "/dev/null\n"
            );
        } else {
            // Elsewhere the parent completes the child's line after the spawn.
            assert!(got == line || got == format!("{} {} -\n", info.pid, info.pid));
        }
    }
}

#[tokio::test]
async fn exit_three_fails() {
    let fx = Fixture::new();
    let out = run_plain(&fx.sh("echo out; echo err >&2; exit 3")).await;
    assert_eq!(out.ending, Ending::Exited(3));
    assert_eq!(out.exit_code, Some(3));
    assert_eq!(out.verdict(), Verdict::Failed("exited with code 3".into()));
    assert_eq!(fx.read("logs/task.out"), b"out\n");
    assert_eq!(fx.read("logs/task.err"), b"err\n");
}

#[tokio::test]
async fn binary_output_is_kept_exactly() {
    let fx = Fixture::new();
    let out = run_plain(&fx.sh(r"printf 'a\377\376\000b\r\n'; printf '\377' >&2")).await;
    assert_eq!(out.verdict(), Verdict::Succeeded);
    assert_eq!(fx.read("logs/task.out"), b"a\xff\xfe\x00b\r\n");
    assert_eq!(fx.read("logs/task.err"), b"\xff");
}

#[tokio::test]
async fn fail_on_match_fails_even_with_exit_zero() {
    let fx = Fixture::new();
    let mut spec = fx.sh("echo fine; echo 'error[E0425]: cannot find value' >&2; echo more");
    spec.guards = guards(&[r"error\[E\d+\]"], &[], &[]);
    let out = run_plain(&spec).await;
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(
        out.fail_match,
        Some((
            r"error\[E\d+\]".into(),
            "error[E0425]: cannot find value".into()
        ))
    );
    assert_eq!(
        out.verdict(),
        Verdict::Failed(
            r"output matched fail_on /error\[E\d+\]/: error[E0425]: cannot find value".into()
        )
    );
}

#[tokio::test]
async fn quarantine_beats_fail() {
    let fx = Fixture::new();
    let mut spec = fx.sh("echo 'FAIL here'; echo '-----BEGIN RSA PRIVATE KEY-----'; exit 1");
    spec.guards = guards(&["FAIL"], &["BEGIN RSA PRIVATE KEY"], &[]);
    let out = run_plain(&spec).await;
    assert!(out.fail_match.is_some());
    assert_eq!(
        out.verdict(),
        Verdict::Quarantined(
            "output matched quarantine_on /BEGIN RSA PRIVATE KEY/: -----BEGIN RSA PRIVATE KEY-----"
                .into()
        )
    );
}

#[tokio::test]
async fn require_patterns() {
    let fx = Fixture::new();
    let mut spec = fx.sh("echo 'test result: ok. 3 passed'; echo done >&2");
    spec.guards = guards(&[], &[], &["test result: ok", "^done$"]);
    let out = run_plain(&spec).await;
    assert!(out.missing_require.is_empty());
    assert_eq!(out.verdict(), Verdict::Succeeded);

    spec.guards = guards(&[], &[], &["test result: ok", "never printed"]);
    let out = run_plain(&spec).await;
    assert_eq!(out.missing_require, vec!["never printed".to_string()]);
    assert_eq!(
        out.verdict(),
        Verdict::Failed("output never matched require /never printed/".into())
    );
}

#[tokio::test]
async fn long_lines_are_scanned_in_chunks_and_matches_truncated() {
    let fx = Fixture::new();
    // 200 KB without a newline, then the marker on the same line.
    let mut spec = fx.sh("head -c 200000 /dev/zero | tr '\\0' x; echo SECRET; echo tail");
    spec.guards = guards(&[], &["SECRET"], &["^tail$"]);
    let out = run_plain(&spec).await;
    let (_, line) = out.quarantine_match.clone().expect("matched");
    assert!(line.ends_with("xxxSECRET"), "{line}");
    assert!(line.chars().count() <= MAX_MATCH_CHARS);
    assert!(out.missing_require.is_empty());
    assert!(matches!(out.verdict(), Verdict::Quarantined(_)));
}

#[tokio::test]
async fn argv_runs_without_shell() {
    let fx = Fixture::new();
    let spec = fx.spec(Program::Argv(vec![
        "printf".into(),
        "[%s]\\n".into(),
        "two words".into(),
        "$HOME;*".into(),
    ]));
    let out = run_plain(&spec).await;
    assert_eq!(out.verdict(), Verdict::Succeeded);
    assert_eq!(fx.read("logs/task.out"), b"[two words]\n[$HOME;*]\n");
}

#[tokio::test]
async fn env_and_cwd_are_applied() {
    let fx = Fixture::new();
    std::fs::create_dir(fx.path("sub")).unwrap();
    let mut spec = fx.sh("echo \"$MPW_TEST_VAR\"; echo \"${PATH:+has-path}\"; pwd");
    spec.env = vec![("MPW_TEST_VAR".into(), "hello world".into())];
    spec.cwd = fx.path("sub");
    let out = run_plain(&spec).await;
    assert_eq!(out.verdict(), Verdict::Succeeded);
    let text = String::from_utf8(fx.read("logs/task.out")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "hello world");
    assert_eq!(lines[1], "has-path", "parent environment inherited");
    let cwd = std::fs::canonicalize(fx.path("sub")).unwrap();
    assert_eq!(std::fs::canonicalize(lines[2]).unwrap(), cwd);
}

#[tokio::test]
async fn spawn_failure_is_127_with_reason() {
    let fx = Fixture::new();
    let spec = fx.spec(Program::Argv(vec!["mpw-no-such-program-xyz".into()]));
    let out = run_plain(&spec).await;
    assert_eq!(out.exit_code, Some(127));
    let Ending::SpawnFailed(reason) = &out.ending else {
        panic!("{:?}", out.ending)
    };
    assert!(
        reason.starts_with("could not start `mpw-no-such-program-xyz`: "),
        "{reason}"
    );
    assert!(reason.contains("os error"), "{reason}");
    assert_eq!(out.verdict(), Verdict::Failed(reason.clone()));
    assert!(fx.path("logs/task.out").exists());

    let mut spec = fx.sh("true");
    spec.cwd = fx.path("missing-dir");
    let out = run_plain(&spec).await;
    assert_eq!(out.exit_code, Some(127));
    let Ending::SpawnFailed(reason) = &out.ending else {
        panic!("{:?}", out.ending)
    };
    assert!(
        reason.contains("`sh`") && reason.contains("missing-dir"),
        "{reason}"
    );

    let script = fx.path("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let spec = fx.spec(Program::Argv(vec![script.display().to_string()]));
    let out = run_plain(&spec).await;
    assert_eq!(out.exit_code, Some(127));
    assert!(matches!(out.ending, Ending::SpawnFailed(ref r) if r.contains("ermission denied")));
}

#[tokio::test]
async fn timeout_kills_backgrounded_grandchild() {
    let fx = Fixture::new();
    let mut spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
    spec.timeout = Some(Duration::from_secs(1));
    let t = Instant::now();
    let out = run_plain(&spec).await;
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(out.ending, Ending::TimedOut);
    assert_eq!(out.exit_code, None);
    assert_eq!(out.verdict(), Verdict::Failed("timed out after 1s".into()));
    assert!(pid_dead(fx.pid_in("bg.pid")), "background sleep survived");
}

#[tokio::test]
async fn background_child_holding_stdout_does_not_hang() {
    let fx = Fixture::new();
    let spec = fx.sh("sleep 30 & echo $! > bg.pid; echo main done");
    let t = Instant::now();
    let out = run_plain(&spec).await;
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    assert_eq!(out.ending, Ending::Exited(0));
    assert_eq!(out.verdict(), Verdict::Succeeded);
    assert_eq!(fx.read("logs/task.out"), b"main done\n");
    assert!(pid_dead(fx.pid_in("bg.pid")), "background sleep survived");
}

#[tokio::test]
async fn graceful_cancel_ends_the_group() {
    let fx = Fixture::new();
    let (tx, rx) = watch::channel(Cancel::No);
    let spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
    let bg = fx.path("bg.pid");
    let canceller = async {
        wait_for_file(&bg).await;
        tx.send(Cancel::Graceful).unwrap();
    };
    let t = Instant::now();
    let (out, ()) = tokio::join!(run(&spec, rx, |_| {}), canceller);
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    assert_eq!(out.ending, Ending::Cancelled);
    assert_eq!(out.verdict(), Verdict::Cancelled);
    let info = out.proc.unwrap();
    assert!(pid_dead(fx.pid_in("bg.pid")));
    assert!(!is_alive(&info));
}

/// Start a task that ignores TERM and leaves a background child, send `how`
/// once both run, and return the outcome and how long it took after the send.
async fn cancel_term_ignoring(fx: &Fixture, grace: Duration, how: Cancel) -> (Outcome, Duration) {
    let (tx, rx) = watch::channel(Cancel::No);
    let mut spec = fx.sh("trap '' TERM; sleep 30 & echo $! > bg.pid; sleep 30");
    spec.grace = grace;
    let bg = fx.path("bg.pid");
    let sent = std::sync::Mutex::new(None);
    let canceller = async {
        wait_for_file(&bg).await;
        *sent.lock().unwrap() = Some(Instant::now());
        tx.send(how).unwrap();
    };
    let (out, ()) = tokio::join!(run(&spec, rx, |_| {}), canceller);
    let waited = sent.lock().unwrap().unwrap().elapsed();
    (out, waited)
}

#[tokio::test]
async fn term_ignoring_task_is_killed_after_grace() {
    let fx = Fixture::new();
    let (out, waited) =
        cancel_term_ignoring(&fx, Duration::from_millis(700), Cancel::Graceful).await;
    assert!(
        waited >= Duration::from_millis(650),
        "KILL came before the grace: {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(out.ending, Ending::Cancelled);
    assert!(pid_dead(fx.pid_in("bg.pid")));
}

#[tokio::test]
async fn immediate_cancel_kills_at_once() {
    let fx = Fixture::new();
    let (out, waited) = cancel_term_ignoring(&fx, Duration::from_secs(10), Cancel::Immediate).await;
    assert!(waited < Duration::from_secs(1), "{waited:?}");
    assert_eq!(out.ending, Ending::Cancelled);
    assert!(pid_dead(fx.pid_in("bg.pid")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_future_kills_the_group() {
    let fx = Fixture::new();
    let spec = fx.sh("sleep 30 & echo $! > bg.pid; sleep 30");
    let bg = fx.path("bg.pid");
    let limited = async {
        tokio::select! {
            _ = run_plain(&spec) => panic!("should not finish"),
            _ = wait_for_file(&bg) => {}
        }
    };
    limited.await;
    assert!(
        pid_dead(fx.pid_in("bg.pid")),
        "background sleep survived the drop"
    );
}

#[tokio::test]
async fn cancel_before_start_spawns_nothing() {
    let fx = Fixture::new();
    let (_tx, rx) = watch::channel(Cancel::Graceful);
    let mut called = false;
    let out = run(&fx.sh("touch ran"), rx, |_| called = true).await;
    assert_eq!(out.ending, Ending::Cancelled);
    assert!(!called);
    assert!(!fx.path("ran").exists());
}

#[test]
fn is_alive_and_kill_stale_on_a_real_group() {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new("sh")
        .args(["-c", "trap '' TERM; sleep 30 & sleep 30"])
        .process_group(0)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let info = ProcInfo {
        pid,
        pgid: Some(i64::from(pid)),
        start_time: process_start_time(pid),
    };
    assert!(info.start_time.is_some());
    assert!(is_alive(&info));
    let reused = ProcInfo {
        start_time: info.start_time.map(|t| t + 12345),
        ..info
    };
    assert!(
        !is_alive(&reused),
        "another start time means another process"
    );
    assert!(!kill_stale(&reused, Duration::from_millis(100)));
    assert!(is_alive(&info));

    let t = Instant::now();
    assert!(kill_stale(&info, Duration::from_millis(300)));
    assert!(t.elapsed() < Duration::from_secs(3));
    child.wait().unwrap();
    assert!(!is_alive(&info));
    assert!(!kill_stale(&info, Duration::from_millis(100)));
}

#[test]
fn process_start_time_of_self_and_unknown() {
    assert!(process_start_time(std::process::id()).is_some());
    assert_eq!(process_start_time(0), None);
    assert_eq!(process_start_time(u32::MAX - 1), None);
}

#[tokio::test]
async fn flood_streams_to_disk() {
    let fx = Fixture::new();
    let mut spec = fx.sh("head -c 50000000 /dev/zero; echo end >&2");
    spec.guards = guards(&["never"], &[], &[]);
    let out = run_plain(&spec).await;
    assert_eq!(out.verdict(), Verdict::Succeeded);
    assert_eq!(
        std::fs::metadata(fx.path("logs/task.out")).unwrap().len(),
        50_000_000
    );
    assert_eq!(fx.read("logs/task.err"), b"end\n");
}

#[test]
fn command_lines() {
    let sh = |shell| Program::Shell {
        shell,
        script: "echo hi".into(),
    };
    assert_eq!(
        command_line(&sh(Shell::Sh)),
        ("sh".into(), vec!["-c".into(), "echo hi".into()])
    );
    assert_eq!(command_line(&sh(Shell::Bash)).0, "bash");
    let (p, a) = command_line(&sh(Shell::Pwsh));
    assert_eq!(p, "pwsh");
    assert_eq!(
        a[..4],
        [
            "-NoLogo",
            "-NoProfile",
            "-NonInteractive",
            "-EncodedCommand"
        ]
    );
    assert_eq!(
        command_line(&sh(Shell::Cmd)),
        (
            "cmd".into(),
            vec!["/D".into(), "/S".into(), "/C".into(), "echo hi".into()]
        )
    );
    let argv = Program::Argv(vec!["cargo".into(), "fmt".into(), "a b".into()]);
    assert_eq!(
        command_line(&argv),
        ("cargo".into(), vec!["fmt".into(), "a b".into()])
    );
    assert_eq!(default_shell(), Shell::Sh);
}

#[test]
fn verdict_messages() {
    let base = Outcome {
        ending: Ending::Exited(0),
        exit_code: Some(0),
        fail_match: None,
        quarantine_match: None,
        missing_require: Vec::new(),
        proc: None,
        duration: Duration::ZERO,
        timeout: Some(Duration::from_secs(300)),
        output_error: None,
    };
    let with = |ending| Outcome {
        ending,
        ..base.clone()
    };
    assert_eq!(
        with(Ending::TimedOut).verdict(),
        Verdict::Failed("timed out after 300s".into())
    );
    assert_eq!(
        with(Ending::Signalled(9)).verdict(),
        Verdict::Failed("killed by signal 9".into())
    );
    assert_eq!(with(Ending::Cancelled).verdict(), Verdict::Cancelled);
    let failing = Outcome {
        fail_match: Some(("x".into(), "x".into())),
        ..with(Ending::Cancelled)
    };
    assert_eq!(failing.verdict(), Verdict::Cancelled);
}

/// The shell is found on the task's own `PATH` (looked up once per `PATH`
/// value), shows its bare name as `$0`, and is looked up again once it is
/// gone from where it was found.
#[cfg(unix)]
#[tokio::test]
async fn the_shell_is_found_on_the_tasks_path_once_and_again_when_it_moves() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    let bin = f.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let fake = bin.join("sh");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho fake >> calls\nexec /bin/sh \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let plain = f.sh("echo \"$0\"");
    assert_eq!(run_plain(&plain).await.exit_code, Some(0));
    assert_eq!(f.read("logs/task.out"), b"sh\n", "argv[0] is the bare name");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let mut spec = f.sh("true");
    spec.env.push(("PATH".into(), path));
    for _ in 0..2 {
        assert_eq!(run_plain(&spec).await.exit_code, Some(0));
    }
    assert_eq!(
        f.read("calls"),
        b"fake\nfake\n",
        "the task's PATH came first"
    );
    std::fs::remove_file(&fake).unwrap();
    assert_eq!(run_plain(&spec).await.exit_code, Some(0), "found again");
    assert_eq!(f.read("calls"), b"fake\nfake\n");
}
