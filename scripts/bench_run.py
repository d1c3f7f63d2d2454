#!/usr/bin/env python3
"""Benchmarks of `mpw run`, each side by side with its baseline, in one run.

(a) 500 no-op tasks in 10 workstreams, 8 slots, against `xargs -P8 sh -c`
    running the same 500 commands; runs alternate (mpw, xargs, mpw, ...).
    Twice: read-only tasks, and mutating tasks that change nothing.
    Wall and CPU (user + sys of the whole process tree) ratios, medians.
    Target: <= 1.5x.
(s) per task, from one `strace -f` of (a) when strace is installed: the
    syscalls of the mpw process itself (`openat`, `statx`, threads created,
    ...) and, for comparison with older figures, of all processes.
    Targets: <= 12 openat, <= 30 statx, <= 1 thread.
(b) 20 workstreams provisioned on a 5,000-file repository against a loop of
    `git worktree add -b` (target: <= 0.5x).
(w) 100 workstreams provisioned on a one-file repository, the same way as
    (b): what adding many worktrees costs beyond their files (not in the
    default sections).
(c) peak memory (max RSS) of the coordinator over (a) (target: <= 20 MiB).
(d) scale: a 100 x 100 plan (10,000 no-op tasks) to COMPLETED: per-task
    wall against (a)'s (target: <= 1.3x), coordinator RSS (target: <= 40 MiB),
    `mpw status` time (target: <= 200 ms), `mpw status --json` equal to
    run_status.json.

Usage: scripts/bench_run.py [--mpw target/release/mpw] [--repeat 3] [--quick] [--only a,b,d]
Builds the release binary first unless --mpw is given. --quick uses small
sizes (for checking the script itself; its figures mean little).
"""
import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs a command in a fresh interpreter and prints: exit code, wall seconds,
# user+sys seconds and max RSS (MiB) of its process tree. RUSAGE_CHILDREN's
# maxrss is the largest single process, here the coordinator (or xargs).
# On Linux it also samples the process's private (anonymous) memory every
# 10 ms: RSS includes the binary's clean code pages, which the page cache
# shares; the private part is what the coordinator itself holds.
PROBE = (
    "import resource,subprocess,sys,time;"
    "inp=open(sys.argv[1],'rb') if sys.argv[1] != '-' else subprocess.DEVNULL;"
    "t=time.perf_counter();"
    "p=subprocess.Popen(sys.argv[2:],stdin=inp,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL);"
    "anon=0\n"
    "while True:\n"
    "    try:\n"
    "        p.wait(0.01); break\n"
    "    except subprocess.TimeoutExpired: pass\n"
    "    try:\n"
    "        for l in open(f'/proc/{p.pid}/smaps_rollup'):\n"
    "            if l.startswith('Anonymous:'): anon=max(anon,int(l.split()[1]))\n"
    "    except OSError: pass\n"
    "d=time.perf_counter()-t;"
    "u=resource.getrusage(resource.RUSAGE_CHILDREN);"
    "print(p.returncode,d,u.ru_utime+u.ru_stime,u.ru_maxrss/1024.0,anon/1024.0)"
)


def sh(cmd, cwd, **kw):
    return subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def probe(cmd, cwd, stdin="-"):
    """(wall s, cpu s, max rss MiB, peak private MiB) of `cmd`; fails on a non-zero exit."""
    out = subprocess.run([sys.executable, "-c", PROBE, stdin, *cmd], cwd=cwd, check=True,
                         stdout=subprocess.PIPE, text=True).stdout.split()
    if int(out[0]) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with {out[0]}")
    return float(out[1]), float(out[2]), float(out[3]), float(out[4])


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


def write_plan(path, run_id, n_ws, n_tasks, read_only, slots=8):
    task = {"run": "true"}
    if read_only:
        task["read_only"] = True
    wss = [{"id": f"W{w}", "tasks": [dict(task, id=f"T{t}") for t in range(n_tasks)]} for w in range(n_ws)]
    with open(path, "w") as f:
        json.dump({"run_id": run_id, "globals": {"max_concurrency": slots}, "workstreams": wss}, f)


