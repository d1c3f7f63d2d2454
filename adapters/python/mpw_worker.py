#!/usr/bin/env python3
"""mpw's Python worker adapter: Bazel's JSON persistent-worker protocol.

Started by mpw as `python3 mpw_worker.py --persistent_worker`, it reads one
JSON request a line on stdin and answers one JSON response a line on stdout.
Each request runs its arguments the way `python ARGS` would (`-m MODULE ...`,
`SCRIPT.py ...`, `-c CODE`) inside this one interpreter, so modules imported
by one request stay imported for the next: that is the point.

Request:  {"arguments": [...], "requestId": N, "sandboxDir": "/abs/worktree",
           "mpw": {"env": {...}, "run": ..., "workstream": ..., "task": ...}}
Response: {"requestId": N, "exitCode": N, "output": "..."}
Cancel:   {"requestId": N, "cancel": true} -> the request stops with
          KeyboardInterrupt and answers {"requestId": N, "wasCancelled": true}.

Options before the Python arguments of a request (or after
--persistent_worker, for every request): `--fresh-modules PREFIX` drops the
modules PREFIX and PREFIX.* before the request. Independently of it, a module
whose source file lies in another request's sandbox, or whose source changed
since it was imported, is always dropped, so a worker never runs one
worktree's code for another or a stale copy of an edited file.

Standard library only; Python 3.9 or newer; Unix and Windows.
"""

import io
import json
import os
import queue
import runpy
import sys
import threading
import traceback
import _thread

PROTOCOL_OUT = None  # a private copy of the original stdout
SANDBOXES = set()
# module name -> (file, mtime_ns, size) for modules loaded from a sandbox
SEEN = {}


def _norm(path):
    return os.path.normcase(os.path.abspath(path))


def _inside(path, root):
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives on Windows
        return False


def _stat(path):
    try:
        st = os.stat(path)
        return st.st_mtime_ns, st.st_size
    except OSError:
        return None


def drop_modules(sandbox, prefixes):
    """Forget modules that must not be reused for this request."""
    others = [s for s in SANDBOXES if s != sandbox]
    for name, mod in list(sys.modules.items()):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            del sys.modules[name]
            SEEN.pop(name, None)
            continue
        f = getattr(mod, "__file__", None)
        if not f:
            continue
        f = _norm(f)
        if any(_inside(f, o) for o in others):
            del sys.modules[name]
            SEEN.pop(name, None)
        elif name in SEEN and SEEN[name][1:] != (_stat(SEEN[name][0]) or (None, None)):
            del sys.modules[name]
            SEEN.pop(name, None)
    sys.path_importer_cache.clear()


def note_modules(sandbox):
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if f and name not in SEEN:
            f = _norm(f)
            if _inside(f, sandbox):
                st = _stat(f)
                if st:
                    SEEN[name] = (f, st[0], st[1])


def split_options(args):
    prefixes = []
    while len(args) >= 2 and args[0] == "--fresh-modules":
        prefixes.append(args[1])
        args = args[2:]
    return prefixes, args


def run_python_args(args):
    """Run ARGS as `python ARGS` would, in this interpreter. Returns the exit code."""
    if not args:
        print("mpw_worker: no arguments (expected -m MODULE, -c CODE or SCRIPT)", file=sys.stderr)
        return 2
    first = args[0]
    try:
        if first == "-m":
            if len(args) < 2:
                print("mpw_worker: -m needs a module name", file=sys.stderr)
                return 2
            sys.argv = [args[1]] + args[2:]
            sys.path[0] = os.getcwd()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        elif first == "-c":
            if len(args) < 2:
                print("mpw_worker: -c needs code", file=sys.stderr)
                return 2
            sys.argv = ["-c"] + args[2:]
            sys.path[0] = ""
            code = compile(args[1], "<string>", "exec")
            exec(code, {"__name__": "__main__", "__builtins__": __builtins__})
        elif first.startswith("-"):
            print(f"mpw_worker: unsupported option {first!r} (use -m, -c or a script)", file=sys.stderr)
            return 2
        else:
            sys.argv = list(args)
            sys.path[0] = os.path.dirname(os.path.abspath(first))
            runpy.run_path(first, run_name="__main__")
        return 0
    except SystemExit as e:
        code = e.code
        if code is None:
            return 0
        if isinstance(code, int):
            return code
        print(code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # the task's own error: report it, keep serving
        print_task_traceback(e)
        return 1


def print_task_traceback(e):
    """The traceback as `python ARGS` prints it: without this adapter's frames."""
    tb = e.__traceback__
    while tb is not None and (
        _norm(tb.tb_frame.f_code.co_filename) == _norm(__file__)
        or "runpy" in tb.tb_frame.f_code.co_filename
    ):
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb)


