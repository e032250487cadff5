// The linear layers of a decode step: y = x · Wᵀ for a few rows of x, where streaming W once is the whole cost
// (a GEMM library picks tile shapes made for large m). One launch covers every weight that reads the same x (a
// layer's q, k and v; its gate and up), so the step pays one launch and one ramp-up for them instead of three or two.
#include "common.cuh"

#define GEMV_ROWS 8        // the most rows of x a launch takes (CudaBackend.GemvMaxRows)
#define GEMV_SEGMENTS 4    // the most weights one launch covers
#define GEMV_THREADS 256   // a block's threads split k between them
#define GEMV_COLUMNS 2     // output columns of a block (CudaBackend.GemvColumns)
#define GEMV_STEPS 4       // 16-byte loads per weight row a thread issues before it uses any

// Rows [first, first + rows) of the launch's output columns come from w bf16 [rows, k] (+ bias fp32 [rows], may be
// null) and go to y fp32 [m, rows].
struct GemvSegment
{
    const bf16_t* w;
    const float* bias;
    float* y;
    int rows;
    int first;
};

struct GemvParams
{
    const float* x;        // fp32 [m, k]; k a multiple of 8, rows 16-byte aligned
    int m;                 // 1 .. GEMV_ROWS
    int k;
    int columns;           // output columns of the launch: the segments' rows (gemv_swiglu: the gate's)
    int segments;          // 1 .. GEMV_SEGMENTS (gemv_swiglu: 2, gate then up)
    int accumulate;        // gemv: y += x · wᵀ + bias instead of y = x · wᵀ + bias
    GemvSegment seg[GEMV_SEGMENTS];
};

// The segment that holds output column `column` of the launch (segments in order of `first`).
__device__ __forceinline__ int gemv_segment(const GemvParams& p, int column)
{
    int segment = 0;
#pragma unroll
    for (int s = 1; s < GEMV_SEGMENTS; s++)
        if (s < p.segments && column >= p.seg[s].first) segment = s;
    return segment;
}

// The weight rows of column group `group` (GEMV_COLUMNS output columns): PAIR 1, one row per column, of the segment
// that holds it; PAIR 2 (SwiGLU), the same row of segment 0 (gate) and segment 1 (up). Null past the launch's columns.
template <int PAIR>
__device__ __forceinline__ void gemv_rows(const GemvParams& p, int group, const bf16_t* (&row)[GEMV_COLUMNS][PAIR])
{
#pragma unroll
    for (int c = 0; c < GEMV_COLUMNS; c++)
    {
        int column = group * GEMV_COLUMNS + c;
        int segment = gemv_segment(p, column);
        long index = column - p.seg[segment].first;
#pragma unroll
        for (int q = 0; q < PAIR; q++) row[c][q] = column < p.columns ? p.seg[PAIR == 1 ? segment : q].w + index * p.k : nullptr;
    }
}

// One round of a thread's weight loads: GEMV_STEPS 16-byte words per row at columns c0 + u · GEMV_THREADS · 8 (zero
// past k or past the launch's columns).
template <int PAIR>
__device__ __forceinline__ void gemv_load(uint4 (&raw)[GEMV_COLUMNS][PAIR][GEMV_STEPS], const bf16_t* const (&row)[GEMV_COLUMNS][PAIR], int c0, int k)
{
#pragma unroll
    for (int c = 0; c < GEMV_COLUMNS; c++)
#pragma unroll
        for (int q = 0; q < PAIR; q++)
#pragma unroll
            for (int u = 0; u < GEMV_STEPS; u++)
            {
                int col = c0 + u * GEMV_THREADS * 8;
                raw[c][q][u] = row[c][q] != nullptr && col < k ? *reinterpret_cast<const uint4*>(row[c][q] + col) : make_uint4(0, 0, 0, 0);
            }
}

