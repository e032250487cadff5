// One warp's online-softmax attention for one (token, query head), shared by the reference kernels of
// attention_simple.cu and the sparse kernels of selection.cu. Needs HEAD_DIM (a multiple of 32); each lane holds
// HEAD_DIM/32 dimensions.
#pragma once
#include "common.cuh"

#define DIMS_PER_LANE (HEAD_DIM / 32)

// Attention over `count` keys, the i-th at position key(i) of the head's K and V (bf16 [positions, HEAD_DIM]); q and
// the output fp32 [HEAD_DIM]. An empty key set gives zeros.
template <typename Key>
__device__ void warp_attention(const float* qp, const bf16_t* kp, const bf16_t* vp, float scale, int count, Key key, float* op, int lane)
{
    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) { qr[i] = qp[lane + 32 * i] * scale; acc[i] = 0.0f; }
    float m = __int_as_float(0xff800000), l = 0.0f;
    for (int n = 0; n < count; n++)
    {
        long j = key(n);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) s += qr[i] * bf16_to_float(kp[j * HEAD_DIM + lane + 32 * i]);
        s = warp_sum(s);
        float m_new = fmaxf(m, s);
        float correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) acc[i] = acc[i] * correction + p * bf16_to_float(vp[j * HEAD_DIM + lane + 32 * i]);
        m = m_new;
    }
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) op[lane + 32 * i] = l > 0.0f ? acc[i] / l : 0.0f;
}
