#!/usr/bin/env python3
"""What an insertion into a large file costs the next backup (issue 13's target).

    bench/insert.py [--binary B] [--size-mib 1024] [--workdir DIR] [--plaintext]

Makes a file of SIZE MiB (alternating MiB of random bytes and of repeated text, as a mailbox
or a database dump is: partly compressible), backs it up (monthly), then inserts 100 bytes at
the front, in the middle and at the end, with a micro backup after each, and prints what
each backup added to the medium (its header's bytes new and stored, and the medium's growth
on disk). The target: at most 2 MiB new after each insertion.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True, check=True).stdout.split()[0])


def insert(path, at, what):
    """Insert `what` at byte `at`, rewriting only from there on (the file may be large)."""
    tmp = path + ".tail"
    with open(path, "rb") as f, open(tmp, "wb") as t:
        f.seek(at)
        shutil.copyfileobj(f, t, 1 << 20)
    with open(path, "r+b") as f, open(tmp, "rb") as t:
        f.seek(at)
        f.write(what)
        shutil.copyfileobj(t, f, 1 << 20)
    os.unlink(tmp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/trayback"))
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--workdir", default="/tmp/trayback-insert")
    ap.add_argument("--plaintext", action="store_true")
    a = ap.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    src, med = os.path.join(a.workdir, "src"), os.path.join(a.workdir, "medium")
    os.makedirs(src)
    os.makedirs(med)
    env = dict(os.environ, TRAYBACK_STATE_DIR=os.path.join(a.workdir, "state"), TRAYBACK_LOG="error")
    big = os.path.join(src, "mail.box")
    with open(big, "wb") as f:
        for i in range(a.size_mib):
            if i % 2 == 0:
                f.write(os.urandom(1 << 20))
            else:
                f.write((f"From: someone@example.org message {i}\n".encode() * 30000)[: 1 << 20])
    init = [a.binary, "media", "init", med, "--label", "insert"] + (["--plaintext"] if a.plaintext else [])
    subprocess.run(init, check=True, stdout=subprocess.DEVNULL, env=env)

    def backup(kind):
        before = du(med)
        t0 = time.perf_counter()
        out = subprocess.run([a.binary, "backup", "--medium", med, "--source", src, "--kind", kind, "--json"],
                             capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if out.returncode not in (0, 3):
            sys.exit(f"insert: backup failed:\n{out.stderr[-2000:]}")
        h = json.loads(out.stdout)["backup"]
        return h, du(med) - before, dt

    h, grew, dt = backup("monthly")
    print(f"{a.size_mib} MiB file, full backup: {dt:.1f} s, medium {du(med) / 2**20:.1f} MiB")
    print("| 100 bytes inserted at | bytes new | bytes stored | medium grew | backup s |")
    print("|---|---:|---:|---:|---:|")
    size = os.path.getsize(big)
    for name, at in (("front", 0), ("middle", size // 2), ("end", size + 100)):
        insert(big, at, b"+" * 100)
        h, grew, dt = backup("micro")
        b = h.get("bytes", {})
        print(f"| {name} | {b.get('new', '?')} | {b.get('stored', '?')} | {grew} | {dt:.1f} |")
    shutil.rmtree(a.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
