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

// Eight consecutive bf16 values (16 bytes, 16-byte aligned) widened to fp32 with one vector load.
__device__ __forceinline__ void load_bf16x8(const bf16_t* p, float (&out)[8])
{
    uint4 packed = *reinterpret_cast<const uint4*>(p);
    const unsigned words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
    for (int e = 0; e < 4; e++)
    {
        out[2 * e] = __uint_as_float(words[e] << 16);
        out[2 * e + 1] = __uint_as_float(words[e] & 0xffff0000u);
    }
}

struct SumOp
{
    __device__ float operator()(float a, float b) const { return a + b; }
};

struct MaxOp
{
    __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op)
{
    for (int offset = 16; offset > 0; offset >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp{}); }

// ln Σ over `splits` split-softmax partials (max, sum) at ml (fp32 [splits, 2]) of e^(max) · sum — a row's log-sum-exp
// from a split-KV pass; splits with sum 0 saw no key. Called by a whole warp, which all get the result: lanes take
// every 32nd split, so a decode step's hundreds of splits are not read one after another.
__device__ __forceinline__ float merged_log_sum_exp(const float* ml, int splits)
{
    const int lane = threadIdx.x & 31;
    float m = __int_as_float(0xff800000), l = 0.0f;
    for (int s = lane; s < splits; s += 32) if (ml[2 * s + 1] > 0.0f) m = fmaxf(m, ml[2 * s]);
    m = warp_reduce(m, MaxOp{});
    for (int s = lane; s < splits; s += 32) if (ml[2 * s + 1] > 0.0f) l += ml[2 * s + 1] * expf(ml[2 * s] - m);
    return m + logf(warp_sum(l));
}

// `op` over the block (`identity` fills the missing warps); every thread gets the result. `scratch` holds one float
// per warp.
template <typename Op>
__device__ __forceinline__ float block_reduce(float v, float identity, float* scratch, Op op)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_reduce(v, op);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float total = warp_reduce(lane < warps ? scratch[lane] : identity, op);
    __syncthreads();
    return total;
}

__device__ __forceinline__ float block_sum(float v, float* scratch) { return block_reduce(v, 0.0f, scratch, SumOp{}); }

__device__ __forceinline__ float block_max(float v, float* scratch) { return block_reduce(v, __int_as_float(0xff800000), scratch, MaxOp{}); }

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

// The start position of an op over consecutive positions: read from the step on the device when the op has one (a
// recorded decode step replays with the next position), else the value given at launch.
__device__ __forceinline__ int start_position(const int* on_device, int given) { return on_device != nullptr ? *on_device : given; }
