// attention_mma: tensor-core prefill before Hopper (mma.sync.m16n8k16, sm_80+), ATT_WARPS warps of ATT_M_TILES
// 16-row tiles sharing one cp.async ring of ATT_STAGES K/V tiles. The scheme, the defines and the fragment layouts:
// attention_common.cuh.
#include "attention_common.cuh"

#if defined(ATT_DECODE) || defined(ATT_WGMMA)
#error "attention_mma.cu is compiled without ATT_DECODE and ATT_WGMMA"
#endif

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_mma(const AttentionParams p)
{
    extern __shared__ __align__(16) bf16_t shared[];
    bf16_t* q_tile = shared;                                     // [BLOCK_ROWS][TILE_STRIDE]
    bf16_t* ring = shared + BLOCK_ROWS * TILE_STRIDE;             // ATT_STAGES × (K, V) [ATT_KEYS][TILE_STRIDE]
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const BlockWork w = block_work(p);
    const int warp_row = w.block_row + warp * ATT_M_TILES * 16;
    const int warp_first_limit = min(w.start + warp_row / GROUP + 1, w.end);
    const int warp_last_key = w.start + min(warp_row + ATT_M_TILES * 16 - 1, w.rows - 1) / GROUP;

    const int tiles = w.end > w.begin ? (w.end - w.begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    const TileCopy copy = padded_tile_copy(threadIdx.x);
    auto stage = [&](int tile) {
        bf16_t* k_tile = ring + (tile % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        copy.stage(k_tile, k_tile + ATT_KEYS * TILE_STRIDE, w.k_cache, w.v_cache, w.begin + tile * ATT_KEYS, w.end, ROW_STEP * TILE_STRIDE);
    };
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++)
    {
        if (s < tiles) stage(s);
        copy_async_commit();
    }

    // The block's queries as bf16 in log2 units (scale · log2 e folded in); padding rows are zeros.
    const float log2e_scale = p.scale * 1.4426950408889634f;
    for (int i = threadIdx.x; i < BLOCK_ROWS * HEAD_DIM / 2; i += blockDim.x)
    {
        int r = i / (HEAD_DIM / 2), c = (i % (HEAD_DIM / 2)) * 2, row = w.block_row + r;
        float2 v = make_float2(0.0f, 0.0f);
        long q_row = w.q_row(row, p.heads);
        if (q_row >= 0) v = *reinterpret_cast<const float2*>(p.q + q_row * HEAD_DIM + c);
        *reinterpret_cast<unsigned*>(q_tile + r * TILE_STRIDE + c) = pack_bf16(v.x * log2e_scale, v.y * log2e_scale);
    }

    int limit[ATT_M_TILES][2];                                   // this thread's rows: warp_row + 16 mt + gr (+ 8)
    float o[ATT_M_TILES][HEAD_DIM / 8][4], m[ATT_M_TILES][2], l[ATT_M_TILES][2];
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
    {
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            limit[mt][h] = min(w.start + (warp_row + 16 * mt + gr + 8 * h) / GROUP + 1, w.end);
            m[mt][h] = neg_inf;
            l[mt][h] = 0.0f;
        }
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    }

    for (int j = 0; j < tiles; j++)
    {
        copy_async_wait<ATT_STAGES - 2>();                       // one group per tile (empty past the last)
        __syncthreads();                                         // tile j (and the queries) are in; every warp is done with tile j − 1
        if (j + ATT_STAGES - 1 < tiles) stage(j + ATT_STAGES - 1);
        copy_async_commit();
        const int k0 = w.begin + j * ATT_KEYS;
        if (warp_row >= w.rows || k0 > warp_last_key) continue;    // none of the warp's rows sees this tile
        const bf16_t* k_tile = ring + (j % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        const bf16_t* v_tile = k_tile + ATT_KEYS * TILE_STRIDE;

        // S = Q·K(j)ᵀ, the online softmax, O += P·V(j) (attention_common.cuh).
        float s[ATT_M_TILES][ATT_KEYS / 8][4];
        zero_scores(s);
        qk_tile(q_tile, warp_row - w.block_row, k_tile, lane, s);
        softmax_rescale(s, k0, warp_first_limit, limit, gc, m, l, o);
        pv_tile(s, v_tile, lane, o);
    }

    allow_dependent_launch();                                    // attention_combine may start launching
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            write_row(p, w, w.q_row(warp_row + 16 * mt + gr + 8 * h, p.heads), o[mt], h, m[mt][h], l[mt][h], gc);
}