class Redirect:
    """Point fds 1 and 2 (and so subprocesses and C code) at a temporary file."""

    def __enter__(self):
        import tempfile

        sys.stdout.flush()
        sys.stderr.flush()
        self.tmp = tempfile.TemporaryFile()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.tmp.fileno(), 1)
        os.dup2(self.tmp.fileno(), 2)
        return self

    def __exit__(self, *exc):
        for f in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                f.flush()
            except Exception:
                pass
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        os.close(self.saved[0])
        os.close(self.saved[1])
        self.tmp.seek(0)
        self.output = self.tmp.read().decode("utf-8", "replace")
        self.tmp.close()
        return False


def handle(req, global_prefixes, current):
    rid = req.get("requestId", 0)
    args = [str(a) for a in req.get("arguments", [])]
    prefixes, args = split_options(args)
    sandbox = req.get("sandboxDir") or os.getcwd()
    env = (req.get("mpw") or {}).get("env")
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    old_argv, old_path0 = list(sys.argv), (sys.path[0] if sys.path else "")
    sandbox_n = _norm(sandbox)
    drop_modules(sandbox_n, global_prefixes + prefixes)
    SANDBOXES.add(sandbox_n)
    cancelled = False
    code = 1
    with Redirect() as out:
        try:
            os.chdir(sandbox)
            if env is not None:
                os.environ.clear()
                os.environ.update({str(k): str(v) for k, v in env.items()})
            current["id"] = rid
            try:
                code = run_python_args(args)
            finally:
                current["id"] = None
        except KeyboardInterrupt:
            cancelled = True
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            note_modules(sandbox_n)
            os.environ.clear()
            os.environ.update(old_env)
            os.chdir(old_cwd)
            sys.argv = old_argv
            if sys.path:
                sys.path[0] = old_path0
    if cancelled:
        return {"requestId": rid, "wasCancelled": True, "exitCode": 130, "output": out.output}
    return {"requestId": rid, "exitCode": code, "output": out.output}


def send(obj):
    PROTOCOL_OUT.write(json.dumps(obj) + "\n")
    PROTOCOL_OUT.flush()


def reader(q, current):
    """Read requests; cancels act at once, the rest queue. EOF means exit."""
    stdin = io.TextIOWrapper(os.fdopen(os.dup(0), "rb"), encoding="utf-8")
    for line in stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
        except ValueError:
            print(f"mpw_worker: not a JSON request: {line[:200]!r}", file=sys.stderr)
            continue
        if req.get("cancel"):
            if current.get("id") == req.get("requestId", 0):
                _thread.interrupt_main()
            continue
        q.put(req)
    q.put(None)


def persistent(global_prefixes):
    global PROTOCOL_OUT
    # The protocol owns the real stdout; everything the tasks print goes elsewhere.
    PROTOCOL_OUT = io.TextIOWrapper(os.fdopen(os.dup(1), "wb"), encoding="utf-8", newline="\n")
    os.dup2(2, 1)
    sys.path.insert(0, os.getcwd())
    q = queue.Queue()
    current = {"id": None}
    threading.Thread(target=reader, args=(q, current), daemon=True).start()
    while True:
        try:
            req = q.get()
        except KeyboardInterrupt:  # a cancel that arrived between requests
            continue
        if req is None:
            return 0  # stdin closed: the coordinator is gone
        try:
            resp = handle(req, global_prefixes, current)
        except KeyboardInterrupt:
            resp = {"requestId": req.get("requestId", 0), "wasCancelled": True, "exitCode": 130, "output": ""}
        send(resp)


def main(argv):
    if argv and argv[0] == "--persistent_worker":
        prefixes, rest = split_options(argv[1:])
        if rest:
            print(f"mpw_worker: unexpected arguments {rest!r}", file=sys.stderr)
            return 2
        return persistent(prefixes)
    # One-shot: behave like `python ARGS`, for trying a task by hand.
    sys.path.insert(0, os.getcwd())
    prefixes, args = split_options(argv)
    return run_python_args(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
