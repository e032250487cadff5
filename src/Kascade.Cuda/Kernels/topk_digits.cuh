// Radix selection on 12-bit digits (KeyDigits), shared by the fast Top-k kernels: wide_topk.cu (a row per block, many
// rows) and decode_selection.cu's cluster_topk (a row per cluster of blocks, a decode step's few rows). A row's exact
// Top-k is found by counting the leading digit of every order key, which fixes the digit of the k-th largest; one
// ordered pass then writes the keys above that digit straight to the plan, in ascending position, and gathers the keys
// that share it (the candidates) into a store in shared memory, where the remaining digits and the ties are settled
// without touching the row again. Blocks of TOPK_THREADS threads. The including file includes plan_common.cuh.
#pragma once

#define TOPK_THREADS 1024
#define TOPK_WARPS (TOPK_THREADS / 32)
#define TOPK_BINS 4096          // a 12-bit digit's histogram
#define TOPK_BINS_PER_THREAD (TOPK_BINS / TOPK_THREADS)
#define TOPK_ORDER_LOADS 4      // keys a lane takes per step of an ordered pass (its ballots stay in registers)

// A row's digits, most significant first, over the low `top` bits of its order keys (the bits above them are the same
// in every key of the row): digit d is bits [max(top − 12 (d + 1), 0), top − 12 d). All 32 bits: [20, 32), [8, 20),
// [0, 8).
struct KeyDigits
{
    int top;

    __device__ __forceinline__ int count() const { return (top + 11) / 12; }
    __device__ __forceinline__ int shift(int digit) const { return max(top - 12 * (digit + 1), 0); }
    __device__ __forceinline__ unsigned bits(int digit) const { return (1u << (top - 12 * digit - shift(digit))) - 1u; }
    // The bits above `top`, where every key of the row agrees.
    __device__ __forceinline__ unsigned common_mask() const { return top == 32 ? 0u : ~0u << top; }
};

// The digits of a row whose order keys lie in [low, high]: below the leading bits the two share. The leading digit of
// all 32 bits (sign, exponent, three mantissa bits) has eight bins an octave, so a row of pooled post-softmax scores
// crowded into a few octaves puts more keys in the k-th's bin than a candidate store holds; from the first bit where
// the row's keys differ, the same 4,096 bins cover only the row's range.
__device__ __forceinline__ KeyDigits row_digits(unsigned low, unsigned high) { return KeyDigits{low == high ? 0 : 32 - __clz(low ^ high)}; }

// A block's prefix-sum scratch (`sums` below): block_exclusive_sum takes TOPK_WARPS + 1 ints of it,
// block_exclusive_sum2 as many int2.
struct __align__(8) BlockSums
{
    int values[2 * (TOPK_WARPS + 1)];
};

// Exclusive prefix sum of `value` over the block in thread order; `sums` (BlockSums) gets the block's total at
// sums[TOPK_WARPS].
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
        if (lane == 31) sums[TOPK_WARPS] = running;
    }
    __syncthreads();
    int before = sums[warp] + inclusive - value;
    __syncthreads();
    return before;
}

// Exclusive prefix sums of two values over the block in thread order, block_exclusive_sum's pair in one pass: `sums`
// (BlockSums) gets the block's totals at its int2 TOPK_WARPS.
__device__ __forceinline__ int2 block_exclusive_sum2(int a, int b, int* sums)
{
    int2* pairs = reinterpret_cast<int2*>(sums);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int ia = a, ib = b;
    for (int offset = 1; offset < 32; offset <<= 1)
    {
        const int va = __shfl_up_sync(0xffffffffu, ia, offset), vb = __shfl_up_sync(0xffffffffu, ib, offset);
        if (lane >= offset)
        {
            ia += va;
            ib += vb;
        }
    }
    if (lane == 31) pairs[warp] = make_int2(ia, ib);
    __syncthreads();
    if (warp == 0)
    {
        const int2 total = pairs[lane];
        int ra = total.x, rb = total.y;
        for (int offset = 1; offset < 32; offset <<= 1)
        {
            const int va = __shfl_up_sync(0xffffffffu, ra, offset), vb = __shfl_up_sync(0xffffffffu, rb, offset);
            if (lane >= offset)
            {
                ra += va;
                rb += vb;
            }
        }
        pairs[lane] = make_int2(ra - total.x, rb - total.y);
        if (lane == 31) pairs[TOPK_WARPS] = make_int2(ra, rb);
    }
    __syncthreads();
    const int2 before = make_int2(pairs[warp].x + ia - a, pairs[warp].y + ib - b);
    __syncthreads();
    return before;
}

