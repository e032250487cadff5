"""HF transformers end to end on the same GPU as `kascade bench generate --random-config llama-3.1-8b --device cuda`.

    python3 bench/peers/hf_generate_peer.py --contexts 4096,32768 --decode-tokens 64

A Llama-3.1-8B-shaped model with random bf16 weights made on the GPU, sdpa attention, static KV cache, greedy.
Decode tokens/s = extra tokens / (time of generate(prompt, 1 + N) − time of generate(prompt, 1)), so prefill
cancels. Also prints the memory-bandwidth bound of a decode step: (weights read per token + KV cache) / bandwidth.
"""
import argparse
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", default="4096,32768")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--bandwidth-tbs", type=float, default=3.35, help="HBM bandwidth used for the bound (H100 SXM: 3.35)")
    a = ap.parse_args()
    cfg = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5,
                      rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
                      tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa", dtype=torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = 2 * (params - cfg.vocab_size * cfg.hidden_size)  # every weight but the embedding table is read per token
    print(f"device: {torch.cuda.get_device_name()}, transformers {__import__('transformers').__version__}, torch {torch.__version__}, {params / 1e9:.2f}B parameters")
    print("| implementation | context | decode tokens/s | ms/token | bound ms/token (weights + KV at {:.2f} TB/s) | fraction of bound |".format(a.bandwidth_tbs))
    print("|---|---:|---:|---:|---:|---:|")
    for ctx in [int(c) for c in a.contexts.split(",")]:
        prompt = torch.randint(0, cfg.vocab_size, (1, ctx - a.decode_tokens - 1), device="cuda")

        def run(new):
            torch.cuda.synchronize()
            t = time.perf_counter()
            with torch.no_grad():
                model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, cache_implementation="static")
            torch.cuda.synchronize()
            return time.perf_counter() - t

        run(2)  # warm-up
        one = min(run(1) for _ in range(2))
        many = min(run(1 + a.decode_tokens) for _ in range(2))
        ms = (many - one) / a.decode_tokens * 1e3
        kv_bytes = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * ctx * 2
        bound = (weight_bytes + kv_bytes) / (a.bandwidth_tbs * 1e12) * 1e3
        print(f"| HF transformers (sdpa, static cache) | {ctx} | {1e3 / ms:.1f} | {ms:.2f} | {bound:.2f} | {bound / ms:.2f} |")


if __name__ == "__main__":
    main()
