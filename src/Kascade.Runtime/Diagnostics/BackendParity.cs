using Kascade.Core;

namespace Kascade.Runtime.Diagnostics;

/// <summary>
/// One op case of a parity run: the largest error of the candidate against the reference, and the bound; or a case the
/// candidate does not run (<see cref="NotRun"/>), listed so that a grid never shrinks unseen.
/// </summary>
public sealed record ParityResult(string Op, string Case, double MaxError, double Allowed)
{
    /// <summary>Why the candidate did not run the case; null when it ran.</summary>
    public string? NotRun { get; init; }

    /// <summary>Ran and within the bound, or not run (which fails nothing: <see cref="NotRun"/> says why).</summary>
    public bool Passed => NotRun is not null || MaxError <= Allowed;

    /// <summary>A case the candidate does not run, and why.</summary>
    public static ParityResult Skipped(string op, string @case, string reason) => new(op, @case, 0, 0) { NotRun = reason };
}

/// <summary>
/// Every op of <see cref="IBackend"/> run on a reference backend (the CPU) and a candidate (the GPU) with the same
/// inputs over shape grids (llama.cpp's test-backend-ops). Inputs the candidate stores in bf16 (weights, GEMM
/// inputs, KV cache) are rounded to bf16 first, so the comparison measures the kernels, not the storage format.
/// Used by the GPU tests and by <c>kascade test-backend</c> on machines without the .NET SDK.
/// </summary>
public static unsafe partial class BackendParity
{
    /// <summary>fp32 kernels against fp32 kernels: different summation order and exp implementations.</summary>
    private const double Absolute = 1e-3;

    private const double Relative = 1e-3;

    /// <summary>
    /// Attention on tensor cores (prefill and decode alike) rounds the scaled queries and the softmax probabilities to
    /// bf16 like FlashAttention: 2⁻⁸ relative on outputs of magnitude ≤ 1, so twice that as the bound.
    /// </summary>
    internal const double TensorCoreBound = 8e-3;

    /// <summary>
    /// The select/attend grids alone (<see cref="Run"/> includes them): to check a backend again in another of its
    /// configurations, e.g. the GPU's fast selection kernels. The same inputs as in <see cref="Run"/>.
    /// </summary>
    public static IReadOnlyList<ParityResult> RunSelection(IBackend reference, IBackend candidate, Action<ParityResult>? onResult = null)
    {
        var results = new List<ParityResult>();
        void Record(ParityResult r)
        {
            results.Add(r);
            onResult?.Invoke(r);
        }
        SelectionCases(reference, candidate, new Random(101), Record);
        BaselineCases(reference, candidate, new Random(102), Record);
        return results;
    }

    /// <summary>Dense attention over head dims 32–256, GQA groups 1–8, decode steps and prefill chunks that start and end inside tiles.</summary>
    private static void AttentionCases(IBackend reference, IBackend candidate, Random rng, Action<ParityResult> record)
    {
        foreach (int headDim in new[] { 64, 128 })
        {
            foreach (int group in new[] { 1, 2, 4, 8 })
            {
                foreach (var (start, tokens) in new[] { (0, 1), (0, 37), (50, 1), (45, 20), (0, 100), (0, 300), (500, 300), (0, 1000), (7000, 64), (1000, 1), (3000, 3), (20000, 1) })
                {
                    record(AttentionCase(reference, candidate, rng, headDim, group, start, tokens));
                }
            }
        }
        // Head dims the kernels handle through other paths: 32 and 96 (tensor cores, rows not a power of two chunks
        // for 96), 256 (the reference kernel).
        foreach (int headDim in new[] { 32, 96, 256 })
        {
            foreach (var (start, tokens) in new[] { (0, 37), (45, 20), (0, 300), (1000, 1), (3000, 3) })
            {
                record(AttentionCase(reference, candidate, rng, headDim, 4, start, tokens));
            }
        }
    }