// The bin of a digit's histogram that holds the remaining-th largest key, count(b) being bin b's count: thread t owns
// TOPK_BINS_PER_THREAD bins, thread 0 the highest, so a block prefix sum gives each thread the keys in the bins above its
// own, and the one thread whose bins reach `remaining` walks them down. Sets *chosen, *left (how many of the bin's keys
// complete the set) and *in_bin (the bin's count).
template <class Count>
__device__ __forceinline__ void find_digit(Count count, int remaining, int* sums, int* chosen, int* left, int* in_bin)
{
    const int first = (TOPK_THREADS - 1 - (int)threadIdx.x) * TOPK_BINS_PER_THREAD;
    int counts[TOPK_BINS_PER_THREAD], own = 0;
#pragma unroll
    for (int e = 0; e < TOPK_BINS_PER_THREAD; e++)
    {
        counts[e] = count(first + e);
        own += counts[e];
    }
    int above = block_exclusive_sum(own, sums);
    if (above < remaining && above + own >= remaining)
    {
#pragma unroll
        for (int e = TOPK_BINS_PER_THREAD - 1; e >= 0; e--)
        {
            if (above < remaining && above + counts[e] >= remaining)
            {
                *chosen = first + e;
                *left = remaining - above;
                *in_bin = counts[e];
            }
            above += counts[e];
        }
    }
    __syncthreads();
}

// One ordered pass over positions [begin, end) of a row whose order keys key_at(i) gives: positions whose key is above
// `prefix` under `mask` go to out[above_base + …] in ascending position; each key equal to it under `mask` is handed,
// in ascending position, to on_equal(j, key, position) with j = equal_base + its rank among them. Each warp orders its
// 32 · TOPK_ORDER_LOADS keys of a stretch by ballots, the block its warps by a prefix sum of their counts (above in the
// low 16 bits, equal in the high: at most 4,096 each a stretch). Every thread of the block calls it.
template <class KeyAt, class OnEqual>
__device__ __forceinline__ void ordered_pass(KeyAt key_at, int begin, int end, unsigned prefix, unsigned mask, int* out, int above_base, int equal_base,
                                             OnEqual on_equal, int* sums)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned lower = (1u << lane) - 1u;
    int above_done = above_base, equal_done = equal_base;
    for (int stretch = begin; stretch < end; stretch += TOPK_THREADS * TOPK_ORDER_LOADS)
    {
        const int base = stretch + warp * 32 * TOPK_ORDER_LOADS + lane;
        unsigned keys[TOPK_ORDER_LOADS], above[TOPK_ORDER_LOADS], equal[TOPK_ORDER_LOADS];
#pragma unroll
        for (int u = 0; u < TOPK_ORDER_LOADS; u++)
        {
            int i = base + u * 32;
            keys[u] = i < end ? key_at(i) : 0u;
        }
        int counts = 0;
#pragma unroll
        for (int u = 0; u < TOPK_ORDER_LOADS; u++)
        {
            bool valid = base + u * 32 < end;
            unsigned masked = keys[u] & mask;
            above[u] = __ballot_sync(0xffffffffu, valid && masked > prefix);
            equal[u] = __ballot_sync(0xffffffffu, valid && masked == prefix);
            counts += __popc(above[u]) | (__popc(equal[u]) << 16);
        }
        // Lane 0 carries its warp's counts into the block's prefix sum.
        int before = block_exclusive_sum(lane == 0 ? counts : 0, sums);
        before = __shfl_sync(0xffffffffu, before, 0);
        const int total = sums[TOPK_WARPS];
        int above_at = above_done + (before & 0xffff), equal_at = equal_done + (before >> 16);
#pragma unroll
        for (int u = 0; u < TOPK_ORDER_LOADS; u++)
        {
            const int i = base + u * 32;
            if ((above[u] >> lane) & 1u) out[above_at + __popc(above[u] & lower)] = i;
            if ((equal[u] >> lane) & 1u) on_equal(equal_at + __popc(equal[u] & lower), keys[u], i);
            above_at += __popc(above[u]);
            equal_at += __popc(equal[u]);
        }
        above_done += total & 0xffff;
        equal_done += total >> 16;
        // sums[TOPK_WARPS] is read above before the next stretch's prefix sum rewrites it.
        __syncthreads();
    }
}

