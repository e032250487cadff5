// Attention kernels. Specialisation key: HEAD_DIM (a multiple of 32) and GROUP (query heads per KV head).
#include "common.cuh"

#ifndef HEAD_DIM
#error "HEAD_DIM must be defined"
#endif
#ifndef GROUP
#error "GROUP must be defined"
#endif
#define DIMS_PER_LANE (HEAD_DIM / 32)

// One warp's attention for one (token, query head) over `count` keys, the i-th at position key(i): online
// softmax, each lane holding HEAD_DIM/32 dimensions. An empty key set gives zeros.
struct AllKeys
{
    __device__ int operator()(int i) const { return i; }
};

struct ListedKeys
{
    const int* positions;
    __device__ int operator()(int i) const { return positions[i]; }
};

template <typename Key>
__device__ void warp_attention(const float* qp, const bf16_t* kp, const bf16_t* vp, float scale, int count, Key key, float* op, int lane)
{
    float qr[DIMS_PER_LANE], acc[DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) { qr[i] = qp[lane + 32 * i] * scale; acc[i] = 0.0f; }
    float m = __int_as_float(0xff800000), l = 0.0f;
    for (int n = 0; n < count; n++)
    {
        long j = key(n);
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) s += qr[i] * bf16_to_float(kp[j * HEAD_DIM + lane + 32 * i]);
        s = warp_sum(s);
        float m_new = fmaxf(m, s);
        float correction = expf(m - m_new), p = expf(s - m_new);
        l = l * correction + p;
#pragma unroll
        for (int i = 0; i < DIMS_PER_LANE; i++) acc[i] = acc[i] * correction + p * bf16_to_float(vp[j * HEAD_DIM + lane + 32 * i]);
        m = m_new;
    }
#pragma unroll
    for (int i = 0; i < DIMS_PER_LANE; i++) op[lane + 32 * i] = l > 0.0f ? acc[i] / l : 0.0f;
}

// Dense causal attention, one warp per (token, query head) over its visible keys. Runs the head dims
// attention_mma is not compiled for (e.g. 256). Block: 128 threads (4 warps).
extern "C" __global__ void attention_dense(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                           int tokens, int heads, int kv_heads, int capacity, int start, float scale)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int t = warp / heads, h = warp % heads, g = h / (heads / kv_heads);
    long head_offset = (long)g * capacity * HEAD_DIM, row = (long)t * heads + h;
    warp_attention(q + row * HEAD_DIM, k_cache + head_offset, v_cache + head_offset, scale, start + t + 1, AllKeys{}, out + row * HEAD_DIM, lane);
}

// Gathered attention: warp (token t, query head h) attends over positions[offsets[t·heads + h] …
// offsets[t·heads + h + 1]), the key sets the baselines choose on the host (DESIGN §4; exact, not fast).
// Block: 128 threads (4 warps).
extern "C" __global__ void attention_gathered(const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out,
                                              const int* offsets, const int* positions, int tokens, int heads, int kv_heads, int capacity, float scale)
{
    int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= tokens * heads) return;
    int h = warp % heads, g = h / (heads / kv_heads);
    long head_offset = (long)g * capacity * HEAD_DIM;
    int begin = offsets[warp];
    warp_attention(q + (long)warp * HEAD_DIM, k_cache + head_offset, v_cache + head_offset, scale, offsets[warp + 1] - begin,
                   ListedKeys{positions + begin}, out + (long)warp * HEAD_DIM, lane);
}

