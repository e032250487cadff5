// Shared by the kernels that write and read key plans (selection.cu, selectors.cu, decode_selection.cu): the query
// tiles and Top-k budgets of TopKBudget computed on the device from the step's position, the order key a radix select
// ranks floats by, a block-wide prefix count for ordered compaction, and the dots of several query rows with one key.
// The including file defines HEAD_DIM.
#pragma once
#include "common.cuh"
#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif

#define TILE_SIZE 32 // TopKBudget.TileSize: queries per prefill tile

// QueryTile.Of on the device: unit `unit` of a chunk of `tokens` queries from `start`. A decode step (one query) is one
// tile whose candidates are every key including its own, with no diagonal.
struct Tile
{
    int query_start, query_end, candidate_end, diagonal_start;
};

__device__ __forceinline__ Tile tile_of(int start, int tokens, int unit)
{
    if (tokens == 1) return Tile{start, start + 1, start + 1, start + 1};
    int s = (start / TILE_SIZE + unit) * TILE_SIZE;
    return Tile{max(s, start), min(s + TILE_SIZE, start + tokens), s, s};
}

// TopKBudget.For: min(n, roundUp128(max(128, floor(p/100 · n)))), in double as on the host.
__device__ long long budget_for(long long n, double percent)
{
    if (n <= 0) return 0;
    long long raw = max(128LL, (long long)floor(percent / 100.0 * (double)n));
    return min(n, (raw + 127) / 128 * 128);
}

// TopKBudget.ForTile: rule 0 ours (rounded), rule 1 the official PyTorch reference's.
__device__ int budget_for_tile(Tile tile, int visible, double percent, int rule)
{
    if (rule == 0) return (int)budget_for(tile.candidate_end, percent);
    long long k = min(max(128LL, (long long)floor(percent / 100.0 * (double)visible)), (long long)visible) - TILE_SIZE;
    if (k < 1) return tile.candidate_end;
    bool decode = tile.query_end - tile.query_start == 1 && tile.candidate_end == visible;
    long long count = decode ? k : min(k, max(128LL, (long long)floor(percent / 100.0 * (double)tile.candidate_end)));
    return (int)max(0LL, min(count, (long long)tile.candidate_end));
}

// The arguments of select_topk.
struct SelectParams
{
    const float* scores;  // fp32 [rows, stride]
    int* indices;         // int32 [rows, capacity]: the plan's positions
    int* counts;          // int32 [rows]
    const int* start_at;  // the start position on the device (a step's), or null: start
    long long stride;
    double percent;       // Top-k percent
    int rows_per_unit;    // mode 0: the plan's selectors; mode 1: heads
    int capacity;         // positions a plan row holds
    int tokens, start;
    int mode;             // 0: a plan's tiles, each row's candidates the keys before its tile, budget TopKBudget.ForTile;
                          // 1: rows_per_unit rows per query, candidates its visible keys, budget TopKBudget.For (the
                          //    oracle, the baselines' decode selectors); 2: `tokens` columns, k = capacity
    int rule;             // mode 0: BudgetRule (0 rounded, 1 reference)
    int page_size;        // mode 1: candidates are pages of this many keys (quest), ⌈budget / page_size⌉ of them; 1: keys
    double recent_fraction; // mode 1: the budget less ⌊recent_fraction · budget⌋ (lessismore's per-head share)
};

// Row `row`'s candidates n and Top-k k (at most the plan's capacity): mode 0 a tile's keys before it and
// TopKBudget.ForTile; mode 1 a query's visible keys (or their pages) and TopKBudget.For, less the recent share; mode 2
// the row's first `tokens` columns and k = capacity (CudaBackend.TopKRows).
__device__ __forceinline__ void select_row_budget(const SelectParams& p, int row, int start, int& n, int& k)
{
    if (p.mode == 2)
    {
        n = p.tokens;
        k = p.capacity;
    }
    else if (p.mode == 0)
    {
        Tile tile = tile_of(start, p.tokens, row / p.rows_per_unit);
        n = tile.candidate_end;
        k = budget_for_tile(tile, start + p.tokens, p.percent, p.rule);
    }
    else
    {
        int visible = start + row / p.rows_per_unit + 1;
        long long budget = budget_for(visible, p.percent);
        budget -= (long long)(p.recent_fraction * (double)budget);
        n = (visible + p.page_size - 1) / p.page_size;
        k = (int)min((budget + p.page_size - 1) / p.page_size, (long long)n);
    }
    k = min(k, min(n, p.capacity));
}