class Tasks:
    """(a) and (c): one fresh repository per mpw run."""

    def __init__(self, mpw, tmp, n_ws, n_tasks):
        self.mpw, self.tmp, self.n_ws, self.n_tasks = mpw, tmp, n_ws, n_tasks
        self.n = n_ws * n_tasks
        self.count = 0
        self.cmds = os.path.join(tmp, "cmds")
        with open(self.cmds, "w") as f:
            f.write("true\n" * self.n)

    def fresh(self, read_only):
        self.count += 1
        repo = os.path.join(self.tmp, f"tasks{self.count}")
        make_repo(repo, 0)
        plan = repo + ".json"
        write_plan(plan, f"bench-{self.count}", self.n_ws, self.n_tasks, read_only)
        return repo, plan

    def mpw_run(self, read_only):
        repo, plan = self.fresh(read_only)
        return probe([self.mpw, "-q", "--repo", repo, "run", plan], repo)

    def xargs_run(self):
        return probe(["xargs", "-P8", "-I{}", "sh", "-c", "{}"], self.tmp, stdin=self.cmds)

    def strace_run(self, read_only):
        repo, plan = self.fresh(read_only)
        trace = repo + ".strace"
        calls = "openat,statx,newfstatat,read,pwrite64,write,mkdir,fsync,fdatasync,clone,clone3,execve,rename"
        sh(["strace", "-f", "-qq", "-o", trace, "-e", f"trace={calls}",
            self.mpw, "-q", "--repo", repo, "run", plan], repo)
        return parse_strace(trace)


LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. (\w+) resumed>|(\w+)\()(.*)$")


def parse_strace(path):
    """Syscall counts of the mpw process (its first pid and the threads it
    made) and of all processes; threads = clones with CLONE_THREAD."""
    root = None
    mpw_tids = set()
    exec_pids = set()
    pending = {}
    mine, everyone = {}, {}
    threads = 0
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line)
            if not m:
                continue
            pid = int(m.group(1))
            if root is None:
                root = pid
                mpw_tids.add(pid)
            resumed, name, rest = m.group(2), m.group(3), m.group(4)
            if name:
                if rest.endswith("<unfinished ...>"):
                    pending[pid] = (name, rest)
                    continue
                call, text = name, rest
            else:
                call, first = pending.pop(pid, (resumed, ""))
                text = first + rest
            if call == "execve" and pid != root:
                exec_pids.add(pid)
            everyone[call] = everyone.get(call, 0) + 1
            if pid in mpw_tids and pid not in exec_pids:
                mine[call] = mine.get(call, 0) + 1
                if call in ("clone", "clone3") and "CLONE_THREAD" in text:
                    r = re.search(r"= (\d+)\s*$", text)
                    if r:
                        mpw_tids.add(int(r.group(1)))
                        threads += 1
    mine["threads"] = threads
    return mine, everyone


