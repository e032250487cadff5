// What the tensor-core attention kernels share (attention_mma.cu, attention_wgmma.cu, attention_decode.cu): their
// parameter struct, K/V tile staging (TileCopy; the PTX wrappers are tensor_ptx.cuh's), a block's rows and keys
// (BlockWork), and the online softmax and output rows of the mma C layout. Specialisation key: HEAD_DIM (a multiple
// of 32 up to 128), GROUP (query heads per KV head), ATT_WARPS, ATT_M_TILES, ATT_KEYS, ATT_STAGES and ATT_WGMMA or
// ATT_DECODE (Heuristics/AttentionLaunch.cs, AttentionKernel).
#pragma once
#include "common.cuh"
#include "tensor_ptx.cuh"

#if !defined(HEAD_DIM) || !defined(GROUP) || !defined(ATT_WARPS) || !defined(ATT_M_TILES) || !defined(ATT_KEYS) || !defined(ATT_STAGES)
#error "HEAD_DIM, GROUP, ATT_WARPS, ATT_M_TILES, ATT_KEYS and ATT_STAGES must be defined"
#endif
#if HEAD_DIM % 32 != 0 || HEAD_DIM > 128
#error "the tensor-core kernels take a HEAD_DIM that is a multiple of 32 up to 128"
#endif

// Tensor-core attention (mma.sync.m16n8k16, bf16 in, fp32 accumulate; sm_80+): the FlashAttention-2 scheme with the
// GQA group packed into the rows, as FlashInfer does. Row r of a KV head is query token r / GROUP of query head KV head
// × GROUP + r % GROUP, so one K/V tile in shared memory serves every query head that reads it. attention_mma
// (attention_mma.cu) runs prefill before Hopper (attention_wgmma.cu on Hopper); attention_decode (attention_decode.cu)
// runs the few rows of a decode step. The defines (chosen by Heuristics/AttentionLaunch.cs):
//   ATT_WARPS    warps per block;
//   ATT_M_TILES  16-row tiles per warp: a K/V fragment read from shared memory feeds ATT_M_TILES mma's, which is what
//                keeps prefill off the shared-memory bandwidth limit (2 in prefill, as FlashAttention-2 does); in
//                attention_decode, 8-row tiles of the block's rows;
//   ATT_KEYS     keys per K/V tile;
//   ATT_STAGES   K/V tiles in a cp.async ring (the block's; in attention_decode each warp's): prefill is bound by the
//                tensor cores and wants two (tile j + 1 loads while tile j is computed), wgmma three.
// attention_mma stages its queries once (bf16, scaled into log2 units) and walks the keys of its split (the visible keys
// cut into gridDim.x ranges of whole tiles, computed here from the start position so that a recorded decode step
// replays at later positions). With one split it writes the normalised output; with several it writes (max, sum, unnormalised output)
// per row for attention_combine (flash-decoding).
// Fragment layouts (PTX ISA, mma.m16n8k16): g = lane / 4, c = lane % 4; A holds rows g and g+8, columns 2c, 2c+1
// and 2c+8, 2c+9; B holds rows 2c, 2c+1 and 2c+8, 2c+9 of column g; C holds rows g and g+8, columns 2c, 2c+1.
// Grid: (splits, row tiles, sequences × KV heads). Sequence s reads its cache sequence_stride elements after
// sequence s − 1's and its queries after sequence s − 1's `tokens` rows (batched decode: tokens = 1).
#define TILE_STRIDE (HEAD_DIM + 8)   // bf16 per shared row: the 16-byte pad puts the 8 rows of an ldmatrix on distinct banks
#if defined(ATT_DECODE)
#define BLOCK_ROWS (ATT_M_TILES * 8)                 // attention_decode: every warp of a block reads the same rows
#else
#define BLOCK_ROWS (ATT_WARPS * ATT_M_TILES * 16)
#endif

