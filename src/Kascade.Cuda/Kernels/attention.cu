// Attention kernels. Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV head).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GROUP
#error "GROUP must be defined"
#endif
#define DIMS_PER_LANE (HEAD_DIM / 32)

// Dense causal attention, one warp per (token, query head), online softmax over the visible keys; each lane
// holds HEAD_DIM/32 dimensions. The reference GPU path (correct on every shape); the tiled tensor-core kernels
// are checked against it. Block: 128 threads (4 warps).
extern "C" __global__ void attention_dense(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                           int tokens, int heads, int kv_heads, int capacity, int start, float scale)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int t = warp / heads, h = warp % heads, g = h / (heads / kv_heads);
    const float* qp = q + ((long)t * heads + h) * HEAD_DIM;
    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) { qr[i] = qp[lane + 32 * i] * scale; acc[i] = 0.0f; }
    const bf16_t* kp = k_cache + (long)g * capacity * HEAD_DIM;
    const bf16_t* vp = v_cache + (long)g * capacity * HEAD_DIM;
    float m = __int_as_float(0xff800000), l = 0.0f;
    int visible = start + t + 1;
    for (int j = 0; j < visible; j++)
    {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) s += qr[i] * bf16_to_float(kp[(long)j * HEAD_DIM + lane + 32 * i]);
        s = warp_sum(s);
        float m_new = fmaxf(m, s);
        float correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) acc[i] = acc[i] * correction + p * bf16_to_float(vp[(long)j * HEAD_DIM + lane + 32 * i]);
        m = m_new;
    }
    float* op = out + ((long)t * heads + h) * HEAD_DIM;
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) op[lane + 32 * i] = acc[i] / l;
}

// Split-KV (flash-decoding) attention for few queries, bandwidth-first. Block (split, KV head, token), 4 warps.
// Every key and value row is read once per block with 16-byte loads and serves all GROUP query heads of the KV
// head: a row of HEAD_DIM bf16 is LANES_PER_KEY lanes × 8 values, so a warp takes KEYS_PER_WARP keys per step.
// Each lane keeps an online-softmax state per head for its 8 dimensions; states are merged across the lanes of a
// warp, then across warps in shared memory, and written as this split's (max, sum, unnormalised output) for
// attention_combine. Blocks along z are the queries of one sequence (causal: query t sees start + t + 1 keys of
// one cache) or, with sequence_stride > 0, one decode query per sequence of a batch (each sees start + 1 keys of
// its own cache, sequence_stride elements apart).
#define VEC 8
#define LANES_PER_KEY (HEAD_DIM / VEC)
#define KEYS_PER_WARP (32 / LANES_PER_KEY)
#define DECODE_WARPS 4
#define STEPS 4

__device__ __forceinline__ void unpack8(uint4 raw, float* out)
{
    unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; i++) { out[2 * i] = __uint_as_float(w[i] << 16); out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
}

// Merges softmax state (m2, l2, a2) into (m, l, a), maxima in log2 units; an empty state has l = 0.
__device__ __forceinline__ void merge_state(float& m, float& l, float* a, float m2, float l2, const float* a2)
{
    float big = fmaxf(m, m2);
    float c1 = l > 0.0f ? exp2f(m - big) : 0.0f, c2 = l2 > 0.0f ? exp2f(m2 - big) : 0.0f;
    l = l * c1 + l2 * c2;
#pragma unroll
    for (int i = 0; i < VEC; i++) a[i] = a[i] * c1 + a2[i] * c2;
    m = big;
}

