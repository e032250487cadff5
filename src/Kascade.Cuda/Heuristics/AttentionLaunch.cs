using System.Globalization;

namespace Kascade.Cuda.Heuristics;

/// <summary>Which tensor-core attention kernel a specialisation compiles (<see cref="AttentionKernel.Source"/>).</summary>
public enum AttentionKernelKind
{
    /// <summary><c>attention_mma</c>: FlashAttention-2 on mma.sync (sm_80+), warps of 16-row tiles; prefill before Hopper.</summary>
    Mma,

    /// <summary><c>attention_wgmma</c>: warpgroups of 64 rows on Hopper's wgmma, K/V read from swizzled shared memory; prefill on Hopper.</summary>
    Wgmma,

    /// <summary><c>attention_decode</c>: the few rows of a decode step as the N of Sᵀ = K·Qᵀ, each warp its own ring (sm_80+).</summary>
    Decode,
}

/// <summary>
/// A specialisation of the tensor-core attention kernels (their <c>ATT_*</c> defines). <see cref="Kind"/> picks the
/// kernel; <see cref="Warps"/> warps per block; keys are staged <see cref="Keys"/> at a time in a ring of
/// <see cref="Stages"/> K/V tiles. <see cref="MTiles"/> is row tiles per warp: 16-row tiles in attention_mma (each K/V
/// fragment then feeds MTiles MMAs, as FlashAttention-2 does), 8-row column tiles of Sᵀ in attention_decode, where
/// every warp reads the block's rows and walks its own share of the keys (its own ring). Decode is bound by how fast
/// K and V stream in, prefill by the tensor cores and shared-memory bandwidth.
/// </summary>
public readonly record struct AttentionKernel(int Warps, int MTiles, int Keys, int Stages, AttentionKernelKind Kind = AttentionKernelKind.Mma)
{
    /// <summary>Rows of one KV head (query tokens × GQA group) up to which <see cref="Decode"/> runs.</summary>
    public const int DecodeRows = 16;

    /// <summary>
    /// attention_decode for up to 8 rows (a decode token's group): four warps, each over its own ring of two 32-key
    /// tiles (139 KiB of shared memory, one block a multiprocessor). The fastest of the sweep in
    /// bench/results/attention-h100.md at batch 1 and 64, ahead of one-warp blocks and deeper rings.
    /// </summary>
    public static AttentionKernel Decode { get; } = new(4, 1, 32, 2, AttentionKernelKind.Decode);

    /// <summary>Four warps of 32 rows (128 rows) over two 32-key tiles (mma.sync, sm_80+; 64-key tiles spill registers).</summary>
    public static AttentionKernel Prefill { get; } = new(4, 2, 32, 2);

    /// <summary>Hopper prefill: two warpgroups of 64 rows sharing a ring of three 64-key tiles (wgmma, sm_90a); see <see cref="PrefillWgmmaFor"/>.</summary>
    public static AttentionKernel PrefillWgmma { get; } = new(8, 1, 64, 3, AttentionKernelKind.Wgmma);

    /// <summary>
    /// The Hopper prefill kernel for a head dim: <see cref="PrefillWgmma"/>, with 128-key tiles at head dim 128
    /// (FlashAttention-3's tile; 193 KiB of shared memory). On the H100 (session 14, calls F and G, packed-P loop, causal,
    /// 8k / 32k / 128k): head dim 128 runs 545 / 475 / 505 TFLOP/s with 128 keys against 505 / 441 / 447 with 64; head
    /// dim 64 runs 405 / 366 / 417 with 64 keys against 369 / 343 / 403 with 128 (and 361 / 332 / 389 with 4 stages).
    /// </summary>
    public static AttentionKernel PrefillWgmmaFor(int headDim) => headDim == 128 ? PrefillWgmma with { Keys = 128 } : PrefillWgmma;

    /// <summary>Rows of one KV head a block covers.</summary>
    public int BlockRows => Kind == AttentionKernelKind.Decode ? 8 * MTiles : 16 * Warps * MTiles;

    /// <summary>Warps that walk a split's keys side by side (attention_decode's each take every Warps-th tile).</summary>
    public int KeyStreams => Kind == AttentionKernelKind.Decode ? Warps : 1;

    public int Threads => 32 * Warps;

    /// <summary>The kernel's entry point in <see cref="Source"/>.</summary>
    public string Function => Kind switch
    {
        AttentionKernelKind.Wgmma => "attention_wgmma",
        AttentionKernelKind.Decode => "attention_decode",
        _ => "attention_mma",
    };

    /// <summary>The kernel's source under Kernels/, named after its entry point (each includes attention_common.cuh).</summary>
    public string Source => Function + ".cu";

    /// <summary>
    /// Dynamic shared memory of a block: attention_mma's queries and K/V ring (rows padded by 8 bf16); attention_wgmma's
    /// K/V ring (swizzled, unpadded; its queries stay in registers) plus 1 KiB to align the ring to the swizzle atom;
    /// attention_decode's per-warp rings, which its final merge of the warps (fp32 rows padded by 4, max and sum) reuses.
    /// </summary>
    public int SharedBytes(int headDim) => Kind switch
    {
        AttentionKernelKind.Wgmma => 2 * Stages * Keys * headDim * sizeof(ushort) + 1024,
        AttentionKernelKind.Decode => Math.Max(Warps * 2 * Stages * Keys * (headDim + 8) * sizeof(ushort), Warps * BlockRows * (headDim + 4 + 2) * sizeof(float)),
        _ => (BlockRows + 2 * Stages * Keys) * (headDim + 8) * sizeof(ushort),
    };

    /// <summary>
    /// The kernel for <paramref name="rows"/> rows of one KV head: <see cref="Decode"/> (8-row tiles as needed) up to
    /// <see cref="DecodeRows"/>, with its warps halved until their rings fit <paramref name="maxSharedBytes"/> (a
    /// block's shared memory on the device: 99 KiB on sm_86/sm_89); else <see cref="PrefillWgmmaFor"/> on a Hopper GPU
    /// (sm_90a) for head dims 64 and 128, else <see cref="Prefill"/>.
    /// </summary>
    public static AttentionKernel For(int rows, int headDim, bool hopper, int maxSharedBytes = int.MaxValue)
    {
        if (rows > DecodeRows)
        {
            return AttentionHeadDims.RunsWgmma(headDim, hopper) ? PrefillWgmmaFor(headDim) : Prefill;
        }
        var kernel = Decode with { MTiles = rows > 8 ? 2 : 1 };
        while (kernel.Warps > 1 && kernel.SharedBytes(headDim) > maxSharedBytes)
        {
            kernel = kernel with { Warps = kernel.Warps / 2 };
        }
        return kernel;
    }

    public IReadOnlyDictionary<string, string> Defines()
    {
        var defines = new Dictionary<string, string>
        {
            ["ATT_WARPS"] = Warps.ToString(CultureInfo.InvariantCulture),
            ["ATT_M_TILES"] = MTiles.ToString(CultureInfo.InvariantCulture),
            ["ATT_KEYS"] = Keys.ToString(CultureInfo.InvariantCulture),
            ["ATT_STAGES"] = Stages.ToString(CultureInfo.InvariantCulture),
        };
        if (Kind != AttentionKernelKind.Mma)
        {
            defines[Kind == AttentionKernelKind.Wgmma ? "ATT_WGMMA" : "ATT_DECODE"] = "1";
        }
        return defines;
    }

    public override string ToString() => $"kind={Kind.ToString().ToLowerInvariant()},warps={Warps},mtiles={MTiles},keys={Keys},stages={Stages}";

    /// <summary>
    /// Parses <c>kind=mma|wgmma|decode,warps=W,mtiles=M,keys=K,stages=S</c>, left to right over
    /// <paramref name="defaults"/>; <c>kind</c> starts again from that kind's defaults (<see cref="Prefill"/>,
    /// <see cref="PrefillWgmmaFor"/> <paramref name="headDim"/>, <see cref="Decode"/>).
    /// </summary>
    public static AttentionKernel Parse(string text, AttentionKernel defaults, int headDim)
    {
        var kernel = defaults;
        foreach (string part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq > 0 && part[..eq] == "kind")
            {
                kernel = part[(eq + 1)..] switch
                {
                    "mma" => Prefill,
                    "wgmma" => PrefillWgmmaFor(headDim),
                    "decode" => Decode,
                    _ => throw new FormatException($"'{part}': the kinds are mma, wgmma and decode"),
                };
                continue;
            }
            if (eq <= 0 || !int.TryParse(part[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out int value))
            {
                throw new FormatException($"'{part}' is not NAME=INTEGER or kind=mma|wgmma|decode");
            }
            kernel = part[..eq] switch
            {
                "warps" => kernel with { Warps = value },
                "mtiles" => kernel with { MTiles = value },
                "keys" => kernel with { Keys = value },
                "stages" => kernel with { Stages = value },
                _ => throw new FormatException($"unknown attention kernel setting '{part}' (kind, warps, mtiles, keys, stages)"),
            };
        }
        if (kernel.Warps is < 1 or > 8 || kernel.MTiles is < 1 or > 2 || kernel.Keys < 16 || kernel.Keys % 16 != 0 || kernel.Keys > 128 || kernel.Stages < 2 || kernel.Stages > 8)
        {
            throw new FormatException($"attention kernel {kernel}: warps 1–8, mtiles 1–2, keys a multiple of 16 up to 128, stages 2–8");
        }
        if (kernel.Kind == AttentionKernelKind.Wgmma && (kernel.Warps is not (4 or 8) || kernel.MTiles != 1 || kernel.Keys is not (64 or 128) || kernel.Stages < 3))
        {
            throw new FormatException($"attention kernel {kernel}: wgmma runs one or two warpgroups (warps=4 or 8, mtiles=1) over 64 or 128 keys, at least 3 stages");
        }
        if (kernel.Kind == AttentionKernelKind.Decode && kernel.Keys > 64)
        {
            throw new FormatException($"attention kernel {kernel}: decode stages at most 64 keys a tile");
        }
        return kernel;
    }
}

