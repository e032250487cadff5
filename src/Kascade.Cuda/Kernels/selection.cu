// Kascade's select/attend ops on the device (DESIGN §3, docs/attention-plans.md): the rows' log-sum-exp, pooled tile
// scores and per-row probabilities, a radix Top-k that writes a plan (int32 indices [rows, capacity] + counts [rows]),
// and sparse attention over a plan. Every kernel takes the chunk's start position from the step on the device when it
// has one and computes tiles, candidate ends and budgets from it (the TopKBudget formula), so a recorded decode step
// replays at any position. Specialisation key: HEAD_DIM (a multiple of 32).
//
// These are the exact kernels (CUDA cores, fp32 arithmetic on bf16 keys and values): each is checked against the CPU
// reference by `kascade test-backend`. The fast paths (CudaBackend.FastSelection) replace them where they apply:
// decode_selection.cu (a decode step's scores and Top-k), anchor_prefill.cu and sparse_prefill.cu (tensor-core prefill
// scores and sparse attention) and attention_decode.cu's sparse_decode_mma (tensor-core decode sparse attention).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "warp_attention.cuh"
#include "plan_common.cuh"
#define KEYS_PER_BLOCK 128  // pooled_tile_scores and row_probabilities: one key per thread
#define SELECT_THREADS 1024 // select_topk: one block per row

// scale · q · K[j] for one key row, q in shared memory (fp32 [HEAD_DIM]), K bf16, read 8 dimensions (16 bytes) at a time.
__device__ __forceinline__ float scaled_dot(const float* q_shared, const bf16_t* key, float scale)
{
    float s = 0.0f;
#pragma unroll 4
    for (int d = 0; d < HEAD_DIM; d += 8)
    {
        float k8[8];
        load_bf16x8(key + d, k8);
#pragma unroll
        for (int e = 0; e < 8; e++) s += q_shared[d + e] * k8[e];
    }
    return s * scale;
}

// An element of the query the scores are computed from: itself, or its bf16 rounding (round_query, ScorePrecision.Bf16).
__device__ __forceinline__ float scoring_query(float x, int round_query) { return round_query ? bf16_to_float(float_to_bf16(x)) : x; }

// The full-row normaliser the anchors' post-softmax scores divide by (exact, every visible key), in two kernels so that
// a decode step's few rows still fill the GPU: row_log_sum_exp writes, per row (t, h) and split of the visible keys
// [0, start + t], the running (max, sum) of exp(scale · q[t, h] · K[j]); combine_log_sum_exp merges the splits into
// lse[row] = ln Σ. Splits cover `keys_per_split` keys each (fixed at launch from the capacity, so a recorded decode
// step replays at later positions; splits past the row's keys write (−∞, 0)). round_query 1: the query's bf16 rounding
// scores (ScorePrecision.Bf16) instead of the query. q [tokens, heads, HEAD_DIM] fp32,
// k_cache one layer bf16 [kv_heads, capacity, HEAD_DIM], partial fp32 [rows, splits, 2]. Grid: (rows, splits), 128
// threads, a key per thread.
extern "C" __global__ void row_log_sum_exp(const float* q, const bf16_t* k_cache, float* partial, int heads, int kv_heads,
                                           int capacity, int start, const int* start_at, float scale, int keys_per_split, int round_query)
{
    __shared__ float q_shared[HEAD_DIM];
    __shared__ float scratch[32];
    start = start_position(start_at, start);
    int row = blockIdx.x, t = row / heads, h = row % heads, g = h / (heads / kv_heads);
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) q_shared[d] = scoring_query(q[(long)row * HEAD_DIM + d], round_query);
    __syncthreads();
    const bf16_t* keys = k_cache + (long)g * capacity * HEAD_DIM;
    int begin = blockIdx.y * keys_per_split, end = min(start + t + 1, begin + keys_per_split);
    float m = __int_as_float(0xff800000), l = 0.0f;
    for (int j = begin + threadIdx.x; j < end; j += blockDim.x)
    {
        float s = scaled_dot(q_shared, keys + (long)j * HEAD_DIM, scale);
        float m_new = fmaxf(m, s);
        l = l * expf(m - m_new) + expf(s - m_new);
        m = m_new;
    }
    float m_all = block_max(m, scratch);
    l = m == __int_as_float(0xff800000) ? 0.0f : l * expf(m - m_all);
    l = block_sum(l, scratch);
    if (threadIdx.x == 0)
    {
        partial[((long)row * gridDim.y + blockIdx.y) * 2] = m_all;
        partial[((long)row * gridDim.y + blockIdx.y) * 2 + 1] = l;
    }
}