    public static IReadOnlyList<ParityResult> Run(IBackend reference, IBackend candidate, Action<ParityResult>? onResult = null)
    {
        var results = new List<ParityResult>();
        void Record(ParityResult r)
        {
            results.Add(r);
            onResult?.Invoke(r);
        }
        var rng = new Random(1);
        foreach (var (vocab, hidden, tokens) in new[] { (100, 96, 7), (8192, 256, 33) })
        {
            var table = Bf16(Random(rng, vocab * hidden, 1));
            var ids = Enumerable.Range(0, tokens).Select(_ => rng.Next(vocab)).ToArray();
            Record(Compare("embed", $"vocab {vocab} hidden {hidden} tokens {tokens}", reference, candidate, (b, w) =>
            {
                var o = b.Allocate(tokens, hidden);
                var step = b.AllocateStepInputs(tokens);
                b.WriteStep(step, ids, 0);
                b.Embed(step, w[0], o);
                return o;
            }, [("table", table, vocab, hidden)]));
        }
        foreach (var (rows, cols, width) in new[] { (5, 4096, 4096), (3, 8 * 128, 128), (9, 256, 64) })
        {
            var x = Random(rng, rows * cols, 3);
            var gamma = Random(rng, width, 1);
            Record(Compare("rmsnorm", $"{rows}x{cols} groups of {width}", reference, candidate, (b, w) =>
            {
                var (xt, o) = (b.Upload(x, rows, cols), b.Allocate(rows, cols));
                b.RmsNorm(xt, w[0], width, 1e-5f, o);
                return o;
            }, [("gamma", gamma, 1, width)]));
        }
        {
            // Random weights come from the same counter-based generator on every backend: RMSNorm of ones returns them.
            const int width = 300;
            var ones = Enumerable.Repeat(1f, width).ToArray();
            Record(Compare("random weight", $"vector of {width}", reference, candidate, (b, _) =>
            {
                var o = b.Allocate(1, width);
                b.RmsNorm(b.Upload(ones, 1, width), b.RandomWeight("gamma", 1, width, 1f, 0.1f, 7), width, 0f, o);
                return o;
            }, []));
        }
        LayerOpCases(reference, candidate, rng, Record);
        {
            const int rows = 17, cols = 1000;
            var g = Random(rng, rows * cols, 4);
            var u = Random(rng, rows * cols, 2);
            Record(Compare("add", $"{rows}x{cols}", reference, candidate, (b, _) =>
            {
                var gt = b.Upload(g, rows, cols);
                b.Add(gt, b.Upload(u, rows, cols));
                return gt;
            }, []));
        }
        AttentionCases(reference, candidate, rng, Record);
        SelectionCases(reference, candidate, new Random(101), Record);
        BaselineCases(reference, candidate, new Random(102), Record);
        foreach (int headDim in new[] { 64, 128 })
        {
            Record(ReadKeysCase(reference, candidate, rng, headDim));
        }
        var samplingGrid = new[]
        {
            new SamplingOptions(),
            new SamplingOptions(Temperature: 1f, Seed: 1),
            new SamplingOptions(Temperature: 0.7f, TopK: 50, Seed: 2),
            new SamplingOptions(Temperature: 1f, TopP: 0.9f, Seed: 3),
            new SamplingOptions(Temperature: 1.3f, TopP: 0.95f, TopK: 1000, Seed: 4),
        };
        foreach (int vocab in new[] { 1000, 32003, 128256 })
        {
            foreach (var options in samplingGrid)
            {
                foreach (var logits in Enum.GetValues<SampledLogits>())
                {
                    Record(SamplingCase(reference, candidate, rng, vocab, options, logits));
                }
            }
        }
        if (reference is IBatchedDecode batchedReference && candidate is IBatchedDecode batchedCandidate)
        {
            BatchedCases(batchedReference, batchedCandidate, new Random(103), Record);
            foreach (var r in BatchedStepCheck.Run(batchedReference, batchedCandidate))
            {
                Record(r);
            }
        }
        foreach (var r in DecodeReplayCheck.Run(candidate))
        {
            Record(r);
        }
        return results;
    }