extern "C" __global__ void __launch_bounds__(32 * DECODE_WARPS) attention_split(
    const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* partial_out, float* partial_ml,
    int heads, int kv_heads, int capacity, int start, float scale, int keys_per_split, long sequence_stride)
{
    __shared__ float shared_ml[DECODE_WARPS][GROUP][2];
    __shared__ float shared_acc[DECODE_WARPS][GROUP][HEAD_DIM];
    int split = blockIdx.x, g = blockIdx.y, t = blockIdx.z, splits = gridDim.x;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int sub = lane / LANES_PER_KEY, part = lane % LANES_PER_KEY;
    int visible = sequence_stride > 0 ? start + 1 : start + t + 1;
    int begin = split * keys_per_split, end = min(visible, begin + keys_per_split);
    k_cache += t * sequence_stride;
    v_cache += t * sequence_stride;

    float qr[GROUP][VEC], acc[GROUP][VEC], m[GROUP], l[GROUP];
#pragma unroll
    for (int h = 0; h < GROUP; h++)
    {
        const float* qp = q + ((long)t * heads + g * GROUP + h) * HEAD_DIM + part * VEC;
#pragma unroll
        for (int i = 0; i < VEC; i++) { qr[h][i] = qp[i] * scale * 1.4426950408889634f; acc[h][i] = 0.0f; }
        m[h] = __int_as_float(0xff800000);
        l[h] = 0.0f;
    }
    const bf16_t* kp = k_cache + (long)g * capacity * HEAD_DIM + part * VEC;
    const bf16_t* vp = v_cache + (long)g * capacity * HEAD_DIM + part * VEC;
    // STEPS key rows per lane are loaded before any is used, so 2 × STEPS 16-byte loads are in flight per lane;
    // the STEPS scores of a head then share one running-max update.
    const int stride = DECODE_WARPS * KEYS_PER_WARP;
    for (int base = begin + warp * KEYS_PER_WARP; base < end; base += STEPS * stride)
    {
        uint4 kraw[STEPS], vraw[STEPS];
        bool valid[STEPS];
#pragma unroll
        for (int u = 0; u < STEPS; u++)
        {
            int j = base + u * stride + sub;
            valid[u] = j < end;
            kraw[u] = valid[u] ? *reinterpret_cast<const uint4*>(kp + (long)j * HEAD_DIM) : make_uint4(0, 0, 0, 0);
            vraw[u] = valid[u] ? *reinterpret_cast<const uint4*>(vp + (long)j * HEAD_DIM) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int h = 0; h < GROUP; h++)
        {
            float s[STEPS], step_max = __int_as_float(0xff800000);
#pragma unroll
            for (int u = 0; u < STEPS; u++)
            {
                float kf[VEC];
                unpack8(kraw[u], kf);
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < VEC; i++) dot += qr[h][i] * kf[i];
#pragma unroll
                for (int offset = LANES_PER_KEY / 2; offset > 0; offset >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
                s[u] = dot;
                if (valid[u]) step_max = fmaxf(step_max, dot);
            }
            if (!valid[0]) continue;
            float m_new = fmaxf(m[h], step_max);
            float c = l[h] > 0.0f ? exp2f(m[h] - m_new) : 0.0f;
            l[h] *= c;
#pragma unroll
            for (int i = 0; i < VEC; i++) acc[h][i] *= c;
#pragma unroll
            for (int u = 0; u < STEPS; u++)
            {
                if (!valid[u]) continue;
                float p = exp2f(s[u] - m_new), vf[VEC];
                unpack8(vraw[u], vf);
                l[h] += p;
#pragma unroll
                for (int i = 0; i < VEC; i++) acc[h][i] += p * vf[i];
            }
            m[h] = m_new;
        }
    }
    // Merge the warp's key lanes (lanes with the same `part`), then the warps.
#pragma unroll
    for (int h = 0; h < GROUP; h++)
    {
        for (int offset = LANES_PER_KEY; offset < 32; offset <<= 1)
        {
            float m2 = __shfl_xor_sync(0xffffffffu, m[h], offset), l2 = __shfl_xor_sync(0xffffffffu, l[h], offset), a2[VEC];
#pragma unroll
            for (int i = 0; i < VEC; i++) a2[i] = __shfl_xor_sync(0xffffffffu, acc[h][i], offset);
            merge_state(m[h], l[h], acc[h], m2, l2, a2);
        }
        if (sub == 0)
        {
#pragma unroll
            for (int i = 0; i < VEC; i++) shared_acc[warp][h][part * VEC + i] = acc[h][i];
            if (part == 0) { shared_ml[warp][h][0] = m[h]; shared_ml[warp][h][1] = l[h]; }
        }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < GROUP * HEAD_DIM; e += blockDim.x)
    {
        int h = e / HEAD_DIM, dim = e % HEAD_DIM;
        float big = __int_as_float(0xff800000);
        for (int w = 0; w < DECODE_WARPS; w++) if (shared_ml[w][h][1] > 0.0f) big = fmaxf(big, shared_ml[w][h][0]);
        float total = 0.0f, value = 0.0f;
        for (int w = 0; w < DECODE_WARPS; w++)
        {
            float lw = shared_ml[w][h][1];
            if (lw <= 0.0f) continue;
            float c = exp2f(shared_ml[w][h][0] - big);
            total += c * lw;
            value += c * shared_acc[w][h][dim];
        }
        long row = ((long)t * heads + g * GROUP + h) * splits + split;
        partial_out[row * HEAD_DIM + dim] = value;
        // attention_combine works in natural-log units.
        if (dim == 0) { partial_ml[row * 2] = big * 0.6931471805599453f; partial_ml[row * 2 + 1] = total; }
    }
}

