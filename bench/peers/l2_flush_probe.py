"""How the L2 flush before a timed run changes decode-attention timings (PyTorch SDPA cuDNN/flash, a plain read of
K+V, and a tiny kernel for the event overhead) on the GPU machine:

    python3 bench/peers/l2_flush_probe.py

Flushes: "write" fills a 256 MiB buffer (the L2 is left full of dirty lines that the timed kernel must write back),
"read" sums another 256 MiB buffer (clean lines), "write+read" both, "none" nothing (the event then also times the
host's launch). Prints one line per context and flush, then CUPTI kernel times (torch.profiler) for SDPA at 1k and
32k keys after write flushes. Output recorded in bench/results/attention-h100.md.
"""
import torch, torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
torch.manual_seed(0)
flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
flush2 = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
def do_flush(method, i):
    if method == "write": flush.fill_(i & 0xFF)
    elif method == "read": flush2.view(torch.int32).sum()
    elif method == "write+read": flush.fill_(i & 0xFF); flush2.view(torch.int32).sum()
    elif method == "none": pass
def t(fn, method, runs=30):
    for _ in range(5): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    ts = []
    for i in range(runs):
        do_flush(method, i); s.record(); fn(); e.record(); e.synchronize(); ts.append(s.elapsed_time(e))
    ts.sort(); return ts[len(ts)//2] * 1000
tiny = torch.zeros(32, device="cuda")
for ctx in [1024, 8192, 32768, 131072]:
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(2, 1, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
    k, v = kv[0], kv[1]
    gb = kv.numel() * 2 / 1e9
    out = torch.empty(1, device="cuda", dtype=torch.float32)
    for method in ["write", "read", "write+read", "none"]:
        row = []
        for name, be in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]:
            with sdpa_kernel(be):
                fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
                us = t(fn, method)
            row.append(f"{name} {us:7.1f} us {gb/us*1e6:6.0f} GB/s")
        us = t(lambda: kv.sum(dtype=torch.float32), method)
        row.append(f"sum-read {us:7.1f} us {gb/us*1e6:6.0f} GB/s")
        us = t(lambda: tiny.add_(1), method)
        row.append(f"tiny {us:5.1f} us")
        print(ctx, method, " | ".join(row), flush=True)
# kernel durations (CUPTI) at 32k for cudnn, write flush
from torch.profiler import profile, ProfilerActivity
for ctx in [1024, 32768]:
    q = torch.randn(1, 32, 1, 128, device="cuda", dtype=torch.bfloat16)
    kv = torch.randn(2, 1, 8, ctx, 128, device="cuda", dtype=torch.bfloat16)
    for name, be in [("cudnn", SDPBackend.CUDNN_ATTENTION), ("flash", SDPBackend.FLASH_ATTENTION)]:
        with sdpa_kernel(be):
            fn = lambda: F.scaled_dot_product_attention(q, kv[0], kv[1], enable_gqa=True)
            fn(); torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for i in range(10):
                    flush.fill_(i); fn()
                torch.cuda.synchronize()
        print(ctx, name)
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=6, max_name_column_width=70))
