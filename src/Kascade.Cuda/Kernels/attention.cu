// Attention kernels. Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV head).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GROUP
#error "GROUP must be defined"
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

// Split-KV (flash-decoding) attention for few queries, bandwidth-first. Block (split, KV head, token), 4 warps.
// Every key and value row is read once per block with 16-byte loads and serves all GROUP query heads of the KV
// head: a row of HEAD_DIM bf16 is LANES_PER_KEY lanes × 8 values, so a warp takes KEYS_PER_WARP keys per step.
// Each lane keeps an online-softmax state per head for its 8 dimensions; states are merged across the lanes of a
// warp, then across warps in shared memory, and written as this split's (max, sum, unnormalised output) for
// attention_combine.
#define VEC 8
#define LANES_PER_KEY (HEAD_DIM / VEC)
#define KEYS_PER_WARP (32 / LANES_PER_KEY)
#define DECODE_WARPS 4
#define STEPS 4

__device__ __forceinline__ void unpack8(uint4 raw, float* out)
{
    unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) { out[2 * i] = __uint_as_float(w[i] << 16); out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
}

// Merges softmax state (m2, l2, a2) into (m, l, a), maxima in log2 units; an empty state has l = 0.
__device__ __forceinline__ void merge_state(float& m, float& l, float* a, float m2, float l2, const float* a2)
{
    float big = fmaxf(m, m2);
    float c1 = l > 0.0f ? exp2f(m - big) : 0.0f, c2 = l2 > 0.0f ? exp2f(m2 - big) : 0.0f;
    l = l * c1 + l2 * c2;
#pragma unroll
    for (int i = 0; i < VEC; i++) a[i] = a[i] * c1 + a2[i] * c2;
    m = big;
}

extern "C" __global__ void __launch_bounds__(32 * DECODE_WARPS) attention_split(
    const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* partial_out, float* partial_ml,
    int heads, int kv_heads, int capacity, int start, float scale, int keys_per_split)
{
    __shared__ float shared_ml[DECODE_WARPS][GROUP][2];
    __shared__ float shared_acc[DECODE_WARPS][GROUP][HEAD_DIM];
    int split = blockIdx.x, g = blockIdx.y, t = blockIdx.z, splits = gridDim.x;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int sub = lane / LANES_PER_KEY, part = lane % LANES_PER_KEY;
    int visible = start + t + 1;
    int begin = split * keys_per_split, end = min(visible, begin + keys_per_split);

    float qr[GROUP][VEC], acc[GROUP][VEC], m[GROUP], l[GROUP];
#pragma unroll
    for (int h = 0; h < GROUP; h++)
    {
        const float* qp = q + ((long)t * heads + g * GROUP + h) * HEAD_DIM + part * VEC;
#pragma unroll
        for (int i = 0; i < VEC; i++) { qr[h][i] = qp[i] * scale * 1.4426950408889634f; acc[h][i] = 0.0f; }
        m[h] = __int_as_float(0xff800000);
        l[h] = 0.0f;
    }
    const bf16_t* kp = k_cache + (long)g * capacity * HEAD_DIM + part * VEC;
    const bf16_t* vp = v_cache + (long)g * capacity * HEAD_DIM + part * VEC;
    // STEPS key rows per lane are loaded before any is used, so 2 × STEPS 16-byte loads are in flight per lane;
    // the STEPS scores of a head then share one running-max update.
    const int stride = DECODE_WARPS * KEYS_PER_WARP;
    for (int base = begin + warp * KEYS_PER_WARP; base < end; base += STEPS * stride)
    {
        uint4 kraw[STEPS], vraw[STEPS];
        bool valid[STEPS];
#pragma unroll
        for (int u = 0; u < STEPS; u++)
        {
            int j = base + u * stride + sub;
            valid[u] = j < end;
            kraw[u] = valid[u] ? *reinterpret_cast<const uint4*>(kp + (long)j * HEAD_DIM) : make_uint4(0, 0, 0, 0);
            vraw[u] = valid[u] ? *reinterpret_cast<const uint4*>(vp + (long)j * HEAD_DIM) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int h = 0; h < GROUP; h++)
        {
            float s[STEPS], step_max = __int_as_float(0xff800000);
#pragma unroll
            for (int u = 0; u < STEPS; u++)
            {
                float kf[VEC];
                unpack8(kraw[u], kf);
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < VEC; i++) dot += qr[h][i] * kf[i];
#pragma unroll
                for (int offset = LANES_PER_KEY / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
                s[u] = dot;
                if (valid[u]) step_max = fmaxf(step_max, dot);
            }
            if (!valid[0]) continue;
            float m_new = fmaxf(m[h], step_max);
            float c = l[h] > 0.0f ? exp2f(m[h] - m_new) : 0.0f;
            l[h] *= c;
#pragma unroll
            for (int i = 0; i < VEC; i++) acc[h][i] *= c;
#pragma unroll
            for (int u = 0; u < STEPS; u++)
            {
                if (!valid[u]) continue;
                float p = exp2f(s[u] - m_new), vf[VEC];
                unpack8(vraw[u], vf);
                l[h] += p;
#pragma unroll
                for (int i = 0; i < VEC; i++) acc[h][i] += p * vf[i];
            }
            m[h] = m_new;
        }
    }
    // Merge the warp's key lanes (lanes with the same `part`), then the warps.
#pragma unroll
    for (int h = 0; h < GROUP; h++)
    {
        for (int offset = LANES_PER_KEY; offset < 32; offset <<= 1)
        {
            float m2 = __shfl_xor_sync(0xffffffffu, m[h], offset), l2 = __shfl_xor_sync(0xffffffffu, l[h], offset), a2[VEC];
#pragma unroll
            for (int i = 0; i < VEC; i++) a2[i] = __shfl_xor_sync(0xffffffffu, acc[h][i], offset);
            merge_state(m[h], l[h], acc[h], m2, l2, a2);
        }
        if (sub == 0)
        {
#pragma unroll
            for (int i = 0; i < VEC; i++) shared_acc[warp][h][part * VEC + i] = acc[h][i];
            if (part == 0) { shared_ml[warp][h][0] = m[h]; shared_ml[warp][h][1] = l[h]; }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < GROUP * HEAD_DIM; e += blockDim.x)
    {
        int h = e / HEAD_DIM, dim = e % HEAD_DIM;
        float big = __int_as_float(0xff800000);
        for (int w = 0; w < DECODE_WARPS; w++) if (shared_ml[w][h][1] > 0.0f) big = fmaxf(big, shared_ml[w][h][0]);
        float total = 0.0f, value = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++)
        {
            float lw = shared_ml[w][h][1];
            if (lw <= 0.0f) continue;
            float c = exp2f(shared_ml[w][h][0] - big);
            total += c * lw;
            value += c * shared_acc[w][h][dim];
        }
        long row = ((long)t * heads + g * GROUP + h) * splits + split;
        partial_out[row * HEAD_DIM + dim] = value;
        // attention_combine works in natural-log units.
        if (dim == 0) { partial_ml[row * 2] = big * 0.6931471805599453f; partial_ml[row * 2 + 1] = total; }
    }
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
