// The baselines' key selectors on the device (DESIGN §4, Kascade.Core.KeySelector): each writes a plan (int32 indices
// [rows, capacity] + counts [rows]) that selection.cu's sparse attention reads, from scores made here or by
// selection.cu's pooled_tile_scores and ranked by its select_topk. Every kernel takes the step's position from the
// device when it has one, so a recorded decode step replays at any position. Specialisation key: HEAD_DIM.
//
// Each is checked against the CPU reference (Kascade.Cpu.BaselineSelection) by `kascade test-backend`: sums run in the
// reference's order with no fused multiply-add, so scores, and so plans, match it except at exact ties.
//
// A batch of decode steps (IBatchedDecode) runs in the same launches, a sequence per grid z (or per block where the grid
// is one-dimensional): sequence b's keys are b · sequence_stride elements on, its queries and score rows b · heads rows
// on, its plan rows unit b's, and its state (page bounds, dimensions, age) layer b of the selector's state.
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "plan_common.cuh"
// page_scores and partial_scores: a block stages SCORE_ROWS pages' bounds or keys in shared memory with coalesced loads
// and scores them for every head of the KV head's group, warp w taking heads w, w + SCORE_WARPS, … and lane l row l.
// (One thread a page or key, each reading its own row two bytes at a time, and a block a query head: 0.12 and 0.49
// TB/s, 275 and 545 µs a step at 128k for 32 heads, quest and sparcas being slower than dense; session 11, H100.)
#define SCORE_ROWS 32
static_assert(HEAD_DIM % 8 == 0, "page_scores and partial_scores stage rows of HEAD_DIM bf16 in 16-byte loads");
#define SCORE_WARPS 4
// A staged row of 2 · HEAD_DIM (page bounds) or HEAD_DIM (a key) bf16 as 32-bit words, one padding word after it, so
// that the lanes of a warp, each reading the same word of its own row, hit distinct banks.
#define SCORE_STRIDE(words) ((words) + 1)

// Copies `rows` rows of `words` 32-bit words, row r at src + r · words (16-byte aligned), into dst[r · SCORE_STRIDE(words)].
__device__ __forceinline__ void stage_rows(unsigned* dst, const unsigned* src, int rows, int words)
{
    const int chunks = rows * (words / 4);
    for (int c = threadIdx.x; c < chunks; c += blockDim.x)
    {
        const int r = c / (words / 4), w = (c % (words / 4)) * 4;
        const uint4 v = *reinterpret_cast<const uint4*>(src + (long)r * words + w);
        unsigned* row = dst + r * SCORE_STRIDE(words) + w;
        row[0] = v.x;
        row[1] = v.y;
        row[2] = v.z;
        row[3] = v.w;
    }
}

// The bf16 of a staged word at dimension parity `odd` (the low half holds the even dimension), widened.
__device__ __forceinline__ float staged_bf16(unsigned word, int odd) { return __uint_as_float(odd ? word & 0xffff0000u : word << 16); }

// streamingllm (KeySelector.Window): row t of the plan lists query t's window — the first min(sinks, size) keys and the
// most recent rest, size = min(visible, max(min_window, ⌊percent/100 · visible⌋)) of its visible keys. Grid: rows; row
// t is query t of a chunk (token_step 1) or sequence t of a batch's decode steps at `start` (token_step 0).
extern "C" __global__ void window_plan(int* indices, int* counts, int capacity, int token_step, int start, const int* start_at,
                                       int sinks, double percent, int min_window)
{
    start = start_position(start_at, start);
    int t = blockIdx.x, visible = start + t * token_step + 1;
    int size = min(visible, max(min_window, (int)floor(percent / 100.0 * (double)visible)));
    int kept_sinks = min(sinks, size), recent = size - kept_sinks;
    int* out = indices + (long)t * capacity;
    for (int i = threadIdx.x; i < size; i += blockDim.x) out[i] = i < kept_sinks ? i : visible - recent + (i - kept_sinks);
    if (threadIdx.x == 0) counts[t] = size;
}