    /// <summary>The logits a sampling case draws from.</summary>
    private enum SampledLogits
    {
        /// <summary>Uniform in [−8, 8].</summary>
        Random,

        /// <summary>Multiples of ½: many ties at every threshold.</summary>
        Tied,

        /// <summary>A NaN in the first row, +∞ in the second, −∞ in the third: every row gives <see cref="Sampling.NonFinite"/>.</summary>
        NonFinite,
    }

    /// <summary>Sample over 3 rows of logits, 4 times so the draw count moves: the number of tokens that differ from the reference's.</summary>
    private static ParityResult SamplingCase(IBackend reference, IBackend candidate, Random rng, int vocab, SamplingOptions options, SampledLogits kind)
    {
        const int rows = 3, draws = 4;
        var values = Random(rng, rows * vocab, 8);
        if (kind == SampledLogits.Tied)
        {
            values = values.Select(v => MathF.Round(2 * v) / 2).ToArray();
        }
        if (kind == SampledLogits.NonFinite)
        {
            values[rng.Next(vocab)] = float.NaN;
            values[vocab + rng.Next(vocab)] = float.PositiveInfinity;
            values[2 * vocab + rng.Next(vocab)] = float.NegativeInfinity;
        }
        int[] Run(IBackend b)
        {
            using var logits = b.Upload(values, rows, vocab);
            using var step = b.AllocateStepInputs(rows);
            var tokens = new int[rows * draws];
            for (int d = 0; d < draws; d++)
            {
                b.Sample(logits, options, step);
                b.ReadTokens(step, tokens.AsSpan(d * rows, rows));
            }
            return tokens;
        }
        var expected = Run(reference);
        var actual = Run(candidate);
        string label = kind switch { SampledLogits.Tied => ", tied logits", SampledLogits.NonFinite => ", NaN/±∞ rows", _ => "" };
        return new ParityResult("sample", $"vocab {vocab} {options.Label}{label}", expected.Zip(actual).Count(p => p.First != p.Second), 0);
    }

    /// <summary>Keys appended in two chunks, read back to the host.</summary>
    private static ParityResult ReadKeysCase(IBackend reference, IBackend candidate, Random rng, int headDim)
    {
        const int kvHeads = 2, first = 300, total = 1000;
        var k = Bf16(Random(rng, total * kvHeads * headDim, 1));
        return Compare("append + read keys", $"d {headDim} keys {total}", reference, candidate, (b, _) =>
        {
            var cache = b.AllocateKvCache(new KvCacheShape(2, kvHeads, headDim, total));
            var keys = b.Upload(k, total, kvHeads * headDim);
            b.AppendKv(cache, 1, 0, keys.Take(first), keys.Take(first));
            b.AppendKv(cache, 1, first, keys.Slice(first, total - first), keys.Slice(first, total - first));
            var read = new float[kvHeads * total * headDim];
            b.ReadKeys(cache, 1, total, read);
            return b.Upload(read, 1, read.Length);
        }, []);
    }

    /// <summary>Random bf16-exact keys and values of 2 KV heads for <c>start + tokens</c> positions, and fp32 queries.</summary>
    private static (float[] K, float[] V, float[] Q, int KvHeads, int Heads, int Total) AttentionInputs(Random rng, int headDim, int group, int start, int tokens)
    {
        const int kvHeads = 2;
        int heads = kvHeads * group, total = start + tokens;
        var k = Bf16(Random(rng, total * kvHeads * headDim, 1));
        var v = Bf16(Random(rng, total * kvHeads * headDim, 1));
        return (k, v, Random(rng, tokens * heads * headDim, 2), kvHeads, heads, total);
    }

