using System.Text;
using Kascade.Core;
using Kascade.Runtime.Kascade;
using Kascade.Runtime.Loading;
using Kascade.Testing;
using Xunit;

namespace Kascade.Runtime.Tests;

/// <summary>The official head-map format (.npy) parsed exactly, and schedule files refused when a number is not one.</summary>
public class NpyAndScheduleTests
{
    private static byte[] NpyFile(string header, byte[] data, int major = 1, long? declaredLength = null) =>
        NpyWriter.Bytes(NpyWriter.Padded(header, major), data, major, declaredLength);

    private static byte[] Int32s(params int[] values) => NpyWriter.Int32s(values);

    private static void Refused(string expected, byte[] file) =>
        Assert.Contains(expected, Assert.Throws<KascadeException>(() => Npy.ReadIntegers(file, "map.npy")).Message);

    [Fact]
    public void Int32_and_int64_arrays_of_versions_1_to_3_read_exactly()
    {
        var (shape, values) = Npy.ReadIntegers(NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", Int32s(0, 1, 2, 3, 4, 5)), "map.npy");
        Assert.Equal([2, 3], shape);
        Assert.Equal([0, 1, 2, 3, 4, 5], values);
        var longs = NpyWriter.Int64s(7, -2);
        (shape, values) = Npy.ReadIntegers(NpyFile("{\"shape\": (2,), \"fortran_order\": False, \"descr\": \"<i8\"}", longs, major: 2), "map.npy");
        Assert.Equal([2], shape);
        Assert.Equal([7, -2], values);
        Assert.Equal([4], Npy.ReadIntegers(NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Int32s(4), major: 3), "map.npy").Values);
    }

    [Fact]
    public void Malformed_headers_and_data_are_each_one_message()
    {
        Refused("a shape entry is not a non-negative integer", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (two, 3), }", Int32s(0)));
        Refused("a shape entry is not a non-negative integer", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (-2, 3), }", Int32s(0)));
        Refused("expected ','", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3", Int32s(0)));
        Refused("unterminated string", NpyFile("{'descr': '<i4", Int32s(0)));
        Refused("value 4294967296 at index 1 does not fit an int32", NpyFile("{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", NpyWriter.Int64s(1, 1L << 32)));
        Refused("the header length 65535 runs past the end", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Int32s(0), declaredLength: 65535));
        Refused("the header length 4294967295 runs past the end", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (1,), }", Int32s(0), major: 2, declaredLength: uint.MaxValue));
        Refused("is truncated: shape (2, 3) needs 24 bytes of data, the file has 8", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", Int32s(0, 1)));
        Refused("shape (65536, 65536) is too large", NpyFile("{'descr': '<i4', 'fortran_order': False, 'shape': (65536, 65536), }", Int32s(0)));
        Refused("dtype '<f4' is not supported", NpyFile("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", Int32s(0)));
        Refused("Fortran-ordered arrays are not supported", NpyFile("{'descr': '<i4', 'fortran_order': True, 'shape': (1,), }", Int32s(0)));
        Refused("unexpected or repeated key 'shape'", NpyFile("{'descr': '<i4', 'shape': (1,), 'fortran_order': False, 'shape': (1,)}", Int32s(0)));
        Refused("no 'shape'", NpyFile("{'descr': '<i4', 'fortran_order': False}", Int32s(0)));
        Refused("format version 9.0 is not supported", NpyFile("{}", [], major: 9));
        Refused("is not a .npy file", Encoding.ASCII.GetBytes("NUMPY!"));
    }

    [Fact]
    public void A_schedule_whose_budget_is_not_a_number_is_refused()
    {
        using var dir = new TempDirectory();
        string original = File.ReadAllText(Path.Combine(TestPaths.InstrumentModel, "kascade-schedule.json"));
        var config = ConfigLoader.Load(TestPaths.InstrumentModel);
        foreach (var (budget, expected) in new[] { ("\"NaN\"", "topk percent NaN must be in (0, 100]"), ("\"Infinity\"", "topk percent Infinity must be in (0, 100]"), ("\"ten\"", "is not a valid schedule"), ("1000", "topk percent 1000 must be in (0, 100]"), ("-1", "topk percent -1 must be in (0, 100]") })
        {
            File.WriteAllText(dir.File("s.json"), System.Text.RegularExpressions.Regex.Replace(original, "\"top_k_percent\": [^,\\n]+", $"\"top_k_percent\": {budget}"));
            Assert.Contains(expected, Assert.Throws<KascadeException>(() => ScheduleFile.Load(dir.File("s.json"), config)).Message);
        }
    }
}
