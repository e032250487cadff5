// Attention kernels. Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV head); the tensor-core
// kernels add ATT_WARPS, ATT_M_TILES, ATT_KEYS, ATT_STAGES and ATT_WGMMA or ATT_DECODE (Heuristics/AttentionLaunch.cs,
// AttentionKernel).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GROUP
#error "GROUP must be defined"
#endif
#include "warp_attention.cuh"

// The key orders warp_attention walks: every visible key, or a listed set.
struct AllKeys
{
    __device__ int operator()(int i) const { return i; }
};

struct ListedKeys
{
    const int* positions;
    __device__ int operator()(int i) const { return positions[i]; }
};

// Dense causal attention, one warp per (token, query head) over its visible keys. Runs the head dims
// attention_mma is not compiled for (e.g. 256). Block: 128 threads (4 warps).
extern "C" __global__ void attention_dense(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                           int tokens, int heads, int kv_heads, int capacity, int start, float scale, const int* start_at)
{
    start = start_position(start_at, start);
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int t = warp / heads, h = warp % heads, g = h / (heads / kv_heads);
    long head_offset = (long)g * capacity * HEAD_DIM, row = (long)t * heads + h;
    warp_attention(q + row * HEAD_DIM, k_cache + head_offset, v_cache + head_offset, scale, start + t + 1, AllKeys{}, out + row * HEAD_DIM, lane);
}

// Gathered attention: warp (token t, query head h) attends over positions[offsets[t·heads + h] …
// offsets[t·heads + h + 1]), the key sets the baselines choose on the host (DESIGN §4; exact, not fast).
// Block: 128 threads (4 warps).
extern "C" __global__ void attention_gathered(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                              const int* offsets, const int* positions, int tokens, int heads, int kv_heads, int capacity, float scale)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int h = warp % heads, g = h / (heads / kv_heads);
    long head_offset = (long)g * capacity * HEAD_DIM;
    int begin = offsets[warp];
    warp_attention(q + (long)warp * HEAD_DIM, k_cache + head_offset, v_cache + head_offset, scale, offsets[warp + 1] - begin,
                   ListedKeys{positions + begin}, out + (long)warp * HEAD_DIM, lane);
}

// Tensor-core attention (mma.sync.m16n8k16, bf16 in, fp32 accumulate; sm_80+): the FlashAttention-2 scheme with the
// GQA group packed into the rows, as FlashInfer does. Row r of a KV head is query token r / GROUP of query head KV head
// × GROUP + r % GROUP, so one K/V tile in shared memory serves every query head that reads it. attention_mma runs
// prefill before Hopper (attention_wgmma further down on Hopper); attention_decode, at the end, runs the few rows of a
// decode step. The defines (chosen by Heuristics/AttentionLaunch.cs):
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
#if HEAD_DIM % 32 == 0 && HEAD_DIM <= 128 && defined(ATT_WARPS)
#define TILE_STRIDE (HEAD_DIM + 8)   // bf16 per shared row: the 16-byte pad puts the 8 rows of an ldmatrix on distinct banks
#if defined(ATT_DECODE)
#define BLOCK_ROWS (ATT_M_TILES * 8)                 // attention_decode: every warp of a block reads the same rows
#else
#define BLOCK_ROWS (ATT_WARPS * ATT_M_TILES * 16)
#endif

// The kernel's arguments (mirrored by AttentionParams in CudaBackend.cs).
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
};

// Two floats as a bf16 pair (lo in the low half), rounded to nearest even in one instruction (sm_80+).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi)
{
    unsigned packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
}

// 2^x in one instruction (ex2.approx: 2 ulp, −inf → +0); the softmax is computed in log2 units for it.
__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ unsigned shared_address(const void* p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global → shared without passing through registers; zero-filled when !valid (the source is not read).
// .ca, not .cg: with 16 bytes a thread, the L1-bypassing .cg sent the L2 1.5 times the sectors the tiles hold (a third
// of them repeats), and decode took 5–7% longer (ncu on the H100, bench/results/attention-h100.md).
__device__ __forceinline__ void copy_async16(void* destination, const void* source, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(destination)), "l"(source), "r"(valid ? 16 : 0));
}

// The same for a chunk known to be in bounds (no source-size operand), its destination a shared-memory address.
__device__ __forceinline__ void copy_async16(unsigned destination, const void* source)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(destination), "l"(source));
}

