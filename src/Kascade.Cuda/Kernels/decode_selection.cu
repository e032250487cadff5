// A decode step's selection, fast path (issue 15 §3): decode_scores.cu's decode_scores_mma scores every query head of a
// GQA group in one tensor-core pass over the keys, and cluster_topk finds a pooled row's exact Top-k with a cluster of
// blocks sharing their histograms through distributed shared memory (a decode step has few rows: one block per row
// leaves most of the GPU idle), merging the rows' normalisers and pooling the raw scores as it reads them; where it
// does not run, selection.cu's combine_log_sum_exp and pool_decode_scores here write the pooled rows for the other
// Top-k kernels. Every kernel takes the step's position from the device, so a recorded step replays at any position;
// grids are sized from the capacity. Specialisation key: HEAD_DIM.
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "plan_common.cuh"
#include "topk_digits.cuh"
#define TOPK_CLUSTER 8            // cluster_topk: blocks per row (the portable cluster size)
#define CLUSTER_SHARE (TOPK_BINS / TOPK_CLUSTER)   // bins of the cluster's histogram each block sums
#define CLUSTER_CANDIDATES 12288  // rank 0's candidate store (wide_topk's)
#define CLUSTER_COUNT_LOADS 4     // keys a lane takes per step of a count

// Keys j0, j0 + step, … (U of them, those below `end`) pooled over `pool_heads` raw rows from `first` (raw fp32 [rows,
// stride], natural-log units): the sum (or, with max_pool, the largest) of exp(raw[first + i, j] − lse[i]) (post-softmax;
// lse null: the raw scaled score), in the order of pooled_tile_scores's sum. A head's U loads are issued together, so a
// thread has U keys in flight. Shared by pool_decode_scores and cluster_topk's pooling, so that both rank the same floats.
template <int U>
__device__ __forceinline__ void pooled_scores(const float* raw, long long stride, const float* lse, int first, int pool_heads, int max_pool, int j0, int step, int end,
                                              float (&total)[U])
{
#pragma unroll
    for (int u = 0; u < U; u++) total[u] = 0.0f;
#pragma unroll 4
    for (int i = 0; i < pool_heads; i++)
    {
        const float* row = raw + (long)(first + i) * stride;
        float v[U];
#pragma unroll
        for (int u = 0; u < U; u++) v[u] = j0 + u * step < end ? row[j0 + u * step] : 0.0f;
#pragma unroll
        for (int u = 0; u < U; u++)
        {
            if (lse != nullptr) v[u] = expf(v[u] - lse[i]);
            total[u] = max_pool ? fmaxf(total[u], v[u]) : total[u] + v[u];
        }
    }
}

// scores[pool, j] = pooled_scores over the pool's heads — heads / pools consecutive heads, lse[h] each head's
// log-sum-exp or null — for the visible keys j ≤ start. scores fp32 [pools, stride]. Grid: (key blocks, pools).
// Launched dependent: it waits for the log-sum-exp's kernel before reading, then lets the Top-k start launching.
extern "C" __global__ void pool_decode_scores(const float* raw, const float* lse, float* scores, long long stride, int heads, int pools, int max_pool,
                                              int start, const int* start_at)
{
    wait_for_previous_kernel();
    allow_dependent_launch();
    start = start_position(start_at, start);
    int j = blockIdx.x * blockDim.x + threadIdx.x, pool = blockIdx.y, pool_heads = heads / pools;
    if (j > start) return;
    float total[1];
    pooled_scores(raw, stride, lse != nullptr ? lse + pool * pool_heads : nullptr, pool * pool_heads, pool_heads, max_pool, j, 0, j + 1, total);
    scores[(long)pool * stride + j] = total[0];
}

// A decode step's raw scores for cluster_topk to pool as it reads its rows (raw null: it reads SelectParams.scores):
// row r of the Top-k is pooled_scores over raw rows r · pool_heads … (fp32 [rows · pool_heads, stride]), each head's
// log-sum-exp merged from its `partials` split (max, sum) pairs (fp32 [rows · pool_heads, partials, 2]; null: the raw
// scaled scores are summed, pre-softmax pooling).
#define POOL_MAX_HEADS 64
struct RawPoolParams
{
    const float* raw;
    const float* partial;
    long long stride;
    int partials;
    int pool_heads;       // at most POOL_MAX_HEADS
};

#if __CUDA_ARCH__ >= 900
// The cluster's blocks wait for each other; their shared memory writes before it are visible after it.
__device__ __forceinline__ void cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}

__device__ __forceinline__ unsigned cluster_rank()
{
    unsigned rank;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    return rank;
}

// The int at `local` (this block's shared memory) in block `rank` of the cluster.
__device__ __forceinline__ int cluster_load(const int* local, unsigned rank)
{
    unsigned address = (unsigned)__cvta_generic_to_shared(local), remote;
    int value;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(address), "r"(rank));
    asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(value) : "r"(remote) : "memory");
    return value;
}

