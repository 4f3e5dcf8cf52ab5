"""Seconds per user profile of the ``transformers`` backend, one prompt at a time against batched.

The first ``--users`` users of a dataset (their training histories, as ``recgoat encode users`` builds
them), greedy decoding, each batch size in turn on the same prompts; prints seconds per user, the
speed-up over batch size 1 and how many answers equal the lone ones; ``--show N`` prints the first N
users' raw responses (what a model makes of the prompt).

Run: ``python benchmarks/profile_batch.py --model /path/to/model-or.gguf --users 16 --sizes 1 8``
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from recgoat.datasets import load  # noqa: E402
from recgoat.features.profiles import (TransformersBackend, build_histories, build_messages,  # noqa: E402
                                       item_briefs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="folder, hub name or .gguf file")
    ap.add_argument("--dataset", default="ml100k-mm")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--char-budget", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=0, help="print the first N users' responses")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load(args.dataset)
    hs = build_histories(ds, item_briefs(ds), args.char_budget)[:args.users]
    be = TransformersBackend(args.model, max_new_tokens=args.max_new_tokens)
    prompts = [be._prompt_ids(build_messages(h.text)) for h in hs]
    print(f"{args.model}: {len(hs)} users of {args.dataset}, prompts of {min(map(len, prompts))}–"
          f"{max(map(len, prompts))} tokens, at most {args.max_new_tokens} new, {args.threads} thread(s)")
    base: list[str] | None = None
    base_s = 0.0
    for size in args.sizes:
        answers: list[str] = [""] * len(hs)
        t = time.perf_counter()
        be.batch_size = size
        for i, text, _cut in be.complete_all(prompts):  # the batches generate() makes
            answers[i] = text
        per_user = (time.perf_counter() - t) / len(hs)
        if base is None:
            base, base_s = answers, per_user
        same = sum(a == b for a, b in zip(answers, base))
        print(f"batch {size:3d}: {per_user:6.2f} s per user  {base_s / per_user:5.2f}×  "
              f"{same}/{len(hs)} answers as batch {args.sizes[0]}")
    for u in range(min(args.show, len(hs))):
        print(f"\n--- user {ds.user_ids[hs[u].user]} ({len(hs[u].items)} items in the prompt) ---\n{base[u]}")


if __name__ == "__main__":
    main()
