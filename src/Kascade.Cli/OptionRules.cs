using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;
using Kascade.Core;

namespace Kascade.Cli;

/// <summary>
/// Validators attached to options, so that every mistake in a command line is found while it is parsed — before a
/// model is opened or any work starts — and reported as one <c>error:</c> line naming the option.
/// </summary>
internal static class OptionRules
{
    /// <summary>Requires <paramref name="ok"/> of the option's value; the message reads "NAME must be MUST, not VALUE".</summary>
    public static Option<T> Must<T>(this Option<T> option, Func<T, bool> ok, string must)
    {
        option.Validators.Add(result =>
        {
            if (result.Tokens.Count > 0 && TryValue(result, out T value) && !ok(value))
            {
                result.AddError($"{option.Name} must be {must}, not {Show(value)}");
            }
        });
        return option;
    }

    public static Option<int> AtLeast(this Option<int> option, int min) =>
        option.Must(v => v >= min, min == 1 ? "a positive integer" : $"an integer ≥ {min}");

    public static Option<int?> AtLeast(this Option<int?> option, int min) =>
        option.Must(v => v is null || v >= min, min == 1 ? "a positive integer" : $"an integer ≥ {min}");

    /// <summary>A finite number in the range, written like "in (0, 1]" (<paramref name="range"/>).</summary>
    public static Option<float> InRange(this Option<float> option, Func<float, bool> inRange, string range) =>
        option.Must(v => float.IsFinite(v) && inRange(v), $"a finite number {range}");

    /// <summary>A Top-k budget: a finite percentage in (0, 100].</summary>
    public static Option<double?> Percent(this Option<double?> option) =>
        option.Must(v => v is null || (v > 0 && v <= 100), "a percentage in (0, 100]");

    public static Option<double> Percent(this Option<double> option) =>
        option.Must(v => v > 0 && v <= 100, "a percentage in (0, 100]");

