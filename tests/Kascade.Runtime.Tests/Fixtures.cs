using System.Text.Json;

namespace Kascade.Runtime.Tests;

internal static class Json
{
    public static JsonElement Load(string path) => JsonDocument.Parse(File.ReadAllBytes(path)).RootElement;

    public static int[] Ints(this JsonElement e) => e.EnumerateArray().Select(v => v.GetInt32()).ToArray();

    public static float[] Floats(this JsonElement e) => e.EnumerateArray().Select(v => v.GetSingle()).ToArray();
}
