using System.Reflection;
using Kascade.Core;

namespace Kascade.Cli;

/// <summary>
/// The one place an exception leaves the CLI. A user's mistake (<see cref="KascadeException"/>, a file that cannot be
/// read, a missing native library, memory exhausted) is one <c>error:</c> line and exit code 1; anything else is a bug
/// in kascade: <c>error: internal error: …</c> with where to report it, exit code 2. The stack trace is printed only
/// under <c>--verbose</c>.
/// </summary>
internal static class ErrorReport
{
    public const int UserError = 1;

    public const int InternalError = 2;

    /// <summary>Where bugs go: the README section that says what to include.</summary>
    public const string ReportTo = "please report it with the command line and the output of the same command with --verbose (README: Reporting bugs)";

    public static int Write(Exception exception, bool verbose, TextWriter stderr)
    {
        var causes = Unwrap(exception);
        var e = causes[0];
        bool user = causes.All(IsUserError);
        string message = OneLine(e.Message);
        stderr.WriteLine(user
            ? $"error: {(e is OutOfMemoryException ? $"out of memory ({message}); try a shorter context, a smaller --prefill-chunk or fewer --threads" : message)}"
            : $"error: internal error: {e.GetType().Name}: {message}; this is a bug in kascade, {ReportTo}");
        if (verbose)
        {
            stderr.WriteLine(exception.ToString());
        }
        return user ? UserError : InternalError;
    }

    /// <summary>Mistakes the user (or the user's machine) can fix; the rest, a GPU kernel's fault included, are bugs.</summary>
    private static bool IsUserError(Exception e) =>
        e is KascadeException and not Kascade.Cuda.Runtime.CudaException { IsBug: true }
        || e is IOException or UnauthorizedAccessException or DllNotFoundException or OutOfMemoryException;

    /// <summary>
    /// The exceptions that say what happened, not the machinery that carried them (parallel loops, reflection, type
    /// initialisers): several when workers of a parallel loop failed together.
    /// </summary>
    private static List<Exception> Unwrap(Exception e) => e switch
    {
        AggregateException { InnerExceptions.Count: > 0 } a => [.. a.Flatten().InnerExceptions.SelectMany(Unwrap)],
        TargetInvocationException { InnerException: { } inner } => Unwrap(inner),
        TypeInitializationException { InnerException: { } inner } => Unwrap(inner),
        _ => [e],
    };

    private static string OneLine(string message) => string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
