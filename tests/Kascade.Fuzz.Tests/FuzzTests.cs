using System.Globalization;
using Xunit;
using Xunit.Abstractions;

namespace Kascade.Fuzz.Tests;

/// <summary>
/// Every file format kascade reads, fuzzed structurally: each case must load (and run) or be refused with one clear
/// <c>KascadeException</c>, never crash or hang. In CI each target gets <see cref="DefaultSeconds"/> (about a minute in
/// all); <c>KASCADE_FUZZ_CASES=N</c> runs exactly N cases per target instead, <c>KASCADE_FUZZ_SECONDS=S</c> gives each
/// target S seconds, and <c>KASCADE_FUZZ_REPORT=FILE</c> appends each target's counts to FILE as a Markdown row
/// (docs/fuzzing.md records a long run).
/// </summary>
[Trait("Category", "Fuzz")]
public sealed class FuzzTests(ITestOutputHelper output)
{
    private const double DefaultSeconds = 6;

    public static TheoryData<string> Targets => new() { "config.json", "safetensors header", "safetensors index", "tokenizer.json", "tokenizer.model", "schedule JSON", ".npy head map", "eval JSONL", "dev set JSONL" };

    private static IFuzzTarget Create(string name) => name switch
    {
        "config.json" => new ConfigTarget(),
        "safetensors header" => new SafeTensorsTarget(),
        "safetensors index" => new IndexTarget(),
        "tokenizer.json" => new TokenizerTarget(),
        "tokenizer.model" => new SentencePieceTarget(),
        "schedule JSON" => new ScheduleTarget(),
        ".npy head map" => new NpyTarget(),
        "eval JSONL" => new EvalJsonlTarget(),
        "dev set JSONL" => new DevSetTarget(),
        _ => throw new ArgumentOutOfRangeException(nameof(name)),
    };

    [Theory]
    [MemberData(nameof(Targets))]
    public void Every_mutated_file_loads_or_is_refused_cleanly(string name)
    {
        var target = Create(name);
        try
        {
            target.Load(target.Original());
            int? cases = Environment.GetEnvironmentVariable("KASCADE_FUZZ_CASES") is { } c ? int.Parse(c, CultureInfo.InvariantCulture) : null;
            double seconds = Environment.GetEnvironmentVariable("KASCADE_FUZZ_SECONDS") is { } s ? double.Parse(s, CultureInfo.InvariantCulture) : DefaultSeconds;
            var counts = FuzzRunner.Run(target, cases, TimeSpan.FromSeconds(seconds));
            output.WriteLine("| target | cases | loaded | refused | failures | seconds |");
            output.WriteLine(counts.ToString());
            if (Environment.GetEnvironmentVariable("KASCADE_FUZZ_REPORT") is { Length: > 0 } report)
            {
                File.AppendAllText(report, counts + Environment.NewLine);
            }
            Assert.True(counts.Failures.Count == 0, string.Join(Environment.NewLine, counts.Failures.Take(5)));
            Assert.True(counts.Cases >= 20, $"only {counts.Cases} cases ran");
            // The seed loads (above), so a refusal is the mutation's doing; a mutator that changed nothing would have none.
            Assert.True(counts.Refused > 0, $"{counts.Loaded} loaded, {counts.Refused} refused");
        }
        finally
        {
            (target as IDisposable)?.Dispose();
        }
    }
}
