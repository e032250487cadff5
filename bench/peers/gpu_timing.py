"""CUDA-event timing shared by the peer scripts, as `kascade bench` times: the L2 flushed before every run by reading
a 256 MiB buffer (flush_mode "read": the cache holds clean lines) or writing it ("write": dirty lines the timed kernel
writes back), median of the runs."""
import torch


def time_ms(fn, runs, warmup, flush_mode):
    flush = torch.zeros(256 << 20, dtype=torch.uint8, device="cuda")
    for _ in range(warmup):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(runs):
        if flush_mode == "read":
            flush.view(torch.int32).sum()
        else:
            flush.fill_(i & 0xFF)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]
