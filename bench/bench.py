#!/usr/bin/env python3
"""trayback benchmark: one command, a generated deterministic tree, real runs of the binary.

    python3 bench/bench.py [--preset mixed|many-small|two-million|smoke] [--smoke] [--workdir DIR]
                           [--cold] [--plaintext | --encryption-cost N] [--json]

Steps (each a fresh process, timed wall-clock, peak RSS from GNU time):
  full backup (monthly), no-change incremental (micro), 1%-change incremental (micro),
  full restore; plus the medium's size and the bare-walk / bare-read references.
With --cold (root), the page cache is dropped before each step as well. The medium is
encrypted (the shipped default) unless --plaintext. --encryption-cost N runs the steps N times
on a plaintext and an encrypted medium alternately and prints the medians side by side, wall
clock (and the fastest run of each) and CPU time (user + system): what encryption costs.
The tree is generated from a fixed seed, so every run measures the same data.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESETS = {
    # name: (small text files, medium binaries, large partly compressible, dirs)
    "smoke": dict(text=400, medium=40, large=1, large_mb=8, medium_kb=256, dirs=20),
    "mixed": dict(text=18000, medium=1800, large=6, large_mb=140, medium_kb=160, dirs=600),
    "many-small": dict(text=200000, medium=0, large=0, large_mb=0, medium_kb=0, dirs=4000),
    "compare-smoke": dict(text=300, medium=20, large=1, large_mb=4, medium_kb=128, dirs=10),
    # 2 000 000 small text files (5–100 words) in 40 000 directories, 50 a directory: about
    # 0.6 GB of content, 8 GB on ext4 (one 4 KiB block a file) and 2 M inodes.
    "two-million": dict(text=2000000, medium=0, large=0, large_mb=0, medium_kb=0, dirs=40000, words=100),
}
WORDS = ("backup tray medium verify restore block pack index listing monthly weekly daily micro "
         "the of and to in is that for it as with was on be by this are or from at").split()


def gen_text(rng, n):
    return (" ".join(rng.choice(WORDS) for _ in range(n)) + "\n").encode()


def generate(dest, p, seed=42, reuse=False):
    """Write the preset's tree at dest; returns its regular files (symlinks and extra hard
    links aside). With `reuse`, a tree this function wrote before for the same preset is kept
    (what `mutate` changed in it is put back first): a 2-million-file tree takes ~10 minutes."""
    stamp = dest + ".stamp"
    want = repr(sorted(p.items())) + f" seed={seed}"
    if reuse and os.path.exists(stamp) and open(stamp).read() == want:
        unmutate(dest)
        return [path for _, path in paths(dest, p)]
    rng = random.Random(seed)
    for f in (stamp, dest + ".undo"):
        if os.path.exists(f):
            os.remove(f)
    if os.path.exists(dest):
        shutil.rmtree(dest)
    dirs = tree_dirs(dest, p)
    for d in dirs:
        os.makedirs(d, exist_ok=True)
    files = []
    for kind, path in paths(dest, p):
        with open(path, "wb") as f:
            if kind == "text":
                f.write(gen_text(rng, rng.randint(5, p.get("words", 400))))
            elif kind == "medium":
                f.write(rng.randbytes(rng.randint(p["medium_kb"] // 4, p["medium_kb"]) * 1024))
            else:
                for _ in range(p["large_mb"]):
                    # half random, half text: partly compressible
                    f.write(rng.randbytes(512 * 1024))
                    f.write((gen_text(rng, 20000) * 8)[: 512 * 1024])
        files.append(path)
    for i in range(min(200, len(files) // 10)):
        os.symlink(os.path.relpath(files[i], dirs[i % len(dirs)]), os.path.join(dirs[i % len(dirs)], f"link{i}"))
    for i in range(min(100, len(files) // 20)):
        os.link(files[-1 - i], files[-1 - i] + ".hl")
    with open(stamp, "w") as f:
        f.write(want)
    return files


def tree_dirs(dest, p):
    return [os.path.join(dest, f"d{i // 50:03d}", f"s{i:04d}") for i in range(p["dirs"])]


def paths(dest, p):
    """The preset's regular files, in the order `generate` writes them: (kind, path)."""
    dirs = tree_dirs(dest, p)
    for i in range(p["text"]):
        yield "text", os.path.join(dirs[i % len(dirs)], f"t{i:06d}.txt")
    for i in range(p["medium"]):
        yield "medium", os.path.join(dirs[(i * 7) % len(dirs)], f"m{i:05d}.bin")
    for i in range(p["large"]):
        yield "large", os.path.join(dest, f"large{i}.img")


