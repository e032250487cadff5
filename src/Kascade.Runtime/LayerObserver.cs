using Kascade.Core;

namespace Kascade.Runtime;

/// <summary>
/// Named intermediates of one layer for one chunk, valid only during <see cref="ILayerObserver.OnAttention"/>:
/// <see cref="Residual"/> <c>[Tokens, hidden]</c> is the stream entering the layer, <see cref="Queries"/>
/// <c>[Tokens, Heads·HeadDim]</c> the rotated queries, <see cref="Cache"/> holds the layer's keys up to
/// <c>StartPosition + Tokens</c>, and <see cref="AttentionOutput"/> <c>[Tokens, hidden]</c> is the attention block
/// after the output projection.
/// </summary>
public sealed record LayerObservation(int Layer, int StartPosition, int Tokens, IBackend Backend, DeviceTensor Residual, DeviceTensor Queries, KvCache Cache, DeviceTensor AttentionOutput);

/// <summary>Sees each layer's intermediates as the forward pass produces them (calibration, analysis).</summary>
public interface ILayerObserver
{
    void OnAttention(LayerObservation observation);
}
