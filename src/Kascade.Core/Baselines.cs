namespace Kascade.Core;

/// <summary>
/// Parameters of the baseline attention policies, defaults from DESIGN §4. Immutable. The budget of the Top-k
/// baselines (quest, omnikv, lessismore, sparcas) is <see cref="TopKBudget.For"/> at the policy's percent, the same
/// rule Kascade uses, so that methods are compared at equal key counts.
/// </summary>
public sealed record BaselineOptions
{
    /// <summary>Attention-sink tokens kept by streamingllm and lessismore.</summary>
    public int SinkTokens { get; init; } = 4;

    /// <summary>streamingllm's window (sinks + recent) in percent of the visible keys, at least <see cref="MinWindow"/>.</summary>
    public double StreamingWindowPercent { get; init; } = 30;

    public int MinWindow { get; init; } = 128;

    /// <summary>quest's page of keys with per-channel min and max.</summary>
    public int QuestPageSize { get; init; } = 16;

    /// <summary>quest attends densely in layers below this (and in prefill).</summary>
    public int QuestDenseLayers { get; init; } = 2;

    /// <summary>omnikv's filter layers: dense, and they pick the set the following layers share.</summary>
    public IReadOnlyList<int> OmniKvFilterLayers { get; init; } = [2, 8, 18];

    /// <summary>lessismore's selection layers: dense, and they pick the set shared until the next one.</summary>
    public IReadOnlyList<int> LessIsMoreSelectionLayers { get; init; } = [2, 13];

    /// <summary>lessismore's share of the budget taken by the most recent tokens (the rest: per-head Top-k).</summary>
    public double LessIsMoreRecentFraction { get; init; } = 0.25;

    /// <summary>sparcas's key dimensions D_b per head, as a fraction of the head dim.</summary>
    public double SparCasDimensionFraction { get; init; } = 0.25;

    /// <summary>sparcas refreshes a head's dimension set every this many decode steps (U).</summary>
    public int SparCasRefreshSteps { get; init; } = 64;

    /// <summary>sparcas attends densely in layers below this.</summary>
    public int SparCasDenseLayers { get; init; } = 3;

    public static BaselineOptions Default { get; } = new();

    /// <summary>The settings by their command-line names (<c>--baseline NAME=VALUE</c>), each with how it reads and shows a value.</summary>
    private static readonly (string Name, Func<BaselineOptions, string, BaselineOptions> Set, Func<BaselineOptions, string> Get)[] Settings =
    [
        ("sinks", (o, v) => o with { SinkTokens = Count(v, "sinks", min: 0) }, o => Show(o.SinkTokens)),
        ("streaming-window-percent", (o, v) => o with { StreamingWindowPercent = Percent(v, "streaming-window-percent") }, o => Show(o.StreamingWindowPercent)),
        ("min-window", (o, v) => o with { MinWindow = Count(v, "min-window", min: 1) }, o => Show(o.MinWindow)),
        ("quest-page", (o, v) => o with { QuestPageSize = Count(v, "quest-page", min: 1) }, o => Show(o.QuestPageSize)),
        ("quest-dense-layers", (o, v) => o with { QuestDenseLayers = Count(v, "quest-dense-layers", min: 0) }, o => Show(o.QuestDenseLayers)),
        ("omnikv-filter-layers", (o, v) => o with { OmniKvFilterLayers = Layers(v, "omnikv-filter-layers") }, o => string.Join(',', o.OmniKvFilterLayers)),
        ("lessismore-selection-layers", (o, v) => o with { LessIsMoreSelectionLayers = Layers(v, "lessismore-selection-layers") }, o => string.Join(',', o.LessIsMoreSelectionLayers)),
        ("lessismore-recent-fraction", (o, v) => o with { LessIsMoreRecentFraction = Percent(v, "lessismore-recent-fraction", max: 1) }, o => Show(o.LessIsMoreRecentFraction)),
        ("sparcas-dimension-fraction", (o, v) => o with { SparCasDimensionFraction = Percent(v, "sparcas-dimension-fraction", max: 1) }, o => Show(o.SparCasDimensionFraction)),
        ("sparcas-refresh-steps", (o, v) => o with { SparCasRefreshSteps = Count(v, "sparcas-refresh-steps", min: 1) }, o => Show(o.SparCasRefreshSteps)),
        ("sparcas-dense-layers", (o, v) => o with { SparCasDenseLayers = Count(v, "sparcas-dense-layers", min: 0) }, o => Show(o.SparCasDenseLayers)),
    ];

    public static IEnumerable<string> SettingNames => Settings.Select(s => s.Name);

    /// <summary>These options with <paramref name="assignment"/> (<c>NAME=VALUE</c>, e.g. <c>omnikv-filter-layers=2,8,18</c>) applied.</summary>
    public BaselineOptions With(string assignment)
    {
        int eq = assignment.IndexOf('=', StringComparison.Ordinal);
        string name = eq > 0 ? assignment[..eq].Trim() : throw new KascadeException($"'{assignment}' is not NAME=VALUE; baseline settings are {string.Join(", ", SettingNames)}");
        var setting = Settings.FirstOrDefault(s => s.Name == name);
        return setting.Set is null
            ? throw new KascadeException($"unknown baseline setting '{name}'; choose from {string.Join(", ", SettingNames)}")
            : setting.Set(this, assignment[(eq + 1)..].Trim());
    }

    /// <summary>Every setting as NAME=VALUE, in a fixed order (a run's identity, a report's header).</summary>
    public string Describe() => string.Join(' ', Settings.Select(s => $"{s.Name}={s.Get(this)}"));

    private static string Show(double value) => value.ToString(System.Globalization.CultureInfo.InvariantCulture);

    private static int Count(string value, string name, int min) =>
        int.TryParse(value, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int n) && n >= min
            ? n : throw new KascadeException($"baseline setting {name} must be an integer ≥ {min}, not '{value}'");

    private static double Percent(string value, string name, double max = 100) =>
        double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double v) && v > 0 && v <= max
            ? v : throw new KascadeException($"baseline setting {name} must be in (0, {Show(max)}], not '{value}'");

    private static int[] Layers(string value, string name)
    {
        var layers = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(l => int.TryParse(l, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out int n) && n >= 0 ? n
                : throw new KascadeException($"baseline setting {name}: '{l}' is not a layer index")).Distinct().Order().ToArray();
        return layers.Length > 0 ? layers : throw new KascadeException($"baseline setting {name} needs at least one layer");
    }
}