// Stores the pair (x, y) at `local`'s place (8-byte aligned) in block `rank`'s shared memory, one remote transaction.
__device__ __forceinline__ void cluster_store_pair(uint2* local, unsigned rank, unsigned x, unsigned y)
{
    unsigned address = (unsigned)__cvta_generic_to_shared(local), remote;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(address), "r"(rank));
    asm volatile("st.shared::cluster.v2.u32 [%0], {%1, %2};" ::"r"(remote), "r"(x), "r"(y) : "memory");
}

// Counts the digit at `shift` (`bits` wide) of the keys of [begin, end) whose bits under `mask` equal `prefix` into
// `histogram`, a shared atomic a lane. Pooled post-softmax scores crowd into few bins, so a warp's lanes often add to
// one bin and the hardware serialises them; merging them first with match.any was slower still: with it the counts took
// 12.8 of the 18.5 µs of a 128k row's digit round (clock64 phases, session 29), and without it (and with cluster_topk's
// slice counts from the histograms) the Top-k of 8 rows went from 40.4 to 27.5 µs on the H100
// (bench/results/topk-count-h100-2026-12-07-s29.md). Warp w takes keys begin + 32 w + TOPK_THREADS u + lane. The
// histogram is zeroed and synchronised by the caller.
template <class KeyAt>
__device__ __forceinline__ void count_slice_digit(KeyAt key_at, int begin, int end, unsigned prefix, unsigned mask, int shift, unsigned bits, int* histogram)
{
    for (int base = begin + (int)threadIdx.x; base < end; base += CLUSTER_COUNT_LOADS * TOPK_THREADS)
    {
        unsigned keys[CLUSTER_COUNT_LOADS];
#pragma unroll
        for (int u = 0; u < CLUSTER_COUNT_LOADS; u++)
        {
            const int i = base + u * TOPK_THREADS;
            keys[u] = i < end ? key_at(i) : 0u;
        }
#pragma unroll
        for (int u = 0; u < CLUSTER_COUNT_LOADS; u++)
            if (base + u * TOPK_THREADS < end && (keys[u] & mask) == prefix) atomicAdd(&histogram[(keys[u] >> shift) & bits], 1);
    }
}