// quest's page bounds (KeySelector.PageTopK): bounds[g, page] = (per-dimension minimum, maximum) of the page's keys
// among the first start + tokens, bf16 [kv_heads, max_pages, 2, HEAD_DIM] for one layer — exact, since the keys are
// bf16. Pages from the one holding `start` on, so each call rewrites only the pages its chunk touched. Grid: (kv_heads,
// pages touched, sequences), HEAD_DIM threads; sequence b's bounds are b · bounds_stride elements on.
extern "C" __global__ void page_bounds(const bf16_t* k_cache, bf16_t* bounds, int capacity, int max_pages, int page_size,
                                       int tokens, int start, const int* start_at, long long sequence_stride, long long bounds_stride)
{
    start = start_position(start_at, start);
    int g = blockIdx.x, page = start / page_size + blockIdx.y, d = threadIdx.x, n = start + tokens;
    int first = page * page_size, last = min(n, first + page_size);
    if (first >= n || page >= max_pages) return;
    const bf16_t* keys = k_cache + blockIdx.z * sequence_stride + (long)g * capacity * HEAD_DIM;
    bounds += blockIdx.z * bounds_stride;
    float lo = bf16_to_float(keys[(long)first * HEAD_DIM + d]), hi = lo;
    for (int j = first + 1; j < last; j++)
    {
        float k = bf16_to_float(keys[(long)j * HEAD_DIM + d]);
        lo = fminf(lo, k);
        hi = fmaxf(hi, k);
    }
    bf16_t* out = bounds + ((long)g * max_pages + page) * 2 * HEAD_DIM;
    out[d] = float_to_bf16(lo);
    out[HEAD_DIM + d] = float_to_bf16(hi);
}

// quest's page scores: scores[h, page] = Σ_d max(q_d · min_d, q_d · max_d) over the pages of the visible keys (the
// query's upper bound on any q·k in the page; q unscaled), summed in dimension order. Grid: (page blocks of SCORE_ROWS,
// kv_heads, sequences: the blocks of rows in x, whose limit is 2^31 − 1, not y's 65,535), 32 · SCORE_WARPS threads; sequence b's bounds are b · bounds_stride elements on, its rows
// b · heads on.
extern "C" __global__ void __launch_bounds__(32 * SCORE_WARPS) page_scores(const float* q, const bf16_t* bounds, float* scores, long long stride, int heads,
                                                                         int kv_heads, int max_pages, int page_size, int start, const int* start_at,
                                                                         long long bounds_stride)
{
    __shared__ unsigned staged[SCORE_ROWS * SCORE_STRIDE(HEAD_DIM)];
    start = start_position(start_at, start);
    const int g = blockIdx.y, group = heads / kv_heads, first = blockIdx.x * SCORE_ROWS, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int pages = (start + page_size) / page_size, page = first + lane;
    if (first >= pages) return;
    q += (long)blockIdx.z * heads * HEAD_DIM;
    scores += (long)blockIdx.z * heads * stride;
    // A page's bounds are HEAD_DIM words: the minima's pairs of dimensions, then the maxima's.
    stage_rows(staged, reinterpret_cast<const unsigned*>(bounds + blockIdx.z * bounds_stride + ((long)g * max_pages + first) * 2 * HEAD_DIM),
               min(SCORE_ROWS, pages - first), HEAD_DIM);
    __syncthreads();
    const unsigned* row = staged + lane * SCORE_STRIDE(HEAD_DIM);
    for (int h = g * group + warp; h < (g + 1) * group; h += SCORE_WARPS)
    {
        const float* qh = q + (long)h * HEAD_DIM;
        float s = 0.0f;
        for (int d = 0; d < HEAD_DIM; d++)
        {
            const float qd = qh[d];
            s += fmaxf(qd * staged_bf16(row[d >> 1], d & 1), qd * staged_bf16(row[HEAD_DIM / 2 + (d >> 1)], d & 1));
        }
        if (page < pages) scores[(long)h * stride + page] = s;
    }
}

