//! The GitHub Actions workflow: a job per workstream, `needs:` from the
//! collapsed workstream graph, and a final job that imports and integrates
//! (or opens the pull requests).

use super::{ExportError, Exported, Result, inert, sq, to_yaml};
use serde_json::{Value, json};

/// GitHub's limits: jobs of one workflow (as of a matrix), minutes of a job
/// on a hosted runner.
const MAX_JOBS: usize = 256;
const MAX_MINUTES: u64 = 360;
/// Checkout, installing mpw, pushing and uploading, on top of the tasks.
const OVERHEAD_MINUTES: u64 = 30;

const CHECKOUT: &str = "actions/checkout@v4";
const UPLOAD: &str = "actions/upload-artifact@v4";
const DOWNLOAD: &str = "actions/download-artifact@v4";

pub(super) fn render(e: &Exported) -> Result<String> {
    let jobs = &e.jobs;
    if jobs.len() + 1 > MAX_JOBS {
        return Err(ExportError::Usage(format!(
            "{}: {} workstreams make {} jobs; a GitHub workflow holds at most {MAX_JOBS}; split the plan",
            e.loaded.path.display(),
            jobs.len(),
            jobs.len() + 1
        )));
    }
    let too_long: Vec<String> = jobs
        .iter()
        .filter(|j| minutes(j.budget_s) > MAX_MINUTES)
        .map(|j| format!("{} ({} min)", j.ws, minutes(j.budget_s)))
        .collect();
    if !too_long.is_empty() {
        return Err(ExportError::Usage(format!(
            "{}: a hosted runner stops a job after {MAX_MINUTES} minutes, and these workstreams may take longer (task timeout_s times tries, plus setup, plus {OVERHEAD_MINUTES} min to check out and install): {}; lower their timeout_s or split them",
            e.loaded.path.display(),
            too_long.join(", ")
        )));
    }
    let mut out = serde_json::Map::new();
    for j in jobs {
        out.insert(j.key.clone(), ws_job(e, j));
    }
    let (key, job) = final_job(e);
    out.insert(key, job);

    let run_id = match &e.opts.run_id {
        Some(r) => r.clone(),
        None => "gh-${{ github.run_id }}".into(),
    };
    let title = e.loaded.plan.name.as_deref().unwrap_or(&e.plan_rel);
    let mut perms = serde_json::Map::new();
    perms.insert("contents".into(), json!("write"));
    if e.opts.integrate_into.is_none() {
        perms.insert("pull-requests".into(), json!("write"));
    }
    let wf = json!({
        "name": format!("mpw: {}", inert(title)),
        "on": { "workflow_dispatch": {} },
        "permissions": perms,
        "env": {
            "MPW_RUN_ID": run_id,
            "MPW_PLAN": e.plan_rel,
            "MPW_BASE": e.base,
        },
        "jobs": out,
    });
    let head = format!(
        "# Written by `mpw export {} --to github-actions`: one job per workstream.\n# Re-export after changing the plan; the records come back with `mpw import`.\n",
        e.plan_rel
    );
    Ok(head + &to_yaml(&wf)?)
}

fn minutes(budget_s: u64) -> u64 {
    budget_s.div_ceil(60) + OVERHEAD_MINUTES
}

fn checkout() -> Value {
    json!({
        "name": "Check out the repository with full history",
        "uses": CHECKOUT,
        "with": { "fetch-depth": 0 },
    })
}

fn install(e: &Exported) -> Value {
    json!({ "name": "Install mpw", "run": e.opts.install })
}

