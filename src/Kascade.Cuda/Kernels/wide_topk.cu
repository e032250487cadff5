// A row's exact Top-k in two reads of the row where select_topk (selection.cu) reads it five times (issue 15 §5: the
// 512-row Top-k at 128k keys took 0.74 ms there, 0.80× torch.topk on the H100, against a target of 0.5×). Radix
// selection on 12-bit digits: the first read counts the leading 12 bits of every order key, which fixes the digit of the
// k-th largest; the second writes the keys above that digit straight to the plan, in ascending position, and gathers the
// keys that share it (the candidates) into shared memory, where the remaining digits and the ties are settled without
// touching the row again. Rows whose k-th digit holds more candidates than shared memory does (rows of few distinct
// values) are counted once more per digit until the candidates fit or the key is whole; a row no longer than the
// candidate store is gathered at once. The set is select_topk's (Ranking.TopK's: ties to the lower position); the order
// within it is not: the keys above the first digit that fits come first, then the candidates above the k-th, then its
// ties, each in ascending position. Takes select_topk's SelectParams (every mode). Specialisation key: HEAD_DIM (of the
// plan kernels; the Top-k reads no K).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "plan_common.cuh"

#define WIDE_THREADS 1024
#define WIDE_WARPS (WIDE_THREADS / 32)
#define WIDE_BINS 4096        // a 12-bit digit's histogram
#define WIDE_BINS_PER_THREAD (WIDE_BINS / WIDE_THREADS)
#define WIDE_COUNT_LOADS 8    // scores a lane loads before it counts them (loads in flight)
#define WIDE_ORDER_LOADS 4    // scores a lane loads per step of an ordered pass (its ballots stay in registers)
// Candidates held in shared memory (order key and position). 12,288 keep two blocks on a Hopper multiprocessor (2 ×
// 113 KiB of its 228) and hold the 8,192 keys that share a 12-bit digit of uniform scores at 128k keys (1/16 of them:
// 8 digits to an octave).
#define WIDE_CANDIDATES 12288
#define WIDE_DIGITS 3

// The digits, most significant first: bits [20, 32), [8, 20), [0, 8).
__device__ __forceinline__ int digit_shift(int digit) { return digit == 0 ? 20 : digit == 1 ? 8 : 0; }
__device__ __forceinline__ unsigned digit_bits(int digit) { return digit == 2 ? 0xffu : 0xfffu; }

// Exclusive prefix sum of `value` over the block in thread order; `sums` holds WIDE_WARPS + 1 ints and gets the block's
// total at sums[WIDE_WARPS].
__device__ __forceinline__ int block_exclusive_sum(int value, int* sums)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int inclusive = value;
    for (int offset = 1; offset < 32; offset <<= 1)
    {
        int v = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += v;
    }
    if (lane == 31) sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0)
    {
        int total = sums[lane], running = total;
        for (int offset = 1; offset < 32; offset <<= 1)
        {
            int v = __shfl_up_sync(0xffffffffu, running, offset);
            if (lane >= offset) running += v;
        }
        sums[lane] = running - total;
        if (lane == 31) sums[WIDE_WARPS] = running;
    }
    __syncthreads();
    int before = sums[warp] + inclusive - value;
    __syncthreads();
    return before;
}

// The bin of a digit's histogram that holds the remaining-th largest key: thread t owns WIDE_BINS_PER_THREAD bins,
// thread 0 the highest, so a block prefix sum gives each thread the keys in the bins above its own, and the one thread
// whose bins reach `remaining` walks them down. Sets *chosen and *left (how many of the bin's keys complete the set).
__device__ __forceinline__ void find_digit(const int* histogram, int remaining, int* sums, int* chosen, int* left)
{
    const int first = (WIDE_THREADS - 1 - (int)threadIdx.x) * WIDE_BINS_PER_THREAD;
    int counts[WIDE_BINS_PER_THREAD], own = 0;
#pragma unroll
    for (int e = 0; e < WIDE_BINS_PER_THREAD; e++)
    {
        counts[e] = histogram[first + e];
        own += counts[e];
    }
    int above = block_exclusive_sum(own, sums);
    if (above < remaining && above + own >= remaining)
    {
#pragma unroll
        for (int e = WIDE_BINS_PER_THREAD - 1; e >= 0; e--)
        {
            if (above < remaining && above + counts[e] >= remaining)
            {
                *chosen = first + e;
                *left = remaining - above;
            }
            above += counts[e];
        }
    }
    __syncthreads();
}

