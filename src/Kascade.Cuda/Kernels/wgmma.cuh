// Hopper (sm_90a) warpgroup MMA and the shared-memory plumbing around it, shared by the attention loop of
// wgmma_attention.cuh (attention_wgmma.cu, sparse_prefill_wgmma.cu) and anchor_scores_wgmma.cu (the anchors' pooled
// scores): proxy fences, wgmma fence / commit / wait, mbarriers, the
// 128-byte-swizzled matrix descriptor, the wgmma shapes the kernels issue, and the swizzled staging of a K/V tile.
// Tiles are stored in the layout wgmma reads: a [rows][HEAD_DIM] bf16 tile is HEAD_DIM / 64 regions [rows][64]
// (128-byte rows), 16-byte chunk c of row r stored at chunk c ^ (r % 8), 8-row groups 1024 bytes apart. The including
// kernel defines attention_common.cuh's ATT_* first (TileCopy, CHUNKS_PER_ROW, ATT_KEYS).
#pragma once
#include "attention_common.cuh"

// Orders this thread's generic-proxy shared-memory writes (cp.async) with later async-proxy reads of the same memory
// (wgmma, sm_90).
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }

__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

// Waits until at most `pending` of the warpgroup's committed wgmma groups are still running.
template <int pending>
__device__ __forceinline__ void wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory"); }

__device__ __forceinline__ void wgmma_wait_all() { wgmma_wait<0>(); }

// Pins registers a wgmma group reads or accumulates into at this point of the program: ptxas may not move the
// instructions that define them into the group's stage (between its fence and the wait), where it serialises the MMAs
// or injects a warpgroup.arrive (ptxas notes C7515 with CUDA 12.4 and C7519 with 13 on attention_wgmma without it).
// One register, by its asm constraint: "f" for an fp32 accumulator, "r" for a packed bf16 pair.
__device__ __forceinline__ void pin_register(float& x) { asm volatile("" : "+f"(x)::"memory"); }
__device__ __forceinline__ void pin_register(unsigned& x) { asm volatile("" : "+r"(x)::"memory"); }
template <typename T, int N>
__device__ __forceinline__ void pin_registers(T (&r)[N][4])
{
#pragma unroll
    for (int n = 0; n < N; n++)
#pragma unroll
        for (int i = 0; i < 4; i++) pin_register(r[n][i]);
}

// mbarriers (sm_80+ shared-memory barriers with phases) for attention_wgmma's ring.
__device__ __forceinline__ void mbarrier_init(unsigned long long* barrier, unsigned count)
{
    asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_arrive(unsigned long long* barrier)
{
    asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared.b64 state, [%0];\n}\n" ::"r"(shared_address(barrier)) : "memory");
}

// Arrives on `barrier` once this thread's earlier cp.async copies have landed (the count was set for it: noinc).
__device__ __forceinline__ void mbarrier_arrive_after_copies(unsigned long long* barrier)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];\n" ::"r"(shared_address(barrier)) : "memory");
}

__device__ __forceinline__ void mbarrier_wait(unsigned long long* barrier, unsigned parity)
{
    unsigned done = 0;
    while (!done)
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done) : "r"(shared_address(barrier)), "r"(parity) : "memory");
}

// Shared-memory matrix descriptor (PTX ISA, wgmma): start address, leading and stride byte offsets (16-byte units),
// 128-byte swizzle. K-major tiles (K for S = Q·Kᵀ) use only the stride, 1024 bytes between 8-row groups; the
// N-major V tile steps 1024 bytes per 8 keys whichever field the hardware reads, so it sets both (both conventions
// were checked on the H100 with a 64 × 64 probe before this kernel was written).
__device__ __forceinline__ unsigned long long swizzled_descriptor(const void* p, unsigned leading_bytes, unsigned stride_bytes)
{
    return (unsigned long long)((shared_address(p) & 0x3ffff) >> 4) | ((unsigned long long)(leading_bytes >> 4) << 16) |
           ((unsigned long long)(stride_bytes >> 4) << 32) | (1ull << 62);
}

template <int TRANS_B, int ACCUMULATE>
__device__ __forceinline__ void wgmma_m64n64k16(float* d, const unsigned* a, unsigned long long b)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, %37;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "n"(ACCUMULATE));
}

template <int TRANS_B, int ACCUMULATE>
__device__ __forceinline__ void wgmma_m64n128k16(float* d, const unsigned* a, unsigned long long b)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, %69;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "n"(TRANS_B), "n"(ACCUMULATE));
}

// A wgmma with both operands in shared memory (descriptors a and b, both K-major): D[64 × 64] (+)= A[64 × 16] · B[64 × 16]ᵀ.
template <int ACCUMULATE>
__device__ __forceinline__ void wgmma_ss_m64n64k16(float* d, unsigned long long a, unsigned long long b)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a), "l"(b), "n"(ACCUMULATE));
}

// The element offset of (row r, column) in a swizzled [rows][HEAD_DIM] bf16 tile: region column / 64 (rows · 64
// elements each), row r's 64 elements, its 16-byte chunk (column % 64) / 8 stored at that chunk ^ (r % 8).
__device__ __forceinline__ int swizzled_offset(int rows, int r, int column)
{
    return (column / 64) * rows * 64 + r * 64 + ((((column % 64) >> 3) ^ (r & 7)) << 3) + (column & 7);
}

// A dynamic shared-memory start rounded up to the 1024-byte swizzle atom (the kernels ask for 1 KiB of slack for it).
__device__ __forceinline__ unsigned char* swizzle_aligned(unsigned char* shared) { return shared + ((1024 - (shared_address(shared) & 1023)) & 1023); }

// A ring slot's copy (TileCopy) in the swizzled layout: each tile region [ATT_KEYS][64] of 128-byte rows, chunk c of
// row r at chunk c ^ (r % 8). A thread's rows are ROW_STEP (a multiple of 8) apart, so its XOR, like the rest of its address, is fixed.
static_assert(ROW_STEP % 8 == 0, "the swizzled copy stages rows a multiple of 8 apart");
__device__ __forceinline__ TileCopy swizzled_tile_copy()
{
    int row = threadIdx.x / CHUNKS_PER_ROW, c = threadIdx.x % CHUNKS_PER_ROW;
    return TileCopy{row, (long)row * HEAD_DIM + c * 8, swizzled_offset(ATT_KEYS, row, c * 8)};
}
