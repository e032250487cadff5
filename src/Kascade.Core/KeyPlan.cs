namespace Kascade.Core;

/// <summary>What one unit of a <see cref="KeyPlan"/> is.</summary>
public enum PlanUnit
{
    /// <summary>A 32-query tile of the chunk (<see cref="QueryTile.Of"/>): its queries also attend their tile's diagonal keys up to themselves (Kascade).</summary>
    Tile,

    /// <summary>One query token of the chunk: it attends exactly its rows' positions (streamingllm's windows).</summary>
    Token,
}

/// <summary>
/// Key positions chosen for sparse attention, in memory the backend owns (FlashInfer's plan/run split; DESIGN §2):
/// row <c>unit · Selectors + selector</c> lists up to <see cref="Capacity"/> positions for one unit — a 32-query tile of
/// a prefill chunk (<see cref="QueryTile.Of"/>, in order), a query token (<see cref="PlanUnit.Token"/>) or the decode
/// step (one unit of either kind; a unit per sequence for a batch's, <see cref="IBatchedDecode"/>) — and one selector: a KV head's GQA group, one query head, or all heads when
/// <see cref="Selectors"/> is 1. An anchor or a baseline's selector writes a plan and the layers after it read it
/// through a head map; a session allocates its plans once, so no step allocates.
/// </summary>
public abstract class KeyPlan : IDisposable
{
    protected KeyPlan(int units, int selectors, int capacity, PlanUnit unit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(units, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(selectors, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        Units = units;
        Selectors = selectors;
        Capacity = capacity;
        Unit = unit;
    }

    public PlanUnit Unit { get; }

    /// <summary>Tiles or tokens of the largest chunk the plan holds (1 for a decode step; a batch's decode: one per sequence).</summary>
    public int Units { get; }

    public int Selectors { get; }

    /// <summary>Most positions a row holds: the budget at the session's capacity.</summary>
    public int Capacity { get; }

    public int Rows => Units * Selectors;

    /// <summary>The chunk the plan was last written for, as issued: a reuse layer must read its own chunk's plan.</summary>
    public (int Start, int Tokens) Chunk { get; private set; } = (-1, 0);

    /// <summary>
    /// Whether <see cref="Chunk"/> was issued inside a recorded step: replays of it write the plan for later positions
    /// the host does not see, so the plan may serve a later decode step than <see cref="Chunk"/> says.
    /// </summary>
    public bool Recorded { get; private set; }

    /// <summary>
    /// Notes the chunk a backend's op just issued the plan for: <paramref name="tokens"/> queries from
    /// <c>args.StartPosition</c>, issued inside a recorded step when <paramref name="recording"/>. Every op that writes
    /// a plan calls it; <see cref="CheckServes"/> and <see cref="CheckExtend(AttentionArgs)"/> read it.
    /// </summary>
    public void Serve(AttentionArgs args, int tokens, bool recording)
    {
        Chunk = (args.StartPosition, tokens);
        Recorded = recording;
        Written();
    }

    /// <summary>Called by <see cref="Serve"/> once an op has issued its writes of the plan (a backend's own bookkeeping).</summary>
    protected virtual void Written()
    {
    }

    /// <summary>
    /// Refuses host rows <see cref="IBackend.WritePlan"/> cannot write: more rows than the plan has, fewer indices than
    /// <c>counts.Length · Capacity</c>, a count outside <c>[0, Capacity]</c>, or a position outside the keys of
    /// <paramref name="args"/>' chunk <c>[0, StartPosition + Tokens)</c>.
    /// </summary>
    public void CheckWrite(AttentionArgs args, ReadOnlySpan<int> counts, ReadOnlySpan<int> indices)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(counts.Length, Rows);
        ArgumentOutOfRangeException.ThrowIfLessThan(indices.Length, counts.Length * Capacity);
        int keys = args.StartPosition + args.Tokens;
        for (int row = 0; row < counts.Length; row++)
        {
            if (counts[row] < 0 || counts[row] > Capacity)
            {
                throw new ArgumentException($"row {row} lists {counts[row]} positions; the plan holds 0 to {Capacity}");
            }
            foreach (int position in indices.Slice(row * Capacity, counts[row]))
            {
                if (position < 0 || position >= keys)
                {
                    throw new ArgumentException($"row {row} lists position {position}, outside the chunk's {keys} keys");
                }
            }
        }
    }

    /// <summary>Refuses to read the plan (sparse attention) for any chunk but the one it was written for.</summary>
    public void CheckServes(AttentionArgs args)
    {
        if (Chunk != (args.StartPosition, args.Tokens))
        {
            throw new InvalidOperationException($"the plan was written for [{Chunk.Start}, +{Chunk.Tokens}); layer {args.Layer} runs [{args.StartPosition}, +{args.Tokens})");
        }
    }

    /// <summary><see cref="CheckExtend(AttentionArgs, ValueTuple{int, int}, bool)"/> for the chunk this plan serves.</summary>
    public void CheckExtend(AttentionArgs args) => CheckExtend(args, Chunk, Recorded);

    /// <summary>
    /// The selector each query head reads under <paramref name="headMap"/>: <c>KvHeads</c> entries give a KV head's query
    /// heads one selector (Kascade's head maps), <c>Heads</c> entries give each query head its own. Refuses a map of
    /// another length or naming a selector the plan does not have.
    /// </summary>
    public int[] SelectorOfHead(int heads, int kvHeads, IReadOnlyList<int> headMap)
    {
        if ((headMap.Count != kvHeads && headMap.Count != heads) || headMap.Any(s => s < 0 || s >= Selectors))
        {
            throw new ArgumentException($"a head map gives each of the {kvHeads} KV heads, or each of the {heads} query heads, one of the plan's {Selectors} selectors");
        }
        int perEntry = heads / headMap.Count;
        return [.. Enumerable.Range(0, heads).Select(h => headMap[h / perEntry])];
    }

    /// <summary>
    /// Refuses to extend a plan (<see cref="IBackend.ExtendPlan"/>) for anything but the decode step after the one it
    /// serves (<paramref name="chunk"/>: the plan's chunk, as issued). Where that chunk was issued in a recorded step
    /// (<paramref name="recorded"/>), its replays served the decode steps up to this one without the host seeing them:
    /// any later decode step is the next (a session's positions only grow; a caller that moves back, as
    /// <c>DecodeStepAttention</c>'s cycles do, selects afresh there first, which reissues the chunk).
    /// </summary>
    public static void CheckExtend(AttentionArgs args, (int Start, int Tokens) chunk, bool recorded = false)
    {
        bool next = recorded ? chunk.Start < args.StartPosition : chunk.Start == args.StartPosition - 1;
        if (args.Tokens != 1 || chunk.Tokens != 1 || !next)
        {
            throw new InvalidOperationException($"a plan serving [{chunk.Start}, +{chunk.Tokens}) extends to the next decode step only, not [{args.StartPosition}, +{args.Tokens})");
        }
    }

    /// <summary>Units a chunk of <paramref name="tokens"/> tokens touches at most (it may start inside a tile).</summary>
    public static int UnitsFor(int tokens) => (tokens + TopKBudget.TileSize - 1) / TopKBudget.TileSize + 1;

    public abstract void Dispose();
}
