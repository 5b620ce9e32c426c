#!/usr/bin/env python3
"""Draw peak RSS and time against file count from `bench/compare --json` results, as SVG.

    python3 bench/chart.py OUT.svg RESULT.json [RESULT.json ...]

Each RESULT.json is what `bench/compare --json FILE` wrote (one or more presets). One panel
for peak RSS (MiB) and one for time (s), both against the number of files on log scales; a
line per tool and step (warm runs). No dependencies: the SVG is written by hand.
"""
import json
import math
import sys

STEPS = ("full backup", "no-change backup", "verify --read-all", "full restore")
COLOURS = {"trayback": "#1f6feb", "restic": "#d1242f", "borg": "#8250df"}
DASH = {"full backup": "", "no-change backup": "6,3", "verify --read-all": "2,3", "full restore": "10,3,2,3"}
W, H, PAD = 460, 320, 56


def load(paths):
    """{(tool, step): [(files, seconds, rss)]} over every preset of every file."""
    series = {}
    for p in paths:
        for r in json.load(open(p)):
            for tool, step, mode, s, rss in r["steps"]:
                if mode == "warm" and step in STEPS:
                    series.setdefault((tool, step), []).append((r["files"], s, rss))
    return {k: sorted(v) for k, v in series.items()}


def panel(x0, title, series, pick, unit):
    pts = [(f, pick(s, rss)) for v in series.values() for f, s, rss in v if pick(s, rss) > 0]
    fx = [f for f, _ in pts]
    fy = [y for _, y in pts]
    lx0, lx1 = math.floor(math.log10(min(fx))), math.ceil(math.log10(max(fx)))
    ly0, ly1 = math.floor(math.log10(min(fy))), math.ceil(math.log10(max(fy)))
    lx1 = max(lx1, lx0 + 1)
    ly1 = max(ly1, ly0 + 1)

    def X(f):
        return x0 + PAD + (math.log10(f) - lx0) / (lx1 - lx0) * (W - 2 * PAD)

    def Y(v):
        return H - PAD - (math.log10(v) - ly0) / (ly1 - ly0) * (H - 2 * PAD)

    out = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{title}</text>',
           f'<rect x="{x0 + PAD}" y="{PAD}" width="{W - 2 * PAD}" height="{H - 2 * PAD}" fill="none" stroke="#888"/>']
    for e in range(lx0, lx1 + 1):
        out.append(f'<line x1="{X(10**e):.1f}" y1="{PAD}" x2="{X(10**e):.1f}" y2="{H - PAD}" stroke="#eee"/>')
        out.append(f'<text x="{X(10**e):.1f}" y="{H - PAD + 16}" text-anchor="middle">{10**e:,}</text>')
    for e in range(ly0, ly1 + 1):
        out.append(f'<line x1="{x0 + PAD}" y1="{Y(10**e):.1f}" x2="{x0 + W - PAD}" y2="{Y(10**e):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{x0 + PAD - 6}" y="{Y(10**e) + 4:.1f}" text-anchor="end">{10**e:g}</text>')
    out.append(f'<text x="{x0 + W / 2}" y="{H - 12}" text-anchor="middle">files</text>')
    out.append(f'<text x="{x0 + 14}" y="{H / 2}" text-anchor="middle" transform="rotate(-90 {x0 + 14} {H / 2})">{unit}</text>')
    for (tool, step), v in series.items():
        v = [(f, pick(s, rss)) for f, s, rss in v if pick(s, rss) > 0]
        d = " ".join(f"{X(f):.1f},{Y(y):.1f}" for f, y in v)
        dash = f' stroke-dasharray="{DASH[step]}"' if DASH[step] else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{COLOURS.get(tool, "#000")}" stroke-width="2"{dash}/>')
        for f, y in v:
            out.append(f'<circle cx="{X(f):.1f}" cy="{Y(y):.1f}" r="3" fill="{COLOURS.get(tool, "#000")}"/>')
    return out


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    series = load(sys.argv[2:])
    body = panel(0, "peak RSS", series, lambda s, rss: rss, "MiB")
    body += panel(W, "time (warm cache)", series, lambda s, rss: s, "seconds")
    tools = sorted({t for t, _ in series}, key=lambda t: list(COLOURS).index(t) if t in COLOURS else 9)
    y = H + 8
    legend = []
    for i, t in enumerate(tools):
        legend.append(f'<rect x="{PAD + i * 110}" y="{y}" width="14" height="4" fill="{COLOURS.get(t, "#000")}"/>'
                      f'<text x="{PAD + i * 110 + 20}" y="{y + 6}">{t}</text>')
    for i, s in enumerate(STEPS):
        dash = f' stroke-dasharray="{DASH[s]}"' if DASH[s] else ""
        legend.append(f'<line x1="{PAD + i * 200}" y1="{y + 22}" x2="{PAD + i * 200 + 30}" y2="{y + 22}" stroke="#333" stroke-width="2"{dash}/>'
                      f'<text x="{PAD + i * 200 + 36}" y="{y + 26}">{s}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 48}" font-family="sans-serif" font-size="11">'
           f'<rect width="100%" height="100%" fill="white"/>' + "".join(body + legend) + "</svg>\n")
    with open(sys.argv[1], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