// acc[i][c][q] += x[i, col .. col+8) · row_cq[col .. col+8) for the round's columns col below k.
template <int PAIR, int ROWS>
__device__ __forceinline__ void gemv_dot(float (&acc)[ROWS][GEMV_COLUMNS][PAIR], const uint4 (&raw)[GEMV_COLUMNS][PAIR][GEMV_STEPS], const GemvParams& p, int c0)
{
#pragma unroll
    for (int u = 0; u < GEMV_STEPS; u++)
    {
        int col = c0 + u * GEMV_THREADS * 8;
        if (col >= p.k) break;
        float wf[GEMV_COLUMNS][PAIR][8];
#pragma unroll
        for (int c = 0; c < GEMV_COLUMNS; c++)
#pragma unroll
            for (int q = 0; q < PAIR; q++)
            {
                const unsigned words[4] = {raw[c][q][u].x, raw[c][q][u].y, raw[c][q][u].z, raw[c][q][u].w};
#pragma unroll
                for (int e = 0; e < 4; e++)
                {
                    wf[c][q][2 * e] = __uint_as_float(words[e] << 16);
                    wf[c][q][2 * e + 1] = __uint_as_float(words[e] & 0xffff0000u);
                }
            }
#pragma unroll
        for (int i = 0; i < ROWS; i++)
        {
            if (i >= p.m) break;
            const float4* xp = reinterpret_cast<const float4*>(p.x + (long)i * p.k + col);
            float4 a = xp[0], b = xp[1];
#pragma unroll
            for (int c = 0; c < GEMV_COLUMNS; c++)
#pragma unroll
                for (int q = 0; q < PAIR; q++)
                {
                    const float* w = wf[c][q];
                    acc[i][c][q] += a.x * w[0] + a.y * w[1] + a.z * w[2] + a.w * w[3] + b.x * w[4] + b.y * w[5] + b.z * w[6] + b.w * w[7];
                }
        }
    }
}

// A block computes groups of GEMV_COLUMNS output columns; its threads split k, thread t taking the 8 columns at
// t·8 + i·2048 for every i (so a warp's loads are 512 contiguous bytes), and the block sums their parts at the end.
// A warp per column, as in session 15, left 1.3 waves of 14-round warps for the down projection (ncu, H100: 40 µs a
// launch for 75 MB on average, 1.8 TB/s); a block per pair of columns brought q/k/v to 2.4 TB/s and O to 1.9, but a
// block's life there is one weight round trip and then x and the reduction with no weight bytes in flight.
//
// So the grid is what stays resident (CudaBackend.GemvGrid), each block taking groups blockIdx.x, + gridDim.x, ...:
// the next group's first round of weights is loaded before the current group's sums are reduced and written, which
// keeps an SM's loads in flight from one group to the next. Dense decode of the Llama-3.1-8B-shaped model at 128k on
// the H100: 90.3 / 90.4 -> 90.9 / 90.9 tokens/s in the same call (session 19; +0.7-1.3% in session 16's first trial).
//
// Launched as a dependent kernel (programmatic dependent launch): the first round of w, which no kernel writes, is
// loaded before waiting for the previous kernel, so the launch and the first memory round trip overlap its tail;
// nothing is read from x or written to y before the wait.
//
// Calls epilogue(group, i, c, sums) for each row i of x and column c of every group it computes, from thread
// i · GEMV_COLUMNS + c, sums[q] being row i of x dotted with column c's row q.
template <int PAIR, int ROWS, typename Epilogue>
__device__ __forceinline__ void gemv_blocks(const GemvParams& p, Epilogue epilogue)
{
    // Two buffers: a group's partial sums are written while a slow thread may still read the previous group's.
    __shared__ float partial[2][GEMV_THREADS / 32][ROWS * GEMV_COLUMNS * PAIR];
    allow_dependent_launch();
    const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
    const int groups = (p.columns + GEMV_COLUMNS - 1) / GEMV_COLUMNS, round = GEMV_STEPS * GEMV_THREADS * 8;
    uint4 raw[GEMV_COLUMNS][PAIR][GEMV_STEPS];
    const bf16_t* row[GEMV_COLUMNS][PAIR];
    if (blockIdx.x < groups)
    {
        gemv_rows<PAIR>(p, blockIdx.x, row);
        gemv_load<PAIR>(raw, row, t * 8, p.k);
    }
    wait_for_previous_kernel();
    int buffer = 0;
    for (int group = blockIdx.x; group < groups; group += gridDim.x, buffer ^= 1)
    {
        float acc[ROWS][GEMV_COLUMNS][PAIR];
#pragma unroll
        for (int i = 0; i < ROWS; i++)
#pragma unroll
            for (int c = 0; c < GEMV_COLUMNS; c++)
#pragma unroll
                for (int q = 0; q < PAIR; q++) acc[i][c][q] = 0.0f;
        for (int c0 = t * 8; c0 < p.k; c0 += round)
        {
            if (c0 != t * 8) gemv_load<PAIR>(raw, row, c0, p.k);
            gemv_dot<PAIR, ROWS>(acc, raw, p, c0);
        }
        int next = group + gridDim.x;
        if (next < groups)
        {
            gemv_rows<PAIR>(p, next, row);
            gemv_load<PAIR>(raw, row, t * 8, p.k);
        }
#pragma unroll
        for (int i = 0; i < ROWS; i++)
        {
            if (i >= p.m) break;
#pragma unroll
            for (int c = 0; c < GEMV_COLUMNS; c++)
#pragma unroll
                for (int q = 0; q < PAIR; q++)
                {
                    float v = warp_sum(acc[i][c][q]);
                    if (lane == 0) partial[buffer][warp][(i * GEMV_COLUMNS + c) * PAIR + q] = v;
                }
        }
        __syncthreads();
        if (t < p.m * GEMV_COLUMNS)
        {
            float sums[PAIR];
#pragma unroll
            for (int q = 0; q < PAIR; q++)
            {
                sums[q] = 0.0f;
#pragma unroll
                for (int w = 0; w < GEMV_THREADS / 32; w++) sums[q] += partial[buffer][w][t * PAIR + q];
            }
            epilogue(group, t / GEMV_COLUMNS, t % GEMV_COLUMNS, sums);
        }
    }
}