__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void copy_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Orders this thread's generic-proxy shared-memory writes (cp.async) with later async-proxy reads of the same memory
// (wgmma, sm_90).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

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
        if (STAGE_THREADS % CHUNKS_PER_ROW != 0 && row >= ROW_STEP) return;   // e.g. HEAD_DIM 96
        const long at = (long)first * HEAD_DIM + source;
        if (first + ATT_KEYS <= end)
        {
            const unsigned k_slot = shared_address(k_tile + destination), v_slot = shared_address(v_tile + destination);
#pragma unroll
            for (int i = 0; i < ROWS_PER_THREAD; i++)
            {
                if (ATT_KEYS % ROW_STEP != 0 && row + i * ROW_STEP >= ATT_KEYS) break;
                copy_async16(k_slot + i * row_step_elements * 2, k_cache + at + i * ROW_STEP * HEAD_DIM);
                copy_async16(v_slot + i * row_step_elements * 2, v_cache + at + i * ROW_STEP * HEAD_DIM);
            }
            return;
        }
#pragma unroll
        for (int i = 0; i < ROWS_PER_THREAD; i++)
        {
            if (ATT_KEYS % ROW_STEP != 0 && row + i * ROW_STEP >= ATT_KEYS) break;
            bool valid = first + row + i * ROW_STEP < end;
            long offset = valid ? at + (long)i * ROW_STEP * HEAD_DIM : 0;
            copy_async16(k_tile + destination + i * row_step_elements, k_cache + offset, valid);
            copy_async16(v_tile + destination + i * row_step_elements, v_cache + offset, valid);
        }
    }
};

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

// Writes row h (0: g, 1: g + 8) of this thread's output fragment o (the mma C layout: columns 8n + 2c, 8n + 2c + 1) as
// query row q_row (−1: a padding row): normalised with one split; with several, unnormalised with (max in natural-log
// units, sum) for attention_combine. m is in log2 units, l this thread's share of the row's sum: the quad's shares are
// added here, so every lane calls it.
__device__ __forceinline__ void write_row(const AttentionParams& p, const BlockWork& w, long q_row, const float (*o)[4], int h, float m, float l, int gc)
{
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (q_row < 0) return;
    long out_row = w.splits == 1 ? q_row : q_row * w.splits + w.split;
    float* target = (w.splits == 1 ? p.out : p.partial_out) + out_row * HEAD_DIM;
    float factor = w.splits == 1 ? 1.0f / l : 1.0f;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
        *reinterpret_cast<float2*>(target + n * 8 + 2 * gc) = make_float2(o[n][2 * h] * factor, o[n][2 * h + 1] * factor);
    if (w.splits > 1 && gc == 0)
    {
        p.partial_ml[out_row * 2] = m * 0.6931471805599453f;
        p.partial_ml[out_row * 2 + 1] = l;
    }
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

#if !defined(ATT_DECODE)
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

        // S = Q·K(j)ᵀ: each K fragment serves the warp's ATT_M_TILES row tiles.
        float s[ATT_M_TILES][ATT_KEYS / 8][4];
#pragma unroll
        for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
            for (int n = 0; n < ATT_KEYS / 8; n++) s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM / 32; kc++)
        {
            unsigned qa[ATT_M_TILES][2][4];
#pragma unroll
            for (int mt = 0; mt < ATT_M_TILES; mt++)
            {
                const bf16_t* qp = q_tile + (warp_row - w.block_row + 16 * mt + (lane & 15)) * TILE_STRIDE + kc * 32 + (lane >> 4) * 8;
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

        // O += P·V(j): P's C fragments of key n-tiles 2kk and 2kk+1 are the A fragment of k-step kk; V's B fragments
        // come transposed out of the row-major tile, each serving the warp's ATT_M_TILES row tiles.
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

    allow_dependent_launch();                                    // attention_combine may start launching
#pragma unroll
    for (int mt = 0; mt < ATT_M_TILES; mt++)
#pragma unroll
        for (int h = 0; h < 2; h++)
            write_row(p, w, w.q_row(warp_row + 16 * mt + gr + 8 * h, p.heads), o[mt], h, m[mt][h], l[mt][h], gc);
}
#endif

#if defined(ATT_WGMMA)
// Hopper (sm_90a) prefill: attention_mma's scheme on warpgroup MMA, pipelined as FlashAttention-3 does within a
// warpgroup. A block is ATT_WARPS / 4 warpgroups of 64 rows sharing one K/V ring; S = Q·K(j)ᵀ and O += P·V(j) are
// wgmma.mma_async with the A operand (Q, then P) in registers and K/V read by the tensor cores straight from shared
// memory, so no K/V fragment passes through the register file. While the softmax of tile j + 1 runs, P(j)·V(j) is
// still on the tensor cores. K/V tiles are staged in the 128-byte-swizzled layout wgmma reads: each tile is HEAD_DIM / 64
// regions [ATT_KEYS][64] (128-byte rows), 16-byte chunk c of row r stored at chunk c ^ (r % 8), 8-row groups 1024
// bytes apart. The accumulator of m64nNk16 gives warp w of a warpgroup rows 16w + g and 16w + g + 8 and, for each 8
// columns n, the columns 8n + 2c, 8n + 2c + 1: the mma.m16n8 C layout, so the masking, softmax and P packing are
// attention_mma's. Needs ATT_STAGES ≥ 3: tile j + 1 is read (S) while tile j is (PV) and tile j + 2 loads.
#define HALVES (HEAD_DIM / 64)

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

// Waits until at most `pending` of the warpgroup's committed wgmma groups are still running.
template <int pending>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory"); }

__device__ __forceinline__ void wgmma_wait_all() { wgmma_wait<0>(); }

// mbarriers (sm_80+ shared-memory barriers with phases) for the ring of attention_wgmma.
__device__ __forceinline__ void mbarrier_init(unsigned long long* barrier, unsigned count)
{
    asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(unsigned long long* barrier)
{
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(shared_address(barrier)) : "memory");
}

// Arrives on `barrier` once this thread's earlier cp.async copies have landed (the count was set for it: noinc).
__device__ __forceinline__ void mbarrier_arrive_after_copies(unsigned long long* barrier)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(shared_address(barrier)) : "memory");
}

