#!/usr/bin/env python3
"""Run a GitHub Actions workflow written by `mpw export` on this machine, as
a hosted runner would, to test it without GitHub.

    scripts/simulate_workflow.py WORKFLOW.yml --remote BARE_REPO [--work DIR]

What it does, faithfully to a runner:
- jobs in `needs:` order; a job runs when its `if:` holds (default: every
  job it needs succeeded);
- each job in a fresh clone of BARE_REPO (the remote; `actions/checkout` is
  a clone of it), with a fresh HOME that has no git identity and no
  global git config, and `$HOME/.cargo/bin` first on PATH;
- `run:` steps in `bash -e`, with the workflow's, job's and step's `env`;
  a failed step fails the job, later steps run only if their `if:` says so;
- `actions/upload-artifact` copies files into an artifact store, leaving
  out hidden files and folders unless `include-hidden-files: true` (as v4
  does), and refuses a second artifact of the same name;
- `actions/download-artifact` copies one artifact (`name`) or every one
  matching `pattern` (each in its own folder unless `merge-multiple`).

Expressions: `${{ github.run_id }}`, `github.run_attempt`, `github.token`,
`github.sha`, `env.NAME`, and the status functions `success()`, `failure()`,
`always()`, `cancelled()`, `!cancelled()`. Anything else stops the
simulation with an error, rather than being guessed.

Prints one line per job, and with --summary FILE writes
{"jobs": {"<job>": "success" | "failure" | "skipped"}, "seconds": {"<job>": N}}
as JSON (a job's wall time, as a runner would bill it before rounding).
Exit code: 0 when every job succeeded, 1 otherwise, 2 on a workflow it
cannot simulate.
"""

import argparse
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml


class Unsupported(Exception):
    pass


EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class Ctx:
    def __init__(self, run_id, sha, env):
        self.run_id = run_id
        self.sha = sha
        self.env = env
        self.job_failed = False

    def value(self, expr):
        expr = expr.strip()
        if expr == "github.run_id":
            return str(self.run_id)
        if expr == "github.run_attempt":
            return "1"
        if expr == "github.token":
            return "simulated-token"
        if expr == "github.sha":
            return self.sha
        m = re.fullmatch(r"env\.([A-Za-z_][A-Za-z0-9_]*)", expr)
        if m:
            return self.env.get(m.group(1), "")
        raise Unsupported(f"expression not simulated: ${{{{ {expr} }}}}")

    def condition(self, expr):
        if expr is None:
            return not self.job_failed
        if isinstance(expr, bool):
            return expr
        m = EXPR.fullmatch(str(expr).strip())
        e = (m.group(1) if m else str(expr)).strip()
        table = {
            "success()": not self.job_failed,
            "failure()": self.job_failed,
            "always()": True,
            "cancelled()": False,
            "!cancelled()": True,
        }
        if e in table:
            return table[e]
        raise Unsupported(f"condition not simulated: {expr!r}")

    def subst(self, text):
        if text is None:
            return None
        if isinstance(text, bool):
            return "true" if text else "false"
        return EXPR.sub(lambda m: self.value(m.group(1)), str(text))


def order_jobs(jobs):
    done, out = set(), []
    while len(out) < len(jobs):
        ready = [
            j for j in jobs
            if j not in done and all(n in done for n in needs_of(jobs[j]))
        ]
        if not ready:
            raise Unsupported("the jobs' needs form a cycle or name missing jobs")
        for j in ready:
            done.add(j)
            out.append(j)
    return out


def needs_of(job):
    n = job.get("needs", [])
    return [n] if isinstance(n, str) else list(n)


def hidden(rel):
    return any(part.startswith(".") for part in rel.split(os.sep))


