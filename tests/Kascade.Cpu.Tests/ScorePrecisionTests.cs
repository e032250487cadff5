using Kascade.Core;
using Kascade.Cpu;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary><see cref="ScorePrecision.Bf16"/>: anchors rank keys by the scores of the queries' bf16 rounding and attend with the fp32 queries.</summary>
public class ScorePrecisionTests
{
    /// <summary>
    /// Hand-built decode step over 129 keys (k(129) = 128: one key is dropped). Head dim 4, one KV head, q = (1 + 3·2⁻¹⁰,
    /// 1, 0, 0), whose bf16 rounding is (1, 1, 0, 0). Key 0 = (0, 1, 0, 0) scores 1 either way; key 1 = (1, 0, 0, 0) scores
    /// 1 + 3·2⁻¹⁰ exactly and 1 in bf16; the others (0, 2, 0, 0) score 2. Exact scores drop key 0; bf16 scores tie keys 0
    /// and 1, and the tie keeps the lower position, so they drop key 1.
    /// </summary>
    [Theory]
    [InlineData(ScorePrecision.Exact, 0)]
    [InlineData(ScorePrecision.Bf16, 1)]
    public void Bf16_scores_rank_by_the_rounded_query(ScorePrecision precision, int dropped)
    {
        const int d = 4, keys = 129;
        float q0 = 1f + 3f / 1024;
        Assert.Equal(1f, DTypes.RoundToBf16(q0));
        var x = new RandomAttention(d, 1, 1, keys - 1, [[q0, 1, 0, 0]],
            [.. Enumerable.Range(0, keys).Select(j => j switch { 0 => new double[] { 0, 1, 0, 0 }, 1 => [1, 0, 0, 0], _ => [0, 2, 0, 0] })],
            [.. Enumerable.Range(0, keys).Select(j => new double[] { j, 0, 0, 0 })]);

        var (_, rows, _) = x.RunAnchor(new SelectionArgs(10, ScorePooling.PostSoftmax, false, false, Precision: precision));

        Assert.Equal(Enumerable.Range(0, keys).Where(j => j != dropped), rows.Single().Order());
    }

    [Fact]
    public void A_span_rounds_each_value_as_one_value_rounds_and_refuses_a_target_of_another_length()
    {
        // Halfway cases round to even: 1 + 2⁻⁸ (between 1 and 1 + 2⁻⁷) to 1, 1 + 3·2⁻⁸ to 1 + 2⁻⁶.
        float[] values = [1f + 1f / 256, 1f + 3f / 256, -2.75f, 1e-40f, float.NaN, float.PositiveInfinity];
        var rounded = new float[values.Length];
        DTypes.RoundToBf16(values, rounded);
        Assert.Equal(values.Select(DTypes.RoundToBf16), rounded);
        Assert.Equal(1f, rounded[0]);
        Assert.Equal(1f + 1f / 64, rounded[1]);
        DTypes.RoundToBf16(values, values);
        Assert.Equal(rounded, values);
        Assert.Throws<ArgumentException>(() => DTypes.RoundToBf16(values, new float[2]));
    }

    /// <summary>
    /// On random chunks (prefill tiles and a decode step, GQA), the bf16 plan is the exact plan of the rounded queries,
    /// and the anchor's output is the sparse attention of the fp32 queries over that plan.
    /// </summary>
    [Theory]
    [InlineData(64, 2, 0, 300)]
    [InlineData(128, 4, 290, 45)]
    [InlineData(64, 8, 333, 1)]
    public void Bf16_plans_are_the_exact_plans_of_the_rounded_queries(int headDim, int group, int start, int tokens)
    {
        var x = RandomAttention.Make(headDim, group, kvHeads: 2, start, tokens, seed: 7 + start);
        var rounded = x with { Q = [.. x.Q.Select(row => row.Select(v => (double)DTypes.RoundToBf16((float)v)).ToArray())] };
        var selection = new SelectionArgs(10, ScorePooling.PostSoftmax, false, false);

        var (plan, rows, output) = x.RunAnchor(selection with { Precision = ScorePrecision.Bf16 });
        var (_, roundedRows, _) = rounded.RunAnchor(selection);
        var (_, exactRows, _) = x.RunAnchor(selection);

        Assert.Equal(roundedRows, rows);
        // The rounding moves some selection (else this case could not tell the precisions apart).
        Assert.NotEqual(exactRows, rows);
        Assert.Equal(x.RunReuse(plan, [0, 1]), output);
    }
}