// A one-block Top-k kernel's row `row`: its candidates n and Top-k k (select_row_budget), its scores and plan row. Writes
// the row's count, and the whole row where k is every candidate; false when nothing is left to rank. Every thread of
// the block calls it.
__device__ __forceinline__ bool begin_topk_row(const SelectParams& p, int row, int& n, int& k, const float*& scores, int*& out)
{
    select_row_budget(p, row, start_position(p.start_at, p.start), n, k);
    scores = p.scores + (long)row * p.stride;
    out = p.indices + (long)row * p.capacity;
    if (threadIdx.x == 0) p.counts[row] = k;
    if (k == n)
        for (int i = threadIdx.x; i < n; i += blockDim.x) out[i] = i;
    return k > 0 && k < n;
}

// Larger float, larger key: the sign bit flipped for positives, every bit for negatives. −0 keys as +0, so that ties
// are the ties of Ranking.TopK's float comparisons (Quest's bounds and SparCas's partial scores can be −0; sampling's
// key, which keeps −0 below +0 as Sampling.OrderKey does, is its own).
__device__ __forceinline__ unsigned order_key(float f)
{
    unsigned u = __float_as_uint(f);
    u = u == 0x80000000u ? 0u : u;
    return u ^ ((u & 0x80000000u) ? 0xffffffffu : 0x80000000u);
}

// One radix pass's histogram over candidates [begin, end) of `scores`: histogram[(key >> shift) & 0xff] counts the
// keys whose bits under prefix_mask equal prefix. Each thread loads RADIX_LOADS scores before it counts them, so that
// many loads are in flight. (Counting once per distinct bin of a warp with match.any made the 512-row Top-k at 128k
// slower, 1.31 ms against 1.17 at the same occupancy on the H100: the shared atomics are not what limits it.) Every
// thread of the block calls it; the histogram is zeroed and synchronised by the caller.
#define RADIX_LOADS 4
__device__ __forceinline__ void radix_histogram(const float* scores, int begin, int end, unsigned prefix, unsigned prefix_mask, int shift, int* histogram)
{
    for (int base = begin; base < end; base += RADIX_LOADS * blockDim.x)
    {
        unsigned keys[RADIX_LOADS];
#pragma unroll
        for (int u = 0; u < RADIX_LOADS; u++)
        {
            int i = base + u * blockDim.x + threadIdx.x;
            keys[u] = i < end ? order_key(scores[i]) : 0u;
        }
#pragma unroll
        for (int u = 0; u < RADIX_LOADS; u++)
            if (base + u * (int)blockDim.x + (int)threadIdx.x < end && (keys[u] & prefix_mask) == prefix) atomicAdd(&histogram[(keys[u] >> shift) & 0xffu], 1);
    }
}

// The bin of a radix pass that holds the remaining-th largest key, found by one warp (every lane calls it): count(b)
// is bin b's count (a block's histogram, or a cluster's summed); `left` becomes how many of the chosen bin's keys
// complete the set. Scans 32 bins a step from the top, with a warp prefix sum.
template <class Count>
__device__ __forceinline__ void radix_find_bin(Count count, int remaining, int& chosen, int& left)
{
    const int lane = threadIdx.x & 31;
    int above = 0;
    chosen = -1;
    left = remaining;
    for (int base = 224; base >= 0 && chosen < 0; base -= 32)
    {
        const int c = count(base + lane);
        // Inclusive count from the top bin of this window down to base + lane (lane 31 holds the window's highest bin).
        int inclusive = c;
        for (int offset = 1; offset < 32; offset <<= 1)
        {
            int v = __shfl_down_sync(0xffffffffu, inclusive, offset);
            if (lane + offset < 32) inclusive += v;
        }
        const unsigned reached = __ballot_sync(0xffffffffu, above + inclusive >= left);
        if (reached != 0)
        {
            const int at = 31 - __clz(reached);                  // the highest bin at which the count reaches `left`
            const int before = __shfl_sync(0xffffffffu, inclusive - c, at);
            chosen = base + at;
            left -= above + before;
        }
        else
        {
            above += __shfl_sync(0xffffffffu, inclusive, 0);
        }
    }
}

// Exclusive prefix count of `flag` over the block in thread order, and the block's total. `warp_counts` holds one int
// per warp.
__device__ __forceinline__ int block_exclusive_count(bool flag, int* warp_counts, int* total)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    unsigned ballot = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    if (warp == 0)
    {
        int v = lane < warps ? warp_counts[lane] : 0, inclusive = v;
        for (int offset = 1; offset < 32; offset <<= 1)
        {
            int n = __shfl_up_sync(0xffffffffu, inclusive, offset);
            if (lane >= offset) inclusive += n;
        }
        if (lane < warps) warp_counts[lane] = inclusive - v;
        if (lane == 31) *total = inclusive;
    }
    __syncthreads();
    int before = warp_counts[warp] + __popc(ballot & ((1u << lane) - 1u));
    __syncthreads();
    return before;
}

