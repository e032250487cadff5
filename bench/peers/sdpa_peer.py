"""PyTorch scaled_dot_product_attention on the same GPU and shapes as `kascade bench attention` (DESIGN §7).

    python3 bench/peers/sdpa_peer.py --phase decode --contexts 8192,32768,131072

bf16, batch 1, 32 query heads / 8 KV heads / head dim 128 by default (enable_gqa), cuDNN and flash backends;
CUDA events, L2 flushed before every run by reading a 256 MiB buffer (--l2-flush read, as `kascade bench attention`
does: the cache holds clean lines) or writing it (--l2-flush write: dirty lines the timed kernel writes back), median
of the runs. Decode also times one read of K and V (a torch sum over them): the streaming ceiling of a kernel that
reads each byte once. Prints Markdown rows matching the kascade table: | implementation | phase | batch | context |
ms | throughput |.
"""
import argparse

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from gpu_timing import time_ms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", choices=["decode", "prefill"], default="decode")
    ap.add_argument("--contexts", default="8192,32768,131072")
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1, help="decode: sequences, each with its own cache")
    ap.add_argument("--l2-flush", choices=["read", "write"], default="read")
    a = ap.parse_args()
    torch.manual_seed(0)
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}; L2 flushed by {a.l2_flush}ing 256 MiB")
    for ctx in [int(c) for c in a.contexts.split(",")]:
        tokens, batch = (1, a.batch) if a.phase == "decode" else (ctx, 1)
        runs = a.runs if a.phase == "decode" else max(3, a.runs // 5)
        q = torch.randn(batch, a.heads, tokens, a.head_dim, device="cuda", dtype=torch.bfloat16)
        kv = torch.randn(2, batch, a.kv_heads, ctx, a.head_dim, device="cuda", dtype=torch.bfloat16)
        k, v = kv[0], kv[1]
        cases = [("pytorch sdpa cudnn", SDPBackend.CUDNN_ATTENTION), ("pytorch sdpa flash", SDPBackend.FLASH_ATTENTION)]
        if a.phase == "decode":
            cases.append(("pytorch read of K+V (sum)", None))
        for name, backend in cases:
            try:
                if backend is None:
                    ms = time_ms(lambda: kv.sum(dtype=torch.float32), runs, 5, a.l2_flush)
                else:
                    with sdpa_kernel(backend):
                        fn = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=a.phase == "prefill", enable_gqa=True)
                        fn()
                        ms = time_ms(fn, runs, 5, a.l2_flush)
            except RuntimeError as e:
                print(f"| {name} | {a.phase} | {batch} | {ctx} | n/a | {str(e).splitlines()[0][:60]} |")
                continue
            if a.phase == "decode":
                tp = f"{2 * batch * ctx * a.kv_heads * a.head_dim * 2 / (ms * 1e-3) / 1e9:.1f} GB/s"
            else:
                tp = f"{4 * a.heads * a.head_dim * ctx * ctx / 2 / (ms * 1e-3) / 1e12:.1f} TFLOP/s"
            print(f"| {name} | {a.phase} | {batch} | {ctx} | {ms:.4f} | {tp} |")


if __name__ == "__main__":
    main()
