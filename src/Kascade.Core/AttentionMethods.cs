namespace Kascade.Core;

/// <summary>
/// One attention method as users name it: what it is, the settings it reads and how it selects keys. The CLI's
/// <c>--attention</c>, <c>kascade methods</c> and the sessions all read this one registry.
/// </summary>
/// <param name="Name">The name on the command line (<c>--attention NAME</c>).</param>
/// <param name="Method">The policy it builds.</param>
/// <param name="Description">One line: what the method attends to.</param>
/// <param name="Settings">The options it reads besides the model: <c>--topk-percent</c>, <c>--schedule</c>, <c>--pooling</c>, <c>--score-precision</c>, <c>--baseline NAME=VALUE</c>, ….</param>
/// <param name="NeedsSchedule">It reads a Kascade schedule (anchors and head maps).</param>
/// <param name="Baseline">A baseline of DESIGN §4: it reads <c>--baseline NAME=VALUE</c> settings and selects keys with a <see cref="KeySelector"/>.</param>
public sealed record AttentionMethodInfo(string Name, AttentionMethod Method, string Description, IReadOnlyList<string> Settings, bool NeedsSchedule, bool Baseline);

/// <summary>Every attention method, in the order reports list them.</summary>
public static class AttentionMethods
{
    private static readonly string[] BudgetOnly = ["--topk-percent"];
    private static readonly string[] KascadeSettings = ["--schedule", "--topk-percent", "--pooling", "--budget-rule", "--score-precision", "--anchor-refresh"];

    public static IReadOnlyList<AttentionMethodInfo> All { get; } =
    [
        new("dense", AttentionMethod.Dense, "exact attention over every key", [], false, false),
        new("kascade", AttentionMethod.Kascade, "anchor layers pick each 32-query tile's Top-k keys (post-softmax, pooled over the tile and the GQA group); reuse layers attend over their anchor's keys through a head map (the paper)", KascadeSettings, true, false),
        new("kascade-pooled", AttentionMethod.KascadePooled, "Kascade with one key set per tile pooled over all query heads and shared by every KV head (no head map)", KascadeSettings, true, false),
        new("kascade-noremap", AttentionMethod.KascadeNoRemap, "Kascade with identity head maps", KascadeSettings, true, false),
        new("oracle-topk", AttentionMethod.OracleTopK, "every layer, query head and query attends over its own exact Top-k keys (an upper bound for selection methods)", BudgetOnly, false, false),
        new("streamingllm", AttentionMethod.StreamingLlm, "sink tokens and a recent window, every layer, prefill and decode", ["--baseline sinks, streaming-window-percent, min-window"], false, true),
        new("quest", AttentionMethod.Quest, "decode: per query head, the key pages with the best min/max score bound", ["--topk-percent", "--baseline quest-page, quest-dense-layers"], false, true),
        new("omnikv", AttentionMethod.OmniKv, "decode: filter layers pick one Top-k set (post-softmax, max over heads) that the following layers share", ["--topk-percent", "--baseline omnikv-filter-layers"], false, true),
        new("lessismore", AttentionMethod.LessIsMore, "decode: selection layers pick one set (union of per-head Top-k, sinks, recent keys) shared until the next", ["--topk-percent", "--baseline sinks, lessismore-selection-layers, lessismore-recent-fraction"], false, true),
        new("sparcas", AttentionMethod.SparCas, "decode: per head, partial scores on the query's largest dimensions pick the Top-k (SparQ's cascade)", ["--topk-percent", "--baseline sparcas-dimension-fraction, sparcas-refresh-steps, sparcas-dense-layers"], false, true),
    ];

    /// <summary>The names, comma-separated, for help texts and errors.</summary>
    public static string Names { get; } = string.Join(", ", All.Select(m => m.Name));

    public static AttentionMethodInfo Of(AttentionMethod method) =>
        All.FirstOrDefault(m => m.Method == method) ?? throw new ArgumentOutOfRangeException(nameof(method), method, "not a registered attention method");

    public static bool TryFind(string name, out AttentionMethodInfo info)
    {
        info = All.FirstOrDefault(m => m.Name == name)!;
        return info is not null;
    }

    /// <summary>The method named <paramref name="name"/>, or one <c>error:</c>-ready message listing the names.</summary>
    public static AttentionMethodInfo Find(string name) =>
        TryFind(name, out var info) ? info : throw new KascadeException($"unknown attention '{name}'; choose from {Names}");
}
