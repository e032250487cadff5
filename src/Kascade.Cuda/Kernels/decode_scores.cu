// Kascade's decode anchor scores on tensor cores: attention_decode's layout (Sᵀ = K·Qᵀ, a decode step's GQA group in
// the N of mma.m16n8k16, a cp.async ring per warp) over the keys alone. Specialisation key: attention_decode's
// (HEAD_DIM, GROUP and the ATT_* defines of AttentionKernel.Decode).
#include "attention_common.cuh"
#include "plan_common.cuh"

#if !defined(ATT_DECODE)
#error "decode_scores.cu takes attention_decode's specialisation (ATT_DECODE)"
#endif
static_assert(ATT_KEYS % 16 == 0, "decode_scores_mma takes 16-key MMA tiles");

// A decode step's anchor scores on tensor cores (issue 15 §3; decode_selection.cu's pool_decode_scores and the Top-k
// follow): raw[h, j] = scale · q_h · K[j] for KV head g's GROUP query heads h and the visible keys j ≤ start, and per
// (h, split, warp) the running (max, sum) of exp over that warp's keys (partial fp32 [heads, gridDim.x · ATT_WARPS,
// 2], as row_log_sum_exp writes it for combine_log_sum_exp; a warp without keys writes (−∞, 0)). Sᵀ = K·Qᵀ as in
// decode_attend, keys only: each warp's ring holds SCORE_STAGES key tiles in the memory of ATT_STAGES (K, V) slots,
// so more of them are in flight. The CUDA-core one-key-per-thread kernel this replaces ran the K read at a fifth of
// copy bandwidth (decode_key_scores, 173 µs at 128k on the H100; ncu, bench/results/kascade-h100.md). Exactness: the
// queries are split into two bf16 halves (q = hi + lo, as anchor_prefill.cu does); a bf16 key times a bf16 half is
// exact in the fp32 accumulator, so the scores keep fp32 accuracy and the plans match the CPU reference's up to ties.
// query_parts = 1 (--score-precision bf16): hi is the unscaled query's bf16 rounding, lo zero, and the scale multiplies
// the products (the second MMA stays: the kernel is bound by the K read, not by its MMAs).
// The split ranges come from the step's position on the device (the grid from the capacity), so a recorded step
// replays at any position. raw fp32 [sequences · heads, stride]. A batch of decode steps (IBatchedDecode) runs as grid z =
// sequence · kv_heads + g: sequence b's query (and raw, partial) rows are b · heads + …, its keys b · sequence_stride
// elements on. Grid: (splits, 1, sequences · kv_heads), ATT_WARPS · 32 threads, attention_decode's shared memory
// (AttentionKernel.SharedBytes: the specialisation is attention_decode's). Launched dependent, as attention_decode:
// the prologue's tiles that end before the step's position (earlier steps' keys) are staged before it waits for the
// kernel before it (rope_append writes the step's q and key).
#define SCORE_STAGES (2 * ATT_STAGES)
extern "C" __global__ void __launch_bounds__(ATT_WARPS * 32) decode_scores_mma(const float* q, const bf16_t* k_cache, float* raw, long long stride, float* partial,
                                                                             int capacity, int start, const int* start_at, float scale, int kv_heads,
                                                                             long long sequence_stride, int query_parts)
{
    extern __shared__ __align__(16) unsigned char score_shared[];
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const int g = blockIdx.z, split = blockIdx.x, splits = gridDim.x;   // g: the (sequence, KV head), its rows g · GROUP + …
    const int visible = start_position(start_at, start) + 1;
    const int keys_per_split = ((visible + splits - 1) / splits + ATT_KEYS - 1) / ATT_KEYS * ATT_KEYS;
    const int begin = split * keys_per_split, end = min(visible, begin + keys_per_split);
    const bf16_t* keys = k_cache + (long)(g / kv_heads) * sequence_stride + (long)(g % kv_heads) * capacity * HEAD_DIM;
    bf16_t* ring = reinterpret_cast<bf16_t*>(score_shared) + warp * SCORE_STAGES * ATT_KEYS * TILE_STRIDE;
    const int tiles = end > begin ? (end - begin + ATT_KEYS - 1) / ATT_KEYS : 0;
    const int warp_tiles = tiles > warp ? (tiles - warp + ATT_WARPS - 1) / ATT_WARPS : 0;
    const TileCopy copy = padded_tile_copy(lane);
    auto first_key = [&](int i) { return begin + (warp + i * ATT_WARPS) * ATT_KEYS; };
    auto stage = [&](int i) { copy.stage_keys(ring + (i % SCORE_STAGES) * ATT_KEYS * TILE_STRIDE, keys, first_key(i), end, ROW_STEP * TILE_STRIDE); };
    bool waited = false;
#pragma unroll
    for (int s = 0; s < SCORE_STAGES - 1; s++)
    {
        if (s < warp_tiles)
        {
            if (!waited && first_key(s) + ATT_KEYS > visible - 1)
            {
                wait_for_previous_kernel();
                waited = true;
            }
            stage(s);
        }
        copy_async_commit();
    }
    if (!waited) wait_for_previous_kernel();

    // Qᵀ's halves as B fragments (k-step kc: dims 16 kc + 2c, + 1 and + 8, + 9 of query row 8 nt + g), times scale
    // (one part: rounded unscaled, lo zero); padding rows are zeros.
    const bool split_query = query_parts == 2;
    unsigned q_halves[2][ATT_M_TILES][HEAD_DIM / 16][2];
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++)
    {
        const int row = nt * 8 + gr;
        const float* q_row = q + ((long)g * GROUP + row) * HEAD_DIM;
#pragma unroll
        for (int kc = 0; kc < HEAD_DIM / 16; kc++)
#pragma unroll
            for (int h = 0; h < 2; h++)
            {
                float2 v = row < GROUP ? *reinterpret_cast<const float2*>(q_row + kc * 16 + 2 * gc + 8 * h) : make_float2(0.0f, 0.0f);
                const float q_scale = split_query ? scale : 1.0f;
                v.x *= q_scale;
                v.y *= q_scale;
                unsigned hi = pack_bf16(v.x, v.y);
                q_halves[0][nt][kc][h] = hi;
                q_halves[1][nt][kc][h] = split_query ? pack_bf16_residual(v.x, v.y, hi) : 0u;
            }
    }

    // This thread's columns of Sᵀ: query rows 8 nt + 2c + j; its running max and sum over the keys it holds.
    float m[ATT_M_TILES][2], l[ATT_M_TILES][2];
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++) m[nt][0] = m[nt][1] = neg_inf, l[nt][0] = l[nt][1] = 0.0f;

    for (int i = 0; i < warp_tiles; i++)
    {
        copy_async_wait<SCORE_STAGES - 2>();                     // this lane's copies of tile i are in
        __syncwarp();                                            // … and every lane's; all are done reading tile i − 1
        if (i + SCORE_STAGES - 1 < warp_tiles) stage(i + SCORE_STAGES - 1);
        copy_async_commit();
        const int k0 = first_key(i);
        const bf16_t* k_tile = ring + (i % SCORE_STAGES) * ATT_KEYS * TILE_STRIDE;

        // s[kt][nt] holds keys k0 + 16 kt + g (+ 8) × query rows 8 nt + 2c (+ 1).
        float s[ATT_KEYS / 16][ATT_M_TILES][4];
        transposed_scores(k_tile, lane, q_halves, s);
        if (!split_query)
        {
#pragma unroll
            for (int kt = 0; kt < ATT_KEYS / 16; kt++)
#pragma unroll
                for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) s[kt][nt][e] *= scale;
        }

