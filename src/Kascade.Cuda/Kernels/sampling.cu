// Next-token sampling on the GPU, the rule of Kascade.Core.Sampling (its comments define it): greedy argmax, or
// top-k and top-p thresholds followed by a Gumbel-max draw. One block per row of logits; the row (a vocabulary of
// fp32) is read a few times and stays in L2. The thresholds come from a radix select over the logits' order keys,
// 8 bits per pass, counting tokens (top-k) or summing their fixed-point weights (top-p) per digit: no sort, and the
// integer sums make the choice independent of the order in which threads add.
#include "common.cuh"

#define SAMPLE_THREADS 1024
#define NON_FINITE_TOKEN -1   // Sampling.NonFinite
#define RADIX_BINS 256

// Sampling.OrderKey: an unsigned key in the order of the floats.
__device__ __forceinline__ unsigned order_key(float v)
{
    unsigned bits = __float_as_uint(v);
    return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

__device__ __forceinline__ unsigned long long mix64(unsigned long long z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// Sampling.Uniform: u in (0, 1) for a token of a draw, from the top 23 bits of splitmix64.
__device__ __forceinline__ float uniform(int seed, long long draw, int token)
{
    unsigned long long key = mix64((unsigned long long)(unsigned)seed * 0x9E3779B97F4A7C15ull + (unsigned long long)draw * 0xD1B54A32D192ED03ull);
    unsigned long long z = mix64(key + (unsigned long long)token * 0x9E3779B97F4A7C15ull);
    return ((float)(z >> 41) + 0.5f) * (1.0f / 8388608.0f);
}

// Sampling.Weight: floor(e^((logit − max) / T) · 2^40).
__device__ __forceinline__ unsigned long long weight(float logit, float max, float temperature)
{
    return (unsigned long long)(expf((logit - max) / temperature) * 1099511627776.0f);
}

// f(token, logit) over this thread's share of the row. With 16-byte loads where the row allows them (vocab a multiple
// of 4), SAMPLE_UNROLL of them issued before any is used: a single block is bound by the latency of L2, not its bandwidth.
#define SAMPLE_UNROLL 4
template <typename F>
__device__ __forceinline__ void for_each_logit(const float* row, int vocab, F f)
{
    if ((vocab & 3) == 0)
    {
        const float4* row4 = reinterpret_cast<const float4*>(row);
        const int n4 = vocab / 4;
        for (int base = threadIdx.x; base < n4; base += SAMPLE_UNROLL * blockDim.x)
        {
            float4 v[SAMPLE_UNROLL];
#pragma unroll
            for (int u = 0; u < SAMPLE_UNROLL; u++)
            {
                int i = base + u * blockDim.x;
                if (i < n4) v[u] = row4[i];
            }
#pragma unroll
            for (int u = 0; u < SAMPLE_UNROLL; u++)
            {
                int i = base + u * blockDim.x;
                if (i >= n4) break;
                f(4 * i, v[u].x);
                f(4 * i + 1, v[u].y);
                f(4 * i + 2, v[u].z);
                f(4 * i + 3, v[u].w);
            }
        }
    }
    else
    {
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) f(i, row[i]);
    }
}

// The sum of `amount` (< 2^41) over the lanes in `peers`, for each of them: three 20-bit parts summed by redux.sync
// (32 lanes × 2^20 fits 32 bits), so lanes that share a histogram bin add to it once.
__device__ __forceinline__ unsigned long long group_sum(unsigned peers, unsigned long long amount)
{
    unsigned low = __reduce_add_sync(peers, (unsigned)(amount & 0xfffffu));
    unsigned middle = __reduce_add_sync(peers, (unsigned)((amount >> 20) & 0xfffffu));
    unsigned high = __reduce_add_sync(peers, (unsigned)(amount >> 40));
    return low + ((unsigned long long)middle << 20) + ((unsigned long long)high << 40);
}

// A candidate of an argmax: larger score wins, the lower token on ties (torch.argmax, Sampling's Gumbel draw).
struct Best
{
    float score;
    int token;
};

__device__ __forceinline__ Best better(Best a, Best b) { return b.score > a.score || (b.score == a.score && b.token < a.token) ? b : a; }

__device__ __forceinline__ Best warp_best(Best b)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        b = better(b, Best{__shfl_xor_sync(0xffffffffu, b.score, offset), __shfl_xor_sync(0xffffffffu, b.token, offset)});
    return b;
}

// The block's best candidate, for every thread; `scratch` holds one per warp.
__device__ __forceinline__ Best block_best(Best b, Best* scratch)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    b = warp_best(b);
    if (lane == 0) scratch[warp] = b;
    __syncthreads();
    b = warp_best(lane < (int)(blockDim.x >> 5) ? scratch[lane] : Best{__int_as_float(0xff800000), 0x7fffffff});
    __syncthreads();
    return b;
}

