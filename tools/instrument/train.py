#!/usr/bin/env python3
"""Trains a kascade instrument model on the GPU machine (issue 14), in time-boxed calls that checkpoint and resume.

Data (all tokenized with the embedded model's tokenizer, documents separated by <|endoftext|>, id 0):
  - prose: the Gutenberg shards prepare_corpus.py wrote (carried to the machine), held-out books apart;
  - code: Python source from the machine's own site-packages (deduplicated);
  - synthetic retrieval samples in the embedded model's prompt formats (MODEL_CARD.md; RULER's niah/multi-value/
    multi-query/variable-tracking templates as src/Kascade.Evaluation/Tasks/RetrievalPrompts.cs writes them), their
    haystack cut from training prose and their needles inserted at sentence ends. Their key words never include the
    evaluation's (EVAL_WORDS), so the eval measures retrieval, not memory.

Every prose token drawn (windows and haystacks alike) is counted; the log reports how many times the prose was seen
on average, which the recipe keeps at or below ~3.

  python3 tools/instrument/train.py --data .data/instrument --work /root/c3 --out /root/c3/model \\
      --time-budget 480 --export-always   # tokenizes, trains up to 8 minutes, checkpoints, exports
  python3 tools/instrument/train.py ... --time-budget 480   # a later call on a machine still held resumes from --work/ckpt.pt
  python3 tools/instrument/train.py ... --export-only       # HF directory of the latest checkpoint

Writes --work/log.jsonl (loss, held-out loss, tokens, prose passes) and, when training ends or on --export-only,
an HF LlamaForCausalLM directory in --out (bf16, safetensors shards under 16 MiB, tokenizer.json, train_summary.json).
"""
import argparse
import glob
import hashlib
import json
import lzma
import math
import os
import random
import shutil
import sysconfig
import time

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

EOS = 0
EVAL_WORDS = {"garden", "river", "lantern", "copper", "meadow", "harbor", "violet", "summit", "canyon", "falcon", "orchard",
              "glacier", "ember", "willow", "thistle", "marble"}
TRAIN_WORDS = [w for w in (
    "apple anchor arrow badge banner barrel basket beacon bell blossom bridge bucket cabin candle castle cedar chalk "
    "chapel cherry circle cliff clover cobalt comet coral cotton crystal daisy desert diamond dolphin dragon eagle "
    "feather fern fiddle flame forest fountain galaxy garnet ginger granite grape harvest hazel helmet heron honey "
    "island ivory jasmine jungle kettle kitten ladder lagoon lemon lily lotus magnet maple mirror mountain needle "
    "nutmeg ocean olive onyx opal otter palace panther pearl pebble pepper pillar planet plum pocket prairie quartz "
    "rabbit raven ribbon rocket saddle salmon sapphire shadow shell silver sparrow spruce star stone storm sunset "
    "temple thunder tiger timber topaz tower trumpet tulip valley velvet walnut whale wheat window winter wolf").split()
    if w not in EVAL_WORDS]


TASKS = ["passkey", "single", "multikey", "multivalue", "multiquery", "vt"]


def task_weights(text):
    """--task-weights: one non-negative weight per retrieval task, in TASKS order."""
    weights = [float(w) for w in text.split(",")]
    if len(weights) != len(TASKS) or min(weights) < 0 or sum(weights) <= 0:
        raise argparse.ArgumentTypeError(f"give {len(TASKS)} non-negative weights ({', '.join(TASKS)})")
    return weights


def load_text_shards(pattern):
    docs = []
    for path in sorted(glob.glob(pattern)):
        with lzma.open(path, "rt", encoding="utf-8") as f:
            docs.extend(d for d in f.read().split("\n\f\n") if d.strip())
    return docs


def encode_docs(tokenizer, docs, piece_chars=200_000):
    """One uint16 stream, documents separated by EOS; long documents are encoded in pieces cut at paragraph breaks."""
    pieces, ends = [], []
    for doc in docs:
        start = 0
        while start < len(doc):
            cut = doc.rfind("\n\n", start, start + piece_chars) if start + piece_chars < len(doc) else len(doc)
            cut = cut if cut > start else min(len(doc), start + piece_chars)
            pieces.append(doc[start:cut])
            start = cut
        ends.append(len(pieces))
    ids, end = [], set(ends)
    for i, enc in enumerate(tokenizer.encode_batch(pieces, add_special_tokens=False)):
        ids.extend(enc.ids)
        if i + 1 in end:
            ids.append(EOS)
    return np.array(ids, dtype=np.uint16)


