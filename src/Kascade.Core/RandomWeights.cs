using System.Text;

namespace Kascade.Core;

/// <summary>
/// The counter-based generator every backend uses for random weights, so a random model is the same model on the
/// CPU and on the GPU: element i of a weight is <c>center + scale · u</c> with u from splitmix64 of (key, i).
/// </summary>
public static class RandomWeights
{
    /// <summary>Key of a weight: FNV-1a of its name mixed with the model seed (stable across processes).</summary>
    public static ulong Key(string name, ulong seed)
    {
        ulong hash = 14695981039346656037UL;
        foreach (byte b in Encoding.UTF8.GetBytes(name))
        {
            hash = (hash ^ b) * 1099511628211UL;
        }
        return hash ^ (seed * 0x9E3779B97F4A7C15UL);
    }

    /// <summary>Uniform in [−1, 1) from the top 24 bits of splitmix64(key + index · golden ratio).</summary>
    public static float Uniform(ulong key, long index)
    {
        ulong z = key + (ulong)index * 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (z >> 40) * (2f / 16777216f) - 1f;
    }
}