// Tensor-core attention for prefill and decode alike (mma.sync.m16n8k16, bf16 in, fp32 accumulate; sm_80+): the
// FlashAttention-2 scheme with the GQA group packed into the rows, as FlashInfer does. A block owns 16 × warps
// query rows of one KV head, where row r is query token r / GROUP of query head KV head × GROUP + r % GROUP: one
// K/V tile in shared memory then serves every query head that reads it, so decode (1 token × GROUP rows) and
// prefill (many tokens × GROUP rows) are the same kernel with different block sizes. Each block walks the keys
// [split × keys_per_split, …) of its split in KV_TILE-key tiles with cp.async: V(j) loads while S = Q·K(j)ᵀ and
// the online softmax run, K(j+1) loads while O += P·V(j) runs. With one split the block writes the output; with
// several it writes (max, sum, unnormalised output) per row for attention_combine (flash-decoding).
// Fragment layouts (PTX ISA, mma.m16n8k16): g = lane / 4, c = lane % 4; A holds rows g and g+8, columns 2c, 2c+1
// and 2c+8, 2c+9; B holds rows 2c, 2c+1 and 2c+8, 2c+9 of column g; C holds rows g and g+8, columns 2c, 2c+1.
// Grid: (splits, row tiles, sequences × KV heads). Sequence s reads its cache sequence_stride elements after
// sequence s − 1's and its queries after sequence s − 1's `tokens` rows (batched decode: tokens = 1).
#if HEAD_DIM % 32 == 0 && HEAD_DIM <= 128
#define KV_TILE 64
#define TILE_STRIDE (HEAD_DIM + 8)   // bf16 per shared row: the 16-byte pad puts the 8 rows of an ldmatrix on distinct banks

__device__ __forceinline__ unsigned pack_bf16(float lo, float hi)
{
    return (unsigned)float_to_bf16(lo) | ((unsigned)float_to_bf16(hi) << 16);
}

__device__ __forceinline__ unsigned shared_address(const void* p)
{
    unsigned a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global → shared without passing through registers; zero-filled when !valid (the source is not read).
__device__ __forceinline__ void copy_async16(void* destination, const void* source, bool valid)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(destination)), "l"(source), "r"(valid ? 16 : 0));
}

__device__ __forceinline__ void copy_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

__device__ __forceinline__ void copy_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldmatrix_x4(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned* r, const bf16_t* p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(shared_address(p)));
}