def bench_provision(mpw, tmp, rep, pack, n_wt, n_files):
    """(b): worktrees with branches on a many-file repository."""
    repo_m = os.path.join(tmp, f"prov-m{rep}")
    repo_g = os.path.join(tmp, f"prov-g{rep}")
    make_repo(repo_m, n_files, pack)
    shutil.copytree(repo_m, repo_g, symlinks=True)
    plan = os.path.join(tmp, f"prov{rep}.json")
    wss = [{"id": f"W{w}", "tasks": [{"id": "T", "run": "true", "read_only": True}]} for w in range(n_wt)]
    with open(plan, "w") as f:
        json.dump({"run_id": f"bench-b{rep}", "globals": {"max_concurrency": 4}, "workstreams": wss}, f)

    def timed(fn):
        """(wall s, cpu s of every process it waited for)"""
        def cpu():
            u = resource.getrusage(resource.RUSAGE_CHILDREN)
            return u.ru_utime + u.ru_stime
        t, c = time.perf_counter(), cpu()
        fn()
        return time.perf_counter() - t, cpu() - c

    def run_mpw():
        sh([mpw, "-q", "--repo", repo_m, "run", plan], repo_m)

    def run_git():
        root = repo_g + ".wt"
        for w in range(n_wt):
            sh(["git", "worktree", "add", "-q", "-b", f"bench/W{w}", os.path.join(root, f"W{w}")], repo_g)
            # the same no-op task mpw runs in each worktree
            sh(["sh", "-c", "true"], os.path.join(root, f"W{w}"))

    return timed(run_mpw), timed(run_git)


