using System.Buffers;
using System.Numerics.Tensors;
using Kascade.Core;

namespace Kascade.Cpu;

/// <summary>
/// The CPU backend: fp32 compute with <see cref="TensorPrimitives"/> and <see cref="Parallel"/>, weights
/// read in place from the memory-mapped checkpoint and widened to fp32 a block of rows at a time.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    /// <summary>Weight rows widened per block: enough to fill ~64 KiB of L2 so each block is reused by every token.</summary>
    private const int WeightBlockBytes = 64 * 1024;

    /// <summary>Query rows per attention work item (tokens × GQA group); bounds the score scratch to rows × keys.</summary>
    private const int AttentionRowsPerItem = 32;

    private float[] _ropeCos = [];
    private float[] _ropeSin = [];
    private int _ropePositions;
    private int _ropeHalf;

    public CpuBackend(int? threads = null)
    {
        Parallelism = new ParallelOptions { MaxDegreeOfParallelism = threads ?? Environment.ProcessorCount };
    }

    public string Name => "cpu";

    private ParallelOptions Parallelism { get; }

    /// <summary>The CPU backend is the reference: it runs every method.</summary>
    public static bool RunsMethod(AttentionMethod method) => AttentionMethods.All.Any(m => m.Method == method);

    public bool Runs(AttentionMethod method) => RunsMethod(method);

    public IReadOnlyList<string> Supports(ModelConfig config)
    {
        var reasons = new List<string>();
        if (config.HeadDim % 2 != 0)
        {
            reasons.Add($"head_dim {config.HeadDim} is odd; rotary embeddings need an even head dimension");
        }
        return reasons;
    }

    public Weight LoadWeight(WeightSource source) => new CpuWeight(source);

    public Weight RandomWeight(string name, int rows, int cols, float center, float scale, ulong seed)
    {
        long n = (long)rows * cols;
        // Linux overcommits: an allocation that cannot be backed succeeds and the process is killed while filling
        // it, so check against physical memory first.
        long limit = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes * 9 / 10;
        if (Environment.WorkingSet + n * sizeof(float) > limit)
        {
            throw new KascadeException($"not enough memory for the random weight {name} ({n * sizeof(float) >> 20} MiB in fp32, {Environment.WorkingSet >> 20} MiB in use of {limit >> 20} MiB); use a smaller model on the CPU or --device cuda");
        }
        var memory = (float*)System.Runtime.InteropServices.NativeMemory.Alloc((nuint)n, sizeof(float));
        ulong key = RandomWeights.Key(name, seed);
        for (long i = 0; i < n; i++)
        {
            memory[i] = center + scale * RandomWeights.Uniform(key, i);
        }
        return new CpuWeight(new WeightSource(name, DType.F32, rows, cols, (nint)memory), ownsMemory: true);
    }

    public DeviceTensor Allocate(int rows, int cols) => new CpuTensor(new float[checked(rows * cols)], 0, rows, cols);

    public KvCache AllocateKvCache(KvCacheShape shape)
    {
        try
        {
            return new CpuKvCache(shape);
        }
        catch (OutOfMemoryException)
        {
            double gib = 2.0 * shape.Layers * shape.KvHeads * shape.Capacity * shape.HeadDim * sizeof(float) / (1 << 30);
            throw new KascadeException($"not enough memory for a KV cache of {shape.Capacity} positions ({gib:F1} GiB); use a shorter prompt or fewer new tokens");
        }
    }

    public void SetRope(RopeConfig rope, int headDim, int positions)
    {
        (_ropeCos, _ropeSin) = Rope.Tables(rope, headDim, positions);
        _ropePositions = positions;
        _ropeHalf = headDim / 2;
    }

    public void Embed(StepInputs step, Weight table, DeviceTensor output)
    {
        var w = (CpuWeight)table;
        var o = (CpuTensor)output;
        var ids = ((CpuStepInputs)step).Ids;
        for (int t = 0; t < output.Rows; t++)
        {
            if ((uint)ids[t] >= (uint)w.Rows)
            {
                throw new KascadeException($"token id {ids[t]} is outside the vocabulary of {w.Rows}");
            }
            w.RowToSingle(ids[t], o.Row(t));
        }
    }

    public void RmsNorm(DeviceTensor x, Weight weight, int width, float eps, DeviceTensor output)
    {
        var xs = (CpuTensor)x;
        var os = (CpuTensor)output;
        var gamma = ((CpuWeight)weight).Vector ?? throw new ArgumentException("RMSNorm weight must be a vector", nameof(weight));
        int groups = x.Rows * x.Cols / width;
        Parallel.For(0, groups, Parallelism, g =>
        {
            var src = xs.Data.AsSpan(xs.Offset + g * width, width);
            var dst = os.Data.AsSpan(os.Offset + g * width, width);
            float sumSquares = TensorPrimitives.SumOfSquares(src);
            float inv = 1f / MathF.Sqrt(sumSquares / width + eps);
            TensorPrimitives.Multiply(src, inv, dst);
            TensorPrimitives.Multiply(dst, gamma, dst);
        });
    }

    public void MatMul(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output, bool accumulate = false)
    {
        if (!accumulate)
        {
            Multiply(x, weight, bias, output);
            return;
        }
        // output += x · wᵀ + bias, summed in the order of a product followed by Add: the same numbers as the two ops.
        float[] product = ArrayPool<float>.Shared.Rent(output.Rows * output.Cols);
        var p = new CpuTensor(product, 0, output.Rows, output.Cols);
        Multiply(x, weight, bias, p);
        Add(output, p);
        ArrayPool<float>.Shared.Return(product);
    }

    public void MatMul(DeviceTensor x, ReadOnlySpan<Projection> projections)
    {
        foreach (var p in projections)
        {
            Multiply(x, p.Weight, p.Bias, p.Output);
        }
    }

    public void MatMulSwiGlu(DeviceTensor x, Weight gate, Weight up, DeviceTensor output, DeviceTensor workspace)
    {
        Multiply(x, gate, null, output);
        Multiply(x, up, null, workspace);
        SwiGlu(output, workspace);
    }

    public void RopeAppendKv(AttentionArgs args, DeviceTensor q, DeviceTensor k, DeviceTensor v, KvCache cache)
    {
        int start = CpuStepInputs.Start(args.Step, args.StartPosition);
        Rotate(q, args.Heads, args.HeadDim, start);
        Rotate(k, args.KvHeads, args.HeadDim, start);
        AppendKv(cache, args.Layer, start, k, v);
    }

    /// <summary>output <c>[m, n]</c> = x <c>[m, k]</c> · weightᵀ + bias, in blocks of weight rows over the cores.</summary>
    private void Multiply(DeviceTensor x, Weight weight, Weight? bias, DeviceTensor output)
    {
        var xs = (CpuTensor)x;
        var os = (CpuTensor)output;
        var w = (CpuWeight)weight;
        int m = x.Rows, k = x.Cols, n = w.Rows;
        if (k != w.Cols || output.Cols != n || output.Rows != m)
        {
            throw new ArgumentException($"matmul shapes: x [{m}, {k}] · {w.Name} [{n}, {w.Cols}]ᵀ → [{output.Rows}, {output.Cols}]");
        }
        int blockRows = Math.Max(4, WeightBlockBytes / (k * sizeof(float)) / 4 * 4);
        int blocks = (n + blockRows - 1) / blockRows;
        Parallel.For(0, blocks, Parallelism, () => ArrayPool<float>.Shared.Rent(blockRows * k), (block, _, scratch) =>
        {
            int row0 = block * blockRows;
            int rows = Math.Min(blockRows, n - row0);
            fixed (float* xp = &xs.Data[xs.Offset])
            fixed (float* op = &os.Data[os.Offset])
            fixed (float* sp = scratch)
            {
                float* wp;
                if (w.DType == DType.F32)
                {
                    wp = (float*)w.Pointer + (long)row0 * k;
                }
                else
                {
                    w.RowsToSingle(row0, rows, scratch);
                    wp = sp;
                }
                Gemm.MultiplyTransposed(m, rows, k, xp, k, wp, k, op + row0, n);
            }
            return scratch;
        }, scratch => ArrayPool<float>.Shared.Return(scratch));
        if (bias is not null)
        {
            var b = ((CpuWeight)bias).Vector!;
            for (int t = 0; t < m; t++)
            {
                TensorPrimitives.Add(os.Row(t), b, os.Row(t));
            }
        }
    }

    /// <summary>Rotates x <c>[tokens, heads·headDim]</c> in place, row t at position start + t.</summary>
    private void Rotate(DeviceTensor x, int heads, int headDim, int start)
    {
        var xs = (CpuTensor)x;
        int half = headDim / 2;
        if (half != _ropeHalf || start + x.Rows > _ropePositions)
        {
            throw new InvalidOperationException($"rotary tables cover {_ropePositions} positions of head dim {2 * _ropeHalf}; asked for {start + x.Rows} of {headDim}");
        }
        Parallel.For(0, x.Rows, Parallelism, t =>
        {
            var cos = _ropeCos.AsSpan((start + t) * half, half);
            var sin = _ropeSin.AsSpan((start + t) * half, half);
            var row = xs.Row(t);
            Span<float> lo = stackalloc float[half];
            for (int h = 0; h < heads; h++)
            {
                var first = row.Slice(h * headDim, half);
                var second = row.Slice(h * headDim + half, half);
                first.CopyTo(lo);
                // [x1, x2] → [x1·cos − x2·sin, x2·cos + x1·sin]  (HF rotate_half)
                for (int i = 0; i < half; i++)
                {
                    first[i] = lo[i] * cos[i] - second[i] * sin[i];
                    second[i] = second[i] * cos[i] + lo[i] * sin[i];
                }
            }
        });
    }

    /// <summary>gate = silu(gate) · up, elementwise, in place.</summary>
    private void SwiGlu(DeviceTensor gate, DeviceTensor up)
    {
        var g = (CpuTensor)gate;
        var u = (CpuTensor)up;
        Parallel.For(0, gate.Rows, Parallelism, t =>
        {
            var gr = g.Row(t);
            var ur = u.Row(t);
            // silu(g) · up = g · sigmoid(g) · up; the sigmoid goes into a pooled buffer (no per-token allocation).
            float[] sigmoid = ArrayPool<float>.Shared.Rent(gr.Length);
            var s = sigmoid.AsSpan(0, gr.Length);
            TensorPrimitives.Sigmoid(gr, s);
            TensorPrimitives.Multiply(gr, s, gr);
            TensorPrimitives.Multiply(gr, ur, gr);
            ArrayPool<float>.Shared.Return(sigmoid);
        });
    }

    public void Add(DeviceTensor x, DeviceTensor y) => TensorPrimitives.Add(((CpuTensor)x).Span, ((CpuTensor)y).Span, ((CpuTensor)x).Span);

    public void AppendKv(KvCache cache, int layer, int startPosition, DeviceTensor k, DeviceTensor v, StepInputs? step = null)
    {
        startPosition = CpuStepInputs.Start(step, startPosition);
        var c = (CpuKvCache)cache;
        var shape = c.Shape;
        shape.CheckWrite(startPosition, k.Rows);
        var ks = (CpuTensor)k;
        var vs = (CpuTensor)v;
        var keys = c.Keys[layer];
        var valuesT = c.ValuesTransposed[layer];
        int d = shape.HeadDim;
        for (int t = 0; t < k.Rows; t++)
        {
            int pos = startPosition + t;
            var kr = ks.Row(t);
            var vr = vs.Row(t);
            for (int h = 0; h < shape.KvHeads; h++)
            {
                kr.Slice(h * d, d).CopyTo(keys.AsSpan((h * shape.Capacity + pos) * d, d));
                int baseT = h * d * shape.Capacity + pos;
                for (int i = 0; i < d; i++)
                {
                    valuesT[baseT + i * shape.Capacity] = vr[h * d + i];
                }
            }
        }
    }

    public void Attention(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output)
    {
        CpuStepInputs.Start(args.Step, args.StartPosition);
        AttentionRows(args, q, cache, output, keep: null);
    }

    /// <summary>
    /// Causal attention by blocks of query rows: S = Q·Kᵀ and O = P·V through the GEMM kernel, with each row's
    /// softmax probabilities passed to <paramref name="keep"/> first when given (the oracle keeps its Top-k there),
    /// so a per-row selection costs a dense pass instead of a gather from the transposed values.
    /// </summary>
    private void AttentionRows(AttentionArgs args, DeviceTensor q, KvCache cache, DeviceTensor output, SpanAction<float>? keep)
    {
        var c = (CpuKvCache)cache;
        var qs = (CpuTensor)q;
        var os = (CpuTensor)output;
        int d = args.HeadDim, group = args.Heads / args.KvHeads, capacity = c.Shape.Capacity;
        int tokensPerItem = Math.Max(1, AttentionRowsPerItem / group);
        int tokenBlocks = (args.Tokens + tokensPerItem - 1) / tokensPerItem;
        var keys = c.Keys[args.Layer];
        var valuesT = c.ValuesTransposed[args.Layer];
        Parallel.For(0, args.KvHeads * tokenBlocks, Parallelism, item =>
        {
            int kvHead = item / tokenBlocks;
            int t0 = item % tokenBlocks * tokensPerItem;
            int tokens = Math.Min(tokensPerItem, args.Tokens - t0);
            int rows = tokens * group;
            int visible = args.StartPosition + t0 + tokens;
            float[] qBlock = ArrayPool<float>.Shared.Rent(rows * d);
            float[] scores = ArrayPool<float>.Shared.Rent(rows * visible);
            float[] oBlock = ArrayPool<float>.Shared.Rent(rows * d);
            try
            {
                // Rows are (token, head-in-group): the g query heads of one token are adjacent in q.
                for (int t = 0; t < tokens; t++)
                {
                    qs.Row(t0 + t).Slice(kvHead * group * d, group * d).CopyTo(qBlock.AsSpan(t * group * d));
                }
                fixed (float* qp = qBlock)
                fixed (float* sp = scores)
                fixed (float* op = oBlock)
                fixed (float* kp = &keys[(long)kvHead * capacity * d])
                fixed (float* vp = &valuesT[(long)kvHead * d * capacity])
                {
                    Gemm.MultiplyTransposed(rows, visible, d, qp, d, kp, d, sp, visible);
                    for (int r = 0; r < rows; r++)
                    {
                        int keysForRow = args.StartPosition + t0 + r / group + 1;
                        var row = new Span<float>(sp + (long)r * visible, visible);
                        var live = row[..keysForRow];
                        TensorPrimitives.Multiply(live, args.Scale, live);
                        TensorPrimitives.SoftMax(live, live);
                        keep?.Invoke(live);
                        row[keysForRow..].Clear();
                    }
                    Gemm.MultiplyTransposed(rows, d, visible, sp, visible, vp, capacity, op, d);
                }
                for (int t = 0; t < tokens; t++)
                {
                    oBlock.AsSpan(t * group * d, group * d).CopyTo(os.Row(t0 + t).Slice(kvHead * group * d, group * d));
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(qBlock);
                ArrayPool<float>.Shared.Return(scores);
                ArrayPool<float>.Shared.Return(oBlock);
            }
        });
    }

    /// <summary>A callback over a span (probability rows).</summary>
    private delegate void SpanAction<T>(Span<T> values);

    public void Read(DeviceTensor x, Span<float> destination) => ((CpuTensor)x).Span.CopyTo(destination);

    public void Write(DeviceTensor x, ReadOnlySpan<float> values) => values.CopyTo(((CpuTensor)x).Span);

    public void Dispose()
    {
    }
}
