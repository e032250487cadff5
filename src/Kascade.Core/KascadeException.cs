namespace Kascade.Core;

/// <summary>
/// A failure caused by the user's input (a path, a file, an option, a prompt), not by a bug.
/// Front ends print <see cref="Exception.Message"/> as one line and exit non-zero, without a stack trace.
/// </summary>
public class KascadeException(string message, Exception? inner = null) : Exception(message, inner);
