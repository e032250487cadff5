// The FlashAttention-3 loop of Hopper's attention kernels, shared by attention_wgmma.cu (dense prefill) and
// sparse_prefill_wgmma.cu (prefill over a Kascade plan's gathered keys): a block's warpgroups of 64 rows walk one ring
// of ATT_STAGES (K, V) tiles in the swizzled layout of wgmma.cuh; S = Q·K(j)ᵀ and O += P·V(j) are wgmma.mma_async
// with the A operand (Q, then P) in registers and K/V read by the tensor cores from shared memory; while the softmax
// of tile j + 1 runs, P(j)·V(j) is still on the tensor cores, and a block's two warpgroups take turns at issuing their
// MMAs (ping-pong, `Turns`). The accumulator of m64nNk16 gives warp w of a warpgroup
// rows 16w + g and 16w + g + 8 and, for each 8 columns n, the columns 8n + 2c, 8n + 2c + 1: the mma.m16n8 C layout,
// so the masking, softmax and P packing are attention_mma's (attention_common.cuh). The kernels differ only in where a
// tile's rows come from (`fill`) and how keys are numbered for the masks. Needs ATT_STAGES ≥ 3: tile j + 1 is read
// (S) while tile j is (PV) and tile j + 2 loads. Include after attention_common.cuh.
#pragma once
#include "wgmma.cuh"

#define HALVES (HEAD_DIM / 64)

#if ATT_KEYS == 64
#define WGMMA_S wgmma_m64n64k16
#elif ATT_KEYS == 128
#define WGMMA_S wgmma_m64n128k16
#else
#error "attention_wgmma takes ATT_KEYS 64 or 128"
#endif
#define TILE_BYTES (ATT_KEYS * HEAD_DIM * 2)

// Issues S = Q·Kᵀ over the K tile whose descriptor is `k_tile` for the warpgroup's 64 rows as one wgmma group (not
// waited for): the query's PARTS bf16 parts (2: hi + lo of an fp32 query, scores to fp32 accuracy) one after another
// into the same accumulators. k-step ks reads dims 16 ks … of every key: 32 bytes further into its 64-dim region
// (descriptor addresses count 16-byte units).
template <int PARTS>
__device__ __forceinline__ void issue_scores(float (&s)[ATT_KEYS / 8][4], const unsigned (*const qa)[HEAD_DIM / 16][4], unsigned long long k_tile)
{
    pin_registers(s);
    wgmma_fence();
    WGMMA_S<0, 0>(&s[0][0], qa[0][0], k_tile);                  // the first k-step overwrites s: no zeroing needed
#pragma unroll
    for (int ks = 1; ks < HEAD_DIM / 16; ks++)
        WGMMA_S<0, 1>(&s[0][0], qa[0][ks], k_tile + (((ks / 4) * ATT_KEYS * 128 + (ks % 4) * 32) >> 4));
    if constexpr (PARTS == 2)
    {
#pragma unroll
        for (int ks = 0; ks < HEAD_DIM / 16; ks++)
            WGMMA_S<0, 1>(&s[0][0], qa[1][ks], k_tile + (((ks / 4) * ATT_KEYS * 128 + (ks % 4) * 32) >> 4));
    }
    wgmma_commit();
    pin_registers(s);
}

// P (the softmax of S, in the C layout) as wgmma A fragments: k-step kk is keys 16 kk … of the tile. Packed as soon as
// the softmax is done, so S's fp32 registers are free for the next tile's scores while P·V runs: one tile of scores
// and one of bf16 probabilities live, not two of fp32 scores.
__device__ __forceinline__ void pack_probabilities(const float (&s)[ATT_KEYS / 8][4], unsigned (&pa)[ATT_KEYS / 16][4])
{
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS / 16; kk++)
    {
        pa[kk][0] = pack_bf16(s[2 * kk][0], s[2 * kk][1]);
        pa[kk][1] = pack_bf16(s[2 * kk][2], s[2 * kk][3]);
        pa[kk][2] = pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[kk][3] = pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
    }
}

// Issues O = O · correction + P·V as one wgmma group (not waited for; pa must stay unchanged until it is): k-step kk
// reads keys 16 kk … of the V tile whose descriptor is `v_tile`, 2048 bytes into each of its 64-dim regions; one n64
// MMA per region. Every register a wgmma reads is written before the fence (PTX ISA).
__device__ __forceinline__ void accumulate_values(float (&o)[HEAD_DIM / 8][4], unsigned (&pa)[ATT_KEYS / 16][4], const float* correction, unsigned long long v_tile)
{
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
    {
        o[n][0] *= correction[0]; o[n][1] *= correction[0];
        o[n][2] *= correction[1]; o[n][3] *= correction[1];
    }
    pin_registers(o);
    pin_registers(pa);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < ATT_KEYS / 16; kk++)
