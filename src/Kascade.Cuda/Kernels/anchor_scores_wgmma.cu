// Kascade's anchor scores for a prefill chunk on Hopper warpgroup MMA (issue 15 §3): anchor_prefill.cu's contract
// (IBackend.PooledTileScores, a pool per GQA group) and its two passes — pass 1 each row's log-sum-exp over its visible
// keys, pass 2 each key's post-softmax probability summed over the tile's 32 queries and the group — with both MMA
// operands read by the tensor cores from shared memory. Pass 1 computes S = Q·Kᵀ (the rows in M: a thread holds two
// rows of each 64-row tile, so the row statistics are a few registers); pass 2 computes Sᵀ = K·Qᵀ (the keys in M, the
// block's rows in N, 64 at a time): a thread then holds two keys × 16 rows of each 64, so a key's pooled sum is a sum
// in registers and a two-step quad reduction. The mma.sync kernel spends three shuffles per column and two block barriers per key tile
// on that sum, and ncu counts 0.53 warp instructions per score there with 37% of its issue slots busy (session 12,
// bench/results/kascade-h100-2026-12-06-s12.md); here the MMAs issue from one thread per warpgroup instruction and
// the elementwise work is the exponentials and their sums.
// Pass 1 keeps each thread's running (max, sum) over its own columns and merges the quad's once, at the end; only the
// tiles that reach the diagonal (the keys a later row of the tile sees and an earlier one does not) are masked. Both
// passes issue their 64-row wgmma groups in pairs and work on the first while the second runs.
// Exactness is anchor_prefill.cu's: the queries as bf16 hi + lo accumulated into one fp32 accumulator (products of
// bf16 values are exact), or with query_parts = 1 their bf16 rounding, the scale applied to the fp32 scores.
// Layer 0 in prefill skips pass 1: its dense pass (attention_wgmma_lse*, from the same scores) hands over the rows'
// log-sum-exp in p.row_lse, and the key stream is pass 2's tiles alone.
// Layout: the block's queries are staged once, each part in the swizzled layout of wgmma.cuh ([ROWS][HEAD_DIM] as
// HEAD_DIM / 64 regions), then the K tiles stream through a two-slot cp.async ring, pass 1's tiles then pass 2's.
// Specialisation key: HEAD_DIM (64 or 128) and GROUP (2, 4 or 8: ROWS = 32 · GROUP rows, a multiple of 64; GROUP 1
// and the other groups run anchor_scores_mma). Block: one (tile, KV head), one warpgroup; rows in the GQA-packed order
// of attention_common.cuh (row r: query r / GROUP, head KV head × GROUP + r % GROUP).
#include "common.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP)
#error "HEAD_DIM and GROUP must be defined"
#endif
// ATT_WARPS, ATT_M_TILES, ATT_KEYS, ATT_STAGES: the host's (Heuristics/TileKernels.cs, AnchorWgmma).
#include "attention_common.cuh"
#include "plan_common.cuh"
#include "anchor_common.cuh"
#include "wgmma.cuh"

#if HEAD_DIM % 64 != 0 || (GROUP != 2 && GROUP != 4 && GROUP != 8)
#error "anchor_scores_wgmma takes HEAD_DIM 64 or 128 and GROUP 2, 4 or 8"
#endif
#if ATT_WARPS != 4 || ATT_M_TILES != 1
#error "anchor_scores_wgmma runs one warpgroup (ATT_WARPS 4, ATT_M_TILES 1)"
#endif

#define ROWS (TILE_SIZE * GROUP)                     // the block's rows: 64, 128 or 256
#define M_TILES (ROWS / 64)                          // pass 1: 64-row wgmma tiles
#define N_CHUNKS (ROWS / 64)                         // pass 2: 64-row wgmma chunks (its N)
// Both passes issue their 64-row wgmma groups two at a time and work on the first while the second is on the tensor
// cores (wgmma.wait_group 1): 32 accumulator registers a group.
#define PAIR(count) ((count) < 2 ? (count) : 2)
#define K_STEPS (HEAD_DIM / 16)
#define TILE_ELEMENTS (ATT_KEYS * HEAD_DIM)          // bf16 per ring slot
#define QUERY_ELEMENTS (ROWS * HEAD_DIM)             // bf16 per query part

// The shared-memory byte offset of k-step ks in a swizzled [rows][HEAD_DIM] tile: region ks / 4 (rows · 128 bytes
// each), 32 bytes per k-step within it. Descriptor addresses count 16-byte units.
__device__ __forceinline__ unsigned long long k_step(int rows, int ks) { return (unsigned long long)(((ks / 4) * rows * 128 + (ks % 4) * 32) >> 4); }

