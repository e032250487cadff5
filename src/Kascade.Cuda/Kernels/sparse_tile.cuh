// A prefill tile's block in the sparse prefill kernels (sparse_prefill.cu on mma.sync, sparse_prefill_wgmma.cu on
// Hopper): the 32-query tile `unit` (grid x) of KV head g (grid y), its plan row (the row its GROUP query heads share)
// and the block's key order — the plan's positions 0 … count − 1 (all before the tile, seen by every query), then the
// tile's diagonal keys count … total − 1 (diagonal_start + i, seen by the queries at or after it). Include after
// attention_common.cuh (packed_row, quad_sum, store_row).
#pragma once
#include "plan_common.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(ATT_KEYS)
#error "HEAD_DIM, GROUP and ATT_KEYS must be defined"
#endif

struct SparseTile
{
    Tile tile;
    int start, rows, count, total;
    const int* listed;        // int32 [count]: the plan row's positions
    const bf16_t* k_cache;    // bf16 [capacity, HEAD_DIM]: KV head g's keys
    const bf16_t* v_cache;    // bf16, as k_cache

    // Row r (query tile.query_start + r / GROUP) sees keys below count + query − diagonal_start + 1; none for padding.
    __device__ __forceinline__ int row_limit(int r) const { return r < rows ? count + tile.query_start + r / GROUP - tile.diagonal_start + 1 : 0; }

    // The cache position of key `key` of the block's order (key < total).
    __device__ __forceinline__ int position(int key) const { return key < count ? listed[key] : tile.diagonal_start + key - count; }

    // The q and output row of the tile's packed row r for KV head g, or −1 for a padding row.
    __device__ __forceinline__ long q_row(int r, int heads, int g) const { return r < rows ? packed_row(tile.query_start - start, heads, g, r) : -1; }
};

// Writes row h (0: g, 1: g + 8) of this thread's output fragment o as out row q_row (−1: a padding row), normalised by
// the row's sum, of which l is this thread's share (every lane calls it). A row that saw no key (an empty plan row and
// no diagonal) is zeros, as the CPU's.
__device__ __forceinline__ void write_sparse_row(float* out, long q_row, const float (*o)[4], int h, float l, int gc)
{
    const float sum = quad_sum(l);
    if (q_row < 0) return;
    store_row(out + q_row * HEAD_DIM, o, h, sum > 0.0f ? 1.0f / sum : 0.0f, gc);
}

__device__ __forceinline__ SparseTile sparse_tile(const SparseParams& p)
{
    const int unit = blockIdx.x, g = blockIdx.y;
    SparseTile t;
    t.start = start_position(p.start_at, p.start);
    t.tile = tile_of(t.start, p.tokens, unit);
    t.rows = (t.tile.query_end - t.tile.query_start) * GROUP;
    const int plan_row = unit * p.rows_per_unit + p.head_map[g * GROUP];
    t.count = p.counts[plan_row];
    t.listed = p.indices + (long)plan_row * p.plan_capacity;
    t.total = t.count + (t.tile.query_end - t.tile.diagonal_start);
    const long head = (long)g * p.capacity * HEAD_DIM;
    t.k_cache = p.k_cache + head;
    t.v_cache = p.v_cache + head;
    return t;
}

// The positions of the next gathered tile's ATT_KEYS keys, loaded a tile ahead by every warp (lane l holds key
// first + 32 j + l in word j) and handed to the lanes that copy each row by shuffles. Read just before its copies, a
// position is a dependent global load in front of them that stalls the warps' MMAs: ncu put the address arithmetic
// waiting on it at 43% of sparse_prefill_wgmma's stall samples, with the DRAM 6% busy (128k, session 13). The decode
// kernels' GatheredTiles (attention_decode.cu) holds its positions the same way.
struct HeldPositions
{
    static constexpr int Words = (ATT_KEYS + 31) / 32;
    int word[Words];

    // Loads the positions of keys first … first + ATT_KEYS − 1 of the block's order; −1 past its total.
    __device__ __forceinline__ void load(const SparseTile& block, int first)
    {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int j = 0; j < Words; j++)
        {
            const int key = first + 32 * j + lane;
            word[j] = 32 * j + lane < ATT_KEYS && key < block.total ? block.position(key) : -1;
        }
    }

    // The position of the held tile's row r (0 … ATT_KEYS − 1), or −1 past the block's keys; every lane of the warp calls it together.
    __device__ __forceinline__ int of(int r) const
    {
        int position = -1;
#pragma unroll
        for (int j = 0; j < Words; j++)
        {
            const int held = __shfl_sync(0xffffffffu, word[j], r & 31);
            if ((r >> 5) == j) position = held;
        }
        return position;
    }
};