// y_s[i, j] (+)= x[i, :] · w_s[j, :] + bias_s[j] for the segment s that holds the column.
struct GemvStore
{
    const GemvParams& p;
    __device__ void operator()(int group, int i, int c, const float (&sums)[1]) const
    {
        int column = group * GEMV_COLUMNS + c;
        if (column >= p.columns) return;
        const GemvSegment& s = p.seg[gemv_segment(p, column)];
        int j = column - s.first;
        float v = sums[0] + (s.bias != nullptr ? s.bias[j] : 0.0f);
        float* out = s.y + (long)i * s.rows + j;
        *out = p.accumulate ? *out + v : v;
    }
};

// y[i, j] = silu(x[i, :] · gate[j, :]) · (x[i, :] · up[j, :]), the Llama MLP's gated activation, into segment 0's
// output (the gate's [m, intermediate]); segment 1 carries the up weight.
struct GemvSwiGlu
{
    const GemvParams& p;
    __device__ void operator()(int group, int i, int c, const float (&sums)[2]) const
    {
        int j = group * GEMV_COLUMNS + c;
        if (j >= p.columns) return;
        float g = sums[0], u = sums[1];
        p.seg[0].y[(long)i * p.seg[0].rows + j] = g / (1.0f + expf(-g)) * u;
    }
};

// Grid: at most ceil(columns / GEMV_COLUMNS) blocks (CudaBackend.GemvGrid: what stays resident), block: GEMV_THREADS.
// One row of x (a decode step of one sequence) and up to GEMV_ROWS: the single row's kernels keep one accumulator per
// column, which leaves the registers for more blocks per SM.
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_1(const GemvParams p) { gemv_blocks<1, 1>(p, GemvStore{p}); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_8(const GemvParams p) { gemv_blocks<1, GEMV_ROWS>(p, GemvStore{p}); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_swiglu_1(const GemvParams p) { gemv_blocks<2, 1>(p, GemvSwiGlu{p}); }
extern "C" __global__ void __launch_bounds__(GEMV_THREADS) gemv_swiglu_8(const GemvParams p) { gemv_blocks<2, GEMV_ROWS>(p, GemvSwiGlu{p}); }
