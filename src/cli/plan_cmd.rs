//! `mpw plan check | schema | graph`. None of them touches anything on disk.

use super::{CliError, CliResult, Ctx, Exit};
use crate::plan::{self, CheckReport, Diagnostic, GraphFormat, LoadOptions, Loaded, PlanError};
use clap::{Args, Subcommand, ValueEnum};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum PlanCmd {
    /// Validate a plan and print its DAG summary.
    Check {
        /// The plan file (JSON or JSONC).
        plan: PathBuf,
        #[command(flatten)]
        load: LoadArgs,
        /// Print the result as JSON on stdout.
        #[arg(long)]
        json: bool,
        /// Rewrite the plan with the fixes that are certain (keys in schema
        /// order, ids' case as defined), keeping comments; then check it.
        #[arg(long)]
        fix: bool,
    },
    /// Print the JSON Schema of the plan format (for editors and AI tools).
    Schema,
    /// Print the task DAG, grouped by workstream, as Graphviz dot or Mermaid.
    Graph {
        /// The plan file (JSON or JSONC).
        plan: PathBuf,
        #[arg(long, value_enum, default_value_t = FormatArg::Dot)]
        format: FormatArg,
        #[command(flatten)]
        load: LoadArgs,
    },
}

/// How a plan is read, for every command that reads one.
#[derive(Debug, Clone, Copy, Args)]
pub struct LoadArgs {
    /// Unknown keys in the plan are warnings, not errors.
    #[arg(long)]
    pub lenient: bool,
    /// Unknown keys are errors: the default now, accepted for old scripts.
    #[arg(long, hide = true, conflicts_with = "lenient")]
    pub strict: bool,
}

impl LoadArgs {
    pub fn options(self) -> LoadOptions {
        LoadOptions {
            lenient: self.lenient,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Dot,
    Mermaid,
}

pub fn run(cmd: PlanCmd, ctx: &Ctx) -> CliResult {
    match cmd {
        PlanCmd::Check {
            plan,
            load,
            json,
            fix,
        } => {
            if fix {
                fix_file(&plan)?;
            }
            check(&plan, load.options(), json, ctx)
        }
        PlanCmd::Schema => {
            out(&pretty(&plan::schema()));
            Ok(Exit::Ok)
        }
        PlanCmd::Graph { plan, format, load } => {
            let loaded = plan::load(&plan, load.options()).map_err(|e| failure(&plan, e))?;
            print_warnings(&loaded.warnings);
            let fmt = match format {
                FormatArg::Dot => GraphFormat::Dot,
                FormatArg::Mermaid => GraphFormat::Mermaid,
            };
            out(&plan::graph(&loaded, fmt));
            Ok(Exit::Ok)
        }
    }
}

/// Writes to stdout; a closed pipe (`mpw plan schema | head`) is not an error.
fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
}

/// Pretty JSON and a newline.
fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).expect("plain data serializes") + "\n"
}

fn print_warnings(warnings: &[Diagnostic]) {
    for w in warnings {
        eprintln!("{w}");
    }
}

fn check(path: &Path, opts: LoadOptions, json: bool, ctx: &Ctx) -> CliResult {
    match plan::load(path, opts) {
        Ok(loaded) => {
            print_warnings(&loaded.warnings);
            let included = included_copies(&loaded, ctx);
            if json {
                out(&pretty(&CheckReport::valid(&loaded, included)));
            } else {
                print_summary(path, &loaded, ctx);
                print_copies(&loaded.plan.globals.copy, &included);
            }
            Ok(Exit::Ok)
        }
        Err(PlanError::Invalid(diags)) if json => {
            out(&pretty(&CheckReport::invalid(&diags)));
            Err(failure(path, PlanError::Invalid(diags)))
        }
        Err(e @ PlanError::Read { .. }) if json => {
            let message = e.to_string();
            let unread = Diagnostic {
                severity: plan::Severity::Error,
                pointer: String::new(),
                location: None,
                message: message.clone(),
                help: None,
            };
            out(&pretty(&CheckReport::invalid(&[unread])));
            Err(CliError::usage(message))
        }
        Err(e) => Err(failure(path, e)),
    }
}

