#!/usr/bin/env python3
"""Benchmark of `mpw integrate`, side by side with git in one run.

30 finished workstreams (each changing its own files) on a 5,000-file
repository, merged into the target:
  (a) `mpw integrate` into the checked-out `main`  vs  a `git merge --no-ff`
      loop in a checkout (target: <= 0.5x);
  (b) `mpw integrate --into target` (a branch not checked out)  vs  a
      `git merge-tree --write-tree` + `git commit-tree` + `git update-ref`
      loop (the ratio is reported).
Every side starts from an identical copy of the repository.

Usage: scripts/bench_integrate.py [--mpw target/release/mpw] [--repeat 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_WS = 30


def sh(cmd, cwd, **kw):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def make_repo(path):
    os.makedirs(path)
    sh(["git", "init", "-q", "-b", "main"], path)
    sh(["git", "config", "user.name", "bench"], path)
    sh(["git", "config", "user.email", "bench@example.com"], path)
    for i in range(5000):
        d = os.path.join(path, "src", f"d{i // 100:03}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05}.txt"), "w") as f:
            f.write("".join(f"line {j} of file {i}\n" for j in range(20)))
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-q", "-m", "init"], path)


def prepare(mpw, tmp):
    """A repository with a finished run of 30 workstreams; returns its path."""
    repo = os.path.join(tmp, "seed")
    make_repo(repo)
    wss = []
    for w in range(N_WS):
        # each workstream edits a line in one existing file and adds one file
        f = f"src/d{w:03}/f{w * 100:05}.txt"
        wss.append({
            "id": f"W{w:02}",
            "tasks": [{"id": "T", "run": f"sed -i 's/^line 3 of/line three of/' {f} && echo new > src/new{w:02}.txt"}],
        })
    plan = os.path.join(tmp, "plan.json")
    with open(plan, "w") as f:
        json.dump({"run_id": "BENCH", "globals": {"max_concurrency": 4,
                   "worktree_root": os.path.join(tmp, "wt")}, "workstreams": wss}, f)
    sh([mpw, "-q", "run", plan], repo)
    # the worktrees are not needed by integrate; keep the copies small
    sh([mpw, "-q", "clean", "BENCH"], repo)
    sh(["git", "branch", "target", "main"], repo)
    return repo


def clone(seed, dst):
    shutil.copytree(seed, dst, symlinks=True)
    return dst


def timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    mpw = args.mpw
    if not mpw:
        sh(["cargo", "build", "--release", "--quiet"], ROOT)
        mpw = os.path.join(ROOT, "target", "release", "mpw")
    mpw = os.path.abspath(mpw)
    tmp = tempfile.mkdtemp(prefix="mpw-bench-int-")
    try:
        seed = prepare(mpw, tmp)
        branches = [f"mpw/BENCH/W{w:02}" for w in range(N_WS)]
        rows = {"mpw_main": [], "git_merge": [], "mpw_target": [], "git_plumbing": []}
        for rep in range(args.repeat):
            r = clone(seed, os.path.join(tmp, f"m{rep}"))
            rows["mpw_main"].append(timed(lambda: sh([mpw, "-q", "integrate", "BENCH", "--into", "main"], r)))
            assert sh(["git", "rev-list", "--count", "--first-parent", "target..main"], r).stdout.strip() == str(N_WS)

            g = clone(seed, os.path.join(tmp, f"g{rep}"))

            def merge_loop():
                for b in branches:
                    sh(["git", "merge", "--no-ff", "-q", "-m", f"Merge {b}", b], g)
            rows["git_merge"].append(timed(merge_loop))

            r2 = clone(seed, os.path.join(tmp, f"t{rep}"))
            rows["mpw_target"].append(timed(lambda: sh([mpw, "-q", "integrate", "BENCH", "--into", "target"], r2)))

            p = clone(seed, os.path.join(tmp, f"p{rep}"))

            def plumbing_loop():
                tip = sh(["git", "rev-parse", "target"], p).stdout.strip()
                for b in branches:
                    tree = sh(["git", "merge-tree", "--write-tree", tip, b], p).stdout.split()[0]
                    new = sh(["git", "commit-tree", tree, "-p", tip, "-p", b, "-m", f"Merge {b}"], p).stdout.strip()
                    sh(["git", "update-ref", "refs/heads/target", new, tip], p)
                    tip = new
            rows["git_plumbing"].append(timed(plumbing_loop))
            for d in (r, g, r2, p):
                shutil.rmtree(d)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"machine: {os.cpu_count()} cores; {N_WS} workstreams on 5,000 files; medians of {args.repeat} runs")
        print(f"(a) into checked-out main: mpw integrate {med['mpw_main']:.2f}s  git merge --no-ff loop {med['git_merge']:.2f}s  "
              f"ratio {med['mpw_main'] / med['git_merge']:.2f}x (target <= 0.5x)")
        print(f"(b) into a branch:         mpw integrate {med['mpw_target']:.2f}s  merge-tree+commit-tree+update-ref loop "
              f"{med['git_plumbing']:.2f}s  ratio {med['mpw_target'] / med['git_plumbing']:.2f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
