using System.CommandLine;
using Kascade.Core;
using Kascade.Runtime;
using Kascade.Runtime.Kascade;

namespace Kascade.Cli;

/// <summary>The options that choose an attention policy (<c>--attention</c>, <c>--schedule</c>, <c>--topk-percent</c>, <c>--pooling</c>, <c>--score-precision</c>, …).</summary>
internal sealed class AttentionOptions
{
    /// <summary>Where <c>kascade calibrate</c> output is looked for when no <c>--schedule</c> is given.</summary>
    public const string DefaultScheduleName = "kascade-schedule.json";

    private readonly Option<string> _method = new("--attention") { Description = $"The attention method: {AttentionMethods.Names} (`kascade methods` describes them)", DefaultValueFactory = _ => "dense" };
    private readonly Option<string?> _schedule = new("--schedule") { Description = $"Kascade schedule file (default: {DefaultScheduleName} in the model directory)" };
    private readonly Option<double?> _percent = new Option<double?>("--topk-percent") { Description = "Top-k budget p in percent of the visible keys (default: the schedule's, else 10)" }.Percent();
    private readonly Option<string> _pooling = new("--pooling") { Description = "Anchor score pooling: post (post-softmax, the paper) or pre (raw scores)", DefaultValueFactory = _ => "post" };
    private readonly Option<string> _budgetRule = new("--budget-rule") { Description = "How anchors size their Top-k: rounded (ours: k rounded up to 128) or reference (the official PyTorch code's k − 32 and rolling per-tile count; docs/kascade.md)", DefaultValueFactory = _ => "rounded" };
    private readonly Option<string> _precision = new("--score-precision") { Description = "The query anchors score keys with: exact (fp32, the default) or bf16 (rounded, as the paper's kernels; one tensor-core pass per score; docs/kascade.md)", DefaultValueFactory = _ => "exact" };
    private readonly Option<int> _refresh = new Option<int>("--anchor-refresh") { Description = "Kascade decode: anchors select on every R-th step and keep their selection (plus the keys appended since) in between; 1 selects every step (the paper)", DefaultValueFactory = _ => 1 }.AtLeast(1);
    private readonly Option<string[]> _baseline = BaselineOption();

    private AttentionOptions()
    {
        _method.AcceptOnlyFromAmong([.. AttentionMethods.All.Select(m => m.Name)]);
        _pooling.AcceptOnlyFromAmong("post", "pre");
        _budgetRule.AcceptOnlyFromAmong("rounded", "reference");
        _precision.AcceptOnlyFromAmong("exact", "bf16");
    }

    /// <summary><c>--baseline NAME=VALUE</c>, repeatable, each setting checked as it parses; <see cref="Baselines"/> applies them.</summary>
    public static Option<string[]> BaselineOption()
    {
        var option = new Option<string[]>("--baseline") { Description = $"A baseline setting NAME=VALUE, repeatable ({string.Join(", ", BaselineOptions.SettingNames)}); defaults from DESIGN §4" };
        option.Validators.Add(result =>
        {
            foreach (var token in result.Tokens)
            {
                try
                {
                    BaselineOptions.Default.With(token.Value);
                }
                catch (KascadeException e)
                {
                    result.AddError($"--baseline: {e.Message}");
                    return;
                }
            }
        });
        return option;
    }

    /// <summary>The baseline settings of <paramref name="option"/> (<see cref="BaselineOption"/>) over the defaults.</summary>
    public static BaselineOptions Baselines(ParseResult parse, Option<string[]> option) =>
        (parse.GetValue(option) ?? []).Aggregate(BaselineOptions.Default, (o, a) => o.With(a));