// lse[row] = ln Σ over the splits of e^(m_s) · l_s (merged_log_sum_exp). A warp per row: a decode step's rows have
// hundreds of splits (decode_scores.cu writes one per warp), which one thread read one after another.
// Block: a multiple of 32 threads. Launched dependent: it waits for the scores' kernel before reading, then lets the
// pooling launch.
extern "C" __global__ void combine_log_sum_exp(const float* partial, float* lse, int rows, int splits)
{
    wait_for_previous_kernel();
    allow_dependent_launch();
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    if (row >= rows) return;                                     // the whole warp
    const float value = merged_log_sum_exp(partial + (long)row * splits * 2, splits);
    if ((threadIdx.x & 31) == 0) lse[row] = value;
}

// The arguments of pooled_tile_scores.
struct PoolParams
{
    const float* q;         // fp32 [tokens, heads, HEAD_DIM]
    const bf16_t* k_cache;  // bf16 [kv_heads, capacity, HEAD_DIM], one layer
    const float* lse;       // fp32 [tokens, heads] (combine_log_sum_exp), or null: raw scaled scores (pre-softmax pooling)
    float* scores;          // fp32 [units · pools, stride]
    const int* start_at;    // the start position on the device (a step's), or null: start
    long long stride;       // elements per scores row (≥ start + tokens)
    int tokens, heads, kv_heads, capacity, start;
    int pools;              // pools of heads / pools consecutive heads: KvHeads (a GQA group each), heads (one each) or 1
    int max_pool;           // 1: the largest of the pool's values (omnikv) instead of their sum
    int round_query;        // 1: score with the query's bf16 rounding (ScorePrecision.Bf16)
    float scale;
};

// IBackend.PooledTileScores: scores[unit · pools + pool, j] = Σ over the tile's queries i and the pool's heads of
// exp(scale · q_i · K[j] − lse_i) (or the raw scaled score), 0 where j lies after i, for j < start + tokens.
// Grid: (units · pools, key blocks of KEYS_PER_BLOCK); a thread per key, the tile's queries of one head at a time in
// shared memory. Blocks past the visible keys return at once (a recorded decode step's grid covers the capacity).
extern "C" __global__ void pooled_tile_scores(PoolParams p)
{
    __shared__ float q_shared[TILE_SIZE][HEAD_DIM];
    __shared__ float lse_shared[TILE_SIZE];
    int start = start_position(p.start_at, p.start);
    int visible = start + p.tokens;
    int key_base = blockIdx.y * KEYS_PER_BLOCK;
    if (key_base >= visible) return;
    int unit = blockIdx.x / p.pools, pool = blockIdx.x % p.pools;
    Tile tile = tile_of(start, p.tokens, unit);
    int queries = tile.query_end - tile.query_start;
    int group = p.heads / p.kv_heads;
    int pool_heads = p.heads / p.pools, first_head = pool * pool_heads;
    int j = key_base + threadIdx.x;
    float total = 0.0f;
    for (int h = first_head; h < first_head + pool_heads; h++)
    {
        __syncthreads();
        for (int e = threadIdx.x; e < queries * HEAD_DIM; e += blockDim.x)
        {
            int i = e / HEAD_DIM;
            q_shared[i][e % HEAD_DIM] = scoring_query(p.q[((long)(tile.query_start - start + i) * p.heads + h) * HEAD_DIM + e % HEAD_DIM], p.round_query);
        }
        if (threadIdx.x < queries) lse_shared[threadIdx.x] = p.lse != nullptr ? p.lse[(long)(tile.query_start - start + threadIdx.x) * p.heads + h] : 0.0f;
        __syncthreads();
        if (j >= visible) continue;
        const bf16_t* key = p.k_cache + ((long)(h / group) * p.capacity + j) * HEAD_DIM;
        float dots[TILE_SIZE];
        key_dots(key, q_shared, queries, dots);
#pragma unroll
        for (int i = 0; i < TILE_SIZE; i++)
        {
            if (i < queries && j <= tile.query_start + i)
            {
                float s = dots[i] * p.scale;
                float v = p.lse != nullptr ? expf(s - lse_shared[i]) : s;
                total = p.max_pool ? fmaxf(total, v) : total + v;
            }
        }
    }
    if (j < visible) p.scores[(long)blockIdx.x * p.stride + j] = total;
}

