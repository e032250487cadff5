"""Fixtures from independent implementations (HF transformers / tokenizers / sentencepiece).

Run on the GPU machine from the repository root:

    PYTHONUNBUFFERED=1 python3 tools/golden/make_fixtures.py --out "$OUT/fixtures"

It writes, under --out:
  tokenizers/<name>.json      ids and decodes of tricky strings, from HF `tokenizers` / `sentencepiece`
  tiny/<variant>/             a tiny random-weight model saved by HF transformers (fixed seed), with
                              fixture.json: HF's fp32 logits for fixed input ids and its greedy tokens
  golden_hf.json              the instrument model in HF bf16 (eager): per prompt the ids, the top-10 next-token ids
                              and logits, the logits' L2 norm at every position and 20 greedy tokens
                              (copied to models/kascade-instrument-21m/golden_hf.json)
  instrument_fp32.json        the instrument model's last-position logits computed by HF in fp32
The C# tests read the rest from tests/data/fixtures (copied there unchanged).
"""
import argparse
import json
import os
import random

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTRUMENT = os.path.join(ROOT, "models", "kascade-instrument-21m")
TOKENIZERS = os.path.join(ROOT, "tests", "data", "tokenizers")
HAYSTACK_TEXT = (
    "The most important thing is to be able to think about a problem. "
    "I've noticed that startups which succeed tend to launch quickly.\n\n"
)

TRICKY = [
    "Hello, world!",
    "Once upon a time, in a quiet village by the sea,",
    "  leading spaces and   runs   of    spaces  ",
    "tabs\tand\nnewlines\r\nand\n\n\nblank lines",
    "digits 1234567890 and 3.14159, 1,000,000 and 007",
    "The pass key is 71432. Remember it. 71432 is the pass key.",
    "Ünïcödé: naïve café, Straße, Ærøskøbing, ½ ¼ ²",
    "日本語のテキストと中文文本，한국어 텍스트",
    "emoji 😀👍🏽🇫🇷 and 👨‍👩‍👧‍👦 family",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // C-style",
    "it's they're we've I'm you'll he'd IT'S",
    "Ελληνικά και русский текст",
    "\u00a0non-breaking\u2009thin\u3000ideographic spaces",
    "x" * 40 + " " + "ab" * 30,
    "",
    " ",
]


def tokenizer_fixtures(out):
    from tokenizers import Tokenizer
    import sentencepiece as spm

    os.makedirs(os.path.join(out, "tokenizers"), exist_ok=True)
    essays = HAYSTACK_TEXT * 20
    jobs = [
        ("instrument", os.path.join(INSTRUMENT, "tokenizer.json"), ["<|endoftext|>"]),
        ("smollm2-135m", os.path.join(TOKENIZERS, "smollm2-135m.tokenizer.json"),
         ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]),
    ]
    for name, path, specials in jobs:
        tok = Tokenizer.from_file(path)
        texts = TRICKY + [essays] + [
            f"{specials[0]}user\nHi there{specials[-1]}",
            f"text before{specials[0]}and after {specials[-1]} end",
        ]
        cases = []
        for t in texts:
            ids = tok.encode(t).ids
            cases.append({"text": t, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False)})
        with open(os.path.join(out, "tokenizers", name + ".json"), "w", encoding="utf-8") as f:
            json.dump({"source": f"HF tokenizers {__import__('tokenizers').__version__}", "file": os.path.basename(path),
                       "cases": cases}, f, ensure_ascii=False, indent=0)
        print(name, "cases", len(cases))

    sp = spm.SentencePieceProcessor(model_file=os.path.join(TOKENIZERS, "llama2.tokenizer.model"))
    cases = []
    for t in TRICKY + [essays]:
        ids = sp.encode(t)
        cases.append({"text": t, "ids": ids, "decoded": sp.decode(ids)})
    with open(os.path.join(out, "tokenizers", "llama2.json"), "w", encoding="utf-8") as f:
        json.dump({"source": f"sentencepiece {spm.__version__} (no BOS/EOS added)", "file": "llama2.tokenizer.model",
                   "cases": cases}, f, ensure_ascii=False, indent=0)
    print("llama2 cases", len(cases))