// The kernel's arguments (mirrored by AttentionParams in CudaBackend.Attention.cs).
struct AttentionParams
{
    const float* q;          // fp32 [sequences × tokens, heads, HEAD_DIM]
    const bf16_t* k_cache;   // bf16 [sequences][kv_heads, capacity, HEAD_DIM], sequences sequence_stride elements apart
    const bf16_t* v_cache;   // bf16, as k_cache
    float* out;              // fp32 [sequences × tokens, heads, HEAD_DIM]
    float* partial_out;      // fp32 [sequences × tokens × heads, splits, HEAD_DIM] (splits > 1 only)
    float* partial_ml;       // fp32 [sequences × tokens × heads, splits, 2]: max (natural-log units), sum
    const int* start_at;     // the start position on the device (a step's), or null: `start`
    long long sequence_stride;
    int tokens;              // query tokens per sequence
    int heads, kv_heads, capacity;
    int start;               // position of the first query token: token t sees keys [0, start + t]
    float scale;
    float* lse;              // fp32 [sequences × tokens, heads]: each row's natural-log log-sum-exp of its scaled scores
                             // (attention_wgmma_lse*, one split); null elsewhere
};

// Staging a K/V tile: the STAGE_THREADS threads that share a ring (a block's; in attention_decode a warp's) copy the
// tile's 16-byte chunks, chunk i of thread t being chunk t + i · STAGE_THREADS. A row has CHUNKS_PER_ROW chunks, so
// thread t always copies column (t % CHUNKS_PER_ROW) · 8 of rows t / CHUNKS_PER_ROW + i · ROW_STEP: its addresses are
// worked out once (TileCopy) and a tile costs one add per chunk. Threads past the last whole row of a pass (when
// CHUNKS_PER_ROW does not divide STAGE_THREADS) copy nothing.
#define CHUNKS_PER_ROW (HEAD_DIM / 8)
#if defined(ATT_DECODE)
#define STAGE_THREADS 32
#else
#define STAGE_THREADS (ATT_WARPS * 32)
#endif
#define ROW_STEP (STAGE_THREADS / CHUNKS_PER_ROW)
#define ROWS_PER_THREAD ((ATT_KEYS + ROW_STEP - 1) / ROW_STEP)

// A tile's K/V chunk: the decode kernels' stream with evict_first_policy (read once), prefill's with the default policy
// (the other query tiles read the same keys again from L2).
__device__ __forceinline__ unsigned long long stream_policy()
{
#if defined(ATT_DECODE)
    return evict_first_policy();
#else
    return 0;
#endif
}

__device__ __forceinline__ void stream_copy16(unsigned destination, const void* source, unsigned long long policy)
{
#if defined(ATT_DECODE)
    copy_async16(destination, source, policy);
#else
    copy_async16(destination, source);
#endif
}

__device__ __forceinline__ void stream_copy16(void* destination, const void* source, bool valid, unsigned long long policy)
{
#if defined(ATT_DECODE)
    copy_async16(destination, source, valid, policy);
#else
    copy_async16(destination, source, valid);
#endif
}

struct TileCopy
{
    int row;           // the thread's first row of a tile
    long source;       // element offset of its chunk in row `row` of a KV head's cache
    int destination;   // element offset of its chunk in row `row` of a ring slot (layout-specific)

    // Starts copying keys and values [first, first + ATT_KEYS) of one KV head into the slot at k_tile (K) and v_tile (V);
    // rows at or past `end` are zero-filled (masked keys then multiply zeros, never stale values that could be NaN).
    // A tile wholly before `end` (all but a split's last) copies without bounds checks: one instruction per chunk.
    // `row_step_elements` is the distance between a thread's rows in the slot (ROW_STEP rows).
    __device__ __forceinline__ void stage(bf16_t* k_tile, bf16_t* v_tile, const bf16_t* k_cache, const bf16_t* v_cache, int first, int end, int row_step_elements) const
    {
        copy_rows<true>(k_tile, v_tile, k_cache, v_cache, first, end, row_step_elements);
    }