def mutate(files, fraction=0.01, seed=7, count=None, undo=None):
    """Change `fraction` of the files (or `count` of them): text files get a line, binaries a
    rewritten 64 KiB. Returns the bytes written. With `undo` (a file name), what is needed to
    put the files back is appended there (see `unmutate`)."""
    rng = random.Random(seed)
    written, saved = 0, []
    for path in rng.sample(files, count or max(1, int(len(files) * fraction))):
        size = os.path.getsize(path)
        if path.endswith(".txt"):
            line = gen_text(rng, 20)
            saved.append((path, size, None, None))
            with open(path, "ab") as f:
                f.write(line)
            written += len(line)
        else:
            with open(path, "r+b") as f:
                at = rng.randrange(0, max(1, size - 65536))
                f.seek(at)
                old = f.read(min(65536, size))
                f.seek(at)
                f.write(rng.randbytes(min(65536, size)))
            saved.append((path, size, at, old))
            written += min(65536, size)
    if undo:
        import pickle
        with open(undo, "ab") as f:
            pickle.dump(saved, f)
    return written


def unmutate(dest):
    """Put back what `mutate` changed under dest (its undo file), newest change first."""
    import pickle
    undo = dest + ".undo"
    if not os.path.exists(undo):
        return
    batches = []
    with open(undo, "rb") as f:
        while True:
            try:
                batches.append(pickle.load(f))
            except EOFError:
                break
    for batch in reversed(batches):
        for path, size, at, old in reversed(batch):
            with open(path, "r+b") as f:
                if old is not None:
                    f.seek(at)
                    f.write(old)
                f.truncate(size)
    os.remove(undo)


def drop_caches():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


CPU = {}  # command line -> CPU seconds (user + system) of its last run


def run(cmd, cold=False, env=None, who="bench"):
    """Run cmd; return (seconds, peak RSS in MiB). Its CPU time is left in CPU. The peak
    comes from GNU time, which forks cmd from its own small process: a child forked from this
    script would count the script's own RSS at the fork (Linux carries the parent's
    high-water mark over `fork` and `exec` into `ru_maxrss`), ~500 MiB at 2 000 000 files'
    worth of paths."""
    if cold:
        drop_caches()
    else:
        # What the steps before wrote (a restore, a tree removed after it) is flushed first:
        # a step that syncs its own writes would otherwise also wait for theirs.
        os.sync()
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), f".rss-{os.getpid()}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", out, *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env)
    _, status, rusage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    err = proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        sys.exit(f"{who}: {' '.join(cmd)} failed ({code}):\n{err[-3000:]}")
    CPU[" ".join(cmd)] = rusage.ru_utime + rusage.ru_stime
    with open(out) as f:
        rss_kib = int(f.read().split()[-1])
    os.remove(out)
    return elapsed, rss_kib / 1024