// The largest order key τ for which the tokens with key ≥ max(τ, lowest) add up to at least `target`, where a token
// adds 1 (mass = false: τ is the target-th largest key) or its weight (mass = true). 8 bits of τ per pass: a histogram
// of the next digit over the tokens that match the digits chosen so far, then the largest digit whose suffix reaches
// the target. Logits crowd into a few bins of the first digits (they share sign and exponent bits), so the lanes of a
// warp that fall into the same bin add their amounts first (match.any, redux) and one of them updates the histogram,
// and the warps spread over HISTOGRAMS copies that are added up before the digit is chosen.
#define HISTOGRAMS 8
template <typename Visit>
__device__ unsigned select_threshold(Visit visit, unsigned lowest, unsigned long long target, bool mass, float max, float temperature,
                                     unsigned long long (*bins)[RADIX_BINS], unsigned* chosen, unsigned long long* chosen_above)
{
    const int lane = threadIdx.x & 31;
    unsigned long long* own = bins[(threadIdx.x >> 5) % HISTOGRAMS];
    unsigned prefix = 0, mask = 0;
    unsigned long long above = 0;
    for (int shift = 24; shift >= 0; shift -= 8)
    {
        for (int i = threadIdx.x; i < HISTOGRAMS * RADIX_BINS; i += blockDim.x) bins[i / RADIX_BINS][i % RADIX_BINS] = 0;
        __syncthreads();
        visit([&](int, float logit) {
            unsigned key = order_key(logit);
            if (key < lowest || (key & mask) != prefix) return;
            int bin = (key >> shift) & (RADIX_BINS - 1);
            unsigned peers = __match_any_sync(__activemask(), bin);
            unsigned long long sum = group_sum(peers, mass ? weight(logit, max, temperature) : 1ull);
            if (lane == __ffs(peers) - 1) atomicAdd(&own[bin], sum);
        });
        __syncthreads();
        for (int b = threadIdx.x; b < RADIX_BINS; b += blockDim.x)
        {
            unsigned long long total = 0;
#pragma unroll
            for (int c = 0; c < HISTOGRAMS; c++) total += bins[c][b];
            bins[0][b] = total;
        }
        __syncthreads();
        if (threadIdx.x < 32)
        {
            // Lane l holds bins 8l … 8l + 7; a suffix sum over the lanes finds the one lane whose bins cross the target.
            unsigned long long own_sum = 0;
#pragma unroll
            for (int b = 0; b < 8; b++) own_sum += bins[0][8 * lane + b];
            unsigned long long suffix = own_sum;
            for (int offset = 1; offset < 32; offset <<= 1)
            {
                unsigned long long higher = __shfl_down_sync(0xffffffffu, suffix, offset);
                if (lane + offset < 32) suffix += higher;
            }
            unsigned long long running = above + suffix - own_sum;   // every bin above this lane's
            if (running < target && running + own_sum >= target)
            {
                for (int b = 7; b >= 0; b--)
                {
                    unsigned long long count = bins[0][8 * lane + b];
                    if (running + count >= target)
                    {
                        *chosen = 8 * lane + b;
                        *chosen_above = running;
                        break;
                    }
                    running += count;
                }
            }
        }
        __syncthreads();
        prefix |= *chosen << shift;
        mask |= (unsigned)(RADIX_BINS - 1) << shift;
        above = *chosen_above;
        __syncthreads();
    }
    return prefix;
}

// Sorts one key per thread (SAMPLE_THREADS of them) into descending order (bitonic).
__device__ void sort_descending(unsigned* keys)
{
    const int i = threadIdx.x;
    for (int k = 2; k <= SAMPLE_THREADS; k <<= 1)
    {
        for (int j = k >> 1; j > 0; j >>= 1)
        {
            int partner = i ^ j;
            if (partner > i)
            {
                unsigned a = keys[i], b = keys[partner];
                if ((a < b) == ((i & k) == 0))
                {
                    keys[i] = b;
                    keys[partner] = a;
                }
            }
            __syncthreads();
        }
    }
}

// The logit of an order key (the inverse of order_key).
__device__ __forceinline__ float key_logit(unsigned key) { return __uint_as_float((key & 0x80000000u) ? key & 0x7fffffffu : ~key); }

// Inclusive prefix sum over the block's threads in thread order; `totals` holds one per warp.
__device__ unsigned long long block_inclusive_scan(unsigned long long v, unsigned long long* totals)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int offset = 1; offset < 32; offset <<= 1)
    {
        unsigned long long lower = __shfl_up_sync(0xffffffffu, v, offset);
        if (lane >= offset) v += lower;
    }
    if (lane == 31) totals[warp] = v;
    __syncthreads();
    if (warp == 0)
    {
        unsigned long long t = lane < (int)(blockDim.x >> 5) ? totals[lane] : 0;
        for (int offset = 1; offset < 32; offset <<= 1)
        {
            unsigned long long lower = __shfl_up_sync(0xffffffffu, t, offset);
            if (lane >= offset) t += lower;
        }
        totals[lane] = t;
    }
    __syncthreads();
    if (warp > 0) v += totals[warp - 1];
    __syncthreads();
    return v;
}