// IBackend.AttentionProbabilities (and the oracle's rows): probabilities[row, j] = exp(scale · q · K[j] − lse[row]) for
// the keys row (t, h) sees, j ≤ start + t, and 0 for the rest of the first `cols` columns. Grid: (tokens · heads,
// key blocks of KEYS_PER_BLOCK).
extern "C" __global__ void row_probabilities(const float* q, const bf16_t* k_cache, const float* lse, float* probabilities, long long stride,
                                             int cols, int tokens, int heads, int kv_heads, int capacity, int start, const int* start_at, float scale)
{
    __shared__ float q_shared[HEAD_DIM];
    start = start_position(start_at, start);
    int row = blockIdx.x, t = row / heads, h = row % heads;
    int j = blockIdx.y * KEYS_PER_BLOCK + threadIdx.x;
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) q_shared[d] = q[(long)row * HEAD_DIM + d];
    __syncthreads();
    if (j >= cols) return;
    float value = 0.0f;
    if (j <= start + t)
    {
        const bf16_t* key = k_cache + ((long)(h / (heads / kv_heads)) * capacity + j) * HEAD_DIM;
        value = expf(scaled_dot(q_shared, key, scale) - lse[row]);
    }
    probabilities[(long)row * stride + j] = value;
}


// Top-k of each row's candidates by radix selection (four 8-bit passes over the order keys find the k-th largest
// score exactly, as FlashInfer's and vLLM's samplers do), then one ordered pass writes every position above it and, in
// ascending position, as many equal to it as fill k: the set Ranking.TopK chooses (ties to the lower position).
// Positions above the threshold come first, in ascending position. One block of SELECT_THREADS per row, two resident
// on a multiprocessor (at 34 registers only one fitted, and 512 rows × 128k took 1.17 ms instead of 0.87 on the H100).
extern "C" __global__ void __launch_bounds__(SELECT_THREADS, 2) select_topk(SelectParams p)
{
    __shared__ int histogram[256];
    __shared__ int warp_counts[32];
    __shared__ int shared_bin, shared_remaining, shared_total;
    int row = blockIdx.x;
    int n, k;
    const float* scores;
    int* out;
    if (!begin_topk_row(p, row, n, k, scores, out)) return;
    unsigned prefix = 0, prefix_mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        radix_histogram(scores, 0, n, prefix, prefix_mask, shift, histogram);
        __syncthreads();
        if (threadIdx.x < 32)
        {
            int chosen, left;
            radix_find_bin([&](int b) { return histogram[b]; }, remaining, chosen, left);
            if (threadIdx.x == 0)
            {
                shared_bin = chosen;
                shared_remaining = left;
            }
        }
        __syncthreads();
        prefix |= (unsigned)shared_bin << shift;
        prefix_mask |= 0xffu << shift;
        remaining = shared_remaining;
        __syncthreads();
    }
    // prefix is the k-th largest key; `remaining` of the keys equal to it complete the set.
    write_top_keys(scores, 0, n, prefix, remaining, k - remaining, 0, 0, out, warp_counts, &shared_total);
}

// IBackend.ExtendPlan: row r of a decode plan gets the step's own position (a kept selection then still covers every key
// appended since it was made); a full row is left as it is (the host sizes the plan so that none fills). A thread per row.
extern "C" __global__ void extend_plan(int* indices, int* counts, int capacity, int rows, int start, const int* start_at)
{
    int row = blockIdx.x * blockDim.x + threadIdx.x;
    if (row >= rows) return;
    start = start_position(start_at, start);
    int count = counts[row];
    if (count >= capacity) return;
    indices[(long)row * capacity + count] = start;
    counts[row] = count + 1;
}

// A query's keys: the plan row's positions, then its diagonal keys [diagonal_start, diagonal_start + diagonal).
struct PlanKeys
{
    const int* listed;
    int count, diagonal_start;
    __device__ int operator()(int i) const { return i < count ? listed[i] : diagonal_start + (i - count); }
};

