using System.Text;
using Kascade.Core;

namespace Kascade.Runtime.Tokenization;

/// <summary>
/// SentencePiece BPE (Llama 2, Mistral <c>tokenizer.model</c>), written to sentencepiece's own rules because
/// <c>Microsoft.ML.Tokenizers</c> 2.0's SentencePiece path differs from it on two points we test: merge ties
/// (sentencepiece takes the highest score, then the leftmost pair) and the space after byte-fallback tokens
/// when decoding. Reads the <c>ModelProto</c> protobuf directly (pieces, model type, normaliser flags).
/// </summary>
public sealed class SentencePieceBpe
{
    private enum PieceType
    {
        Normal = 1,
        Unknown = 2,
        Control = 3,
        UserDefined = 4,
        Unused = 5,
        Byte = 6,
    }

    private readonly string[] _pieces;
    private readonly float[] _scores;
    private readonly PieceType[] _types;
    private readonly Dictionary<string, int> _ids = new(StringComparer.Ordinal);
    private readonly int[] _byteIds = new int[256];
    private readonly bool _addDummyPrefix;
    private readonly bool _removeExtraWhitespaces;

    private SentencePieceBpe(List<(string Piece, float Score, PieceType Type)> pieces, bool addDummyPrefix, bool removeExtraWhitespaces)
    {
        _pieces = pieces.Select(p => p.Piece).ToArray();
        _scores = pieces.Select(p => p.Score).ToArray();
        _types = pieces.Select(p => p.Type).ToArray();
        _addDummyPrefix = addDummyPrefix;
        _removeExtraWhitespaces = removeExtraWhitespaces;
        Array.Fill(_byteIds, -1);
        for (int i = 0; i < _pieces.Length; i++)
        {
            if (_types[i] == PieceType.Byte && _pieces[i].Length == 6 && _pieces[i].StartsWith("<0x", StringComparison.Ordinal)
                && byte.TryParse(_pieces[i].AsSpan(3, 2), System.Globalization.NumberStyles.AllowHexSpecifier, null, out byte b))
            {
                _byteIds[b] = i;
            }
            else
            {
                _ids.TryAdd(_pieces[i], i);
            }
        }
        UnknownId = Array.IndexOf(_types, PieceType.Unknown);
        BosId = _ids.GetValueOrDefault("<s>", -1);
        EosId = _ids.GetValueOrDefault("</s>", -1);
    }

    public int UnknownId { get; }

    public int BosId { get; }

    public int EosId { get; }

    public IReadOnlyDictionary<string, int> ControlTokens =>
        Enumerable.Range(0, _pieces.Length).Where(i => _types[i] == PieceType.Control).ToDictionary(i => _pieces[i], i => i);