// Counts digit `digit` of the order keys of scores[0, n) whose bits under `mask` equal `prefix`. Warp w takes
// 32 · WIDE_COUNT_LOADS consecutive scores of each block-wide stretch, a lane every 32nd, all loaded before any is
// counted. The histogram is zeroed and synchronised by the caller.
__device__ __forceinline__ void count_digit(const float* scores, int n, unsigned prefix, unsigned mask, int digit, int* histogram)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, shift = digit_shift(digit);
    const unsigned bits = digit_bits(digit);
    for (int base = warp * 32 * WIDE_COUNT_LOADS + lane; base < n; base += WIDE_THREADS * WIDE_COUNT_LOADS)
    {
        unsigned keys[WIDE_COUNT_LOADS];
#pragma unroll
        for (int u = 0; u < WIDE_COUNT_LOADS; u++)
        {
            int i = base + u * 32;
            keys[u] = i < n ? order_key(scores[i]) : 0u;
        }
#pragma unroll
        for (int u = 0; u < WIDE_COUNT_LOADS; u++)
            if (base + u * 32 < n && (keys[u] & mask) == prefix) atomicAdd(&histogram[(keys[u] >> shift) & bits], 1);
    }
}

// One ordered pass over scores[0, n): positions whose order key is above `prefix` under `mask` go to out[…] in
// ascending position; those equal to it under `mask` go, in ascending position, to the candidate store when `gather`,
// else (the key whole: they are the k-th's ties) to out[tie_base + …] while fewer than `ties` are written. Each warp
// orders its 32 · WIDE_ORDER_LOADS scores of a stretch by ballots, the block its warps by a prefix sum of their counts
// (above in the low 16 bits, equal in the high: at most 4,096 each a stretch).
__device__ __forceinline__ void ordered_pass(const float* scores, int n, unsigned prefix, unsigned mask, int* out, bool gather, unsigned* candidate_keys,
                                             int* candidate_positions, int tie_base, int ties, int* sums)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned lower = (1u << lane) - 1u;
    int above_done = 0, equal_done = 0;
    for (int stretch = 0; stretch < n; stretch += WIDE_THREADS * WIDE_ORDER_LOADS)
    {
        const int base = stretch + warp * 32 * WIDE_ORDER_LOADS + lane;
        unsigned keys[WIDE_ORDER_LOADS], above[WIDE_ORDER_LOADS], equal[WIDE_ORDER_LOADS];
#pragma unroll
        for (int u = 0; u < WIDE_ORDER_LOADS; u++)
        {
            int i = base + u * 32;
            keys[u] = i < n ? order_key(scores[i]) : 0u;
        }
        int counts = 0;
#pragma unroll
        for (int u = 0; u < WIDE_ORDER_LOADS; u++)
        {
            bool valid = base + u * 32 < n;
            unsigned masked = keys[u] & mask;
            above[u] = __ballot_sync(0xffffffffu, valid && masked > prefix);
            equal[u] = __ballot_sync(0xffffffffu, valid && masked == prefix);
            counts += __popc(above[u]) | (__popc(equal[u]) << 16);
        }
        // Lane 0 carries its warp's counts into the block's prefix sum.
        int before = block_exclusive_sum(lane == 0 ? counts : 0, sums);
        before = __shfl_sync(0xffffffffu, before, 0);
        const int total = sums[WIDE_WARPS];
        int above_at = above_done + (before & 0xffff), equal_at = equal_done + (before >> 16);
#pragma unroll
        for (int u = 0; u < WIDE_ORDER_LOADS; u++)
        {
            const int i = base + u * 32;
            if ((above[u] >> lane) & 1u) out[above_at + __popc(above[u] & lower)] = i;
            if ((equal[u] >> lane) & 1u)
            {
                const int j = equal_at + __popc(equal[u] & lower);
                if (gather)
                {
                    candidate_keys[j] = keys[u];
                    candidate_positions[j] = i;
                }
                else if (j < ties)
                {
                    out[tie_base + j] = i;
                }
            }
            above_at += __popc(above[u]);
            equal_at += __popc(equal[u]);
        }
        above_done += total & 0xffff;
        equal_done += total >> 16;
        // sums[WIDE_WARPS] is read above before the next stretch's prefix sum rewrites it.
        __syncthreads();
    }
}