// IBackend.SparseAttention (and the oracle's attend): warp (token t, query head h) attends over plan row
// unit(t) · rows_per_unit + head_map[h], plus its tile's diagonal keys up to itself when tile_units. Block: 128 threads.
extern "C" __global__ void sparse_attention(SparseParams p)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= p.tokens * p.heads) return;
    int start = start_position(p.start_at, p.start);
    int t = warp / p.heads, h = warp % p.heads, g = h / (p.heads / p.kv_heads);
    int unit = t, diagonal_start = 0, diagonal = 0;
    if (p.tile_units)
    {
        unit = p.tokens == 1 ? 0 : (start + t) / TILE_SIZE - start / TILE_SIZE;
        Tile tile = tile_of(start, p.tokens, unit);
        diagonal_start = tile.diagonal_start;
        diagonal = max(0, start + t - tile.diagonal_start + 1);
    }
    int row = unit * p.rows_per_unit + p.head_map[h];
    int count = p.counts[row];
    long head_offset = (long)g * p.capacity * HEAD_DIM;
    warp_attention(p.q + (long)warp * HEAD_DIM, p.k_cache + head_offset, p.v_cache + head_offset, p.scale, count + diagonal,
                   PlanKeys{p.indices + (long)row * p.plan_capacity, count, diagonal_start}, p.out + (long)warp * HEAD_DIM, lane);
}