/// <summary>
/// The launch of a tensor-core attention kernel for one call (pure: shapes in, plan out): <see cref="RowTiles"/> blocks of
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
    /// blocks) × (keys per split per key stream + a block's fixed cost), with <paramref name="residentBlocks"/> blocks
    /// per multiprocessor (the driver's occupancy for the kernel). Decode fills one whole wave; a batch of sequences
    /// takes the split count whose last wave is fullest. Each key stream of a split walks at least one ring of tiles,
    /// so that it overlaps loading with computing. A prefill launch (the tile kernels) whose blocks already fill every
    /// slot is not split: there the merge, <c>attention_combine</c>, is a block per query row over fp32 partials, which
    /// costs far more than a part-filled last wave (dense causal prefill on an H100, session 24: 18.2 against 14.1 ms at
    /// 32k and 274–278 against 239 at 128k with two splits against one). A decode row's merge is small beside the bytes
    /// of its keys, so the decode kernel keeps the wave count's choice (batch 64 at 128k, session 24: nine splits make
    /// the anchor's scores kernel 1.5% faster than one).
    /// <paramref name="splits"/> forces the split count (benchmark sweeps), never past <see cref="MaxSplits"/> or one
    /// tile per split.
    /// </summary>
    public static AttentionLaunchPlan Choose(AttentionKernel kernel, int tokens, int group, int kvHeads, int sequences, int visibleKeys, int multiprocessors, int residentBlocks, int? splits = null)
    {
        int rows = tokens * group;
        int rowTiles = (rows + kernel.BlockRows - 1) / kernel.BlockRows;
        long blocks = (long)rowTiles * kvHeads * sequences;
        long capacity = (long)multiprocessors * Math.Max(1, residentBlocks);
        bool filled = blocks >= capacity && kernel.Kind != AttentionKernelKind.Decode;
        int maxSplits = filled ? 1 : Math.Clamp(visibleKeys / (kernel.Stages * kernel.Keys * kernel.KeyStreams), 1, MaxSplits);
        int chosen = Math.Clamp(splits ?? 1, 1, Math.Clamp((visibleKeys + kernel.Keys - 1) / kernel.Keys, 1, MaxSplits));
        if (splits is null)
        {
            double best = double.MaxValue;
            double blockCost = 2.0 * kernel.Keys;
            for (int s = 1; s <= maxSplits; s++)
            {
                double cost = (double)((blocks * s + capacity - 1) / capacity) * ((double)visibleKeys / s / kernel.KeyStreams + blockCost);
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
