// Kascade's anchor scores for a prefill chunk on tensor cores (issue 15 §3; on Hopper only for a GQA group of 1 — groups
// 2, 4 and 8 run anchor_scores_wgmma.cu there): for each 32-query tile and KV head, the
// GQA group's post-softmax probabilities of every key, summed over the tile's queries and the group — selection.cu's
// pooled_tile_scores (which stays the reference and serves the other poolings) with Q·Kᵀ on mma.sync, so the cost is
// that of the scores of a FlashAttention pass instead of CUDA-core dot products. Pass 1 finds each row's log-sum-exp
// online over its visible keys; pass 2 computes the scores again and sums exp(s − lse) down each key's column. The
// score matrix never leaves the registers, so memory is the chunk's output rows, whatever the context.
// Exactness: the queries are split into two bf16 halves (q = hi + lo, hi the bf16 rounding of q); the keys are bf16, a
// product of two bf16 values is exact in the fp32 accumulator, so the scores keep fp32 accuracy (the residual of the
// split is below 2^-16 of q) and the plans match the CPU reference's up to ties, as the exact kernels' do. With
// query_parts = 1 (--score-precision bf16) the query is rounded to bf16 unscaled and the scale applied to the fp32
// products: the exact scores of the rounded query from one MMA per score instead of two.
// Specialisation key: HEAD_DIM (a multiple of 32 up to 128) and GROUP (query heads per KV head, 1 to 8). Block: one
// (tile, KV head), GROUP warps of two 16-row mma tiles: the tile's 32 queries × GROUP heads in the GQA-packed row order
// of attention_common.cuh (row r: query r / GROUP, head KV head × GROUP + r % GROUP).
#include "common.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP)
#error "HEAD_DIM and GROUP must be defined"
#endif
// ATT_WARPS, ATT_M_TILES, ATT_KEYS, ATT_STAGES: the host's (Heuristics/TileKernels.cs, Mma).
#include "attention_common.cuh"
#include "plan_common.cuh"
#if BLOCK_ROWS != TILE_SIZE * GROUP
#error "a block's warps cover the tile's rows: ATT_WARPS · ATT_M_TILES · 16 = 32 · GROUP"
#endif
#include "anchor_common.cuh"

#define ANCHOR_ROWS (TILE_SIZE * GROUP)   // = ATT_WARPS · ATT_M_TILES · 16 = BLOCK_ROWS

// Starts copying keys [first, first + ATT_KEYS) of the KV head into a ring slot ([ATT_KEYS][TILE_STRIDE]); rows at or
// past `end` are zero-filled.
__device__ __forceinline__ void stage_keys(bf16_t* slot, const bf16_t* keys, int first, int end)
{
    for (int chunk = threadIdx.x; chunk < ATT_KEYS * CHUNKS_PER_ROW; chunk += blockDim.x)
    {
        int row = chunk / CHUNKS_PER_ROW, column = (chunk % CHUNKS_PER_ROW) * 8;
        bool valid = first + row < end;
        copy_async16(slot + row * TILE_STRIDE + column, keys + (valid ? (long)(first + row) * HEAD_DIM + column : 0), valid);
    }
}