__device__ __forceinline__ void mma_bf16(float* d, const unsigned* a, const unsigned* b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// Stages keys [first, first + KV_TILE) of one KV head into `tile`, rows at or past `end` as zeros (so that masked
// keys multiply zeros, never stale values that could be NaN).
__device__ __forceinline__ void stage_tile(bf16_t* tile, const bf16_t* cache, int first, int end)
{
    for (int chunk = threadIdx.x; chunk < KV_TILE * HEAD_DIM / 8; chunk += blockDim.x)
    {
        int r = chunk / (HEAD_DIM / 8), c8 = (chunk % (HEAD_DIM / 8)) * 8;
        bool valid = first + r < end;
        copy_async16(tile + r * TILE_STRIDE + c8, cache + (valid ? (long)(first + r) * HEAD_DIM + c8 : 0), valid);
    }
    copy_async_commit();
}

extern "C" __global__ void __launch_bounds__(256) attention_mma(
    const float* q, const bf16_t* k_cache, const bf16_t* v_cache, float* out, float* partial_out, float* partial_ml,
    int tokens, int heads, int kv_heads, int capacity, int start, float scale, int keys_per_split, long sequence_stride)
{
    __shared__ __align__(16) bf16_t k_tile[KV_TILE * TILE_STRIDE];
    __shared__ __align__(16) bf16_t v_tile[KV_TILE * TILE_STRIDE];
    const float neg_inf = __int_as_float(0xff800000);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, gr = lane >> 2, gc = lane & 3;
    const int split = blockIdx.x, splits = gridDim.x;
    const int row_tile = gridDim.y - 1 - blockIdx.y;                 // causal: the longest row tiles start first
    const int g_kv = blockIdx.z % kv_heads, sequence = blockIdx.z / kv_heads;
    const int rows = tokens * GROUP, block_rows = (int)blockDim.x / 2; // 16 rows per warp
    const int warp_row = row_tile * block_rows + warp * 16;
    const int row0 = warp_row + gr, row1 = row0 + 8;                    // this thread's two rows
    const int last_row = min(row_tile * block_rows + block_rows, rows) - 1;

    // Query token t sees keys [0, start + t]; this split walks keys [begin, end).
    const int begin = split * keys_per_split;
    const int end = min(start + last_row / GROUP + 1, begin + keys_per_split);
    const int limit0 = min(start + row0 / GROUP + 1, end), limit1 = min(start + row1 / GROUP + 1, end);
    const int warp_first_limit = min(start + warp_row / GROUP + 1, end);
    const int warp_last_key = start + min(warp_row + 15, rows - 1) / GROUP;
    k_cache += sequence * sequence_stride + (long)g_kv * capacity * HEAD_DIM;
    v_cache += sequence * sequence_stride + (long)g_kv * capacity * HEAD_DIM;

    // Q fragments for all HEAD_DIM / 16 k-steps, scaled into log2 units; padding rows are zeros.
    const float log2e_scale = scale * 1.4426950408889634f;
    const long q_row0 = ((long)sequence * tokens + row0 / GROUP) * heads + g_kv * GROUP + row0 % GROUP;
    const long q_row1 = ((long)sequence * tokens + row1 / GROUP) * heads + g_kv * GROUP + row1 % GROUP;
    unsigned qa[HEAD_DIM / 16][4];
#pragma unroll
    for (int ks = 0; ks < HEAD_DIM / 16; ks++)
    {
        int col = ks * 16 + 2 * gc;
        float2 a0 = make_float2(0.0f, 0.0f), a1 = a0, a2 = a0, a3 = a0;
        if (row0 < rows) { a0 = *reinterpret_cast<const float2*>(q + q_row0 * HEAD_DIM + col); a2 = *reinterpret_cast<const float2*>(q + q_row0 * HEAD_DIM + col + 8); }
        if (row1 < rows) { a1 = *reinterpret_cast<const float2*>(q + q_row1 * HEAD_DIM + col); a3 = *reinterpret_cast<const float2*>(q + q_row1 * HEAD_DIM + col + 8); }
        qa[ks][0] = pack_bf16(a0.x * log2e_scale, a0.y * log2e_scale);
        qa[ks][1] = pack_bf16(a1.x * log2e_scale, a1.y * log2e_scale);
        qa[ks][2] = pack_bf16(a2.x * log2e_scale, a2.y * log2e_scale);
        qa[ks][3] = pack_bf16(a3.x * log2e_scale, a3.y * log2e_scale);
    }
    float o[HEAD_DIM / 8][4];
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    float m0 = neg_inf, m1 = neg_inf, l0 = 0.0f, l1 = 0.0f;

    const int tiles = end > begin ? (end - begin + KV_TILE - 1) / KV_TILE : 0;
    if (tiles > 0) stage_tile(k_tile, k_cache, begin, end);
    for (int j = 0; j < tiles; j++)
    {
        const int k0 = begin + j * KV_TILE;
        copy_async_wait_all();
        __syncthreads();                                              // K(j) is in; every warp is done with V(j − 1)
        stage_tile(v_tile, v_cache, k0, end);
        const bool active = warp_row < rows && k0 <= warp_last_key;   // the warp has rows that see this tile

        float s[KV_TILE / 8][4];
        if (active)
        {
#pragma unroll
            for (int n = 0; n < KV_TILE / 8; n++)
            {
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
                for (int kc = 0; kc < HEAD_DIM / 32; kc++)
                {
                    unsigned b[4];
                    ldmatrix_x4(b, k_tile + (n * 8 + (lane & 7)) * TILE_STRIDE + kc * 32 + (lane >> 3) * 8);
                    mma_bf16(s[n], qa[2 * kc], b);
                    mma_bf16(s[n], qa[2 * kc + 1], b + 2);
                }
            }
            if (k0 + KV_TILE > warp_first_limit)                      // the tile crosses some row's last visible key
            {
#pragma unroll
                for (int n = 0; n < KV_TILE / 8; n++)
                {
                    int key = k0 + n * 8 + 2 * gc;
                    if (key >= limit0) s[n][0] = neg_inf;
                    if (key + 1 >= limit0) s[n][1] = neg_inf;
                    if (key >= limit1) s[n][2] = neg_inf;
                    if (key + 1 >= limit1) s[n][3] = neg_inf;
                }
            }
            float t0 = neg_inf, t1 = neg_inf;
#pragma unroll
            for (int n = 0; n < KV_TILE / 8; n++)
            {
                t0 = fmaxf(t0, fmaxf(s[n][0], s[n][1]));
                t1 = fmaxf(t1, fmaxf(s[n][2], s[n][3]));
            }
            t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 1));
            t0 = fmaxf(t0, __shfl_xor_sync(0xffffffffu, t0, 2));
            t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 1));
            t1 = fmaxf(t1, __shfl_xor_sync(0xffffffffu, t1, 2));
            float n0 = fmaxf(m0, t0), n1 = fmaxf(m1, t1);
            // A row with no visible key yet keeps max −inf; 0 as the exponent base makes exp2 give 0, not NaN.
            float b0 = n0 == neg_inf ? 0.0f : n0, b1 = n1 == neg_inf ? 0.0f : n1;
            float c0 = exp2f(m0 - b0), c1 = exp2f(m1 - b1), sum0 = 0.0f, sum1 = 0.0f;
