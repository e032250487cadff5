// The PTX the tensor-core kernels issue by hand (attention_common.cuh and the kernels on it): bf16 packing, ex2,
// cp.async with and without an L2 cache policy, ldmatrix and mma.sync. All sm_80+ (the cache policies need PTX ISA
// 7.4); no specialisation define.
#pragma once
#include "common.cuh"

// Two floats as a bf16 pair (lo in the low half), rounded to nearest even in one instruction (sm_80+).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi)
{
    unsigned packed;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(packed) : "f"(hi), "f"(lo));
    return packed;
}

// The low half of (x, y) split into two bf16 pairs, x = hi + lo per element, given hi = pack_bf16(x, y): what rounding
// to hi left, rounded again. A bf16 key times either half is exact in an fp32 accumulator, so scores from both halves
// keep fp32 accuracy (the anchor scores of decode_scores.cu, anchor_prefill.cu and attention_decode_scores).
__device__ __forceinline__ unsigned pack_bf16_residual(float x, float y, unsigned hi)
{
    return pack_bf16(x - __uint_as_float(hi << 16), y - __uint_as_float(hi & 0xffff0000u));
}

// 2^x in one instruction (ex2.approx: 2 ulp, −inf → +0); the softmax is computed in log2 units for it.
__device__ __forceinline__ float fast_exp2(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

__device__ __forceinline__ unsigned shared_address(const void* p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global → shared without passing through registers; zero-filled when !valid (the source is not read).
// .ca, not .cg: with 16 bytes a thread, the L1-bypassing .cg sent the L2 1.5 times the sectors the tiles hold (a third
// of them repeats), and decode took 5–7% longer (ncu on the H100, bench/results/attention-h100.md).
__device__ __forceinline__ void copy_async16(void* destination, const void* source, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(destination)), "l"(source), "r"(valid ? 16 : 0));
}

// The same for a chunk known to be in bounds (no source-size operand), its destination a shared-memory address.
__device__ __forceinline__ void copy_async16(unsigned destination, const void* source)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 16;\n" ::"r"(destination), "l"(source));
}

// 4 bytes global → shared (.ca: the only form for fewer than 16); zero-filled when !valid (the source is not read).
__device__ __forceinline__ void copy_async4(void* destination, const void* source, bool valid)
{
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared_address(destination)), "l"(source), "r"(valid ? 4 : 0));
}

// A decode step's K/V stream is read once, so its lines are marked first to leave L2: the raw scores a decode anchor
// (decode_scores_mma) and layer 0 (attention_decode_scores) write then stay in L2 for the Top-k that reads them next
// instead of being pushed out by the keys streaming past. On the H100 at 128k an anchor takes 0.144 ms where it took
// 0.150, layer 0 0.212 where 0.222, dense decode and reuse unchanged; end to end within the spread
// (bench/results/decode-step-h100-2026-12-08-s31.md, call A).
__device__ __forceinline__ unsigned long long evict_first_policy()
{
    unsigned long long policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
    return policy;
}

// copy_async16 with an L2 cache policy (evict_first_policy).
__device__ __forceinline__ void copy_async16(unsigned destination, const void* source, unsigned long long policy)
{
    asm volatile("cp.async.ca.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(destination), "l"(source), "l"(policy));
}

__device__ __forceinline__ void copy_async16(void* destination, const void* source, bool valid, unsigned long long policy)
{
    asm volatile("cp.async.ca.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n" ::"r"(shared_address(destination)), "l"(source), "r"(valid ? 16 : 0), "l"(policy));
}

__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

// Waits until at most `pending` of this thread's committed groups are still in flight.
template <int pending>
__device__ __forceinline__ void copy_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
