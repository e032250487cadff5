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
    private const int H100SharedMemory = 228 << 10;

    [Theory]
    [InlineData(1, 4, 8, 1, 8192, 132)]
    [InlineData(1, 2, 2, 1, 130, 132)]
    [InlineData(3, 4, 8, 1, 131072, 132)]
    [InlineData(1, 8, 1, 1, 1, 132)]
    [InlineData(1, 4, 8, 64, 8192, 132)]
    [InlineData(512, 4, 8, 1, 32768, 132)]
    public void Few_blocks_split_the_keys_into_whole_tiles_that_cover_them_without_an_empty_split(int tokens, int group, int kvHeads, int sequences, int keys, int sms)
    {
        var plan = Heuristics.AttentionLaunch.Choose(tokens, group, kvHeads, sequences, keys, 128, sms, H100SharedMemory);
        Assert.True(plan.Splits * plan.KeysPerSplit >= keys, "splits cover every key");
        Assert.True((plan.Splits - 1) * plan.KeysPerSplit < keys, "no empty split");
        Assert.Equal(0, plan.KeysPerSplit % Heuristics.AttentionLaunch.KeyTile);
        Assert.True(plan.RowTiles * 16 * plan.Warps >= tokens * group, "row tiles cover every row");
        Assert.True((plan.RowTiles - 1) * 16 * plan.Warps < tokens * group, "no empty row tile");
    }

    [Fact]
    public void Decode_uses_one_warp_and_splits_the_keys_to_fill_the_gpu()
    {
        var plan = Heuristics.AttentionLaunch.Choose(1, 4, 8, 1, 131072, 128, 132, H100SharedMemory);
        Assert.Equal(1, plan.Warps);
        int resident = H100SharedMemory / (Heuristics.AttentionLaunchPlan.SharedBytes(128) + 1024);
        // Whole-tile splits may come out a little fewer than the resident blocks, never far off.
        Assert.InRange(plan.Splits * 8, 132 * resident * 9 / 10, 132 * resident + 8);
    }

    [Fact]
    public void A_batch_takes_the_split_count_whose_last_wave_is_fullest()
    {
        // 512 blocks on 132 × 6 slots: 1 split = 1 wave of 8k keys, 2 = 2 waves of 4k, 3 = 2 waves of 2.7k.
        var plan = Heuristics.AttentionLaunch.Choose(1, 4, 8, 64, 8192, 128, 132, H100SharedMemory);
        Assert.Equal(3, plan.Splits);
    }

    [Fact]
    public void Long_prefill_uses_128_row_tiles_and_no_split()
    {
        var plan = Heuristics.AttentionLaunch.Choose(8192, 4, 8, 1, 8192, 128, 132, H100SharedMemory);
        Assert.Equal(new Heuristics.AttentionLaunchPlan(8, 8192 * 4 / 128, 1, 8192), plan);
    }
}
