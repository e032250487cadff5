#!/usr/bin/env python3
"""Merges the per-job result directories of bench/eval/instrument-jobs.sh into one `kascade eval` directory.

Usage: python3 bench/eval/merge.py TARGET JOB_DIR...
Lines of samples.jsonl and perplexity.jsonl are concatenated (a later duplicate of a key wins, as on resume); the
run identities must agree on every key they share and are united, exactly as `kascade eval` does when it resumes.
Then `kascade eval ... --out TARGET` with the union of the jobs' options finds nothing left to run and writes the tables.
"""
import json
import os
import sys

target, jobs = sys.argv[1], sys.argv[2:]
os.makedirs(target, exist_ok=True)
identity = {}
for job in jobs:
    with open(os.path.join(job, "run.json")) as f:
        for key, value in json.load(f)["identity"].items():
            if identity.setdefault(key, value) != value:
                sys.exit(f"{job}: {key} is '{value}', another job has '{identity[key]}'")
    for name in ("samples.jsonl", "perplexity.jsonl"):
        path = os.path.join(job, name)
        if os.path.exists(path):
            with open(path) as f:
                lines = [line for line in f.read().splitlines() if line.strip()]
            complete = []
            for line in lines:
                try:
                    json.loads(line)
                    complete.append(line)
                except json.JSONDecodeError:
                    pass  # a line cut off when the job's time ran out
            with open(os.path.join(target, name), "a") as out:
                out.writelines(line + "\n" for line in complete)
with open(os.path.join(target, "run.json"), "w") as f:
    json.dump({"identity": dict(sorted(identity.items()))}, f, indent=2)
print(f"merged {len(jobs)} job directories into {target}")
