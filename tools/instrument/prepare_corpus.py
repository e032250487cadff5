#!/usr/bin/env python3
"""Builds the prose corpus of the instrument model from Project Gutenberg books (GITenberg repositories).

Runs on the development machine (plain Python 3, no packages) over repositories that the session's `fetch` tool
brought to /work/.mirror (one book per repository, `GITenberg/<Title>_<id>`). For each book it takes the plain-text
file (`<id>-0.txt` UTF-8, else `<id>-8.txt` Latin-1, else `<id>.txt`), cuts the Project Gutenberg header and licence
at the START/END markers, keeps English books of at least 50 KB, drops repeated titles, and writes:

  OUT/prose-NN.txt.xz   the training books, books separated by a form feed line, shards of about --shard-mb MB
                        compressed (the GPU machine receives them as carried files, 64 MiB a call)
  OUT/heldout.txt.xz    the held-out books (never trained on): the train/held-out perplexity gap
  tools/instrument/sources.tsv   one line a book: id, repository, split, file (shard), characters, sha256 of the text

The Paul Graham essays (the evaluation haystack) and LongBench are not Gutenberg books, so no filter can let them in;
a book is held out by its id (HELD_OUT below), chosen before any training.

Usage: python3 tools/instrument/prepare_corpus.py --mirror /work/.mirror --out .data/instrument
"""
import argparse
import hashlib
import lzma
import os
import re
import subprocess
import sys

HELD_OUT = {154, 170, 221}   # The Rise of Silas Lapham, The Haunted Hotel, The Return of Sherlock Holmes

START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.M | re.I)
END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", re.M | re.I)
ENGLISH = {"the", "and", "of", "to", "a", "in", "that", "it", "was", "he", "his", "i", "is", "with", "for", "as", "had", "you", "not", "be", "her", "on", "at", "by", "which", "have", "this"}


def git(repo, *args):
    return subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, check=False).stdout


def book_text(repo, book_id):
    """The book's plain text, decoded, or None."""
    names = set(git(repo, "ls-tree", "--name-only", "HEAD").decode("utf-8", "replace").split("\n"))
    for name, encoding in ((f"{book_id}-0.txt", "utf-8"), (f"{book_id}-8.txt", "latin-1"), (f"{book_id}.txt", "utf-8")):
        if name in names:
            data = git(repo, "show", f"HEAD:{name}")
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                return data.decode("latin-1")
    return None


def body(text):
    """The text between the Project Gutenberg START and END markers, or None when either is missing."""
    start, end = START.search(text), END.search(text)
    if not start or not end or end.start() <= start.end():
        return None
    core = text[start.end():end.start()]
    core = core.replace("\r\n", "\n").strip()
    return re.sub(r"\n{4,}", "\n\n\n", core)


def is_english(text):
    words = re.findall(r"[a-z]+", text[:200_000].lower())
    return len(words) > 1000 and sum(w in ENGLISH for w in words) / len(words) > 0.25


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror", default="/work/.mirror")
    ap.add_argument("--out", default=".data/instrument")
    ap.add_argument("--shard-mb", type=float, default=12.0)
    ap.add_argument("--sources", default=os.path.join(os.path.dirname(__file__), "sources.tsv"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    books, seen_titles, rejected = [], set(), {}
    for entry in sorted(os.listdir(args.mirror)):
        m = re.match(r"GITenberg\+(.+)_(\d+)$", entry)
        if not m:
            continue
        title, book_id = m.group(1), int(m.group(2))
        repo = os.path.join(args.mirror, entry, "repo")
        repo = os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo
        text = book_text(repo, book_id)
        core = body(text) if text else None
        reason = ("no text file" if text is None else "no START/END markers" if core is None
                  else "under 50 KB" if len(core) < 50_000 else "not English" if not is_english(core)
                  else "repeated title" if title.lower() in seen_titles else None)
        if reason:
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        seen_titles.add(title.lower())
        books.append((book_id, f"GITenberg/{title}_{book_id}", core))
    books.sort()
    train = [b for b in books if b[0] not in HELD_OUT]
    held = [b for b in books if b[0] in HELD_OUT]
    # Shards of roughly equal compressed size: xz compresses English about 3.4:1.
    per_shard = int(args.shard_mb * 1e6 * 3.4)
    shards, current, size = [], [], 0
    for b in train:
        if current and size + len(b[2]) > per_shard:
            shards.append(current)
            current, size = [], 0
        current.append(b)
        size += len(b[2])
    if current:
        shards.append(current)
    for old in [f for f in os.listdir(args.out) if f.startswith("prose-")]:
        os.remove(os.path.join(args.out, old))
    for i, shard in enumerate(shards):
        with lzma.open(os.path.join(args.out, f"prose-{i:02d}.txt.xz"), "wt", encoding="utf-8", preset=9) as f:
            f.write("\n\f\n".join(b[2] for b in shard))
    with lzma.open(os.path.join(args.out, "heldout.txt.xz"), "wt", encoding="utf-8", preset=9) as f:
        f.write("\n\f\n".join(b[2] for b in held))
    file_of = {b[0]: f"prose-{i:02d}" for i, shard in enumerate(shards) for b in shard} | {b[0]: "heldout" for b in held}
    with open(args.sources, "w", encoding="utf-8") as f:
        f.write("id\trepository\tsplit\tfile\tcharacters\tsha256\n")
        for book_id, repo, core in books:
            split = "held-out" if book_id in HELD_OUT else "train"
            f.write(f"{book_id}\t{repo}\t{split}\t{file_of[book_id]}\t{len(core)}\t{hashlib.sha256(core.encode()).hexdigest()[:16]}\n")
    chars = sum(len(b[2]) for b in train)
    print(f"{len(train)} training books ({chars / 1e6:.1f} M characters) in {len(shards)} shards, {len(held)} held out; "
          f"rejected: {rejected}", file=sys.stderr)


if __name__ == "__main__":
    main()