fn ws_job(e: &Exported, j: &super::Job) -> Value {
    let mut steps = vec![checkout(), install(e)];
    for &u in &j.upstream {
        let up = &e.jobs[u];
        steps.push(json!({
            "name": format!("Download the records of {}", inert(&up.ws)),
            "uses": DOWNLOAD,
            "with": {
                "name": format!("mpw-${{{{ env.MPW_RUN_ID }}}}-{}", up.ws),
                "path": format!("mpw-upstream/{}", up.ws),
            },
        }));
    }
    let mut cmd = format!(
        "mpw run \"$MPW_PLAN\" --workstream {} --run-id \"$MPW_RUN_ID\" --base \"$MPW_BASE\" --records-out mpw-records",
        sq(&j.ws)
    );
    if e.opts.load.lenient {
        // the runner reads the plan as the export did
        cmd.push_str(" --lenient");
    }
    if !j.upstream.is_empty() {
        cmd.push_str(" --upstream-from origin --upstream-records mpw-upstream");
    }
    steps.push(json!({ "name": format!("Run workstream {}", inert(&j.ws)), "run": cmd }));
    // The branch and the refs that keep failed or quarantined work; a
    // re-run of the job replaces what its earlier attempt pushed.
    let push = format!(
        "set -eu\nrefs=$(git for-each-ref --format='%(refname)' {} \"refs/mpw/$MPW_RUN_ID/\")\nfor r in $refs; do set -- \"$@\" \"+$r:$r\"; done\nif [ $# -gt 0 ]; then git push origin \"$@\"; else echo 'nothing to push'; fi",
        j.ref_sh
    );
    steps.push(json!({
        "name": "Push its branch and preserved work",
        "if": "${{ !cancelled() }}",
        "run": push,
    }));
    steps.push(json!({
        "name": format!("Upload the records of {}", inert(&j.ws)),
        "if": "${{ !cancelled() }}",
        "uses": UPLOAD,
        "with": {
            "name": format!("mpw-${{{{ env.MPW_RUN_ID }}}}-{}", j.ws),
            "path": "mpw-records",
            "if-no-files-found": "error",
        },
    }));
    let mut job = serde_json::Map::new();
    let title = match &j.name {
        Some(n) => format!("{}: {}", j.ws, n),
        None => j.ws.clone(),
    };
    job.insert("name".into(), json!(inert(&title)));
    job.insert("runs-on".into(), json!("ubuntu-latest"));
    if !j.needs.is_empty() {
        let needs: Vec<&str> = j.needs.iter().map(|&d| e.jobs[d].key.as_str()).collect();
        job.insert("needs".into(), json!(needs));
        // A failed upstream still lets this job record its workstream as
        // SKIPPED, as a local run would.
        job.insert("if".into(), json!("${{ !cancelled() }}"));
    }
    job.insert("timeout-minutes".into(), json!(minutes(j.budget_s)));
    job.insert("steps".into(), Value::Array(steps));
    Value::Object(job)
}

fn final_job(e: &Exported) -> (String, Value) {
    let needs: Vec<&str> = e.jobs.iter().map(|j| j.key.as_str()).collect();
    let mut steps = vec![
        checkout(),
        install(e),
        json!({
            "name": "Download the records of every workstream",
            "uses": DOWNLOAD,
            "with": { "pattern": "mpw-${{ env.MPW_RUN_ID }}-*", "path": "mpw-records" },
        }),
        json!({
            "name": "Import them",
            "run": "mpw import mpw-records --fetch origin",
        }),
    ];
    let (key, name) = match &e.opts.integrate_into {
        Some(into) => {
            let b = sq(into);
            let gate = match &e.opts.gate {
                Some(g) => format!(" --gate {}", sq(g)),
                None => String::new(),
            };
            steps.push(json!({
                "name": format!("Integrate into {}", inert(into)),
                "run": format!(
                    "set -eu\nif git show-ref -q --verify refs/remotes/origin/{b}; then\n  git checkout -q -B {b} origin/{b}\nelse\n  git checkout -q -B {b} \"$MPW_BASE\"\nfi\nmpw integrate \"$MPW_RUN_ID\" --into {b}{gate}"
                ),
            }));
            steps.push(json!({
                "name": format!("Push {}", inert(into)),
                "if": "${{ !cancelled() }}",
                "run": format!("git push origin refs/heads/{b}:refs/heads/{b}"),
            }));
            ("mpw-integrate", format!("Integrate into {}", inert(into)))
        }
        None => {
            steps.push(json!({
                "name": "Open a pull request per workstream",
                "env": { "GH_TOKEN": "${{ github.token }}" },
                "run": "mpw pr \"$MPW_RUN_ID\" --create",
            }));
            ("mpw-pr", "Open the pull requests".to_string())
        }
    };
    let mut key = key.to_string();
    while e.jobs.iter().any(|j| j.key.eq_ignore_ascii_case(&key)) {
        key.push('_');
    }
    let job = json!({
        "name": name,
        "runs-on": "ubuntu-latest",
        "needs": needs,
        "if": "${{ !cancelled() }}",
        "steps": steps,
    });
    (key, job)
}