    // The same for the keys alone (decode_scores.cu's decode_scores_mma).
    __device__ __forceinline__ void stage_keys(bf16_t* k_tile, const bf16_t* k_cache, int first, int end, int row_step_elements) const
    {
        copy_rows<false>(k_tile, nullptr, k_cache, nullptr, first, end, row_step_elements);
    }

    template <bool VALUES>
    __device__ __forceinline__ void copy_rows(bf16_t* k_tile, bf16_t* v_tile, const bf16_t* k_cache, const bf16_t* v_cache, int first, int end, int row_step_elements) const
    {
        if (STAGE_THREADS % CHUNKS_PER_ROW != 0 && row >= ROW_STEP) return;   // e.g. HEAD_DIM 96
        const long at = (long)first * HEAD_DIM + source;
        const unsigned long long policy = stream_policy();
        if (first + ATT_KEYS <= end)
        {
            const unsigned k_slot = shared_address(k_tile + destination), v_slot = VALUES ? shared_address(v_tile + destination) : 0u;
#pragma unroll
            for (int i = 0; i < ROWS_PER_THREAD; i++)
            {
                if (ATT_KEYS % ROW_STEP != 0 && row + i * ROW_STEP >= ATT_KEYS) break;
                stream_copy16(k_slot + i * row_step_elements * 2, k_cache + at + i * ROW_STEP * HEAD_DIM, policy);
                if (VALUES) stream_copy16(v_slot + i * row_step_elements * 2, v_cache + at + i * ROW_STEP * HEAD_DIM, policy);
            }
            return;
        }
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; i++)
        {
            if (ATT_KEYS % ROW_STEP != 0 && row + i * ROW_STEP >= ATT_KEYS) break;
            bool valid = first + row + i * ROW_STEP < end;
            long offset = valid ? at + (long)i * ROW_STEP * HEAD_DIM : 0;
            stream_copy16(k_tile + destination + i * row_step_elements, k_cache + offset, valid, policy);
            if (VALUES) stream_copy16(v_tile + destination + i * row_step_elements, v_cache + offset, valid, policy);
        }
    }
};

