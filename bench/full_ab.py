#!/usr/bin/env python3
"""Full-backup time and medium size of two trayback binaries on the same tree, alternated.

    bench/full_ab.py A_BINARY B_BINARY [--preset mixed] [--runs 5] [--workdir DIR] [--plaintext]

The tree is generated once (bench.py's presets, fixed seed) and read once before each
backup (warm page cache). Each run makes a fresh medium for each binary, A then B on odd
runs and B then A on even ones, and times `backup --kind monthly`. Prints every run and the
medians, so the noise of a shared machine shows next to the difference.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def one(binary, src, work, plaintext):
    med = os.path.join(work, "medium")
    shutil.rmtree(med, ignore_errors=True)
    os.makedirs(med)
    env = dict(os.environ, TRAYBACK_STATE_DIR=os.path.join(work, "state"), TRAYBACK_LOG="error")
    init = [binary, "media", "init", med, "--label", "ab"] + (["--plaintext"] if plaintext else [])
    subprocess.run(init, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    subprocess.run(["sh", "-c", f"find {src} -type f -print0 | xargs -0 cat > /dev/null"], check=True)
    t0 = bench.time.perf_counter()
    p = subprocess.Popen([binary, "backup", "--medium", med, "--source", src, "--kind", "monthly"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, ru = os.wait4(p.pid, 0)
    dt = bench.time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) not in (0, 3):
        sys.exit(f"full_ab: {binary} failed:\n{p.stderr.read().decode()[-2000:]}")
    return dt, ru.ru_utime + ru.ru_stime, bench.du(med)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--preset", default="mixed", choices=sorted(bench.PRESETS))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workdir", default="/tmp/trayback-full-ab")
    ap.add_argument("--plaintext", action="store_true")
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    src = os.path.join(a.workdir, "src-" + a.preset)
    if not os.path.exists(os.path.join(src, ".done")):
        bench.generate(src, bench.PRESETS[a.preset])
        open(os.path.join(src, ".done"), "w").close()
    times = {a.a: [], a.b: []}
    cpus = {a.a: [], a.b: []}
    sizes = {}
    for r in range(a.runs):
        order = [a.a, a.b] if r % 2 == 0 else [a.b, a.a]
        for binary in order:
            dt, cpu, size = one(binary, src, a.workdir, a.plaintext)
            times[binary].append(dt)
            cpus[binary].append(cpu)
            sizes[binary] = size
            print(f"run {r + 1} {binary}: {dt:.2f} s, CPU {cpu:.2f} s, medium {size / 2**20:.1f} MiB", flush=True)
    for binary in (a.a, a.b):
        t, c = times[binary], cpus[binary]
        print(f"{binary}: median {statistics.median(t):.2f} s (min {min(t):.2f}, max {max(t):.2f}), "
              f"CPU median {statistics.median(c):.2f} s (min {min(c):.2f}), medium {sizes[binary] / 2**20:.1f} MiB")
    for what, d in (("time", times), ("fastest", {k: [min(v)] for k, v in times.items()}), ("CPU", cpus)):
        print(f"B/A median {what}: {statistics.median(d[a.b]) / statistics.median(d[a.a]):.3f}")


if __name__ == "__main__":
    main()
