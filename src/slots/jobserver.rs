//! The run's jobserver (GNU make's protocol): the pool its cpu-class tasks'
//! tools take further job tokens from, and how a task's process gets it.
//! See docs/ARCHITECTURE.md, "Slots, jobserver and the machine pool".
//!
//! - `Own`: a pool mpw creates. Unix: a pipe passed as `--jobserver-auth=R,W`
//!   (the form GNU make 4.3 reads; the fifo form is fatal to it). Windows: the
//!   `jobserver` crate's named semaphore.
//! - `Outer`: the jobserver mpw itself was started under (`make -j`, cargo),
//!   joined with the `jobserver` crate.

use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex};

/// A pool mpw created. The coordinator takes tokens without blocking: it
/// must keep serving events while the tools hold every token.
pub(super) struct Own {
    #[cfg(unix)]
    pipe: pipe::Pipe,
    #[cfg(windows)]
    client: jobserver::Client,
}

impl Own {
    /// An empty pool; `put` fills it.
    pub fn new(cap: usize) -> io::Result<Own> {
        #[cfg(unix)]
        {
            let _ = cap;
            Ok(Own {
                pipe: pipe::Pipe::new()?,
            })
        }
        #[cfg(windows)]
        {
            // The semaphore's maximum is its initial count: create it full, empty it.
            let client = jobserver::Client::new(cap)?;
            for _ in 0..cap {
                if let Some(t) = client.try_acquire()? {
                    t.drop_without_releasing();
                }
            }
            Ok(Own { client })
        }
    }

    /// One token out of the pool, if one is there now.
    pub fn try_take(&self) -> io::Result<bool> {
        #[cfg(unix)]
        {
            self.pipe.try_take()
        }
        #[cfg(windows)]
        {
            Ok(match self.client.try_acquire()? {
                Some(t) => {
                    t.drop_without_releasing();
                    true
                }
                None => false,
            })
        }
    }

    /// One token into the pool.
    pub fn put(&self) -> io::Result<()> {
        #[cfg(unix)]
        {
            self.pipe.put()
        }
        #[cfg(windows)]
        {
            self.client.release_raw()
        }
    }

    fn configure(&self, cmd: &mut Command) {
        #[cfg(unix)]
        self.pipe.configure(cmd);
        #[cfg(windows)]
        self.client.configure_make(cmd);
    }
}

/// The jobserver mpw was started under. A helper thread (the crate's) waits
/// for tokens; the coordinator picks them up from `arrived`.
pub(super) struct Outer {
    client: jobserver::Client,
    helper: jobserver::HelperThread,
    arrived: Arc<Mutex<Vec<jobserver::Acquired>>>,
    requested: bool,
}

impl Outer {
    fn join(client: jobserver::Client) -> io::Result<Outer> {
        let arrived = Arc::new(Mutex::new(Vec::new()));
        let sink = arrived.clone();
        let helper = client.clone().into_helper_thread(move |token| {
            if let Ok(t) = token {
                sink.lock().expect("token list").push(t);
            }
        })?;
        Ok(Outer {
            client,
            helper,
            arrived,
            requested: false,
        })
    }

    /// A token that arrived, or a request for the next one.
    pub fn try_take(&mut self) -> Option<jobserver::Acquired> {
        let got = self.arrived.lock().expect("token list").pop();
        if got.is_some() {
            self.requested = false;
        } else if !self.requested {
            self.helper.request_token();
            self.requested = true;
        }
        got
    }

    /// Give back tokens that arrived for tasks that no longer wait.
    pub fn release_spare(&mut self) {
        self.arrived.lock().expect("token list").clear();
    }
}

/// The outer jobserver, if mpw was started under one. Read once, first thing
/// in `main`, before mpw opens files that could reuse its descriptors.
static INHERITED: std::sync::OnceLock<Option<jobserver::Client>> = std::sync::OnceLock::new();

/// Take the jobserver of the environment (MAKEFLAGS, CARGO_MAKEFLAGS) if any.
pub fn inherit() {
    // SAFETY: called at the start of `main`, before any file is opened, so the
    // descriptors MAKEFLAGS names are the ones the parent passed. They must be
    // pipes: make leaves MAKEFLAGS to recipes without `+` but closes the pipe.
    INHERITED.get_or_init(|| unsafe { jobserver::Client::from_env_ext(true).client.ok() });
}

/// The inherited jobserver, joined.
pub(super) fn outer() -> io::Result<Option<Outer>> {
    match INHERITED.get().cloned().flatten() {
        Some(c) => Outer::join(c).map(Some),
        None => Ok(None),
    }
}

/// What a cpu-class task gets: the run's jobserver, in its environment
/// (MAKEFLAGS, MFLAGS, CARGO_MAKEFLAGS) and, on Unix, its inherited descriptors.
#[derive(Clone)]
pub struct Jobserver(pub(super) Arc<Kind>);

