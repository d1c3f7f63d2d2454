//! Output capture: each pipe is streamed to its file through a fixed buffer
//! and scanned line by line by the guardrails on the way, so memory stays
//! bounded whatever the task prints.

use super::{Guards, Spec};
use std::io;
use std::path::Path;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Read buffer for each output pipe (the only per-stream memory besides the
/// scan line): it starts small, since most tasks print little, and grows to
/// the most once a read fills it.
const FIRST_READ_BUF: usize = 4 * 1024;
const READ_BUF: usize = 64 * 1024;
/// Longest line scanned as one piece; longer lines are scanned in chunks of this size.
const MAX_SCAN_LINE: usize = 64 * 1024;
/// Matching lines kept in outcomes are cut to this many characters.
pub(super) const MAX_MATCH_CHARS: usize = 200;

/// Create (truncate) the stdout and stderr files and their folders.
/// The error is the reason the task could not start.
pub(super) fn create_outputs(spec: &Spec) -> Result<(std::fs::File, std::fs::File), String> {
    let open = |path: &Path| {
        open_output(path)
            .map_err(|e| format!("could not create output file `{}`: {e}", path.display()))
    };
    Ok((open(&spec.stdout)?, open(&spec.stderr)?))
}

/// A log file (created with its folders, truncated).
pub(super) fn open_log(path: &Path) -> io::Result<std::fs::File> {
    open_output(path)
}

fn open_output(path: &Path) -> io::Result<std::fs::File> {
    // The folder exists for all but a workstream's first log: try first.
    match std::fs::File::create(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(path)
        }
        r => r,
    }
}

/// What the guardrails found over both streams, and whether the files are whole.
pub(super) struct Captured {
    pub fail_match: Option<(String, String)>,
    pub quarantine_match: Option<(String, String)>,
    pub missing_require: Vec<String>,
    pub output_error: Option<String>,
}

/// The two running copies, stdout and stderr, each to its file.
pub(super) struct Pumps {
    out: JoinHandle<(Scanner, Option<String>)>,
    err: JoinHandle<(Scanner, Option<String>)>,
}

impl Pumps {
    /// Start copying both pipes. When `stop` turns true they give up on
    /// pipes that are still open.
    pub fn start<O, E>(
        stdout: (Option<O>, std::fs::File, &Path),
        stderr: (Option<E>, std::fs::File, &Path),
        guards: &Guards,
        stop: watch::Receiver<bool>,
    ) -> Self
    where
        O: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        Pumps {
            out: spawn_pump(stdout, guards, stop.clone()),
            err: spawn_pump(stderr, guards, stop),
        }
    }

    /// Wait until both pipes are done, then put together what the
    /// guardrails found in either.
    pub async fn finish(self, guards: &Guards) -> Captured {
        let lost =
            |e: tokio::task::JoinError| (Scanner::new(Guards::default()), Some(e.to_string()));
        let (out_scan, out_err) = self.out.await.unwrap_or_else(lost);
        let (err_scan, err_err) = self.err.await.unwrap_or_else(lost);
        let missing_require = guards
            .require
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !out_scan.required.get(*i).copied().unwrap_or(false)
                    && !err_scan.required.get(*i).copied().unwrap_or(false)
            })
            .map(|(_, re)| re.as_str().to_string())
            .collect();
        Captured {
            fail_match: earliest(out_scan.fail, err_scan.fail),
            quarantine_match: earliest(out_scan.quarantine, err_scan.quarantine),
            missing_require,
            output_error: out_err.or(err_err),
        }
    }
}

fn spawn_pump<R: AsyncRead + Unpin + Send + 'static>(
    (reader, file, path): (Option<R>, std::fs::File, &Path),
    guards: &Guards,
    stop: watch::Receiver<bool>,
) -> JoinHandle<(Scanner, Option<String>)> {
    let file = tokio::fs::File::from_std(file);
    let log = path.to_path_buf();
    let scanner = Scanner::new(guards.clone());
    tokio::spawn(async move {
        let (scanner, e) = pump(reader, file, scanner, stop).await;
        let e = e.map(|e| format!("could not write log {}: {e}", log.display()));
        (scanner, e)
    })
}

/// A write to a log, or the `log-write` fault point: a full disk on demand.
async fn write_log(file: &mut tokio::fs::File, data: &[u8]) -> io::Result<()> {
    if crate::fault::armed("log-write") {
        return Err(io::Error::new(
            io::ErrorKind::StorageFull,
            "No space left on device (MPW_FAULT=log-write)",
        ));
    }
    file.write_all(data).await
}

/// First match of one guard kind.
#[derive(Debug, Clone)]
struct Hit {
    at: Instant,
    pattern: String,
    line: String,
}

/// Line-by-line guardrail scanning over one output stream, bounded memory.
struct Scanner {
    guards: Guards,
    line: Vec<u8>,
    fail: Option<Hit>,
    quarantine: Option<Hit>,
    required: Vec<bool>,
}

impl Scanner {
    fn new(guards: Guards) -> Self {
        let required = vec![false; guards.require.len()];
        Scanner {
            guards,
            line: Vec::new(),
            fail: None,
            quarantine: None,
            required,
        }
    }