// quest: row h of the plan gets the keys of the pages select_topk chose for head h (page_indices [heads,
// page_capacity]). Pages are laid out page_size keys apart in the order chosen, except the last page of the visible
// keys (the one that may be short), which goes at the end, so the row's keys are contiguous. Grid: heads (a batch:
// sequences · heads, every row at the same position).
extern "C" __global__ void expand_pages(const int* page_indices, const int* page_counts, int page_capacity, int* indices, int* counts,
                                        int capacity, int page_size, int start, const int* start_at)
{
    __shared__ int last_slot;
    start = start_position(start_at, start);
    int h = blockIdx.x, n = start + 1, last_page = (n - 1) / page_size, last_length = n - last_page * page_size;
    const int* chosen = page_indices + (long)h * page_capacity;
    int k = page_counts[h];
    if (threadIdx.x == 0) last_slot = -1;
    __syncthreads();
    for (int i = threadIdx.x; i < k; i += blockDim.x)
        if (chosen[i] == last_page) last_slot = i;
    __syncthreads();
    int* out = indices + (long)h * capacity;
    for (int e = threadIdx.x; e < k * page_size; e += blockDim.x)
    {
        int i = e / page_size, j = e % page_size;
        int slot = last_slot < 0 || i < last_slot ? i : i == last_slot ? k - 1 : i - 1;
        if (i != last_slot || j < last_length) out[slot * page_size + j] = chosen[i] * page_size + j;
    }
    if (threadIdx.x == 0) counts[h] = last_slot < 0 ? k * page_size : (k - 1) * page_size + last_length;
}

// lessismore (KeySelector.UnionTopK): row 0 of the plan is the union, in ascending position, of every head's Top-k
// (head_indices [heads, head_capacity]), the first `sinks` keys and the most recent ⌊recent_fraction · budget⌋; every
// visible key when the budget covers them. `flags` (n bytes) marks the union. One block of UNION_THREADS per sequence of
// a batch (grid: sequences): sequence b's head rows are b · heads on, its flags b · flags_stride bytes on, its plan row b.
#define UNION_THREADS 1024
extern "C" __global__ void __launch_bounds__(UNION_THREADS) union_sets(const int* head_indices, const int* head_counts, int head_capacity, int heads,
                                                                     unsigned char* flags, int* indices, int* counts, int sinks, double percent,
                                                                     double recent_fraction, int start, const int* start_at, long long flags_stride,
                                                                     int capacity)
{
    __shared__ int warp_counts[32];
    __shared__ int total;
    start = start_position(start_at, start);
    head_indices += (long)blockIdx.x * heads * head_capacity;
    head_counts += blockIdx.x * heads;
    flags += blockIdx.x * flags_stride;
    indices += (long)blockIdx.x * capacity;
    counts += blockIdx.x;
    int n = start + 1;
    long long budget = budget_for(n, percent);
    if (budget >= n)
    {
        for (int i = threadIdx.x; i < n; i += blockDim.x) indices[i] = i;
        if (threadIdx.x == 0) counts[0] = n;
        return;
    }
    int recent = (int)(recent_fraction * (double)budget);
    for (int i = threadIdx.x; i < n; i += blockDim.x) flags[i] = i < sinks || i >= n - recent;
    __syncthreads();
    for (int h = 0; h < heads; h++)
        for (int i = threadIdx.x; i < head_counts[h]; i += blockDim.x) flags[head_indices[(long)h * head_capacity + i]] = 1;
    __syncthreads();
    int written = 0;
    for (int base = 0; base < n; base += blockDim.x)
    {
        int i = base + threadIdx.x;
        bool kept = i < n && flags[i];
        int before = block_exclusive_count(kept, warp_counts, &total);
        if (kept) indices[written + before] = i;
        written += total;
    }
    if (threadIdx.x == 0) counts[0] = written;
}

