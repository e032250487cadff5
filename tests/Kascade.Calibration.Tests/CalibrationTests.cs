using Kascade.Calibration;
using Kascade.Core;
using Kascade.Runtime.Kascade;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Calibration.Tests;

public class AnchorSelectionTests
{
    private static double[][] RandomWeighted(int n, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, n).Select(a => Enumerable.Range(0, n).Select(b => b < a ? 0 : b == a ? rng.NextDouble() : rng.NextDouble() * rng.NextDouble()).ToArray()).ToArray();
    }

    private static IEnumerable<int[]> AllAnchorSets(int n, int k)
    {
        // Layer 0 plus every (k−1)-subset of 1..n−1, ascending.
        IEnumerable<int[]> Choose(int from, int count) => count == 0
            ? [[]]
            : Enumerable.Range(from, n - from).SelectMany(first => Choose(first + 1, count - 1).Select(rest => rest.Prepend(first).ToArray()));
        return Choose(1, k - 1).Select(rest => rest.Prepend(0).ToArray());
    }

    [Theory]
    [InlineData(6, 3, 1)]
    [InlineData(9, 4, 2)]
    [InlineData(10, 5, 3)]
    [InlineData(8, 1, 4)]
    [InlineData(7, 7, 5)]
    public void Dp_equals_brute_force_enumeration(int layers, int anchors, int seed)
    {
        var w = RandomWeighted(layers, seed);
        var (chosen, score) = AnchorSelection.Solve(w, anchors);
        var best = AllAnchorSets(layers, anchors).MaxBy(a => AnchorSelection.Score(w, a))!;
        Assert.Equal(AnchorSelection.Score(w, best), score, 9);
        Assert.Equal(AnchorSelection.Score(w, chosen), score, 9);
        Assert.Equal(0, chosen[0]);
    }

    [Theory]
    [InlineData(7, 11)]
    [InlineData(9, 12)]
    public void Every_anchor_count_equals_brute_force_with_its_weakest_layer(int layers, int seed)
    {
        var w = RandomWeighted(layers, seed);
        var similarity = RandomWeighted(layers, seed + 100);
        var choices = AnchorSelection.SolveAll(w, similarity);
        Assert.Equal(Enumerable.Range(1, layers), choices.Select(c => c.AnchorCount));
        foreach (var c in choices)
        {
            var best = AllAnchorSets(layers, c.AnchorCount).Max(a => AnchorSelection.Score(w, a));
            Assert.Equal(best, c.Score, 9);
            Assert.Equal(AnchorSelection.Score(w, c.Anchors), c.Score, 9);
            // The weakest covered layer, by hand: each reuse layer against its nearest earlier anchor.
            double weakest = Enumerable.Range(0, layers).Where(j => !c.Anchors.Contains(j))
                .Select(j => similarity[c.Anchors.Last(a => a < j)][j]).DefaultIfEmpty(1).Min();
            Assert.Equal(weakest, c.WeakestSimilarity);
        }
        Assert.Equal(1, choices[^1].WeakestSimilarity);
    }

    /// <summary>
    /// Hand-built S for 5 layers (weights 1): layer 2 is poorly predicted by 0 or 1 (0.5, 0.6), layers 3 and 4 well by
    /// 2 (0.95, 0.9) and by 0 only at 0.7. With 2 anchors the DP picks {0, 2} (score 4.77; weakest S[2][4] = 0.9), with
    /// 3 {0, 2, 4} (4.87; weakest S[0][1] = 0.92), with 4 {0, 1, 2, 4} (4.95; weakest 0.95). Auto at 0.9 takes 2
    /// anchors, at 0.93 four.
    /// </summary>
    [Fact]
    public void Auto_takes_the_fewest_anchors_whose_weakest_layer_reaches_the_target()
    {
        double[][] s =
        [
            [1.0, 0.92, 0.5, 0.7, 0.7],
            [0.0, 1.0, 0.6, 0.7, 0.7],
            [0.0, 0.0, 1.0, 0.95, 0.9],
            [0.0, 0.0, 0.0, 1.0, 0.9],
            [0.0, 0.0, 0.0, 0.0, 1.0],
        ];
        var choices = AnchorSelection.SolveAll(s, s);
        Assert.Equal([0, 2], choices[1].Anchors);
        Assert.Equal(0.9, choices[1].WeakestSimilarity);
        Assert.Equal(2, AnchorSelection.Auto(choices, 0.9).AnchorCount);
        Assert.Equal(1, AnchorSelection.Auto(choices, 0.5).AnchorCount);
        Assert.Equal([0, 2, 4], choices[2].Anchors);
        Assert.Equal(0.92, choices[2].WeakestSimilarity);
        var strict = AnchorSelection.Auto(choices, 0.93);
        Assert.Equal([0, 1, 2, 4], strict.Anchors);
        Assert.Equal(0.95, strict.WeakestSimilarity);
        Assert.Equal(5, AnchorSelection.Auto(choices, 1.0).AnchorCount);
    }

    [Fact]
    public void Hand_computed_dp()
    {
        // Layers 0..3. Layer 2 is poorly covered by 0 but covers 3 well: with 2 anchors the DP picks {0, 2}.
        double[][] w =
        [
            [1.0, 0.9, 0.1, 0.1],
            [0.0, 1.0, 0.2, 0.2],
            [0.0, 0.0, 1.0, 0.9],
            [0.0, 0.0, 0.0, 1.0],
        ];
        var (anchors, score) = AnchorSelection.Solve(w, 2);
        Assert.Equal([0, 2], anchors);
        Assert.Equal(1.0 + 0.9 + 1.0 + 0.9, score, 12);
    }

    /// <summary>
    /// Layers 0..3, importance 1, 1, 1, 0.3; layer 3 is predicted by no earlier layer but 2 (S = 0.01, 0.05, 0.9). With 2
    /// anchors the paper's objective takes {0, 1}: 1 + 1 + 0.9 + 0.3 · 0.05 = 2.915 against {0, 2}'s 1 + 0.5 + 1 + 0.3 · 0.9
    /// = 2.77, leaving layer 3 at 0.05. The log objective takes {0, 2}: ln 0.5 + 0.3 ln 0.9 = −0.725 against {0, 1}'s
    /// ln 0.9 + 0.3 ln 0.05 = −1.004. The floor keeps a similarity of 0 finite.
    /// </summary>
    [Fact]
    public void The_log_objective_lifts_a_badly_predicted_layer_the_weighted_one_leaves()
    {
        double[][] s =
        [
            [1.0, 0.5, 0.5, 0.01],
            [0.0, 1.0, 0.9, 0.05],
            [0.0, 0.0, 1.0, 0.9],
            [0.0, 0.0, 0.0, 1.0],
        ];
        double[] importance = [1, 1, 1, 0.3];
        var weighted = AnchorSelection.Solve(AnchorSelection.Objective(s, importance, AnchorObjective.Weighted), 2);
        Assert.Equal([0, 1], weighted.Anchors);
        Assert.Equal(2.915, weighted.Score, 12);
        var log = AnchorSelection.Solve(AnchorSelection.Objective(s, importance, AnchorObjective.LogWeighted), 2);
        Assert.Equal([0, 2], log.Anchors);
        Assert.Equal(Math.Log(0.5) + 0.3 * Math.Log(0.9), log.Score, 12);
        Assert.Equal(0.3 * Math.Log(AnchorSelection.LogFloor), AnchorSelection.Objective([[1, 0], [0, 1]], [1, 0.3], AnchorObjective.LogWeighted)[0][1], 12);
    }

    [Theory]
    [InlineData(6, 3, 21)]
    [InlineData(8, 4, 22)]
    public void Dp_on_the_log_objective_equals_brute_force(int layers, int anchors, int seed)
    {
        var similarity = RandomWeighted(layers, seed);
        var importance = RandomWeighted(1, seed + 1)[0].Concat(Enumerable.Range(1, layers - 1).Select(i => 0.1 * i)).ToArray();
        var w = AnchorSelection.Objective(similarity, importance, AnchorObjective.LogWeighted);
        var (chosen, score) = AnchorSelection.Solve(w, anchors);
        Assert.Equal(AllAnchorSets(layers, anchors).Max(a => AnchorSelection.Score(w, a)), score, 9);
        Assert.Equal(AnchorSelection.Score(w, chosen), score, 9);
    }
}