// Merges the splits of attention_split: out = Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s. Empty splits (l = 0) add
// nothing. Block: HEAD_DIM threads. Grid: tokens * heads.
extern "C" __global__ void attention_combine(const float* partial_out, const float* partial_ml, float* out, int splits)
{
    long row = blockIdx.x;
    const float* ml = partial_ml + row * splits * 2;
    float big = __int_as_float(0xff800000);
    for (int s = 0; s < splits; s++) if (ml[2 * s + 1] > 0.0f) big = fmaxf(big, ml[2 * s]);
    float total = 0.0f, acc = 0.0f;
    for (int s = 0; s < splits; s++)
    {
        float l = ml[2 * s + 1];
        if (l <= 0.0f) continue;
        float w = expf(ml[2 * s] - big);
        total += w * l;
        acc += w * partial_out[(row * splits + s) * HEAD_DIM + threadIdx.x];
    }
    out[row * HEAD_DIM + threadIdx.x] = acc / total;
}

// Causal prefill on tensor cores (mma.sync.m16n8k16, bf16 in, fp32 accumulate): the FlashAttention-2 scheme.
// Block: one query head × 64 queries, 4 warps of 16 query rows. K and V tiles of 64 keys are staged in shared
// memory; S = Q·Kᵀ and O += P·V run on tensor cores with the online softmax on the score fragments in registers.
// Fragment layouts (PTX ISA, mma.m16n8k16): g = lane / 4, c = lane % 4; A holds rows g and g+8, columns 2c, 2c+1
// and 2c+8, 2c+9; B holds rows 2c, 2c+1 and 2c+8, 2c+9 of column g; C holds rows g and g+8, columns 2c, 2c+1.
#if HEAD_DIM <= 128
#define PREFILL_QUERIES 64
#define PREFILL_KEYS 64

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi)
{
    return (unsigned)float_to_bf16(lo) | ((unsigned)float_to_bf16(hi) << 16);
}

__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

extern "C" __global__ void __launch_bounds__(128) attention_prefill(
    const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
    int tokens, int heads, int kv_heads, int capacity, int start, float scale)
{
    __shared__ __align__(16) bf16_t k_tile[PREFILL_KEYS][HEAD_DIM + 8];
    __shared__ __align__(16) bf16_t v_tile[PREFILL_KEYS][HEAD_DIM + 8];
    int h = blockIdx.y, g_kv = h / (heads / kv_heads);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    int q_first = blockIdx.x * PREFILL_QUERIES + warp * 16;          // first query row (chunk index) of this warp
    int row0 = q_first + gr, row1 = q_first + gr + 8;                 // this thread's two rows
    const float log2e_scale = scale * 1.4426950408889634f;

    // Q fragments for all HEAD_DIM / 16 k-steps, scaled into log2 units, rows beyond the chunk as zeros.
    unsigned qa[HEAD_DIM / 16][4];
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ks++)
    {
        int col = ks * 16 + 2 * gc;
        const float* r0 = q + ((long)row0 * heads + h) * HEAD_DIM;
        const float* r1 = q + ((long)row1 * heads + h) * HEAD_DIM;
        bool v0 = row0 < tokens, v1 = row1 < tokens;
        qa[ks][0] = v0 ? pack_bf16(r0[col] * log2e_scale, r0[col + 1] * log2e_scale) : 0u;
        qa[ks][1] = v1 ? pack_bf16(r1[col] * log2e_scale, r1[col + 1] * log2e_scale) : 0u;
        qa[ks][2] = v0 ? pack_bf16(r0[col + 8] * log2e_scale, r0[col + 9] * log2e_scale) : 0u;
        qa[ks][3] = v1 ? pack_bf16(r1[col + 8] * log2e_scale, r1[col + 9] * log2e_scale) : 0u;
    }
    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = __int_as_float(0xff800000), m1 = m0, l0 = 0.0f, l1 = 0.0f;

    const bf16_t* kp = k_cache + (long)g_kv * capacity * HEAD_DIM;
    const bf16_t* vp = v_cache + (long)g_kv * capacity * HEAD_DIM;
    int block_last = min(tokens, (int)(blockIdx.x + 1) * PREFILL_QUERIES) - 1;
    int keys_end = start + block_last + 1;                           // keys any query of the block sees
    int pos0 = start + row0, pos1 = start + row1;                     // absolute positions of this thread's rows
    for (int k0 = 0; k0 < keys_end; k0 += PREFILL_KEYS)
    {
        __syncthreads();
        for (int idx = threadIdx.x; idx < PREFILL_KEYS * HEAD_DIM / 8; idx += blockDim.x)
        {
            int r = idx / (HEAD_DIM / 8), c8 = (idx % (HEAD_DIM / 8)) * 8;
            uint4 kv = make_uint4(0, 0, 0, 0), vv = make_uint4(0, 0, 0, 0);
            if (k0 + r < keys_end)
            {
                kv = *reinterpret_cast<const uint4*>(kp + (long)(k0 + r) * HEAD_DIM + c8);
                vv = *reinterpret_cast<const uint4*>(vp + (long)(k0 + r) * HEAD_DIM + c8);
            }
            *reinterpret_cast<uint4*>(&k_tile[r][c8]) = kv;
            *reinterpret_cast<uint4*>(&v_tile[r][c8]) = vv;
        }
        __syncthreads();
        if (q_first >= tokens || k0 > start + q_first + 15) continue;   // warp has no rows, or the whole tile is in its future

        float s[PREFILL_KEYS / 8][4];
#pragma unroll
        for (int n = 0; n < PREFILL_KEYS / 8; n++)
        {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < HEAD_DIM / 16; ks++)
            {
                unsigned b[2];
                b[0] = *reinterpret_cast<const unsigned*>(&k_tile[n * 8 + gr][ks * 16 + 2 * gc]);
                b[1] = *reinterpret_cast<const unsigned*>(&k_tile[n * 8 + gr][ks * 16 + 2 * gc + 8]);
                mma_bf16(s[n], qa[ks], b);
            }
        }
        // Causal mask (and keys past the end), then the online softmax of rows row0 and row1.
        float t0 = __int_as_float(0xff800000), t1 = t0;