def python_sources(limit_chars):
    """Python files of the machine's site-packages, deduplicated by content, up to limit_chars characters."""
    roots = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    seen, docs, total = set(), [], 0
    for root in sorted(roots):
        for path in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            try:
                if os.path.getsize(path) > 256_000:
                    continue
                text = open(path, encoding="utf-8").read()
            except (OSError, UnicodeDecodeError):
                continue
            digest = hashlib.sha1(text.encode()).digest()
            if len(text) < 200 or digest in seen:
                continue
            seen.add(digest)
            docs.append(text)
            total += len(text)
            if total >= limit_chars:
                return docs
    return docs


def prepare(args, tokenizer):
    """Token streams cached in --work: prose.npy, heldout.npy, code.npy."""
    paths = {name: os.path.join(args.work, f"{name}.npy") for name in ("prose", "heldout", "code")}
    if all(os.path.exists(p) for p in paths.values()):
        return {k: np.load(p, mmap_mode="r") for k, p in paths.items()}
    t0 = time.time()
    streams = {
        "prose": encode_docs(tokenizer, load_text_shards(os.path.join(args.data, "prose-*.txt.xz"))),
        "heldout": encode_docs(tokenizer, load_text_shards(os.path.join(args.data, "heldout.txt.xz"))),
        "code": encode_docs(tokenizer, python_sources(args.code_chars)),
    }
    for k, v in streams.items():
        np.save(paths[k], v)
    print(f"tokenized in {time.time() - t0:.0f} s: " + ", ".join(f"{k} {len(v) / 1e6:.1f} M" for k, v in streams.items()), flush=True)
    return streams


