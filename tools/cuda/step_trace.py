# Where one recorded decode step's time goes, from a kernel trace CSV with Start, Duration (ns) and Name columns
# (ktrace.c's, or nsys's cuda_gpu_trace): the step is the second-to-last run of kernels starting at embed_bf16. Prints
# its wall and busy time, per-kernel totals, what each kernel adds to the wall, each layer's time and two layers' kernels
# with each one's start against the end of the one before. Usage: step_trace.py TRACE.csv [LABEL]
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
def col(r, *keys):
    for k in keys:
        for name in r:
            if name.startswith(k): return r[name]
    raise KeyError(keys)
ks = []
for r in rows:
    name = col(r, "Name")
    try: start = int(col(r, "Start")); dur = int(col(r, "Duration"))
    except ValueError: continue
    if "[" in name and "memcpy" in name.lower(): continue
    ks.append((start, dur, name.split("(")[0].strip()))
ks.sort()
marks = [i for i, k in enumerate(ks) if k[2] == "embed_bf16"]
if len(marks) < 3: print("fewer than 3 steps"); sys.exit()
step = ks[marks[-2]:marks[-1]]
wall = step[-1][0] + step[-1][1] - step[0][0]
busy, end = 0, step[0][0]
gaps = []
for s, d, n in step:
    if s > end: gaps.append((s - end, n))
    busy += max(0, s + d - max(s, end)); end = max(end, s + d)
print(f"{sys.argv[2] if len(sys.argv) > 2 else ''} step: {len(step)} kernels, wall {wall/1e3:.1f} us, busy {busy/1e3:.1f} us, idle {sum(g for g,_ in gaps)/1e3:.1f} us in {len(gaps)} gaps, sum of durations {sum(d for _,d,_ in step)/1e3:.1f} us")
tot = collections.defaultdict(lambda: [0, 0])
for s, d, n in step: tot[n][0] += d; tot[n][1] += 1
for n, (d, c) in sorted(tot.items(), key=lambda x: -x[1][0]): print(f"  {n:32s} {c:4d} x {d/c/1e3:8.2f} us = {d/1e3:9.1f} us")
# What each kernel adds to the step: its end past the latest end before it (programmatic dependents start early and
# wait inside, so their durations overlap; these increments sum to the wall time).
inc = collections.defaultdict(float); last = step[0][0]
for s, d, n in step: inc[n] += max(0, s + d - last); last = max(last, s + d)
print("  added to the step's wall:", ", ".join(f"{n} {v/1e3:.1f}" for n, v in sorted(inc.items(), key=lambda x: -x[1])))
g = collections.defaultdict(lambda: [0, 0])
for gap, n in gaps: g[n][0] += gap; g[n][1] += 1
print("  idle before:", ", ".join(f"{n} {v[0]/1e3:.1f} us/{v[1]}" for n, v in sorted(g.items(), key=lambda x: -x[1][0])[:8]))
# Each layer runs one gate/up GEMV (gemv_swiglu, in every layer of every method whatever else is fused), so they mark
# the layers; two middle layers (the kernels after the 6th gemv_swiglu up to the 8th: each span starts with the previous
# layer's down projection), each kernel's start against the previous kernel's end (negative: launched early, as a
# programmatic dependent).
mlps = [i for i, k in enumerate(step) if k[2].startswith("gemv_swiglu")]
print("  layers (gemv_swiglu to gemv_swiglu, us):", " ".join(f"{(step[b][0] - step[a][0])/1e3:.0f}" for a, b in zip(mlps, mlps[1:])))
if len(mlps) > 7:
    prev_end = step[mlps[5]][0] + step[mlps[5]][1]
    for s, d, n in step[mlps[5] + 1:mlps[7] + 1]:
        print(f"    {n:32s} start {(s - prev_end)/1e3:+7.2f} us after the previous end, {d/1e3:7.2f} us"); prev_end = s + d
