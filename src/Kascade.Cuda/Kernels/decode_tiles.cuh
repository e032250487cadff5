// Where attention_decode.cu's decode loop (decode_attend) reads a tile's rows from: the tile sources. Each gives the
// loop prefetch(first) (what a tile needs read ahead: a plan row's positions), stages_early(first, end) (whether the
// tile holds nothing this step writes, so the kernel may stage it before it waits for the kernel before it), stage
// (the tile's copies into a ring slot), limit (a row's visible-key bound) and, where reads_scores, read_scores (the
// tile's scores instead of K·Qᵀ). Included by attention_decode.cu (ATT_DECODE) after attention_common.cuh and
// plan_common.cuh.
#pragma once

// attention_decode's tiles: keys [first, first + ATT_KEYS) of the KV head in cache order; a row (query token t of
// the step) sees keys up to start + t.
struct CacheTiles
{
    static constexpr bool reads_scores = false;
    TileCopy copy;
    const bf16_t* k_cache;
    const bf16_t* v_cache;
    int first_new;           // the step's first position: rows before it are earlier steps' (rope_append writes it on)

    __device__ __forceinline__ void prefetch(int) {}
    __device__ __forceinline__ bool stages_early(int first, int) const { return first + ATT_KEYS <= first_new; }
    __device__ __forceinline__ void stage(bf16_t* k_tile, bf16_t* v_tile, int first, int end) const
    {
        copy.stage(k_tile, v_tile, k_cache, v_cache, first, end, ROW_STEP * TILE_STRIDE);
    }
    __device__ __forceinline__ int limit(const BlockWork& w, int row) const { return min(w.start + row / GROUP + 1, w.end); }
};

// A plan row's positions, read a tile ahead (prefetch, while the warp computes the tile before) and handed to the lanes
// that copy each row by a shuffle, so the gather adds no dependent load in front of the copies. Lane l holds the
// position of key first + 32 j + l in held[j]. Positions are read up to the row's capacity, not its count, so the first
// tile's are not a load behind the count (a position past the count is never gathered); through L2 (ld.cg), as they may
// be read before the kernel waits for the one before it, and a selection of this step wrote them.
static_assert(ATT_KEYS % ROW_STEP == 0 && 32 % ROW_STEP == 0, "a gathered tile's rows are whole ROW_STEPs of one held word");
#define HELD_WORDS ((ATT_KEYS + 31) / 32)
struct ListedRows
{
    const int* listed;       // the plan row's positions
    int capacity;            // the plan row's capacity
    int row, column;         // this lane's first row of a tile and its chunk's first dimension (padded_tile_copy's)
    int first_new;           // the step's first position, or 0 where the plan may still be being written
    int held[HELD_WORDS];

    // Whether the held tile (keys [first, end) of the row) names only rows before the step's: earlier steps' K/V, which
    // the kernel may gather before it waits (a settled plan's: first_new is 0 otherwise). Uniform over the warp.
    __device__ __forceinline__ bool before_step(int first, int end) const
    {
        const int lane = threadIdx.x & 31;
        bool before = true;
#pragma unroll
        for (int j = 0; j < HELD_WORDS; j++)
        {
            const int key = 32 * j + lane;
            before &= key >= ATT_KEYS || first + key >= end || held[j] < first_new;
        }
        return __all_sync(0xffffffffu, before);
    }

    __device__ __forceinline__ void prefetch(int first)
    {
        const int lane = threadIdx.x & 31;
#pragma unroll
        for (int j = 0; j < HELD_WORDS; j++)
        {
            int key = first + 32 * j + lane;
            held[j] = 32 * j + lane < ATT_KEYS && key < capacity ? __ldcg(listed + key) : 0;
        }
    }
    // Copies the held tile's rows (keys [first, end) of the row's order) from the cache rows they name: V's, and K's
    // with KEYS.
    template <bool KEYS>
    __device__ __forceinline__ void gather(bf16_t* k_tile, bf16_t* v_tile, const bf16_t* k_cache, const bf16_t* v_cache, int first, int end) const
    {
        const bool copies = STAGE_THREADS % CHUNKS_PER_ROW == 0 || row < ROW_STEP;   // e.g. HEAD_DIM 96: lanes past the last whole row copy nothing
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; i++)
        {
            const int r = row + i * ROW_STEP;
            const int position = __shfl_sync(0xffffffffu, held[(i * ROW_STEP) / 32], r % 32);
            if (!copies) continue;
            const bool valid = first + r < end;
            const long at = valid ? (long)position * HEAD_DIM + column : 0;
            if (KEYS) copy_async16(k_tile + r * TILE_STRIDE + column, k_cache + at, valid);
            copy_async16(v_tile + r * TILE_STRIDE + column, v_cache + at, valid);
        }
    }
};