// Grid: rows, WIDE_THREADS; dynamic shared memory (WIDE_BINS + 2 · WIDE_CANDIDATES) · 4 bytes (CudaBackend.WideTopKShared).
extern "C" __global__ void __launch_bounds__(WIDE_THREADS, 2) wide_topk(SelectParams p)
{
    extern __shared__ int wide_shared[];
    int* histogram = wide_shared;
    unsigned* candidate_keys = (unsigned*)(histogram + WIDE_BINS);
    int* candidate_positions = (int*)(candidate_keys + WIDE_CANDIDATES);
    __shared__ int sums[WIDE_WARPS + 1];
    __shared__ int warp_counts[32];
    __shared__ int chosen, left, shared_total;
    const int row = blockIdx.x;
    int n, k;
    const float* scores;
    int* out;
    if (!begin_topk_row(p, row, n, k, scores, out)) return;
    unsigned prefix = 0, mask = 0;
    int remaining = k, candidates = n, digit = 0;
    // Digits of the row until the keys that share the k-th largest's leading digits fit in shared memory, or it is whole.
    for (; digit < WIDE_DIGITS && candidates > WIDE_CANDIDATES; digit++)
    {
        for (int b = threadIdx.x; b < WIDE_BINS; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        count_digit(scores, n, prefix, mask, digit, histogram);
        __syncthreads();
        find_digit(histogram, remaining, sums, &chosen, &left);
        prefix |= (unsigned)chosen << digit_shift(digit);
        mask |= digit_bits(digit) << digit_shift(digit);
        remaining = left;
        candidates = histogram[chosen];
        __syncthreads();
    }
    if (digit == WIDE_DIGITS)
    {
        // prefix is the k-th largest key: the keys above it, then its first `remaining` ties, in one pass.
        ordered_pass(scores, n, prefix, mask, out, false, nullptr, nullptr, k - remaining, remaining, sums);
        return;
    }
    const int above_digits = k - remaining;
    ordered_pass(scores, n, prefix, mask, out, true, candidate_keys, candidate_positions, 0, 0, sums);
    // The candidates' remaining digits, from shared memory.
    for (; digit < WIDE_DIGITS; digit++)
    {
        for (int b = threadIdx.x; b < WIDE_BINS; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        const int shift = digit_shift(digit);
        const unsigned bits = digit_bits(digit);
        for (int j = threadIdx.x; j < candidates; j += blockDim.x)
        {
            unsigned key = candidate_keys[j];
            if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & bits], 1);
        }
        __syncthreads();
        find_digit(histogram, remaining, sums, &chosen, &left);
        prefix |= (unsigned)chosen << shift;
        mask |= bits << shift;
        remaining = left;
        __syncthreads();
    }
    write_top_keys_of([&](int j) { return candidate_keys[j]; }, [&](int j) { return candidate_positions[j]; }, 0, candidates, prefix, remaining,
                      k - remaining, above_digits, 0, out, warp_counts, &shared_total);
}