// Issues d = A·Bᵀ over HEAD_DIM, the PARTS query parts accumulated, as one wgmma group (not waited for): A 64 rows at
// descriptor a (a_rows rows per region), B 64 rows at b (b_rows per region); the query parts are part_step apart in
// whichever operand holds the queries (a_parts or not).
template <int PARTS, bool A_PARTS>
__device__ __forceinline__ void issue_group(float* d, unsigned long long a, int a_rows, unsigned long long b, int b_rows, unsigned long long part_step)
{
#pragma unroll
    for (int part = 0; part < PARTS; part++)
#pragma unroll
        for (int ks = 0; ks < K_STEPS; ks++)
        {
            const unsigned long long a_at = a + (A_PARTS ? part * part_step : 0) + k_step(a_rows, ks);
            const unsigned long long b_at = b + (A_PARTS ? 0 : part * part_step) + k_step(b_rows, ks);
            if (part == 0 && ks == 0) wgmma_ss_m64n64k16<0>(d, a_at, b_at);
            else wgmma_ss_m64n64k16<1>(d, a_at, b_at);
        }
    wgmma_commit();
}

// n values (a power of two) combined by `op` as a tree: the upper half folded onto the lower, then the same on n / 2
// values, so a chain of dependent adds does not stall on each one's latency. Each level's loop has a constant trip
// count and unrolls fully, so every index is a constant and the values stay in registers (a loop that halves its width
// is not unrolled: the first version kept these arrays in local memory and ran at half the mma.sync kernel's speed).
template <int n, typename Op>
__device__ __forceinline__ float tree(float (&v)[n], Op op)
{
    static_assert((n & (n - 1)) == 0, "tree takes a power of two");
    if constexpr (n == 1)
    {
        return v[0];
    }
    else
    {
#pragma unroll
        for (int i = 0; i < n / 2; i++) v[i] = op(v[i], v[i + n / 2]);
        return tree<n / 2>(reinterpret_cast<float (&)[n / 2]>(v), op);
    }
}

struct Add
{
    __device__ __forceinline__ float operator()(float a, float b) const { return a + b; }
};

