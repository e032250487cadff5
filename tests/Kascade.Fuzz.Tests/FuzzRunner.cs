using System.Diagnostics;
using System.Globalization;
using Kascade.Core;

namespace Kascade.Fuzz.Tests;

/// <summary>One input format under fuzzing: its valid seed and how a program would load (and use) a file of it.</summary>
public interface IFuzzTarget
{
    string Name { get; }

    /// <summary>The unmutated seed file, which must load: otherwise every refusal of a mutant would mean nothing.</summary>
    byte[] Original();

    /// <summary>A mutated file for case <paramref name="rng"/>; <paramref name="what"/> says what was done to the seed.</summary>
    byte[] Mutate(Random rng, out string what);

    /// <summary>Loads <paramref name="input"/> as the product would and uses what loads; throws what the product throws.</summary>
    void Load(byte[] input);
}

/// <summary>What became of the cases of one target.</summary>
public sealed record FuzzCounts(string Target, int Cases, int Loaded, int Refused, IReadOnlyList<string> Failures, TimeSpan Elapsed)
{
    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"| {Target} | {Cases} | {Loaded} | {Refused} | {Failures.Count} | {Elapsed.TotalSeconds:F1} |");
}

/// <summary>
/// Runs a target's cases: case i is mutated from a <see cref="Random"/> seeded by the target's name and i, so a failure
/// is reproduced by its number whatever the time budget. Every case must load or be refused with a
/// <see cref="KascadeException"/> within <see cref="CaseTimeout"/>; any other exception, or a case still running by
/// then, is a failure. The run stops after <c>cases</c> cases, or when <c>budget</c> has passed.
/// </summary>
public static class FuzzRunner
{
    /// <summary>Far above any honest case (a catastrophic tokenizer pattern ends after the tokenizer's 1 s match timeout).</summary>
    public static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(30);

    public static FuzzCounts Run(IFuzzTarget target, int? cases, TimeSpan budget, int firstCase = 0)
    {
        var clock = Stopwatch.StartNew();
        int loaded = 0, refused = 0, n = 0;
        var failures = new List<string>();
        for (int i = firstCase; cases is { } c ? n < c : clock.Elapsed < budget; i++, n++)
        {
            var rng = new Random(Seed(target.Name, i));
            byte[] input = target.Mutate(rng, out string what);
            var work = Task.Run(() => target.Load(input));
            try
            {
                if (!work.Wait(CaseTimeout))
                {
                    failures.Add($"case {i} ({what}): still running after {CaseTimeout.TotalSeconds} s");
                    break;   // the hung case keeps its thread; stop here
                }
                loaded++;
            }
            catch (AggregateException e) when (e.InnerException is KascadeException)
            {
                refused++;
            }
            catch (AggregateException e)
            {
                failures.Add($"case {i} ({what}): {e.InnerException}");
            }
        }
        return new FuzzCounts(target.Name, n, loaded, refused, failures, clock.Elapsed);
    }

    /// <summary>A seed that is the same on every run and every machine (string.GetHashCode is randomised per process).</summary>
    public static int Seed(string target, int index)
    {
        uint h = 2166136261;
        foreach (char ch in target)
        {
            h = (h ^ ch) * 16777619;
        }
        return (int)((h ^ (uint)index) * 2654435761u);
    }
}
