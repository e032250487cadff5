// Elementwise and normalisation ops of the Llama-family forward: fp32 activations, bf16 weights and KV cache.
#include "common.cuh"

// out[t, :] = table[ids[t], :]; table bf16 [vocab, hidden], out fp32 [tokens, hidden]. Grid: tokens.
extern "C" __global__ void embed_bf16(const bf16_t* table, const int* ids, float* out, int hidden)
{
    const bf16_t* row = table + (long)ids[blockIdx.x] * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) out[(long)blockIdx.x * hidden + i] = bf16_to_float(row[i]);
}

// y = x / sqrt(mean(x^2) + eps) * w over groups of `width` (a row, or one head for q/k norms). Grid: groups.
// Launched dependent (programmatic dependent launch): a thread loads its first RMSNORM_HELD float4s of w, which no
// kernel writes, before it waits for the previous kernel, then reads x. A 4096-wide row at 256 threads is one memory
// round trip per pass, with w's already under way.
#define RMSNORM_HELD 4
extern "C" __global__ void rmsnorm(const float* x, const float* w, float* y, int width, float eps)
{
    __shared__ float scratch[32];
    allow_dependent_launch();
    if ((width & 3) != 0)
    {
        wait_for_previous_kernel();
        const float* in = x + (long)blockIdx.x * width;
        float* out = y + (long)blockIdx.x * width;
        float ss = 0.0f;
        for (int i = threadIdx.x; i < width; i += blockDim.x) ss += in[i] * in[i];
        float inv = rsqrtf(block_sum(ss, scratch) / width + eps);
        for (int i = threadIdx.x; i < width; i += blockDim.x) out[i] = in[i] * inv * w[i];
        return;
    }
    const float4* in4 = reinterpret_cast<const float4*>(x + (long)blockIdx.x * width);
    const float4* w4 = reinterpret_cast<const float4*>(w);
    float4* out4 = reinterpret_cast<float4*>(y + (long)blockIdx.x * width);
    int n4 = width >> 2;
    float4 held[RMSNORM_HELD];
#pragma unroll
    for (int u = 0; u < RMSNORM_HELD; u++)
    {
        int i = threadIdx.x + u * blockDim.x;
        held[u] = i < n4 ? w4[i] : make_float4(0, 0, 0, 0);
    }
    wait_for_previous_kernel();
    float ss = 0.0f;
#pragma unroll 4
    for (int i = threadIdx.x; i < n4; i += blockDim.x)
    {
        float4 v = in4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    float inv = rsqrtf(block_sum(ss, scratch) / width + eps);
    int u = 0;
#pragma unroll 4
    for (int i = threadIdx.x; i < n4; i += blockDim.x, u++)
    {
        float4 v = in4[i], g = u < RMSNORM_HELD ? held[u] : w4[i];
        out4[i] = make_float4(v.x * inv * g.x, v.y * inv * g.y, v.z * inv * g.z, v.w * inv * g.w);
    }
}

// A step's attention inputs: rotates q [tokens, heads * d] and k [tokens, kv_heads * d] in place (HF rotate_half;
// tables fp32 [positions, d/2]) and stores k and v in the layer's cache, laid out [kv_heads, capacity, d] bf16 for
// keys and values. One kernel instead of three (two rotations and the append), a block per token and head so that a
// decode step's is one memory round trip. Launched dependent: it waits for the q/k/v projection before reading.
// Grid: (tokens, heads + kv_heads); block: a multiple of 32 threads, one per rotated pair.
extern "C" __global__ void rope_append(float* q, float* k, const float* v, const float* cos_table, const float* sin_table,
    bf16_t* k_cache, bf16_t* v_cache, int heads, int kv_heads, int d, int capacity, int start, const int* start_at)
{
    allow_dependent_launch();
    wait_for_previous_kernel();
    start = start_position(start_at, start);
    int t = blockIdx.x, h = blockIdx.y, half = d / 2, position = start + t;
    bool key = h >= heads;
    int kv = h - heads;
    float* p = key ? k + ((long)t * kv_heads + kv) * d : q + ((long)t * heads + h) * d;
    const float* c = cos_table + (long)position * half;
    const float* s = sin_table + (long)position * half;
    long at = ((long)kv * capacity + position) * d;
    for (int i = threadIdx.x; i < half; i += blockDim.x)
    {
        float a = p[i], b = p[i + half];
        float lo = a * c[i] - b * s[i], hi = b * c[i] + a * s[i];
        p[i] = lo;
        p[i + half] = hi;
        if (key)
        {
            k_cache[at + i] = float_to_bf16(lo);
            k_cache[at + i + half] = float_to_bf16(hi);
            v_cache[at + i] = float_to_bf16(v[((long)t * kv_heads + kv) * d + i]);
            v_cache[at + i + half] = float_to_bf16(v[((long)t * kv_heads + kv) * d + i + half]);
        }
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
