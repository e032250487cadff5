// A decode step's selection, fast path (issue 15 §3): decode_scores.cu's decode_scores_mma scores every query head of a
// GQA group in one tensor-core pass over the keys, selection.cu's combine_log_sum_exp merges the rows' normalisers,
// pool_decode_scores turns the raw scores into each pool's summed (or max) probabilities, and cluster_topk finds a
// row's exact Top-k with a cluster of blocks sharing their histograms through distributed shared memory (a decode step
// has few rows: one block per row leaves most of the GPU idle). Every kernel takes the step's position from the
// device, so a recorded step replays at any position; grids are sized from the capacity. Specialisation key: HEAD_DIM.
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "plan_common.cuh"
#define TOPK_CLUSTER 8      // cluster_topk: blocks per row (the portable cluster size)
#define TOPK_THREADS 1024

// scores[pool, j] = Σ (or, with max_pool, the largest) over the pool's heads — heads / pools consecutive heads — of
// exp(raw[h, j] − lse[h]) (post-softmax; lse null: the raw scaled score), for the visible keys j ≤ start; the order of
// pooled_tile_scores's sum. scores fp32 [pools, stride]. Grid: (key blocks, pools).
extern "C" __global__ void pool_decode_scores(const float* raw, const float* lse, float* scores, long long stride, int heads, int pools, int max_pool,
                                              int start, const int* start_at)
{
    start = start_position(start_at, start);
    int j = blockIdx.x * blockDim.x + threadIdx.x, pool = blockIdx.y, pool_heads = heads / pools;
    if (j > start) return;
    float total = 0.0f;
    for (int h = pool * pool_heads; h < (pool + 1) * pool_heads; h++)
    {
        float v = raw[(long)h * stride + j];
        if (lse != nullptr) v = expf(v - lse[h]);
        total = max_pool ? fmaxf(total, v) : total + v;
    }
    scores[(long)pool * stride + j] = total;
}

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

// select_topk's result (the same set, in the same order) for rows with many candidates: the TOPK_CLUSTER blocks of a
// cluster split the row into equal slices, each counts its slice into a shared histogram per radix pass, and every
// block sums the cluster's histograms through distributed shared memory to pick the pass's bin; the ordered write
// then starts each block at the counts of the slices before it. Takes select_topk's SelectParams (mode 1 rows with
// page_size 1 and mode 0 tiles alike). Grid: rows · TOPK_CLUSTER, TOPK_THREADS.
extern "C" __global__ void __cluster_dims__(TOPK_CLUSTER, 1, 1) __launch_bounds__(TOPK_THREADS) cluster_topk(SelectParams p)
{
    __shared__ int histogram[256], totals[256];
    __shared__ int warp_counts[32];
    __shared__ float scratch[32];
    __shared__ int shared_bin, shared_remaining, shared_total, slice_above, slice_ties;
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
    const int per_slice = (n + TOPK_CLUSTER - 1) / TOPK_CLUSTER;
    const int begin = min(n, (int)rank * per_slice), end = min(n, begin + per_slice);
    unsigned prefix = 0, prefix_mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        radix_histogram(scores, begin, end, prefix, prefix_mask, shift, histogram);
        cluster_sync();
        // The cluster's histograms summed, a bin per thread with its TOPK_CLUSTER remote loads in flight together (warp
        // 0 summing them window by window waited for one remote load after another), then warp 0 finds the bin holding
        // the remaining-th largest key.
        for (int b = threadIdx.x; b < 256; b += blockDim.x)
        {
            int counts[TOPK_CLUSTER];
#pragma unroll
            for (unsigned r = 0; r < TOPK_CLUSTER; r++) counts[r] = cluster_load(&histogram[b], r);
            int total = 0;
#pragma unroll
            for (int r = 0; r < TOPK_CLUSTER; r++) total += counts[r];
            totals[b] = total;
        }
        __syncthreads();
        if (threadIdx.x < 32)
        {
            int chosen, left;
            radix_find_bin([&](int b) { return totals[b]; }, remaining, chosen, left);
            if (threadIdx.x == 0)
            {
                shared_bin = chosen;
                shared_remaining = left;
            }
        }
        // No block may clear its histogram while another still reads it.
        cluster_sync();
        prefix |= (unsigned)shared_bin << shift;
        prefix_mask |= 0xffu << shift;
        remaining = shared_remaining;
    }
    // prefix is the k-th largest key; `remaining` of the keys equal to it complete the set, lowest positions first.
    int above_count = 0, tie_count = 0;
    for (int i = begin + threadIdx.x; i < end; i += blockDim.x)
    {
        unsigned key = order_key(scores[i]);
        above_count += key > prefix;
        tie_count += key == prefix;
    }
    // Counts up to a slice's length are exact in fp32.
    above_count = (int)block_sum((float)above_count, scratch);
    tie_count = (int)block_sum((float)tie_count, scratch);
    if (threadIdx.x == 0)
    {
        slice_above = above_count;
        slice_ties = tie_count;
    }
    cluster_sync();
    // The slices before this one: their counts loaded together, then added.
    int above_before[TOPK_CLUSTER], ties_before[TOPK_CLUSTER];
#pragma unroll
    for (unsigned r = 0; r < TOPK_CLUSTER; r++)
    {
        above_before[r] = r < rank ? cluster_load(&slice_above, r) : 0;
        ties_before[r] = r < rank ? cluster_load(&slice_ties, r) : 0;
    }
    int above_written = 0, ties_seen = 0;
#pragma unroll
    for (int r = 0; r < TOPK_CLUSTER; r++)
    {
        above_written += above_before[r];
        ties_seen += ties_before[r];
    }
    write_top_keys(scores, begin, end, prefix, remaining, k - remaining, above_written, ties_seen, out, warp_counts, &shared_total);
    // The others may still read this block's slice counts.
    cluster_sync();
}
#endif