    /// <summary>Checks a comma-separated list of method names (eval's <c>--attention</c>).</summary>
    public static Option<string> MethodList(Option<string> option)
    {
        option.Validators.Add(result =>
        {
            if (!OptionRules.TryValue(result, out string list))
            {
                return;
            }
            var names = (list ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (names.Length == 0)
            {
                result.AddError($"{option.Name} needs at least one method ({Names})");
            }
            else if (names.FirstOrDefault(n => !AttentionMethods.TryFind(n, out _)) is { } unknown)
            {
                result.AddError($"{option.Name}: unknown attention '{unknown}'; choose from {Names}");
            }
        });
        return option;
    }

    public static AttentionOptions Create() => new();

    public static string Names => AttentionMethods.Names;

    /// <summary>Adds the options; <paramref name="withMethod"/> false leaves <c>--attention</c> to a command that names several methods.</summary>
    public void AddTo(Command command, bool withMethod = true)
    {
        if (withMethod)
        {
            command.Add(_method);
        }
        command.Add(_schedule);
        command.Add(_percent);
        command.Add(_pooling);
        command.Add(_budgetRule);
        command.Add(_precision);
        command.Add(_refresh);
        command.Add(_baseline);
    }

    public AttentionPolicy Policy(ParseResult parse, ModelDirectory dir) => Policy(parse, dir, parse.GetValue(_method)!);

    /// <summary>
    /// The policy named <paramref name="name"/> with this command's schedule, budget, pooling and baseline settings.
    /// <paramref name="listed"/>: the command's whole list of methods (eval), where the anchors' options apply to its
    /// Kascade methods and are refused only when it has none.
    /// </summary>
    public AttentionPolicy Policy(ParseResult parse, ModelDirectory dir, string name, IReadOnlyList<string>? listed = null)
    {
        var baselines = Baselines(parse, _baseline);
        var layers = AttentionMethods.Find(name).Method switch
        {
            AttentionMethod.OmniKv => baselines.OmniKvFilterLayers,
            AttentionMethod.LessIsMore => baselines.LessIsMoreSelectionLayers,
            _ => [],
        };
        if (layers.FirstOrDefault(l => l >= dir.Config.Layers, -1) is >= 0 and var beyond)
        {
            throw new KascadeException($"baseline layer {beyond} does not exist; the model has {dir.Config.Layers} layers");
        }
        var pooling = parse.GetValue(_pooling) == "pre" ? ScorePooling.PreSoftmax : ScorePooling.PostSoftmax;
        var rule = parse.GetValue(_budgetRule) == "reference" ? BudgetRule.Reference : BudgetRule.Rounded;
        var precision = parse.GetValue(_precision) == "bf16" ? ScorePrecision.Bf16 : ScorePrecision.Exact;
        var policy = Build(name, parse.GetValue(_schedule), parse.GetValue(_percent), pooling, dir) with { Baselines = baselines, BudgetRule = rule, ScorePrecision = precision };
        int refresh = parse.GetValue(_refresh);
        if (!policy.NeedsSchedule)
        {
            string names = listed is null ? $"'{name}'" : $"any of '{string.Join(',', listed)}'";
            bool anchorsListed = listed?.Any(n => AttentionMethods.Find(n).NeedsSchedule) == true;
            if (refresh > 1 && !anchorsListed)
            {
                throw new KascadeException($"--anchor-refresh applies to the Kascade methods, not {names}");
            }
            if (precision != ScorePrecision.Exact && !anchorsListed)
            {
                throw new KascadeException($"--score-precision applies to the Kascade methods' anchors, not {names}");
            }
            return policy with { ScorePrecision = ScorePrecision.Exact };
        }
        return policy with { AnchorRefresh = refresh };
    }

    /// <summary>The policy named <paramref name="name"/>, loading and checking its schedule where it needs one.</summary>
    public static AttentionPolicy Build(string name, string? schedulePath, double? percent, ScorePooling pooling, ModelDirectory dir)
    {
        var method = AttentionMethods.Find(name).Method;
        if (percent is { } p && !(p > 0 && p <= 100))
        {
            throw new KascadeException("--topk-percent must be in (0, 100]");
        }
        var policy = new AttentionPolicy(method, null, percent ?? 10, pooling);
        if (!policy.NeedsSchedule)
        {
            return policy;
        }
        string path = schedulePath ?? Path.Combine(dir.Path, DefaultScheduleName);
        if (schedulePath is null && !File.Exists(path))
        {
            throw new KascadeException(
                $"attention '{name}' needs a Kascade schedule and {path} does not exist; make one with " +
                $"`kascade calibrate --model {dir.Path} --dev-set DEV.jsonl --out {path}` or pass --schedule FILE");
        }
        var schedule = ScheduleFile.Load(path, dir.Config);
        return policy with { Schedule = schedule, TopKPercent = percent ?? schedule.TopKPercent };
    }
}
