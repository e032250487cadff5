using System.Text;

namespace Kascade.Testing;

/// <summary>Writes NumPy <c>.npy</c> files byte by byte, so tests can also write the malformed ones a parser must refuse.</summary>
public static class NpyWriter
{
    /// <summary>
    /// Magic, version <paramref name="major"/>.0, the header length (<paramref name="declaredLength"/>, or the real one),
    /// <paramref name="header"/> as given (pad it yourself for a valid file) and <paramref name="data"/>.
    /// </summary>
    public static byte[] Bytes(string header, byte[] data, int major = 1, long? declaredLength = null)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        long length = declaredLength ?? headerBytes.Length;
        var bytes = new List<byte> { 0x93 };
        bytes.AddRange("NUMPY"u8.ToArray());
        bytes.AddRange([(byte)major, 0]);
        bytes.AddRange(major is 2 or 3 ? BitConverter.GetBytes((uint)length) : BitConverter.GetBytes((ushort)length));
        bytes.AddRange(headerBytes);
        bytes.AddRange(data);
        return [.. bytes];
    }

    /// <summary>A header dict padded with spaces and a newline as numpy pads it (the data starts on a 64-byte boundary).</summary>
    public static string Padded(string dict, int major = 1) =>
        dict + new string(' ', (64 - ((major == 1 ? 10 : 12) + dict.Length + 1) % 64) % 64) + "\n";

    public static byte[] Int32s(params int[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();

    public static byte[] Int64s(params long[] values) => values.SelectMany(BitConverter.GetBytes).ToArray();
}
