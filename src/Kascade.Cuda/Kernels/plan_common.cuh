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

// Larger float, larger key: the sign bit flipped for positives, every bit for negatives.
__device__ __forceinline__ unsigned order_key(float f)
{
    unsigned u = __float_as_uint(f);
    return u ^ ((u & 0x80000000u) ? 0xffffffffu : 0x80000000u);
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

// The ordered write of a radix Top-k over candidates [begin, end) of `scores`, once `prefix` (the k-th largest order
// key) is known: every key above it at out[above_written + …] in ascending position, and the keys equal to it, in
// ascending position, at out[above_total + ties_seen + …] while fewer than `remaining` ties are written — the set
// Ranking.TopK chooses. above_written and ties_seen are what slices before `begin` wrote and saw. Every thread of the
// block calls it.
__device__ __forceinline__ void write_top_keys(const float* scores, int begin, int end, unsigned prefix, int remaining, int above_total,
                                               int above_written, int ties_seen, int* out, int* warp_counts, int* shared_total)
{
    for (int base = begin; base < end; base += blockDim.x)
    {
        int i = base + threadIdx.x;
        unsigned key = i < end ? order_key(scores[i]) : 0u;
        bool above = i < end && key > prefix, tie = i < end && key == prefix;
        int above_before = block_exclusive_count(above, warp_counts, shared_total);
        int above_here = *shared_total;
        int tie_before = block_exclusive_count(tie, warp_counts, shared_total);
        int ties_here = *shared_total;
        if (above) out[above_written + above_before] = i;
        if (tie && ties_seen + tie_before < remaining) out[above_total + ties_seen + tie_before] = i;
        above_written += above_here;
        ties_seen += ties_here;
    }
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
