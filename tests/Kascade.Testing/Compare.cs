using Xunit;

namespace Kascade.Testing;

public static class Compare
{
    /// <summary>Asserts |a − b| ≤ abs + rel·|b| elementwise, reporting the worst index and values.</summary>
    public static void Close(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double abs, double rel, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: length {actual.Length}, expected {expected.Length}");
        int worst = -1;
        double worstExcess = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs((double)expected[i] - actual[i]);
            double excess = err - (abs + rel * Math.Abs(expected[i]));
            if (excess > worstExcess || double.IsNaN(actual[i]))
            {
                worst = i;
                worstExcess = double.IsNaN(actual[i]) ? double.PositiveInfinity : excess;
            }
        }
        Assert.True(worst < 0, worst < 0 ? "" : $"{what}: index {worst} is {actual[worst]}, expected {expected[worst]} (|diff| {Math.Abs(expected[worst] - actual[worst]):G4}, allowed {abs + rel * Math.Abs(expected[worst]):G4})");
    }

    public static double MaxAbsDiff(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double m = 0;
        for (int i = 0; i < a.Length; i++)
        {
            m = Math.Max(m, Math.Abs((double)a[i] - b[i]));
        }
        return m;
    }
}