#if defined(ATT_DECODE)
// Sᵀ = K·Qᵀ for one K tile of a decode ring ([ATT_KEYS][TILE_STRIDE]): s[kt][nt] holds keys 16 kt + g (+ 8) × query
// rows 8 nt + 2c (+ 1) (the C fragment), q[p][nt][kc] Qᵀ's B fragments (k-step kc: dims 16 kc + 2c, + 1 and + 8, + 9
// of query row 8 nt + g); the PARTS query fragment sets are added (decode_scores.cu splits the queries into two bf16
// halves, attention_decode takes one).
template <int PARTS>
__device__ __forceinline__ void transposed_scores(const bf16_t* k_tile, int lane, const unsigned (&q)[PARTS][ATT_M_TILES][HEAD_DIM / 16][2],
                                                  float (&s)[ATT_KEYS / 16][ATT_M_TILES][4])
{
#pragma unroll
    for (int kt = 0; kt < ATT_KEYS / 16; kt++)
    {
#pragma unroll
        for (int nt = 0; nt < ATT_M_TILES; nt++) s[kt][nt][0] = s[kt][nt][1] = s[kt][nt][2] = s[kt][nt][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM / 16; kc++)
        {
            unsigned a[4];
            ldmatrix_x4(a, k_tile + (kt * 16 + (lane & 15)) * TILE_STRIDE + kc * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
                for (int part = 0; part < PARTS; part++) mma_bf16(s[kt][nt], a, q[part][nt][kc]);
        }
    }
}
#endif

// attention_mma's and attention_decode's rings: slot s holds K then V [ATT_KEYS][TILE_STRIDE] (padded rows); `thread`
// is the thread's index among the STAGE_THREADS that share the ring.
__device__ __forceinline__ TileCopy padded_tile_copy(int thread)
{
    int row = thread / CHUNKS_PER_ROW, column = (thread % CHUNKS_PER_ROW) * 8;
    return TileCopy{row, (long)row * HEAD_DIM + column, row * TILE_STRIDE + column};
}

// What a block of the tensor-core kernels works on. Grid: (splits, row tiles, sequences × KV heads); row r
// of a KV head is query token r / GROUP of query head KV head × GROUP + r % GROUP. Query token t sees keys
// [0, start + t]; the block's split walks keys [begin, end).
struct BlockWork
{
    int start;                    // position of the first query token
    int split, splits;
    int rows, block_row;          // the KV head's rows (tokens × GROUP); the block's first row
    int begin, end;
    const bf16_t* k_cache;        // the KV head's keys and values in this sequence's cache
    const bf16_t* v_cache;
    long q_base;                  // row r is q row q_base + (r / GROUP) · heads + r % GROUP

    __device__ long q_row(int row, int heads) const { return row < rows ? q_base + (long)(row / GROUP) * heads + row % GROUP : -1; }
};

__device__ __forceinline__ BlockWork block_work(const AttentionParams& p)
{
    BlockWork w;
    w.split = blockIdx.x;
    w.splits = gridDim.x;
    int row_tile = gridDim.y - 1 - blockIdx.y;                   // causal: the longest row tiles start first
    int g_kv = blockIdx.z % p.kv_heads, sequence = blockIdx.z / p.kv_heads;
    w.rows = p.tokens * GROUP;
    w.block_row = row_tile * BLOCK_ROWS;
    int last_row = min(w.block_row + BLOCK_ROWS, w.rows) - 1;
    w.start = start_position(p.start_at, p.start);
    const int visible = w.start + p.tokens;
    const int keys_per_split = ((visible + w.splits - 1) / w.splits + ATT_KEYS - 1) / ATT_KEYS * ATT_KEYS;
    w.begin = w.split * keys_per_split;
    w.end = min(w.start + last_row / GROUP + 1, w.begin + keys_per_split);
    long head = sequence * p.sequence_stride + (long)g_kv * p.capacity * HEAD_DIM;
    w.k_cache = p.k_cache + head;
    w.v_cache = p.v_cache + head;
    w.q_base = (long)sequence * p.tokens * p.heads + g_kv * GROUP;
    return w;
}

// The row of q (fp32 [tokens, heads, HEAD_DIM]) that row r of KV head g's GQA-packed rows is: query token
// first_token + r / GROUP of head g · GROUP + r % GROUP — the prefill tile kernels' row order.
__device__ __forceinline__ long packed_row(int first_token, int heads, int g, int r) { return (long)(first_token + r / GROUP) * heads + g * GROUP + r % GROUP; }

// Columns c, c + 1 of packed row r (packed_row) times `scale`, or zeros for a padding row (r ≥ rows): how the prefill
// tile kernels (anchor_prefill.cu, anchor_scores_wgmma.cu, sparse_prefill.cu) stage a tile's queries.
__device__ __forceinline__ float2 packed_query_pair(const float* q, int heads, int g, int first_token, int rows, int r, int c, float scale)
{
    if (r >= rows) return make_float2(0.0f, 0.0f);
    float2 v = *reinterpret_cast<const float2*>(q + packed_row(first_token, heads, g, r) * HEAD_DIM + c);
    return make_float2(v.x * scale, v.y * scale);
}

// The sum of a row's shares over the quad of lanes that hold it (the mma C layout: lanes 4g … 4g + 3 hold row g);
// every lane calls it.
__device__ __forceinline__ float quad_sum(float x)
{
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// Stores row h (0: g, 1: g + 8) of this thread's output fragment o (the mma C layout: columns 8n + 2c, 8n + 2c + 1)
// times `factor` into target, one fp32 row of HEAD_DIM.
__device__ __forceinline__ void store_row(float* target, const float (*o)[4], int h, float factor, int gc)
{
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
        *reinterpret_cast<float2*>(target + n * 8 + 2 * gc) = make_float2(o[n][2 * h] * factor, o[n][2 * h + 1] * factor);
}

// Writes row h (0: g, 1: g + 8) of this thread's output fragment o (the mma C layout: columns 8n + 2c, 8n + 2c + 1) as
// query row q_row (−1: a padding row): normalised with one split; with several, unnormalised with (max in natural-log
// units, sum) for attention_combine. m is in log2 units, l this thread's share of the row's sum: the quad's shares are
// added here, so every lane calls it.
__device__ __forceinline__ void write_row(const AttentionParams& p, const BlockWork& w, long q_row, const float (*o)[4], int h, float m, float l, int gc)
{
    l = quad_sum(l);
    if (q_row < 0) return;
    long out_row = w.splits == 1 ? q_row : q_row * w.splits + w.split;
    store_row((w.splits == 1 ? p.out : p.partial_out) + out_row * HEAD_DIM, o, h, w.splits == 1 ? 1.0f / l : 1.0f, gc);
    if (w.splits > 1 && gc == 0)
    {
        p.partial_ml[out_row * 2] = m * 0.6931471805599453f;
        p.partial_ml[out_row * 2 + 1] = l;
    }
}

// Writes row q_row's log-sum-exp of its scaled scores in natural-log units (m, the running max, is in log2 units) to
// p.lse, with one split (with several, attention_combine's caller merges the splits' (max, sum) instead); l is this
// thread's share of the sum, the quad's shares added here, so every lane calls it. Every row of a causal prefill sees
// at least its own key, so the sum is at least 1.
__device__ __forceinline__ void write_row_lse(const AttentionParams& p, const BlockWork& w, long q_row, float m, float l)
{
    l = quad_sum(l);
    if (w.splits == 1 && q_row >= 0 && (threadIdx.x & 3) == 0) p.lse[q_row] = (m + __log2f(l)) * 0.6931471805599453f;
}

// The online softmax of one tile of scores (log2 units, the mma C layout; this thread's rows g and g + 8 of its warp):
// masks keys at or past each row's limit, turns s into P = 2^(s − max), updates the running max m and sum l (per
// thread; the quad's sums are added at the end) and gives the factor the row's output must be rescaled by.
__device__ __forceinline__ void softmax_tile(float (*s)[4], int k0, int warp_first_limit, const int* limit, int gc, float* m, float* l, float* correction)
{
    const float neg_inf = __int_as_float(0xff800000);
    if (k0 + ATT_KEYS > warp_first_limit)                        // the tile crosses some row's last visible key
    {
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++)
        {
            int key = k0 + n * 8 + 2 * gc;
            if (key >= limit[0]) s[n][0] = neg_inf;
            if (key + 1 >= limit[0]) s[n][1] = neg_inf;
            if (key >= limit[1]) s[n][2] = neg_inf;
            if (key + 1 >= limit[1]) s[n][3] = neg_inf;
        }
    }
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        float t = neg_inf;
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++) t = fmaxf(t, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
        t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 1));
        t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 2));
        float m_new = fmaxf(m[h], t);
        // A row with no visible key yet keeps max −inf; 0 as the exponent base makes exp2 give 0, not NaN.
        float base = m_new == neg_inf ? 0.0f : m_new, sum = 0.0f;
        correction[h] = fast_exp2(m[h] - base);
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++)
        {
            s[n][2 * h] = fast_exp2(s[n][2 * h] - base);
            s[n][2 * h + 1] = fast_exp2(s[n][2 * h + 1] - base);
            sum += s[n][2 * h] + s[n][2 * h + 1];
        }
        l[h] = l[h] * correction[h] + sum;
        m[h] = m_new;
    }
}