#pragma unroll
        for (int half = 0; half < HALVES; half++)
            wgmma_m64n64k16<1, 1>(&o[8 * half][0], pa[kk], v_tile + ((half * ATT_KEYS * 128 + kk * 2048) >> 4));
    wgmma_commit();
    pin_registers(o);
    pin_registers(pa);
}

// The ring's barriers: slot s is `full` once every staging thread's copies into it have landed and `empty` once every
// warp is done reading it, so the warpgroups drift apart (one's softmax under the other's MMAs) with no block-wide
// barrier. Initialised by thread 0 before the block's first barrier.
__device__ __forceinline__ void init_ring(unsigned long long* full, unsigned long long* empty)
{
    if (threadIdx.x == 0)
    {
        for (int s = 0; s < ATT_STAGES; s++)
        {
            mbarrier_init(&full[s], STAGE_THREADS);
            mbarrier_init(&empty[s], ATT_WARPS);
        }
    }
    __syncthreads();
}

// Ping-pong between a block's two warpgroups (FlashAttention-3 §3.1): each issues its MMAs only in its turn and hands
// the turn to the other once they are issued, so one warpgroup's softmax runs while the other's MMAs are on the tensor
// cores instead of both contending for them at once. Warpgroup w's turn is named barrier 1 + w (0 is __syncthreads),
// complete when its 128 threads wait there and the other warpgroup's 128 have arrived. Warpgroup 1 hands the first
// turn to warpgroup 0 and not its own last one, so each barrier sees as many arrivals as waits. With one warpgroup a
// block (ATT_WARPS 4), there is no one to alternate with. Both warpgroups walk the block's `tiles`, so their turns pair.
// On the H100 against the same loop without turns (session 14, calls G and H, same call each): dense prefill at head
// dim 128 562 / 480 / 496 and 565 / 465 / 498 TFLOP/s at 8k / 32k / 128k against 545 / 475 / 505 and 547 / 454 / 496,
// Kascade's layer 0 at 128k (attention_wgmma_lse) 658 ms against 702 and 703, head dim 64 level. Session 13's turns,
// on the loop that kept two fp32 score tiles live, made ptxas serialise the wgmma (C7520) and cost 40%.
#define PING_PONG (ATT_WARPS == 8)
struct Turns
{
    int warpgroup;

    __device__ __forceinline__ void wait() const
    {
        if (PING_PONG) asm volatile("bar.sync %0, 256;" ::"r"(1 + warpgroup) : "memory");
    }
    // Predicated, not branched: ptxas serialises wgmma near code it cannot prove warpgroup-uniform.
    __device__ __forceinline__ void pass(bool when = true) const
    {
        if (PING_PONG)
            asm volatile("{\n .reg .pred p;\n setp.ne.b32 p, %1, 0;\n @p bar.arrive %0, 256;\n}" ::"r"(2 - warpgroup), "r"((int)when) : "memory");
    }
};

// The warp's 16 query rows as wgmma A fragments, read from global memory and multiplied by `fold` (scale · log2 e, for
// scores in log2 units; 1 for the unscaled bf16 rounding that the anchors' bf16 scores use) before rounding; with
// PARTS 2 also what rounding left (pack_bf16_residual). q_row[h] is the fp32 row of this thread's row g (h = 0) and
// g + 8 (h = 1), or −1 for a padding row (zeros).
template <int PARTS>
__device__ __forceinline__ void query_fragments(const float* q, const long (&q_row)[2], float fold, int gc, unsigned (&qa)[PARTS][HEAD_DIM / 16][4])
{
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ks++)
    {
        int col = ks * 16 + 2 * gc;
#pragma unroll
        for (int i = 0; i < 4; i++)                              // a0: row g, a1: row g+8, a2/a3: the same at col + 8
        {
            long r = q_row[i & 1];
            float2 v = r >= 0 ? *reinterpret_cast<const float2*>(q + r * HEAD_DIM + col + (i >> 1) * 8) : make_float2(0.0f, 0.0f);
            qa[0][ks][i] = pack_bf16(v.x * fold, v.y * fold);
            if constexpr (PARTS == 2) qa[1][ks][i] = pack_bf16_residual(v.x * fold, v.y * fold, qa[0][ks][i]);
        }
    }
}

