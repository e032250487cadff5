// Attention kernels. Specialisation key: HEAD_DIM (a multiple of 32).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#define DIMS_PER_LANE (HEAD_DIM / 32)

// Dense causal attention, one warp per (token, query head), online softmax over the visible keys; each lane
// holds HEAD_DIM/32 dimensions. The reference GPU path (correct on every shape); the tiled tensor-core kernels
// are checked against it. Block: 128 threads (4 warps).
extern "C" __global__ void attention_dense(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                           int tokens, int heads, int kv_heads, int capacity, int start, float scale)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int t = warp / heads, h = warp % heads, g = h / (heads / kv_heads);
    const float* qp = q + ((long)t * heads + h) * HEAD_DIM;
    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) { qr[i] = qp[lane + 32 * i] * scale; acc[i] = 0.0f; }
    const bf16_t* kp = k_cache + (long)g * capacity * HEAD_DIM;
    const bf16_t* vp = v_cache + (long)g * capacity * HEAD_DIM;
    float m = __int_as_float(0xff800000), l = 0.0f;
    int visible = start + t + 1;
    for (int j = 0; j < visible; j++)
    {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) s += qr[i] * bf16_to_float(kp[(long)j * HEAD_DIM + lane + 32 * i]);
        s = warp_sum(s);
        float m_new = fmaxf(m, s);
        float correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) acc[i] = acc[i] * correction + p * bf16_to_float(vp[(long)j * HEAD_DIM + lane + 32 * i]);
        m = m_new;
    }
    float* op = out + ((long)t * heads + h) * HEAD_DIM;
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) op[lane + 32 * i] = acc[i] / l;
}

// Split-KV (flash-decoding) attention for few queries: block (token, KV head, split) walks keys
// [split * keys_per_split, ...) with one warp per query head of the GQA group, so every head of the group reads
// the same keys while they are in L1/L2, and writes its partial softmax state (max, sum, unnormalised output) for
// attention_combine. Block: 32 * group threads. Grid: (splits, kv_heads, tokens).
extern "C" __global__ void attention_split(const float* q, const bf16_t* k_cache, const bf16_t* v_cache,
                                           float* partial_out, float* partial_ml,
                                           int heads, int kv_heads, int capacity, int start, float scale, int keys_per_split)
{
    int split = blockIdx.x, g = blockIdx.y, t = blockIdx.z, splits = gridDim.x;
    int group = heads / kv_heads, lane = threadIdx.x & 31, h = g * group + (threadIdx.x >> 5);
    int visible = start + t + 1;
    int begin = split * keys_per_split, end = min(visible, begin + keys_per_split);
    const float* qp = q + ((long)t * heads + h) * HEAD_DIM;
    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) { qr[i] = qp[lane + 32 * i] * scale; acc[i] = 0.0f; }
    const bf16_t* kp = k_cache + (long)g * capacity * HEAD_DIM;
    const bf16_t* vp = v_cache + (long)g * capacity * HEAD_DIM;
    float m = __int_as_float(0xff800000), l = 0.0f;
    for (int j = begin; j < end; j++)
    {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) s += qr[i] * bf16_to_float(kp[(long)j * HEAD_DIM + lane + 32 * i]);
        s = warp_sum(s);
        float m_new = fmaxf(m, s);
        float correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) acc[i] = acc[i] * correction + p * bf16_to_float(vp[(long)j * HEAD_DIM + lane + 32 * i]);
        m = m_new;
    }
    long row = ((long)t * heads + h) * splits + split;
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) partial_out[row * HEAD_DIM + lane + 32 * i] = acc[i];
    if (lane == 0) { partial_ml[row * 2] = m; partial_ml[row * 2 + 1] = l; }
}

// Merges the splits of attention_split: out = Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s. Empty splits (l = 0) add
// nothing. Block: HEAD_DIM threads. Grid: tokens * heads.
extern "C" __global__ void attention_combine(const float* partial_out, const float* partial_ml, float* out, int splits)
{
    long row = blockIdx.x;
    const float* ml = partial_ml + row * splits * 2;
    float big = __int_as_float(0xff800000);
    for (int s = 0; s < splits; s++) if (ml[2 * s + 1] > 0.0f) big = fmaxf(big, ml[2 * s]);
    float total = 0.0f, acc = 0.0f;
    for (int s = 0; s < splits; s++)
    {
        float l = ml[2 * s + 1];
        if (l <= 0.0f) continue;
        float w = expf(ml[2 * s] - big);
        total += w * l;
        acc += w * partial_out[(row * splits + s) * HEAD_DIM + threadIdx.x];
    }
    out[row * HEAD_DIM + threadIdx.x] = acc / total;
}
