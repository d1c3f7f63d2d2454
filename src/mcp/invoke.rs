//! Running the `mpw` binary for a tool call: the same code, checks and
//! messages as on the command line, by construction.

use super::Workspace;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    /// None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The command's own error lines, as a terminal would show them.
    pub fn message(&self) -> String {
        let text = self.stderr.trim();
        if !text.is_empty() {
            return text.to_string();
        }
        match self.code {
            Some(c) => format!("mpw exited with status {c}"),
            None => "mpw was killed by a signal".into(),
        }
    }
}

/// A run started in the background.
#[derive(Debug)]
pub struct Started {
    pub run_id: String,
    /// Its coordinator's output.
    pub log: PathBuf,
}

/// The arguments every invocation starts with: the repository the server
/// serves, no colours, no progress display.
fn command(ws: &Workspace, cwd: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(&ws.exe);
    c.current_dir(cwd)
        .arg("--repo")
        .arg(&ws.root)
        .args(["--color", "never"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// Runs `mpw <args>` in the repository and waits for it.
pub async fn run(ws: &Workspace, args: &[OsString]) -> std::io::Result<Output> {
    run_in(ws, &ws.root, args).await
}

/// Runs `mpw <args>` with `cwd` as working directory.
pub async fn run_in(ws: &Workspace, cwd: &Path, args: &[OsString]) -> std::io::Result<Output> {
    let out = command(ws, cwd).arg("--quiet").args(args).output().await?;
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Starts `mpw run <args>` detached from the server and returns the run id
/// as soon as the coordinator prints it: its first line on stdout, written
/// once the run is recorded. If it exits before, its error comes back as
/// `Err`. The coordinator's output goes to a log under `log_dir`; it keeps
/// running when the server stops, in its own process group so that a
/// client's Ctrl-C does not reach it (`run_cancel` stops it).
pub async fn start_run(
    ws: &Workspace,
    args: &[OsString],
) -> std::io::Result<Result<Started, Output>> {
    std::fs::create_dir_all(&ws.log_dir)?;
    let log = ws.log_dir.join(format!(
        "run-{}.log",
        ulid::Ulid::generate().to_string().to_lowercase()
    ));
    let err_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    let mut c = command(ws, &ws.root);
    c.arg("run")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(err_file));
    #[cfg(unix)]
    c.process_group(0);
    #[cfg(windows)]
    let mut child = {
        // CREATE_NEW_PROCESS_GROUP keeps the client's Ctrl-C out;
        // CREATE_BREAKAWAY_FROM_JOB keeps a client that kills its server's
        // job object (as the Python SDK does) from killing the run, where
        // the job allows it.
        const NEW_GROUP: u32 = 0x0000_0200;
        const BREAKAWAY: u32 = 0x0100_0000;
        c.creation_flags(NEW_GROUP | BREAKAWAY);
        match c.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                c.creation_flags(NEW_GROUP);
                c.spawn()?
            }
            r => r?,
        }
    };
    #[cfg(not(windows))]
    let mut child = c.spawn()?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout);
    let mut first = String::new();
    lines.read_line(&mut first).await?;
    let run_id = first.trim().to_string();
    if run_id.is_empty() {
        let status = child.wait().await?;
        let mut stderr = String::new();
        if let Ok(mut f) = tokio::fs::File::open(&log).await {
            let _ = f.read_to_string(&mut stderr).await;
        }
        let _ = std::fs::remove_file(&log);
        return Ok(Err(Output {
            code: status.code(),
            stdout: String::new(),
            stderr,
        }));
    }
    // The rest of stdout (the final summary) joins the log; the child is
    // reaped when it ends, if the server is still there.
    let log_path = log.clone();
    tokio::spawn(async move {
        if let Ok(mut f) = tokio::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .await
        {
            let _ = tokio::io::copy(&mut lines, &mut f).await;
        }
        let _ = child.wait().await;
    });
    Ok(Ok(Started { run_id, log }))
}
