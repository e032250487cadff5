using Kascade.Core;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary><see cref="Ranking.TopK"/> against a full sort, with many ties and infinities, over sizes and budgets.</summary>
public class RankingTests
{
    [Theory]
    [InlineData(1, 1)]
    [InlineData(7, 3)]
    [InlineData(100, 10)]
    [InlineData(100, 100)]
    [InlineData(100, 150)]
    [InlineData(1000, 1)]
    [InlineData(5000, 500)]
    public void TopK_equals_the_first_k_of_a_full_sort(int n, int k)
    {
        for (int seed = 0; seed < 5; seed++)
        {
            var rng = new Random(seed * 31 + n);
            // Few distinct values (ties everywhere), some −∞ (masked keys), or all distinct.
            var scores = Enumerable.Range(0, n).Select(_ => seed switch
            {
                0 => (float)rng.Next(4),
                1 => rng.Next(10) == 0 ? float.NegativeInfinity : (float)rng.Next(50),
                2 => 1f,
                _ => (float)rng.NextDouble(),
            }).ToArray();
            var expected = scores.Select((s, i) => (s, i)).OrderByDescending(x => x.s).ThenBy(x => x.i).Take(k).Select(x => x.i).ToArray();
            Assert.Equal(expected, Ranking.TopK(scores, k));
        }
    }

    [Fact]
    public void TopK_of_nothing_is_empty()
    {
        Assert.Empty(Ranking.TopK([], 3));
        Assert.Empty(Ranking.TopK([1f, 2f], 0));
    }
}