public class HeadMapTests
{
    [Fact]
    public void Head_map_is_the_argmax_over_anchor_heads_and_identity_at_anchors()
    {
        const int layers = 4, heads = 3;
        var sim = Enumerable.Range(0, layers).Select(_ => Enumerable.Range(0, layers).Select(_ => Enumerable.Range(0, heads).Select(_ => new double[heads]).ToArray()).ToArray()).ToArray();
        // Layer 1 (anchor 0): head 0 ← 2, head 1 ← 0, head 2 ← 1. Layer 3 (anchor 2): head b ← b with the best similarity.
        sim[0][1][0] = [0.1, 0.2, 0.9];
        sim[0][1][1] = [0.8, 0.7, 0.1];
        sim[0][1][2] = [0.3, 0.6, 0.5];
        sim[2][3][0] = [0.9, 0.1, 0.1];
        sim[2][3][1] = [0.5, 0.5, 0.1]; // a tie goes to the lower head
        sim[2][3][2] = [0.1, 0.1, 0.3];
        var map = HeadMaps.Build(sim, [0, 2], layers, heads);
        Assert.Equal([0, 1, 2], map[0]);
        Assert.Equal([2, 0, 1], map[1]);
        Assert.Equal([0, 1, 2], map[2]);
        Assert.Equal([0, 0, 2], map[3]);
        var s = HeadMaps.LayerSimilarity(sim, layers);
        Assert.Equal((0.9 + 0.8 + 0.6) / 3, s[0][1], 12);
        Assert.Equal(1, s[3][3]);

        // One calibration's schedule for another anchor count: the DP's anchors for that count, head maps rebuilt for them.
        var choices = new[] { new AnchorChoice(1, [0], 1), new AnchorChoice(2, [0, 2], 2), new AnchorChoice(3, [0, 1, 2], 3), new AnchorChoice(4, [0, 1, 2, 3], 4) };
        var written = new KascadeSchedule(new ModelIdentity("LlamaForCausalLM", layers, 6, heads, "h"), [0], HeadMaps.Build(sim, [0], layers, heads), Choices: choices);
        var result = new CalibrationResult(written, s, new double[layers], sim);
        var two = result.ScheduleFor(2);
        Assert.Equal([0, 2], two.Anchors);
        Assert.Equal(map.Select(r => string.Join(",", r)), two.HeadMap.Select(r => string.Join(",", r)));
        Assert.Equal([0, 1, 2, 3], result.ScheduleFor(4).Anchors);
        Assert.Contains("5 anchors: the calibration ranked 1 to 4 (the model's layers)", Assert.Throws<KascadeException>(() => result.ScheduleFor(5)).Message);
    }
}