#pragma unroll
        for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
            for (int j = 0; j < 2; j++)
            {
                const int row = nt * 8 + 2 * gc + j;
                float* raw_row = raw + ((long)g * GROUP + row) * stride;
                float t = neg_inf;
#pragma unroll
                for (int kt = 0; kt < ATT_KEYS / 16; kt++)
#pragma unroll
                    for (int h = 0; h < 2; h++)
                    {
                        const int key = k0 + 16 * kt + gr + 8 * h;
                        float& v = s[kt][nt][j + 2 * h];
                        if (key >= end) v = neg_inf;
                        else if (row < GROUP) raw_row[key] = v;
                        t = fmaxf(t, v);
                    }
                const float m_new = fmaxf(m[nt][j], t);
                if (m_new == neg_inf) continue;                  // none of this thread's keys so far
                float sum = 0.0f;
#pragma unroll
                for (int kt = 0; kt < ATT_KEYS / 16; kt++) sum += __expf(s[kt][nt][j] - m_new) + __expf(s[kt][nt][j + 2] - m_new);
                l[nt][j] = l[nt][j] * __expf(m[nt][j] - m_new) + sum;
                m[nt][j] = m_new;
            }
    }

    allow_dependent_launch();                                    // every thread has waited: the log-sum-exp may launch

    // Each column's (max, sum) over the 8 lanes that share c, written by the lane of g = 0.
#pragma unroll
    for (int nt = 0; nt < ATT_M_TILES; nt++)
#pragma unroll
        for (int j = 0; j < 2; j++)
        {
            float m_all = m[nt][j];
            m_all = fmaxf(m_all, __shfl_xor_sync(0xffffffffu, m_all, 4));
            m_all = fmaxf(m_all, __shfl_xor_sync(0xffffffffu, m_all, 8));
            m_all = fmaxf(m_all, __shfl_xor_sync(0xffffffffu, m_all, 16));
            float l_all = m[nt][j] == neg_inf ? 0.0f : l[nt][j] * __expf(m[nt][j] - m_all);
            l_all += __shfl_xor_sync(0xffffffffu, l_all, 4);
            l_all += __shfl_xor_sync(0xffffffffu, l_all, 8);
            l_all += __shfl_xor_sync(0xffffffffu, l_all, 16);
            const int row = nt * 8 + 2 * gc + j;
            if (gr == 0 && row < GROUP)
            {
                long at = (((long)g * GROUP + row) * splits * ATT_WARPS + split * ATT_WARPS + warp) * 2;
                partial[at] = m_all;
                partial[at + 1] = l_all;
            }
        }
}
