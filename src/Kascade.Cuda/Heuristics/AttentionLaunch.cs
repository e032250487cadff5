using System.Globalization;

namespace Kascade.Cuda.Heuristics;

/// <summary>
/// A specialisation of <c>attention_mma</c> (its <c>ATT_*</c> defines): <see cref="Warps"/> warps of
/// <see cref="MTiles"/> 16-row tiles make a block's rows; keys are staged <see cref="Keys"/> at a time in a ring of
/// <see cref="Stages"/> K/V tiles. Decode is bound by memory latency (one warp, many tiles in flight); prefill by the
/// tensor cores and shared-memory bandwidth (each K/V fragment feeding two row tiles, as FlashAttention-2 does).
/// <see cref="Wgmma"/> selects <c>attention_wgmma</c> (Hopper warpgroup MMA: warpgroups of 64 rows, K/V read by
/// the tensor cores from swizzled shared memory) instead.
/// </summary>
public readonly record struct AttentionKernel(int Warps, int MTiles, int Keys, int Stages, bool Wgmma = false)
{
    /// <summary>Rows of one KV head (query tokens × GQA group) up to which <see cref="Decode"/> runs.</summary>
    public const int DecodeRows = 16;

    /// <summary>One warp of 16 rows (a decode token's GQA group) over a ring of three 32-key tiles.</summary>
    public static AttentionKernel Decode { get; } = new(1, 1, 32, 3);

    /// <summary>Four warps of 32 rows (128 rows) over two 32-key tiles (mma.sync, sm_80+; 64-key tiles spill registers).</summary>
    public static AttentionKernel Prefill { get; } = new(4, 2, 32, 2);

    /// <summary>Hopper prefill: two warpgroups of 64 rows sharing a ring of three 64-key tiles (wgmma, sm_90a).</summary>
    public static AttentionKernel PrefillWgmma { get; } = new(8, 1, 64, 3, Wgmma: true);

    public int BlockRows => 16 * Warps * MTiles;

    public int Threads => 32 * Warps;

    /// <summary>The kernel's entry point in attention.cu.</summary>
    public string Function => Wgmma ? "attention_wgmma" : "attention_mma";

    /// <summary>
    /// Dynamic shared memory of a block: attention_mma's queries and K/V ring (rows padded by 8 bf16), or
    /// attention_wgmma's K/V ring (swizzled, unpadded; its queries stay in registers) plus 1 KiB to align the ring to
    /// the swizzle atom.
    /// </summary>
    public int SharedBytes(int headDim) => Wgmma
        ? 2 * Stages * Keys * headDim * sizeof(ushort) + 1024
        : (BlockRows + 2 * Stages * Keys) * (headDim + 8) * sizeof(ushort);

    /// <summary>
    /// The kernel for <paramref name="rows"/> rows of one KV head: <see cref="Decode"/> for a decode token's group,
    /// else <see cref="PrefillWgmma"/> on a Hopper GPU (sm_90a) for head dims 64 and 128, else <see cref="Prefill"/>.
    /// </summary>
    public static AttentionKernel For(int rows, int headDim, bool hopper) =>
        rows <= DecodeRows ? Decode : hopper && headDim % 64 == 0 ? PrefillWgmma : Prefill;

    public IReadOnlyDictionary<string, string> Defines()
    {
        var defines = new Dictionary<string, string>
        {
            ["ATT_WARPS"] = Warps.ToString(CultureInfo.InvariantCulture),
            ["ATT_M_TILES"] = MTiles.ToString(CultureInfo.InvariantCulture),
            ["ATT_KEYS"] = Keys.ToString(CultureInfo.InvariantCulture),
            ["ATT_STAGES"] = Stages.ToString(CultureInfo.InvariantCulture),
        };
        if (Wgmma)
        {
            defines["ATT_WGMMA"] = "1";
        }
        return defines;
    }

    public override string ToString() => $"warps={Warps},mtiles={MTiles},keys={Keys},stages={Stages},wgmma={(Wgmma ? 1 : 0)}";

    /// <summary>
    /// Parses <c>warps=W,mtiles=M,keys=K,stages=S,wgmma=0|1</c>, left to right over <paramref name="defaults"/>;
    /// wgmma=1 or wgmma=0 starts again from <see cref="PrefillWgmma"/> or <see cref="Prefill"/>.
    /// </summary>
    public static AttentionKernel Parse(string text, AttentionKernel defaults)
    {
        var kernel = defaults;
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0 || !int.TryParse(part[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int value))
            {
                throw new FormatException($"'{part}' is not NAME=INTEGER");
            }
            kernel = part[..eq] switch
            {
                "warps" => kernel with { Warps = value },
                "mtiles" => kernel with { MTiles = value },
                "keys" => kernel with { Keys = value },
                "stages" => kernel with { Stages = value },
                "wgmma" when value == 1 => PrefillWgmma,
                "wgmma" when value == 0 => Prefill,
                var name => throw new FormatException($"unknown attention kernel setting '{part}' (warps, mtiles, keys, stages, wgmma=0|1)"),
            };
        }
        if (kernel.Warps is < 1 or > 8 || kernel.MTiles is < 1 or > 2 || kernel.Keys < 16 || kernel.Keys % 16 != 0 || kernel.Keys > 128 || kernel.Stages < 2 || kernel.Stages > 8)
        {
            throw new FormatException($"attention kernel {kernel}: warps 1–8, mtiles 1–2, keys a multiple of 16 up to 128, stages 2–8");
        }
        if (kernel.Wgmma && (kernel.Warps is not (4 or 8) || kernel.MTiles != 1 || kernel.Keys is not (64 or 128) || kernel.Stages < 3))
        {
            throw new FormatException($"attention kernel {kernel}: wgmma runs one or two warpgroups (warps=4 or 8, mtiles=1) over 64 or 128 keys, at least 3 stages");
        }
        return kernel;
    }
}