public class ScheduleFileTests
{
    private static ModelConfig Config => ConfigLoader.Load(TestPaths.InstrumentModel);

    /// <summary>The embedded model's layer count (the schedules below need at least 9 layers and 2 KV heads).</summary>
    private static int Layers => Config.Layers;

    private static KascadeSchedule Valid() => new(
        ScheduleFile.Identity(Config, "abc"),
        [0, 2, 8],
        Enumerable.Range(0, Layers).Select(l => (IReadOnlyList<int>)(l is 0 or 2 or 8 ? [0, 1] : [1, 0])).ToArray(),
        12.5,
        Provenance: new CalibrationProvenance("dev.jsonl", 3, 32, 32, DateTimeOffset.Parse("2026-11-22T00:00:00Z"), "kascade test"),
        Choices: [new AnchorChoice(3, [0, 2, 8], 1.5)],
        Similarity: [[1.0, 0.5], [0.0, 1.0]],
        Importance: [0.1, 0.2]);

    [Fact]
    public void Round_trip()
    {
        using var dir = new TempDirectory();
        var s = Valid();
        ScheduleFile.Save(s, dir.File("s.json"));
        var back = ScheduleFile.Load(dir.File("s.json"), Config);
        Assert.Equal(s.Model, back.Model);
        Assert.Equal(s.Anchors, back.Anchors);
        Assert.Equal(s.HeadMap.Select(r => r.ToArray()), back.HeadMap.Select(r => r.ToArray()));
        Assert.Equal(s.TopKPercent, back.TopKPercent);
        Assert.Equal(s.Provenance, back.Provenance);
        Assert.Equal(s.Choices![0].Anchors, back.Choices![0].Anchors);
        var reuse = Assert.IsType<LayerRole.Reuse>(back.RoleOf(5));
        Assert.Equal(2, reuse.AnchorLayer);
        Assert.Equal([1, 0], reuse.HeadMap);
        Assert.IsType<LayerRole.Anchor>(back.RoleOf(8));
        // The DP objective: a file written before it was recorded is the paper's; a log-objective calibration says so.
        var schedules = Path.Combine(TestPaths.RepoRoot, "docs", "results", "frontier", "schedules");
        Assert.Equal("weighted", ScheduleFile.Load(Path.Combine(schedules, "instrument.k5.json"), Config).Provenance!.Objective);
        var log = ScheduleFile.Load(Path.Combine(schedules, "instrument-log.k5.json"), Config);
        Assert.Equal("log", log.Provenance!.Objective);
        Assert.Equal([0, 2, 17, 18, 22], log.Anchors);
    }