__device__ __forceinline__ void mbarrier_wait(unsigned long long* barrier, unsigned parity)
{
    unsigned done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(shared_address(barrier)), "r"(parity) : "memory");
}

// Shared-memory matrix descriptor (PTX ISA, wgmma): start address, leading and stride byte offsets (16-byte units),
// 128-byte swizzle. K-major tiles (K for S = Q·Kᵀ) use only the stride, 1024 bytes between 8-row groups; the
// N-major V tile steps 1024 bytes per 8 keys whichever field the hardware reads, so it sets both (both conventions
// were checked on the H100 with a 64 × 64 probe before this kernel was written).
__device__ __forceinline__ unsigned long long swizzled_descriptor(const void* p, unsigned leading_bytes, unsigned stride_bytes)
{
    return (unsigned long long)((shared_address(p) & 0x3ffff) >> 4) | ((unsigned long long)(leading_bytes >> 4) << 16) |
           ((unsigned long long)(stride_bytes >> 4) << 32) | (1ull << 62);
}

template <int TRANS_B, int ACCUMULATE>
__device__ __forceinline__ void wgmma_m64n64k16(float* d, const unsigned* a, unsigned long long b)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, %37;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "n"(ACCUMULATE));
}

template <int TRANS_B, int ACCUMULATE>
__device__ __forceinline__ void wgmma_m64n128k16(float* d, const unsigned* a, unsigned long long b)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, %69;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "n"(ACCUMULATE));
}

#if ATT_KEYS == 64
#define WGMMA_S wgmma_m64n64k16
#elif ATT_KEYS == 128
#define WGMMA_S wgmma_m64n128k16
#else
#error "attention_wgmma takes ATT_KEYS 64 or 128"
#endif
#define TILE_BYTES (ATT_KEYS * HEAD_DIM * 2)

// attention_wgmma's ring: each tile region [ATT_KEYS][64] of 128-byte rows, chunk c of row r at chunk c ^ (r % 8).
// A thread's rows are ROW_STEP (a multiple of 8) apart, so its XOR, like the rest of its address, is fixed.
static_assert(ROW_STEP % 8 == 0, "attention_wgmma stages rows 8 apart");
__device__ __forceinline__ TileCopy swizzled_tile_copy()
{
    int row = threadIdx.x / CHUNKS_PER_ROW, c = threadIdx.x % CHUNKS_PER_ROW;
    return TileCopy{row, (long)row * HEAD_DIM + c * 8, (c / 8) * ATT_KEYS * 64 + row * 64 + (((c % 8) ^ (row & 7)) << 3)};
}

// Issues S = Q·Kᵀ over the K tile whose descriptor is `k_tile` for the warpgroup's 64 rows as one wgmma group (not
// waited for). k-step ks reads dims 16 ks … of every key: 32 bytes further into its 64-dim region (descriptor
// addresses count 16-byte units).
__device__ __forceinline__ void issue_scores(float (*s)[4], const unsigned (*qa)[4], unsigned long long k_tile)
{
    wgmma_fence();
    WGMMA_S<0, 0>(&s[0][0], qa[0], k_tile);                     // the first k-step overwrites s: no zeroing needed
#pragma unroll
    for (int ks = 1; ks < HEAD_DIM / 16; ks++)
        WGMMA_S<0, 1>(&s[0][0], qa[ks], k_tile + (((ks / 4) * ATT_KEYS * 128 + (ks % 4) * 32) >> 4));
    wgmma_commit();
}