def tiny_variants():
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    common = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                  max_position_embeddings=512, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2)
    return [
        # Llama 3.1-style rope scaling with all three frequency bands active, untied, bf16, sharded.
        ("llama3-rope-untied", "bfloat16", "60KB", LlamaConfig(
            **common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
            rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
        # Linear rope scaling, tied embeddings, f16.
        ("llama-linear-tied", "float16", None, LlamaConfig(
            **common, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
            rope_parameters={"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.0})),
        # Mistral, multi-query (1 KV head), explicit head_dim larger than hidden/heads, f32.
        ("mistral-mqa-headdim", "float32", None, MistralConfig(
            **common, num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=None,
            tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        # Qwen2: q/k/v biases, tied, bf16.
        ("qwen2-bias", "bfloat16", None, Qwen2Config(
            **common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
        # Qwen3: per-head q/k RMSNorm, explicit head_dim, GQA 4, untied, bf16.
        ("qwen3-qknorm", "bfloat16", None, Qwen3Config(
            **common, num_attention_heads=8, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    ]


def tiny_models(out):
    from transformers import AutoModelForCausalLM

    for name, dtype, shard, config in tiny_variants():
        torch.manual_seed(1234)
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        # Random-normal init with a larger std than HF's default so that every op moves the logits.
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.08 * torch.randn_like(p))
        model = model.to(getattr(torch, dtype))
        d = os.path.join(out, "tiny", name)
        kwargs = {"max_shard_size": shard} if shard else {}
        model.save_pretrained(d, **kwargs)
        # The fixture: reload what was saved and compute in fp32, so our fp32 path can be held tightly.
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        rng = random.Random(7)
        ids = [rng.randrange(3, config.vocab_size) for _ in range(40)]
        with torch.no_grad():
            logits = ref(torch.tensor([ids])).logits[0]
            gen = ref.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False)[0, len(ids):].tolist()
        fixture = {"source": f"HF transformers {__import__('transformers').__version__}, fp32 eager",
                   "dtype": dtype, "ids": ids,
                   "logits": [[round(float(v), 6) for v in row] for row in logits],
                   "greedy_8": gen}
        with open(os.path.join(d, "fixture.json"), "w") as f:
            json.dump(fixture, f)
        print(name, "saved", sorted(os.listdir(d)), "greedy", gen)


GOLDEN_PROMPTS = [
    "Once upon a time, in a quiet village by the sea,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n",
    "The special magic number for garden is: 4815162. What is the special magic number for garden? "
    "The special magic number for garden is",
]


def instrument_golden_hf(out):
    """golden_hf.json: what HF transformers computes in bf16, the precision the model ships in."""
    import transformers
    from transformers import AutoModelForCausalLM
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(INSTRUMENT, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(INSTRUMENT, dtype=torch.bfloat16, attn_implementation="eager").cuda().eval()
    cases = []
    for text in GOLDEN_PROMPTS:
        ids = tok.encode(text).ids
        x = torch.tensor([ids]).cuda()
        with torch.no_grad():
            logits = model(x).logits[0].float()
            greedy = model.generate(x, max_new_tokens=20, do_sample=False, attention_mask=torch.ones_like(x))[0, len(ids):]
        top = logits[-1].topk(10)
        cases.append({"text": text, "ids": ids,
                      "last_logits_top10": top.indices.tolist(),
                      "last_logits_top10_values": [float(v) for v in top.values],
                      "logits_l2_per_position": [round(float(v), 4) for v in logits.norm(dim=-1)],
                      "greedy_20": greedy.tolist()})
    gpu = torch.cuda.get_device_name().replace("NVIDIA ", "")
    with open(os.path.join(out, "golden_hf.json"), "w") as f:
        json.dump({"note": f"HF transformers {transformers.__version__} bf16 on {gpu}, eager greedy", "cases": cases}, f, indent=1)
    print("golden_hf cases", [len(c["ids"]) for c in cases], "greedy", [c["greedy_20"][:5] for c in cases])


def instrument_fp32(out):
    from transformers import AutoModelForCausalLM
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(INSTRUMENT, "tokenizer.json"))
    model = AutoModelForCausalLM.from_pretrained(INSTRUMENT, dtype=torch.float32, attn_implementation="eager").cuda().eval()
    essays_dir = os.path.join(ROOT, "tests", "data", "haystack")
    long_text = ""
    if os.path.isdir(essays_dir):
        for name in sorted(os.listdir(essays_dir))[:3]:
            long_text += open(os.path.join(essays_dir, name), encoding="utf-8").read()
    texts = GOLDEN_PROMPTS + [long_text]
    cases = []
    for t in texts:
        ids = tok.encode(t).ids[:1500]
        with torch.no_grad():
            logits = model(torch.tensor([ids]).cuda()).logits[0].float().cpu()
        cases.append({"ids": ids, "last_logits": [round(float(v), 5) for v in logits[-1]],
                      "logits_l2_per_position": [round(float(v), 4) for v in logits.norm(dim=-1)]})
    with open(os.path.join(out, "instrument_fp32.json"), "w") as f:
        json.dump({"source": "HF transformers fp32 eager on GPU", "cases": cases}, f)
    print("instrument fp32 cases", [len(c["ids"]) for c in cases])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for step in (tokenizer_fixtures, tiny_models, instrument_golden_hf, instrument_fp32):
        try:
            step(a.out)
        except Exception as e:  # report every step's failure in one run
            import traceback
            traceback.print_exc()
            print("FAILED", step.__name__, e)