def du(path):
    """Bytes of the files under path, each inode counted once."""
    total, seen = 0, set()
    for root, _, names in os.walk(path):
        for n in names:
            st = os.lstat(os.path.join(root, n))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def bench_trayback(binary, src, work, files, cold, plaintext=False):
    medium = os.path.join(work, "medium")
    restore = os.path.join(work, "restore")
    for d in (medium, restore):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(medium)
    # The medium's key stays with the benchmark, not in the host's state directory.
    os.environ["TRAYBACK_STATE_DIR"] = os.path.join(work, "state")
    init = [binary, "media", "init", medium, "--label", "bench"] + (["--plaintext"] if plaintext else [])
    subprocess.run(init, check=True, stdout=subprocess.DEVNULL)
    backup = [binary, "backup", "--medium", medium, "--source", src]
    rows = {}
    cpu = {}

    def step(name, cmd):
        rows[name] = run(cmd, cold)
        cpu[name] = CPU[" ".join(cmd)]

    step("full backup", backup + ["--kind", "monthly"])
    step("no-change backup", backup + ["--kind", "micro"])
    mutate(files)
    step("1%-change backup", backup + ["--kind", "micro"])
    step("full restore", [binary, "restore", "--medium", medium, "--to", restore])
    bench_trayback.cpu = cpu
    size = du(os.path.join(medium, "trayback"))
    # Check the restore really reproduced the source (content and names).
    restored = os.path.join(restore, src.lstrip("/"))
    out = subprocess.run(["diff", "-r", "--no-dereference", src, restored], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench: restored tree differs from the source:\n{out.stdout[:2000]}")
    return rows, size


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mixed", choices=sorted(PRESETS))
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI (preset smoke)")
    ap.add_argument("--workdir", default="/tmp/trayback-bench")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each step (root)")
    ap.add_argument("--binary", default=os.path.join(ROOT, "target/release/trayback"))
    ap.add_argument("--plaintext", action="store_true", help="a plaintext medium (default: encrypted)")
    ap.add_argument("--encryption-cost", type=int, metavar="N", help="N alternating runs, plaintext vs encrypted")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    preset = "smoke" if a.smoke else a.preset
    if not os.path.exists(a.binary):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    os.makedirs(a.workdir, exist_ok=True)
    src = os.path.join(a.workdir, "src-" + preset)
    t0 = time.perf_counter()
    files = generate(src, PRESETS[preset])
    data = du(src)
    gen_s = time.perf_counter() - t0
    if a.encryption_cost:
        encryption_cost(a, src, files, a.encryption_cost)
        return
    walk = run(["find", src, "-printf", ""], a.cold)
    read = run(["sh", "-c", f"find {src} -type f -print0 | xargs -0 cat > /dev/null"], a.cold)
    rows, size = bench_trayback(a.binary, src, a.workdir, files, a.cold, a.plaintext)
    result = {
        "preset": preset, "files": len(files), "bytes": data, "cold": a.cold,
        "encrypted": not a.plaintext,
        "bare walk s": round(walk[0], 3), "bare read s": round(read[0], 3),
        "steps": {k: {"seconds": round(v[0], 3), "peak_rss_mib": round(v[1], 1)} for k, v in rows.items()},
        "medium bytes": size,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"trayback bench: preset {preset}, {len(files)} files, {data / 2**20:.1f} MiB "
          f"(generated in {gen_s:.1f}s), {'cold' if a.cold else 'warm'} cache, "
          f"{'plaintext' if a.plaintext else 'encrypted'} medium")
    print(f"| step | seconds | peak RSS MiB |\n|---|---:|---:|")
    print(f"| bare walk (find) | {walk[0]:.2f} | |\n| bare read (cat) | {read[0]:.2f} | |")
    for k, (s, rss) in rows.items():
        print(f"| {k} | {s:.2f} | {rss:.0f} |")
    print(f"| medium size | {size / 2**20:.1f} MiB | |")
    if a.smoke:
        print("bench smoke: ok")


def encryption_cost(a, src, files, n):
    import statistics
    runs = {"plaintext": [], "encrypted": []}
    for _ in range(n):
        for mode in runs:
            rows, _ = bench_trayback(a.binary, src, a.workdir, files, a.cold, mode == "plaintext")
            runs[mode].append((rows, bench_trayback.cpu))
    med = {m: {k: (statistics.median(r[0][k][0] for r in rs), statistics.median(r[1][k] for r in rs),
                   min(r[0][k][0] for r in rs))
               for k in rs[0][0]} for m, rs in runs.items()}
    print(f"trayback encryption cost: preset {a.preset}, {n} alternating runs each, medians "
          f"(and the fastest run: on a shared machine, the closest to an uncontended one), "
          f"{'cold' if a.cold else 'warm'} cache")
    print("| step | plaintext s | encrypted s | wall | fastest plaintext s | fastest encrypted s | fastest "
          "| plaintext CPU s | encrypted CPU s | CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pct = lambda e, p: f"{100 * (e / p - 1):+.0f}%"
    for k in med["plaintext"]:
        (pw, pc, pb), (ew, ec, eb) = med["plaintext"][k], med["encrypted"][k]
        print(f"| {k} | {pw:.3f} | {ew:.3f} | {pct(ew, pw)} | {pb:.3f} | {eb:.3f} | {pct(eb, pb)} | "
              f"{pc:.3f} | {ec:.3f} | {pct(ec, pc)} |")


if __name__ == "__main__":
    main()