#pragma unroll
        for (int n = 0; n < PREFILL_KEYS / 8; n++)
        {
            int key = k0 + n * 8 + 2 * gc;
            if (key > pos0) s[n][0] = __int_as_float(0xff800000);
            if (key + 1 > pos0) s[n][1] = __int_as_float(0xff800000);
            if (key > pos1) s[n][2] = __int_as_float(0xff800000);
            if (key + 1 > pos1) s[n][3] = __int_as_float(0xff800000);
            t0 = fmaxf(t0, fmaxf(s[n][0], s[n][1]));
            t1 = fmaxf(t1, fmaxf(s[n][2], s[n][3]));
        }
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
        t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
        t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 1));
        t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 2));
        float n0 = fmaxf(m0, t0), n1 = fmaxf(m1, t1);
        // A row with no visible key yet keeps max −inf; use 0 as the exponent base so exp2 gives 0, not NaN.
        float b0 = n0 == __int_as_float(0xff800000) ? 0.0f : n0, b1 = n1 == __int_as_float(0xff800000) ? 0.0f : n1;
        float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1);
        float sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
        for (int n = 0; n < PREFILL_KEYS / 8; n++)
        {
            s[n][0] = exp2f(s[n][0] - b0); s[n][1] = exp2f(s[n][1] - b0);
            s[n][2] = exp2f(s[n][2] - b1); s[n][3] = exp2f(s[n][3] - b1);
            sum0 += s[n][0] + s[n][1];
            sum1 += s[n][2] + s[n][3];
        }
        l0 = l0 * c0 + sum0;  // partial per thread; the quad's sums are added at the end
        l1 = l1 * c1 + sum1;
        m0 = n0;
        m1 = n1;
#pragma unroll
        for (int n = 0; n < HEAD_DIM / 8; n++) { o[n][0] *= c0; o[n][1] *= c0; o[n][2] *= c1; o[n][3] *= c1; }
        // O += P · V: P's C fragments of key n-tiles 2kk and 2kk+1 are the A fragment of k-step kk.
#pragma unroll
        for (int kk = 0; kk < PREFILL_KEYS / 16; kk++)
        {
            unsigned a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; n++)
            {
                int key = kk * 16 + 2 * gc, dim = n * 8 + gr;
                unsigned b[2] = {(unsigned)v_tile[key][dim] | ((unsigned)v_tile[key + 1][dim] << 16),
                                 (unsigned)v_tile[key + 8][dim] | ((unsigned)v_tile[key + 9][dim] << 16)};
                mma_bf16(o[n], a, b);
            }
        }
    }
    if (q_first >= tokens) return;
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
    {
        int col = n * 8 + 2 * gc;
        if (row0 < tokens) { float* p = out + ((long)row0 * heads + h) * HEAD_DIM + col; p[0] = o[n][0] / l0; p[1] = o[n][1] / l0; }
        if (row1 < tokens) { float* p = out + ((long)row1 * heads + h) * HEAD_DIM + col; p[0] = o[n][2] / l1; p[1] = o[n][3] / l1; }
    }
}
#endif