/// Every diagnostic on its own line on stderr (`file:line:col: error: ...`,
/// as editors' problem matchers read them), then a one-line verdict.
fn failure(path: &Path, e: PlanError) -> CliError {
    match e {
        PlanError::Invalid(diags) => {
            print_warnings(&diags);
            let n = diags
                .iter()
                .filter(|d| d.severity == plan::Severity::Error)
                .count();
            CliError::usage(format!("{}: plan is invalid: {n} error(s)", path.display()))
        }
        e => e.into(),
    }
}

fn print_summary(path: &Path, loaded: &Loaded, ctx: &Ctx) {
    use std::fmt::Write as _;
    let s = plan::summary(loaded);
    let mut o = String::new();
    let name = s
        .name
        .as_deref()
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    let _ = writeln!(o, "{}: plan is valid{name}", path.display());
    let _ = writeln!(
        o,
        "  {} workstream(s), {} task(s), {} level(s), critical path {} task(s)",
        s.workstreams, s.tasks, s.depth, s.critical_path_len
    );
    if !ctx.quiet {
        let cp = &s.critical_path;
        let path = if cp.len() > 12 {
            // a 10 000-task chain is not read on a terminal; --json has it all
            format!(
                "{} -> ... ({} more) ... -> {}",
                cp[..5].join(" -> "),
                cp.len() - 10,
                cp[cp.len() - 5..].join(" -> ")
            )
        } else {
            cp.join(" -> ")
        };
        let _ = writeln!(o, "  critical path: {path}");
        let width = s
            .per_workstream
            .iter()
            .map(|w| w.id.len())
            .max()
            .unwrap_or(0);
        const SHOWN: usize = 30;
        for w in s.per_workstream.iter().take(SHOWN) {
            let after = if w.depends_on.is_empty() {
                String::new()
            } else {
                format!(", after {}", w.depends_on.join(", "))
            };
            let _ = writeln!(o, "  {:width$}  {} task(s){after}", w.id, w.tasks);
        }
        if s.per_workstream.len() > SHOWN {
            let _ = writeln!(
                o,
                "  ... and {} more workstream(s)",
                s.per_workstream.len() - SHOWN
            );
        }
    }
    out(&o);
}

/// What `.worktreeinclude` adds to each new worktree, when the plan's
/// repository is at hand; a broken `.worktreeinclude` is a warning here
/// (`mpw run` stops on it).
fn included_copies(loaded: &Loaded, ctx: &Ctx) -> Vec<String> {
    let Some(start) = loaded
        .repo_dir(ctx.repo.as_deref())
        .or_else(|| std::env::current_dir().ok())
    else {
        return Vec::new();
    };
    let Ok(info) = crate::git::discover(&start) else {
        return Vec::new();
    };
    crate::worktree_include::paths_to_copy(&info.main_workdir).unwrap_or_else(|e| {
        eprintln!("mpw: warning: {e}");
        Vec::new()
    })
}

fn print_copies(globals: &[String], included: &[String]) {
    if globals.is_empty() && included.is_empty() {
        return;
    }
    let mut o = String::from("  copied into each new worktree (never committed):\n");
    for c in globals {
        o.push_str(&format!("    {c}  (globals.copy)\n"));
    }
    for c in included {
        o.push_str(&format!("    {c}  ({})\n", crate::worktree_include::FILE));
    }
    out(&o);
}

/// Applies the certain fixes in place and says what they were. A file that
/// is not JSONC is left for the check to report.
fn fix_file(path: &Path) -> Result<(), CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        CliError::from(PlanError::Read {
            path: path.to_path_buf(),
            source,
        })
    })?;
    let (bom, body) = match text.strip_prefix('\u{feff}') {
        Some(b) => ("\u{feff}", b),
        None => ("", text.as_str()),
    };
    let Ok(fixed) = plan::fix(body) else {
        return Ok(());
    };
    if fixed.changes.is_empty() {
        eprintln!("{}: nothing to fix with certainty", path.display());
        return Ok(());
    }
    let io = |e: std::io::Error| CliError::env(format!("writing {}: {e}", path.display()));
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Written beside it and renamed over it: never half a plan.
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, format!("{bom}{}", fixed.text).as_bytes()).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    for c in &fixed.changes {
        eprintln!("{}: fixed: {c}", path.display());
    }
    Ok(())
}
