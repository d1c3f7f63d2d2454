#!/usr/bin/env python3
"""Benchmarks of `mpw run`, each side by side with its baseline, in one run.

(a) 500 no-op tasks in 10 workstreams, 8 slots, against `xargs -P8` running
    the same 500 commands (target: mpw/xargs <= 3x);
(b) 20 workstreams provisioned on a 5,000-file repository against a loop of
    `git worktree add -b` (target: <= 0.8x);
(c) peak memory (max RSS) of the coordinator over (a) (target: <= 50 MiB).

Usage: scripts/bench_run.py [--mpw target/release/mpw] [--repeat 3]
Builds the release binary first unless --mpw is given.
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd, cwd, **kw):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def make_repo(path, files, pack=True):
    os.makedirs(path)
    sh(["git", "init", "-q", "-b", "main"], path)
    sh(["git", "config", "user.name", "bench"], path)
    sh(["git", "config", "user.email", "bench@example.com"], path)
    for i in range(files):
        d = os.path.join(path, "src", f"d{i // 100:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05}.txt"), "w") as f:
            f.write(f"line {i}\n" * 20)
    if files == 0:
        with open(os.path.join(path, "README"), "w") as f:
            f.write("bench\n")
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-q", "-m", "init"], path)
    if pack:
        # As a cloned repository is: objects in a pack, not 5,000 loose files.
        sh(["git", "repack", "-adq"], path)


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def children_maxrss_mib():
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def bench_tasks(mpw, tmp, rep):
    """(a) and (c)."""
    repo = os.path.join(tmp, f"tasks{rep}")
    make_repo(repo, 0)
    wss = [
        {"id": f"W{w}", "tasks": [{"id": f"T{t}", "run": "true"} for t in range(50)]}
        for w in range(10)
    ]
    plan = os.path.join(tmp, f"tasks{rep}.json")
    with open(plan, "w") as f:
        json.dump({"run_id": f"bench-a{rep}", "globals": {"max_concurrency": 8}, "workstreams": wss}, f)
    cmds = "\n".join("true" for _ in range(500)) + "\n"

    def run_xargs():
        subprocess.run(["xargs", "-P8", "-I{}", "sh", "-c", "{}"], input=cmds.encode(), check=True, cwd=repo)

    t_x = timed(run_xargs)
    # The coordinator is the largest child process; RUSAGE_CHILDREN's maxrss
    # is the largest of them, so measure it in a fresh interpreter.
    probe = (
        "import resource,subprocess,sys,time;"
        "t=time.perf_counter();"
        "r=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
        "d=time.perf_counter()-t;"
        "print(r.returncode,d,resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024.0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, mpw, "-q", "--repo", repo, "run", plan],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout.split()
    code, t_m, rss = int(out[0]), float(out[1]), float(out[2])
    if code != 0:
        raise SystemExit(f"mpw run failed with {code}")
    return t_m, t_x, rss


def bench_provision(mpw, tmp, rep, pack):
    """(b): 20 worktrees with branches on a 5,000-file repository."""
    repo_m = os.path.join(tmp, f"prov-m{rep}")
    repo_g = os.path.join(tmp, f"prov-g{rep}")
    make_repo(repo_m, 5000, pack)
    shutil.copytree(repo_m, repo_g, symlinks=True)
    plan = os.path.join(tmp, f"prov{rep}.json")
    wss = [{"id": f"W{w}", "tasks": [{"id": "T", "run": "true", "read_only": True}]} for w in range(20)]
    with open(plan, "w") as f:
        json.dump({"run_id": f"bench-b{rep}", "globals": {"max_concurrency": 4}, "workstreams": wss}, f)

    def run_mpw():
        sh([mpw, "-q", "--repo", repo_m, "run", plan], repo_m)

    def run_git():
        root = repo_g + ".wt"
        for w in range(20):
            sh(["git", "worktree", "add", "-q", "-b", f"bench/W{w}", os.path.join(root, f"W{w}")], repo_g)
            # the same no-op task mpw runs in each worktree
            sh(["sh", "-c", "true"], os.path.join(root, f"W{w}"))

    return timed(run_mpw), timed(run_git)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tmp", help="where the repositories go (e.g. /dev/shm to leave the disk out)")
    ap.add_argument("--loose", action="store_true", help="keep the objects loose (a fresh `git add` of 5,000 files)")
    args = ap.parse_args()
    mpw = args.mpw
    if not mpw:
        sh(["cargo", "build", "--release", "--quiet"], ROOT)
        mpw = os.path.join(ROOT, "target", "release", "mpw")
    mpw = os.path.abspath(mpw)
    tmp = tempfile.mkdtemp(prefix="mpw-bench-", dir=args.tmp)
    try:
        a, x, rss, pm, pg = [], [], [], [], []
        for rep in range(args.repeat):
            t_m, t_x, r = bench_tasks(mpw, tmp, rep)
            a.append(t_m)
            x.append(t_x)
            rss.append(r)
            m, g = bench_provision(mpw, tmp, rep, not args.loose)
            pm.append(m)
            pg.append(g)
        med = statistics.median
        print(f"machine: {os.cpu_count()} cores; repositories in {os.path.dirname(tmp)}; medians of {args.repeat} runs")
        print(f"(a) 500 no-op tasks, 10 workstreams, 8 slots: mpw {med(a):.2f}s  xargs -P8 {med(x):.2f}s  "
              f"ratio {med(a) / med(x):.2f}x (target <= 3x)")
        layout = "loose objects" if args.loose else "packed"
        print(f"(b) 20 worktrees on 5,000 files ({layout}): mpw {med(pm):.2f}s  git worktree add loop {med(pg):.2f}s  "
              f"ratio {med(pm) / med(pg):.2f}x (target <= 0.8x)")
        print(f"(c) coordinator peak RSS over (a):           {max(rss):.1f} MiB (target <= 50 MiB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
