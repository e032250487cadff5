using Kascade.Core;
using Kascade.Cpu;
using Xunit;

namespace Kascade.Cli.Tests;

/// <summary>
/// The benchmarks' cache (<see cref="AttentionBenchmark.Fill"/>): one random chunk of 4096 keys repeated, each copy
/// rotated at its positions, so that no two positions score alike — a Top-k row with 32-fold ties at 128k is unlike a
/// model's (session 21). Checked on the CPU backend, through the attention probabilities a query gets.
/// </summary>
public class BenchmarkCacheTests
{
    [Fact]
    public void Every_copy_of_the_chunk_scores_apart()
    {
        const int kvHeads = 2, heads = 4, headDim = 64, context = 3 * 4096;
        using var backend = new CpuBackend();
        using var cache = backend.AllocateKvCache(new KvCacheShape(1, kvHeads, headDim, context));
        var rng = new Random(5);
        AttentionBenchmark.Fill(backend, cache, 1, context, rng);
        using var q = backend.Upload(AttentionBenchmark.RandomValues(rng, heads * headDim), 1, heads * headDim);
        using var probabilities = backend.Allocate(heads, context);
        backend.AttentionProbabilities(new AttentionArgs(0, 1, context - 1, heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim)), q, cache, probabilities);
        var p = new float[heads * context];
        backend.Read(probabilities, p);

        for (int h = 0; h < heads; h++)
        {
            var row = p.AsSpan(h * context, context);
            Assert.All(row.ToArray(), x => Assert.True(float.IsFinite(x) && x > 0));
            // A key and its copies one and two chunks on: distinct scores (repeated, they were equal to the last bit).
            int equal = 0;
            for (int j = 0; j < 4096; j++)
            {
                equal += row[j] == row[j + 4096] || row[j + 4096] == row[j + 8192] ? 1 : 0;
            }
            Assert.True(equal < 8, $"head {h}: {equal} of 4096 keys score as their copy does");
        }
    }
}
