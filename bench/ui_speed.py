#!/usr/bin/env python3
"""How fast the web interface answers on a large medium (issue 12: each page under 200 ms
with 2 000 backups of 200 000 files each).

    python3 bench/ui_speed.py [--files 200000] [--backups 2000] [--workdir DIR] [--runs 5]

Makes a tree of FILES small files (bench.py's many-small kind: 100 files a directory),
enrols an (encrypted) directory medium, and makes BACKUPS backups with the real binary on
the spec's schedule: one every 15 minutes, of the kind the medium's tree says is due, micros
kept for the month (see make()); before each, one file in a rotating directory changes.
Then starts `trayback ui --medium`, logs in as a browser does (token, cookie, page key) and
times each page's requests (the first, then the median of RUNS more; wall clock, one request
at a time). With --workdir, a medium already made there is reused.
"""
import argparse
import datetime as dt
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("TRAYBACK_BIN", os.path.join(ROOT, "target", "release", "trayback"))


def run(args, env):
    r = subprocess.run([BIN] + args, env=env, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        sys.exit(f"trayback {' '.join(args)} failed ({r.returncode}): {r.stderr}")
    return r.stdout


def make_tree(src, files):
    for i in range(files):
        d = os.path.join(src, f"d{i // 10000:02d}", f"s{i // 100:04d}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:06d}.txt"), "w") as f:
            f.write(f"file {i}\n")


def make(work, files, backups, env):
    """The spec's schedule: a backup every 15 minutes, of the kind the medium's tree says is due
    (a monthly first, then a daily a day later, a weekly a week later, micros between), micros
    kept for the month (the spec's [0035] month "assuming no deletions": 2 000 backups are three
    weeks of it). Before each backup one file in a rotating directory changes."""
    src = os.path.join(work, "src")
    medium = os.path.join(work, "medium")
    if not os.path.exists(src):
        make_tree(src, files)
    os.makedirs(medium)
    config = os.path.join(work, "config.yaml")
    with open(config, "w") as f:
        f.write("pare:\n  micro_max_age_days: 31\n")
    run(["media", "init", medium, "--label", "Speed"], env)
    t = dt.datetime(2026, 1, 1, 9, 0)
    t0 = time.time()
    for n in range(backups):
        at = t + dt.timedelta(minutes=15 * n)
        i = (n * 7919) % files
        p = os.path.join(src, f"d{i // 10000:02d}", f"s{i // 100:04d}", f"f{i:06d}.txt")
        with open(p, "a") as f:
            f.write(f"changed before backup {n}\n")
        run(["backup", "--config", config, "--medium", medium, "--source", src,
             "--at", at.strftime("%Y-%m-%d %H:%M")], env)
        if (n + 1) % 100 == 0:
            print(f"  {n + 1} backups, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return src, medium


class Session:
    def __init__(self, host, login):
        self.host = host
        c = http.client.HTTPConnection(host)
        c.request("GET", login)
        r = c.getresponse()
        r.read()
        self.cookie = r.getheader("Set-Cookie").split(";")[0]
        self.key = r.getheader("Location").split("#key=")[1]

    def get(self, path):
        c = http.client.HTTPConnection(self.host)
        c.request("GET", path, headers={"Cookie": self.cookie, "X-Trayback-Key": self.key})
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            sys.exit(f"GET {path}: {r.status} {body[:300]!r}")
        return body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=200000)
    ap.add_argument("--backups", type=int, default=2000)
    ap.add_argument("--workdir")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    work = a.workdir or tempfile.mkdtemp(prefix="trayback-ui-speed-")
    env = dict(os.environ, TRAYBACK_STATE_DIR=os.path.join(work, "state"), TRAYBACK_LOG="warn")
    if os.path.exists(os.path.join(work, "medium")):
        src, medium = os.path.join(work, "src"), os.path.join(work, "medium")
    else:
        os.makedirs(work, exist_ok=True)
        src, medium = make(work, a.files, a.backups, env)
    listing = json.loads(run(["list", "--medium", medium, "--json"], env))
    ui = subprocess.Popen([BIN, "ui", "--print-url", "--listen", "127.0.0.1:0", "--medium", medium,
                           "--socket", os.path.join(work, "no-agent.sock")],
                          env=env, stdout=subprocess.PIPE, text=True)
    try:
        login = ui.stdout.readline().split()[1]
        host = login.split("/")[2]
        s = Session(host, "/" + login.split("/", 3)[3])
        mid = json.loads(s.get("/api/trays"))["trays"][0]["media_id"]
        newest = max(b["id"] for b in listing)
        some = os.path.join(src, "d00", "s0000", "f000000.txt")
        q = urllib.parse.quote
        pages = [
            ("trays", "/api/trays"),
            ("tree (tree, time line, pare plan)", f"/api/media/{mid}/tree"),
            ("files: a directory of 100", f"/api/media/{mid}/ls?backup={newest}&path={q(os.path.dirname(some))}"),
            ("files: the top directory", f"/api/media/{mid}/ls?backup={newest}&path=/"),
            ("versions of one file", f"/api/media/{mid}/versions?path={q(some)}"),
            ("search a name", f"/api/media/{mid}/search?q=f000042"),
            ("space (the forecast computed in the background)", f"/api/media/{mid}/space"),
        ]
        print(f"{len(listing)} backups of {a.files} files; the first request, then the median of {a.runs} more")
        print("| request | first ms | ms | bytes |")
        print("|---|---:|---:|---:|")
        for name, path in pages:
            times = []
            for _ in range(a.runs + 1):
                t0 = time.perf_counter()
                body = s.get(path)
                times.append((time.perf_counter() - t0) * 1000)
            print(f"| {name} | {times[0]:.0f} | {statistics.median(times[1:]):.0f} | {len(body)} |")
            if name.startswith("space"):
                # The first request started the half-year simulation; how long until the
                # page has it (it asks again each second; here every 50 ms).
                t0 = time.perf_counter()
                while json.loads(s.get(path))["forecast"] is None:
                    time.sleep(0.05)
                print(f"| space: the forecast there after | {(time.perf_counter() - t0) * 1000:.0f} | | |")
    finally:
        ui.terminate()
        ui.wait()


if __name__ == "__main__":
    main()
