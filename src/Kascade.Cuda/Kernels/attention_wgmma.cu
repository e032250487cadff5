// Hopper (sm_90a) dense prefill: attention_mma's scheme on warpgroup MMA, pipelined as FlashAttention-3 does within a
// warpgroup (wgmma_attention.cuh's attend_ring). A block is ATT_WARPS / 4 warpgroups of 64 rows of one KV head sharing
// one ring of contiguous K/V tiles; with several key splits it writes (max, sum, unnormalised output) per row for
// attention_combine.
#include "attention_common.cuh"
#include "wgmma_attention.cuh"

#if !defined(ATT_WGMMA)
#error "attention_wgmma.cu needs ATT_WGMMA"
#endif

// The kernel for PARTS query parts; SCALE_SCORES: the queries rounded unscaled and the scale applied to the scores;
// WRITE_LSE: each row's log-sum-exp written to p.lse with one split (with several, the host merges the splits').
template <int PARTS, bool SCALE_SCORES, bool WRITE_LSE>
__device__ __forceinline__ void attention_wgmma_rows(const AttentionParams& p)
{
    extern __shared__ __align__(1024) unsigned char wg_shared[];
    unsigned char* ring = swizzle_aligned(wg_shared);
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const BlockWork w = block_work(p);
    const int warp_row = w.block_row + warp * 16;
    const int warp_first_limit = min(w.start + warp_row / GROUP + 1, w.end);

    const int tiles = w.end > w.begin ? (w.end - w.begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    __shared__ __align__(8) unsigned long long full[ATT_STAGES], empty[ATT_STAGES];
    init_ring(full, empty);
    const TileCopy copy = swizzled_tile_copy();
    auto fill = [&](bf16_t* k_tile, bf16_t* v_tile, int tile) {
        copy.stage(k_tile, v_tile, w.k_cache, w.v_cache, w.begin + tile * ATT_KEYS, w.end, ROW_STEP * 64);
    };

    // The warp's 16 query rows (in log2 units unless SCALE_SCORES); padding rows zero.
    int limit[2];
    long q_row[2];
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        int row = warp_row + gr + 8 * h;
        limit[h] = min(w.start + row / GROUP + 1, w.end);
        q_row[h] = w.q_row(row, p.heads);
    }
    const float log2e_scale = p.scale * 1.4426950408889634f;
    unsigned qa[PARTS][HEAD_DIM / 16][4];
    query_fragments<PARTS>(p.q, q_row, SCALE_SCORES ? 1.0f : log2e_scale, gc, qa);

    float o[HEAD_DIM / 8][4], m[2] = {neg_inf, neg_inf}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    attend_ring<PARTS, SCALE_SCORES>(ring, full, empty, tiles, w.begin, fill, qa, log2e_scale, warp_first_limit, limit, gc, lane, o, m, l);

#pragma unroll
    for (int h = 0; h < 2; h++)
        if constexpr (WRITE_LSE) write_row_lse(p, w, q_row[h], m[h], l[h]);
    allow_dependent_launch();                                    // attention_combine may start launching
#pragma unroll
    for (int h = 0; h < 2; h++) write_row(p, w, q_row[h], o, h, m[h], l[h], gc);
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_wgmma(const AttentionParams p) { attention_wgmma_rows<1, false, false>(p); }

// Kascade's layer 0 in prefill: its dense output and each row's log-sum-exp, which the anchor scores then take instead
// of their first pass (anchor_scores_wgmma.cu) — from the same scores as theirs: the fp32 query as bf16 hi + lo (exact)
// or its unscaled bf16 rounding with the scale applied to the scores (ScorePrecision.Bf16).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_wgmma_lse(const AttentionParams p) { attention_wgmma_rows<2, false, true>(p); }

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_wgmma_lse_bf16(const AttentionParams p) { attention_wgmma_rows<1, true, true>(p); }
