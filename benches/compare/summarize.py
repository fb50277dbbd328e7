#!/usr/bin/env python3
"""Summarize cycle.sh TSV output: medians per tool and phase, and pluto/restic ratios.

Usage: summarize.py RESULTS.tsv [...]
Ratios are computed per rep (pluto's run against restic's run of the same rep, made minutes
apart), then the median is taken; the machine is noisy, so ratios, not seconds, are compared.
"""
import csv
import statistics as st
import sys
from collections import defaultdict

MiB = 2 ** 20
rows = []
for fn in sys.argv[1:]:
    with open(fn) as f:
        rows += [r for r in csv.DictReader(f, delimiter="\t") if r["tool"] != "tool"]

data = defaultdict(lambda: defaultdict(dict))  # (tool, corpus) -> rep -> phase -> row
for r in rows:
    data[(r["tool"], r["corpus"])][r["rep"]][r["phase"]] = r


def med(xs):
    return st.median(xs) if xs else float("nan")


PHASES = [
    ("backup1", "first snapshot", 1 / 3),
    ("backup2", "no-change snapshot", 1 / 8),
    ("backup3", "snapshot after edit", 1 / 4),
    ("restore", "restore", 1 / 2.5),
    ("check_full", "check --read-data", 1 / 2.5),
]


def complete(reps):
    return {k: v for k, v in reps.items() if "check_full" in v}


def metric(ph, what):
    if what == "repo":
        return int(ph["backup1"]["repo_bytes"])
    if what == "growth":
        return int(ph["backup3"]["repo_bytes"]) - int(ph["backup2"]["repo_bytes"])
    if what == "rss":
        return int(ph["backup1"]["maxrss_kb"])
    if what.endswith("_rss"):
        return int(ph[what[:-4]]["maxrss_kb"])
    return float(ph[what]["elapsed_s"])


for corpus in sorted({c for _, c in data}):
    p = complete(data.get(("pluto", corpus), {}))
    r = complete(data.get(("restic", corpus), {}))
    reps = sorted(set(p) & set(r), key=int)
    print(f"\n### corpus `{corpus}` ({len(reps)} interleaved reps; medians)\n")
    print("| phase | restic | pluto | pluto/restic (median of per-rep ratios) | target | met |")
    print("|---|---|---|---|---|---|")
    for key, label, target in PHASES:
        rs = [metric(r[x], key) for x in reps]
        ps = [metric(p[x], key) for x in reps]
        ratios = [metric(p[x], key) / metric(r[x], key) for x in reps]
        q = med(ratios)
        print(f"| {label} (s) | {med(rs):.2f} | {med(ps):.2f} | {q:.3f} (1/{1 / q:.1f}) | "
              f"≤ 1/{1 / target:g} | {'yes' if q <= target else 'NO'} |")
    for key, label, unit in [("repo", "repository size after first snapshot", "MB"),
                             ("growth", "stored by the snapshot after the edit", "MB"),
                             ("rss", "peak RSS, first snapshot", "MB"),
                             ("restore_rss", "peak RSS, restore", "MB"),
                             ("check_full_rss", "peak RSS, check --read-data", "MB")]:
        div = 1e6 if key in ("repo", "growth") else 1e3
        rs = [metric(r[x], key) for x in reps]
        ps = [metric(p[x], key) for x in reps]
        ratios = [a / b for a, b in zip(ps, rs) if b]
        q = med(ratios)
        want = key in ("repo", "growth", "rss")
        met = ("yes" if q <= 1 else "NO") if want else "-"
        print(f"| {label} ({unit}) | {med(rs) / div:.1f} | {med(ps) / div:.1f} | {q:.3f} | "
              f"{'≤ 1' if want else '-'} | {met} |")
    print("\nCPU seconds (user+sys), medians:\n")
    print("| phase | restic | pluto |")
    print("|---|---|---|")
    for key, label, _ in PHASES:
        cpu = lambda d: med([float(d[x][key]["user_s"]) + float(d[x][key]["sys_s"]) for x in reps])
        print(f"| {label} | {cpu(r):.2f} | {cpu(p):.2f} |")