// One token per row of logits (fp32 [rows, vocab]) into ids[row], for draw (*draw_count + row) of `seed`. The draw
// count itself is moved on by step_add after this kernel (every block reads it first). Block: SAMPLE_THREADS. Grid: rows.
// With top-k or top-p the exact thresholds only depend on the tokens above a bound, and the largest logit each thread
// saw gives one: the k-th largest of those maxima is at most the k-th largest logit, and the largest maximum whose
// heavier maxima hold the top-p weight is at most the top-p threshold. The tokens above the bound (usually a few
// hundred) are gathered into shared memory and the radix select and the draw run over them instead of the row; when
// more than CANDIDATES qualify, they run over the row.
#define CANDIDATES 2048
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS) sample_tokens(const float* logits, int vocab, int* ids, const long long* draw_count,
                                                                          int seed, float temperature, float top_p, int top_k)
{
    __shared__ unsigned long long bins[HISTOGRAMS][RADIX_BINS];
    __shared__ unsigned long long total_weight, chosen_above, totals[32];
    __shared__ unsigned chosen, thread_max[SAMPLE_THREADS];
    __shared__ int gathered, bound_index;
    __shared__ float candidate_logit[CANDIDATES], scratch[32];
    __shared__ int candidate_token[CANDIDATES];
    __shared__ Best best_scratch[32];
    const float* row = logits + (long)blockIdx.x * vocab;
    const float neg_inf = __int_as_float(0xff800000);
    // A row holding a NaN or an infinity has no token (Sampling.NonFinite): the first pass over the row checks it.
    bool finite = true;
    if (temperature <= 0.0f || top_k == 1)
    {
        Best best{neg_inf, 0x7fffffff};
        for_each_logit(row, vocab, [&](int token, float logit) { finite &= isfinite(logit); best = better(best, Best{logit, token}); });
        finite = __syncthreads_and(finite);
        best = block_best(best, best_scratch);
        if (threadIdx.x == 0) ids[blockIdx.x] = finite ? best.token : NON_FINITE_TOKEN;
        return;
    }
    float max = neg_inf;
    unsigned own_max = order_key(neg_inf);                      // threads without tokens add no weight
    for_each_logit(row, vocab, [&](int, float logit) { finite &= isfinite(logit); max = fmaxf(max, logit); own_max = ::max(own_max, order_key(logit)); });
    if (!__syncthreads_and(finite))
    {
        if (threadIdx.x == 0) ids[blockIdx.x] = NON_FINITE_TOKEN;
        return;
    }
    max = block_max(max, scratch);
    thread_max[threadIdx.x] = own_max;
    __syncthreads();
    sort_descending(thread_max);

    bool compact = false;
    auto gather = [&](unsigned bound) {
        if (threadIdx.x == 0) gathered = 0;
        __syncthreads();
        for_each_logit(row, vocab, [&](int token, float logit) {
            if (order_key(logit) < bound) return;
            int slot = atomicAdd(&gathered, 1);
            if (slot < CANDIDATES)
            {
                candidate_logit[slot] = logit;
                candidate_token[slot] = token;
            }
        });
        __syncthreads();
        compact = gathered <= CANDIDATES;
    };
    auto visit = [&](auto f) {
        if (compact)
            for (int i = threadIdx.x; i < gathered; i += blockDim.x) f(candidate_token[i], candidate_logit[i]);
        else
            for_each_logit(row, vocab, f);
    };

    unsigned lowest = 0;                                         // the smallest order key kept
    if (top_k > 0 && top_k < vocab)
    {
        if (top_k <= SAMPLE_THREADS) gather(thread_max[top_k - 1]);
        lowest = select_threshold(visit, 0, (unsigned long long)top_k, false, max, temperature, bins, &chosen, &chosen_above);
    }
    if (top_p < 1.0f)
    {
        // Every token at or above `lowest` is a candidate when there are candidates, so the total weight is theirs.
        if (threadIdx.x == 0) total_weight = 0;
        __syncthreads();
        unsigned long long own = 0;
        visit([&](int, float logit) { if (order_key(logit) >= lowest) own += weight(logit, max, temperature); });
        atomicAdd(&total_weight, own);
        __syncthreads();
        unsigned long long target = (unsigned long long)ceil((double)top_p * (double)total_weight);
        if (!compact)
        {
            unsigned key = thread_max[threadIdx.x];
            unsigned long long own_weight = key >= lowest ? weight(key_logit(key), max, temperature) : 0ull;
            unsigned long long heavier = block_inclusive_scan(own_weight, totals);
            if (threadIdx.x == 0) bound_index = -1;
            __syncthreads();
            if (heavier >= target && heavier - own_weight < target) bound_index = threadIdx.x;
            __syncthreads();
            if (bound_index >= 0) gather(thread_max[bound_index]);
        }
        lowest = select_threshold(visit, lowest, target, true, max, temperature, bins, &chosen, &chosen_above);
    }
    const long long draw = *draw_count + blockIdx.x;
    Best best{neg_inf, 0x7fffffff};
    visit([&](int token, float logit) {
        if (order_key(logit) < lowest) return;
        best = better(best, Best{(logit - max) / temperature - logf(-logf(uniform(seed, draw, token))), token});
    });
    best = block_best(best, best_scratch);
    if (threadIdx.x == 0) ids[blockIdx.x] = best.token;
}
