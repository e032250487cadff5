using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace Kascade.Cpu;

/// <summary>
/// fp32 <c>C = A · Bᵀ</c>: the one matrix kernel of the CPU backend (linear layers, q·kᵀ and p·v with vᵀ stored).
/// A 4×4 register tile of 256-bit accumulators: each step loads 4 rows of A and 4 rows of B (8 floats each)
/// and issues 16 fused multiply-adds, so the loop is bound by FMA throughput rather than loads.
/// </summary>
public static unsafe class Gemm
{
    /// <summary>
    /// c[i, j] = Σ_p a[i, p] · b[j, p] for i &lt; m, j &lt; n, p &lt; k.
    /// a: <c>[m, k]</c> row stride lda; b: <c>[n, k]</c> row stride ldb; c: <c>[m, n]</c> row stride ldc; all fp32.
    /// </summary>
    public static void MultiplyTransposed(int m, int n, int k, float* a, int lda, float* b, int ldb, float* c, int ldc)
    {
        int i = 0;
        for (; i + 4 <= m; i += 4)
        {
            int j = 0;
            for (; j + 4 <= n; j += 4)
            {
                Tile4x4(k, a + (long)i * lda, lda, b + (long)j * ldb, ldb, c + (long)i * ldc + j, ldc);
            }
            for (; j < n; j++)
            {
                for (int r = 0; r < 4; r++)
                {
                    Store(c + (long)(i + r) * ldc + j, Dot(a + (long)(i + r) * lda, b + (long)j * ldb, k));
                }
            }
        }
        for (; i < m; i++)
        {
            int j = 0;
            for (; j + 4 <= n; j += 4)
            {
                Tile1x4(k, a + (long)i * lda, b + (long)j * ldb, ldb, c + (long)i * ldc + j);
            }
            for (; j < n; j++)
            {
                Store(c + (long)i * ldc + j, Dot(a + (long)i * lda, b + (long)j * ldb, k));
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* c, float value) => *c = value;

    private static float Dot(float* a, float* b, int k) =>
        TensorPrimitives.Dot(new ReadOnlySpan<float>(a, k), new ReadOnlySpan<float>(b, k));

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile4x4(int k, float* a, int lda, float* b, int ldb, float* c, int ldc)
    {
        var c00 = Vector256<float>.Zero; var c01 = c00; var c02 = c00; var c03 = c00;
        var c10 = c00; var c11 = c00; var c12 = c00; var c13 = c00;
        var c20 = c00; var c21 = c00; var c22 = c00; var c23 = c00;
        var c30 = c00; var c31 = c00; var c32 = c00; var c33 = c00;
        float* a0 = a, a1 = a + lda, a2 = a + 2 * lda, a3 = a + 3 * lda;
        float* b0 = b, b1 = b + ldb, b2 = b + 2 * ldb, b3 = b + 3 * ldb;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var x0 = Vector256.Load(a0 + p); var x1 = Vector256.Load(a1 + p);
            var x2 = Vector256.Load(a2 + p); var x3 = Vector256.Load(a3 + p);
            var y = Vector256.Load(b0 + p);
            c00 = Vector256.FusedMultiplyAdd(x0, y, c00); c10 = Vector256.FusedMultiplyAdd(x1, y, c10);
            c20 = Vector256.FusedMultiplyAdd(x2, y, c20); c30 = Vector256.FusedMultiplyAdd(x3, y, c30);
            y = Vector256.Load(b1 + p);
            c01 = Vector256.FusedMultiplyAdd(x0, y, c01); c11 = Vector256.FusedMultiplyAdd(x1, y, c11);
            c21 = Vector256.FusedMultiplyAdd(x2, y, c21); c31 = Vector256.FusedMultiplyAdd(x3, y, c31);
            y = Vector256.Load(b2 + p);
            c02 = Vector256.FusedMultiplyAdd(x0, y, c02); c12 = Vector256.FusedMultiplyAdd(x1, y, c12);
            c22 = Vector256.FusedMultiplyAdd(x2, y, c22); c32 = Vector256.FusedMultiplyAdd(x3, y, c32);
            y = Vector256.Load(b3 + p);
            c03 = Vector256.FusedMultiplyAdd(x0, y, c03); c13 = Vector256.FusedMultiplyAdd(x1, y, c13);
            c23 = Vector256.FusedMultiplyAdd(x2, y, c23); c33 = Vector256.FusedMultiplyAdd(x3, y, c33);
        }
        var sums = stackalloc float[16];
        sums[0] = Vector256.Sum(c00); sums[1] = Vector256.Sum(c01); sums[2] = Vector256.Sum(c02); sums[3] = Vector256.Sum(c03);
        sums[4] = Vector256.Sum(c10); sums[5] = Vector256.Sum(c11); sums[6] = Vector256.Sum(c12); sums[7] = Vector256.Sum(c13);
        sums[8] = Vector256.Sum(c20); sums[9] = Vector256.Sum(c21); sums[10] = Vector256.Sum(c22); sums[11] = Vector256.Sum(c23);
        sums[12] = Vector256.Sum(c30); sums[13] = Vector256.Sum(c31); sums[14] = Vector256.Sum(c32); sums[15] = Vector256.Sum(c33);
        for (; p < k; p++)
        {
            for (int r = 0; r < 4; r++)
            {
                float x = a[r * lda + p];
                for (int s = 0; s < 4; s++)
                {
                    sums[r * 4 + s] += x * b[s * ldb + p];
                }
            }
        }
        for (int r = 0; r < 4; r++)
        {
            for (int s = 0; s < 4; s++)
            {
                Store(c + (long)r * ldc + s, sums[r * 4 + s]);
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Tile1x4(int k, float* a, float* b, int ldb, float* c)
    {
        var c0 = Vector256<float>.Zero; var c1 = c0; var c2 = c0; var c3 = c0;
        float* b0 = b, b1 = b + ldb, b2 = b + 2 * ldb, b3 = b + 3 * ldb;
        int p = 0;
        for (; p + 8 <= k; p += 8)
        {
            var x = Vector256.Load(a + p);
            c0 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b0 + p), c0);
            c1 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b1 + p), c1);
            c2 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b2 + p), c2);
            c3 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b3 + p), c3);
        }
        float s0 = Vector256.Sum(c0), s1 = Vector256.Sum(c1), s2 = Vector256.Sum(c2), s3 = Vector256.Sum(c3);
        for (; p < k; p++)
        {
            s0 += a[p] * b0[p]; s1 += a[p] * b1[p]; s2 += a[p] * b2[p]; s3 += a[p] * b3[p];
        }
        Store(c, s0); Store(c + 1, s1); Store(c + 2, s2); Store(c + 3, s3);
    }
}
