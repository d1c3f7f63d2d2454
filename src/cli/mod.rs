//! Command line: clap definitions, dispatch, and the one place where errors
//! become messages and exit codes.

/// `println!` that ignores a closed stdout (`mpw status | head`).
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

mod completions_cmd;
mod exit;
mod export_cmd;
mod import_cmd;
mod init_cmd;
mod integrate_cmd;
mod mcp_cmd;
mod plan_cmd;
mod pr_cmd;
mod run_cmd;
mod slots_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;

pub use exit::{CliError, CliResult, Exit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Parser)]
#[command(
    name = "mpw",
    version,
    about = "Run several streams of code changes in parallel, one git worktree each, and merge them back safely",
    propagate_version = true
)]
pub struct Cli {
    /// Repository to work in (default: the one around the current directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print less: no progress display, only results and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// When to use colours; NO_COLOR is honoured.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a plan, print its JSON Schema, or draw its DAG.
    #[command(subcommand)]
    Plan(plan_cmd::PlanCmd),
    /// Run a plan: a worktree per workstream, tasks in parallel, a commit per task.
    Run(run_cmd::RunArgs),
    /// Continue a run that was interrupted or whose coordinator died.
    Resume(run_cmd::ResumeArgs),
    /// Stop a run from another terminal.
    Cancel(run_cmd::CancelArgs),
    /// Workstream and task states of a run (default: the latest).
    Status(run_cmd::StatusArgs),
    /// List runs, newest first.
    Runs(run_cmd::RunsArgs),
    /// A task's captured output.
    Logs(run_cmd::LogsArgs),
    /// The event stream of a run.
    Events(run_cmd::EventsArgs),
    /// Merge finished workstreams into a branch, one at a time, under a lock.
    Integrate(integrate_cmd::IntegrateArgs),
    /// Write a pull request per workstream; optionally push and open it with gh.
    Pr(pr_cmd::PrArgs),
    /// Write a self-contained HTML report of a run.
    Report(pr_cmd::ReportArgs),
    /// Remove a run's worktrees (and integrated branches).
    Clean(integrate_cmd::CleanArgs),
    /// Write a commented starter plan (and its schema) into plans/.
    Init(init_cmd::InitArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish).
    Completions(completions_cmd::CompletionsArgs),
    /// Write a plan as a GitHub Actions or Argo workflow, one job per workstream.
    Export(export_cmd::ExportArgs),
    /// Merge records of workstreams run elsewhere (CI runners) into this repository's.
    Import(import_cmd::ImportArgs),
    /// Serve the Model Context Protocol on stdin/stdout, for AI assistants.
    Mcp(mcp_cmd::McpArgs),
    /// Who holds the machine's cpu slots (pid, run, task), shared by every mpw process.
    Slots(slots_cmd::SlotsArgs),
    /// Print a worker adapter mpw carries (`"adapter": "python"` in globals.workers).
    Adapter(AdapterArgs),
}

#[derive(Debug, clap::Args)]
pub struct AdapterArgs {
    /// Which adapter.
    #[arg(value_enum)]
    pub adapter: AdapterName,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AdapterName {
    /// mpw_worker.py: runs `python ARGS` requests in one warm interpreter.
    Python,
}

/// What every command gets: the global flags, resolved.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub repo: Option<PathBuf>,
    pub quiet: bool,
    pub verbose: u8,
    pub color: bool,
    /// Stderr is a terminal: live progress is possible.
    pub tty: bool,
}

impl Ctx {
    fn from_cli(cli: &Cli) -> Self {
        let tty = std::io::stderr().is_terminal();
        let color = match cli.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        Ctx {
            repo: cli.repo.clone(),
            quiet: cli.quiet,
            verbose: cli.verbose,
            color,
            tty,
        }
    }
}

fn init_tracing(ctx: &Ctx) {
    use tracing_subscriber::EnvFilter;
    let default = match ctx.verbose {
        0 => "warn",
        1 => "mpw=info",
        2 => "mpw=debug",
        _ => "mpw=trace,gix=debug",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::new(v),
        _ => EnvFilter::new(default),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ctx.color)
        .try_init();
}

/// Entry point of the binary; returns the process exit code.
pub fn main() -> i32 {
    // First: the descriptors of an outer jobserver, before files are opened.
    crate::slots::inherit();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Exit::of_clap(&e) as i32;
        }
    };
    let ctx = Ctx::from_cli(&cli);
    init_tracing(&ctx);
    let result = match cli.command {
        Command::Plan(cmd) => plan_cmd::run(cmd, &ctx),
        Command::Run(a) => run_cmd::run(a, &ctx),
        Command::Resume(a) => run_cmd::resume(a, &ctx),
        Command::Cancel(a) => run_cmd::cancel(a, &ctx),
        Command::Status(a) => run_cmd::status(a, &ctx),
        Command::Runs(a) => run_cmd::runs(a, &ctx),
        Command::Logs(a) => run_cmd::logs(a, &ctx),
        Command::Events(a) => run_cmd::events(a, &ctx),
        Command::Integrate(a) => integrate_cmd::integrate(a, &ctx),
        Command::Pr(a) => pr_cmd::pr(a, &ctx),
        Command::Report(a) => pr_cmd::report(a, &ctx),
        Command::Clean(a) => integrate_cmd::clean(a, &ctx),
        Command::Init(a) => init_cmd::init(a, &ctx),
        Command::Completions(a) => completions_cmd::completions(a, &ctx),
        Command::Export(a) => export_cmd::export(a, &ctx),
        Command::Import(a) => import_cmd::import(a, &ctx),
        Command::Mcp(a) => mcp_cmd::mcp(a, &ctx),
        Command::Slots(a) => slots_cmd::slots(a, &ctx),
        Command::Adapter(a) => match a.adapter {
            AdapterName::Python => {
                out!("{}", crate::runner::PYTHON_ADAPTER);
                Ok(Exit::Ok)
            }
        },
    };
    match result {
        Ok(exit) => exit as i32,
        Err(e) => {
            eprintln!("mpw: {}", e.message);
            e.exit as i32
        }
    }
}
