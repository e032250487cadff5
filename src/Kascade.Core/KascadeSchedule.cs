namespace Kascade.Core;

/// <summary>Which model a schedule was made for.</summary>
public sealed record ModelIdentity(string Architecture, int Layers, int Heads, int KvHeads, string ConfigHash);

/// <summary>How a schedule was calibrated.</summary>
/// <param name="Objective">What the anchor DP maximised, by its <see cref="AnchorObjectives.Name"/>; files written before it was recorded mean weighted.</param>
public sealed record CalibrationProvenance(string DevSet, int Examples, int MaxNewTokens, int CalibrationTopK, DateTimeOffset Date, string Tool, string Objective = "weighted");

/// <summary>What the anchor DP maximises over the layers a choice covers (docs/kascade.md, Calibration).</summary>
public enum AnchorObjective
{
    /// <summary>DESIGN §3 (the paper): <c>Σ_b w_b · S[anchor(b)][b]</c>, the importance-weighted similarity covered.</summary>
    Weighted,

    /// <summary>
    /// Ours (issue 16 §4): <c>Σ_b w_b · ln max(S[anchor(b)][b], 1e-4)</c>. A layer its anchor predicts badly costs far
    /// more than under <see cref="Weighted"/>, where covering it at 0.05 instead of 1 loses only its weight: on the
    /// embedded model the weighted DP reuses layer 17 (S ≤ 0.12 from every earlier layer) until 6 anchors, and its
    /// 5-anchor schedule loses the needles (docs/results/frontier.md).
    /// </summary>
    LogWeighted,
}

/// <summary>The objectives' names: <c>--objective</c>, schedule files (<see cref="CalibrationProvenance.Objective"/>) and run identities.</summary>
public static class AnchorObjectives
{
    private static readonly string[] All = ["weighted", "log"];

    public static IReadOnlyList<string> Names => All;

    public static string Name(this AnchorObjective objective) => All[(int)objective];

    /// <summary>The objective named <paramref name="name"/>, or null for a name that is none.</summary>
    public static AnchorObjective? Parse(string? name) => Array.IndexOf(All, name) is >= 0 and var i ? (AnchorObjective)i : null;
}

/// <summary>
/// The DP's best anchor set for one anchor count, with its score (the DP objective's value: Σ of weighted similarities
/// covered, or Σ of weighted log similarities under <see cref="AnchorObjective.LogWeighted"/>) and the
/// similarity of its weakest covered layer (<c>min S[anchor(j)][j]</c> over the reuse layers j; 1 when every layer
/// is an anchor; absent in schedules written before it was recorded).
/// </summary>
public sealed record AnchorChoice(int AnchorCount, IReadOnlyList<int> Anchors, double Score, double? WeakestSimilarity = null);

/// <summary>
/// A Kascade schedule for one model: anchor layers (layer 0 first) and, per layer, the head map from its KV
/// heads to the rows of its anchor's plan. Immutable; <see cref="Validate"/> checks it against a model.
/// </summary>
public sealed record KascadeSchedule(
    ModelIdentity Model,
    IReadOnlyList<int> Anchors,
    IReadOnlyList<IReadOnlyList<int>> HeadMap,
    double TopKPercent = 10,
    int TileSize = TopKBudget.TileSize,
    CalibrationProvenance? Provenance = null,
    IReadOnlyList<AnchorChoice>? Choices = null,
    IReadOnlyList<IReadOnlyList<double>>? Similarity = null,
    IReadOnlyList<double>? Importance = null)
{
    /// <summary>
    /// A schedule for speed measurements on a model without attention structure to calibrate (random weights):
    /// <paramref name="anchors"/> anchors, layer 0 and the rest spread evenly over the layers, identity head maps. The
    /// paper's mix for 32 layers is 5 anchors. Its accuracy means nothing; its cost is a calibrated schedule's.
    /// </summary>
    public static KascadeSchedule Spread(ModelConfig config, int anchors, double topKPercent)
    {
        anchors = Math.Clamp(anchors, 1, config.Layers);
        int[] layers = [.. Enumerable.Range(0, anchors).Select(i => (int)((long)i * config.Layers / anchors)).Distinct()];
        var identity = Enumerable.Range(0, config.KvHeads).ToArray();
        return new KascadeSchedule(new ModelIdentity(config.ArchitectureName, config.Layers, config.Heads, config.KvHeads, "spread"), layers,
            [.. Enumerable.Range(0, config.Layers).Select(_ => (IReadOnlyList<int>)identity)], topKPercent);
    }

    /// <summary>Anchor for anchors; reuse of the nearest earlier anchor otherwise.</summary>
    public LayerRole RoleOf(int layer)
    {
        int anchor = -1;
        foreach (int a in Anchors)
        {
            if (a == layer)
            {
                return new LayerRole.Anchor();
            }
            if (a < layer)
            {
                anchor = Math.Max(anchor, a);
            }
        }
        return new LayerRole.Reuse(anchor, HeadMap[layer]);
    }

    /// <summary>Every problem that keeps this schedule from running on <paramref name="config"/>; empty when it can.</summary>
    public IReadOnlyList<string> Validate(ModelConfig config)
    {
        var problems = new List<string>();
        if (Model.Layers != config.Layers || Model.KvHeads != config.KvHeads || Model.Heads != config.Heads)
        {
            problems.Add($"schedule is for {Model.Layers} layers × {Model.Heads}/{Model.KvHeads} heads; the model has {config.Layers} × {config.Heads}/{config.KvHeads}");
        }
        if (Anchors.Count == 0 || Anchors[0] != 0)
        {
            problems.Add("the first anchor must be layer 0");
        }
        if (Anchors.Zip(Anchors.Skip(1)).Any(p => p.First >= p.Second) || Anchors.Any(a => a < 0 || a >= config.Layers))
        {
            problems.Add($"anchors [{string.Join(", ", Anchors)}] must be increasing layer indices below {config.Layers}");
        }
        if (HeadMap.Count != config.Layers)
        {
            problems.Add($"head map has {HeadMap.Count} layers; the model has {config.Layers}");
        }
        for (int l = 0; l < HeadMap.Count; l++)
        {
            var row = HeadMap[l];
            if (row.Count != config.KvHeads || row.Any(h => h < 0 || h >= config.KvHeads))
            {
                problems.Add($"head map of layer {l} is [{string.Join(", ", row)}]; it needs {config.KvHeads} KV head indices in [0, {config.KvHeads})");
            }
            else if (Anchors.Contains(l) && !row.Select((h, i) => h == i).All(x => x))
            {
                problems.Add($"head map of anchor layer {l} must be the identity");
            }
        }
        if (!(TopKPercent > 0 && TopKPercent <= 100))
        {
            problems.Add($"topk percent {TopKPercent} must be in (0, 100]");
        }
        if (TileSize != TopKBudget.TileSize)
        {
            problems.Add($"tile size {TileSize} is not supported (only {TopKBudget.TileSize})");
        }
        return problems;
    }
}
