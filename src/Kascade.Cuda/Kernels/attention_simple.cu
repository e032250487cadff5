// The CUDA-core attention kernels, one warp per (token, query head) through warp_attention: attention_dense (causal,
// every visible key; the head dims the tensor-core kernels are not compiled for) and attention_gathered (the key sets
// the baselines choose on the host). Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV
// head).
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