// Issues O = O · correction + P·V as one wgmma group (not waited for): P (the softmax of S, in the C layout) becomes
// the A fragments, k-step kk being keys 16 kk … of the V tile whose descriptor is `v_tile`, 2048 bytes into each of
// its 64-dim regions; one n64 MMA per region. Every register a wgmma reads is written before the fence (PTX ISA).
__device__ __forceinline__ void accumulate_values(float (*o)[4], float (*s)[4], const float* correction, unsigned long long v_tile)
{
    unsigned pa[ATT_KEYS / 16][4];
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS / 16; kk++)
    {
        pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
    {
        o[n][0] *= correction[0]; o[n][1] *= correction[0];
        o[n][2] *= correction[1]; o[n][3] *= correction[1];
    }
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS / 16; kk++)
#pragma unroll
        for (int half = 0; half < HALVES; half++)
            wgmma_m64n64k16<1, 1>(&o[8 * half][0], pa[kk], v_tile + ((half * ATT_KEYS * 128 + kk * 2048) >> 4));
    wgmma_commit();
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_wgmma(const AttentionParams p)
{
    extern __shared__ __align__(1024) unsigned char wg_shared[];
    unsigned char* ring = wg_shared + ((1024 - (shared_address(wg_shared) & 1023)) & 1023);  // swizzle atoms need 1024-byte alignment
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const BlockWork w = block_work(p);
    const int warp_row = w.block_row + warp * 16;
    const int warp_first_limit = min(w.start + warp_row / GROUP + 1, w.end);

    // Every warpgroup walks every tile of the block, even one none of its rows sees (at most one tile on the
    // diagonal): a branch around wgmma that the compiler cannot prove uniform makes it serialise the MMAs.
    // The ring has no block-wide barrier: slot s is `full` once every thread's copies into it have landed and `empty`
    // once every warp is done reading it, so the warpgroups drift apart (one's softmax under the other's MMAs).
    const int tiles = w.end > w.begin ? (w.end - w.begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    __shared__ __align__(8) unsigned long long full[ATT_STAGES], empty[ATT_STAGES];
    if (threadIdx.x == 0)
    {
        for (int s = 0; s < ATT_STAGES; s++)
        {
            mbarrier_init(&full[s], STAGE_THREADS);
            mbarrier_init(&empty[s], ATT_WARPS);
        }
    }
    __syncthreads();
    const TileCopy copy = swizzled_tile_copy();
    auto stage = [&](int tile) {                                 // tile's slot was last used by tile − ATT_STAGES
        int slot = tile % ATT_STAGES;
        if (tile >= ATT_STAGES) mbarrier_wait(&empty[slot], (tile / ATT_STAGES - 1) & 1);
        bf16_t* k_tile = reinterpret_cast<bf16_t*>(ring + slot * 2 * TILE_BYTES);
        copy.stage(k_tile, k_tile + TILE_BYTES / 2, w.k_cache, w.v_cache, w.begin + tile * ATT_KEYS, w.end, ROW_STEP * 64);
        mbarrier_arrive_after_copies(&full[slot]);
    };
    auto arrived = [&](int tile) {                               // the block's copies of tile are in; wgmma may read them
        mbarrier_wait(&full[tile % ATT_STAGES], (tile / ATT_STAGES) & 1);
        fence_proxy_async();
    };
    auto release = [&](int tile) {                               // this warp's MMAs reading tile are done
        __syncwarp();
        if (lane == 0) mbarrier_arrive(&empty[tile % ATT_STAGES]);
    };
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++)
        if (s < tiles) stage(s);
    // Descriptors of slot 0's K and V tiles; a slot or k-step is an offset in 16-byte units.
    const unsigned long long k_descriptor = swizzled_descriptor(ring, 16, 1024);
    const unsigned long long v_descriptor = swizzled_descriptor(ring + TILE_BYTES, 1024, 1024);

    // The warp's 16 query rows as wgmma A fragments, straight from global memory, in log2 units; padding rows zero.
    const float log2e_scale = p.scale * 1.4426950408889634f;
    int limit[2];
    long q_row[2];
#pragma unroll
    for (int h = 0; h < 2; h++)
    {
        int row = warp_row + gr + 8 * h;
        limit[h] = min(w.start + row / GROUP + 1, w.end);
        q_row[h] = w.q_row(row, p.heads);
    }
    unsigned qa[HEAD_DIM / 16][4];
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ks++)
    {
        int col = ks * 16 + 2 * gc;
        float2 v[4];
#pragma unroll
        for (int i = 0; i < 4; i++)                              // a0: row g, a1: row g+8, a2/a3: the same at col + 8
        {
            long r = q_row[i & 1];
            v[i] = r >= 0 ? *reinterpret_cast<const float2*>(p.q + r * HEAD_DIM + col + (i >> 1) * 8) : make_float2(0.0f, 0.0f);
            qa[ks][i] = pack_bf16(v[i].x * log2e_scale, v[i].y * log2e_scale);
        }
    }

    float o[HEAD_DIM / 8][4], m[2] = {neg_inf, neg_inf}, l[2] = {0.0f, 0.0f}, correction[2] = {1.0f, 1.0f};
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float s[ATT_KEYS / 8][4], s_next[ATT_KEYS / 8][4];

    // Tile j's steps: S(j) = Q·K(j)ᵀ, its softmax (P(j), the running max and sum, the factor O is rescaled by), then
    // O = O · correction + P(j)·V(j). Each loop step issues S(j + 1) and P(j)·V(j) to the tensor cores and runs the
    // softmax of tile j + 1 while P(j)·V(j) is still on them; O is only touched once that MMA has been waited for. The
    // last tile, which has no successor, is peeled off so that the loop body has no branch around a wgmma.
    if (tiles > 0)
    {
        arrived(0);
        issue_scores(s, qa, k_descriptor);
        wgmma_wait_all();
        softmax_tile(s, w.begin, warp_first_limit, limit, gc, m, l, correction);
    }
    for (int j = 0; j + 1 < tiles; j++)
    {
        if (j + ATT_STAGES - 1 < tiles) stage(j + ATT_STAGES - 1);
        arrived(j + 1);
        issue_scores(s_next, qa, k_descriptor + ((((j + 1) % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        accumulate_values(o, s, correction, v_descriptor + (((j % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        wgmma_wait<1>();                                         // S(j + 1) is done; P(j)·V(j) may still run
#pragma unroll
        for (int n = 0; n < ATT_KEYS / 8; n++) { s[n][0] = s_next[n][0]; s[n][1] = s_next[n][1]; s[n][2] = s_next[n][2]; s[n][3] = s_next[n][3]; }
        softmax_tile(s, w.begin + (j + 1) * ATT_KEYS, warp_first_limit, limit, gc, m, l, correction);
        wgmma_wait_all();
        release(j);
    }
    if (tiles > 0)
    {
        accumulate_values(o, s, correction, v_descriptor + ((((tiles - 1) % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        wgmma_wait_all();
    }

    allow_dependent_launch();                                    // attention_combine may start launching
#pragma unroll
    for (int h = 0; h < 2; h++) write_row(p, w, q_row[h], o, h, m[h], l[h], gc);
}
#endif

#if defined(ATT_DECODE)
// Decode: a block's rows are a decode step's few query rows of one KV head (a token's GQA group; BLOCK_ROWS =
// ATT_M_TILES × 8), and the kernel is bound by how fast it streams K and V, so every instruction per K/V byte counts:
// - The operands are swapped (as TensorRT-LLM's XQA and FlashInfer do for decode): Sᵀ = K·Qᵀ puts 16 keys in the M of
//   mma.m16n8k16 and the query rows in its N of 8, so a group of 4 wastes half of each MMA rather than the three
//   quarters of a 16-row A tile, and Oᵀ = Vᵀ·Pᵀ takes V's A fragments with ldmatrix.trans. S's C fragment (keys g,
//   g + 8 × query rows 2c, 2c + 1) becomes P's B fragment (keys 2c, 2c + 1 and 2c + 8, 2c + 9 × query row g) by one
//   8 × 8 transpose across the warp (movmatrix) per 8 keys.
// - Q's B fragments are loaded once into registers (scaled into log2 units) and stay there.
// - Each of the block's ATT_WARPS warps owns a cp.async ring of ATT_STAGES tiles and walks tiles warp, warp +
//   ATT_WARPS, … of the block's split on its own (a warp barrier per tile, no block barrier); the warps' (max, sum,
//   output) are merged in shared memory at the end, so a block writes one partial result per row, not ATT_WARPS.
// Needs ATT_KEYS a multiple of 16.
static_assert(ATT_KEYS % 16 == 0, "attention_decode takes 16-key MMA tiles");
#define MERGE_STRIDE (HEAD_DIM + 4)                              // floats per row of a warp's output in the merge

// An 8 × 8 matrix of b16 (a warp's fragment: lane 4g + c holds row g, columns 2c, 2c + 1) transposed (PTX ISA,
// movmatrix, sm_75+).
__device__ __forceinline__ unsigned transpose8x8(unsigned fragment)
{
    unsigned t;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(t) : "r"(fragment));
    return t;
}

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_decode(const AttentionParams p)
{
    extern __shared__ __align__(16) unsigned char decode_shared[];
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const BlockWork w = block_work(p);
    bf16_t* ring = reinterpret_cast<bf16_t*>(decode_shared) + warp * ATT_STAGES * 2 * ATT_KEYS * TILE_STRIDE;

    // The warp's tiles: warp, warp + ATT_WARPS, … of the split's.
    const int tiles = w.end > w.begin ? (w.end - w.begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    const int warp_tiles = tiles > warp ? (tiles - warp + ATT_WARPS - 1) / ATT_WARPS : 0;
    const TileCopy copy = padded_tile_copy(lane);
    auto first_key = [&](int i) { return w.begin + (warp + i * ATT_WARPS) * ATT_KEYS; };
    auto stage = [&](int i) {
        bf16_t* k_tile = ring + (i % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        copy.stage(k_tile, k_tile + ATT_KEYS * TILE_STRIDE, w.k_cache, w.v_cache, first_key(i), w.end, ROW_STEP * TILE_STRIDE);
    };
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++)
    {
        if (s < warp_tiles) stage(s);
        copy_async_commit();
    }

    // Qᵀ as B fragments (k-step kc: dims 16 kc + 2c, + 1 and + 8, + 9 of query row 8 nt + g), in log2 units; padding
    // rows are zeros. limit: the visible-key bound of this thread's columns of Sᵀ (query rows 8 nt + 2c, + 1).
    const float log2e_scale = p.scale * 1.4426950408889634f;
    unsigned qb[ATT_M_TILES][HEAD_DIM / 16][2];
    int limit[ATT_M_TILES][2];
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++)
    {
        long q_row = w.q_row(w.block_row + nt * 8 + gr, p.heads);
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM / 16; kc++)
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                float2 v = q_row >= 0 ? *reinterpret_cast<const float2*>(p.q + q_row * HEAD_DIM + kc * 16 + 2 * gc + 8 * h) : make_float2(0.0f, 0.0f);
                qb[nt][kc][h] = pack_bf16(v.x * log2e_scale, v.y * log2e_scale);
            }
#pragma unroll
        for (int j = 0; j < 2; j++) limit[nt][j] = min(w.start + (w.block_row + nt * 8 + 2 * gc + j) / GROUP + 1, w.end);
    }
    const int first_limit = min(w.start + w.block_row / GROUP + 1, w.end);   // the block's smallest bound

    float o[HEAD_DIM / 16][ATT_M_TILES][4], m[ATT_M_TILES][2], l[ATT_M_TILES][2];
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++)
    {
        m[nt][0] = m[nt][1] = neg_inf;
        l[nt][0] = l[nt][1] = 0.0f;
#pragma unroll
        for (int dt = 0; dt < HEAD_DIM / 16; dt++) o[dt][nt][0] = o[dt][nt][1] = o[dt][nt][2] = o[dt][nt][3] = 0.0f;
    }

    for (int i = 0; i < warp_tiles; i++)
    {
        copy_async_wait<ATT_STAGES - 2>();                       // this lane's copies of tile i are in
        __syncwarp();                                            // … and every lane's; all are done reading tile i − 1
        if (i + ATT_STAGES - 1 < warp_tiles) stage(i + ATT_STAGES - 1);
        copy_async_commit();
        const int k0 = first_key(i);
        const bf16_t* k_tile = ring + (i % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        const bf16_t* v_tile = k_tile + ATT_KEYS * TILE_STRIDE;

        // Sᵀ = K·Qᵀ: s[kt][nt] holds keys k0 + 16 kt + g (+ 8) × query rows 8 nt + 2c (+ 1).
        float s[ATT_KEYS / 16][ATT_M_TILES][4];
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
                for (int nt = 0; nt < ATT_M_TILES; nt++) mma_bf16(s[kt][nt], a, qb[nt][kc]);
            }
        }

        // Online softmax down each column (a query row): the column's keys are spread over the 8 lanes of one c.
        bool moved = false;
        float correction[ATT_M_TILES][2];
#pragma unroll
        for (int nt = 0; nt < ATT_M_TILES; nt++)
        {
            if (k0 + ATT_KEYS > first_limit)                     // the tile crosses some row's last visible key
            {
#pragma unroll
                for (int kt = 0; kt < ATT_KEYS / 16; kt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (k0 + 16 * kt + gr + 8 * (e >> 1) >= limit[nt][e & 1]) s[kt][nt][e] = neg_inf;
            }
#pragma unroll
            for (int j = 0; j < 2; j++)
            {
                float t = neg_inf;
#pragma unroll
                for (int kt = 0; kt < ATT_KEYS / 16; kt++) t = fmaxf(t, fmaxf(s[kt][nt][j], s[kt][nt][j + 2]));
                t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 4));
                t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 8));
                t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, 16));
                float m_new = fmaxf(m[nt][j], t);
                float base = m_new == neg_inf ? 0.0f : m_new, sum = 0.0f;   // no visible key yet: exp2 gives 0, not NaN
                correction[nt][j] = fast_exp2(m[nt][j] - base);
                moved |= correction[nt][j] != 1.0f;
#pragma unroll
                for (int kt = 0; kt < ATT_KEYS / 16; kt++)
                {
                    s[kt][nt][j] = fast_exp2(s[kt][nt][j] - base);
                    s[kt][nt][j + 2] = fast_exp2(s[kt][nt][j + 2] - base);
                    sum += s[kt][nt][j] + s[kt][nt][j + 2];
                }
                l[nt][j] = l[nt][j] * correction[nt][j] + sum;
                m[nt][j] = m_new;
            }
        }
        if (__any_sync(0xffffffffu, moved))                      // some column's running max moved
        {
#pragma unroll
            for (int dt = 0; dt < HEAD_DIM / 16; dt++)
#pragma unroll
                for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) o[dt][nt][e] *= correction[nt][e & 1];
        }

        // Oᵀ += Vᵀ·Pᵀ, k-step kt being keys 16 kt … of the tile: Vᵀ's A fragments come transposed out of the
        // row-major V tile (matrix i: keys 8 (i / 2) …, dims 8 (i % 2) …), Pᵀ's B fragments from S's C fragments.
#pragma unroll
        for (int kt = 0; kt < ATT_KEYS / 16; kt++)
        {
            unsigned pb[ATT_M_TILES][2];
#pragma unroll
            for (int nt = 0; nt < ATT_M_TILES; nt++)
            {
                pb[nt][0] = transpose8x8(pack_bf16(s[kt][nt][0], s[kt][nt][1]));
                pb[nt][1] = transpose8x8(pack_bf16(s[kt][nt][2], s[kt][nt][3]));
            }
#pragma unroll
            for (int dt = 0; dt < HEAD_DIM / 16; dt++)
            {
                unsigned a[4];
                ldmatrix_x4_trans(a, v_tile + (kt * 16 + (lane & 7) + ((lane >> 4) << 3)) * TILE_STRIDE + dt * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                for (int nt = 0; nt < ATT_M_TILES; nt++) mma_bf16(o[dt][nt], a, pb[nt]);
            }
        }
    }

    // Merge the warps: each writes its rows' (max, sum) and unnormalised output into shared memory (over its ring).
    copy_async_wait<0>();
    __syncthreads();
    float* merge_o = reinterpret_cast<float*>(decode_shared);             // [ATT_WARPS][BLOCK_ROWS][MERGE_STRIDE]
    float* merge_ml = merge_o + ATT_WARPS * BLOCK_ROWS * MERGE_STRIDE;    // [ATT_WARPS][BLOCK_ROWS][2], max in log2 units
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++)
    {
#pragma unroll
        for (int j = 0; j < 2; j++)
        {
            float sum = l[nt][j];                                // this lane's share of the column: add the 8 lanes of c
            sum += __shfl_xor_sync(0xffffffffu, sum, 4);
            sum += __shfl_xor_sync(0xffffffffu, sum, 8);
            sum += __shfl_xor_sync(0xffffffffu, sum, 16);
            float* row = merge_o + (warp * BLOCK_ROWS + nt * 8 + 2 * gc + j) * MERGE_STRIDE;
#pragma unroll
            for (int dt = 0; dt < HEAD_DIM / 16; dt++)
            {
                row[dt * 16 + gr] = o[dt][nt][j];
                row[dt * 16 + gr + 8] = o[dt][nt][j + 2];
            }
            if (gr == 0)
            {
                merge_ml[(warp * BLOCK_ROWS + nt * 8 + 2 * gc + j) * 2] = m[nt][j];
                merge_ml[(warp * BLOCK_ROWS + nt * 8 + 2 * gc + j) * 2 + 1] = sum;
            }
        }
    }
    __syncthreads();
    allow_dependent_launch();                                    // attention_combine may start launching

    // Thread i writes 4 dims of a row: normalised with one split; with several, unnormalised with (max in natural-log
    // units, sum) for attention_combine.
    for (int i = threadIdx.x; i < BLOCK_ROWS * HEAD_DIM / 4; i += blockDim.x)
    {
        int row = i / (HEAD_DIM / 4), d = (i % (HEAD_DIM / 4)) * 4;
        long q_row = w.q_row(w.block_row + row, p.heads);
        if (q_row < 0) continue;
        float big = neg_inf;
#pragma unroll
        for (int v = 0; v < ATT_WARPS; v++) big = fmaxf(big, merge_ml[(v * BLOCK_ROWS + row) * 2]);
        float base = big == neg_inf ? 0.0f : big, sum = 0.0f;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll
        for (int v = 0; v < ATT_WARPS; v++)
        {
            float f = fast_exp2(merge_ml[(v * BLOCK_ROWS + row) * 2] - base);
            float4 x = *reinterpret_cast<const float4*>(merge_o + (v * BLOCK_ROWS + row) * MERGE_STRIDE + d);
            sum += f * merge_ml[(v * BLOCK_ROWS + row) * 2 + 1];
            acc.x += f * x.x; acc.y += f * x.y; acc.z += f * x.z; acc.w += f * x.w;
        }
        if (w.splits == 1)
        {
            float factor = sum > 0.0f ? 1.0f / sum : 0.0f;
            *reinterpret_cast<float4*>(p.out + q_row * HEAD_DIM + d) = make_float4(acc.x * factor, acc.y * factor, acc.z * factor, acc.w * factor);
        }
        else
        {
            long out_row = q_row * w.splits + w.split;
            *reinterpret_cast<float4*>(p.partial_out + out_row * HEAD_DIM + d) = acc;
            if (d == 0)
            {
                p.partial_ml[out_row * 2] = big * 0.6931471805599453f;
                p.partial_ml[out_row * 2 + 1] = sum;
            }
        }
    }
}
#endif
#endif