// s += Q·Kᵀ for one K tile ([ATT_KEYS][TILE_STRIDE] bf16 in shared memory) and the warp's ATT_M_TILES 16-row tiles of
// q_tile (rows q_row0 + 16 mt + …, [rows][TILE_STRIDE] bf16): each K fragment serves all of them. mma C layout.
__device__ __forceinline__ void qk_tile(const bf16_t* q_tile, int q_row0, const bf16_t* k_tile, int lane, float (*s)[ATT_KEYS / 8][4])
{
#pragma unroll
    for (int kc = 0; kc < HEAD_DIM / 32; kc++)
    {
        unsigned qa[ATT_M_TILES][2][4];
#pragma unroll
        for (int mt = 0; mt < ATT_M_TILES; mt++)
        {
            const bf16_t* qp = q_tile + (q_row0 + 16 * mt + (lane & 15)) * TILE_STRIDE + kc * 32 + (lane >> 4) * 8;
            ldmatrix_x4(qa[mt][0], qp);
            ldmatrix_x4(qa[mt][1], qp + 16);
        }
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++)
        {
            unsigned b[4];
            ldmatrix_x4(b, k_tile + (n * 8 + (lane & 7)) * TILE_STRIDE + kc * 32 + (lane >> 3) * 8);
#pragma unroll
            for (int mt = 0; mt < ATT_M_TILES; mt++)
            {
                mma_bf16(s[mt][n], qa[mt][0], b);
                mma_bf16(s[mt][n], qa[mt][1], b + 2);
            }
        }
    }
}

