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
// Three kernels share that loop (decode_attend) and differ only in where a tile's K/V rows come from and what else
// they write (the tile sources are decode_tiles.cuh's): attention_decode streams keys [0, position] of the cache
// (CacheTiles); attention_decode_scores does the same and also writes the scores Kascade's layer 0 selects by;
// sparse_decode_mma gathers a Kascade plan row's positions (GatheredTiles; issue 15 §3, the reuse layers' and the
// anchors' own decode output), so a gathered key costs what a streamed one does (the CUDA-core sparse_decode of
// selection.cu ran at 13% of copy bandwidth, bench/results/kascade-h100.md). Needs ATT_KEYS a multiple of 16.
#include "attention_common.cuh"
#include "plan_common.cuh"

#if !defined(ATT_DECODE)
#error "attention_decode.cu needs ATT_DECODE"
#endif
#include "decode_tiles.cuh"

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

// The loop every kernel here runs over its block's work w, its tiles read through `source`; p gives the queries, the
// output rows and the scale. Every kernel here is launched dependent (programmatic dependent launch, sm_90+): the kernel
// before it (rope_append, which writes the step's q and K/V rows) may still run until wait_for_previous_kernel, so the
// prologue stages before the wait only the tiles that the source says hold nothing of this step (stages_early: rows of
// earlier steps), whose round trips then overlap that kernel's tail and this one's launch. Each kernel lets the next
// one launch only after it has waited: when an attention kernel starts, every kernel before the previous attention
// kernel has ended (what lets sparse_decode_mma read a plan an earlier layer wrote before it waits).
// With raw (attention_decode_scores), the queries are split into two bf16 halves (q = hi + lo, decode_scores.cu's
// argument: the scores keep fp32 accuracy), every visible score is also written to raw[q_row, key] (scale · q · K[key],
// fp32, raw_stride floats a row), and each row's (max, sum) to partial_ml even with one split, so the rows' log-sum-exp
// follows from the same pass.
template <class Tiles>
__device__ __forceinline__ void decode_attend(const AttentionParams& p, const BlockWork& w, Tiles& source, float* raw = nullptr, long long raw_stride = 0)
{
    extern __shared__ __align__(16) unsigned char decode_shared[];
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    bf16_t* ring = reinterpret_cast<bf16_t*>(decode_shared) + warp * ATT_STAGES * 2 * ATT_KEYS * TILE_STRIDE;

    // The warp's tiles: warp, warp + ATT_WARPS, … of the split's.
    const int tiles = w.end > w.begin ? (w.end - w.begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    const int warp_tiles = tiles > warp ? (tiles - warp + ATT_WARPS - 1) / ATT_WARPS : 0;
    auto first_key = [&](int i) { return w.begin + (warp + i * ATT_WARPS) * ATT_KEYS; };
    // Tiles are staged in order 0, 1, …: each stage reads ahead for the next.
    auto stage = [&](int i) {
        bf16_t* k_tile = ring + (i % ATT_STAGES) * 2 * ATT_KEYS * TILE_STRIDE;
        source.stage(k_tile, k_tile + ATT_KEYS * TILE_STRIDE, first_key(i), w.end);
        source.prefetch(first_key(i + 1));
    };
    source.prefetch(first_key(0));
    bool waited = false;
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++)
    {
        if (s < warp_tiles)
        {
            if (!waited && !source.stages_early(first_key(s), w.end))
            {
                wait_for_previous_kernel();
                waited = true;
            }
            stage(s);
        }
        copy_async_commit();
    }
    if (!waited) wait_for_previous_kernel();

    // Qᵀ as B fragments (k-step kc: dims 16 kc + 2c, + 1 and + 8, + 9 of query row 8 nt + g), in log2 units; padding
    // rows are zeros. limit: the visible-key bound of this thread's columns of Sᵀ (query rows 8 nt + 2c, + 1).
    const float log2e_scale = p.scale * 1.4426950408889634f;
    unsigned qb[2][ATT_M_TILES][HEAD_DIM / 16][2];
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
                v.x *= log2e_scale;
                v.y *= log2e_scale;
                qb[0][nt][kc][h] = pack_bf16(v.x, v.y);
                qb[1][nt][kc][h] = pack_bf16_residual(v.x, v.y, qb[0][nt][kc][h]);
            }
