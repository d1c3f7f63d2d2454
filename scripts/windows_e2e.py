#!/usr/bin/env python3
"""Windows end to end: mpw.exe under Wine, on repositories made by Linux git.

Builds the Windows binary (x86_64-pc-windows-gnu, reusing the target dir) and
the bcryptprimitives.dll shim next to it, then drives `mpw.exe` through the
scenario of README.md's Windows section: workstreams of `cmd` and
argv tasks, stacking, quarantine, retry, timeout of a process tree, copy and
setup, CRLF and the exec bit, a path with spaces and non-ASCII characters,
integrate (clean, dirty, gated, locked), cancel from a second process, a
killed coordinator then resume, status/report/pr/clean, a file held open, a
deep worktree root. Every result is checked with Linux git and the JSON files.

Prints a pass/fail table; exits 1 when a row failed, 3 when Wine or MinGW is
missing (.ci/run installs them first and says when it cannot).

    scripts/windows_e2e.py [--keep] [--no-build]
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "windows"))
from wine_run import PREFIX, ROOT, TARGET_DIR, ensure_shim, start_server, wine_binary, wine_env  # noqa: E402

TARGET = "x86_64-pc-windows-gnu"
OUT_DIR = TARGET_DIR / TARGET / "debug"
EXE = OUT_DIR / "mpw.exe"
WINE = wine_binary()
ENV = wine_env()
ENV.update(
    NO_COLOR="1",
    GIT_AUTHOR_NAME="mpw e2e",
    GIT_AUTHOR_EMAIL="e2e@mpw.invalid",
    GIT_COMMITTER_NAME="mpw e2e",
    GIT_COMMITTER_EMAIL="e2e@mpw.invalid",
)
ENV.pop("RUST_LOG", None)


def win(p) -> str:
    """A Linux path as mpw.exe sees it under Wine (drive Z: is /)."""
    return "Z:" + str(p).replace("/", "\\")


def jstr(s: str) -> str:
    """A JSON string literal (for plans written by hand below)."""
    return json.dumps(s, ensure_ascii=False)


# ---------------------------------------------------------------- results

ROWS = []  # (name, ok, detail)


class Row:
    """One line of the table: every `check` inside must hold."""

    def __init__(self, name):
        self.name = name
        self.fails = []
        self.notes = []

    def check(self, cond, what):
        if not cond:
            self.fails.append(what)
        return cond

    def note(self, text):
        self.notes.append(text)

    def __enter__(self):
        print(f"-- {self.name}", flush=True)
        return self

    def __exit__(self, kind, exc, tb):
        if exc is not None:
            self.fails.append(f"{kind.__name__}: {exc}")
            traceback.print_exception(kind, exc, tb)
        ok = not self.fails
        detail = "; ".join(self.fails if self.fails else self.notes)
        ROWS.append((self.name, ok, detail))
        print(f"   {'PASS' if ok else 'FAIL'} {detail}", flush=True)
        return True  # the next rows still run


# ---------------------------------------------------------------- processes


def git(repo, *args, check=True) -> str:
    r = subprocess.run(
        ["git", *args], cwd=repo, env=ENV, capture_output=True, text=True
    )
    if check and r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout.strip()


def mpw(repo, *args, timeout=300):
    """Run mpw.exe under Wine in `repo`; returns CompletedProcess."""
    r = subprocess.run(
        [WINE, str(EXE), *args],
        cwd=repo,
        env=ENV,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )
    print(f"   mpw {' '.join(args)} -> {r.returncode}", flush=True)
    if r.returncode not in (0, 1) or os.environ.get("E2E_VERBOSE"):
        sys.stdout.write(indent(r.stdout) + indent(r.stderr))
    return r


def mpw_bg(repo, *args):
    return subprocess.Popen(
        [WINE, str(EXE), *args],
        cwd=repo,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )


def indent(text):
    return "".join(f"     | {line}\n" for line in text.splitlines()[-15:])


def wait_for(what, cond, timeout=90):
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout}s for {what}")


def wine_procs(marker: str):
    """Linux pids of this prefix's Wine processes whose command line holds
    `marker` (Wine shows a Windows process's command line in /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace"
            )
            env = (d / "environ").read_bytes()
        except OSError:
            continue
        if marker in cmd and f"WINEPREFIX={PREFIX}".encode() in env:
            found.append(int(d.name))
    return found


