//! The Argo `Workflow`: a DAG template with a task per workstream, each a
//! container template that clones the repository, runs its workstream and
//! pushes; records travel as Argo artifacts.

use super::{ExportError, Exported, Result, inert, sq, to_yaml};
use serde_json::{Value, json};

/// Argo keeps a workflow in one Kubernetes object, at most 1 MiB; stay well
/// under it, the controller adds status to the same object.
const MAX_BYTES: usize = 512 * 1024;

pub(super) fn render(e: &Exported) -> Result<String> {
    let repo_url = match &e.opts.argo.repo_url {
        Some(u) => u.clone(),
        None => crate::git::remote_url(&e.main, "origin")?.ok_or_else(|| {
            ExportError::Usage(
                "no `origin` remote to clone from on the cluster; pass --repo-url URL".into(),
            )
        })?,
    };
    let mut keys: Vec<String> = Vec::new();
    for j in &e.jobs {
        let base = dns_name(&j.key);
        let mut k = base.clone();
        let mut n = 2;
        while keys.contains(&k) {
            k = format!("{base}-{n}");
            n += 1;
        }
        keys.push(k);
    }
    let mut tasks = Vec::new();
    let mut templates = vec![json!({})]; // the DAG template, filled in below
    for (i, j) in e.jobs.iter().enumerate() {
        let mut task = serde_json::Map::new();
        task.insert("name".into(), json!(keys[i]));
        task.insert("template".into(), json!(keys[i]));
        if !j.needs.is_empty() {
            task.insert("depends".into(), json!(depends(&keys, &j.needs)));
        }
        if !j.upstream.is_empty() {
            task.insert(
                "arguments".into(),
                json!({ "artifacts": records_from(&keys, &j.upstream) }),
            );
        }
        tasks.push(Value::Object(task));

        let mut script = String::from(PREAMBLE);
        let inputs = records_in(e, &keys, &j.upstream);
        let mut upstream = if j.upstream.is_empty() {
            String::new()
        } else {
            " --upstream-from origin --upstream-records /work/upstream".into()
        };
        if e.opts.load.lenient {
            // the runner reads the plan as the export did
            upstream.push_str(" --lenient");
        }
        script.push_str(&format!(
            "status=0\nmpw run \"$MPW_PLAN\" --workstream {} --run-id \"$MPW_RUN_ID\" --base \"$MPW_BASE\" --records-out /work/records{upstream} || status=$?\nrefs=$(git for-each-ref --format='%(refname)' {} \"refs/mpw/$MPW_RUN_ID/\")\nfor r in $refs; do set -- \"$@\" \"+$r:$r\"; done\nif [ $# -gt 0 ]; then git push origin \"$@\"; fi\nexit $status\n",
            sq(&j.ws),
            j.ref_sh
        ));
        let mut t = container(e, &keys[i], &script);
        let obj = t.as_object_mut().unwrap();
        if !inputs.is_empty() {
            obj.insert("inputs".into(), json!({ "artifacts": inputs }));
        }
        obj.insert(
            "outputs".into(),
            json!({ "artifacts": [ { "name": "records", "path": "/work/records" } ] }),
        );
        obj.insert(
            "metadata".into(),
            json!({ "annotations": { "mpw/workstream": inert(&j.ws) } }),
        );
        templates.push(t);
    }

    // The final task: every workstream's records, imported, then integrated
    // (or opened as pull requests).
    let mut fin = String::from(PREAMBLE);
    fin.push_str("mpw import /work/upstream --fetch origin\n");
    match &e.opts.integrate_into {
        Some(into) => {
            let b = sq(into);
            let gate = match &e.opts.gate {
                Some(g) => format!(" --gate {}", sq(g)),
                None => String::new(),
            };
            fin.push_str(&format!(
                "if git show-ref -q --verify refs/remotes/origin/{b}; then git checkout -q -B {b} origin/{b}; else git checkout -q -B {b} \"$MPW_BASE\"; fi\nstatus=0\nmpw integrate \"$MPW_RUN_ID\" --into {b}{gate} || status=$?\ngit push origin refs/heads/{b}:refs/heads/{b}\nexit $status\n"
            ));
        }
        None => fin.push_str("mpw pr \"$MPW_RUN_ID\" --create\n"),
    }
    let mut fin_name = if e.opts.integrate_into.is_some() {
        "mpw-integrate".to_string()
    } else {
        "mpw-pr".to_string()
    };
    while keys.contains(&fin_name) {
        fin_name.push('x');
    }
    let all: Vec<usize> = (0..e.jobs.len()).collect();
    let mut ftask = json!({ "name": fin_name, "template": fin_name });
    if !all.is_empty() {
        let o = ftask.as_object_mut().unwrap();
        o.insert("depends".into(), json!(depends(&keys, &all)));
        o.insert(
            "arguments".into(),
            json!({ "artifacts": records_from(&keys, &all) }),
        );
    }
    tasks.push(ftask);
    let mut t = container(e, &fin_name, &fin);
    let mut inputs = records_in(e, &keys, &all);
    for i in &mut inputs {
        // A workstream whose pod never ran left no records.
        i["optional"] = json!(true);
    }
    t.as_object_mut()
        .unwrap()
        .insert("inputs".into(), json!({ "artifacts": inputs }));
    templates.push(t);
    templates[0] = json!({ "name": "plan", "dag": { "tasks": tasks } });

    let run_id = match &e.opts.run_id {
        Some(r) => r.clone(),
        None => "argo-{{workflow.uid}}".into(),
    };
    let title = e.loaded.plan.name.as_deref().unwrap_or(&e.plan_rel);
    let wf = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "generateName": "mpw-",
            "annotations": { "mpw/plan": e.plan_rel, "mpw/title": inert(title) },
        },
        "spec": {
            "entrypoint": "plan",
            "arguments": { "parameters": [
                { "name": "repo-url", "value": repo_url },
                { "name": "run-id", "value": run_id },
                { "name": "plan", "value": e.plan_rel },
                { "name": "base", "value": e.base },
            ] },
            "templates": templates,
        },
    });
    let head = format!(
        "# Written by `mpw export {} --to argo`: one DAG task per workstream.\n# Git credentials come from the secret {:?} (keys username, password).\n",
        e.plan_rel, e.opts.argo.git_secret
    );
    let text = head + &to_yaml(&wf)?;
    if text.len() > MAX_BYTES {
        return Err(ExportError::Usage(format!(
            "{}: the Argo workflow would take {} KiB; Argo keeps a workflow in one object of at most 1 MiB with its status, so mpw stops at {} KiB; split the plan",
            e.loaded.path.display(),
            text.len() / 1024,
            MAX_BYTES / 1024
        )));
    }
    Ok(text)
}