// One warpgroup's attention over `tiles` K/V tiles of the ring at `ring`, tile t filled by fill(k_tile, v_tile, t)
// (cp.async copies of its ATT_KEYS rows into the two swizzled tiles; rows past the last key zero-filled). Key i of
// tile j is numbered key_base + j · ATT_KEYS + i for the masks: this thread's rows see keys below limit[0] and
// limit[1], and warp_first_limit is the smallest limit of the warp's rows (a tile below it needs no mask;
// softmax_tile). Accumulates the unnormalised output o, the running max m (log2 units) and this thread's share of the
// sum l. With SCALE_SCORES the queries were rounded unscaled and each tile's scores are multiplied by score_scale
// (scale · log2 e) before its softmax, as the anchors' bf16 scores are.
// Every warpgroup walks every tile of the block, even one none of its rows sees (at most one tile on the diagonal): a
// branch around wgmma that the compiler cannot prove uniform makes it serialise the MMAs.
template <int PARTS, bool SCALE_SCORES, typename Fill>
__device__ __forceinline__ void attend_ring(unsigned char* ring, unsigned long long* full, unsigned long long* empty, int tiles, int key_base, Fill fill,
                                            const unsigned (&qa)[PARTS][HEAD_DIM / 16][4], float score_scale, int warp_first_limit, const int (&limit)[2],
                                            int gc, int lane, float (&o)[HEAD_DIM / 8][4], float (&m)[2], float (&l)[2])
{
    auto scaled = [&](float (*t)[4]) {
        if constexpr (SCALE_SCORES)
        {
#pragma unroll
            for (int n = 0; n < ATT_KEYS / 8; n++) { t[n][0] *= score_scale; t[n][1] *= score_scale; t[n][2] *= score_scale; t[n][3] *= score_scale; }
        }
    };
    auto stage = [&](int tile) {                                 // tile's slot was last used by tile − ATT_STAGES
        int slot = tile % ATT_STAGES;
        if (tile >= ATT_STAGES) mbarrier_wait(&empty[slot], (tile / ATT_STAGES - 1) & 1);
        bf16_t* k_tile = reinterpret_cast<bf16_t*>(ring + slot * 2 * TILE_BYTES);
        fill(k_tile, k_tile + TILE_BYTES / 2, tile);
        mbarrier_arrive_after_copies(&full[slot]);
    };
    auto arrived = [&](int tile) {                               // the block's copies of tile are in; wgmma may read them
        mbarrier_wait(&full[tile % ATT_STAGES], (tile / ATT_STAGES) & 1);
        fence_proxy_async();
    };
    auto release = [&](int tile) {                               // this warp's MMAs reading tile are done
        __syncwarp();
        if (lane == 0) mbarrier_arrive(&empty[tile % ATT_STAGES]);
    };
#pragma unroll
    for (int s = 0; s < ATT_STAGES - 1; s++)
        if (s < tiles) stage(s);
    // Descriptors of slot 0's K and V tiles; a slot or k-step is an offset in 16-byte units.
    const unsigned long long k_descriptor = swizzled_descriptor(ring, 16, 1024);
    const unsigned long long v_descriptor = swizzled_descriptor(ring + TILE_BYTES, 1024, 1024);

    float correction[2] = {1.0f, 1.0f};
    float s[ATT_KEYS / 8][4];
    unsigned pa[ATT_KEYS / 16][4];
    // tiles + 1 turns (S(0); S(j + 1) with P(j)·V(j); P·V of the last tile); the first is warpgroup 0's. The warpgroup's
    // index through a shuffle, so that ptxas sees it uniform.
    const Turns turns{__shfl_sync(0xffffffffu, (int)(threadIdx.x >> 7), 0)};
    turns.pass(tiles > 0 && turns.warpgroup == 1);

    // Tile j's steps: S(j) = Q·K(j)ᵀ, its softmax (P(j) packed to bf16, the running max and sum, the factor O is rescaled
    // by), then O = O · correction + P(j)·V(j). Each loop step issues S(j + 1) and P(j)·V(j) to the tensor cores and runs
    // the softmax of tile j + 1 while P(j)·V(j) is still on them; O and P's registers are only touched once that MMA has
    // been waited for. The last tile, which has no successor, is peeled off so that the loop body has no branch around
    // a wgmma.
    if (tiles > 0)
    {
        arrived(0);
        turns.wait();
        issue_scores<PARTS>(s, qa, k_descriptor);
        turns.pass();
        wgmma_wait_all();
        scaled(s);
        softmax_tile(s, key_base, warp_first_limit, limit, gc, m, l, correction);
        pack_probabilities(s, pa);
    }
    for (int j = 0; j + 1 < tiles; j++)
    {
        if (j + ATT_STAGES - 1 < tiles) stage(j + ATT_STAGES - 1);
        arrived(j + 1);
        turns.wait();
        issue_scores<PARTS>(s, qa, k_descriptor + ((((j + 1) % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        accumulate_values(o, pa, correction, v_descriptor + (((j % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        turns.pass();
        wgmma_wait<1>();                                         // S(j + 1) is done; P(j)·V(j) may still run
        scaled(s);
        softmax_tile(s, key_base + (j + 1) * ATT_KEYS, warp_first_limit, limit, gc, m, l, correction);
        wgmma_wait_all();
        release(j);
        pack_probabilities(s, pa);
    }
    if (tiles > 0)
    {
        turns.wait();
        accumulate_values(o, pa, correction, v_descriptor + ((((tiles - 1) % ATT_STAGES) * 2 * TILE_BYTES) >> 4));
        turns.pass(turns.warpgroup == 0);
        wgmma_wait_all();
    }
}