// sparse_decode_mma's tiles: keys [first, first + ATT_KEYS) of a plan row's order, each gathered from the cache row its
// position names; every row of the block (one decode token's GQA group) sees all of them.
struct GatheredTiles
{
    static constexpr bool reads_scores = false;
    ListedRows rows;
    const bf16_t* k_cache;
    const bf16_t* v_cache;

    __device__ __forceinline__ void prefetch(int first) { rows.prefetch(first); }
    __device__ __forceinline__ bool stages_early(int first, int end) const { return rows.before_step(first, end); }
    __device__ __forceinline__ void stage(bf16_t* k_tile, bf16_t* v_tile, int first, int end) const
    {
        rows.gather<true>(k_tile, v_tile, k_cache, v_cache, first, end);
    }
    __device__ __forceinline__ int limit(const BlockWork& w, int) const { return w.end; }
};

// sparse_decode_scored's tiles: a Kascade anchor's own plan row, attended with the scores its selection computed
// (decode_scores_mma's raw rows, exact to fp32 as this loop's own) instead of scoring K again: only V is gathered, half
// the bytes of GatheredTiles. A ring stage's K slot holds the tile's scores instead, fp32 [GROUP][SCORED_STRIDE] in
// natural-log units, copied 4 bytes a score from raw[q_row, position] (lane l copies key l's, its position held).
#define SCORED_STRIDE (ATT_KEYS + 4)   // floats a row: the four rows a fragment's lanes read fall on distinct banks
static_assert(GROUP * SCORED_STRIDE * 4 <= ATT_KEYS * TILE_STRIDE * 2, "a tile's scores fit its K slot");
struct ScoredTiles
{
    static constexpr bool reads_scores = true;
    ListedRows rows;
    const bf16_t* v_cache;
    const float* raw;        // fp32 [sequences · heads, raw_stride]: the anchor's scores
    long long raw_stride;
    long q_base;             // the block's first query row (BlockWork's)

    __device__ __forceinline__ void prefetch(int first) { rows.prefetch(first); }
    __device__ __forceinline__ bool stages_early(int, int) const { return false; }   // the scores are this layer's
    __device__ __forceinline__ void stage(bf16_t* k_tile, bf16_t* v_tile, int first, int end) const
    {
        rows.gather<false>(nullptr, v_tile, nullptr, v_cache, first, end);
        const int lane = threadIdx.x & 31;
        float* scores = reinterpret_cast<float*>(k_tile);
#pragma unroll
        for (int j = 0; j < HELD_WORDS; j++)
        {
            const int key = 32 * j + lane;
            if (key >= ATT_KEYS) continue;
            const bool valid = first + key < end;
#pragma unroll
            for (int r = 0; r < GROUP; r++)
                copy_async4(scores + r * SCORED_STRIDE + key, raw + (valid ? (q_base + r) * raw_stride + rows.held[j] : 0), valid);
        }
    }
    // s[kt][nt] of the tile (transposed_scores's layout: keys 16 kt + g (+ 8) × query rows 8 nt + 2c (+ 1)) in log2
    // units; rows past the group are zeros, as their zero queries would score.
    __device__ __forceinline__ void read_scores(const bf16_t* k_tile, int lane, float (&s)[ATT_KEYS / 16][ATT_M_TILES][4]) const
    {
        const float* scores = reinterpret_cast<const float*>(k_tile);
        const int gr = lane >> 2, gc = lane & 3;
#pragma unroll
        for (int kt = 0; kt < ATT_KEYS / 16; kt++)
#pragma unroll
            for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    const int r = nt * 8 + 2 * gc + (e & 1);
                    s[kt][nt][e] = r < GROUP ? scores[r * SCORED_STRIDE + 16 * kt + gr + 8 * (e >> 1)] * 1.4426950408889634f : 0.0f;
                }
    }
    __device__ __forceinline__ int limit(const BlockWork& w, int) const { return w.end; }
};
