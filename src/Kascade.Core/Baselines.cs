namespace Kascade.Core;

/// <summary>
/// The key positions each (query token, query head) of one attention call reads. Heads may share one array (the
/// baselines that pick one set for all heads do). Positions must be visible to the query: below start + t + 1.
/// </summary>
public sealed class KeySelection
{
    private readonly int[][] _sets;

    public KeySelection(int tokens, int heads)
    {
        Tokens = tokens;
        Heads = heads;
        _sets = new int[tokens * heads][];
    }

    public int Tokens { get; }

    public int Heads { get; }

    public int[] this[int token, int head]
    {
        get => _sets[token * Heads + head] ?? throw new InvalidOperationException($"no key set for token {token}, head {head}");
        set => _sets[token * Heads + head] = value;
    }

    /// <summary>Gives every head of <paramref name="token"/> the same set.</summary>
    public void SetAllHeads(int token, int[] positions)
    {
        for (int h = 0; h < Heads; h++)
        {
            this[token, h] = positions;
        }
    }
}

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
}
