using System.Buffers.Binary;
using System.Globalization;
using System.Text;
using Kascade.Core;

namespace Kascade.Runtime.Kascade;

/// <summary>
/// The NumPy <c>.npy</c> format (versions 1–3; numpy.lib.format), little-endian int32/int64 arrays in C order only —
/// what the official Kascade repository saves its head maps as. The header is a Python dict literal
/// (<c>{'descr': '&lt;i4', 'fortran_order': False, 'shape': (24, 2), }</c>), parsed exactly: its length must lie
/// inside the file, the shape must be non-negative integers whose product (checked) the data covers, and every value
/// must fit an int32.
/// </summary>
public static class Npy
{
    private static ReadOnlySpan<byte> Magic => [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static (int[] Shape, int[] Values) ReadIntegers(string path)
    {
        if (!File.Exists(path))
        {
            throw new KascadeException($"head map file not found: {path}");
        }
        return ReadIntegers(File.ReadAllBytes(path), Path.GetFileName(path));
    }

    /// <summary>Parses the bytes of a .npy file; <paramref name="name"/> names it in messages.</summary>
    public static (int[] Shape, int[] Values) ReadIntegers(ReadOnlySpan<byte> bytes, string name)
    {
        if (bytes.Length < 10 || !bytes[..6].SequenceEqual(Magic))
        {
            throw new KascadeException($"{name} is not a .npy file");
        }
        int major = bytes[6];
        if (major is < 1 or > 3)
        {
            throw new KascadeException($"{name}: .npy format version {major}.{bytes[7]} is not supported (1 to 3)");
        }
        int headerStart = major == 1 ? 10 : 12;
        long headerLength = major == 1 ? BinaryPrimitives.ReadUInt16LittleEndian(bytes[8..]) : bytes.Length >= 12 ? BinaryPrimitives.ReadUInt32LittleEndian(bytes[8..]) : -1;
        if (headerLength < 0 || headerStart + headerLength > bytes.Length)
        {
            throw new KascadeException($"{name}: the header length {headerLength} runs past the end of the {bytes.Length}-byte file");
        }
        var headerBytes = bytes.Slice(headerStart, (int)headerLength);
        if (!System.Text.Unicode.Utf8.IsValid(headerBytes) || (major < 3 && !Ascii.IsValid(headerBytes)))
        {
            throw new KascadeException($"{name}: the header is not {(major < 3 ? "ASCII" : "UTF-8")} text");
        }
        var header = HeaderLiteral.Parse(Encoding.UTF8.GetString(headerBytes), name);
        int size = header.Descr switch
        {
            "<i4" => 4,
            "<i8" => 8,
            _ => throw new KascadeException($"{name}: dtype '{header.Descr}' is not supported (little-endian int32 '<i4' or int64 '<i8')"),
        };
        if (header.FortranOrder)
        {
            throw new KascadeException($"{name}: Fortran-ordered arrays are not supported");
        }
        long count = 1;
        foreach (long d in header.Shape)
        {
            count = d <= int.MaxValue / Math.Max(count, 1) ? count * d : throw new KascadeException($"{name}: shape ({string.Join(", ", header.Shape)}) is too large");
        }
        var data = bytes[(headerStart + (int)headerLength)..];
        if (data.Length < count * size)
        {
            throw new KascadeException($"{name} is truncated: shape ({string.Join(", ", header.Shape)}) needs {count * size} bytes of data, the file has {data.Length}");
        }
        var values = new int[count];
        for (int i = 0; i < values.Length; i++)
        {
            long v = size == 4 ? BinaryPrimitives.ReadInt32LittleEndian(data[(4 * i)..]) : BinaryPrimitives.ReadInt64LittleEndian(data[(8 * i)..]);
            values[i] = v is >= int.MinValue and <= int.MaxValue ? (int)v : throw new KascadeException($"{name}: value {v} at index {i} does not fit an int32");
        }
        return (header.Shape.Select(d => (int)d).ToArray(), values);
    }

    private sealed record Header(string Descr, bool FortranOrder, long[] Shape);

    /// <summary>
    /// The header dict: exactly the keys <c>descr</c> (a string), <c>fortran_order</c> (<c>True</c>/<c>False</c>) and
    /// <c>shape</c> (a tuple of integers), in any order, a trailing comma allowed, then spaces and a newline.
    /// </summary>
    private sealed class HeaderLiteral(string text, string name)
    {
        private int _at;

        public static Header Parse(string text, string name)
        {
            var p = new HeaderLiteral(text, name);
            string? descr = null;
            bool? fortran = null;
            long[]? shape = null;
            p.Expect('{');
            while (!p.Peek('}'))
            {
                string key = p.String();
                p.Expect(':');
                switch (key)
                {
                    case "descr" when descr is null: descr = p.String(); break;
                    case "fortran_order" when fortran is null: fortran = p.Bool(); break;
                    case "shape" when shape is null: shape = p.Tuple(); break;
                    default: throw p.Fail($"unexpected or repeated key '{key}'");
                }
                if (!p.Peek('}'))
                {
                    p.Expect(',');
                }
            }
            p.Expect('}');
            p.SkipSpace();
            if (p._at != text.Length)
            {
                throw p.Fail("text after the dict");
            }
            return new Header(descr ?? throw p.Fail("no 'descr'"), fortran ?? throw p.Fail("no 'fortran_order'"), shape ?? throw p.Fail("no 'shape'"));
        }

        private KascadeException Fail(string problem) => new($"{name}: malformed header ({problem}, at character {_at})");

        private void SkipSpace()
        {
            while (_at < text.Length && char.IsWhiteSpace(text[_at]))
            {
                _at++;
            }
        }

        private bool Peek(char c)
        {
            SkipSpace();
            return _at < text.Length && text[_at] == c;
        }

        private void Expect(char c)
        {
            if (!Peek(c))
            {
                throw Fail($"expected '{c}'");
            }
            _at++;
        }

        private string String()
        {
            SkipSpace();
            char quote = _at < text.Length && text[_at] is '\'' or '"' ? text[_at] : throw Fail("expected a quoted string");
            int end = text.IndexOf(quote, _at + 1);
            if (end < 0)
            {
                throw Fail("unterminated string");
            }
            string s = text[(_at + 1)..end];
            _at = end + 1;
            return s;
        }

        private bool Bool()
        {
            SkipSpace();
            foreach (var (word, value) in new[] { ("True", true), ("False", false) })
            {
                if (string.CompareOrdinal(text, _at, word, 0, word.Length) == 0)
                {
                    _at += word.Length;
                    return value;
                }
            }
            throw Fail("expected True or False");
        }

        private long[] Tuple()
        {
            Expect('(');
            var items = new List<long>();
            while (!Peek(')'))
            {
                int start = _at;
                while (_at < text.Length && char.IsAsciiDigit(text[_at]))
                {
                    _at++;
                }
                if (!long.TryParse(text.AsSpan(start, _at - start), NumberStyles.None, CultureInfo.InvariantCulture, out long d) || d > int.MaxValue)
                {
                    throw Fail("a shape entry is not a non-negative integer");
                }
                items.Add(d);
                if (!Peek(')'))
                {
                    Expect(',');
                }
            }
            Expect(')');
            return [.. items];
        }
    }
}