    /// <summary><c>cpu</c>, <c>cuda</c> or <c>cuda:N</c>.</summary>
    public static Option<string> Device(this Option<string> option) =>
        option.Must(d => d is "cpu" or "cuda" || (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out _)), "cpu, cuda or cuda:N");

    /// <summary>Each value of a repeatable option non-empty (an empty <c>--stop</c> would stop at once).</summary>
    public static Option<string[]> NonEmptyItems(this Option<string[]> option) =>
        option.Must(items => items.All(i => i.Length > 0), "a non-empty string");

    /// <summary>A file to be written: its directory must exist and accept a new file, and it must not be a directory.</summary>
    public static Option<string> WritableFile(this Option<string> option)
    {
        option.Validators.Add(result =>
        {
            if (!TryValue(result, out string path))
            {
                return;
            }
            if (Directory.Exists(path))
            {
                result.AddError($"{option.Name} {path} is a directory; give a file name");
                return;
            }
            string directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
            if (CannotWrite(directory) is { } problem)
            {
                result.AddError($"{option.Name} {path}: {problem}");
            }
        });
        return option;
    }

    /// <summary>A directory to write into: created if missing, so its nearest existing ancestor must accept new files.</summary>
    public static Option<string> WritableDirectory(this Option<string> option)
    {
        option.Validators.Add(result =>
        {
            if (!TryValue(result, out string value))
            {
                return;
            }
            string path = Path.GetFullPath(value);
            if (File.Exists(path))
            {
                result.AddError($"{option.Name} {path} is a file; give a directory");
                return;
            }
            string? existing = path;
            while (existing is not null && !Directory.Exists(existing))
            {
                existing = Path.GetDirectoryName(existing);
            }
            if ((existing is null ? "no part of the path exists" : CannotWrite(existing)) is { } problem)
            {
                result.AddError($"{option.Name} {path}: {problem}");
            }
        });
        return option;
    }

    /// <summary>
    /// Context lengths such as <c>2k,4k,8192</c> (k = 1024 tokens), each positive and within an int: a value such as
    /// <c>3000000k</c> is refused by name instead of wrapping around.
    /// </summary>
    public static Option<int[]> Lengths(string name, string description, int[]? defaults)
    {
        var option = new Option<int[]>(name)
        {
            Description = description,
            Arity = ArgumentArity.ExactlyOne,
            CustomParser = result => ParseLengths(result, name),
        };
        if (defaults is not null)
        {
            option.DefaultValueFactory = _ => defaults;
        }
        return option;
    }

    /// <summary>Comma-separated fractions in [0, 1] (needle depths).</summary>
    public static Option<double[]?> Fractions(string name, string description) => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result => Items<double>(result, name, t =>
            double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v is >= 0 and <= 1 ? v : null, "a number in [0, 1]"),
    };

    /// <summary>Comma-separated layer indices (≥ 0).</summary>
    public static Option<int[]> LayerList(string name, string description) => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        Required = true,
        CustomParser = result => Items<int>(result, name, t =>
            int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int v) ? v : (int?)null, "a layer index (an integer ≥ 0)") ?? [],
    };

    /// <summary>Comma-separated positive counts (e.g. anchor counts).</summary>
    public static Option<int[]?> Counts(string name, string description) => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result => Items<int>(result, name, t =>
            int.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out int v) && v > 0 ? v : (int?)null, "a positive integer"),
    };

    /// <summary>Comma-separated anchor score precisions (<c>exact</c>, <c>bf16</c>); no values when left out.</summary>
    public static Option<ScorePrecision[]?> Precisions(string name, string description) => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result => Items<ScorePrecision>(result, name, t => t switch
        {
            "exact" => ScorePrecision.Exact,
            "bf16" => ScorePrecision.Bf16,
            _ => null,
        }, "exact or bf16"),
    };

    /// <summary>Comma-separated percents in (0, 100] (Top-k budgets).</summary>
    public static Option<double[]> Percents(string name, string description, double[] defaults) => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        DefaultValueFactory = _ => defaults,
        CustomParser = result => Items<double>(result, name, t =>
            double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture, out double v) && v is > 0 and <= 100 ? v : null, "a percent in (0, 100]") ?? [],
    };

    /// <summary>Comma-separated names, each one of <paramref name="choices"/>' (their values); no values when left out.</summary>
    public static Option<T[]?> Choices<T>(string name, string description, (string Name, T Value)[] choices)
        where T : struct => new(name)
    {
        Description = description,
        Arity = ArgumentArity.ExactlyOne,
        CustomParser = result => Items<T>(result, name, t => choices.FirstOrDefault(c => c.Name == t) is { Name: not null } c ? c.Value : null,
            $"one of {string.Join(", ", choices.Select(c => c.Name))}"),
    };

    private static int[] ParseLengths(ArgumentResult result, string name) =>
        Items<int>(result, name, ParseLength, "a context length such as 4096 or 4k (at most 2097151k)") ?? [];

    private static int? ParseLength(string text)
    {
        bool k = text.EndsWith('k');
        if (!long.TryParse(k ? text[..^1] : text, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > int.MaxValue)
        {
            return null;
        }
        long tokens = k ? n * 1024 : n;
        return tokens is > 0 and <= int.MaxValue ? (int)tokens : null;
    }

    /// <summary>Parses a comma-separated list; the first bad item is the option's error.</summary>
    private static T[]? Items<T>(ArgumentResult result, string name, Func<string, T?> parse, string what)
        where T : struct
    {
        string text = result.Tokens.Count > 0 ? result.Tokens[0].Value : "";
        var items = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (items.Length == 0)
        {
            result.AddError($"{name} needs at least one value");
            return null;
        }
        var values = new T[items.Length];
        for (int i = 0; i < items.Length; i++)
        {
            if (parse(items[i]) is not { } v)
            {
                result.AddError($"{name}: '{items[i]}' is not {what}");
                return null;
            }
            values[i] = v;
        }
        return values;
    }

    /// <summary>
    /// The value of a symbol during validation, false when it did not convert (the parser reports that error itself;
    /// System.CommandLine throws when a validator reads such a value).
    /// </summary>
    public static bool TryValue<T>(SymbolResult result, out T value)
    {
        try
        {
            value = result switch
            {
                OptionResult o => o.GetValueOrDefault<T>(),
                ArgumentResult a => a.GetValueOrDefault<T>(),
                _ => throw new ArgumentException("not an option or argument", nameof(result)),
            };
            return true;
        }
        catch (InvalidOperationException)
        {
            value = default!;
            return false;
        }
    }

    /// <summary>The value of <paramref name="option"/> in a command validator, or <paramref name="fallback"/> when it did not convert.</summary>
    public static T ValueOr<T>(this CommandResult result, Option<T> option, T fallback)
    {
        try
        {
            return result.GetValue(option) ?? fallback;
        }
        catch (InvalidOperationException)
        {
            return fallback;
        }
    }

    /// <summary>Null when a new file can be created in <paramref name="directory"/>, else why not.</summary>
    private static string? CannotWrite(string directory)
    {
        if (!Directory.Exists(directory))
        {
            return $"directory {directory} does not exist";
        }
        try
        {
            using var probe = new FileStream(Path.Combine(directory, $".kascade-write-check-{Environment.ProcessId}-{Guid.NewGuid():N}"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose);
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $"cannot write in {directory} ({e.Message})";
        }
    }

    private static string Show<T>(T value) => value switch
    {
        null => "nothing",
        string s => $"'{s}'",
        string[] items => string.Join(", ", items.Select(i => $"'{i}'")),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => value.ToString() ?? "",
    };
}