class Runner:
    def __init__(self, wf, remote, work, run_id):
        self.wf = wf
        self.remote = os.path.abspath(remote)
        self.work = os.path.abspath(work)
        self.artifacts = os.path.join(work, "artifacts")
        os.makedirs(self.artifacts, exist_ok=True)
        self.run_id = run_id
        self.sha = subprocess.run(
            ["git", "-C", self.remote, "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()

    def run(self):
        jobs = self.wf.get("jobs") or {}
        results = {}
        self.seconds = {}
        for name in order_jobs(jobs):
            t0 = time.monotonic()
            job = jobs[name]
            needs = needs_of(job)
            ctx = Ctx(self.run_id, self.sha, {})
            ctx.job_failed = any(results[n] != "success" for n in needs)
            if not ctx.condition(job.get("if")):
                results[name] = "skipped"
            else:
                results[name] = self.run_job(name, job)
            self.seconds[name] = round(time.monotonic() - t0, 1)
            print(f"job {name}: {results[name]} ({self.seconds[name]} s)", flush=True)
        return results

    def run_job(self, name, job):
        base = os.path.join(self.work, "jobs", name)
        ws = os.path.join(base, "workspace")
        home = os.path.join(base, "home")
        os.makedirs(ws)
        os.makedirs(home)
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("GIT_", "MPW_", "CARGO_", "RUST"))
        }
        env.update({
            "HOME": home,
            "XDG_CONFIG_HOME": os.path.join(home, ".config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_RUN_ID": str(self.run_id),
            "GITHUB_SHA": self.sha,
            "GITHUB_WORKSPACE": ws,
            "PATH": os.path.join(home, ".cargo", "bin") + os.pathsep + os.environ.get("PATH", ""),
        })
        ctx = Ctx(self.run_id, self.sha, env)
        for layer in (self.wf.get("env") or {}, job.get("env") or {}):
            for k, v in layer.items():
                env[k] = ctx.subst(v)
        for i, step in enumerate(job.get("steps") or []):
            label = step.get("name") or step.get("uses") or f"step {i + 1}"
            if not ctx.condition(step.get("if")):
                print(f"  skip {label}", flush=True)
                continue
            senv = dict(env)
            for k, v in (step.get("env") or {}).items():
                senv[k] = ctx.subst(v)
            ok = self.run_step(step, ctx, senv, ws, base, i)
            print(f"  {'ok  ' if ok else 'FAIL'} {label}", flush=True)
            if not ok:
                ctx.job_failed = True
        return "failure" if ctx.job_failed else "success"

    def run_step(self, step, ctx, env, ws, base, i):
        if "run" in step:
            script = os.path.join(base, f"step{i + 1}.sh")
            with open(script, "w") as f:
                f.write(ctx.subst(step["run"]))
            log = os.path.join(base, f"step{i + 1}.log")
            with open(log, "w") as out:
                p = subprocess.run(["bash", "-e", script], cwd=ws, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
            if p.returncode != 0:
                with open(log) as f:
                    sys.stdout.write("".join("    | " + line for line in f.readlines()[-40:]))
            return p.returncode == 0
        uses = step.get("uses", "")
        action = uses.split("@")[0]
        w = {k: ctx.subst(v) for k, v in (step.get("with") or {}).items()}
        if action == "actions/checkout":
            # Full history (fetch-depth 0); the default branch, as a push
            # or dispatch on it checks out.
            p = subprocess.run(["git", "clone", "-q", self.remote, ws], env=env)
            return p.returncode == 0
        if action == "actions/upload-artifact":
            return self.upload(w, ws)
        if action == "actions/download-artifact":
            return self.download(w, ws)
        raise Unsupported(f"action not simulated: {uses}")

    def upload(self, w, ws):
        name = w.get("name") or "artifact"
        dest = os.path.join(self.artifacts, name)
        if os.path.exists(dest):
            print(f"    | an artifact named {name} already exists", flush=True)
            return False
        include_hidden = str(w.get("include-hidden-files", "false")).lower() == "true"
        files = []
        for path in str(w.get("path", "")).splitlines():
            path = path.strip()
            if not path:
                continue
            src = os.path.join(ws, path)
            if os.path.isfile(src):
                files.append((src, os.path.basename(src)))
            elif os.path.isdir(src):
                for root, _dirs, names in os.walk(src):
                    for n in names:
                        full = os.path.join(root, n)
                        files.append((full, os.path.relpath(full, src)))
        files = [(s, r) for s, r in files if include_hidden or not hidden(r)]
        if not files:
            mode = w.get("if-no-files-found", "warn")
            print(f"    | no files found for artifact {name} ({mode})", flush=True)
            return mode != "error"
        for src, rel in files:
            to = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(to), exist_ok=True)
            shutil.copy2(src, to)
        return True

    def download(self, w, ws):
        target = os.path.join(ws, w.get("path") or ".")
        names = sorted(os.listdir(self.artifacts))
        if w.get("name"):
            if w["name"] not in names:
                print(f"    | no artifact named {w['name']}", flush=True)
                return False
            shutil.copytree(os.path.join(self.artifacts, w["name"]), target, dirs_exist_ok=True)
            return True
        pattern = w.get("pattern") or "*"
        merge = str(w.get("merge-multiple", "false")).lower() == "true"
        for n in names:
            if fnmatch.fnmatchcase(n, pattern):
                to = target if merge else os.path.join(target, n)
                shutil.copytree(os.path.join(self.artifacts, n), to, dirs_exist_ok=True)
        return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workflow")
    ap.add_argument("--remote", required=True, help="bare repository standing for the remote")
    ap.add_argument("--work", help="folder for workspaces and artifacts (default: a new temp dir)")
    ap.add_argument("--run-id", default="4242", help="github.run_id of the simulated run")
    ap.add_argument("--summary", help="write the jobs' results here as JSON")
    a = ap.parse_args()
    with open(a.workflow) as f:
        wf = yaml.safe_load(f)
    # YAML 1.1 reads the key `on` as true.
    if True in wf:
        wf["on"] = wf.pop(True)
    work = a.work or tempfile.mkdtemp(prefix="mpw-sim-")
    try:
        runner = Runner(wf, a.remote, work, a.run_id)
        results = runner.run()
    except Unsupported as e:
        print(f"simulate_workflow: {e}", file=sys.stderr)
        return 2
    if a.summary:
        with open(a.summary, "w") as f:
            json.dump({"jobs": results, "seconds": runner.seconds}, f, indent=2)
    return 0 if all(r == "success" for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