pub(super) enum Kind {
    Own(Own),
    Outer(jobserver::Client),
}

impl std::fmt::Debug for Jobserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Jobserver")
    }
}

/// The variables through which make, cargo and rustc find a jobserver.
pub const VARS: [&str; 3] = ["MAKEFLAGS", "MFLAGS", "CARGO_MAKEFLAGS"];

impl Jobserver {
    /// Give `cmd` the jobserver.
    pub fn configure(&self, cmd: &mut Command) {
        match &*self.0 {
            Kind::Own(own) => own.configure(cmd),
            Kind::Outer(client) => client.configure_make(cmd),
        }
    }

    pub(super) fn own(&self) -> Option<&Own> {
        match &*self.0 {
            Kind::Own(own) => Some(own),
            Kind::Outer(_) => None,
        }
    }
}

/// A task that does not get the jobserver must not find the one mpw was
/// started under either: its variables go.
pub fn withhold(cmd: &mut Command) {
    if INHERITED.get().is_some_and(|c| c.is_some()) {
        for v in VARS {
            cmd.env_remove(v);
        }
    }
}

impl Outer {
    pub(super) fn client(&self) -> &jobserver::Client {
        &self.client
    }
}

#[cfg(unix)]
mod pipe {
    //! The jobserver crate cannot take a token from a pipe without blocking
    //! (its `try_acquire` is for fifos only), so the pipe is ours.

    use std::io::{self, PipeReader, PipeWriter, Read, Write};
    use std::os::fd::AsRawFd;
    use std::process::Command;

    pub struct Pipe {
        read: PipeReader,
        write: PipeWriter,
    }

    fn set_flag(fd: i32, get: i32, set: i32, flag: i32, on: bool) -> io::Result<()> {
        // SAFETY: fcntl on a descriptor we own; no memory involved.
        unsafe {
            let flags = libc::fcntl(fd, get);
            if flags < 0 {
                return Err(io::Error::last_os_error());
            }
            let flags = if on { flags | flag } else { flags & !flag };
            if libc::fcntl(fd, set, flags) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let (read, write) = io::pipe()?;
            // Make reads the pipe after pselect and expects EAGAIN when
            // another process took the token first; so do we.
            set_flag(
                read.as_raw_fd(),
                libc::F_GETFL,
                libc::F_SETFL,
                libc::O_NONBLOCK,
                true,
            )?;
            Ok(Pipe { read, write })
        }

        pub fn try_take(&self) -> io::Result<bool> {
            let mut b = [0u8];
            loop {
                match (&self.read).read(&mut b) {
                    Ok(1) => return Ok(true),
                    Ok(_) => return Err(io::Error::other("jobserver pipe closed")),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }

        pub fn put(&self) -> io::Result<()> {
            (&self.write).write_all(b"+")
        }

        /// The descriptors are close-on-exec in mpw; the task's process keeps them.
        pub fn configure(&self, cmd: &mut Command) {
            use std::os::unix::process::CommandExt;
            let (r, w) = (self.read.as_raw_fd(), self.write.as_raw_fd());
            let flags = format!("-j --jobserver-fds={r},{w} --jobserver-auth={r},{w}");
            for v in super::VARS {
                cmd.env(v, &flags);
            }
            // SAFETY: fcntl only, async-signal-safe, between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    set_flag(r, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC, false)?;
                    set_flag(w, libc::F_GETFD, libc::F_SETFD, libc::FD_CLOEXEC, false)
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_own_pool_gives_what_was_put_and_no_more() {
        let own = Own::new(2).unwrap();
        assert!(!own.try_take().unwrap(), "a new pool is empty");
        own.put().unwrap();
        own.put().unwrap();
        assert!(own.try_take().unwrap());
        assert!(own.try_take().unwrap());
        assert!(!own.try_take().unwrap(), "two put, two taken");
        own.put().unwrap();
        assert!(own.try_take().unwrap());
    }

    #[test]
    fn a_task_process_is_told_the_pool() {
        let js = Jobserver(Arc::new(Kind::Own(Own::new(1).unwrap())));
        let mut cmd = Command::new("x");
        js.configure(&mut cmd);
        let flags: Vec<String> = cmd
            .get_envs()
            .filter(|(k, _)| *k == "MAKEFLAGS" || *k == "CARGO_MAKEFLAGS")
            .filter_map(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(flags.len(), 2, "{flags:?}");
        for f in flags {
            // Unix: the pipe's descriptors; Windows: the semaphore's name.
            assert!(f.starts_with("-j --jobserver-fds="), "{f}");
            assert!(f.contains(" --jobserver-auth="), "{f}");
        }
    }
}