def status_json(repo, run):
    p = Path(repo) / ".git" / "mpw" / "runs" / run / "run_status.json"
    return json.loads(p.read_text())


def ws(st, wid):
    return next(w for w in st["workstreams"] if w["id"] == wid)


def task(st, wid, tid):
    return next(t for t in ws(st, wid)["tasks"] if t["id"] == tid)


def blob(repo, rev_path) -> bytes:
    return subprocess.run(
        ["git", "show", rev_path], cwd=repo, env=ENV, capture_output=True
    ).stdout


def mode_of(repo, rev, path):
    line = git(repo, "ls-tree", rev, "--", path)
    return line.split()[0] if line else None


def make_repo(path: Path, files: dict, autocrlf=False):
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "mpw e2e")
    git(path, "config", "user.email", "e2e@mpw.invalid")
    git(path, "config", "commit.gpgsign", "false")
    for rel, content in files.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(path, "add", "-A")
    if (path / "tool.sh").exists():
        (path / "tool.sh").chmod(0o755)
        git(path, "add", "tool.sh")
    git(path, "commit", "-q", "-m", "init")
    if autocrlf:
        git(path, "config", "core.autocrlf", "true")
    return path


def write_plan(path: Path, plan: dict) -> Path:
    path.write_text(json.dumps(plan, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


# ---------------------------------------------------------------- build


def build():
    t0 = time.monotonic()
    subprocess.run(["cargo", "build", "--target", TARGET, "--bin", "mpw"], cwd=ROOT, check=True)
    print(f"build: {time.monotonic() - t0:.0f}s", flush=True)


def start_wine():
    t0 = time.monotonic()
    ensure_shim(OUT_DIR)
    start_server(ENV)
    r = subprocess.run([WINE, str(EXE), "--version"], env=ENV, capture_output=True, text=True, timeout=120)
    print(f"wine: {r.stdout.strip() or r.stderr.strip()} ({time.monotonic() - t0:.0f}s)", flush=True)
    if r.returncode != 0:
        raise SystemExit(f"mpw.exe does not start under Wine (exit {r.returncode})")


def stop_wine():
    # Ends this prefix's wineserver (and so every process left in it).
    subprocess.run(["wineserver", "-k"], env=ENV)


# ---------------------------------------------------------------- scenario


def scenario(base: Path):
    state = base / "state"  # counters and flags, outside every repository
    state.mkdir()
    S = win(state)
    # Spaces and non-ASCII in every path mpw touches.
    repo = make_repo(
        base / "wine e2e ü" / "répo ü",
        {
            ".gitattributes": "* text=auto\n",
            ".gitignore": ".env.local\nsetup.out\n",
            "notes.txt": "one\ntwo\n",
            "tool.sh": "#!/bin/sh\necho tool\n",
            "src/lib.txt": "lib\n",
        },
        autocrlf=True,
    )
    (repo / ".env.local").write_text("SECRET=1\n")
    main0 = git(repo, "rev-parse", "main")

    plan = write_plan(
        base / "e1.json",
        {
            "run_id": "E1",
            "name": "Wine ü",
            "globals": {
                "shell": "cmd",
                "max_concurrency": 3,
                "timeout_s": 120,
                "copy": [".env.local"],
                "setup": ["echo setup>setup.out"],
            },
            "workstreams": [
                {
                    "id": "A",
                    "tasks": [
                        {"id": "T1", "run": "echo alpha> a.txt"},
                        {
                            "id": "T2",
                            "argv": ["cmd", "/d", "/c", "copy", "/y", "a.txt", "b.txt"],
                            "depends_on": ["T1"],
                        },
                    ],
                },
                {
                    "id": "B",
                    "tasks": [
                        {"id": "T1", "run": "echo line one> crlf.txt&& echo line two>> crlf.txt"},
                        {"id": "T2", "run": "echo echo more>> tool.sh", "depends_on": ["T1"]},
                    ],
                },
                {
                    "id": "C",
                    "depends_on": ["A"],
                    "tasks": [{"id": "T1", "run": "type a.txt > c.txt"}],
                },
                {
                    "id": "Q",
                    "allowed_paths": ["q/**"],
                    "tasks": [{"id": "T1", "run": "mkdir q&& echo in> q\\in.txt&& echo out> outside.txt"}],
                },
                {
                    "id": "R",
                    "tasks": [
                        {
                            "id": "T1",
                            "retries": 1,
                            "run": f'if exist "{S}\\r.flag" (echo second> r.txt) else (echo first> "{S}\\r.flag"& exit 1)',
                        }
                    ],
                },
                {
                    "id": "T",
                    "tasks": [
                        {
                            "id": "T1",
                            "timeout_s": 3,
                            # A background grandchild and a foreground child.
                            "run": "start /b ping -n 47 127.0.0.1 > nul& ping -n 48 127.0.0.1 > nul",
                        }
                    ],
                },
            ],
        },
    )

    with Row("run: 3+ workstreams, cmd and argv tasks, path with spaces/non-ASCII") as r:
        out = mpw(repo, "run", win(plan))
        r.check(out.returncode == 1, f"exit {out.returncode}, want 1 (T fails, Q quarantined)")
        st = status_json(repo, "E1")
        want = {"A": "COMPLETED", "B": "COMPLETED", "C": "COMPLETED", "Q": "QUARANTINED", "R": "COMPLETED", "T": "FAILED"}
        got = {w["id"]: w["state"] for w in st["workstreams"]}
        r.check(got == want, f"states {got}")
        r.check(blob(repo, "mpw/E1/A:a.txt") == b"alpha\n", f"A:a.txt = {blob(repo, 'mpw/E1/A:a.txt')!r}")
        r.check(blob(repo, "mpw/E1/A:b.txt") == b"alpha\n", "argv task's copy b.txt committed")
        n = git(repo, "rev-list", "--count", "main..mpw/E1/A")
        r.check(n == "2", f"A has {n} commits, want 2")
        wt = Path(ws(st, "A")["worktree"].replace("Z:", "").replace("\\", "/"))
        r.check(wt.is_dir() and "répo ü.mpw" in str(wt), f"worktree {ws(st, 'A')['worktree']}")
        r.note(f"worktree {ws(st, 'A')['worktree']}")

    with Row("stacked workstream starts from its dependency") as r:
        r.check(
            subprocess.run(["git", "merge-base", "--is-ancestor", "mpw/E1/A", "mpw/E1/C"], cwd=repo).returncode == 0,
            "mpw/E1/A is not an ancestor of mpw/E1/C",
        )
        r.check(blob(repo, "mpw/E1/C:c.txt") == b"alpha\n", f"C:c.txt = {blob(repo, 'mpw/E1/C:c.txt')!r}")

    with Row("allowed_paths quarantine, work preserved under refs/mpw") as r:
        t = task(st, "Q", "T1")
        r.check(t["state"] == "QUARANTINED", f"Q/T1 {t['state']}")
        r.check("outside.txt" in (t.get("reason") or ""), f"reason {t.get('reason')}")
        ref = "refs/mpw/E1/quarantine/Q/T1"
        r.check(blob(repo, f"{ref}:outside.txt") == b"out\n", f"{ref} keeps outside.txt")
        r.check(git(repo, "rev-parse", "mpw/E1/Q") == main0, "branch Q did not move")

    with Row("retry: fails once, succeeds on attempt 2") as r:
        t = task(st, "R", "T1")
        r.check(t["state"] == "SUCCEEDED" and t["attempts"] == 2, f"R/T1 {t['state']} after {t['attempts']}")
        r.check(blob(repo, "mpw/E1/R:r.txt") == b"second\n", "r.txt from the second attempt")

    with Row("timeout ends the task's process tree (job object)") as r:
        t = task(st, "T", "T1")
        r.check(t["state"] == "FAILED" and "timed out" in (t.get("reason") or ""), f"T/T1 {t['state']}: {t.get('reason')}")
        left = wine_procs("-n 47") + wine_procs("-n 48")
        r.check(not left, f"ping processes left: {left}")
        r.note("foreground ping and `start /b` grandchild gone")

    with Row("copy and setup: baseline present, never committed") as r:
        wt = Path(ws(st, "B")["worktree"].replace("Z:", "").replace("\\", "/"))
        r.check((wt / ".env.local").read_text() == "SECRET=1\n", "copied .env.local")
        r.check((wt / "setup.out").exists(), "setup.out written by setup")
        files = git(repo, "log", "--name-only", "--format=", "main..mpw/E1/B").split()
        r.check(".env.local" not in files and "setup.out" not in files, f"committed {files}")

    with Row("CRLF: text=auto + core.autocrlf=true, exec bit kept") as r:
        crlf = blob(repo, "mpw/E1/B:crlf.txt")
        r.check(crlf == b"line one\nline two\n", f"crlf.txt blob {crlf!r} (want LF)")
        tool = blob(repo, "mpw/E1/B:tool.sh")
        r.check(tool == b"#!/bin/sh\necho tool\necho more\n", f"tool.sh blob {tool!r}")
        r.check(mode_of(repo, "mpw/E1/B", "tool.sh") == "100755", f"tool.sh mode {mode_of(repo, 'mpw/E1/B', 'tool.sh')}")
        notes = (wt / "notes.txt").read_bytes()
        r.check(notes == b"one\r\ntwo\r\n", f"checkout of notes.txt {notes!r} (want CRLF)")
        per_commit = [
            git(repo, "show", "--name-only", "--format=", c).split()
            for c in git(repo, "rev-list", "main..mpw/E1/B").split()
        ]
        r.check(sorted(per_commit) == [["crlf.txt"], ["tool.sh"]], f"commits touch {per_commit}")

    with Row("integrate into checked-out clean main") as r:
        out = mpw(repo, "integrate", "E1", "--into", "main")
        # Exit 1: the quarantined workstream is left unmerged, and named last.
        last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        r.check(out.returncode == 1, f"exit {out.returncode}")
        r.check("left unmerged" in last and "QUARANTINED" in last, f"last line {last!r}")
        merged = git(repo, "log", "--first-parent", "--format=%s", "main0..main".replace("main0", main0)).splitlines()
        r.check(len(merged) == 4, f"{len(merged)} merges on main: {merged}")
        porcelain = git(repo, "status", "--porcelain")
        r.check(porcelain == "", f"git status after integrate: {porcelain!r}")
        r.check((repo / "a.txt").exists() and (repo / "c.txt").exists(), "merged files checked out")
        st = status_json(repo, "E1")
        r.check(ws(st, "A")["state"] == "INTEGRATED", f"A {ws(st, 'A')['state']}")

    # A second run for the dirty, gated and locked integrations.
    gplan = write_plan(
        base / "e2.json",
        {
            "run_id": "E2",
            "globals": {"shell": "cmd"},
            "workstreams": [
                {"id": "G1", "tasks": [{"id": "T1", "run": "echo g1> g1.txt"}]},
                {"id": "G2", "tasks": [{"id": "T1", "run": "echo g2> g2.txt"}]},
            ],
        },
    )
    with Row("integrate into a dirty checked-out main: exit 3, edit kept") as r:
        out = mpw(repo, "run", win(gplan))
        r.check(out.returncode == 0, f"run E2 exit {out.returncode}")
        before = git(repo, "rev-parse", "main")
        with open(repo / "notes.txt", "ab") as f:
            f.write(b"dirty\n")
        out = mpw(repo, "integrate", "E2")
        r.check(out.returncode == 3, f"exit {out.returncode}, want 3")
        r.check("notes.txt" in out.stderr, f"stderr names notes.txt: {out.stderr.strip()[-200:]}")
        r.check((repo / "notes.txt").read_bytes().endswith(b"dirty\n"), "the edit is intact")
        r.check(git(repo, "rev-parse", "main") == before, "main did not move")
        git(repo, "checkout", "--", "notes.txt")

    with Row("integrate --gate (pass and fail) while a --no-wait is refused by the lock") as r:
        gate = (
            f'echo on> "{S}\\gate-%MPW_WORKSTREAM%.flag"& ping -n 4 127.0.0.1 > nul& '
            'if "%MPW_WORKSTREAM%"=="G2" (exit 5) else (type g1.txt)'
        )
        before = git(repo, "rev-parse", "main")
        holder = mpw_bg(repo, "integrate", "E2", "--gate", gate)
        wait_for("the first gate", lambda: (state / "gate-G1.flag").exists())
        nowait = mpw(repo, "integrate", "E2", "--no-wait")
        r.check(nowait.returncode == 3, f"--no-wait while locked: exit {nowait.returncode}, want 3")
        out_s, err_s = holder.communicate(timeout=300)
        r.check(holder.returncode == 1, f"gated integrate exit {holder.returncode}, want 1 (G2 gate fails)\n{err_s[-300:]}")
        st = status_json(repo, "E2")
        r.check(ws(st, "G1")["state"] == "INTEGRATED", f"G1 {ws(st, 'G1')['state']}")
        r.check(ws(st, "G2")["state"] == "GATE_FAILED", f"G2 {ws(st, 'G2')['state']}")
        r.check(git(repo, "rev-parse", "main^1") == before, "main moved by one merge (G1 only)")
        r.check((repo / "g1.txt").exists() and not (repo / "g2.txt").exists(), "checkout has g1.txt only")
        r.check(git(repo, "status", "--porcelain") == "", "main clean")

    cplan = write_plan(
        base / "e3.json",
        {
            "run_id": "E3",
            "globals": {"shell": "cmd"},
            "workstreams": [
                {"id": "X", "tasks": [{"id": "T1", "run": f'echo on> "{S}\\e3.flag"& ping -n 61 127.0.0.1 > nul'}]}
            ],
        },
    )
    with Row("mpw cancel from a second Wine process; resume refused meanwhile (coordinator.lock)") as r:
        run = mpw_bg(repo, "run", win(cplan))
        wait_for("the E3 task", lambda: (state / "e3.flag").exists())
        # coordinator.lock, held by the running coordinator, turns a resume away.
        out = mpw(repo, "resume", "E3")
        r.check(out.returncode == 3 and "another mpw process" in out.stderr, f"resume while running: exit {out.returncode}")
        out = mpw(repo, "cancel", "E3", timeout=120)
        r.check(out.returncode == 0, f"cancel exit {out.returncode}: {out.stderr.strip()[-200:]}")
        run.communicate(timeout=120)
        r.check(run.returncode == 130, f"run exit {run.returncode}, want 130")
        r.check(status_json(repo, "E3")["state"] == "CANCELLED", "run CANCELLED")
        r.check(not wine_procs("-n 61"), "the task's ping is gone")

    kplan = write_plan(
        base / "e4.json",
        {
            "run_id": "E4",
            "globals": {"shell": "cmd"},
            "workstreams": [
                {
                    "id": "K",
                    "tasks": [
                        {"id": "T1", "run": f'echo x>> "{S}\\T1.count"& echo 1> t1.txt'},
                        {
                            "id": "T2",
                            "depends_on": ["T1"],
                            # Slow only the first time, so the resumed attempt is quick.
                            "run": f'(if not exist "{S}\\slow.flag" (echo on> "{S}\\slow.flag"& ping -n 62 127.0.0.1 > nul))& echo x>> "{S}\\T2.count"& echo 2> t2.txt',
                        },
                        {"id": "T3", "depends_on": ["T2"], "run": f'echo x>> "{S}\\T3.count"& echo 3> t3.txt'},
                    ],
                }
            ],
        },
    )
    with Row("kill the coordinator's Wine process, then resume: each task once") as r:
        run = mpw_bg(repo, "run", win(kplan))
        proc = repo / ".git/mpw/runs/E4/logs/K/T2.1.proc"
        wait_for("the slow task", lambda: (state / "slow.flag").exists() and proc.exists())
        os.kill(run.pid, signal.SIGKILL)
        run.communicate()
        # The job is kill-on-close: the coordinator's death ends the task tree.
        try:
            wait_for("the orphaned task to end", lambda: not wine_procs("-n 62"), timeout=30)
            r.note("kill-on-close ended the task with the coordinator")
        except TimeoutError:
            r.check(False, "the task outlived its killed coordinator")
        out = mpw(repo, "resume", "E4")
        r.check(out.returncode == 0, f"resume exit {out.returncode}: {out.stderr.strip()[-300:]}")
        st = status_json(repo, "E4")
        r.check(st["state"] == "COMPLETED", f"E4 {st['state']}")
        counts = {t: len((state / f"{t}.count").read_text().split()) for t in ("T1", "T2", "T3")}
        r.check(counts == {"T1": 1, "T2": 1, "T3": 1}, f"runs per task {counts}")
        n = git(repo, "rev-list", "--count", f"{st['base']}..mpw/E4/K")
        r.check(n == "3", f"{n} commits on K, want 3")
        events = (repo / ".git/mpw/runs/E4/events.jsonl").read_text()
        r.check("TASK_INTERRUPTED" in events and "RUN_RESUMED" in events, "interrupted and resumed events")

    with Row("status --json, report --html, pr") as r:
        out = mpw(repo, "status", "E1", "--json")
        r.check(out.returncode == 0, f"status exit {out.returncode}")
        printed = json.loads(out.stdout)
        r.check(printed == status_json(repo, "E1"), "status --json equals run_status.json")
        html = base / "report ü.html"
        out = mpw(repo, "report", "E1", "--html", win(html))
        r.check(out.returncode == 0 and html.exists(), f"report exit {out.returncode}")
        r.check(html.exists() and "<html" in html.read_text(errors="replace").lower(), "an HTML file")
        out = mpw(repo, "pr", "E1", "--json")
        r.check(out.returncode == 0, f"pr exit {out.returncode}")
        drafts = json.loads(out.stdout) if out.returncode == 0 else []
        r.check({d["workstream"] for d in drafts} >= {"A", "B", "C", "R"}, f"pr drafts {[d['workstream'] for d in drafts]}")
        for d in drafts:
            body = Path(str(d["body_file"]).replace("Z:", "").replace("\\", "/"))
            r.check(body.exists(), f"pr body {d['body_file']}")

    with Row("a file held open in a worktree: clean fails clearly, tree intact") as r:
        wt = Path(ws(status_json(repo, "E4"), "K")["worktree"].replace("Z:", "").replace("\\", "/"))
        held = subprocess.Popen(
            # One token per argument: Wine quotes the path, spaces and all.
            [WINE, "cmd", "/c", "ping", "-n", "120", "127.0.0.1", ">", win(wt / "held.log")],
            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for("the held file", lambda: (wt / "held.log").exists())
            out = mpw(repo, "clean", "E4", "--force")
            r.note(f"clean exit {out.returncode}: {out.stderr.strip()[-160:]}")
            r.check(out.returncode == 3, f"clean exit {out.returncode}, want 3")
            r.check("held.log" in out.stderr or "in use" in out.stderr, f"error names the problem: {out.stderr.strip()[-200:]}")
            intact = all((wt / f).exists() for f in ("t1.txt", "t2.txt", "t3.txt", ".git"))
            r.check(intact, "the worktree is whole")
        finally:
            # The holder is ping, started by cmd: end both.
            held.kill()
            held.wait()
            for pid in wine_procs("-n 120"):
                os.kill(pid, signal.SIGKILL)
            wait_for("the holder to end", lambda: not wine_procs("-n 120"), timeout=30)
        out = mpw(repo, "clean", "E4", "--force")
        r.check(out.returncode == 0 and not wt.exists(), f"clean after closing: exit {out.returncode}")

    with Row("clean --branches") as r:
        wts = [Path(w["worktree"].replace("Z:", "").replace("\\", "/")) for w in status_json(repo, "E1")["workstreams"]]
        out = mpw(repo, "clean", "E1", "--branches")
        r.check(out.returncode == 0, f"exit {out.returncode}")
        r.check(not any(p.exists() for p in wts), "worktrees removed")
        branches = git(repo, "branch", "--list", "mpw/E1/*", "--format=%(refname:short)").split()
        r.check(sorted(branches) == ["mpw/E1/Q", "mpw/E1/T"], f"branches left {branches}")
        listed = git(repo, "worktree", "list", "--porcelain")
        r.check("/E1/" not in listed, "git worktree list has no E1 entry")

    # MAX_PATH: a worktree root just under 260 characters must work; past it,
    # whatever happens must be clean (a named error, no half-made worktree).
    for run_id, depth in (("E5", 5), ("E6", 6)):
        deep = base / run_id / "/".join(["d" * 40] * depth)
        wt_path = win(deep / run_id / "L")
        plan = write_plan(
            base / f"{run_id}.json",
            {
                "run_id": run_id,
                "globals": {"shell": "cmd", "worktree_root": win(deep)},
                "workstreams": [{"id": "L", "tasks": [{"id": "T1", "run": "echo deep> deep.txt"}]}],
            },
        )
        with Row(f"worktree path of {len(wt_path)} characters") as r:
            out = mpw(repo, "run", win(plan))
            if len(wt_path) < 260:
                r.check(out.returncode == 0, f"run exit {out.returncode}: {out.stderr.strip()[-300:]}")
                r.check(blob(repo, f"mpw/{run_id}/L:deep.txt") == b"deep\n", "deep.txt committed")
                r.note("works")
            else:
                st = status_json(repo, run_id)
                reason = task(st, "L", "T1").get("reason") or ""
                if out.returncode == 0:
                    r.note("works under Wine (Z: has no MAX_PATH limit)")
                else:
                    r.check(out.returncode == 1 and "adding the worktree" in reason, f"exit {out.returncode}: {reason[-200:]}")
                    listed = git(repo, "worktree", "list", "--porcelain")
                    r.check(f"/{run_id}/" not in listed, "no worktree left registered")
                    r.note(f"workstream FAILED before any task, exit 1: {reason.split(': ')[-1]}")


def main():
    keep = "--keep" in sys.argv
    missing = [t for t in ("x86_64-w64-mingw32-gcc", "wineserver") if not shutil.which(t)]
    if WINE is None or missing:
        print(f"windows e2e skipped: missing {', '.join(missing + ([] if WINE else ['wine']))}")
        return 3
    t0 = time.monotonic()
    if "--no-build" not in sys.argv:
        build()
    start_wine()
    base = Path(tempfile.mkdtemp(prefix="mpw-wine-"))
    t1 = time.monotonic()
    try:
        scenario(base)
    finally:
        stop_wine()
    elapsed = time.monotonic() - t1
    width = max(len(n) for n, _, _ in ROWS)
    print(f"\n{'scenario':<{width}}  result  detail")
    for name, ok, detail in ROWS:
        print(f"{name:<{width}}  {'PASS' if ok else 'FAIL':<6}  {detail}")
    failed = sum(1 for _, ok, _ in ROWS if not ok)
    print(f"\n{len(ROWS) - failed}/{len(ROWS)} passed; scenario {elapsed:.0f}s, total {time.monotonic() - t0:.0f}s")
    if failed or keep:
        print(f"kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