// A row's exact Top-k for the few long rows of a decode step (the set of select_topk and Ranking.TopK; the order within
// it wide_topk's), on a cluster of TOPK_CLUSTER blocks: block `rank` takes slice [rank · ⌈n / 8⌉, …) of the row and,
// when it fits `slice_capacity`, holds its order keys in shared memory, so the row is read once. Radix selection on
// topk_digits.cuh's 12-bit digits: each digit is counted per slice, the cluster's histogram summed through distributed
// shared memory (block r sums bins [512 r, 512 r + 512) over the cluster) and its k-th digit found by every block from
// those shares — until the keys sharing the k-th's leading digits fit rank 0's candidate store or the key is whole.
// Where the slices are held, the digits start below the leading bits every key of the row shares (its range, gathered
// from the slices with one more cluster barrier, row_digits): a decode anchor's pooled post-softmax rows counted 1.88
// digits over the cluster at 128k from the sign bit on (session 29), each ~8 µs. One ordered pass per slice
// (ordered_segments where the slice is held) then writes the keys above those digits to the plan (each slice after the
// counts of the slices before it) and gathers the keys sharing them (the candidates) into rank 0's store, where rank 0
// settles the remaining digits alone. 8 rows × 128k keys: 26.8–27.1 µs on the H100 (18.8–19.1 at 32k, where the range's
// barrier costs these random rows 0.7 µs), a decode anchor 0.149 ms where it was 0.154
// (bench/results/topk-range-h100-2026-12-08-s30.md), against 46.7 µs for four 8-bit passes and an ordered write each
// reading the row from L2 (session 11).
// Grid: rows · TOPK_CLUSTER, TOPK_THREADS; dynamic shared memory ClusterTopKShared(slice_capacity) (CudaBackend).
// With pool.raw, the row is pooled here from the decode step's raw scores as it is read (pooled_scores, each head's
// log-sum-exp merged by a warp first), the same floats pool_decode_scores would have written: the pooling kernel's
// launch and its round trip through memory are gone from the step (8 µs of a 128k Kascade step's anchor layer in a
// recorded step, session 24's trace), for four reads of raw scores a key instead of one of a pooled score.
// Launched dependent: the cluster's launch (~8 µs at 32k with no block running, ncu, session 11) overlaps the kernel
// before it; it waits for that before reading and lets the anchor's attention start launching.
extern "C" __global__ void __cluster_dims__(TOPK_CLUSTER, 1, 1) __launch_bounds__(TOPK_THREADS, 1) cluster_topk(SelectParams p, int slice_capacity, RawPoolParams pool)
{
    wait_for_previous_kernel();
    allow_dependent_launch();
    extern __shared__ int cluster_shared[];
    int* histogram = cluster_shared;                                        // [TOPK_BINS]: this slice's counts
    int* owned = histogram + TOPK_BINS;                                     // [CLUSTER_SHARE]: the cluster's, this block's share
    uint2* candidate_store = (uint2*)(owned + CLUSTER_SHARE);               // [CLUSTER_CANDIDATES] (order key, position); rank 0's is the store
    unsigned* slice = (unsigned*)(candidate_store + CLUSTER_CANDIDATES);    // [slice_capacity]: the slice's order keys
    __shared__ BlockSums block_sums;
    int* const sums = block_sums.values;
    __shared__ int chosen, left, in_bin, slice_above, slice_equal;
    __shared__ unsigned warp_low[TOPK_WARPS], warp_high[TOPK_WARPS], slice_low, slice_high, row_low, row_high;
    const int row = blockIdx.x / TOPK_CLUSTER;
    const unsigned rank = cluster_rank();
    int start = start_position(p.start_at, p.start), n, k;
    select_row_budget(p, row, start, n, k);
    const float* scores = p.scores + (long)row * p.stride;
    int* out = p.indices + (long)row * p.capacity;
    if (rank == 0 && threadIdx.x == 0) p.counts[row] = k;
    if (k <= 0 || k == n)
    {
        // Uniform over the cluster: no block waits at a barrier the others skip.
        if (k == n) for (int i = rank * blockDim.x + threadIdx.x; i < n; i += TOPK_CLUSTER * blockDim.x) out[i] = i;
        return;
    }
    __shared__ float pool_lse[POOL_MAX_HEADS];
    if (pool.raw != nullptr && pool.partial != nullptr)
    {
        const int warp = threadIdx.x >> 5;
        for (int i = warp; i < pool.pool_heads; i += TOPK_WARPS)
        {
            const float lse = merged_log_sum_exp(pool.partial + (long)(row * pool.pool_heads + i) * pool.partials * 2, pool.partials);
            if ((threadIdx.x & 31) == 0) pool_lse[i] = lse;
        }
        __syncthreads();
    }
    // U keys from j (every TOPK_THREADS-th) as the row's scores: pooled here, or read.
    auto scores_at = [&](int j, int end, auto& v) {
        if (pool.raw != nullptr)
        {
            pooled_scores(pool.raw, pool.stride, pool.partial != nullptr ? pool_lse : nullptr, row * pool.pool_heads, pool.pool_heads, 0, j, TOPK_THREADS, end, v);
            return;
        }
#pragma unroll
        for (int u = 0; u < (int)(sizeof(v) / sizeof(float)); u++) v[u] = j + u * TOPK_THREADS < end ? scores[j + u * TOPK_THREADS] : 0.0f;
    };
    const int per_slice = (n + TOPK_CLUSTER - 1) / TOPK_CLUSTER;
    const int begin = min(n, (int)rank * per_slice), end = min(n, begin + per_slice);
    const bool cached = per_slice <= slice_capacity;                        // the same in every block of the cluster
    // The row's digits: from the first bit where its keys differ where the slices hold them (their range comes with the
    // load), else all 32 bits.
    KeyDigits digits{32};
    unsigned prefix = 0, mask = 0;
    if (cached)
    {
        unsigned low = 0xffffffffu, high = 0u;
        for (int base = begin + threadIdx.x; base < end; base += 8 * TOPK_THREADS)
        {
            float v[8];
            scores_at(base, end, v);
#pragma unroll
            for (int u = 0; u < 8; u++)
                if (base + u * TOPK_THREADS < end)
                {
                    const unsigned key = order_key(v[u]);
                    slice[base + u * TOPK_THREADS - begin] = key;
                    low = min(low, key);
                    high = max(high, key);
                }
        }
        low = __reduce_min_sync(0xffffffffu, low);
        high = __reduce_max_sync(0xffffffffu, high);
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        if (lane == 0)
        {
            warp_low[warp] = low;
            warp_high[warp] = high;
        }
        __syncthreads();
        if (warp == 0)
        {
            low = __reduce_min_sync(0xffffffffu, warp_low[lane]);
            high = __reduce_max_sync(0xffffffffu, warp_high[lane]);
            if (lane == 0)
            {
                slice_low = low;
                slice_high = high;
            }
        }
        // Every slice's range written (an empty slice's is [0xffffffff, 0], no key).
        cluster_sync();
        if (warp == 0)
        {
            low = lane < TOPK_CLUSTER ? (unsigned)cluster_load((const int*)&slice_low, lane) : 0xffffffffu;
            high = lane < TOPK_CLUSTER ? (unsigned)cluster_load((const int*)&slice_high, lane) : 0u;
            low = __reduce_min_sync(0xffffffffu, low);
            high = __reduce_max_sync(0xffffffffu, high);
            if (lane == 0)
            {
                row_low = low;
                row_high = high;
            }
        }
        __syncthreads();
        digits = row_digits(row_low, row_high);
        mask = digits.common_mask();
        prefix = row_low & mask;
    }
    auto key_at = [&](int i) {
        if (cached) return slice[i - begin];
        float v[1];
        scores_at(i, i + 1, v);
        return order_key(v[0]);
    };

    // This slice's keys above the k-th's digits so far and sharing them, for the slices after it: each round adds its
    // own histogram's keys above the chosen bin and keeps the bin's count, so no pass over the slice counts them.
    int remaining = k, candidates = n, digit = 0;
    if (threadIdx.x == 0)
    {
        slice_above = 0;
        slice_equal = end - begin;
    }
    for (; digit < digits.count() && candidates > CLUSTER_CANDIDATES; digit++)
    {
        for (int b = threadIdx.x; b < TOPK_BINS; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        count_slice_digit(key_at, begin, end, prefix, mask, digits.shift(digit), digits.bits(digit), histogram);
        // Every slice counted. `owned` is rewritten only here: each block has read the others' shares (find_digit,
        // the previous digit) before it arrives.
        cluster_sync();
        if (threadIdx.x < CLUSTER_SHARE)
        {
            int counts[TOPK_CLUSTER], total = 0;
#pragma unroll
            for (unsigned r = 0; r < TOPK_CLUSTER; r++) counts[r] = cluster_load(&histogram[rank * CLUSTER_SHARE + threadIdx.x], r);
#pragma unroll
            for (int r = 0; r < TOPK_CLUSTER; r++) total += counts[r];
            owned[threadIdx.x] = total;
        }
        // Every share summed; no block clears its histogram while another still reads it.
        cluster_sync();
        find_digit([&](int b) { return cluster_load(&owned[b % CLUSTER_SHARE], (unsigned)(b / CLUSTER_SHARE)); }, remaining, sums, &chosen, &left, &in_bin);
        prefix |= (unsigned)chosen << digits.shift(digit);
        mask |= digits.bits(digit) << digits.shift(digit);
        remaining = left;
        candidates = in_bin;
        int above_bin = 0;
        for (int b = chosen + 1 + threadIdx.x; b < TOPK_BINS; b += blockDim.x) above_bin += histogram[b];
        block_exclusive_sum(above_bin, sums);
        if (threadIdx.x == 0)
        {
            slice_above += sums[TOPK_WARPS];
            slice_equal = histogram[chosen];
        }
        __syncthreads();
    }
    // Every slice's counts written.
    cluster_sync();
    int above_before[TOPK_CLUSTER], equal_before[TOPK_CLUSTER];
#pragma unroll
    for (unsigned r = 0; r < TOPK_CLUSTER; r++)
    {
        above_before[r] = r < rank ? cluster_load(&slice_above, r) : 0;
        equal_before[r] = r < rank ? cluster_load(&slice_equal, r) : 0;
    }
    int above_base = 0, equal_base = 0;
#pragma unroll
    for (int r = 0; r < TOPK_CLUSTER; r++)
    {
        above_base += above_before[r];
        equal_base += equal_before[r];
    }
    if (digit == digits.count())
    {
        // prefix is the k-th largest key: the keys above it, then its first `remaining` ties, in one pass.
        const int tie_base = k - remaining, ties = remaining;
        auto on_tie = [&](int j, unsigned, int i) { if (j < ties) out[tie_base + j] = i; };
        if (cached)
            ordered_segments(key_at, begin, end, prefix, mask, above_base, equal_base, [&](int j, int i) { out[j] = i; }, on_tie, sums);
        else
            ordered_pass(key_at, begin, end, prefix, mask, out, above_base, equal_base, on_tie, sums);
        // The others may still read this block's slice counts.
        cluster_sync();
        return;
    }
    auto on_candidate = [&](int j, unsigned key, int i) {
        cluster_store_pair(&candidate_store[j], 0, key, (unsigned)i);
    };
    if (cached)
        ordered_segments(key_at, begin, end, prefix, mask, above_base, equal_base, [&](int j, int i) { out[j] = i; }, on_candidate, sums);
    else
        ordered_pass(key_at, begin, end, prefix, mask, out, above_base, equal_base, on_candidate, sums);
    // Rank 0's store is whole; no block reads another's shared memory after this.
    cluster_sync();
    if (rank != 0) return;
    settle_candidates([&](int j) { return candidate_store[j].x; }, [&](int j) { return (int)candidate_store[j].y; }, candidates, digits, digit, prefix, mask, k, remaining, out, histogram, sums,
                      &chosen, &left, &in_bin);
}
#endif