#pragma unroll
            for (int n = 0; n < KV_TILE / 8; n++)
            {
                s[n][0] = exp2f(s[n][0] - b0); s[n][1] = exp2f(s[n][1] - b0);
                s[n][2] = exp2f(s[n][2] - b1); s[n][3] = exp2f(s[n][3] - b1);
                sum0 += s[n][0] + s[n][1];
                sum1 += s[n][2] + s[n][3];
            }
            l0 = l0 * c0 + sum0;                                      // per thread; the quad's sums are added at the end
            l1 = l1 * c1 + sum1;
            m0 = n0;
            m1 = n1;
#pragma unroll
            for (int n = 0; n < HEAD_DIM / 8; n++) { o[n][0] *= c0; o[n][1] *= c0; o[n][2] *= c1; o[n][3] *= c1; }
        }
        copy_async_wait_all();
        __syncthreads();                                              // V(j) is in; every warp is done with K(j)
        if (j + 1 < tiles) stage_tile(k_tile, k_cache, k0 + KV_TILE, end);
        if (!active) continue;
        // O += P·V: P's C fragments of key n-tiles 2kk and 2kk+1 are the A fragment of k-step kk; V's B fragments
        // come transposed out of the row-major tile.
#pragma unroll
        for (int kk = 0; kk < KV_TILE / 16; kk++)
        {
            unsigned a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int n2 = 0; n2 < HEAD_DIM / 16; n2++)
            {
                unsigned b[4];
                ldmatrix_x4_trans(b, v_tile + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * TILE_STRIDE + n2 * 16 + (lane >> 4) * 8);
                mma_bf16(o[2 * n2], a, b);
                mma_bf16(o[2 * n2 + 1], a, b + 2);
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    const long out_row0 = splits == 1 ? q_row0 : q_row0 * splits + split, out_row1 = splits == 1 ? q_row1 : q_row1 * splits + split;
    float* target = splits == 1 ? out : partial_out;
    // One split: the normalised output. Several: unnormalised, with (max in natural-log units, sum) for the combine.
    float scale0 = splits == 1 ? 1.0f / l0 : 1.0f, scale1 = splits == 1 ? 1.0f / l1 : 1.0f;
#pragma unroll
    for (int n = 0; n < HEAD_DIM / 8; n++)
    {
        int col = n * 8 + 2 * gc;
        if (row0 < rows) *reinterpret_cast<float2*>(target + out_row0 * HEAD_DIM + col) = make_float2(o[n][0] * scale0, o[n][1] * scale0);
        if (row1 < rows) *reinterpret_cast<float2*>(target + out_row1 * HEAD_DIM + col) = make_float2(o[n][2] * scale1, o[n][3] * scale1);
    }
    if (splits > 1 && gc == 0)
    {
        if (row0 < rows) { partial_ml[out_row0 * 2] = m0 * 0.6931471805599453f; partial_ml[out_row0 * 2 + 1] = l0; }
        if (row1 < rows) { partial_ml[out_row1 * 2] = m1 * 0.6931471805599453f; partial_ml[out_row1 * 2 + 1] = l1; }
    }
}
#endif

// Merges the splits of attention_mma: out = Σ e^(m_s − M) acc_s / Σ e^(m_s − M) l_s. Empty splits (l = 0) add
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

