using Kascade.Core;
using Kascade.Cpu;
using Xunit;

namespace Kascade.Cpu.Tests;

/// <summary><see cref="IBackend.WritePlan"/>, which lets the parity checks attend over another backend's plan.</summary>
public class WritePlanTests
{
    [Fact]
    public void A_written_plan_reads_back_and_serves_its_chunk()
    {
        using var backend = new CpuBackend();
        using var plan = backend.AllocatePlan(units: 2, selectors: 2, capacity: 3);
        var args = new AttentionArgs(0, 40, 10, 2, 2, 4, 0.5f);
        int[] counts = [3, 0, 1, 2];
        int[] indices = [0, 9, 49, 7, 7, 7, 5, 0, 0, 1, 2, 0];

        backend.WritePlan(args, plan, counts, indices);

        var (readCounts, readIndices) = (new int[4], new int[12]);
        backend.ReadPlan(plan, readCounts, readIndices);
        Assert.Equal(counts, readCounts);
        Assert.Equal([0, 9, 49, 5, 1, 2], new[] { readIndices[..3], readIndices[6..7], readIndices[9..11] }.SelectMany(r => r));
        plan.CheckServes(args);
        Assert.Throws<InvalidOperationException>(() => plan.CheckServes(args with { StartPosition = 11 }));
    }

    [Theory]
    [InlineData(4, 0, "lists 4 positions")]      // a count past the capacity
    [InlineData(1, 50, "position 50, outside")]  // past the chunk's 50 keys
    [InlineData(1, -1, "position -1, outside")]
    public void A_plan_that_does_not_fit_is_refused(int count, int position, string message)
    {
        using var backend = new CpuBackend();
        using var plan = backend.AllocatePlan(units: 1, selectors: 1, capacity: 3);
        var args = new AttentionArgs(0, 40, 10, 1, 1, 4, 0.5f);
        var e = Assert.Throws<ArgumentException>(() => backend.WritePlan(args, plan, [count], [position, 0, 0]));
        Assert.Contains(message, e.Message);
    }
}
