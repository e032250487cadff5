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
