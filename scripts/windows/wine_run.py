#!/usr/bin/env python3
"""Run a Windows program of this crate under Wine.

Used as cargo's runner for the Windows target (the unit tests under Wine):

    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=scripts/windows/wine_run.py \
        cargo test --target x86_64-pc-windows-gnu --lib

and imported by scripts/windows_e2e.py, so both run Wine the same way: one
prefix kept in the target dir, no debug noise, no Mono/Gecko prompts, and the
bcryptprimitives.dll shim (scripts/windows/bcryptprimitives.c) next to the
program, without which Debian's Wine 8 cannot start a Rust program.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SHIM_C = ROOT / "scripts" / "windows" / "bcryptprimitives.c"
TARGET_DIR = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# Creating a prefix costs ~20 s: keep one beside the build output.
PREFIX = TARGET_DIR / "wine-prefix"


def wine_binary():
    """Debian's 64-bit loader directly (the `wine` wrapper wants wine32)."""
    for cand in ("/usr/lib/wine/wine64", shutil.which("wine64"), shutil.which("wine")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def wine_env(base=None):
    env = dict(os.environ if base is None else base)
    env.update(
        WINEPREFIX=str(PREFIX),
        WINEDEBUG="-all",
        WINEDLLOVERRIDES="mscoree,mshtml=",
        LC_ALL="C.UTF-8",
    )
    env.pop("DISPLAY", None)
    return env


def ensure_shim(exe_dir: Path):
    """Build the ProcessPrng shim next to the programs in `exe_dir`."""
    dll = exe_dir / "bcryptprimitives.dll"
    if dll.exists() and dll.stat().st_mtime >= SHIM_C.stat().st_mtime:
        return dll
    tmp = dll.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run(
        ["x86_64-w64-mingw32-gcc", "-shared", "-O2", "-s", "-o", str(tmp), str(SHIM_C), "-ladvapi32"],
        check=True,
    )
    os.replace(tmp, dll)
    return dll


def start_server(env, persist=""):
    """Start this prefix's wineserver and its services, with stdio on
    /dev/null: a service started by a program whose output is a pipe inherits
    that pipe and keeps it open, and its reader never sees the end. The server
    stays `persist` seconds after its last program ("": until `wineserver -k`)."""
    PREFIX.mkdir(parents=True, exist_ok=True)
    quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Exits 2 when the server already runs: fine.
    subprocess.run(["wineserver", f"-p{persist}"], env=env, **quiet)
    subprocess.run([wine_binary(), "wineboot"], env=env, check=True, **quiet)


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: wine_run.py PROGRAM.exe [ARGS...]")
    wine = wine_binary()
    if wine is None:
        sys.exit("wine_run.py: no wine64 (apt-get install wine64)")
    exe = Path(sys.argv[1]).resolve()
    ensure_shim(exe.parent)
    env = wine_env()
    start_server(env, persist="60")
    os.execvpe(wine, [wine, str(exe), *sys.argv[2:]], env)


if __name__ == "__main__":
    main()
