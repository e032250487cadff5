using Kascade.Core;
using Kascade.Testing;
using Xunit;

namespace Kascade.Cli.Tests;

/// <summary>
/// The peer runner of <c>bench attention --peers</c>: the peer scripts' rows parsed, our times set beside the faster
/// SDPA backend's and torch.topk's, and a peer that cannot run reported as one error (the scripts need a GPU and
/// PyTorch, so the runner is exercised with <c>sh</c> and stand-in scripts).
/// </summary>
public class PeerBenchmarksTests
{
    private const string Sdpa = """
        device: NVIDIA H100 80GB HBM3, torch 2.11.0+cu130; L2 flushed by reading 256 MiB
        | pytorch sdpa cudnn | decode | 1 | 32768 | 0.0543 | 2473.1 GB/s |
        | pytorch sdpa flash | decode | 1 | 32768 | 0.0624 | 2150.9 GB/s |
        | pytorch read of K+V (sum) | decode | 1 | 32768 | 0.0522 | 2573.2 GB/s |
        | pytorch sdpa cudnn | decode | 1 | 131072 | n/a | out of memory |
        | pytorch sdpa flash | decode | 1 | 131072 | 0.1980 | 2711.3 GB/s |
        """;

    private const string TopK = """
        device: NVIDIA H100 80GB HBM3; torch 2.11.0+cu130; torch.topk(sorted=False) on fp32 rows, L2 flushed, median of 20

        | implementation | rows | context | k | ms |
        |---|---:|---:|---:|---:|
        | torch.topk | 8 | 131072 | 13184 | 0.0863 |
        | torch.topk | 512 | 131072 | 13184 | 0.9248 |
        """;

    [Fact]
    public void Peer_rows_are_parsed_and_untimed_rows_skipped()
    {
        var sdpa = PeerBenchmarks.Parse(Sdpa);
        Assert.Equal(4, sdpa.Count);
        Assert.Equal(new PeerRow("pytorch sdpa cudnn", 32768, 0.0543), sdpa[0]);
        Assert.DoesNotContain(sdpa, r => r.Context == 131072 && r.Implementation == "pytorch sdpa cudnn");
        var topK = PeerBenchmarks.Parse(TopK);
        Assert.Equal([new PeerRow("torch.topk", 131072, 0.0863, 8), new PeerRow("torch.topk", 131072, 0.9248, 512)], topK);
    }

    [Fact]
    public void Ours_stand_beside_the_faster_sdpa_backend_and_torch_topk()
    {
        var table = PeerBenchmarks.Comparison([(32768, "Kascade per-layer average", 0.0240), (131072, "our dense", 0.1788), (65536, "our dense", 0.1)], PeerBenchmarks.Parse(Sdpa));
        // cuDNN is the faster at 32k (the read of K+V is not an SDPA backend); only flash timed 128k; nothing timed 64k.
        Assert.Contains("| 32768 | Kascade per-layer average | 0.0240 | pytorch sdpa cudnn | 0.0543 | 2.26× |", table);
        Assert.Contains("| 131072 | our dense | 0.1788 | pytorch sdpa flash | 0.1980 | 1.11× |", table);
        Assert.Contains("| 65536 | our dense | 0.1000 | — | — | — |", table);
        var topK = PeerBenchmarks.TopKComparison([(131072, 8, 0.0467), (131072, 512, 0.7238), (65536, 512, 0.3)], PeerBenchmarks.Parse(TopK));
        Assert.Contains("| 131072 | 8 | 0.0467 | 0.0863 | 0.54× |", topK);
        Assert.Contains("| 131072 | 512 | 0.7238 | 0.9248 | 0.78× |", topK);
        Assert.Contains("| 65536 | 512 | 0.3000 | — | — |", topK);
    }

    [Fact]
    public void A_peer_script_runs_with_its_arguments()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("peer.sh"), "echo \"| pytorch sdpa cudnn | decode | 1 | $2 | 0.5 | x |\"\n");
        string output = PeerBenchmarks.Run("sh", dir.File("peer.sh"), ["--contexts", "4096"], TimeSpan.FromSeconds(30));
        Assert.Equal([new PeerRow("pytorch sdpa cudnn", 4096, 0.5)], PeerBenchmarks.Parse(output));
    }

    [Fact]
    public void A_peer_that_cannot_run_is_one_error()
    {
        using var dir = new TempDirectory();
        File.WriteAllText(dir.File("fails.sh"), "echo starting >&2\necho 'ModuleNotFoundError: No module named torch' >&2\nexit 3\n");
        Assert.Equal("--peers: fails.sh failed (exit 3): ModuleNotFoundError: No module named torch",
            Assert.Throws<KascadeException>(() => PeerBenchmarks.Run("sh", dir.File("fails.sh"), [], TimeSpan.FromSeconds(30))).Message);
        Assert.Contains("not found", Assert.Throws<KascadeException>(() => PeerBenchmarks.Run("sh", dir.File("missing.py"), [], TimeSpan.FromSeconds(30))).Message);
        File.WriteAllText(dir.File("ok.sh"), "true\n");
        Assert.StartsWith("--peers: cannot run 'no-such-python-here'", Assert.Throws<KascadeException>(() => PeerBenchmarks.Run("no-such-python-here", dir.File("ok.sh"), [], TimeSpan.FromSeconds(30))).Message);
        File.WriteAllText(dir.File("slow.sh"), "sleep 20\n");
        Assert.Contains("ran past 1 s", Assert.Throws<KascadeException>(() => PeerBenchmarks.Run("sh", dir.File("slow.sh"), [], TimeSpan.FromSeconds(1))).Message);
    }
}