// sparcas (KeySelector.PartialScoreTopK): every refresh_steps-th call of a layer (its age, on the device), head h's
// dims become the `count` dimensions of largest |q| (ties to the lower dimension), ascending. dims int32 [heads, count].
// Grid: (heads, sequences), HEAD_DIM threads; sequence b's dims are b · heads · count on, its age b on. The age moves on
// in partial_scores, after every head has read it.
extern "C" __global__ void sparcas_dimensions(const float* q, int* dims, const int* age, int count, int refresh_steps)
{
    __shared__ float magnitude[HEAD_DIM];
    __shared__ int warp_counts[32];
    __shared__ int total;
    int h = blockIdx.x, d = threadIdx.x, heads = gridDim.x;
    if (age[blockIdx.y] % refresh_steps != 0) return;
    q += (long)blockIdx.y * heads * HEAD_DIM;
    dims += (long)blockIdx.y * heads * count;
    magnitude[d] = fabsf(q[(long)h * HEAD_DIM + d]);
    __syncthreads();
    int rank = 0;
    for (int e = 0; e < HEAD_DIM; e++) rank += magnitude[e] > magnitude[d] || (magnitude[e] == magnitude[d] && e < d);
    bool kept = rank < count;
    int before = block_exclusive_count(kept, warp_counts, &total);
    if (kept) dims[(long)h * count + before] = d;
}

// sparcas's partial scores: scores[h, j] = Σ over head h's dims (ascending) of q_d · K[j, d], unscaled, for the visible
// keys, multiplied and added without fusing as the reference does. Block (0, 0) moves the layer's age on. Grid:
// (key blocks of SCORE_ROWS, kv_heads, sequences: as page_scores), 32 · SCORE_WARPS threads; sequence b's keys are b · sequence_stride
// elements on, its dims, age and rows as in sparcas_dimensions.
extern "C" __global__ void __launch_bounds__(32 * SCORE_WARPS) partial_scores(const float* q, const bf16_t* k_cache, const int* dims, int* age, float* scores,
                                                                            long long stride, int heads, int kv_heads, int capacity, int count, int start,
                                                                            const int* start_at, long long sequence_stride)
{
    __shared__ unsigned staged[SCORE_ROWS * SCORE_STRIDE(HEAD_DIM / 2)];
    start = start_position(start_at, start);
    const int g = blockIdx.y, group = heads / kv_heads, first = blockIdx.x * SCORE_ROWS, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) age[blockIdx.z] += 1;
    if (first > start) return;
    q += (long)blockIdx.z * heads * HEAD_DIM;
    dims += (long)blockIdx.z * heads * count;
    scores += (long)blockIdx.z * heads * stride;
    stage_rows(staged, reinterpret_cast<const unsigned*>(k_cache + blockIdx.z * sequence_stride + ((long)g * capacity + first) * HEAD_DIM),
               min(SCORE_ROWS, start + 1 - first), HEAD_DIM / 2);
    __syncthreads();
    const unsigned* row = staged + lane * SCORE_STRIDE(HEAD_DIM / 2);
    const int j = first + lane;
    for (int h = g * group + warp; h < (g + 1) * group; h += SCORE_WARPS)
    {
        // The head's dims and their query values, lane l holding entries l, l + 32, …, handed round by shuffles.
        int held_dims[(HEAD_DIM + 31) / 32];
        float held_q[(HEAD_DIM + 31) / 32];
#pragma unroll
        for (int e = 0; e < (HEAD_DIM + 31) / 32; e++)
        {
            const int i = e * 32 + lane;
            held_dims[e] = i < count ? dims[(long)h * count + i] : 0;
            held_q[e] = i < count ? q[(long)h * HEAD_DIM + held_dims[e]] : 0.0f;
        }
        float s = 0.0f;
#pragma unroll
        for (int e = 0; e < (HEAD_DIM + 31) / 32; e++)
        {
            for (int l = 0; l < 32 && e * 32 + l < count; l++)
            {
                const int d = __shfl_sync(0xffffffffu, held_dims[e], l);
                const float qd = __shfl_sync(0xffffffffu, held_q[e], l);
                s = __fadd_rn(s, __fmul_rn(qd, staged_bf16(row[d >> 1], d & 1)));
            }
        }
        if (j <= start) scores[(long)h * stride + j] = s;
    }
}