def bench_scale(mpw, tmp, n_ws, n_tasks):
    """(d): one big run; then `mpw status` and `status --json`."""
    repo = os.path.join(tmp, "scale")
    make_repo(repo, 0)
    plan = repo + ".json"
    write_plan(plan, "bench-scale", n_ws, n_tasks, True)
    wall, cpu, rss, anon = probe([mpw, "-q", "--repo", repo, "run", plan], repo)
    state = json.loads(sh([mpw, "--repo", repo, "status", "--json"], repo).stdout)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        sh([mpw, "--repo", repo, "status", "--color", "never"], repo)
        times.append(time.perf_counter() - t)
    with open(os.path.join(repo, ".git", "mpw", "runs", "bench-scale", "run_status.json")) as f:
        on_disk = json.load(f)
    return wall, cpu, rss, anon, state["state"], statistics.median(times), state == on_disk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mpw")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script itself")
    ap.add_argument("--no-scale", action="store_true", help="leave out the 10,000-task run")
    ap.add_argument("--tmp", help="where the repositories go (e.g. /dev/shm to leave the disk out)")
    ap.add_argument("--only", default="a,b,d",
                    help="sections to run: a (tasks, with s and c), b (provisioning), w (100 worktrees), d (scale)")
    ap.add_argument("--loose", action="store_true", help="keep the objects loose (a fresh `git add` of 5,000 files)")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if args.no_scale:
        only.discard("d")
    mpw = args.mpw
    if not mpw:
        sh(["cargo", "build", "--release", "--quiet"], ROOT)
        mpw = os.path.join(ROOT, "target", "release", "mpw")
    mpw = os.path.abspath(mpw)
    n_ws, n_tasks = (4, 10) if args.quick else (10, 50)
    n_wt, n_files = (4, 500) if args.quick else (20, 5000)
    s_ws, s_tasks = (10, 20) if args.quick else (100, 100)
    tmp = tempfile.mkdtemp(prefix="mpw-bench-", dir=args.tmp)
    try:
        tasks = Tasks(mpw, tmp, n_ws, n_tasks)
        runs = {"ro": [], "mut": []}
        xargs = []
        rss = []
        anon = []
        pm, pg = [], []
        wm, wg = [], []
        for rep in range(args.repeat):
            # Alternate so that whatever else loads the machine hits both sides alike.
            for kind in ("ro", "mut") if "a" in only or "d" in only else ():
                r = tasks.mpw_run(kind == "ro")
                runs[kind].append(r)
                rss.append(r[2])
                anon.append(r[3])
                xargs.append(tasks.xargs_run())
            if "b" in only:
                m, g = bench_provision(mpw, tmp, rep, not args.loose, n_wt, n_files)
                pm.append(m)
                pg.append(g)
            if "w" in only:
                m, g = bench_provision(mpw, tmp, f"w{rep}", True, 10 if args.quick else 100, 1)
                wm.append(m)
                wg.append(g)
        med = statistics.median
        n = tasks.n
        print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end; "
              f"repositories in {os.path.dirname(tmp)}; medians of {args.repeat} alternating runs")
        per_task = {}
        if xargs:
            x_wall, x_cpu = med(r[0] for r in xargs), med(r[1] for r in xargs)
            print(f"(a) {n} no-op tasks, {n_ws} workstreams, 8 slots; xargs -P8: wall {x_wall:.2f}s, cpu {x_cpu:.2f}s")
            for kind, label in (("ro", "read-only"), ("mut", "mutating, no change")):
                wall, cpu = med(r[0] for r in runs[kind]), med(r[1] for r in runs[kind])
                per_task[kind] = wall / n
                print(f"    mpw {label:20} wall {wall:.2f}s ({wall / x_wall:.2f}x)  cpu {cpu:.2f}s "
                      f"({cpu / x_cpu:.2f}x)   (target <= 1.5x)")
        if "a" in only and shutil.which("strace"):
            for kind, label in (("ro", "read-only"), ("mut", "mutating")):
                mine, everyone = tasks.strace_run(kind == "ro")
                keys = ["openat", "statx", "newfstatat", "read", "pwrite64", "write", "mkdir", "fsync", "fdatasync"]
                line = "  ".join(f"{k} {mine.get(k, 0) / n:.1f}" for k in keys)
                print(f"(s) per task, mpw process, {label}: {line}  threads {mine['threads'] / n:.2f}")
                print(f"    per task, all processes:     openat {everyone.get('openat', 0) / n:.1f}  "
                      f"statx {everyone.get('statx', 0) / n:.1f}   (targets: openat <= 12, statx <= 30, threads <= 1)")
        elif "a" in only:
            print("(s) strace not installed: no syscall counts")
        if pm:
            layout = "loose objects" if args.loose else "packed"
            m_wall, g_wall = med(r[0] for r in pm), med(r[0] for r in pg)
            m_cpu, g_cpu = med(r[1] for r in pm), med(r[1] for r in pg)
            print(f"(b) {n_wt} worktrees on {n_files:,} files ({layout}): mpw {m_wall:.2f}s  "
                  f"git worktree add loop {g_wall:.2f}s  ratio {m_wall / g_wall:.2f}x (target <= 0.5x); "
                  f"cpu mpw {m_cpu:.2f}s, git {g_cpu:.2f}s ({m_cpu / g_cpu:.2f}x)")
        if wm:
            m_wall, g_wall = med(r[0] for r in wm), med(r[0] for r in wg)
            m_cpu, g_cpu = med(r[1] for r in wm), med(r[1] for r in wg)
            print(f"(w) {10 if args.quick else 100} worktrees on one file: mpw {m_wall:.2f}s, cpu {m_cpu:.2f}s  "
                  f"git worktree add loop {g_wall:.2f}s, cpu {g_cpu:.2f}s  ratio {m_wall / g_wall:.2f}x")
        if rss:
            private = f"{max(anon):.1f} MiB" if max(anon) else "not sampled (no /proc)"
            print(f"(c) coordinator peak RSS over (a): {max(rss):.1f} MiB (target <= 20 MiB); "
                  f"peak private memory {private} (the rest is the binary's clean code pages)")
        if "d" in only:
            wall, cpu, s_rss, s_anon, state, status_t, same = bench_scale(mpw, tmp, s_ws, s_tasks)
            s_n = s_ws * s_tasks
            ratio = (wall / s_n) / per_task["ro"]
            print(f"(d) {s_ws} x {s_tasks} plan ({s_n:,} no-op tasks): {state}, wall {wall:.1f}s, "
                  f"per task {1000 * wall / s_n:.2f} ms ({ratio:.2f}x the {n}-task run's; target <= 1.3x), "
                  f"RSS {s_rss:.1f} MiB (target <= 40; private {s_anon:.1f}), `mpw status` {1000 * status_t:.0f} ms (target <= 200), "
                  f"status --json == run_status.json: {'yes' if same else 'NO'}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