struct Max
{
    __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// IBackend.PooledTileScores for pools = KvHeads: scores[unit · kv_heads + g, j] for j < start + tokens, as
// anchor_scores_mma writes them, with PARTS query parts (p.query_parts; a template parameter so that the loops that
// issue the wgmma groups have constant bounds; the branch on post_softmax around pass 1 is the same for every thread). Grid: (units, kv_heads), 128 threads, dynamic shared memory: PARTS × [ROWS][HEAD_DIM] swizzled
// queries, two [ATT_KEYS][HEAD_DIM] swizzled key slots, ROWS floats of log-sum-exp, from a 1024-byte-aligned start
// (AnchorWgmmaShared in CudaBackend.AnchorPrefill.cs).
template <int PARTS>
__device__ __forceinline__ void anchor_scores(const AnchorScoreParams& p)
{
    extern __shared__ __align__(1024) unsigned char anchor_shared[];
    bf16_t* queries = reinterpret_cast<bf16_t*>(swizzle_aligned(anchor_shared));
    bf16_t* ring = queries + PARTS * QUERY_ELEMENTS;
    float* lse_rows = reinterpret_cast<float*>(ring + 2 * TILE_ELEMENTS);
    const float neg_inf = __int_as_float(0xff800000), pos_inf = __int_as_float(0x7f800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const AnchorBlock block = anchor_block(p);
    const Tile tile = block.tile;
    const int start = p.start, g = blockIdx.y, rows = block.rows, end = block.end, tiles = block.tiles;
    // Key tiles before `clear` are seen by every row of the tile (the first row sees keys ≤ query_start): no mask.
    const int clear = (tile.query_start + 1) / ATT_KEYS;
    const bool post_softmax = p.post_softmax != 0;
    // Pass 1 only where the rows' log-sum-exp is not given.
    const bool given_lse = p.row_lse != nullptr;
    const int passes = post_softmax && !given_lse ? 2 : 1, stream = passes * tiles;

    const TileCopy copy = swizzled_tile_copy();
    auto stage = [&](int t) { copy.stage_keys(ring + (t % 2) * TILE_ELEMENTS, block.keys, (t % tiles) * ATT_KEYS, end, ROW_STEP * 64); };
    stage(0);
    copy_async_commit();

    // The queries, swizzled, in log2 units (exact: hi + lo with scale · log2 e folded in) or rounded unscaled (the
    // scale applied to the fp32 scores: `unit_scale`); padding rows are zeros.
    const float log2e_scale = p.scale * 1.4426950408889634f;
    constexpr bool split_query = PARTS == 2;
    const float unit_scale = split_query ? 1.0f : log2e_scale;  // score · unit_scale = the score in log2 units
    for (int i = threadIdx.x; i < ROWS * HEAD_DIM / 2; i += blockDim.x)
    {
        int r = i / (HEAD_DIM / 2), c = (i % (HEAD_DIM / 2)) * 2;
        float2 v = packed_query_pair(p.q, p.heads, g, tile.query_start - start, rows, r, c, split_query ? log2e_scale : 1.0f);
        int at = swizzled_offset(ROWS, r, c);
        unsigned hi = pack_bf16(v.x, v.y);
        *reinterpret_cast<unsigned*>(queries + at) = hi;
        if (split_query) *reinterpret_cast<unsigned*>(queries + QUERY_ELEMENTS + at) = pack_bf16_residual(v.x, v.y, hi);
    }
    fence_proxy_async();

    const unsigned long long query_descriptor = swizzled_descriptor(queries, 16, 1024);
    const unsigned long long slot_descriptor = swizzled_descriptor(ring, 16, 1024);
    const unsigned long long part_step = (QUERY_ELEMENTS * 2) >> 4, slot_step = (TILE_ELEMENTS * 2) >> 4;

    // Tile t of the stream (pass t / tiles) has landed and every warp is done with tile t − 1; start tile t + 1.
    auto next = [&](int t) {
        copy_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
        if (t + 1 < stream) stage(t + 1);
        copy_async_commit();
    };

    // Pass 1: each thread's running max (raw score units) and sum of 2^((s − max) · unit_scale) over its columns of
    // rows 64 mt + 16 warp + gr (+ 8).
    float m[M_TILES][2], l[M_TILES][2];
#pragma unroll
    for (int mt = 0; mt < M_TILES; mt++)
        for (int h = 0; h < 2; h++) { m[mt][h] = neg_inf; l[mt][h] = 0.0f; }
    if (post_softmax && given_lse)
    {
        // Natural-log units to log2 ones; written before pass 2's first barrier, which orders them before its reads.
        for (int row = threadIdx.x; row < ROWS; row += blockDim.x)
            lse_rows[row] = row < rows ? p.row_lse[packed_row(tile.query_start - start, p.heads, g, row)] * 1.4426950408889634f : pos_inf;
    }
    else if (post_softmax)
    {
        for (int j = 0; j < tiles; j++)
        {
            next(j);
            const int k0 = j * ATT_KEYS;
            const unsigned long long slot = slot_descriptor + (j % 2) * slot_step;
#pragma unroll
            for (int mt0 = 0; mt0 < M_TILES; mt0 += PAIR(M_TILES))
            {
                float s[PAIR(M_TILES)][ATT_KEYS / 2];
                wgmma_fence();
#pragma unroll
                for (int b = 0; b < PAIR(M_TILES); b++)
                    issue_group<PARTS, true>(s[b], query_descriptor + (((mt0 + b) * 64 * 128) >> 4), ROWS, slot, ATT_KEYS, part_step);
#pragma unroll
                for (int b = 0; b < PAIR(M_TILES); b++)
                {
                    if (b + 1 < PAIR(M_TILES)) wgmma_wait<1>();
                    else wgmma_wait_all();
#pragma unroll
                    for (int h = 0; h < 2; h++)
                    {
                        const int mt = mt0 + b, row = mt * 64 + warp * 16 + gr + 8 * h;
                        // Row `row` sees keys ≤ query_start + row / GROUP (none for a padding row).
                        const int last = row < rows ? tile.query_start + row / GROUP : -1;
                        float v[ATT_KEYS / 4], w[ATT_KEYS / 4];
#pragma unroll
                        for (int n = 0; n < ATT_KEYS / 8; n++)
#pragma unroll
                            for (int e = 0; e < 2; e++)
                            {
                                float x = s[b][4 * n + 2 * h + e];
                                v[2 * n + e] = w[2 * n + e] = j < clear || k0 + 8 * n + 2 * gc + e <= last ? x : neg_inf;
                            }
                        const float m_new = fmaxf(m[mt][h], tree(w, Max{}));
                        if (m_new == neg_inf) continue;
                        const float shift = m_new * unit_scale;
#pragma unroll
                        for (int i = 0; i < ATT_KEYS / 4; i++) v[i] = fast_exp2(fmaf(v[i], unit_scale, -shift));
                        // m · unit_scale − shift, not an fma: exactly 0 while the max stays, where the fma's exact
                        // product left the rounding of shift and the sum drifted by it every tile (bf16 scores: about
                        // 7e-4 relative over 128k keys, emulated in session 13's review).
                        l[mt][h] = l[mt][h] * fast_exp2(m[mt][h] * unit_scale - shift) + tree(v, Add{});
                        m[mt][h] = m_new;
                    }
                }
            }
        }
        // The quad's four shares merged: each row's log2-sum-exp in log2 units (+∞ for a padding row, so that pass 2's
        // 2^(s − lse) is 0 there).
#pragma unroll
        for (int mt = 0; mt < M_TILES; mt++)
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                float row_max = fmaxf(m[mt][h], __shfl_xor_sync(0xffffffffu, m[mt][h], 1));
                row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 2));
                float share = row_max == neg_inf ? 0.0f : l[mt][h] * fast_exp2((m[mt][h] - row_max) * unit_scale);
                share += __shfl_xor_sync(0xffffffffu, share, 1);
                share += __shfl_xor_sync(0xffffffffu, share, 2);
                const int row = mt * 64 + warp * 16 + gr + 8 * h;
                if (gc == 0) lse_rows[row] = row < rows && row_max != neg_inf ? row_max * unit_scale + __log2f(share) : pos_inf;
            }
    }

    // Pass 2: Sᵀ for keys k0 + 16 warp + gr (+ 8) × rows 64 nc + 8 n + 2 gc (+ 1); the lse of this thread's rows is read
    // once (the barrier of the first pass-2 tile orders it after pass 1's writes).
    float lse[N_CHUNKS][8][2];
    for (int j = 0; j < tiles; j++)
    {
        const int t = (passes - 1) * tiles + j;
        next(t);
        if (j == 0)
        {
#pragma unroll
            for (int nc = 0; nc < N_CHUNKS; nc++)
#pragma unroll
                for (int n = 0; n < 8; n++)
#pragma unroll
                    for (int e = 0; e < 2; e++) lse[nc][n][e] = post_softmax ? lse_rows[nc * 64 + 8 * n + 2 * gc + e] : 0.0f;
        }
        const int k0 = j * ATT_KEYS;
        const unsigned long long slot = slot_descriptor + (t % 2) * slot_step;
        float key_sum[2] = {0.0f, 0.0f};
#pragma unroll
        for (int nc0 = 0; nc0 < N_CHUNKS; nc0 += PAIR(N_CHUNKS))
        {
            float s[PAIR(N_CHUNKS)][32];
            wgmma_fence();
#pragma unroll
            for (int b = 0; b < PAIR(N_CHUNKS); b++)
                issue_group<PARTS, false>(s[b], slot, ATT_KEYS, query_descriptor + (((nc0 + b) * 64 * 128) >> 4), ROWS, part_step);
#pragma unroll
            for (int b = 0; b < PAIR(N_CHUNKS); b++)
            {
                if (b + 1 < PAIR(N_CHUNKS)) wgmma_wait<1>();
                else wgmma_wait_all();
                const int nc = nc0 + b;
#pragma unroll
                for (int h = 0; h < 2; h++)
                {
                    const int key = k0 + warp * 16 + gr + 8 * h;
                    // Rows that see `key`: row / GROUP ≥ key − query_start, i.e. row ≥ (key − query_start) · GROUP.
                    const int first_row = (key - tile.query_start) * GROUP - nc * 64;
                    float v[16];
#pragma unroll
                    for (int n = 0; n < 8; n++)
#pragma unroll
                        for (int e = 0; e < 2; e++)
                        {
                            float x = s[b][4 * n + 2 * h + e];
                            float pooled = post_softmax ? fast_exp2(fmaf(x, unit_scale, -lse[nc][n][e])) : x * unit_scale * 0.6931471805599453f;
                            v[2 * n + e] = j < clear || 8 * n + 2 * gc + e >= first_row ? pooled : 0.0f;
                        }
                    key_sum[h] += tree(v, Add{});
                }
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++)
        {
            float total = key_sum[h];
            total += __shfl_xor_sync(0xffffffffu, total, 1);
            total += __shfl_xor_sync(0xffffffffu, total, 2);
            const int key = k0 + warp * 16 + gr + 8 * h;
            if (gc == h && key < end) block.out[key] = total;
        }
    }
    block.zero_later_keys();
}

extern "C" __global__ void __launch_bounds__(128) anchor_scores_wgmma(const AnchorScoreParams p) { anchor_scores<2>(p); }

// ScorePrecision.Bf16: the queries' bf16 rounding, one MMA per score.
extern "C" __global__ void __launch_bounds__(128) anchor_scores_wgmma_bf16(const AnchorScoreParams p) { anchor_scores<1>(p); }