class Batches(torch.utils.data.IterableDataset):
    """Endless batches of [batch, length] token ids mixing prose windows, code windows and retrieval samples."""

    def __init__(self, args, streams, sentence_end, length, seed):
        self.args, self.streams, self.sentence_end, self.length, self.seed = args, streams, sentence_end, length, seed

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        rng = random.Random(self.seed * 1000 + (worker.id if worker else 0))
        tok = Tokenizer.from_file(self.args.tokenizer)
        while True:
            rows, prose = [], 0
            for _ in range(self.args.batch):
                row, used = self.row(rng, tok)
                rows.append(row)
                prose += used
            yield torch.from_numpy(np.stack(rows).astype(np.int64)), prose

    def window(self, rng, name, n):
        s = self.streams[name]
        start = rng.randrange(0, len(s) - n)
        return np.asarray(s[start:start + n])

    def row(self, rng, tok):
        L, a = self.length, self.args
        u = rng.random()
        if u < a.synthetic:
            sample, used = self.retrieval(rng, tok)
            rest = L - len(sample)
            fill = self.window(rng, "prose", rest) if rest > 0 else np.zeros(0, np.uint16)
            return np.concatenate([sample, fill])[:L], used + max(rest, 0)
        if u < a.synthetic + a.code:
            return self.window(rng, "code", L), 0
        return self.window(rng, "prose", L), L

    def insert_at_sentences(self, rng, hay, needles):
        """Haystack tokens with each (needle ids, depth) inserted after the first sentence end at or past its depth."""
        cuts = []
        for ids, depth in needles:
            p = int(depth * len(hay))
            while p < len(hay) - 1 and not self.sentence_end[hay[p]]:
                p += 1
            cuts.append((p + 1, ids))
        out, last = [], 0
        for p, ids in sorted(cuts, key=lambda c: c[0]):
            out.extend([hay[last:p], ids])
            last = p
        out.append(hay[last:])
        return np.concatenate(out)

    def retrieval(self, rng, tok):
        """One retrieval sample (haystack, needles, question, answer, EOS) of 1/8 to all of the row's length."""
        L = self.length
        total = rng.randint(L // 8, L)
        enc = lambda s: np.array(tok.encode(s, add_special_tokens=False).ids, dtype=np.uint16)
        digits = lambda n: str(rng.randrange(10 ** (n - 1), 10 ** n))
        magic = lambda w, n: f" One of the special magic numbers for {w} is: {n}."
        kind = rng.choices(TASKS, self.args.task_weights)[0]
        if kind == "passkey":
            key = digits(5)
            needles = [(f" The pass key is {key}. Remember it. {key} is the pass key.", rng.random())]
            question, answer = "\n\nWhat is the pass key? The pass key is", f" {key}."
        elif kind in ("single", "multikey"):
            words = rng.sample(TRAIN_WORDS, 1 if kind == "single" else rng.randint(2, 5))
            numbers = [digits(7) for _ in words]
            needles = [(magic(w, n), rng.random()) for w, n in zip(words, numbers)]
            w = words[0]
            question = f"\n\nWhat is the special magic number for {w} mentioned in the provided text? The special magic number for {w} mentioned in the provided text is"
            answer = f" {numbers[0]}."
        elif kind == "multivalue":
            w = rng.choice(TRAIN_WORDS)
            numbers = [digits(7) for _ in range(4)]
            needles = [(magic(w, n), rng.random()) for n in numbers]
            question = f"\n\nWhat are all the special magic numbers for {w} mentioned in the provided text? The special magic numbers for {w} mentioned in the provided text are"
            answer = " " + ", ".join(numbers) + "."
        elif kind == "multiquery":
            words = rng.sample(TRAIN_WORDS, 4)
            numbers = [digits(7) for _ in words]
            needles = [(magic(w, n), rng.random()) for w, n in zip(words, numbers)]
            listed = ", ".join(words[:-1]) + " and " + words[-1]
            question = f"\n\nWhat are all the special magic numbers for {listed} mentioned in the provided text? The special magic numbers for {listed} mentioned in the provided text are"
            answer = " " + ", ".join(numbers) + "."
        else:
            value = digits(5)
            names = rng.sample(["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5)) for _ in range(8)], 5)
            d0 = rng.random() * 0.5
            needles = [(f" VAR {n} = {value}." if i == 0 else f" VAR {n} = VAR {names[i - 1]}.", d0 + (0.98 - d0) * i / 5) for i, n in enumerate(names)]
            question = f"\n\nQuestion: Find all variables that are assigned the value {value} in the text above. Answer: According to the chain(s) of variables assigned in the text above, 5 variables are assigned the value {value}, they are:"
            answer = " " + ", ".join(names) + "."
        needle_ids = [(enc(n), d) for n, d in needles]
        tail = np.concatenate([enc(question), enc(answer), np.array([EOS], np.uint16)])
        hay_len = max(64, total - len(tail) - sum(len(i) for i, _ in needle_ids))
        hay = self.window(rng, "prose", hay_len)
        return np.concatenate([self.insert_at_sentences(rng, hay, needle_ids), tail]), hay_len


def model_config(args):
    return LlamaConfig(
        vocab_size=8192, hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, head_dim=args.head_dim,
        max_position_embeddings=8192, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": args.rope_theta}, tie_word_embeddings=True,
        bos_token_id=EOS, eos_token_id=EOS, hidden_act="silu", attention_bias=False, mlp_bias=False)


def lr_at(args, tokens):
    total = args.tokens_4k + args.tokens_8k
    warm = args.warmup_tokens
    if tokens < warm:
        return args.lr * tokens / warm
    progress = min(1.0, (tokens - warm) / max(1, total - warm))
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def heldout_loss(model, streams, length, count=8, name="heldout"):
    """Mean loss of count evenly spaced windows of one stream (held-out books, or the training prose for the gap)."""
    s = streams[name]
    step = max(1, (len(s) - length) // count)
    losses = []
    for i in range(count):
        x = torch.from_numpy(np.asarray(s[i * step:i * step + length]).astype(np.int64))[None].cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses.append(model(input_ids=x, labels=x).loss.item())
    return sum(losses) / len(losses)


def export(args, model, state):
    os.makedirs(args.out, exist_ok=True)
    model = model.to(torch.bfloat16)
    model.config.dtype = "bfloat16"
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size="15MB")
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.json"))
    with open(os.path.join(args.out, "train_summary.json"), "w") as f:
        json.dump(state, f, indent=2)
    print(f"exported to {args.out}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="prose shards from prepare_corpus.py")
    ap.add_argument("--tokenizer", default="models/kascade-instrument-21m/tokenizer.json")
    ap.add_argument("--work", required=True, help="token cache, checkpoint and log (on the GPU machine)")
    ap.add_argument("--out", required=True, help="HF model directory written at the end")
    ap.add_argument("--layers", type=int, default=11)
    ap.add_argument("--hidden", type=int, default=384)
    ap.add_argument("--intermediate", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rope-theta", type=float, default=100000.0)
    ap.add_argument("--tokens-4k", type=float, default=200e6)
    ap.add_argument("--tokens-8k", type=float, default=150e6)
    ap.add_argument("--batch", type=int, default=32, help="sequences per step at 4k (half at 8k)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup-tokens", type=float, default=5e6)
    ap.add_argument("--synthetic", type=float, default=0.35)
    ap.add_argument("--task-weights", type=task_weights, default=[3, 3, 3, 1, 1, 1],
                    help="relative weights of the retrieval samples: " + ",".join(TASKS))
    ap.add_argument("--code", type=float, default=0.30)
    ap.add_argument("--code-chars", type=float, default=600e6)
    ap.add_argument("--time-budget", type=float, default=480, help="seconds of training in this call")
    ap.add_argument("--export-only", action="store_true")
    ap.add_argument("--export-always", action="store_true",
                    help="export at the end of this call even if the token target is not reached (a one-call run that "
                         "must not come back empty; train_summary.json says how far it got)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--seed", type=int, default=14)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    torch.manual_seed(args.seed)
    tokenizer = Tokenizer.from_file(args.tokenizer)
    streams = prepare(args, tokenizer)
    vocab = tokenizer.get_vocab_size()
    sentence_end = np.zeros(max(vocab, 8192), dtype=bool)
    for i in range(vocab):
        text = tokenizer.decode([i])
        sentence_end[i] = text.rstrip().endswith((".", "!", "?", ".\"", ".'"))

    model = LlamaForCausalLM(model_config(args)).cuda()
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    ckpt = os.path.join(args.work, "ckpt.pt")
    state = {"tokens": 0, "prose_tokens_drawn": 0, "steps": 0, "seconds": 0.0, "parameters": params,
             "prose_tokens": int(len(streams["prose"])), "code_tokens": int(len(streams["code"])), "args": vars(args)}
    if os.path.exists(ckpt):
        saved = torch.load(ckpt, map_location="cuda", weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        state.update({k: v for k, v in saved["state"].items() if k != "args"})
        print(f"resumed at {state['tokens'] / 1e6:.1f} M tokens", flush=True)
    total = args.tokens_4k + args.tokens_8k
    if args.export_only or state["tokens"] >= total:
        export(args, model, state)
        return
    print(f"{params / 1e6:.2f} M parameters; prose {state['prose_tokens'] / 1e6:.1f} M tokens, code {state['code_tokens'] / 1e6:.1f} M", flush=True)
    fwd = torch.compile(model) if args.compile else model
    log = open(os.path.join(args.work, "log.jsonl"), "a")
    t0, last_save = time.time(), time.time()
    while state["tokens"] < total and time.time() - t0 < args.time_budget:
        length = 4096 if state["tokens"] < args.tokens_4k else 8192
        batch = args.batch if length == 4096 else args.batch // 2
        phase_args = argparse.Namespace(**{**vars(args), "batch": batch})
        loader = torch.utils.data.DataLoader(Batches(phase_args, streams, sentence_end, length, args.seed + state["steps"]),
                                             batch_size=None, num_workers=12, prefetch_factor=4, persistent_workers=False)
        for x, prose in loader:
            x = x.cuda(non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(args, state["tokens"])
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = fwd(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            state["tokens"] += x.numel()
            state["prose_tokens_drawn"] += int(prose)
            state["steps"] += 1
            if state["steps"] % 50 == 0:
                entry = {"step": state["steps"], "tokens": state["tokens"], "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                         "length": length, "prose_passes": state["prose_tokens_drawn"] / max(1, state["prose_tokens"]),
                         "elapsed": state["seconds"] + time.time() - t0}
                if state["steps"] % 500 == 0:
                    entry["heldout_loss_8k"] = heldout_loss(model, streams, 8192)
                log.write(json.dumps(entry) + "\n")
                log.flush()
                print(json.dumps(entry), flush=True)
            switch = length == 4096 and state["tokens"] >= args.tokens_4k
            if state["tokens"] >= total or time.time() - t0 >= args.time_budget or switch:
                break
            if time.time() - last_save > 240:
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
                last_save = time.time()
    state["seconds"] += time.time() - t0
    state["heldout_loss_8k"] = heldout_loss(model, streams, 8192)
    state["train_prose_loss_8k"] = heldout_loss(model, streams, 8192, name="prose")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state}, ckpt)
    print(f"checkpoint at {state['tokens'] / 1e6:.1f} M tokens, prose seen {state['prose_tokens_drawn'] / max(1, state['prose_tokens']):.2f} times, "
          f"held-out loss {state['heldout_loss_8k']:.3f}, training-prose loss {state['train_prose_loss_8k']:.3f}", flush=True)
    if state["tokens"] >= total or args.export_always:
        export(args, model, state)


if __name__ == "__main__":
    main()