// IBackend.PooledTileScores for pools = KvHeads (pooled_tile_scores' contract): scores[unit · kv_heads + g, j] for
// j < start + tokens. Grid: (units, kv_heads), ATT_WARPS · 32 threads, dynamic shared memory: the queries' two halves
// [ANCHOR_ROWS][TILE_STRIDE] and a ring of ATT_STAGES key tiles [ATT_KEYS][TILE_STRIDE], bf16.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) anchor_scores_mma(const AnchorScoreParams p)
{
    extern __shared__ __align__(16) bf16_t shared[];
    bf16_t* q_hi = shared;
    bf16_t* q_lo = q_hi + ANCHOR_ROWS * TILE_STRIDE;
    bf16_t* ring = q_lo + ANCHOR_ROWS * TILE_STRIDE;
    __shared__ float columns[ATT_WARPS][ATT_KEYS];           // pass 2: each warp's column sums, added in warp order
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const AnchorBlock block = anchor_block(p);
    const Tile tile = block.tile;
    const int start = p.start, g = blockIdx.y, rows = block.rows, end = block.end, tiles = block.tiles;
    const int warp_row = warp * ATT_M_TILES * 16;
    // The last key any of the warp's rows sees (its last real row's query), or −1 for a warp of padding rows.
    const int warp_last_key = warp_row < rows ? tile.query_start + (min(warp_row + ATT_M_TILES * 16, rows) - 1) / GROUP : -1;

    // Pass 1 and pass 2 each walk the key tiles through the ring; tile i of the walk of pass `pass` is number
    // pass · tiles + i of the block's stream of tiles.
    const int passes = p.post_softmax ? 2 : 1, stream = passes * tiles;
    stage_keys(ring, block.keys, 0, end);
    copy_async_commit();

    // The queries as bf16 halves in log2 units (scale · log2 e folded in), or rounded unscaled (one part, the scale
    // applied to the products); padding rows are zeros.
    const float log2e_scale = p.scale * 1.4426950408889634f;
    const bool split_query = p.query_parts == 2;
    for (int i = threadIdx.x; i < ANCHOR_ROWS * HEAD_DIM / 2; i += blockDim.x)
    {
        int r = i / (HEAD_DIM / 2), c = (i % (HEAD_DIM / 2)) * 2;
        float2 v = packed_query_pair(p.q, p.heads, g, tile.query_start - start, rows, r, c, split_query ? log2e_scale : 1.0f);
        unsigned hi = pack_bf16(v.x, v.y);
        *reinterpret_cast<unsigned*>(q_hi + r * TILE_STRIDE + c) = hi;
        if (split_query) *reinterpret_cast<unsigned*>(q_lo + r * TILE_STRIDE + c) = pack_bf16_residual(v.x, v.y, hi);
    }

    // This thread's rows: warp_row + 16 mt + gr (+ 8); a row sees keys below its limit (0 for padding rows).
    int limit[ATT_M_TILES][2];
    float m[ATT_M_TILES][2], l[ATT_M_TILES][2];
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            int r = warp_row + 16 * mt + gr + 8 * h;
            limit[mt][h] = r < rows ? tile.query_start + r / GROUP + 1 : 0;
            m[mt][h] = neg_inf;
            l[mt][h] = 0.0f;
        }

    for (int t = 0; t < stream; t++)
    {
        const int pass = t / tiles, j = t % tiles, k0 = j * ATT_KEYS;
        copy_async_wait<0>();
        __syncthreads();                                         // tile t is in; every warp is done with tile t − 1 and the columns
        if (t + 1 < stream)
        {
            stage_keys(ring + ((t + 1) % ATT_STAGES) * ATT_KEYS * TILE_STRIDE, block.keys, ((t + 1) % tiles) * ATT_KEYS, end);
        }
        copy_async_commit();
        const bool last_pass = pass == passes - 1;
        if (k0 > warp_last_key)
        {
            // None of the warp's rows sees this tile: its columns are zero.
            if (last_pass)
                for (int i = lane; i < ATT_KEYS; i += 32) columns[warp][i] = 0.0f;
        }
        else
        {
            float s[ATT_M_TILES][ATT_KEYS / 8][4];
            // s = Q(hi + lo)·Kᵀ in log2 units, or bf16(Q)·Kᵀ · scale · log2 e.
            const bf16_t* k_tile = ring + (t % ATT_STAGES) * ATT_KEYS * TILE_STRIDE;
            zero_scores(s);
            qk_tile(q_hi, warp_row, k_tile, lane, s);
            if (split_query)
            {
                qk_tile(q_lo, warp_row, k_tile, lane, s);
            }
            else
            {
#pragma unroll
                for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
                    for (int n = 0; n < ATT_KEYS / 8; n++)
#pragma unroll
                        for (int e = 0; e < 4; e++) s[mt][n][e] *= log2e_scale;
            }
            if (!last_pass)
            {
                // Pass 1: the running max and sum of 2^s over each row's visible keys.
#pragma unroll
                for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                    {
                        float tile_max = neg_inf;
#pragma unroll
                        for (int n = 0; n < ATT_KEYS / 8; n++)
#pragma unroll
                            for (int e = 0; e < 2; e++)
                                if (k0 + n * 8 + 2 * gc + e < limit[mt][h]) tile_max = fmaxf(tile_max, s[mt][n][2 * h + e]);
                        // The quad's four lanes hold the row's columns: they share one running max.
                        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
                        tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
                        float m_new = fmaxf(m[mt][h], tile_max);
                        if (m_new == neg_inf) continue;
                        float sum = 0.0f;
#pragma unroll
                        for (int n = 0; n < ATT_KEYS / 8; n++)
#pragma unroll
                            for (int e = 0; e < 2; e++)
                                if (k0 + n * 8 + 2 * gc + e < limit[mt][h]) sum += fast_exp2(s[mt][n][2 * h + e] - m_new);
                        l[mt][h] = l[mt][h] * fast_exp2(m[mt][h] - m_new) + sum;
                        m[mt][h] = m_new;
                    }
            }
            else
            {
                // Pass 2: each key's column summed over the warp's rows, then over the warps.
#pragma unroll
                for (int n = 0; n < ATT_KEYS / 8; n++)
                {
#pragma unroll
                    for (int e = 0; e < 2; e++)
                    {
                        int key = k0 + n * 8 + 2 * gc + e;
                        float total = 0.0f;
#pragma unroll
                        for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
                            for (int h = 0; h < 2; h++)
                            {
                                if (key < limit[mt][h])
                                {
                                    float v = s[mt][n][2 * h + e];
                                    total += p.post_softmax ? fast_exp2(v - m[mt][h]) : v * 0.6931471805599453f;
                                }
                            }
                        total += __shfl_xor_sync(0xffffffffu, total, 4);
                        total += __shfl_xor_sync(0xffffffffu, total, 8);
                        total += __shfl_xor_sync(0xffffffffu, total, 16);
                        if (gr == 0) columns[warp][n * 8 + 2 * gc + e] = total;
                    }
                }
            }
        }
        if (!last_pass && j == tiles - 1)
        {
            // Pass 1 is over: m becomes the row's log2-sum-exp, the quad's four shares of the sum added.
#pragma unroll
            for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                {
                    float sum = l[mt][h];
                    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
                    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
                    m[mt][h] = m[mt][h] == neg_inf ? neg_inf : m[mt][h] + __log2f(sum);
                }
        }
        if (last_pass)
        {
            __syncthreads();
            for (int i = threadIdx.x; i < ATT_KEYS; i += blockDim.x)
            {
                float total = 0.0f;
#pragma unroll
                for (int w = 0; w < ATT_WARPS; w++) total += columns[w][i];
                if (k0 + i < end) block.out[k0 + i] = total;
            }
        }
    }
    block.zero_later_keys();
}
