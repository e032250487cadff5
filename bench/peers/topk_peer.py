"""torch.topk on the same shapes as the Top-k columns of `kascade bench attention --kascade` (issue 15 §5).

    python3 bench/peers/topk_peer.py --contexts 32768,65536,131072 --topk-percent 10

Random fp32 scores [rows, context] on the GPU, k = TopKBudget.For(context, p) (max(128, floor(p% · n)) rounded up to
128, at most n), torch.topk(dim=-1, sorted=False) — the unsorted set, as our kernels write it. Rows: the 8 KV heads of
a decode step and the 512 rows of issue 15 §5. CUDA events, L2 flushed by reading 256 MiB before every run, median of
the runs (as sdpa_peer.py and kascade bench). Prints Markdown rows: | implementation | rows | context | k | ms |.
"""
import argparse
import math

import torch

from gpu_timing import time_ms


def budget(n, percent):
    raw = max(128, math.floor(percent / 100.0 * n))
    return min(n, (raw + 127) // 128 * 128)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="32768,65536,131072")
    ap.add_argument("--topk-percent", type=float, default=10)
    ap.add_argument("--rows", default="8,512")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}; torch.topk(sorted=False) on fp32 rows, L2 flushed, median of {args.runs}")
    print()
    print("| implementation | rows | context | k | ms |")
    print("|---|---:|---:|---:|---:|")
    for context in (int(c) for c in args.contexts.split(",")):
        k = budget(context, args.topk_percent)
        for rows in (int(r) for r in args.rows.split(",")):
            scores = torch.rand(rows, context, device="cuda", dtype=torch.float32)
            ms = time_ms(lambda: torch.topk(scores, k, dim=-1, sorted=False), args.runs, 3, "read")
            print(f"| torch.topk | {rows} | {context} | {k} | {ms:.4f} |")


if __name__ == "__main__":
    main()
