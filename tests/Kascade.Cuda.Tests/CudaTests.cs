using Kascade.Core;
using Kascade.Cpu;
using Kascade.Cuda.Runtime;
using Kascade.Runtime;
using Kascade.Runtime.Diagnostics;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cuda.Tests;

/// <summary>A fact that runs only where a CUDA device is usable; elsewhere it is skipped with the reason.</summary>
public sealed class GpuFactAttribute : FactAttribute
{
    public GpuFactAttribute()
    {
        if (CudaDevice.Probe() is { } reason)
        {
            Skip = "no GPU: " + reason;
        }
    }
}

/// <summary>A fact for machines without a GPU (what users without one see).</summary>
public sealed class NoGpuFactAttribute : FactAttribute
{
    public NoGpuFactAttribute()
    {
        if (CudaDevice.Probe() is null)
        {
            Skip = "a GPU is present";
        }
    }
}

/// <summary>
/// The CUDA backend against the CPU backend, op by op over shape grids and on the instrument model's golden file.
/// The same checks run without the .NET SDK as <c>kascade test-backend --device cuda --model DIR</c>.
/// </summary>
public class CudaTests
{
    [GpuFact]
    public void Every_op_matches_the_cpu_backend()
    {
        using var cpu = new CpuBackend();
        using var gpu = new CudaBackend();
        var failures = BackendParity.Run(cpu, gpu).Where(r => !r.Passed).ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [GpuFact]
    public void Batched_decode_matches_per_sequence_cpu_decode()
    {
        using var cpu = new CpuBackend();
        using var gpu = new CudaBackend();
        foreach (var (batch, keys, group) in new[] { (5, 700, 4), (64, 300, 8), (3, 2000, 1) })
        {
            double error = BatchedDecodeCheck.MaxError(cpu, gpu, batch, keys, 8 * group, 8, 128);
            Assert.True(error <= 1e-3, $"batch {batch}, {keys} keys, group {group}: max error {error}");
        }
    }

    [GpuFact]
    public void Instrument_model_replays_its_golden_file_on_the_gpu()
    {
        using var gpu = new CudaBackend();
        using var model = ModelDirectory.Open(TestPaths.InstrumentModel, gpu);
        var failures = GoldenCheck.Run(model).Where(r => !r.Passed).ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [NoGpuFact]
    public void Without_a_gpu_the_backend_says_so()
    {
        var e = Assert.Throws<CudaException>(() => new CudaBackend());
        Assert.Contains("CUDA", e.Message);
        Assert.IsAssignableFrom<KascadeException>(e);
    }
}

public class AttentionLaunchTests
{
    [Theory]
    [InlineData(1, 32, 8, 8192, 132)]
    [InlineData(1, 4, 2, 130, 132)]
    [InlineData(3, 32, 8, 131072, 132)]
    [InlineData(1, 8, 1, 1, 132)]
    public void Few_queries_split_the_keys_into_non_empty_splits_that_cover_them(int tokens, int heads, int kvHeads, int keys, int sms)
    {
        var plan = Heuristics.AttentionLaunch.Choose(tokens, heads, kvHeads, keys, sms);
        Assert.True(plan.SplitKv);
        Assert.True(plan.Splits * plan.KeysPerSplit >= keys, "splits cover every key");
        Assert.True((plan.Splits - 1) * plan.KeysPerSplit < keys, "no empty split");
        Assert.True(plan.KeysPerSplit >= Math.Min(keys, Heuristics.AttentionLaunch.MinKeysPerSplit));
    }

    [Fact]
    public void Many_queries_run_one_warp_per_query_head() =>
        Assert.False(Heuristics.AttentionLaunch.Choose(512, 32, 8, 8192, 132).SplitKv);
}