// A decode step's sparse attention on CUDA cores, split over the plan row's keys (flash-decoding; the keys are few,
// the query rows fewer, so the work is spread by keys): block (split, set) takes a set of query heads that read one
// plan row — a KV head's GROUP heads under a per-KV-head map (Kascade, the shared baselines' sets), one head otherwise
// — and walks its share of the row DECODE_KEYS keys at a time: a thread per key gathers the K row once for the whole
// set and scores it, a warp per head updates the running max and sum, and thread t accumulates 8 dimensions of V (one
// 16-byte load) over every KEY_LANES-th key, the key lanes added at the end (2.2× faster than a 2-byte load per
// dimension and key, bench/results/kascade-h100.md). Writes (max, sum, unnormalised output) per (head, split) for
// attention_combine.cu. Splits share the row by the plan's capacity (fixed, so a recorded step replays at later
// positions); an empty split writes sum 0. attention_decode.cu's sparse_decode_mma (tensor cores) serves the
// per-KV-head maps when the fast kernels are on; this is the exact kernel and the one for per-query-head maps.
// Grid: (splits, kv_heads when group_rows, else heads, sequences of a batch: sequence b's K/V b · sequence_stride
// elements on, its query and partial rows b · heads on, its plan rows unit b's). Block: DECODE_THREADS.
#define DECODE_KEYS 128
#define DECODE_THREADS 128
#define MAX_SET 8
#define CHUNKS (HEAD_DIM / 8)
#define KEY_LANES (DECODE_THREADS / CHUNKS)
extern "C" __global__ void __launch_bounds__(DECODE_THREADS) sparse_decode(SparseParams p, float* partial_out, float* partial_ml)
{
    __shared__ float q_shared[MAX_SET][HEAD_DIM];
    __shared__ float weights[MAX_SET][DECODE_KEYS];
    __shared__ int positions[DECODE_KEYS];
    __shared__ float running_max[MAX_SET], running_sum[MAX_SET], correction[MAX_SET];
    __shared__ float lanes[KEY_LANES][HEAD_DIM];
    const int splits = gridDim.x, split = blockIdx.x;
    const int group = p.heads / p.kv_heads, set_heads = p.group_rows ? group : 1;
    const int sequence = blockIdx.z, first_head = blockIdx.y * set_heads, g = first_head / group;
    const long first_row = (long)sequence * p.heads + first_head;   // the set's first query row (and partial row)
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int row = sequence * p.rows_per_unit + p.head_map[first_head];
    const int count = p.counts[row];
    const int* listed = p.indices + (long)row * p.plan_capacity;
    const int per_split = (p.plan_capacity + splits - 1) / splits;
    const int begin = split * per_split, end = min(count, begin + per_split);
    const long head_offset = sequence * p.sequence_stride + (long)g * p.capacity * HEAD_DIM;
    const bf16_t* keys = p.k_cache + head_offset;
    const bf16_t* values = p.v_cache + head_offset;
    for (int e = threadIdx.x; e < set_heads * HEAD_DIM; e += DECODE_THREADS)
        q_shared[e / HEAD_DIM][e % HEAD_DIM] = p.q[first_row * HEAD_DIM + e] * p.scale;
    if (threadIdx.x < MAX_SET)
    {
        running_max[threadIdx.x] = __int_as_float(0xff800000);
        running_sum[threadIdx.x] = 0.0f;
    }
    // Thread t accumulates dimensions [8 · chunk, +8) of every head of the set over keys key_lane, + KEY_LANES, ...
    const int chunk = threadIdx.x % CHUNKS, key_lane = threadIdx.x / CHUNKS;
    const bool active = key_lane < KEY_LANES;
    float acc[MAX_SET][8];
#pragma unroll
    for (int i = 0; i < MAX_SET; i++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[i][e] = 0.0f;
    __syncthreads();
    for (int base = begin; base < end; base += DECODE_KEYS)
    {
        const int n = min(DECODE_KEYS, end - base);
        if (threadIdx.x < n)
        {
            int pos = listed[base + threadIdx.x];
            positions[threadIdx.x] = pos;
            float dots[MAX_SET];
            key_dots(keys + (long)pos * HEAD_DIM, q_shared, set_heads, dots);
#pragma unroll
            for (int hh = 0; hh < MAX_SET; hh++) if (hh < set_heads) weights[hh][threadIdx.x] = dots[hh];
        }
        __syncthreads();
        for (int hh = warp; hh < set_heads; hh += DECODE_THREADS / 32)
        {
            float m = __int_as_float(0xff800000);
            for (int i = lane; i < n; i += 32) m = fmaxf(m, weights[hh][i]);
            m = warp_reduce(m, MaxOp{});
            float m_new = fmaxf(running_max[hh], m), sum = 0.0f;
            for (int i = lane; i < n; i += 32)
            {
                float w = expf(weights[hh][i] - m_new);
                weights[hh][i] = w;
                sum += w;
            }
            sum = warp_sum(sum);
            if (lane == 0)
            {
                float c = expf(running_max[hh] - m_new);
                correction[hh] = c;
                running_sum[hh] = running_sum[hh] * c + sum;
                running_max[hh] = m_new;
            }
        }
        __syncthreads();
        if (active)
        {
#pragma unroll
            for (int hh = 0; hh < MAX_SET; hh++)
                if (hh < set_heads)
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[hh][e] *= correction[hh];
#pragma unroll 4
            for (int i = key_lane; i < n; i += KEY_LANES)
            {
                float v8[8];
                load_bf16x8(values + (long)positions[i] * HEAD_DIM + chunk * 8, v8);
#pragma unroll
                for (int hh = 0; hh < MAX_SET; hh++)
                {
                    if (hh < set_heads)
                    {
                        float w = weights[hh][i];
#pragma unroll
                        for (int e = 0; e < 8; e++) acc[hh][e] += w * v8[e];
                    }
                }
            }
        }
        __syncthreads();
    }
    // The key lanes' sums, added in lane order, one head of the set at a time.
    for (int hh = 0; hh < set_heads; hh++)
    {
        if (active)
        {
#pragma unroll
            for (int hw = 0; hw < MAX_SET; hw++)
                if (hw == hh)
#pragma unroll
                    for (int e = 0; e < 8; e++) lanes[key_lane][chunk * 8 + e] = acc[hw][e];
        }
        __syncthreads();
        for (int dd = threadIdx.x; dd < HEAD_DIM; dd += DECODE_THREADS)
        {
            float total = 0.0f;
            for (int k = 0; k < KEY_LANES; k++) total += lanes[k][dd];
            partial_out[((first_row + hh) * splits + split) * HEAD_DIM + dd] = total;
        }
        __syncthreads();
    }
    if (threadIdx.x < set_heads)
    {
        long at = ((first_row + threadIdx.x) * splits + split) * 2;
        partial_ml[at] = running_max[threadIdx.x];
        partial_ml[at + 1] = running_sum[threadIdx.x];
    }
}
