#!/usr/bin/env python3
"""Warm workers against a process per task, side by side in one run.

3 workstreams x 40 tasks, each `python3 -m step TASK`, where `step` imports
a dependency whose import costs about 0.3 s of CPU (as a large stack does;
it lives outside the repository, like an installed package). Both modes
with max_concurrency 3:
  process: "run": "python3 -m step T"
  worker:  "worker": "py", "args": ["-m", "step", "T"] with mpw's Python adapter
Target: worker wall time <= 0.2x process wall time. Also reported: the peak
RSS (VmHWM) of the coordinator and of each worker process.

Usage: scripts/bench_workers.py [--mpw target/release/mpw] [--repeat 3]
Builds the release binary first unless --mpw is given. Linux (reads /proc).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WS, TASKS = 3, 40

HEAVY = """import time
# What importing a large stack costs: ~0.3 s of CPU, once per interpreter.
_t = time.process_time()
while time.process_time() - _t < {secs}:
    pass
TABLE = [i * i for i in range(200_000)]
"""

STEP = """import sys
import heavydeps
name = sys.argv[1]
with open(f"out/{name}.txt", "w") as f:
    f.write(str(len(heavydeps.TABLE)) + "\\n")
print("done", name)
"""


def sh(cmd, cwd):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def make_repo(path):
    os.makedirs(os.path.join(path, "out"))
    sh(["git", "init", "-q", "-b", "main"], path)
    sh(["git", "config", "user.name", "bench"], path)
    sh(["git", "config", "user.email", "bench@example.com"], path)
    with open(os.path.join(path, "step.py"), "w") as f:
        f.write(STEP)
    with open(os.path.join(path, "out", ".keep"), "w") as f:
        f.write("")
    sh(["git", "add", "-A"], path)
    sh(["git", "commit", "-q", "-m", "init"], path)


def plan(run_id, mode, deps):
    env = {"PYTHONPATH": deps}
    workstreams = []
    for w in range(WS):
        tasks = []
        for t in range(TASKS):
            name = f"w{w}t{t}"
            task = {"id": f"T{t}"}
            if mode == "process":
                task["run"] = f"python3 -m step {name}"
            else:
                task["worker"] = "py"
                task["args"] = ["-m", "step", name]
            if t:
                task["depends_on"] = [f"T{t - 1}"]
            tasks.append(task)
        workstreams.append({"id": f"W{w}", "tasks": tasks})
    g = {"max_concurrency": 3, "env": env}
    if mode == "worker":
        g["workers"] = {"py": {"adapter": "python", "max": 3, "env": env}}
    return {"run_id": run_id, "globals": g, "workstreams": workstreams}


def vmhwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakWatcher(threading.Thread):
    """Polls the peak RSS of the coordinator and of every worker process."""

    def __init__(self, coordinator):
        super().__init__(daemon=True)
        self.pid = coordinator
        self.coord = 0
        self.workers = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            v = vmhwm_kib(self.pid)
            if v:
                self.coord = max(self.coord, v)
            for p in os.listdir("/proc"):
                if not p.isdigit():
                    continue
                try:
                    with open(f"/proc/{p}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if b"mpw_worker.py" in cmd and b"--persistent_worker" in cmd:
                    v = vmhwm_kib(p)
                    if v:
                        self.workers[p] = max(self.workers.get(p, 0), v)
            time.sleep(0.05)


def one(mpw, base, mode, i, deps):
    repo = os.path.join(base, f"{mode}{i}", "repo")
    make_repo(repo)
    p = os.path.join(base, f"{mode}{i}", "plan.json")
    with open(p, "w") as f:
        json.dump(plan(f"B{i}", mode, deps), f)
    t = time.perf_counter()
    proc = subprocess.Popen([mpw, "-q", "run", p], cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watch = PeakWatcher(proc.pid)
    watch.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    watch.stop.set()
    watch.join()
    if proc.returncode != 0:
        sys.exit(f"{mode} run failed ({proc.returncode}):\n{out.decode()}\n{err.decode()}")
    return wall, watch.coord / 1024.0, [v / 1024.0 for v in watch.workers.values()]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--import-cost", type=float, default=0.3, help="CPU seconds of the dependency's import")
    a = ap.parse_args()
    mpw = a.mpw
    if not mpw:
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        mpw = os.path.join(ROOT, "target", "release", "mpw")
    mpw = os.path.abspath(mpw)
    with tempfile.TemporaryDirectory() as base:
        deps = os.path.join(base, "site")
        os.makedirs(deps)
        with open(os.path.join(deps, "heavydeps.py"), "w") as f:
            f.write(HEAVY.format(secs=a.import_cost))
        t = time.perf_counter()
        subprocess.run(["python3", "-c", "import heavydeps"], env={**os.environ, "PYTHONPATH": deps}, check=True)
        print(f"import of the dependency: {time.perf_counter() - t:.2f} s per interpreter")
        walls = {"process": [], "worker": []}
        coord = {"process": [], "worker": []}
        worker_rss = []
        for i in range(a.repeat):
            for mode in ("process", "worker"):
                wall, c, ws = one(mpw, base, mode, i, deps)
                walls[mode].append(wall)
                coord[mode].append(c)
                if mode == "worker":
                    worker_rss.extend(ws)
                extra = f", {len(ws)} workers, peak RSS max {max(ws):.1f} MiB" if ws else ""
                print(f"run {i + 1} {mode:7}: {wall:6.2f} s, coordinator peak RSS {c:.1f} MiB{extra}")
        pm, wm = statistics.median(walls["process"]), statistics.median(walls["worker"])
        print()
        print(f"{WS} workstreams x {TASKS} tasks, max_concurrency 3, medians of {a.repeat} runs")
        print(f"  process per task: {pm:.2f} s")
        print(f"  warm workers:     {wm:.2f} s  -> {wm / pm:.2f}x (target <= 0.2x)")
        print(f"  coordinator peak RSS: {statistics.median(coord['worker']):.1f} MiB (worker mode), "
              f"{statistics.median(coord['process']):.1f} MiB (process mode)")
        if worker_rss:
            print(f"  worker peak RSS: median {statistics.median(worker_rss):.1f} MiB, max {max(worker_rss):.1f} MiB each")


if __name__ == "__main__":
    main()