__device__ __forceinline__ void zero_scores(float (*s)[ATT_KEYS / 8][4])
{
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
}

// For each of the warp's row tiles: the online softmax of its scores (softmax_tile) and, where a running max moved, the
// output rows rescaled. s becomes P.
__device__ __forceinline__ void softmax_rescale(float (*s)[ATT_KEYS / 8][4], int k0, int warp_first_limit, const int (*limit)[2], int gc,
                                                float (*m)[2], float (*l)[2], float (*o)[HEAD_DIM / 8][4])
{
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
    {
        float correction[2];
        softmax_tile(s[mt], k0, warp_first_limit, limit[mt], gc, m[mt], l[mt], correction);
        if (__any_sync(0xffffffffu, correction[0] != 1.0f || correction[1] != 1.0f))   // the running max moved
        {
#pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; n++)
            {
                o[mt][n][0] *= correction[0]; o[mt][n][1] *= correction[0];
                o[mt][n][2] *= correction[1]; o[mt][n][3] *= correction[1];
            }
        }
    }
}

// O += P·V for one V tile ([ATT_KEYS][TILE_STRIDE] bf16, row-major): P's C fragments of key n-tiles 2kk and 2kk+1 are
// the A fragment of k-step kk; V's B fragments come transposed out of the tile, each serving the warp's row tiles.
__device__ __forceinline__ void pv_tile(const float (*s)[ATT_KEYS / 8][4], const bf16_t* v_tile, int lane, float (*o)[HEAD_DIM / 8][4])
{
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS / 16; kk++)
    {
        unsigned a[ATT_M_TILES][4];
#pragma unroll
        for (int mt = 0; mt < ATT_M_TILES; mt++)
        {
            a[mt][0] = pack_bf16(s[mt][2 * kk][0], s[mt][2 * kk][1]);
            a[mt][1] = pack_bf16(s[mt][2 * kk][2], s[mt][2 * kk][3]);
            a[mt][2] = pack_bf16(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
            a[mt][3] = pack_bf16(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int n2 = 0; n2 < HEAD_DIM / 16; n2++)
        {
            unsigned b[4];
            ldmatrix_x4_trans(b, v_tile + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * TILE_STRIDE + n2 * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int mt = 0; mt < ATT_M_TILES; mt++)
            {
                mma_bf16(o[mt][2 * n2], a[mt], b);
                mma_bf16(o[mt][2 * n2 + 1], a[mt], b + 2);
            }
        }
    }
}
