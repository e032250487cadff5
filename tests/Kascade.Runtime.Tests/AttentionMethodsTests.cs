using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Diagnostics;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>The registry of attention methods that the CLI, the sessions and <c>kascade methods</c> read.</summary>
public class AttentionMethodsTests
{
    [Fact]
    public void Every_method_is_registered_once_under_a_unique_name()
    {
        Assert.Equal(Enum.GetValues<AttentionMethod>().Order(), AttentionMethods.All.Select(m => m.Method).Order());
        Assert.Equal(AttentionMethods.All.Count, AttentionMethods.All.Select(m => m.Name).Distinct().Count());
        Assert.All(AttentionMethods.All, m => Assert.Same(m, AttentionMethods.Find(m.Name)));
        Assert.All(AttentionMethods.All, m => Assert.True(CpuBackend.RunsMethod(m.Method), $"the CPU reference must run {m.Name}"));
    }

    [Fact]
    public void Policies_take_their_schedule_and_host_selection_from_the_registry()
    {
        Assert.True(new AttentionPolicy(AttentionMethod.KascadeNoRemap).NeedsSchedule);
        Assert.False(new AttentionPolicy(AttentionMethod.OracleTopK).NeedsSchedule);
        Assert.True(new AttentionPolicy(AttentionMethod.SparCas).IsBaseline);
        Assert.False(new AttentionPolicy(AttentionMethod.Kascade).IsBaseline);
        Assert.Equal(["streamingllm", "quest", "omnikv", "lessismore", "sparcas"], AttentionMethods.All.Where(m => m.Baseline).Select(m => m.Name));
    }

    [Fact]
    public void An_unknown_name_is_refused_with_the_list()
    {
        var e = Assert.Throws<KascadeException>(() => AttentionMethods.Find("bigbird"));
        Assert.Equal($"unknown attention 'bigbird'; choose from {AttentionMethods.Names}", e.Message);
    }

    [Fact]
    public void Method_parity_runs_every_method_through_prefill_and_greedy_decode()
    {
        using var reference = ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend());
        using var candidate = ModelDirectory.Open(TestPaths.InstrumentModel, new CpuBackend());
        var results = MethodParity.Run(reference, candidate);
        // Every method, and Kascade once more with kept selections (--anchor-refresh 3) right after it.
        var expected = AttentionMethods.All.SelectMany(m => m.Method == AttentionMethod.Kascade ? [m.Name, $"{m.Name} --anchor-refresh 3"] : new[] { m.Name });
        Assert.Equal(expected, results.Select(r => r.Case.Split(',')[0]));
        Assert.All(results, r => Assert.True(r.Passed && r.NotRun is null, r.ToString()));
    }
}
