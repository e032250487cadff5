// Shared by the kernels that write and read key plans (selection.cu, selectors.cu): the query tiles and Top-k budgets
// of TopKBudget computed on the device from the step's position, the order key a radix select ranks floats by, and a
// block-wide prefix count for ordered compaction.
#pragma once
#include "common.cuh"

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