    private static ParityResult AttentionCase(IBackend reference, IBackend candidate, Random rng, int headDim, int group, int start, int tokens)
    {
        var (k, v, q, kvHeads, heads, total) = AttentionInputs(rng, headDim, group, start, tokens);
        float scale = 1f / MathF.Sqrt(headDim);
        return Compare("attention", $"d {headDim} group {group} keys {total} queries {tokens}", reference, candidate, TensorCoreBound, (b, _) =>
        {
            var cache = b.AllocateKvCache(new KvCacheShape(1, kvHeads, headDim, total));
            b.AppendKv(cache, 0, 0, b.Upload(k, total, kvHeads * headDim), b.Upload(v, total, kvHeads * headDim));
            var o = b.Allocate(tokens, heads * headDim);
            b.Attention(new AttentionArgs(0, tokens, start, heads, kvHeads, headDim, scale), b.Upload(q, tokens, heads * headDim), cache, o);
            return o;
        }, Array.Empty<(string, float[], int, int)>());
    }

    /// <summary>Runs <paramref name="op"/> on both backends with the same weights (stored as bf16 bits) and compares the outputs.</summary>
    private static ParityResult Compare(string name, string shape, IBackend reference, IBackend candidate, Func<IBackend, Weight[], DeviceTensor> op, (string Name, float[] Values, int Rows, int Cols)[] weights) =>
        Compare(name, shape, reference, candidate, Absolute, op, weights);

    private static ParityResult Compare(string name, string shape, IBackend reference, IBackend candidate, double absolute, Func<IBackend, Weight[], DeviceTensor> op, (string Name, float[] Values, int Rows, int Cols)[] weights)
    {
        float[] Run(IBackend b)
        {
            var bf16 = weights.Select(w => w.Rows == 1 ? null : w.Values.Select(DTypes.SingleToBf16).ToArray()).ToArray();
            var handles = new List<System.Runtime.InteropServices.GCHandle>();
            try
            {
                var loaded = weights.Select((w, i) =>
                {
                    object data = bf16[i] is { } bits ? bits : w.Values;
                    var h = System.Runtime.InteropServices.GCHandle.Alloc(data, System.Runtime.InteropServices.GCHandleType.Pinned);
                    handles.Add(h);
                    return b.LoadWeight(new WeightSource(w.Name, bf16[i] is null ? DType.F32 : DType.BF16, w.Rows, w.Cols, h.AddrOfPinnedObject()));
                }).ToArray();
                var output = op(b, loaded);
                var result = new float[output.Rows * output.Cols];
                b.Read(output, result);
                return result;
            }
            finally
            {
                handles.ForEach(h => h.Free());
            }
        }
        return CompareValues(name, shape, Run(reference), Run(candidate), absolute);
    }

    /// <summary>The element closest to (or furthest past) its bound: absolute plus a proportional share of the expected value.</summary>
    internal static ParityResult CompareValues(string name, string shape, float[] expected, float[] actual, double absolute)
    {
        double relative = absolute / Absolute * Relative;
        double worstExcess = double.NegativeInfinity, error = 0, allowed = absolute;
        for (int i = 0; i < expected.Length; i++)
        {
            double bound = absolute + relative * Math.Abs(expected[i]);
            double diff = double.IsNaN(actual[i]) ? double.PositiveInfinity : Math.Abs((double)expected[i] - actual[i]);
            if (diff - bound > worstExcess)
            {
                (worstExcess, error, allowed) = (diff - bound, diff, bound);
            }
        }
        return new ParityResult(name, shape, error, allowed);
    }

    internal static float[] Random(Random rng, int n, float scale) =>
        Enumerable.Range(0, n).Select(_ => scale * (float)(rng.NextDouble() * 2 - 1)).ToArray();

    /// <summary>Rounds to bf16 and back, so both backends start from values a bf16 store holds exactly.</summary>
    internal static float[] Bf16(float[] values)
    {
        var rounded = new float[values.Length];
        DTypes.RoundToBf16(values, rounded);
        return rounded;
    }
}
