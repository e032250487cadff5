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
    public void Anchor_refresh_1_is_the_plain_policy()
    {
        var ids = Prompt(900);
        var policy = new AttentionPolicy(AttentionMethod.Kascade, Schedule, 10);
        Assert.Equal(Run(ids, policy, 256, 6), Run(ids, policy with { AnchorRefresh = 1 }, 256, 6));
    }

    [Fact]
    public void A_kept_selection_still_attends_the_keys_appended_since()
    {
        // At 100% a selection holds every key: kept for 8 steps and extended by each step's key, it stays dense. Without
        // the extension the steps after the first would miss their own keys and differ from dense.
        var ids = Prompt(700);
        Compare.Close(Run(ids, AttentionPolicy.Dense, 256, 6), Run(ids, new AttentionPolicy(AttentionMethod.Kascade, Schedule, 100) { AnchorRefresh = 8 }, 256, 6),
            Tolerances.InstrumentFp32Logits, 0, "kascade p=100, refresh 8");
        // At 10% keeping the selection changes the later steps and only those: the first decode step selects either way.
        var plain = Run(ids, new AttentionPolicy(AttentionMethod.Kascade, Schedule, 10), 256, 6);
        var kept = Run(ids, new AttentionPolicy(AttentionMethod.Kascade, Schedule, 10) { AnchorRefresh = 4 }, 256, 6);
        int vocab = Instrument.Value.Config.VocabSize;
        Assert.Equal(plain.AsSpan(0, 2 * vocab).ToArray(), kept.AsSpan(0, 2 * vocab).ToArray());
        Assert.True(Compare.MaxAbsDiff(plain.AsSpan(2 * vocab, vocab), kept.AsSpan(2 * vocab, vocab)) > 0, "the second decode step reads the kept selection");
    }

    [Fact]
    public void A_plan_extends_to_the_next_decode_step_only()
    {
        var b = new CpuBackend();
        using var plan = b.AllocatePlan(1, 2, 8);
        var args = new AttentionArgs(0, 1, 50, 4, 2, 16, 0.25f);
        Assert.Throws<InvalidOperationException>(() => b.ExtendPlan(args, plan));
        // As issued: only the step right after the one served. Issued in a recorded step, whose replays served later
        // steps unseen by the host: any later decode step (a re-recording after replays is one).
        KeyPlan.CheckExtend(args, (49, 1));
        Assert.Throws<InvalidOperationException>(() => KeyPlan.CheckExtend(args, (48, 1)));
        KeyPlan.CheckExtend(args, (40, 1), recorded: true);
        Assert.Throws<InvalidOperationException>(() => KeyPlan.CheckExtend(args, (50, 1), recorded: true));
        Assert.Throws<InvalidOperationException>(() => KeyPlan.CheckExtend(args, (40, 8), recorded: true));
        Assert.Throws<InvalidOperationException>(() => KeyPlan.CheckExtend(args with { Tokens = 2 }, (49, 1)));
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
