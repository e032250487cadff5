// The arguments of the anchors' pooled-score kernels: anchor_prefill.cu's anchor_scores_mma (mma.sync, any tensor-core
// GPU) and anchor_scores_wgmma.cu's anchor_scores_wgmma (Hopper), which share one contract (IBackend.PooledTileScores
// with a pool per GQA group) and one host struct (AnchorScoreParams in CudaBackend.AnchorPrefill.cs).
#pragma once
#include "common.cuh"
#include "plan_common.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(ATT_KEYS)
#error "HEAD_DIM, GROUP and ATT_KEYS must be defined"
#endif

struct AnchorScoreParams
{
    const float* q;          // fp32 [tokens, heads, HEAD_DIM]
    const bf16_t* k_cache;   // bf16 [kv_heads, capacity, HEAD_DIM], one layer
    float* scores;           // fp32 [units · kv_heads, stride]: row unit · kv_heads + g
    long long stride;        // elements per scores row (≥ start + tokens)
    int tokens, heads, kv_heads, capacity, start;
    int post_softmax;        // 1: exp(s − lse) summed (the paper); 0: the raw scaled scores summed (--pooling pre)
    int query_parts;         // 2: the fp32 query as bf16 hi + lo (exact); 1: its bf16 rounding (ScorePrecision.Bf16);
                             //    anchor_scores_wgmma takes it from its entry point instead (one per setting)
    float scale;
    const float* row_lse;    // fp32 [tokens, heads]: each row's natural-log log-sum-exp from layer 0's dense pass
                             //    (attention_wgmma_lse*, the same scores), which anchor_scores_wgmma then takes instead of
                             //    its first pass; null: both passes (anchor_scores_mma always)
};

// A block's share of the work, the same in both kernels: the 32-query tile `unit` (grid x) of the chunk and KV head g
// (grid y); its rows (the tile's queries × GROUP, in the GQA-packed order); the keys it scores, [0, end) with end the
// tile's last query + 1, in `tiles` tiles of ATT_KEYS; and its output row.
struct AnchorBlock
{
    Tile tile;
    int rows, end, visible, tiles;
    const bf16_t* keys;   // bf16 [capacity, HEAD_DIM]: KV head g's keys
    float* out;           // fp32 [stride]: scores row unit · kv_heads + g

    // Keys after every query of the tile score 0 (the row spans the chunk's keys).
    __device__ __forceinline__ void zero_later_keys() const
    {
        for (int j = end + threadIdx.x; j < visible; j += blockDim.x) out[j] = 0.0f;
    }
};

__device__ __forceinline__ AnchorBlock anchor_block(const AnchorScoreParams& p)
{
    const int unit = blockIdx.x, g = blockIdx.y;
    AnchorBlock b;
    b.tile = tile_of(p.start, p.tokens, unit);
    b.rows = (b.tile.query_end - b.tile.query_start) * GROUP;
    b.end = b.tile.query_end;
    b.visible = p.start + p.tokens;
    b.tiles = (b.end + ATT_KEYS - 1) / ATT_KEYS;
    b.keys = p.k_cache + (long)g * p.capacity * HEAD_DIM;
    b.out = p.scores + ((long)unit * p.kv_heads + g) * p.stride;
    return b;
}

