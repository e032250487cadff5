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
        var e = Unwrap(exception);
        bool user = IsUserError(e);
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

    /// <summary>Mistakes the user can fix; the rest are bugs.</summary>
    private static bool IsUserError(Exception e) =>
        e is KascadeException or IOException or UnauthorizedAccessException or DllNotFoundException or OutOfMemoryException;

    /// <summary>The exception that says what happened, not the machinery that carried it (parallel loops, reflection, type initialisers).</summary>
    private static Exception Unwrap(Exception e)
    {
        while (true)
        {
            switch (e)
            {
                case AggregateException { InnerExceptions.Count: 1 } a:
                    e = a.InnerExceptions[0];
                    break;
                case TargetInvocationException { InnerException: { } inner }:
                    e = inner;
                    break;
                case TypeInitializationException { InnerException: { } inner }:
                    e = inner;
                    break;
                default:
                    return e;
            }
        }
    }

    private static string OneLine(string message) => string.Join(' ', message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
}