/// Clone, identity-free git credentials from the secret, mpw installed.
const PREAMBLE: &str = "set -eu\ngit config --global credential.helper '!f() { echo \"username=$GIT_USERNAME\"; echo \"password=$GIT_PASSWORD\"; }; f'\ngit clone -q \"$MPW_REPO_URL\" /work/repo\ncd /work/repo\n";

fn container(e: &Exported, name: &str, script: &str) -> Value {
    let mut full = String::new();
    // Install after the clone: the command may build from the checkout.
    let (pre, post) = script.split_at(PREAMBLE.len());
    full.push_str(pre);
    full.push_str(&e.opts.install);
    full.push('\n');
    full.push_str(post);
    let secret =
        |key: &str| json!({ "secretKeyRef": { "name": e.opts.argo.git_secret, "key": key } });
    json!({
        "name": name,
        "container": {
            "image": e.opts.argo.image,
            "command": ["bash", "-c"],
            "args": [full],
            "workingDir": "/work",
            "env": [
                { "name": "MPW_REPO_URL", "value": "{{workflow.parameters.repo-url}}" },
                { "name": "MPW_RUN_ID", "value": "{{workflow.parameters.run-id}}" },
                { "name": "MPW_PLAN", "value": "{{workflow.parameters.plan}}" },
                { "name": "MPW_BASE", "value": "{{workflow.parameters.base}}" },
                { "name": "GIT_USERNAME", "valueFrom": secret("username") },
                { "name": "GIT_PASSWORD", "valueFrom": secret("password") },
            ],
        },
    })
}

/// `a.Succeeded || a.Failed` for each: a failed workstream still lets its
/// dependents record themselves SKIPPED, as a local run would.
/// A task's artifact arguments: the records of jobs `of`, from their outputs.
fn records_from(keys: &[String], of: &[usize]) -> Vec<Value> {
    of.iter()
        .map(|&u| {
            json!({
                "name": format!("records-{}", keys[u]),
                "from": format!("{{{{tasks.{}.outputs.artifacts.records}}}}", keys[u]),
            })
        })
        .collect()
}

/// A template's input artifacts: the records of jobs `of`, each under
/// `/work/upstream/<ws>`.
fn records_in(e: &Exported, keys: &[String], of: &[usize]) -> Vec<Value> {
    of.iter()
        .map(|&u| {
            json!({
                "name": format!("records-{}", keys[u]),
                "path": format!("/work/upstream/{}", e.jobs[u].ws),
            })
        })
        .collect()
}

fn depends(keys: &[String], on: &[usize]) -> String {
    on.iter()
        .map(|&d| format!("({0}.Succeeded || {0}.Failed)", keys[d]))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Argo task and template names: lower-case letters, digits and `-`.
fn dns_name(key: &str) -> String {
    let mut s: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    s.truncate(60);
    s.trim_end_matches('-').to_string()
}
