// Sparse attention of a prefill chunk over a Kascade plan on tensor cores (issue 15 §3: the reuse layers' and the
// anchors' own output): a block takes one 32-query tile of one KV head — its GROUP query heads share the tile's plan
// row, so 32 · GROUP rows share every gathered K/V tile, as attention_mma's rows share a dense one — and runs
// attention_mma's FlashAttention-2 loop over the row's positions followed by the tile's diagonal keys. K and V rows are
// gathered by position into the cp.async ring. The keys are numbered 0 … count − 1 (the plan's positions, all before
// the tile, seen by every query) then count … (the diagonal keys diagonal_start, diagonal_start + 1, …, each seen by
// the queries at or after it), so row r sees keys below count + query(r) − diagonal_start + 1: one limit per row, as in
// attention_common.cuh's softmax_tile. Specialisation key: HEAD_DIM (a multiple of 32 up to 128), GROUP (1 to 8).
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
#include "sparse_tile.cuh"

// Starts gathering keys and values [first, first + ATT_KEYS) of the block's key order into a ring slot (K then V,
// [ATT_KEYS][TILE_STRIDE] each) from their held positions, then loads the next tile's; keys at or past the block's
// total are zero-filled. Every thread runs the same number of steps (HeldPositions.of shuffles across the warp).
__device__ __forceinline__ void gather_tile(bf16_t* k_slot, bf16_t* v_slot, const SparseTile& block, HeldPositions& held, int first)
{
    for (int base = 0; base < ATT_KEYS * CHUNKS_PER_ROW; base += blockDim.x)
    {
        const int chunk = base + threadIdx.x;
        const int row = min(chunk / CHUNKS_PER_ROW, ATT_KEYS - 1), column = (chunk % CHUNKS_PER_ROW) * 8;
        const int position = held.of(row);
        if (chunk >= ATT_KEYS * CHUNKS_PER_ROW) continue;
        const bool valid = position >= 0;
        const long at = valid ? (long)position * HEAD_DIM + column : 0;
        copy_async16(k_slot + row * TILE_STRIDE + column, block.k_cache + at, valid);
        copy_async16(v_slot + row * TILE_STRIDE + column, block.v_cache + at, valid);
    }
    held.load(block, first + ATT_KEYS);
}

// Grid: (units, kv_heads), ATT_WARPS · 32 threads; dynamic shared memory: the queries [BLOCK_ROWS][TILE_STRIDE] and
// ATT_STAGES (K, V) tiles [ATT_KEYS][TILE_STRIDE], bf16.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) sparse_prefill_mma(const SparseParams p)
{
    extern __shared__ __align__(16) bf16_t shared[];
    bf16_t* q_tile = shared;
    bf16_t* ring = shared + BLOCK_ROWS * TILE_STRIDE;
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const SparseTile block = sparse_tile(p);
    const Tile tile = block.tile;
    const int g = blockIdx.y, start = block.start, rows = block.rows, total = block.total;
    const int warp_row = warp * ATT_M_TILES * 16;
    const int warp_first_limit = block.row_limit(warp_row);
    const int warp_last_key = warp_row < rows ? block.row_limit(min(warp_row + ATT_M_TILES * 16, rows) - 1) - 1 : -1;
    const int tiles = (total + ATT_KEYS - 1) / ATT_KEYS;

    HeldPositions held;
    held.load(block, 0);
    auto stage = [&](int t) {                                    // tiles are staged in order: held has tile t's positions
        bf16_t* k_slot = ring + (t % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        gather_tile(k_slot, k_slot + ATT_KEYS * TILE_STRIDE, block, held, t * ATT_KEYS);
    };
    if (tiles > 0) stage(0);
    copy_async_commit();

    // The tile's queries as bf16 in log2 units (scale · log2 e folded in); padding rows are zeros.
    const float log2e_scale = p.scale * 1.4426950408889634f;
    for (int i = threadIdx.x; i < BLOCK_ROWS * HEAD_DIM / 2; i += blockDim.x)
    {
        int r = i / (HEAD_DIM / 2), c = (i % (HEAD_DIM / 2)) * 2;
        float2 v = packed_query_pair(p.q, p.heads, g, tile.query_start - start, rows, r, c, log2e_scale);
        *reinterpret_cast<unsigned*>(q_tile + r * TILE_STRIDE + c) = pack_bf16(v.x, v.y);
    }

    int limit[ATT_M_TILES][2];
    float o[ATT_M_TILES][HEAD_DIM / 8][4], m[ATT_M_TILES][2], l[ATT_M_TILES][2];
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
    {
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            limit[mt][h] = block.row_limit(warp_row + 16 * mt + gr + 8 * h);
            m[mt][h] = neg_inf;
            l[mt][h] = 0.0f;
        }
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.0f;
    }

    for (int j = 0; j < tiles; j++)
    {
        copy_async_wait<0>();
        __syncthreads();                                         // tile j (and the queries) are in; every warp is done with tile j − 1
        if (j + 1 < tiles) stage(j + 1);
        copy_async_commit();
        const int k0 = j * ATT_KEYS;
        if (k0 > warp_last_key) continue;                        // none of the warp's rows sees this tile
        const bf16_t* k_tile = ring + (j % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        const bf16_t* v_tile = k_tile + ATT_KEYS * TILE_STRIDE;

        float s[ATT_M_TILES][ATT_KEYS / 8][4];
        zero_scores(s);
        qk_tile(q_tile, warp_row, k_tile, lane, s);
        softmax_rescale(s, k0, warp_first_limit, limit, gc, m, l, o);
        pv_tile(s, v_tile, lane, o);
    }

#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++) write_sparse_row(p.out, block.q_row(warp_row + 16 * mt + gr + 8 * h, p.heads, g), o[mt], h, l[mt][h], gc);
}
