// Sparse attention of a prefill chunk over a Kascade tile plan on Hopper (sm_90a): sparse_prefill.cu's contract and
// key order — a block takes one 32-query tile of one KV head, whose GROUP query heads share the tile's plan row; its
// keys are the plan's positions 0 … count − 1 (all before the tile, seen by every query) then the tile's diagonal keys
// count … (diagonal_start + i, seen by the queries at or after it), so row r sees keys below count + query(r) −
// diagonal_start + 1 — on the warpgroup-MMA loop of the dense Hopper kernel (wgmma_attention.cuh's attend_ring), the
// K/V rows gathered by position into its swizzled ring. The mma.sync kernel (sparse_prefill_mma) ran the reuse layer
// at 76 ms a layer at 128k on the H100 (0.23× dense, session 12) against about 47 for its FLOPs at cuDNN's rate.
// Specialisation key: HEAD_DIM (64 or 128), GROUP (2, 4 or 8). Block: ATT_WARPS / 4 warpgroups of 64 rows, the tile's
// 32 · GROUP rows in grid z blocks of ATT_WARPS · 16 (GROUP 8: two); rows in attention_common.cuh's GQA-packed order.
#include "common.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP)
#error "HEAD_DIM and GROUP must be defined"
#endif
#if HEAD_DIM % 64 != 0 || (GROUP != 2 && GROUP != 4 && GROUP != 8)
#error "sparse_prefill_wgmma takes HEAD_DIM 64 or 128 and GROUP 2, 4 or 8"
#endif
// ATT_WARPS, ATT_M_TILES, ATT_KEYS, ATT_STAGES: the host's (Heuristics/TileKernels.cs, SparseWgmma).
#include "attention_common.cuh"
#include "plan_common.cuh"
#if ATT_M_TILES != 1 || (ATT_WARPS != 4 && ATT_WARPS != 8) || (TILE_SIZE * GROUP) % BLOCK_ROWS != 0
#error "sparse_prefill_wgmma runs whole warpgroups (ATT_WARPS 4 or 8, ATT_M_TILES 1) over a whole number of the tile's rows"
#endif
#include "sparse_tile.cuh"
#include "wgmma_attention.cuh"

// Grid: (units, kv_heads, 32 · GROUP / (ATT_WARPS · 16)), ATT_WARPS · 32 threads; dynamic shared memory: ATT_STAGES
// swizzled (K, V) tiles from a 1024-byte-aligned start (AttentionKernel.SharedBytes, as attention_wgmma's).
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) sparse_prefill_wgmma(const SparseParams p)
{
    extern __shared__ __align__(1024) unsigned char sparse_shared[];
    unsigned char* ring = swizzle_aligned(sparse_shared);
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const SparseTile block = sparse_tile(p);
    const int g = blockIdx.y;
    const int warp_row = blockIdx.z * BLOCK_ROWS + warp * 16;
    const int tiles = (block.total + ATT_KEYS - 1) / ATT_KEYS;

    __shared__ __align__(8) unsigned long long full[ATT_STAGES], empty[ATT_STAGES];
    init_ring(full, empty);
    static_assert(ATT_KEYS % ROW_STEP == 0, "a thread's rows copy.row + i · ROW_STEP stay inside the tile");
    // Each thread copies column `column` of its rows copy.row + i · ROW_STEP of a tile, gathered by position; attend_ring
    // fills tiles 0, 1, 2, … in order, so `held` has tile t's positions when t is filled.
    const TileCopy copy = swizzled_tile_copy();
    const int column = (int)(copy.source % HEAD_DIM);
    HeldPositions held;
    held.load(block, 0);
    auto fill = [&](bf16_t* k_tile, bf16_t* v_tile, int t) {
        const bool copies = STAGE_THREADS % CHUNKS_PER_ROW == 0 || copy.row < ROW_STEP;
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; i++)
        {
            const int position = held.of(copy.row + i * ROW_STEP);
            if (!copies) continue;
            const bool valid = position >= 0;
            const long at = valid ? (long)position * HEAD_DIM + column : 0;
            copy_async16(k_tile + copy.destination + i * ROW_STEP * 64, block.k_cache + at, valid);
            copy_async16(v_tile + copy.destination + i * ROW_STEP * 64, block.v_cache + at, valid);
        }
        held.load(block, (t + 1) * ATT_KEYS);
    };

    int limit[2];
    long q_row[2];
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        const int r = warp_row + gr + 8 * h;
        limit[h] = block.row_limit(r);
        q_row[h] = block.q_row(r, p.heads, g);
    }
    unsigned qa[1][HEAD_DIM / 16][4];
    query_fragments<1>(p.q, q_row, p.scale * 1.4426950408889634f, gc, qa);

    float o[HEAD_DIM / 8][4], m[2] = {neg_inf, neg_inf}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    attend_ring<1, false>(ring, full, empty, tiles, 0, fill, qa, 1.0f, block.row_limit(warp_row), limit, gc, lane, o, m, l);

#pragma unroll
    for (int h = 0; h < 2; h++) write_sparse_row(p.out, q_row[h], o, h, l[h], gc);
}
