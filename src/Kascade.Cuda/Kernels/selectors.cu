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
#define PAGES_PER_BLOCK 128 // page_scores and partial_scores: one page or key per thread

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
// query's upper bound on any q·k in the page; q unscaled), summed in dimension order. Grid: (heads, page blocks,
// sequences); sequence b's bounds are b · bounds_stride elements on, its rows b · heads on.
extern "C" __global__ void page_scores(const float* q, const bf16_t* bounds, float* scores, long long stride, int heads, int kv_heads,
                                       int max_pages, int page_size, int start, const int* start_at, long long bounds_stride)
{
    __shared__ float q_shared[HEAD_DIM];
    start = start_position(start_at, start);
    int h = blockIdx.x, g = h / (heads / kv_heads), page = blockIdx.y * PAGES_PER_BLOCK + threadIdx.x;
    q += (long)blockIdx.z * heads * HEAD_DIM;
    bounds += blockIdx.z * bounds_stride;
    scores += (long)blockIdx.z * heads * stride;
    int pages = (start + page_size) / page_size;
    for (int d = threadIdx.x; d < HEAD_DIM; d += blockDim.x) q_shared[d] = q[(long)h * HEAD_DIM + d];
    __syncthreads();
    if (page >= pages) return;
    const bf16_t* bound = bounds + ((long)g * max_pages + page) * 2 * HEAD_DIM;
    float s = 0.0f;
    for (int d = 0; d < HEAD_DIM; d++)
        s += fmaxf(q_shared[d] * bf16_to_float(bound[d]), q_shared[d] * bf16_to_float(bound[HEAD_DIM + d]));
    scores[(long)h * stride + page] = s;
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
// (heads, key blocks, sequences); sequence b's keys are b · sequence_stride elements on, its dims, age and rows as in
// sparcas_dimensions.
extern "C" __global__ void partial_scores(const float* q, const bf16_t* k_cache, const int* dims, int* age, float* scores, long long stride,
                                          int heads, int kv_heads, int capacity, int count, int start, const int* start_at,
                                          long long sequence_stride)
{
    __shared__ float q_shared[HEAD_DIM];
    __shared__ int dims_shared[HEAD_DIM];
    start = start_position(start_at, start);
    int h = blockIdx.x, g = h / (heads / kv_heads), j = blockIdx.y * PAGES_PER_BLOCK + threadIdx.x;
    q += (long)blockIdx.z * heads * HEAD_DIM;
    k_cache += blockIdx.z * sequence_stride;
    dims += (long)blockIdx.z * heads * count;
    age += blockIdx.z;
    scores += (long)blockIdx.z * heads * stride;
    for (int i = threadIdx.x; i < count; i += blockDim.x)
    {
        dims_shared[i] = dims[(long)h * count + i];
        q_shared[i] = q[(long)h * HEAD_DIM + dims_shared[i]];
    }
    __syncthreads();
    if (blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *age += 1;
    if (j > start) return;
    const bf16_t* key = k_cache + ((long)g * capacity + j) * HEAD_DIM;
    float s = 0.0f;
    for (int i = 0; i < count; i++) s = __fadd_rn(s, __fmul_rn(q_shared[i], bf16_to_float(key[dims_shared[i]])));
    scores[(long)h * stride + j] = s;
}