    public static SentencePieceBpe Load(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var pieces = new List<(string, float, PieceType)>();
        int modelType = 1;
        bool addDummyPrefix = true, removeExtra = true;
        try
        {
            var reader = new ProtoReader(bytes);
            while (reader.Next(out int field, out int wire))
            {
                switch (field)
                {
                    case 1:
                        pieces.Add(ReadPiece(reader.Bytes()));
                        break;
                    case 2:
                        var trainer = new ProtoReader(reader.Bytes());
                        while (trainer.Next(out int f, out int w))
                        {
                            if (f == 3 && w == 0)
                            {
                                modelType = (int)trainer.Varint();
                            }
                            else
                            {
                                trainer.Skip(w);
                            }
                        }
                        break;
                    case 3:
                        var normalizer = new ProtoReader(reader.Bytes());
                        while (normalizer.Next(out int f, out int w))
                        {
                            if (f == 3 && w == 0)
                            {
                                addDummyPrefix = normalizer.Varint() != 0;
                            }
                            else if (f == 4 && w == 0)
                            {
                                removeExtra = normalizer.Varint() != 0;
                            }
                            else
                            {
                                normalizer.Skip(w);
                            }
                        }
                        break;
                    default:
                        reader.Skip(wire);
                        break;
                }
            }
        }
        catch (Exception e) when (e is IndexOutOfRangeException or ArgumentException or InvalidDataException or OverflowException)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is not a readable SentencePiece model ({e.Message})");
        }
        if (pieces.Count == 0)
        {
            throw new KascadeException($"{Path.GetFileName(path)} is not a SentencePiece model (no pieces)");
        }
        if (modelType != 2)
        {
            throw new KascadeException($"{Path.GetFileName(path)}: SentencePiece model type {(modelType == 1 ? "unigram" : modelType.ToString())} is not supported (BPE only)");
        }
        return new SentencePieceBpe(pieces, addDummyPrefix, removeExtra);
    }

    private static (string, float, PieceType) ReadPiece(byte[] message)
    {
        var r = new ProtoReader(message);
        string piece = "";
        float score = 0;
        var type = PieceType.Normal;
        while (r.Next(out int f, out int w))
        {
            switch (f)
            {
                case 1: piece = Encoding.UTF8.GetString(r.Bytes()); break;
                case 2 when w == 5: score = r.Fixed32(); break;
                case 3 when w == 0: type = (PieceType)r.Varint(); break;
                default: r.Skip(w); break;
            }
        }
        return (piece, score, type);
    }

    /// <summary>Token ids of <paramref name="text"/> (no BOS/EOS).</summary>
    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        if (_removeExtraWhitespaces)
        {
            text = string.Join(' ', text.Split(' ', StringSplitOptions.RemoveEmptyEntries));
        }
        if (text.Length == 0)
        {
            return ids;
        }
        string normalized = ((_addDummyPrefix ? " " : "") + text).Replace(' ', '\u2581');

        // Symbols are code points; merging picks the pair with the best score, leftmost on ties.
        var symbols = new List<string>();
        for (int i = 0; i < normalized.Length; i += char.IsSurrogatePair(normalized, i) ? 2 : 1)
        {
            symbols.Add(normalized.Substring(i, char.IsSurrogatePair(normalized, i) ? 2 : 1));
        }
        var prev = Enumerable.Range(-1, symbols.Count).ToArray();
        var next = Enumerable.Range(1, symbols.Count).Select(n => n < symbols.Count ? n : -1).ToArray();
        var agenda = new PriorityQueue<(int Left, string Merged), (float Score, int Left)>(
            Comparer<(float Score, int Left)>.Create((a, b) => a.Score != b.Score ? b.Score.CompareTo(a.Score) : a.Left.CompareTo(b.Left)));
        void Consider(int left)
        {
            if (left < 0 || next[left] < 0)
            {
                return;
            }
            string merged = symbols[left] + symbols[next[left]];
            if (_ids.TryGetValue(merged, out int id) && _types[id] is PieceType.Normal or PieceType.UserDefined)
            {
                agenda.Enqueue((left, merged), (_scores[id], left));
            }
        }
        for (int i = 0; i + 1 < symbols.Count; i++)
        {
            Consider(i);
        }
        while (agenda.TryDequeue(out var top, out _))
        {
            int left = top.Left, right = next[left];
            if (symbols[left].Length == 0 || right < 0 || symbols[left] + symbols[right] != top.Merged)
            {
                continue; // stale: one side was merged away since this pair was queued
            }
            symbols[left] = top.Merged;
            symbols[right] = "";
            next[left] = next[right];
            if (next[right] >= 0)
            {
                prev[next[right]] = left;
            }
            Consider(prev[left]);
            Consider(left);
        }
        for (int i = 0; i >= 0; i = next[i])
        {
            if (_ids.TryGetValue(symbols[i], out int id))
            {
                ids.Add(id);
                continue;
            }
            foreach (byte b in Encoding.UTF8.GetBytes(symbols[i]))
            {
                ids.Add(_byteIds[b] >= 0 ? _byteIds[b] : UnknownId);
            }
        }
        return ids;
    }

    /// <summary>Text of <paramref name="ids"/>: byte tokens are joined as UTF-8, control tokens dropped, the dummy-prefix space removed.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var text = new StringBuilder();
        var bytes = new List<byte>();
        void FlushBytes()
        {
            text.Append(Encoding.UTF8.GetString(bytes.ToArray()));
            bytes.Clear();
        }
        foreach (int id in ids)
        {
            if ((uint)id >= (uint)_pieces.Length)
            {
                continue;
            }
            switch (_types[id])
            {
                case PieceType.Byte:
                    bytes.Add(Convert.ToByte(_pieces[id][3..5], 16));
                    break;
                case PieceType.Control:
                    break;
                case PieceType.Unknown:
                    FlushBytes();
                    text.Append(" \u2047 ");
                    break;
                default:
                    FlushBytes();
                    text.Append(_pieces[id].Replace('\u2581', ' '));
                    break;
            }
        }
        FlushBytes();
        return _addDummyPrefix && text.Length > 0 && text[0] == ' ' ? text.ToString(1, text.Length - 1) : text.ToString();
    }

    /// <summary>The protobuf wire format, only as much as a ModelProto needs.</summary>
    private sealed class ProtoReader(byte[] data)
    {
        private int _pos;

        public bool Next(out int field, out int wire)
        {
            if (_pos >= data.Length)
            {
                field = wire = 0;
                return false;
            }
            ulong key = Varint();
            field = (int)(key >> 3);
            wire = (int)(key & 7);
            return true;
        }

        public ulong Varint()
        {
            ulong result = 0;
            for (int shift = 0; ; shift += 7)
            {
                byte b = data[_pos++];
                result |= (ulong)(b & 0x7F) << shift;
                if (b < 0x80)
                {
                    return result;
                }
                if (shift > 63)
                {
                    throw new InvalidDataException("varint too long");
                }
            }
        }

        public byte[] Bytes()
        {
            int length = checked((int)Varint());
            var result = data.AsSpan(_pos, length).ToArray();
            _pos += length;
            return result;
        }

        public float Fixed32()
        {
            float v = BitConverter.ToSingle(data, _pos);
            _pos += 4;
            return v;
        }

        public void Skip(int wire)
        {
            switch (wire)
            {
                case 0: Varint(); break;
                case 1: _pos += 8; break;
                case 2: Bytes(); break;
                case 5: _pos += 4; break;
                default: throw new InvalidDataException($"wire type {wire}");
            }
        }
    }
}