// Merges the splits of the tensor-core kernels: out = Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s. Empty splits (l = 0) add
// nothing. The splits' weights are computed once, in parallel, into shared memory; then thread (d, q) sums
// dimension d over splits q, q + COMBINE_LANES, … with several independent loads in flight, and the lanes q are
// added in shared memory (a serial loop here costs a memory latency per split, a large part of a batch-1 decode).
// Launched as a programmatic dependent of the attention kernel on sm_90+.
// Block: HEAD_DIM × COMBINE_LANES threads (one dimension, so that block_max/block_sum see its warps). Grid: tokens * heads.
#define MAX_SPLITS 1024                                          // AttentionLaunch.MaxSplits
#define COMBINE_LANES 4
extern "C" __global__ void __launch_bounds__(HEAD_DIM * COMBINE_LANES) attention_combine(const float* partial_out, const float* partial_ml, float* out, int splits)
{
    __shared__ float weight[MAX_SPLITS], scratch[32], lanes[COMBINE_LANES][HEAD_DIM];
    const int t = threadIdx.x, d = t % HEAD_DIM, q = t / HEAD_DIM, threads = HEAD_DIM * COMBINE_LANES;
    wait_for_previous_kernel();                                  // launched to overlap attention_mma's tail
    long row = blockIdx.x;
    const float* ml = partial_ml + row * splits * 2;
    float big = __int_as_float(0xff800000);
    for (int s = t; s < splits; s += threads) if (ml[2 * s + 1] > 0.0f) big = fmaxf(big, ml[2 * s]);
    big = block_max(big, scratch);
    float total = 0.0f;
    for (int s = t; s < splits; s += threads)
    {
        float l = ml[2 * s + 1], w = l > 0.0f ? expf(ml[2 * s] - big) : 0.0f;
        weight[s] = w;
        total += w * l;
    }
    total = block_sum(total, scratch);                           // its barrier also publishes `weight`
    const float* po = partial_out + row * splits * HEAD_DIM + d;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int s = q;
    for (; s + 3 * COMBINE_LANES < splits; s += 4 * COMBINE_LANES)
    {
#pragma unroll
        for (int u = 0; u < 4; u++) acc[u] += weight[s + u * COMBINE_LANES] * po[(long)(s + u * COMBINE_LANES) * HEAD_DIM];
    }
    for (; s < splits; s += COMBINE_LANES) acc[0] += weight[s] * po[(long)s * HEAD_DIM];
    lanes[q][d] = acc[0] + acc[1] + acc[2] + acc[3];
    __syncthreads();
    if (q == 0)
    {
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < COMBINE_LANES; i++) sum += lanes[i][d];
        out[row * HEAD_DIM + d] = sum / total;
    }
}
