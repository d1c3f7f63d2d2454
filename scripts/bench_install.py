#!/usr/bin/env python3
"""What `cargo install --locked --path .` costs, before and after the release
profile trimming (README "Install"), side by side in one run.

Each side is a clean release build of this checkout's HEAD in its own
temporary target directory (what `cargo install` does), timed as wall clock
and as CPU seconds (user + sys of cargo and every rustc/linker under it, so a
busy machine inflates both sides alike). "before" is HEAD with the release
profile as it was when the install issue was filed: line tables for every
crate, no compression of debug sections, clap's `env` feature.

    scripts/bench_install.py            # both sides, one after the other
    scripts/bench_install.py --only after
"""

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MIB = 1024 * 1024


def export_head(dest):
    """HEAD's tracked files, as a fresh clone would have them."""
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)


def make_before(src):
    """Undo the trimming: the issue's release profile, no build script."""
    path = os.path.join(src, "Cargo.toml")
    text = open(path).read()
    text = re.sub(r"\[profile\.release\].*", "", text, flags=re.S)
    text += '[profile.release]\ndebug = "line-tables-only"\n'
    text = text.replace('features = ["derive"] }', 'features = ["derive", "env"] }', 1)
    open(path, "w").write(text)
    os.remove(os.path.join(src, "build.rs"))


def sections(binary):
    """name -> bytes in the file (a compressed section counts compressed)."""
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        cols = line.replace("[ ", "[").split()
        if len(cols) > 5 and cols[0].startswith("[") and cols[0] != "[Nr]":
            found[cols[1]] = int(cols[5], 16)
    return found


def build(side, keep):
    work = tempfile.mkdtemp(prefix=f"mpw-install-{side}-")
    try:
        src = os.path.join(work, "src")
        os.mkdir(src)
        export_head(src)
        if side == "before":
            make_before(src)
        env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(work, "target"))
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.monotonic()
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "--quiet"],
            cwd=src, env=env, check=True,
        )
        wall = time.monotonic() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        binary = os.path.join(work, "target", "release", "mpw")
        size = os.path.getsize(binary)
        found = sections(binary)
        dbg = sum(v for k, v in found.items() if k.startswith(".debug"))
        backtrace = ".debug_line" in found
        if keep:
            shutil.copy(binary, os.path.join(keep, f"mpw-{side}"))
        return dict(side=side, wall=wall, cpu=cpu, size=size, debug=dbg, lines=backtrace)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["before", "after"])
    ap.add_argument("--keep", help="copy each binary into this folder")
    args = ap.parse_args()
    sides = [args.only] if args.only else ["before", "after"]
    rows = []
    for side in sides:
        print(f"building {side} ...", file=sys.stderr, flush=True)
        rows.append(build(side, args.keep))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end")
    print("| side | binary | of which debug sections | line tables | clean build wall | CPU (user+sys) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        dbg = f"{r['debug'] / MIB:.1f} MiB"
        print(
            f"| {r['side']} | {r['size']:,} bytes ({r['size'] / MIB:.1f} MiB) | {dbg} | "
            f"{'yes' if r['lines'] else 'no'} | {r['wall'] / 60:.1f} min | {r['cpu'] / 60:.1f} min |"
        )
    if len(rows) == 2:
        b, a = rows
        print(f"after/before: size {a['size'] / b['size']:.2f}x, wall {a['wall'] / b['wall']:.2f}x, "
              f"CPU {a['cpu'] / b['cpu']:.2f}x")


if __name__ == "__main__":
    main()
