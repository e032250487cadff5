namespace Kascade.Core;

/// <summary>
/// The queries of one Kascade tile within a chunk and the keys they choose from (DESIGN §3).
/// Prefill: queries in <c>[QueryStart, QueryEnd)</c> of the absolute tile starting at <see cref="DiagonalStart"/>;
/// Top-k candidates are the keys before it, <c>[0, CandidateEnd)</c>, and query q also sees the diagonal keys
/// <c>[DiagonalStart, q]</c>. Decode (a one-token chunk): candidates are all keys including the new one, no diagonal.
/// </summary>
public readonly record struct QueryTile(int QueryStart, int QueryEnd, int CandidateEnd, int DiagonalStart)
{
    public int Queries => QueryEnd - QueryStart;

    /// <summary>The tiles of a chunk of <paramref name="tokens"/> queries from <paramref name="start"/>.</summary>
    public static QueryTile[] Of(int start, int tokens, int tileSize = TopKBudget.TileSize)
    {
        if (tokens == 1)
        {
            return [new QueryTile(start, start + 1, start + 1, start + 1)];
        }
        int first = start / tileSize, last = (start + tokens - 1) / tileSize;
        var tiles = new QueryTile[last - first + 1];
        for (int t = first; t <= last; t++)
        {
            int s = t * tileSize;
            tiles[t - first] = new QueryTile(Math.Max(s, start), Math.Min(s + tileSize, start + tokens), s, s);
        }
        return tiles;
    }
}
