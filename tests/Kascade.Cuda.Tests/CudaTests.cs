using Kascade.Core;
using Kascade.Cpu;
using Kascade.Cuda.Heuristics;
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
        var failures = BackendParity.Run(cpu, gpu).Where(r => !r.Passed || r.NotRun is not null).ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [GpuFact]
    public void Instrument_model_replays_its_golden_file_on_the_gpu()
    {
        using var gpu = new CudaBackend();
        using var model = ModelDirectory.Open(TestPaths.InstrumentModel, gpu);
        var failures = GoldenCheck.Run(model).Where(r => !r.Passed).ToList();
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [GpuFact]
    public void Every_method_the_gpu_runs_generates_the_cpus_tokens()
    {
        using var cpu = ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend());
        using var gpu = ModelDirectory.Open(TestPaths.InstrumentModel, new CudaBackend());
        var results = MethodParity.Run(cpu, gpu);
        Assert.Contains(results, r => r.Case.StartsWith("quest", StringComparison.Ordinal));
        Assert.Contains(results, r => r.Case.StartsWith("kascade", StringComparison.Ordinal));
        Assert.Contains(results, r => r.Case.StartsWith("oracle-topk", StringComparison.Ordinal));
        var failures = results.Where(r => !r.Passed || r.NotRun is not null).ToList();
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
    private const int Resident = 3;

    [Theory]
    [InlineData(1, 4, 8, 1, 8192, 132)]
    [InlineData(1, 2, 2, 1, 130, 132)]
    [InlineData(3, 4, 8, 1, 131072, 132)]
    [InlineData(1, 8, 1, 1, 1, 132)]
    [InlineData(1, 4, 8, 64, 8192, 132)]
    [InlineData(512, 4, 8, 1, 32768, 132)]
    [InlineData(5, 32, 1, 1, 4000, 132)]
    public void Few_blocks_split_the_keys_into_whole_tiles_that_cover_them_without_an_empty_split(int tokens, int group, int kvHeads, int sequences, int keys, int sms)
    {
        var kernel = AttentionKernel.For(tokens * group, 128, hopper: false);
        var plan = AttentionLaunch.Choose(kernel, tokens, group, kvHeads, sequences, keys, sms, Resident);
        Assert.True(plan.Splits * plan.KeysPerSplit >= keys, "splits cover every key");
        Assert.True((plan.Splits - 1) * plan.KeysPerSplit < keys, "no empty split");
        Assert.Equal(0, plan.KeysPerSplit % kernel.Keys);
        Assert.True(plan.RowTiles * kernel.BlockRows >= tokens * group, "row tiles cover every row");
        Assert.True((plan.RowTiles - 1) * kernel.BlockRows < tokens * group, "no empty row tile");
    }

    [Fact]
    public void Every_header_a_kernel_includes_is_handed_to_nvrtc()
    {
        // NVRTC sees only the headers KernelCompiler passes it; one left out fails only on a GPU, at run time.
        var assembly = typeof(KernelCompiler).Assembly;
        var included = assembly.GetManifestResourceNames()
            .Where(n => n.StartsWith("Kascade.Cuda.Kernels.", StringComparison.Ordinal))
            .SelectMany(n =>
            {
                using var reader = new StreamReader(assembly.GetManifestResourceStream(n)!);
                return System.Text.RegularExpressions.Regex.Matches(reader.ReadToEnd(), "^#include \"([^\"]+)\"", System.Text.RegularExpressions.RegexOptions.Multiline)
                    .Select(m => m.Groups[1].Value).ToList();
            })
            .Distinct().ToList();
        Assert.Contains("topk_digits.cuh", included);
        Assert.All(included, header => Assert.Contains(header, KernelCompiler.Headers));
    }

    [Fact]
    public void Decode_uses_the_decode_kernel_and_splits_the_keys_to_fill_one_wave()
    {
        var plan = AttentionLaunch.Choose(AttentionKernel.For(4, 128, hopper: true), 1, 4, 8, 1, 131072, 132, Resident);
        Assert.Equal(AttentionKernel.Decode, plan.Kernel);
        Assert.Equal(AttentionKernelKind.Decode, plan.Kernel.Kind);
        // Whole-tile splits may come out a little fewer than the resident blocks, never more.
        Assert.InRange(plan.Splits * 8, 132 * Resident * 9 / 10, 132 * Resident);
    }

    [Fact]
    public void A_batch_takes_the_split_count_whose_last_wave_is_fullest()
    {
        // 512 blocks on 132 × 6 slots: 1 split = 1 wave of 8k keys, 2 = 2 waves of 4k, 3 = 2 waves of 2.7k.
        var plan = AttentionLaunch.Choose(AttentionKernel.Decode, 1, 4, 8, 64, 8192, 132, 6);
        Assert.Equal(3, plan.Splits);
    }

    [Theory]
    [InlineData(32768, 32768)]                                   // a whole causal prefill (two splits before session 24)
    [InlineData(131072, 131072)]
    [InlineData(4096, 131072)]                                   // the last 4,096-token chunk of a 128k prompt (five)
    public void A_prefill_launch_whose_blocks_fill_every_slot_is_not_split(int tokens, int keys)
    {
        // The Hopper prefill kernel at head dim 128: one block a multiprocessor.
        var kernel = AttentionKernel.For(tokens * 4, 128, hopper: true);
        var plan = AttentionLaunch.Choose(kernel, tokens, 4, 8, 1, keys, 132, residentBlocks: 1);
        Assert.True(plan.RowTiles * 8 >= 132, "the grid fills the slots");
        Assert.Equal(1, plan.Splits);
    }

    [Fact]
    public void A_decode_batch_of_several_waves_still_splits_to_fill_its_last_wave()
    {
        // 64 sequences × 8 KV heads = 512 blocks on 132 slots (3.9 waves); nine splits measured 1.5% faster (session 24).
        var plan = AttentionLaunch.Choose(AttentionKernel.Decode, 1, 4, 8, 64, 131072, 132, residentBlocks: 1);
        Assert.True(plan.Splits > 1);
    }

    [Fact]
    public void A_short_chunk_at_a_long_context_still_splits_to_fill_the_slots()
    {
        // 128 tokens × group 4 = 4 row tiles × 8 KV heads = 32 blocks on 132 slots.
        var plan = AttentionLaunch.Choose(AttentionKernel.For(512, 128, hopper: true), 128, 4, 8, 1, 131072, 132, residentBlocks: 1);
        Assert.InRange(plan.Splits * 32, 100, 132);
    }

    [Fact]
    public void Long_prefill_uses_128_row_tiles_and_no_split()
    {
        var plan = AttentionLaunch.Choose(AttentionKernel.For(8192 * 4, 128, hopper: false), 8192, 4, 8, 1, 8192, 132, 2);
        Assert.Equal(new AttentionLaunchPlan(AttentionKernel.Prefill, 8192 * 4 / 128, 1, 8192), plan);
    }

    [Theory]
    [InlineData(64, true, true)]
    [InlineData(128, true, true)]
    [InlineData(96, true, false)]
    [InlineData(32, true, false)]
    [InlineData(128, false, false)]
    public void Prefill_uses_wgmma_on_hopper_for_head_dims_it_is_built_for(int headDim, bool hopper, bool wgmma) =>
        Assert.Equal(wgmma ? AttentionKernel.PrefillWgmma with { Keys = headDim == 128 ? 128 : 64 } : AttentionKernel.Prefill, AttentionKernel.For(200, headDim, hopper));

    [Theory]
    [InlineData(64, AttentionFamily.TensorCores)]
    [InlineData(96, AttentionFamily.TensorCores)]
    [InlineData(128, AttentionFamily.TensorCores)]
    [InlineData(160, AttentionFamily.CudaCores)]
    [InlineData(256, AttentionFamily.CudaCores)]
    [InlineData(80, AttentionFamily.Unsupported)]
    [InlineData(288, AttentionFamily.Unsupported)]
    public void A_head_dim_runs_on_one_kernel_family(int headDim, AttentionFamily family) =>
        Assert.Equal(family, AttentionHeadDims.Family(headDim));

    [Fact]
    public void A_forced_split_count_is_kept_within_the_key_tiles()
    {
        Assert.Equal(7, AttentionLaunch.Choose(AttentionKernel.Decode, 1, 4, 8, 1, 32768, 132, Resident, splits: 7).Splits);
        Assert.Equal(4, AttentionLaunch.Choose(AttentionKernel.Decode, 1, 4, 8, 1, 100, 132, Resident, splits: 50).Splits);
        Assert.Equal(AttentionLaunch.MaxSplits, AttentionLaunch.Choose(AttentionKernel.Decode, 1, 4, 8, 1, 1 << 22, 132, Resident, splits: 5000).Splits);
    }

    [Theory]
    [InlineData("keys=64,stages=4", 4, 1, 64, 4)]
    [InlineData("warps=8, mtiles=2", 8, 2, 32, 2)]
    public void Kernel_settings_parse_over_the_defaults(string text, int warps, int mTiles, int keys, int stages) =>
        Assert.Equal(new AttentionKernel(warps, mTiles, keys, stages, AttentionKernelKind.Decode), AttentionKernel.Parse(text, AttentionKernel.Decode, 128));

    [Fact]
    public void Kind_picks_a_kernel_family_that_later_settings_adjust()
    {
        Assert.Equal(AttentionKernel.PrefillWgmma, AttentionKernel.Parse("kind=wgmma", AttentionKernel.Prefill, 64));
        Assert.Equal(AttentionKernel.PrefillWgmma with { Keys = 128 }, AttentionKernel.Parse("kind=wgmma", AttentionKernel.Prefill, 128));
        Assert.Equal(new AttentionKernel(4, 1, 128, 4, AttentionKernelKind.Wgmma), AttentionKernel.Parse("kind=wgmma,warps=4,keys=128,stages=4", AttentionKernel.Prefill, 128));
        Assert.Equal(AttentionKernel.Prefill with { Keys = 64 }, AttentionKernel.Parse("kind=mma,keys=64", AttentionKernel.PrefillWgmma, 128));
        Assert.Equal(AttentionKernel.Decode with { Warps = 4 }, AttentionKernel.Parse("kind=decode,warps=4", AttentionKernel.Prefill, 128));
        Assert.Equal(AttentionKernel.Decode, AttentionKernel.Parse(AttentionKernel.Decode.ToString(), AttentionKernel.Prefill, 128));
    }

    [Theory]
    [InlineData(2, 4, 1)]
    [InlineData(4, 8, 1)]
    [InlineData(8, 8, 2)]
    public void The_tile_kernels_cover_a_tiles_rows(int group, int sparseWarps, int sparseRowBlocks)
    {
        // anchor_prefill.cu and sparse_prefill.cu check BLOCK_ROWS == 32 · GROUP; sparse_prefill_wgmma.cu whole warpgroups.
        Assert.Equal(32 * group, TileKernels.Mma(group).BlockRows);
        Assert.Equal(sparseWarps, TileKernels.SparseWgmma(group).Warps);
        Assert.Equal(sparseRowBlocks, TileKernels.RowBlocks(TileKernels.SparseWgmma(group), group));
        Assert.Equal(32 * group, sparseRowBlocks * TileKernels.SparseWgmma(group).BlockRows);
        Assert.Equal(128, TileKernels.AnchorWgmma.Threads);
        // Three swizzled 64-key (K, V) tiles of head dim 128 and the 1 KiB alignment slack.
        Assert.Equal(3 * 2 * 64 * 128 * 2 + 1024, TileKernels.SparseWgmma(group).SharedBytes(128));
    }

    [Fact]
    public void Decode_rows_take_one_or_two_eight_row_tiles()
    {
        Assert.Equal(AttentionKernel.Decode, AttentionKernel.For(4, 128, hopper: true));
        Assert.Equal(AttentionKernel.Decode with { MTiles = 2 }, AttentionKernel.For(16, 64, hopper: false));
        Assert.Equal(8, AttentionKernel.Decode.BlockRows);
        Assert.Equal(128, AttentionKernel.Prefill.BlockRows);
    }

    [Fact]
    public void Decode_halves_its_warps_until_their_rings_fit_the_shared_memory()
    {
        Assert.True(AttentionKernel.Decode.SharedBytes(128) > 99 * 1024);
        var kernel = AttentionKernel.For(4, 128, hopper: false, maxSharedBytes: 99 * 1024);
        Assert.Equal(AttentionKernel.Decode with { Warps = AttentionKernel.Decode.Warps / 2 }, kernel);
        Assert.True(kernel.SharedBytes(128) <= 99 * 1024);
        Assert.Equal(AttentionKernel.Decode, AttentionKernel.For(4, 128, hopper: true, maxSharedBytes: 227 * 1024));
    }

    [Theory]
    [InlineData("keys=20")]
    [InlineData("stages=1")]
    [InlineData("width=3")]
    [InlineData("keys")]
    [InlineData("warps=0")]
    [InlineData("kind=flash")]
    [InlineData("wgmma=1")]
    [InlineData("kind=wgmma,keys=32")]
    [InlineData("kind=wgmma,stages=2")]
    [InlineData("kind=wgmma,warps=2")]
    [InlineData("kind=decode,keys=128")]
    [InlineData("mtiles=3")]
    public void Bad_kernel_settings_are_refused(string text) =>
        Assert.Throws<FormatException>(() => AttentionKernel.Parse(text, AttentionKernel.Decode, 128));
}