// ordered_pass's split for keys cheap to read twice (a slice or a candidate store in shared memory), with one block
// barrier in all where ordered_pass has one a stretch: warp w takes its own contiguous segment of [begin, end) (whole
// 32-key steps, segments in warp order), counts its keys above `prefix` and equal to it under `mask` by ballots, one
// block prefix sum of the warps' counts places each segment, and a second sweep hands each key above to on_above(j, i)
// (j = above_base + its rank among them) and each equal one to on_equal(j, key, i) (j = equal_base + its rank among
// them), both in ascending position. Every thread of the block calls it. A 128k row's ordered pass took 7.9 µs where
// ordered_pass took 8.4, and rank 0's settle 4.3 where 5.5 (clock64 phases on the H100, session 29).
template <class KeyAt, class OnAbove, class OnEqual>
__device__ __forceinline__ void ordered_segments(KeyAt key_at, int begin, int end, unsigned prefix, unsigned mask, int above_base, int equal_base,
                                                 OnAbove on_above, OnEqual on_equal, int* sums)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned lower = (1u << lane) - 1u;
    const int n = end - begin, per_warp = ((n + TOPK_WARPS - 1) / TOPK_WARPS + 31) & ~31;
    const int first = begin + min(n, warp * per_warp), last = begin + min(n, (warp + 1) * per_warp);
    int above = 0, equal = 0;
    for (int i = first + lane; i - lane < last; i += 32)
    {
        const bool valid = i < last;
        const unsigned masked = valid ? key_at(i) & mask : 0u;
        above += __popc(__ballot_sync(0xffffffffu, valid && masked > prefix));
        equal += __popc(__ballot_sync(0xffffffffu, valid && masked == prefix));
    }
    // Every lane holds its warp's counts; lane 0 carries them into the block's sums.
    const int2 before = block_exclusive_sum2(lane == 0 ? above : 0, lane == 0 ? equal : 0, sums);
    int above_at = above_base + __shfl_sync(0xffffffffu, before.x, 0), equal_at = equal_base + __shfl_sync(0xffffffffu, before.y, 0);
    for (int i = first + lane; i - lane < last; i += 32)
    {
        const bool valid = i < last;
        const unsigned key = valid ? key_at(i) : 0u, masked = key & mask;
        const unsigned up = __ballot_sync(0xffffffffu, valid && masked > prefix), same = __ballot_sync(0xffffffffu, valid && masked == prefix);
        if ((up >> lane) & 1u) on_above(above_at + __popc(up & lower), i);
        if ((same >> lane) & 1u) on_equal(equal_at + __popc(same & lower), key, i);
        above_at += __popc(up);
        equal_at += __popc(same);
    }
}

// The candidates' remaining digits (`digits` from `digit` on), settled in shared memory, then the rest of the row's
// Top-k written: the `candidates` keys (candidate_key(j)) and positions (candidate_position(j)) of the store share the
// k-th largest's digits under `mask` (equal to `prefix`), `remaining` of them complete the set, and the keys above them
// (k − remaining) are already at out[0, …). Writes the candidates above the k-th key, then its first ties, each in
// store order (ascending position). Every thread of the block calls it; `histogram` holds TOPK_BINS ints.
template <class CandidateKey, class CandidatePosition>
__device__ __forceinline__ void settle_candidates(CandidateKey candidate_key, CandidatePosition candidate_position, int candidates, KeyDigits digits, int digit,
                                                  unsigned prefix, unsigned mask, int k, int remaining, int* out, int* histogram, int* sums, int* chosen, int* left,
                                                  int* in_bin)
{
    const int above_digits = k - remaining;
    for (; digit < digits.count(); digit++)
    {
        for (int b = threadIdx.x; b < TOPK_BINS; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        const int shift = digits.shift(digit);
        const unsigned bits = digits.bits(digit);
        for (int j = threadIdx.x; j < candidates; j += blockDim.x)
        {
            unsigned key = candidate_key(j);
            if ((key & mask) == prefix) atomicAdd(&histogram[(key >> shift) & bits], 1);
        }
        __syncthreads();
        find_digit([&](int b) { return histogram[b]; }, remaining, sums, chosen, left, in_bin);
        prefix |= (unsigned)*chosen << shift;
        mask |= bits << shift;
        remaining = *left;
        __syncthreads();
    }
    // prefix is the k-th largest key: the candidates above it after the keys above its leading digits, then its first
    // `remaining` ties.
    const int above_total = k - remaining;
    ordered_segments(candidate_key, 0, candidates, prefix, 0xffffffffu, above_digits, 0,
                     [&](int j, int i) { out[j] = candidate_position(i); },
                     [&](int j, unsigned, int i) { if (j < remaining) out[above_total + j] = candidate_position(i); }, sums);
}
