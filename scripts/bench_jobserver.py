#!/usr/bin/env python3
"""The jobserver against no jobserver, side by side in one run.

3 workstreams, each one cpu task running make over 8 jobs; cpu_slots 4.
  jobserver:    "run": "make"          (mpw's jobserver gives make its jobs)
  no jobserver: "run": "make -j8", "jobserver": false
Each job is a fixed amount of CPU work (an awk loop, about 0.5 s of CPU on
one core by default) and logs its start and end. Reported per mode: the peak
number of jobs running at once and the wall time of `mpw run`. Target: equal
or better wall time with at most a third of the overlap (4 against 24 on a
machine with fewer than 24 cores). The machine pool is off (MPW_MACHINE_SLOTS=0)
so that only the jobserver is measured.

Usage: scripts/bench_jobserver.py [--mpw target/release/mpw] [--repeat 3]
       [--iterations 15000000] [--sleep]   (--sleep: jobs sleep 0.5 s instead)
Builds the release binary first unless --mpw is given. Needs GNU make.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WS, JOBS, CPU_SLOTS = 3, 8, 4


def sh(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def make_repo(path):
    os.makedirs(path)
    sh(["git", "init", "-q", "-b", "main"], path)
    sh(["git", "config", "user.name", "bench"], path)
    sh(["git", "config", "user.email", "bench@example.com"], path)
    with open(os.path.join(path, "README.md"), "w") as f:
        f.write("bench\n")
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-q", "-m", "init"], path)


def makefile(path, work):
    jobs = " ".join(f"j{i}" for i in range(1, JOBS + 1))
    with open(path, "w") as f:
        f.write(f"all: {jobs}\n.PHONY: all {jobs}\n{jobs}:\n")
        f.write(f'\t@echo "$$(date +%s.%N) start" >> $(LOG); {work}; echo "$$(date +%s.%N) end" >> $(LOG)\n')


def plan(path, mk, logs, mode, run_id):
    ws = []
    for w in "ABC"[:WS]:
        log = os.path.join(logs, f"{w}.log")
        if mode == "jobserver":
            task = f'{{ "id": "build", "class": "cpu", "run": "make -s -f {mk} LOG={log}" }}'
        else:
            task = (f'{{ "id": "build", "class": "cpu", "jobserver": false, '
                    f'"run": "make -s -j{JOBS} -f {mk} LOG={log}" }}')
        ws.append(f'{{ "id": "{w}", "tasks": [ {task} ] }}')
    with open(path, "w") as f:
        f.write(f'{{ "run_id": "{run_id}", "globals": {{ "cpu_slots": {CPU_SLOTS}, '
                f'"max_concurrency": {WS} }}, "workstreams": [ {", ".join(ws)} ] }}')


def peak(logs):
    edges = []
    for name in os.listdir(logs):
        with open(os.path.join(logs, name)) as f:
            for line in f:
                t, what = line.split()
                edges.append((float(t), 1 if what == "start" else -1))
    edges.sort()  # at equal times an end (-1) comes first
    now = best = 0
    for _, d in edges:
        now += d
        best = max(best, now)
    return best


def one(mpw, base, mk, mode, k, state):
    repo = os.path.join(base, f"{mode}-{k}")
    logs = os.path.join(base, f"logs-{mode}-{k}")
    os.makedirs(logs)
    make_repo(repo)
    p = os.path.join(base, f"{mode}-{k}.json")
    plan(p, mk, logs, mode, f"bench-{mode}-{k}")
    env = dict(os.environ, MPW_MACHINE_SLOTS="0", XDG_STATE_HOME=state, NO_COLOR="1")
    t0 = time.monotonic()
    r = subprocess.run([mpw, "-q", "run", p], cwd=repo, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        sys.exit(f"mpw run ({mode}) failed:\n{r.stderr.decode()}")
    return wall, peak(logs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=15_000_000)
    ap.add_argument("--sleep", action="store_true")
    a = ap.parse_args()
    mpw = os.path.abspath(a.mpw) if a.mpw else None
    if not mpw:
        sh(["cargo", "build", "--release", "-q"], ROOT)
        mpw = os.path.join(ROOT, "target", "release", "mpw")
    work = "sleep 0.5" if a.sleep else f"awk 'BEGIN{{for(i=0;i<{a.iterations};i++)s+=i}}'"
    with tempfile.TemporaryDirectory() as base:
        mk = os.path.join(base, "jobs.mk")
        makefile(mk, work)
        state = os.path.join(base, "state")
        res = {"jobserver": [], "no jobserver": []}
        for k in range(a.repeat):
            # Alternate the order so that neither mode always runs first.
            modes = ["jobserver", "no jobserver"] if k % 2 == 0 else ["no jobserver", "jobserver"]
            for m in modes:
                res[m].append(one(mpw, base, mk, m.replace(" ", "-"), k, state))
    print(f"{WS} workstreams x {JOBS} make jobs ({'sleep 0.5 s' if a.sleep else f'awk loop of {a.iterations}'}), "
          f"cpu_slots {CPU_SLOTS}, {os.cpu_count()} cores, {a.repeat} runs each, median")
    print(f"{'mode':<14} {'peak jobs':>9} {'wall s':>8}   runs (wall s / peak)")
    med = {}
    for m, rs in res.items():
        wall = statistics.median(w for w, _ in rs)
        pk = max(p for _, p in rs)
        med[m] = (wall, pk)
        runs = ", ".join(f"{w:.2f}/{p}" for w, p in rs)
        print(f"{m:<14} {pk:>9} {wall:>8.2f}   {runs}")
    (wj, pj), (wn, pn) = med["jobserver"], med["no jobserver"]
    print(f"jobserver / no jobserver: wall {wj / wn:.2f}x, peak overlap {pj}/{pn} = {pj / pn:.2f}")
    target = wj <= wn * 1.05 and pj * 3 <= pn
    print("target (wall <= 1.05x, overlap <= 1/3):", "met" if target else "NOT met")


if __name__ == "__main__":
    main()
