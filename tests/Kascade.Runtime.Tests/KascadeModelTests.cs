using Kascade.Core;
using Kascade.Cpu;
using Kascade.Runtime.Kascade;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>Kascade through the whole instrument model with its committed schedule.</summary>
public class KascadeModelTests
{
    private static readonly InstrumentRuns Runs = new();

    private static Lazy<ModelDirectory> Instrument => Runs.Directory;

    private static KascadeSchedule Schedule => ScheduleFile.Load(Path.Combine(TestPaths.InstrumentModel, "kascade-schedule.json"), Instrument.Value.Config);

    private static int[] Prompt(int tokens) => Runs.Prompt(tokens);

    private static float[] Run(int[] ids, AttentionPolicy policy, int chunk, int decodeSteps) => Runs.Run(ids, policy, chunk, decodeSteps);

    [Fact]
    public void Kascade_and_oracle_at_100_percent_equal_dense_through_prefill_and_decode()
    {
        var ids = Prompt(700);
        var dense = Run(ids, AttentionPolicy.Dense, 256, 4);
        Compare.Close(dense, Run(ids, new AttentionPolicy(AttentionMethod.Kascade, Schedule, 100), 256, 4), Tolerances.InstrumentFp32Logits, 0, "kascade p=100");
        Compare.Close(dense, Run(ids, new AttentionPolicy(AttentionMethod.OracleTopK, null, 100), 256, 4), Tolerances.InstrumentFp32Logits, 0, "oracle p=100");
    }

    [Fact]
    public void Kascade_does_not_depend_on_the_prefill_chunking()
    {
        // Tiles are absolute 32-position tiles and sparse sessions round chunks down to whole tiles (100 → 96).
        var ids = Prompt(1000);
        var policy = new AttentionPolicy(AttentionMethod.Kascade, Schedule, 10);
        var whole = Run(ids, policy, 512, 3);
        Compare.Close(whole, Run(ids, policy, 96, 3), Tolerances.InstrumentFp32Logits, 0, "chunks of 96 vs 512");
        Compare.Close(whole, Run(ids, policy, 100, 3), Tolerances.InstrumentFp32Logits, 0, "chunks of 100 vs 512");
        Assert.True(Compare.MaxAbsDiff(whole, Run(ids, AttentionPolicy.Dense, 512, 3)) > 0.1, "at 10% Kascade should differ from dense on a 1000-token prompt");
    }

    [Fact]
    public void A_schedule_for_another_model_is_refused()
    {
        var other = Schedule with { Model = Schedule.Model with { Layers = 32 } };
        var e = Assert.Throws<KascadeException>(() => Instrument.Value.Model.CreateSession(64, 64, new AttentionPolicy(AttentionMethod.Kascade, other)));
        Assert.Contains("schedule is for 32 layers", e.Message);
        Assert.Contains("needs a Kascade schedule", Assert.Throws<KascadeException>(() => Instrument.Value.Model.CreateSession(64, 64, new AttentionPolicy(AttentionMethod.Kascade))).Message);
    }
}
