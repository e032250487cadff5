// Shared helpers for the Kascade CUDA kernels. bf16 is kept as raw 16-bit patterns so that NVRTC needs no
// include paths: widening is a shift, narrowing rounds to nearest even like PyTorch.
#pragma once

typedef unsigned short bf16_t;

__device__ __forceinline__ float bf16_to_float(bf16_t v) { return __uint_as_float(((unsigned)v) << 16); }

__device__ __forceinline__ bf16_t float_to_bf16(float f)
{
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ __forceinline__ float block_sum(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = lane < warps ? scratch[lane] : 0.0f;
    total = warp_sum(total);
    __syncthreads();
    return total;
}

// Maximum over the block; every thread gets the result. `scratch` holds one float per warp.
__device__ __forceinline__ float block_max(float v, float* scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = lane < warps ? scratch[lane] : __int_as_float(0xff800000);
    for (int offset = 16; offset > 0; offset >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    __syncthreads();
    return m;
}

// Programmatic dependent launch (sm_90+): a kernel lets the next one in the stream start launching before it ends, and
// that one waits for it before reading its results, so the launch latency of the second overlaps the tail of the
// first. Both are no-ops before sm_90 and when the launch did not ask for the overlap.
__device__ __forceinline__ void allow_dependent_launch()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wait_for_previous_kernel()
{
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