    public static TheoryData<string, string> BadFiles => new()
    {
        { "{\"model\": {\"architecture\": \"LlamaForCausalLM\", \"layers\": 24, \"heads\": 4, \"kv_heads\": 2, \"config_hash\": \"x\"}, \"head_map\": [[0,1]]}", "missing anchors" },
        { "{\"anchors\": [0], \"head_map\": [[0,1]]}", "missing model" },
        { "not json", "is not a valid schedule" },
    };

    [Theory]
    [MemberData(nameof(BadFiles))]
    public void Malformed_files_are_rejected(string content, string message)
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("s.json"), content);
        var e = Assert.Throws<KascadeException>(() => ScheduleFile.Load(dir.File("s.json"), Config));
        Assert.Contains(message, e.Message);
    }

    [Fact]
    public void An_unknown_dp_objective_is_named()
    {
        using var dir = new TempDirectory();
        ScheduleFile.Save(Valid() with { Provenance = Valid().Provenance! with { Objective = "max" } }, dir.File("s.json"));
        var e = Assert.Throws<KascadeException>(() => ScheduleFile.Load(dir.File("s.json"), Config));
        Assert.Contains("provenance.objective 'max' is none of weighted, log", e.Message);
    }

    [Fact]
    public void Wrong_layer_count_head_map_out_of_range_and_bad_anchors_are_named()
    {
        using var dir = new TempDirectory();
        var bad = Valid() with
        {
            Anchors = [1, 2],
            HeadMap = Enumerable.Range(0, Layers - 1).Select(l => (IReadOnlyList<int>)(l == 5 ? [0, 7] : [0, 1])).ToArray(),
        };
        ScheduleFile.Save(bad, dir.File("s.json"));
        var e = Assert.Throws<KascadeException>(() => ScheduleFile.Load(dir.File("s.json"), Config));
        Assert.Contains("the first anchor must be layer 0", e.Message);
        Assert.Contains($"head map has {Layers - 1} layers; the model has {Layers}", e.Message);
        Assert.Contains("head map of layer 5 is [0, 7]", e.Message);

        ScheduleFile.Save(Valid() with { Model = Valid().Model with { Layers = Layers + 8 } }, dir.File("t.json"));
        Assert.Contains($"schedule is for {Layers + 8} layers", Assert.Throws<KascadeException>(() => ScheduleFile.Load(dir.File("t.json"), Config)).Message);
    }

    [Fact]
    public void Official_npy_head_map_imports()
    {
        using var dir = new TempDirectory();
        var values = Enumerable.Range(0, 2 * Layers).Select(i => i % 2 == 0 ? 1 : 0).ToArray();
        WriteNpy(dir.File("map.npy"), [Layers, 2], values);
        var s = ScheduleFile.ImportOfficial(dir.File("map.npy"), [0, 2, 8], Config, "h");
        Assert.Equal([0, 1], s.HeadMap[2]); // anchors are the identity whatever the file says
        Assert.Equal([1, 0], s.HeadMap[3]);
        WriteNpy(dir.File("bad.npy"), [Layers, 3], new int[3 * Layers]);
        Assert.Contains($"has shape ({Layers}, 3)", Assert.Throws<KascadeException>(() => ScheduleFile.ImportOfficial(dir.File("bad.npy"), [0], Config, "h")).Message);
    }

    private static void WriteNpy(string path, int[] shape, int[] values)
    {
        string header = $"{{'descr': '<i4', 'fortran_order': False, 'shape': ({string.Join(", ", shape)}), }}";
        header = header.PadRight((header.Length + 11) / 64 * 64 + 63 - 10) + "\n";
        using var w = new BinaryWriter(File.Create(path));
        w.Write((byte)0x93);
        w.Write("NUMPY"u8.ToArray());
        w.Write((byte)1);
        w.Write((byte)0);
        w.Write((ushort)header.Length);
        w.Write(System.Text.Encoding.ASCII.GetBytes(header));
        foreach (var v in values)
        {
            w.Write(v);
        }
    }
}

