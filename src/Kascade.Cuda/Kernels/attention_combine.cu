// attention_combine: merges the per-split (max, sum, unnormalised output) rows that a split-KV launch writes — of
// attention_mma, attention_wgmma and attention_decode, and of selection.cu's sparse_decode — into the output.
// Specialisation key: HEAD_DIM.
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif

// Merges the splits of the tensor-core kernels: out = Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s. Empty splits (l = 0) add
// nothing. The splits' weights are computed once, in parallel, into shared memory; then thread (d, q) sums
// dimension d over splits q, q + COMBINE_LANES, … with several independent loads in flight, and the lanes q are
// added in shared memory (a serial loop here costs a memory latency per split, a large part of a batch-1 decode).
// Launched as a programmatic dependent of the attention kernel on sm_90+; once it has waited for that kernel it lets the
// next one launch (the O projection's GEMV, which loads its first weights while this merge runs).
// Block: HEAD_DIM × COMBINE_LANES threads (one dimension, so that block_max/block_sum see its warps). Grid: tokens * heads.
#define MAX_SPLITS 1024                                          // AttentionLaunch.MaxSplits
#define COMBINE_LANES 4
extern "C" __global__ void __launch_bounds__(HEAD_DIM * COMBINE_LANES) attention_combine(const float* partial_out, const float* partial_ml, float* out, int splits)
{
    __shared__ float weight[MAX_SPLITS], scratch[32], lanes[COMBINE_LANES][HEAD_DIM];
    const int t = threadIdx.x, d = t % HEAD_DIM, q = t / HEAD_DIM, threads = HEAD_DIM * COMBINE_LANES;
    wait_for_previous_kernel();                                  // launched to overlap attention_mma's tail
    allow_dependent_launch();
    long row = blockIdx.x;
    const float* ml = partial_ml + row * splits * 2;
    float big = __int_as_float(0xff800000);
    for (int s = t; s < splits; s += threads) if (ml[2 * s + 1] > 0.0f) big = fmaxf(big, ml[2 * s]);
    big = block_max(big, scratch);
    float total = 0.0f;
    for (int s = t; s < splits; s += threads)
    {
        float l = ml[2 * s + 1], w = l > 0.0f ? expf(ml[2 * s] - big) : 0.0f;
        weight[s] = w;
        total += w * l;
    }
    total = block_sum(total, scratch);                           // its barrier also publishes `weight`
    const float* po = partial_out + row * splits * HEAD_DIM + d;
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    int s = q;
    for (; s + 3 * COMBINE_LANES < splits; s += 4 * COMBINE_LANES)
    {
#pragma unroll
        for (int u = 0; u < 4; u++) acc[u] += weight[s + u * COMBINE_LANES] * po[(long)(s + u * COMBINE_LANES) * HEAD_DIM];
    }
    for (; s < splits; s += COMBINE_LANES) acc[0] += weight[s] * po[(long)s * HEAD_DIM];
    lanes[q][d] = acc[0] + acc[1] + acc[2] + acc[3];
    __syncthreads();
    if (q == 0)
    {
        float sum = 0.0f;
#pragma unroll
        for (int i = 0; i < COMBINE_LANES; i++) sum += lanes[i][d];
        out[row * HEAD_DIM + d] = sum / total;
    }
}
