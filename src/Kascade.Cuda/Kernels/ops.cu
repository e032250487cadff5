// Elementwise and normalisation ops of the Llama-family forward: fp32 activations, bf16 weights and KV cache.
#include "common.cuh"

// out[t, :] = table[ids[t], :]; table bf16 [vocab, hidden], out fp32 [tokens, hidden]. Grid: tokens.
extern "C" __global__ void embed_bf16(const bf16_t* table, const int* ids, float* out, int hidden)
{
    const bf16_t* row = table + (long)ids[blockIdx.x] * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[(long)blockIdx.x * hidden + i] = bf16_to_float(row[i]);
}

// y = x / sqrt(mean(x^2) + eps) * w over groups of `width` (a row, or one head for q/k norms). Grid: groups.
extern "C" __global__ void rmsnorm(const float* x, const float* w, float* y, int width, float eps)
{
    __shared__ float scratch[32];
    const float* in = x + (long)blockIdx.x * width;
    float* out = y + (long)blockIdx.x * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += in[i] * in[i];
    float inv = rsqrtf(block_sum(ss, scratch) / width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) out[i] = in[i] * inv * w[i];
}

// HF rotate_half RoPE in place on x [tokens, heads * d]; tables fp32 [positions, d/2]. Grid: tokens.
extern "C" __global__ void rope(float* x, const float* cos_table, const float* sin_table, int heads, int d, int start, const int* start_at)
{
    start = start_position(start_at, start);
    int half = d / 2;
    long row = (long)blockIdx.x * heads * d;
    const float* c = cos_table + (long)(start + blockIdx.x) * half;
    const float* s = sin_table + (long)(start + blockIdx.x) * half;
    for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x)
    {
        int h = idx / half, i = idx % half;
        float* p = x + row + (long)h * d;
        float a = p[i], b = p[i + half];
        p[i] = a * c[i] - b * s[i];
        p[i + half] = b * c[i] + a * s[i];
    }
}

// gate = silu(gate) * up.
extern "C" __global__ void swiglu(float* gate, const float* up, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// x += y.
extern "C" __global__ void add(float* x, const float* y, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) x[i] += y[i];
}

// y[r, c] += b[c].
extern "C" __global__ void add_bias(float* y, const float* b, long n, int cols)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) y[i] += b[i % cols];
}

// y = bf16(x), for the GEMM inputs.
extern "C" __global__ void to_bf16(const float* x, bf16_t* y, long n)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) y[i] = float_to_bf16(x[i]);
}

// Cache layout per layer: [kv_heads, capacity, d] bf16 for keys and values. Grid: tokens.
extern "C" __global__ void kv_append(const float* k, const float* v, bf16_t* k_cache, bf16_t* v_cache, int kv_heads, int d, int capacity, int start, const int* start_at)
{
    start = start_position(start_at, start);
    int t = blockIdx.x;
    for (int idx = threadIdx.x; idx < kv_heads * d; idx += blockDim.x)
    {
        int h = idx / d, i = idx % d;
        long at = ((long)h * capacity + start + t) * d + i;
        k_cache[at] = float_to_bf16(k[(long)t * kv_heads * d + idx]);
        v_cache[at] = float_to_bf16(v[(long)t * kv_heads * d + idx]);
    }
}

// A step's start position moves on by `tokens` and its draw count by `draws` (StepInputs). One thread.
extern "C" __global__ void step_add(int* position, int tokens, long long* draw_count, int draws)
{
    *position += tokens;
    *draw_count += draws;
}

// Random weights, the same counter-based generator as Kascade.Core.RandomWeights: center + scale * u,
// u = top 24 bits of splitmix64(key + i * golden) mapped to [-1, 1).
__device__ __forceinline__ float random_uniform(unsigned long long key, long i)
{
    unsigned long long z = key + (unsigned long long)i * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

// Reads n 16-byte words of a zeroed buffer (GpuTimer's L2 flush: the cache is left holding clean lines). The store,
// which a zeroed buffer never reaches, keeps the compiler from dropping the loads.
extern "C" __global__ void read_all(uint4* words, long n)
{
    unsigned folded = 0;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
    {
        uint4 v = words[i];
        folded ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (folded == 0x9e3779b9u) words[0].x = folded;
}

extern "C" __global__ void fill_random_bf16(bf16_t* w, long n, float center, float scale, unsigned long long key)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        w[i] = float_to_bf16(center + scale * random_uniform(key, i));
}

extern "C" __global__ void fill_random_f32(float* w, long n, float center, float scale, unsigned long long key)
{
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        w[i] = center + scale * random_uniform(key, i);
}

// y[i, j] = x[i, :] · w[j, :] for a few rows of x (decode): one warp per output column j streams w's row once
// with 16-byte loads for all m rows of x, so the weights are read at memory bandwidth (a GEMM library picks tile
// shapes made for large m). x fp32 [m, k], w bf16 [n, k], y fp32 [m, n]; k a multiple of 8, m <= GEMV_ROWS.
// Block: 256 threads = 8 output columns.
#define GEMV_ROWS 8
#define GEMV_STEPS 4
extern "C" __global__ void gemv_bf16(const float* x, const bf16_t* w, float* y, int m, int k, int n)
{
    int j = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (j >= n) return;
    const bf16_t* row = w + (long)j * k;
    float acc[GEMV_ROWS];
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++) acc[i] = 0.0f;
    // GEMV_STEPS 16-byte loads are issued before any is used, so each lane keeps 64 bytes of w in flight.
    for (int c0 = lane * 8; c0 < k; c0 += GEMV_STEPS * 32 * 8)
    {
        uint4 raw[GEMV_STEPS];
#pragma unroll
        for (int u = 0; u < GEMV_STEPS; u++)
        {
            int c = c0 + u * 32 * 8;
            raw[u] = c < k ? *reinterpret_cast<const uint4*>(row + c) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int u = 0; u < GEMV_STEPS; u++)
        {
            int c = c0 + u * 32 * 8;
            if (c >= k) break;
            unsigned words[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
            float wf[8];
#pragma unroll
            for (int e = 0; e < 4; e++) { wf[2 * e] = __uint_as_float(words[e] << 16); wf[2 * e + 1] = __uint_as_float(words[e] & 0xffff0000u); }
#pragma unroll
            for (int i = 0; i < GEMV_ROWS; i++)
            {
                if (i >= m) break;
                const float4* xp = reinterpret_cast<const float4*>(x + (long)i * k + c);
                float4 a = xp[0], b = xp[1];
                acc[i] += a.x * wf[0] + a.y * wf[1] + a.z * wf[2] + a.w * wf[3] + b.x * wf[4] + b.y * wf[5] + b.z * wf[6] + b.w * wf[7];
            }
        }
    }
#pragma unroll
    for (int i = 0; i < GEMV_ROWS; i++)
    {
        if (i >= m) break;
        float v = warp_sum(acc[i]);
        if (lane == 0) y[(long)i * n + j] = v;
    }
}