// The ordered write of a radix Top-k over candidates [begin, end), once `prefix` (the k-th largest order key) is known:
// every candidate whose key_at(i) is above it at out[above_written + …], and those equal to it at out[above_total +
// ties_seen + …] while fewer than `remaining` ties are written, each in candidate order, as position_at(i) — the set
// Ranking.TopK chooses when candidates are in ascending position. above_written and ties_seen are what candidates
// before `begin` wrote and saw. Every thread of the block calls it.
template <class KeyAt, class PositionAt>
__device__ __forceinline__ void write_top_keys_of(KeyAt key_at, PositionAt position_at, int begin, int end, unsigned prefix, int remaining,
                                                  int above_total, int above_written, int ties_seen, int* out, int* warp_counts, int* shared_total)
{
    for (int base = begin; base < end; base += blockDim.x)
    {
        int i = base + threadIdx.x;
        unsigned key = i < end ? key_at(i) : 0u;
        bool above = i < end && key > prefix, tie = i < end && key == prefix;
        int above_before = block_exclusive_count(above, warp_counts, shared_total);
        int above_here = *shared_total;
        int tie_before = block_exclusive_count(tie, warp_counts, shared_total);
        int ties_here = *shared_total;
        if (above) out[above_written + above_before] = position_at(i);
        if (tie && ties_seen + tie_before < remaining) out[above_total + ties_seen + tie_before] = position_at(i);
        above_written += above_here;
        ties_seen += ties_here;
    }
}

// write_top_keys_of over positions [begin, end) of a score row.
__device__ __forceinline__ void write_top_keys(const float* scores, int begin, int end, unsigned prefix, int remaining, int above_total,
                                               int above_written, int ties_seen, int* out, int* warp_counts, int* shared_total)
{
    write_top_keys_of([&](int i) { return order_key(scores[i]); }, [](int i) { return i; }, begin, end, prefix, remaining, above_total,
                      above_written, ties_seen, out, warp_counts, shared_total);
}

// dots[i] = q_rows[i] · K for the first `rows` of ROWS query rows in shared memory (fp32 [ROWS][HEAD_DIM]) and one
// bf16 key row: the key is read once, 16 bytes at a time, for all of them. Rows past `rows` stay 0.
template <int ROWS>
__device__ __forceinline__ void key_dots(const bf16_t* key, const float (*q_rows)[HEAD_DIM], int rows, float (&dots)[ROWS])
{
#pragma unroll
    for (int i = 0; i < ROWS; i++) dots[i] = 0.0f;
    for (int d = 0; d < HEAD_DIM; d += 8)
    {
        float k8[8];
        load_bf16x8(key + d, k8);
#pragma unroll
        for (int i = 0; i < ROWS; i++)
        {
            if (i < rows)
            {
#pragma unroll
                for (int e = 0; e < 8; e++) dots[i] += q_rows[i][d + e] * k8[e];
            }
        }
    }
}

// The arguments of sparse attention over a plan (selection.cu's sparse_attention and sparse_decode, sparse_prefill.cu's
// sparse_prefill_mma, sparse_prefill_wgmma.cu's sparse_prefill_wgmma, attention_decode.cu's sparse_decode_mma;
// SparseParams in CudaBackend.Selection.cs).
struct SparseParams
{
    const float* q;          // fp32 [tokens, heads, HEAD_DIM]
    const bf16_t* k_cache;   // bf16 [kv_heads, capacity, HEAD_DIM], one layer (a batch: its first sequence's)
    const bf16_t* v_cache;   // bf16, as k_cache
    float* out;              // fp32 [tokens, heads, HEAD_DIM]
    const int* indices;      // int32 [plan rows, plan_capacity]
    const int* counts;       // int32 [plan rows]
    const int* start_at;     // the start position on the device (a step's), or null: start
    long long sequence_stride; // sparse_decode_mma and sparse_decode over a batch (the sequence in grid z): elements from
                             //    one sequence's k_cache/v_cache to the next's; its q/out rows and plan unit follow the sequence
    int tokens, heads, kv_heads, capacity, start;
    int plan_capacity;
    int rows_per_unit;       // plan rows per unit (its selectors)
    int tile_units;          // 1: units are the chunk's 32-query tiles and a query also attends its tile's diagonal keys up
                             //    to itself (Kascade); 0: a unit per query token, no diagonal (the oracle, streamingllm)
    int group_rows;          // 1: a KV head's query heads read one row (a per-KV-head map): sparse_decode serves them together
    int plan_settled;        // 1: an earlier layer's attention kernel has read the plan since it was written, so the
                             //    selection that wrote it has ended (sparse_decode_mma reads it before waiting)
    float scale;
    int head_map[64];        // query head → the plan row (selector) of its unit it reads
};
