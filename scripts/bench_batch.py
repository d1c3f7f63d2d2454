#!/usr/bin/env python3
"""Benchmark of the merge queue: `mpw integrate --gate CMD --batch` against
`mpw integrate --gate CMD` (one gate run per workstream), in one run.

16 finished workstreams, each adding its own file; the gate is `sleep 2`
(a stand-in for a test suite) and fails where a `BAD` file exists. Two
cases: 0 culprits, then 1 culprit (the first workstream: the worst place for
the bisection). Every side starts from an identical copy of the repository.
Reports gate runs and wall time side by side, and `--batch --gate-jobs 2`
(two gate runs of a bisection at once) beside them.

Targets: with 0 culprits the batch is >= 8x faster; with 1 culprit it takes
<= 9 gate runs (1 + 2 * log2 16).

Usage: scripts/bench_batch.py [--mpw target/release/mpw]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_WS = 16
GATE = "sleep 2 && ! test -e BAD"


def sh(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def seed(mpw, tmp, culprits):
    """A repository with a finished run of 16 workstreams; returns its path."""
    repo = os.path.join(tmp, f"seed{culprits}")
    os.makedirs(repo)
    sh(["git", "init", "-q", "-b", "main"], repo)
    sh(["git", "config", "user.name", "bench"], repo)
    sh(["git", "config", "user.email", "bench@example.com"], repo)
    with open(os.path.join(repo, "README"), "w") as f:
        f.write("bench\n")
    sh(["git", "add", "-A"], repo)
    sh(["git", "commit", "-q", "-m", "init"], repo)
    wss = []
    for w in range(N_WS):
        bad = " && echo bad > BAD" if w < culprits else ""
        wss.append({"id": f"W{w:02}",
                    "tasks": [{"id": "T", "run": f"echo {w} > w{w:02}.txt{bad}"}]})
    plan = os.path.join(tmp, f"plan{culprits}.json")
    with open(plan, "w") as f:
        json.dump({"run_id": "BENCH", "globals": {"max_concurrency": 4},
                   "workstreams": wss}, f)
    sh([mpw, "-q", "run", plan], repo)
    return repo


def integrate(mpw, seed_repo, dst, batch, jobs=1):
    """Integrate a fresh copy; returns (gate runs, seconds, states)."""
    shutil.copytree(seed_repo, dst, symlinks=True)
    # The copy's worktrees still point at the seed's: integrate needs none.
    sh(["git", "worktree", "prune"], dst)
    args = [mpw, "-q", "integrate", "--gate", GATE, "--json"] + (["--batch"] if batch else [])
    if jobs > 1:
        args += ["--gate-jobs", str(jobs)]
    t = time.perf_counter()
    out = subprocess.run(args, cwd=dst, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    took = time.perf_counter() - t
    if out.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)}: exit {out.returncode}\n{out.stderr}")
    r = json.loads(out.stdout)
    states = {o["state"] for o in r["outcomes"]}
    return len(r.get("gate_runs", [])), took, states


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw", default=os.path.join(ROOT, "target", "release", "mpw"))
    a = ap.parse_args()
    mpw = os.path.abspath(a.mpw)
    tmp = tempfile.mkdtemp(prefix="mpw-bench-batch-")
    try:
        print(f"{N_WS} workstreams, gate `{GATE}`")
        print(f"{'case':<12} {'mode':<18} {'gate runs':>9} {'wall s':>8}")
        ok = True
        for culprits in (0, 1):
            s = seed(mpw, tmp, culprits)
            seq = integrate(mpw, s, os.path.join(tmp, f"seq{culprits}"), False)
            bat = integrate(mpw, s, os.path.join(tmp, f"bat{culprits}"), True)
            par = integrate(mpw, s, os.path.join(tmp, f"par{culprits}"), True, jobs=2)
            case = f"{culprits} culprit" + ("s" if culprits != 1 else "")
            print(f"{case:<12} {'--gate':<18} {seq[0]:>9} {seq[1]:>8.1f}")
            print(f"{case:<12} {'--gate --batch':<18} {bat[0]:>9} {bat[1]:>8.1f}")
            # Not a target: speculative gate runs trade runs for wall time.
            print(f"{case:<12} {'  --gate-jobs 2':<18} {par[0]:>9} {par[1]:>8.1f}")
            speedup = seq[1] / bat[1]
            print(f"{'':<12} {'speed-up':<18} {'':>9} {speedup:>7.1f}x")
            assert seq[2] == bat[2] == par[2], f"different outcomes: {seq[2]} {bat[2]} {par[2]}"
            if culprits == 0 and speedup < 8:
                print(f"  MISSED: target >= 8x faster with 0 culprits, got {speedup:.1f}x")
                ok = False
            if culprits == 1 and bat[0] > 9:
                print(f"  MISSED: target <= 9 gate runs with 1 culprit, got {bat[0]}")
                ok = False
        print("targets met" if ok else "targets missed")
        raise SystemExit(0 if ok else 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
