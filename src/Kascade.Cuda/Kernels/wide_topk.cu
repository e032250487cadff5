// A row's exact Top-k in two reads of the row where select_topk (selection.cu) reads it five times (issue 15 §5: the
// 512-row Top-k at 128k keys took 0.74 ms there, 0.80× torch.topk on the H100, against a target of 0.5×). Radix
// selection on 12-bit digits: the first read counts the leading 12 bits of every order key, which fixes the digit of the
// k-th largest; the second writes the keys above that digit straight to the plan, in ascending position, and gathers the
// keys that share it (the candidates) into shared memory, where the remaining digits and the ties are settled without
// touching the row again. Rows whose k-th digit holds more candidates than shared memory does (rows of few distinct
// values) are counted once more per digit until the candidates fit or the key is whole; a row no longer than the
// candidate store is gathered at once. The set is select_topk's (Ranking.TopK's: ties to the lower position); the order
// within it is not: the keys above the first digit that fits come first, then the candidates above the k-th, then its
// ties, each in ascending position. Takes select_topk's SelectParams (every mode). Specialisation key: HEAD_DIM (of the
// plan kernels; the Top-k reads no K).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#include "plan_common.cuh"
#include "topk_digits.cuh"

#define WIDE_COUNT_LOADS 8    // scores a lane loads before it counts them (loads in flight)
// Candidates held in shared memory (order key and position). 12,288 keep two blocks on a Hopper multiprocessor (2 ×
// 113 KiB of its 228) and hold the 8,192 keys that share a 12-bit digit of uniform scores at 128k keys (1/16 of them:
// 8 digits to an octave).
#define WIDE_CANDIDATES 12288

// Counts the digit at `shift` (`bits` wide) of the order keys of scores[0, n) whose bits under `mask` equal `prefix`.
// Warp w takes 32 · WIDE_COUNT_LOADS consecutive scores of each block-wide stretch, a lane every 32nd, all loaded
// before any is counted. The histogram is zeroed and synchronised by the caller.
__device__ __forceinline__ void count_digit(const float* scores, int n, unsigned prefix, unsigned mask, int shift, unsigned bits, int* histogram)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    for (int base = warp * 32 * WIDE_COUNT_LOADS + lane; base < n; base += TOPK_THREADS * WIDE_COUNT_LOADS)
    {
        unsigned keys[WIDE_COUNT_LOADS];
#pragma unroll
        for (int u = 0; u < WIDE_COUNT_LOADS; u++)
        {
            int i = base + u * 32;
            keys[u] = i < n ? order_key(scores[i]) : 0u;
        }
#pragma unroll
        for (int u = 0; u < WIDE_COUNT_LOADS; u++)
            if (base + u * 32 < n && (keys[u] & mask) == prefix) atomicAdd(&histogram[(keys[u] >> shift) & bits], 1);
    }
}

// Grid: rows, TOPK_THREADS; dynamic shared memory (TOPK_BINS + 2 · WIDE_CANDIDATES) · 4 bytes (CudaBackend.WideTopKShared).
extern "C" __global__ void __launch_bounds__(TOPK_THREADS, 2) wide_topk(SelectParams p)
{
    extern __shared__ int wide_shared[];
    int* histogram = wide_shared;
    unsigned* candidate_keys = (unsigned*)(histogram + TOPK_BINS);
    int* candidate_positions = (int*)(candidate_keys + WIDE_CANDIDATES);
    __shared__ BlockSums block_sums;
    int* const sums = block_sums.values;
    __shared__ int chosen, left, in_bin;
    const int row = blockIdx.x;
    int n, k;
    const float* scores;
    int* out;
    if (!begin_topk_row(p, row, n, k, scores, out)) return;
    // The row is read from memory at each digit, so its range is not known before the first: all 32 bits.
    const KeyDigits digits{32};
    unsigned prefix = 0, mask = 0;
    int remaining = k, candidates = n, digit = 0;
    // Digits of the row until the keys that share the k-th largest's leading digits fit in shared memory, or it is whole.
    for (; digit < digits.count() && candidates > WIDE_CANDIDATES; digit++)
    {
        for (int b = threadIdx.x; b < TOPK_BINS; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        count_digit(scores, n, prefix, mask, digits.shift(digit), digits.bits(digit), histogram);
        __syncthreads();
        find_digit([&](int b) { return histogram[b]; }, remaining, sums, &chosen, &left, &in_bin);
        prefix |= (unsigned)chosen << digits.shift(digit);
        mask |= digits.bits(digit) << digits.shift(digit);
        remaining = left;
        candidates = in_bin;
        __syncthreads();
    }
    auto key_at = [&](int i) { return order_key(scores[i]); };
    if (digit == digits.count())
    {
        // prefix is the k-th largest key: the keys above it, then its first `remaining` ties, in one pass.
        const int tie_base = k - remaining, ties = remaining;
        ordered_pass(key_at, 0, n, prefix, mask, out, 0, 0, [&](int j, unsigned, int i) { if (j < ties) out[tie_base + j] = i; }, sums);
        return;
    }
    ordered_pass(key_at, 0, n, prefix, mask, out, 0, 0, [&](int j, unsigned key, int i) {
        candidate_keys[j] = key;
        candidate_positions[j] = i;
    }, sums);
    settle_candidates([&](int j) { return candidate_keys[j]; }, [&](int j) { return candidate_positions[j]; }, candidates, digits, digit, prefix, mask, k, remaining, out, histogram, sums, &chosen,
                      &left, &in_bin);
}
