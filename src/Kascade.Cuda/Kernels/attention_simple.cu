// The CUDA-core attention kernel, one warp per (token, query head) through warp_attention: attention_dense (causal,
// every visible key; the head dims the tensor-core kernels are not compiled for). Sparse attention over a plan is
// selection.cu's. Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV head).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GROUP
#error "GROUP must be defined"
#endif
#include "warp_attention.cuh"

// The key order attention_dense walks: every visible key.
struct AllKeys
{
    __device__ int operator()(int i) const { return i; }
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