public class DevSetTests
{
    [Fact]
    public void Bad_lines_are_rejected_with_their_number()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("d.jsonl"), "{\"id\": \"a\", \"prompt\": \"x\"}\n\n{\"id\": \"b\"}\n");
        var e = Assert.Throws<KascadeException>(() => DevSet.Read(dir.File("d.jsonl")));
        Assert.Contains("line 3", e.Message);
    }

    [Fact]
    public void The_committed_instrument_dev_set_reads_and_fits_the_context()
    {
        var set = DevSet.Read(Path.Combine(TestPaths.RepoRoot, "data", "calibration", "instrument-dev.jsonl"));
        Assert.Equal(24, set.Count);
        var tok = Runtime.Tokenization.TextTokenizer.Load(TestPaths.InstrumentModel);
        Assert.All(set, e => Assert.InRange(tok.Encode(e.Prompt).Length, 1500, 2400));
    }
}

public class AttentionMassTests
{
    [Fact]
    public void Top_k_sum_equals_the_sorted_prefix_sum()
    {
        var rng = new Random(3);
        foreach (int n in new[] { 1, 7, 100, 1000 })
        {
            var v = Enumerable.Range(0, n).Select(_ => (float)Math.Round(rng.NextDouble(), 2)).ToArray(); // rounding makes ties
            foreach (int k in new[] { 1, n / 3 + 1, n })
            {
                double expected = v.OrderByDescending(x => x).Take(k).Sum(x => (double)x);
                // Both sums add the same floats in double, in different orders: at most n · 2⁻⁵³ · Σ|v| ≈ 1e-10 apart.
                Assert.Equal(expected, AttentionMassAnalyzer.TopKSum(v, k), 1e-9);
            }
        }
    }
}
