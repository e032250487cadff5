namespace Kascade.Core;

/// <summary>
/// Key positions chosen for sparse attention, in memory the backend owns (FlashInfer's plan/run split; DESIGN §2):
/// row <c>unit · Selectors + selector</c> lists up to <see cref="Capacity"/> positions for one unit — a 32-query tile of
/// a prefill chunk (<see cref="QueryTile.Of"/>, in order) or the decode step — and one selector: a KV head's GQA
/// group, or all heads when <see cref="Selectors"/> is 1. An anchor writes a plan and the reuse layers after it read
/// it through a head map; a session allocates one plan for its largest chunk, so no step allocates.
/// </summary>
public abstract class KeyPlan : IDisposable
{
    protected KeyPlan(int units, int selectors, int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(units, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(selectors, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        Units = units;
        Selectors = selectors;
        Capacity = capacity;
    }

    /// <summary>Tiles of the largest chunk the plan holds (1 for decode).</summary>
    public int Units { get; }

    public int Selectors { get; }

    /// <summary>Most positions a row holds: the budget at the session's capacity.</summary>
    public int Capacity { get; }

    public int Rows => Units * Selectors;

    /// <summary>Units a chunk of <paramref name="tokens"/> tokens touches at most (it may start inside a tile).</summary>
    public static int UnitsFor(int tokens) => (tokens + TopKBudget.TileSize - 1) / TopKBudget.TileSize + 1;

    public abstract void Dispose();
}