#pragma unroll
        for (int j = 0; j < 2; j++) limit[nt][j] = source.limit(w, w.block_row + nt * 8 + 2 * gc + j);
    }
    const int first_limit = source.limit(w, w.block_row);                    // the block's smallest bound

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
        if constexpr (Tiles::reads_scores)
        {
            source.read_scores(k_tile, lane, s);
        }
        else if (raw == nullptr)
        {
            transposed_scores(k_tile, lane, reinterpret_cast<const unsigned(&)[1][ATT_M_TILES][HEAD_DIM / 16][2]>(qb), s);
        }
        else
        {
            transposed_scores(k_tile, lane, qb, s);
#pragma unroll
            for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
                for (int j = 0; j < 2; j++)
                {
                    const long q_row = w.q_row(w.block_row + nt * 8 + 2 * gc + j, p.heads);
                    if (q_row < 0) continue;
#pragma unroll
                    for (int kt = 0; kt < ATT_KEYS / 16; kt++)
#pragma unroll
                        for (int h = 0; h < 2; h++)
                        {
                            const int key = k0 + 16 * kt + gr + 8 * h;
                            if (key < limit[nt][j]) raw[q_row * raw_stride + key] = s[kt][nt][j + 2 * h] * 0.6931471805599453f;
                        }
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
            if (raw != nullptr && d == 0)
            {
                p.partial_ml[q_row * 2] = big * 0.6931471805599453f;
                p.partial_ml[q_row * 2 + 1] = sum;
            }
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

extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_decode(const AttentionParams p)
{
    const BlockWork w = block_work(p);
    CacheTiles tiles{padded_tile_copy(threadIdx.x & 31), w.k_cache, w.v_cache, w.start};
    decode_attend(p, w, tiles);
}

// Layer 0 of a Kascade decode step (dense output and the scores its selection pools) in one pass over K and V:
// attention_decode with the scores written to raw fp32 [heads, raw_stride] and every split's (max, sum) to
// partial_ml, whose combine_log_sum_exp is the rows' normaliser. Grid and shared memory: attention_decode's.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) attention_decode_scores(const AttentionParams p, float* raw, long long raw_stride)
{
    const BlockWork w = block_work(p);
    CacheTiles tiles{padded_tile_copy(threadIdx.x & 31), w.k_cache, w.v_cache, w.start};
    decode_attend(p, w, tiles, raw, raw_stride);
}

// sparse_decode_mma's and sparse_decode_scored's block: its work (the split of its plan row), its plan row, and p.
__device__ __forceinline__ BlockWork sparse_block_work(const SparseParams& s, float* partial_out, float* partial_ml, AttentionParams& p, int& plan_row)
{
    p = AttentionParams{};
    p.q = s.q;
    p.out = s.out;
    p.partial_out = partial_out;
    p.partial_ml = partial_ml;
    p.tokens = 1;
    p.heads = s.heads;
    p.kv_heads = s.kv_heads;
    p.capacity = s.capacity;
    p.scale = s.scale;
    const int units = s.group_rows ? s.kv_heads : s.heads, unit = blockIdx.z % units, sequence = blockIdx.z / units;
    const int g = s.group_rows ? unit : unit / (s.heads / s.kv_heads);
    plan_row = sequence * s.rows_per_unit + s.head_map[s.group_rows ? g * GROUP : unit];
    BlockWork w;
    w.start = 0;
    w.split = blockIdx.x;
    w.splits = gridDim.x;
    w.rows = GROUP;
    w.block_row = 0;
    const int keys_per_split = ((s.plan_capacity + w.splits - 1) / w.splits + ATT_KEYS - 1) / ATT_KEYS * ATT_KEYS;
    w.begin = w.split * keys_per_split;
    if (!s.plan_settled) wait_for_previous_kernel();            // this layer's selection wrote the plan
    w.end = min(__ldcg(s.counts + plan_row), w.begin + keys_per_split);
    const long head = sequence * s.sequence_stride + (long)g * s.capacity * HEAD_DIM;
    w.k_cache = s.k_cache + head;
    w.v_cache = s.v_cache + head;
    w.q_base = (long)sequence * s.heads + (s.group_rows ? g * GROUP : unit);
    return w;
}

// The block's plan row as a tile source reads it: this lane's copy chunk, and the step's first position where the plan
// is settled (gathers of earlier rows may then be staged before the wait).
__device__ __forceinline__ ListedRows sparse_listed_rows(const SparseParams& s, int plan_row)
{
    const TileCopy copy = padded_tile_copy(threadIdx.x & 31);
    const int first_new = s.plan_settled ? start_position(s.start_at, s.start) : 0;
    return ListedRows{s.indices + (long)plan_row * s.plan_capacity, s.plan_capacity, copy.row, (int)(copy.source % HEAD_DIM), first_new};
}

// IBackend.SparseAttention for a decode step on tensor cores. With a per-KV-head map (group_rows), block (split, 0, g)
// attends KV head g's GROUP query heads over its split of plan row head_map[g · GROUP]; with a per-query-head map (the
// baselines' plans: quest, sparcas, the oracle; compiled with GROUP 1), block (split, 0, h) attends query head h alone
// over plan row head_map[h], reading K/V head h / (heads / kv_heads) — the same keys the CUDA-core sparse_decode
// gathers, at the tensor-core loop's bandwidth (sparse_decode: ~1.1 TB/s, 143–151 µs a layer at 128k for quest and
// sparcas, session 11). The split: the row's capacity cut into gridDim.x ranges of whole tiles (fixed by the capacity,
// so a recorded step replays at any position and count); each block writes (max, sum, unnormalised output) per head
// and split for attention_combine (normalised output with one split). A batch of decode steps (IBatchedDecode) runs as
// grid z = sequence · units + unit (units: kv_heads or heads): sequence b's query rows are b · heads + …, its K/V b ·
// sequence_stride elements on, its plan rows unit b's. Needs GROUP ≤ BLOCK_ROWS. Grid: (splits, 1, sequences · units),
// ATT_WARPS · 32 threads, attention_decode's shared memory.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) sparse_decode_mma(const SparseParams s, float* partial_out, float* partial_ml)
{
    AttentionParams p;
    int plan_row;
    const BlockWork w = sparse_block_work(s, partial_out, partial_ml, p, plan_row);
    GatheredTiles tiles{sparse_listed_rows(s, plan_row), w.k_cache, w.v_cache};
    decode_attend(p, w, tiles);
}

// A Kascade anchor's decode output over its own selection (sparse_decode_mma with a per-KV-head map), scored by the
// selection's raw scores (ScoredTiles: fp32 [sequences · heads, raw_stride], decode_scores_mma's with the exact
// queries) so that only V is gathered. Grid, block, shared memory and partials: sparse_decode_mma's.
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) sparse_decode_scored(const SparseParams s, float* partial_out, float* partial_ml, const float* raw,
                                                                                  long long raw_stride)
{
    AttentionParams p;
    int plan_row;
    const BlockWork w = sparse_block_work(s, partial_out, partial_ml, p, plan_row);
    ScoredTiles tiles{sparse_listed_rows(s, plan_row), w.v_cache, raw, raw_stride, w.q_base};
    decode_attend(p, w, tiles);
}