    /// Is any guard still looking for its first match?
    fn active(&self) -> bool {
        (self.fail.is_none() && !self.guards.fail_on.is_empty())
            || (self.quarantine.is_none() && !self.guards.quarantine_on.is_empty())
            || self.required.iter().any(|r| !r)
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.active() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.line.is_empty() && i <= MAX_SCAN_LINE {
                        self.scan(&data[..i]);
                    } else {
                        self.push(&data[..i]);
                        self.flush_line();
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.push(data);
                    break;
                }
            }
        }
    }

    /// Append to the pending line, scanning full chunks as they fill up.
    fn push(&mut self, mut part: &[u8]) {
        while !part.is_empty() {
            let take = (MAX_SCAN_LINE - self.line.len()).min(part.len());
            self.line.extend_from_slice(&part[..take]);
            part = &part[take..];
            if self.line.len() >= MAX_SCAN_LINE {
                self.flush_line();
            }
        }
    }

    fn flush_line(&mut self) {
        let line = std::mem::take(&mut self.line);
        self.scan(&line);
        self.line = line;
        self.line.clear();
    }

    /// End of stream: scan what is left.
    fn finish(&mut self) {
        if !self.line.is_empty() && self.active() {
            self.flush_line();
        }
        self.line = Vec::new();
    }

    fn scan(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if self.fail.is_none() {
            self.fail = first_hit(&self.guards.fail_on, line);
        }
        if self.quarantine.is_none() {
            self.quarantine = first_hit(&self.guards.quarantine_on, line);
        }
        for (re, seen) in self.guards.require.iter().zip(self.required.iter_mut()) {
            if !*seen && re.is_match(line) {
                *seen = true;
            }
        }
    }
}

fn first_hit(patterns: &[regex::bytes::Regex], line: &[u8]) -> Option<Hit> {
    let (re, m) = patterns
        .iter()
        .find_map(|re| re.find(line).map(|m| (re, m)))?;
    // Long lines: show the part around the match, not just their beginning.
    let from = if line.len() > MAX_MATCH_CHARS && m.end() > MAX_MATCH_CHARS {
        m.start().saturating_sub(MAX_MATCH_CHARS / 4)
    } else {
        0
    };
    let text = String::from_utf8_lossy(&line[from..]);
    Some(Hit {
        at: Instant::now(),
        pattern: re.as_str().to_string(),
        line: text.trim_end().chars().take(MAX_MATCH_CHARS).collect(),
    })
}

fn earliest(a: Option<Hit>, b: Option<Hit>) -> Option<(String, String)> {
    let hit = match (a, b) {
        (Some(a), Some(b)) => Some(if b.at < a.at { b } else { a }),
        (a, b) => a.or(b),
    };
    hit.map(|h| (h.pattern, h.line))
}

/// Copy one pipe into its file with a fixed buffer, scanning as it goes.
/// Stops at EOF, or when `stop` fires (or its sender goes away).
async fn pump<R: AsyncRead + Unpin>(
    reader: Option<R>,
    mut file: tokio::fs::File,
    mut scanner: Scanner,
    mut stop: watch::Receiver<bool>,
) -> (Scanner, Option<String>) {
    let mut error: Option<String> = None;
    if let Some(mut reader) = reader {
        let mut buf = vec![0u8; FIRST_READ_BUF];
        loop {
            let n = tokio::select! {
                r = reader.read(&mut buf) => match r {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error.get_or_insert_with(|| format!("reading the output: {e}"));
                        break;
                    }
                },
                _ = stop.wait_for(|s| *s) => break,
            };
            let data = &buf[..n];
            scanner.feed(data);
            // On a write error keep draining the pipe so the task never blocks on it.
            if error.is_none()
                && let Err(e) = write_log(&mut file, data).await
            {
                error = Some(e.to_string());
            }
            if n == buf.len() && n < READ_BUF {
                buf.resize(READ_BUF, 0);
            }
        }
    }
    scanner.finish();
    if let Err(e) = file.flush().await {
        error.get_or_insert_with(|| e.to_string());
    }
    (scanner, error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::bytes::Regex;

    fn scanner(fail_on: &[&str], require: &[&str]) -> Scanner {
        let res = |p: &[&str]| p.iter().map(|s| Regex::new(s).unwrap()).collect();
        Scanner::new(Guards {
            fail_on: res(fail_on),
            quarantine_on: Vec::new(),
            require: res(require),
        })
    }

    #[test]
    fn a_line_split_across_reads_is_scanned_whole_without_its_cr() {
        let mut sc = scanner(&["^error: .*x$"], &[]);
        sc.feed(b"fine\r\nerr");
        assert!(sc.fail.is_none());
        sc.feed(b"or: x\r\nlater\n");
        let hit = sc.fail.expect("matched");
        assert_eq!(
            (hit.pattern.as_str(), hit.line.as_str()),
            ("^error: .*x$", "error: x")
        );
    }

    #[test]
    fn the_last_line_without_newline_is_scanned_at_the_end() {
        let mut sc = scanner(&[], &["^done$"]);
        sc.feed(b"working\ndone");
        assert_eq!(sc.required, [false]);
        sc.finish();
        assert_eq!(sc.required, [true]);
    }

    #[test]
    fn scanning_stops_once_every_guard_has_matched() {
        let mut sc = scanner(&["boom"], &["ok"]);
        sc.feed(b"ok\nboom 1\n");
        assert!(!sc.active());
        sc.feed(b"boom 2\n");
        assert_eq!(sc.fail.expect("matched").line, "boom 1");
        assert!(sc.line.is_empty(), "nothing kept once inactive");
    }

    #[test]
    fn the_earlier_of_two_streams_wins() {
        let t0 = Instant::now();
        let hit = |ms, line: &str| Hit {
            at: t0 + std::time::Duration::from_millis(ms),
            pattern: "x".into(),
            line: line.into(),
        };
        let found = earliest(Some(hit(5, "x on stdout")), Some(hit(1, "x on stderr")));
        assert_eq!(found, Some(("x".into(), "x on stderr".into())));
        assert_eq!(
            earliest(None, Some(hit(1, "only"))),
            Some(("x".into(), "only".into()))
        );
    }
}