/// <summary>
/// The launch of <c>attention_mma</c> for one call (pure: shapes in, plan out): <see cref="RowTiles"/> blocks of
/// <c>Kernel.BlockRows</c> rows cover the rows (query tokens × GQA group) of one KV head of one sequence; the keys are
/// cut into <see cref="Splits"/> ranges of <see cref="KeysPerSplit"/> (a whole number of key tiles), merged by
/// <c>attention_combine</c> when there is more than one.
/// </summary>
public readonly record struct AttentionLaunchPlan(AttentionKernel Kernel, int RowTiles, int Splits, int KeysPerSplit);

public static class AttentionLaunch
{
    /// <summary>Splits <c>attention_combine</c> can merge (its MAX_SPLITS: one weight per split in shared memory).</summary>
    public const int MaxSplits = 1024;

    /// <summary>
    /// Splits the keys (flash-decoding) as far as that shortens the launch: a launch takes about (waves of resident
    /// blocks) × (keys per split + a block's fixed cost), with <paramref name="residentBlocks"/> blocks per
    /// multiprocessor (the driver's occupancy for the kernel). Decode fills one whole wave; a batch of sequences takes
    /// the split count whose last wave is fullest. A split walks at least one ring of tiles, so that it overlaps
    /// loading with computing. <paramref name="splits"/> forces the split count (benchmark sweeps), never past
    /// <see cref="MaxSplits"/> or one tile per split.
    /// </summary>
    public static AttentionLaunchPlan Choose(AttentionKernel kernel, int tokens, int group, int kvHeads, int sequences, int visibleKeys, int multiprocessors, int residentBlocks, int? splits = null)
    {
        int rows = tokens * group;
        int rowTiles = (rows + kernel.BlockRows - 1) / kernel.BlockRows;
        long blocks = (long)rowTiles * kvHeads * sequences;
        long capacity = (long)multiprocessors * Math.Max(1, residentBlocks);
        int maxSplits = Math.Clamp(visibleKeys / (kernel.Stages * kernel.Keys), 1, MaxSplits);
        int chosen = Math.Clamp(splits ?? 1, 1, Math.Clamp((visibleKeys + kernel.Keys - 1) / kernel.Keys, 1, MaxSplits));
        if (splits is null)
        {
            double best = double.MaxValue;
            double blockCost = 2.0 * kernel.Keys;
            for (int s = 1; s <= maxSplits; s++)
            {
                double cost = (double)((blocks * s + capacity - 1) / capacity) * ((double)visibleKeys / s + blockCost);
                if (cost < best - 1e-12)
                {
                    (best, chosen) = (cost, s);
                }
            }
        }
        int perSplit = (visibleKeys + chosen - 1) / chosen;
        perSplit = (perSplit + kernel.Keys - 1) / kernel.Keys * kernel.Keys;
        return new AttentionLaunchPlan(kernel, rowTiles, (visibleKeys + perSplit - 1) / perSplit, perSplit);
    }
}

/// <summary>Overrides of the attention launch (benchmark sweeps): a kernel specialisation per phase, a fixed split count.</summary>
public sealed record AttentionTuning(AttentionKernel? Decode = null, AttentionKernel? Prefill = null, int? Splits = null);
